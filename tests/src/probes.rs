//! Upstreams and clients that observe one property each: what a PROXY protocol header
//! said (source and destination, IPv4 and IPv6), whether a half-close arrived, and a
//! TLS client that half-closes (close_notify and a TCP FIN) and keeps reading.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::ServerName;

/// What a PROXY protocol header named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// `TCP4`/`TCP6` (v1) or the v2 family byte as `0x11`/`0x21`.
    pub family: String,
    /// The client.
    pub src: SocketAddr,
    /// The address the client connected to.
    pub dst: SocketAddr,
}

/// An upstream that reads a PROXY protocol header (v1 or v2, IPv4 or IPv6), reports it
/// on [`HeaderEcho::headers`] (`None` when there was no valid header), then echoes.
pub struct HeaderEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    /// One entry per connection that brought bytes.
    pub headers: mpsc::Receiver<Option<ProxyHeader>>,
}

impl HeaderEcho {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> HeaderEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, headers) = mpsc::channel();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    if !matches!(conn.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                        return;
                    }
                    let header = read_header(&mut conn);
                    let ok = header.is_some();
                    let _ = tx.send(header);
                    if ok {
                        echo_to_eof(conn);
                    }
                });
            }
        });
        HeaderEcho { addr, headers }
    }
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Parses a PROXY header off `conn`, independently of sluice's parser.
pub fn read_header(conn: &mut TcpStream) -> Option<ProxyHeader> {
    let mut first = [0u8; 12];
    conn.read_exact(&mut first).ok()?;
    if first == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        conn.read_exact(&mut rest).ok()?;
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).ok()?;
        if rest[0] != 0x21 {
            return None;
        }
        let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
        let (src, dst) = match rest[1] {
            0x11 if len >= 12 => {
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        body[at],
                        body[at + 1],
                        body[at + 2],
                        body[at + 3],
                    ))
                };
                (
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                )
            }
            0x21 if len >= 36 => {
                let ip = |at: usize| {
                    let b: [u8; 16] = body[at..at + 16].try_into().unwrap();
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                (
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                )
            }
            _ => return None,
        };
        return Some(ProxyHeader {
            version: 2,
            family: format!("{:#04x}", rest[1]),
            src,
            dst,
        });
    }
    let mut line = first.to_vec();
    while !line.ends_with(b"\r\n") && line.len() < 107 {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).ok()?;
        line.push(b[0]);
    }
    let text = std::str::from_utf8(&line).ok()?.trim_end();
    let parts: Vec<&str> = text.split(' ').collect();
    if parts.len() != 6 || parts[0] != "PROXY" || !matches!(parts[1], "TCP4" | "TCP6") {
        return None;
    }
    let ip = |s: &str| -> Option<IpAddr> {
        if parts[1] == "TCP4" {
            s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else {
            s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
    };
    Some(ProxyHeader {
        version: 1,
        family: parts[1].to_string(),
        src: SocketAddr::new(ip(parts[2])?, parts[4].parse().ok()?),
        dst: SocketAddr::new(ip(parts[3])?, parts[5].parse().ok()?),
    })
}

fn echo_to_eof(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => {
                let _ = conn.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// An upstream that answers nothing until the client's EOF arrives, then sends back
/// everything it received and closes: a reply reaches the client only if the client's
/// half-close crossed every hop and the way back stayed open.
pub struct ReplyAfterEof {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Bytes received by each connection that ended with EOF.
    pub received: mpsc::Receiver<usize>,
}

impl ReplyAfterEof {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> ReplyAfterEof {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut all = Vec::new();
                    if conn.read_to_end(&mut all).is_err() || all.is_empty() {
                        return;
                    }
                    let _ = tx.send(all.len());
                    if conn.write_all(&all).is_ok() {
                        let _ = conn.shutdown(Shutdown::Write);
                    }
                    // Hold the socket until the peer closes, so the close is clean.
                    let _ = conn.read(&mut [0u8; 1]);
                });
            }
        });
        ReplyAfterEof { addr, received }
    }
}

