//! Upstream servers for end-to-end tests, on loopback.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// An echo server: every byte comes back; EOF from the client is answered with EOF
/// after the last byte. It can answer late ([`Echo::start_slow`]), and its listener can
/// be closed and reopened on the same port ([`Echo::stop`], [`Echo::restart`]).
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    delay: Duration,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> Echo {
        Echo::start_slow(Duration::ZERO)
    }

    /// Starts on 127.0.0.1 with a free port; each connection waits `delay` after its
    /// first bytes arrive before anything is echoed (a slow upstream).
    pub fn start_slow(delay: Duration) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut echo = Echo {
            addr: listener.local_addr().unwrap(),
            accepted: Default::default(),
            active: Default::default(),
            delay,
            stop: Default::default(),
            acceptor: None,
        };
        echo.serve(listener);
        echo
    }

    fn serve(&mut self, listener: TcpListener) {
        let (accepted, active, stop, delay) = (
            self.accepted.clone(),
            self.active.clone(),
            self.stop.clone(),
            self.delay,
        );
        self.acceptor = Some(std::thread::spawn(move || {
            let mut draining = false;
            loop {
                let conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => continue,
                };
                if !draining && stop.load(Ordering::Acquire) {
                    // Serve what the kernel already accepted (closing the listener
                    // would reset it), then close.
                    draining = true;
                    listener.set_nonblocking(true).unwrap();
                }
                let _ = conn.set_nonblocking(false);
                let (accepted, active) = (accepted.clone(), active.clone());
                active.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    // Count connections that carry bytes: health checks that only
                    // connect and close are not clients.
                    if matches!(conn.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if !delay.is_zero() {
                            std::thread::sleep(delay);
                        }
                        echo(conn);
                    }
                    active.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }));
    }

    /// Closes the listener (new connections are refused); open ones, and those the
    /// kernel had already accepted, carry on.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
    }

    /// Listens again on the same address after [`Echo::stop`].
    pub fn restart(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("rebinding {}: {e}", self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.stop = Default::default();
        self.serve(listener);
    }

    /// Connections that brought bytes so far (bare connects, like health checks, are
    /// not counted).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now (any, from accept to close).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

fn echo(mut conn: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => {
                let _ = conn.shutdown(std::net::Shutdown::Write);
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

/// How an upstream connection ended, as the upstream saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer half-closed (read returned 0).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Some other error.
    Other,
}

/// An echo server that reports how each connection that brought bytes ended; with `reset_after` set it
/// resets each connection itself after echoing that many bytes.
pub struct Recorder {
    /// Where it listens.
    pub addr: SocketAddr,
    /// One entry per finished connection.
    pub endings: std::sync::mpsc::Receiver<Ending>,
}

impl Recorder {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(reset_after: Option<usize>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, endings) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    // Health checks connect and close without a byte: not recorded.
                    if !matches!(conn.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                        return;
                    }
                    let _ = tx.send(echo_and_record(conn, reset_after));
                });
            }
        });
        Recorder { addr, endings }
    }
}

fn echo_and_record(mut conn: TcpStream, reset_after: Option<usize>) -> Ending {
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0usize;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ending::Eof,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return Ending::Other;
                }
                echoed += n;
                if reset_after.is_some_and(|limit| echoed >= limit) {
                    let _ =
                        socket2::SockRef::from(&conn).set_linger(Some(std::time::Duration::ZERO));
                    return Ending::Other;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ending::Reset,
            Err(_) => return Ending::Other,
        }
    }
}

/// An upstream that expects a PROXY protocol header (v1 or v2, TCP over IPv4), answers
/// `SRC=<client address>\n` with the address the header named, then echoes.
pub struct ProxyEcho {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ProxyEcho {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> ProxyEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || proxy_echo(conn));
            }
        });
        ProxyEcho { addr }
    }
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn read_proxy_source(conn: &mut TcpStream) -> Option<SocketAddr> {
    let mut first = [0u8; 12];
    conn.read_exact(&mut first).ok()?;
    if first == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        conn.read_exact(&mut rest).ok()?;
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).ok()?;
        if rest[0] != 0x21 || rest[1] != 0x11 || len < 12 {
            return None;
        }
        let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
        let port = u16::from_be_bytes([body[8], body[9]]);
        return Some(SocketAddr::new(ip.into(), port));
    }
    let mut line = first.to_vec();
    while !line.ends_with(b"\r\n") && line.len() < 107 {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).ok()?;
        line.push(b[0]);
    }
    let text = std::str::from_utf8(&line).ok()?.trim_end();
    let parts: Vec<&str> = text.split(' ').collect();
    if parts.len() != 6 || parts[0] != "PROXY" || parts[1] != "TCP4" {
        return None;
    }
    Some(SocketAddr::new(
        parts[2].parse().ok()?,
        parts[4].parse().ok()?,
    ))
}

fn proxy_echo(mut conn: TcpStream) {
    let answer = match read_proxy_source(&mut conn) {
        Some(src) => format!("SRC={src}\n"),
        None => "NO-PROXY-HEADER\n".to_string(),
    };
    if conn.write_all(answer.as_bytes()).is_ok() {
        echo(conn);
    }
}

/// An echo server that also keeps every byte it received, to check what reached it
/// (plaintext, or TLS records).
pub struct Capture {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Capture {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) => {
                                let _ = conn.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Capture { addr, received }
    }

    /// Every byte received so far, over all connections.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// A transparent TCP relay to `target` that keeps every byte it forwarded from the
/// target back to its clients: put between an agent and the edge's agent port, it
/// shows what the edge sent over the control and data channels.
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    from_target: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    /// Starts on 127.0.0.1 with a free port, relaying every connection to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let from_target = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = from_target.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let pipe =
                    |mut from: TcpStream,
                     mut to: TcpStream,
                     sink: Option<Arc<std::sync::Mutex<Vec<u8>>>>| {
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                match from.read(&mut buf) {
                                    Ok(0) | Err(_) => {
                                        let _ = to.shutdown(std::net::Shutdown::Write);
                                        return;
                                    }
                                    Ok(n) => {
                                        if let Some(sink) = &sink {
                                            sink.lock().unwrap().extend_from_slice(&buf[..n]);
                                        }
                                        if to.write_all(&buf[..n]).is_err() {
                                            let _ = from.shutdown(std::net::Shutdown::Read);
                                            return;
                                        }
                                    }
                                }
                            }
                        });
                    };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    None,
                );
                pipe(server, client, Some(sink.clone()));
            }
        });
        Relay { addr, from_target }
    }

    /// Every byte the target sent so far, over all connections.
    pub fn from_target(&self) -> Vec<u8> {
        self.from_target.lock().unwrap().clone()
    }
}
