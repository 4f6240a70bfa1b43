//! Test clients: connect from a chosen source address, exchange bytes, verify them.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use socket2::{Domain, Socket, Type};

/// Read/write timeout of test clients, so a broken tunnel fails a test instead of
/// hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to `target`, from `source` if given (e.g. 127.0.0.9 to test IP policies).
pub fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&target.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `payload`, half-closes, and returns everything received until EOF. Writing
/// and reading run concurrently, so payloads larger than socket buffers work.
pub fn exchange(mut stream: TcpStream, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let data = payload.to_vec();
    let sender = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut received = Vec::with_capacity(payload.len());
    let read = stream.read_to_end(&mut received);
    let sent = sender.join().expect("sender thread");
    read?;
    sent?;
    Ok(received)
}

/// Connects to `target` and checks that `payload` comes back unchanged.
pub fn echo_ok(source: Option<IpAddr>, target: SocketAddr, payload: &[u8]) -> io::Result<()> {
    let got = exchange(connect_from(source, target)?, payload)?;
    if got != payload {
        return Err(io::Error::other(format!(
            "echo mismatch: sent {} bytes, got {} bytes back",
            payload.len(),
            got.len()
        )));
    }
    Ok(())
}

/// Sends `msg` on an open connection and waits up to `wait` for its echo; false if it
/// did not come back whole.
pub fn echoes(s: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).is_ok() && got == msg
}

/// Whether the far end resets `s` within `wait` (a plain EOF, a clean close, does not
/// count), with nothing sent on it.
pub fn reset_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    matches!(s.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
}

/// Whether the far end ends `s` (EOF or reset) within `wait`, sending nothing; false
/// when the wait runs out with the connection still open (a timeout is not a close).
pub fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Connects to `target`, sends `probe` and waits up to `limit` for the far end to end
/// the connection (EOF, or a reset, one arriving before `connect` returned included)
/// without answering a byte. Ok: how long after connecting began it was closed. Err
/// says what happened instead: bytes came back, still open after `limit`, or another
/// failure.
pub fn closed_unanswered(
    target: SocketAddr,
    probe: &[u8],
    limit: Duration,
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    let mut s = match connect_from(None, target) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(started.elapsed()),
        Err(e) => return Err(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    // The write may already fail when the close was quick; only the close matters.
    let _ = s.write_all(probe);
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => Ok(started.elapsed()),
        Ok(n) => Err(format!("answered: {n} bytes came back")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(started.elapsed()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("still open after {:?}", started.elapsed()))
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Tries a small echo until it succeeds or `deadline` passes; for waiting until a
/// tunnel is usable (after a restart) without sleeping blindly.
pub fn wait_until_echo(target: SocketAddr, deadline: Duration) -> io::Result<()> {
    let end = std::time::Instant::now() + deadline;
    loop {
        match echo_ok(None, target, b"ping") {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether the server closed the connection without sending data back: connects,
/// sends a probe and expects EOF or a reset, not an echo.
pub fn is_refused(source: Option<IpAddr>, target: SocketAddr) -> bool {
    let Ok(stream) = connect_from(source, target) else {
        return true;
    };
    match exchange(stream, b"probe") {
        Ok(got) => got.is_empty(),
        Err(_) => true,
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