/// An upstream that speaks first and closes first: on each connection it sends
/// `greeting` and half-closes, then reads what the client sends until the client's EOF
/// and reports it on [`ClosesFirst::received`].
pub struct ClosesFirst {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What each connection received after the upstream's own FIN.
    pub received: mpsc::Receiver<io::Result<Vec<u8>>>,
}

impl ClosesFirst {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(greeting: Vec<u8>) -> ClosesFirst {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, received) = mpsc::channel();
        let greeting = Arc::new(greeting);
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let (tx, greeting) = (tx.clone(), greeting.clone());
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    let result = conn
                        .write_all(&greeting)
                        .and_then(|()| conn.shutdown(Shutdown::Write))
                        .and_then(|()| {
                            let mut got = Vec::new();
                            conn.read_to_end(&mut got).map(|_| got)
                        });
                    let _ = tx.send(result);
                });
            }
        });
        ClosesFirst { addr, received }
    }
}

/// How a TLS exchange ended on the client's side.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsEnd {
    /// The server sent close_notify before its FIN.
    CloseNotify,
    /// The TCP connection ended without close_notify.
    BareEof,
}

/// Connects to `target` over TLS as `name`, sends `payload`, then half-closes (a
/// close_notify alert, then a TCP FIN) and reads until the server ends the connection.
/// Writing and reading are interleaved on one thread (non-blocking), so payloads much
/// larger than socket buffers work. Returns the bytes received and how they ended.
pub fn tls_half_close_exchange(
    target: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    payload: &[u8],
    deadline: Duration,
) -> Result<(Vec<u8>, TlsEnd), String> {
    let mut tcp = crate::client::connect_from(None, target).map_err(|e| e.to_string())?;
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let end_by = Instant::now() + deadline;
    let (mut sent, mut notified, mut shut) = (0usize, false, false);
    let mut got = Vec::with_capacity(payload.len());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut moved = false;
        // Plaintext in, as far as rustls buffers it.
        while sent < payload.len() {
            let end = (sent + 64 * 1024).min(payload.len());
            match conn.writer().write(&payload[sent..end]) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n;
                    moved = true;
                }
                Err(e) => return Err(format!("buffering plaintext: {e}")),
            }
        }
        if sent == payload.len() && !notified && !conn.is_handshaking() {
            conn.send_close_notify();
            notified = true;
        }
        // Ciphertext out.
        while conn.wants_write() {
            match conn.write_tls(&mut tcp) {
                Ok(_) => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("sending after {sent} bytes: {e}")),
            }
        }
        if notified && !shut && !conn.wants_write() {
            tcp.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            shut = true;
        }
        // Ciphertext in, plaintext out (drained after each read, so rustls' buffer of
        // received plaintext never fills).
        let mut tcp_eof = false;
        loop {
            match conn.read_tls(&mut tcp) {
                Ok(0) => tcp_eof = true,
                Ok(_) => {
                    conn.process_new_packets()
                        .map_err(|e| format!("TLS error after {} bytes: {e}", got.len()))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("reading after {} bytes: {e}", got.len())),
            }
            let mut progressed = false;
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => return Ok((got, TlsEnd::CloseNotify)),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        progressed = true;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok((got, TlsEnd::BareEof))
                    }
                    Err(e) => return Err(format!("plaintext after {} bytes: {e}", got.len())),
                }
            }
            if tcp_eof || !progressed {
                break;
            }
        }
        if tcp_eof {
            return Ok((got, TlsEnd::BareEof));
        }
        let now = Instant::now();
        if moved {
            // More may go out or come in at once: only wait when nothing moved.
            if now >= end_by {
                return Err(format!("deadline: sent {sent}, received {}", got.len()));
            }
            continue;
        }
        if now >= end_by {
            return Err(format!(
                "deadline: sent {sent} of {}, received {}",
                payload.len(),
                got.len()
            ));
        }
        let mut events = libc::POLLIN;
        if conn.wants_write() {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: tcp.as_raw_fd(),
            events,
            revents: 0,
        };
        let wait = (end_by - now).min(Duration::from_millis(500)).as_millis() as i32;
        // SAFETY: poll(2) on one pollfd we own, for a socket that stays open.
        unsafe { libc::poll(&mut pfd, 1, wait) };
    }
}
