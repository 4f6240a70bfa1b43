//! Upstream servers for end-to-end tests, on loopback.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// An echo server: every byte comes back; EOF from the client is answered with EOF
/// after the last byte.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || echo(conn));
            }
        });
        Echo { addr, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
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

/// An echo server that reports how each connection ended; with `reset_after` set it
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
