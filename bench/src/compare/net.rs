//! Loopback helpers: free ephemeral ports, waiting for a port to accept, and the
//! echo and HTTP probes that decide when a path is usable.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// `n` distinct free ports on 127.0.0.1, found by binding port 0 (the kernel's
/// ephemeral range) and letting go.
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?)
}

/// Whether a TCP connection to `addr` is accepted.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Waits until `addr` accepts connections, at most `timeout`.
pub fn wait_accepting(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if accepts(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{addr} did not accept connections within {timeout:?}")
}

/// One 16-byte echo through `addr`, bounded to about a second.
pub fn echo_ok(addr: SocketAddr) -> bool {
    let probe = *b"sluice-compare16";
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(1000)));
    let mut back = [0u8; 16];
    s.write_all(&probe).is_ok() && s.read_exact(&mut back).is_ok() && back == probe
}

/// Polls [`echo_ok`] every 5 ms until it succeeds; the time it took since `since`.
pub fn wait_echo(addr: SocketAddr, since: Instant, timeout: Duration) -> Result<Duration> {
    while since.elapsed() < timeout {
        if echo_ok(addr) {
            return Ok(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("no echo through {addr} within {timeout:?}")
}

/// One `GET /` to `addr` naming `host`, answered `200`, bounded to about a second.
pub fn http_ok(addr: SocketAddr, host: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(1000)));
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(request.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && head.ends_with(b" 200")
}

/// Polls [`http_ok`] every 5 ms until it succeeds, at most `timeout`.
pub fn wait_http(addr: SocketAddr, host: &str, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if http_ok(addr, host) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("no 200 from {addr} for Host {host} within {timeout:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_accept_and_echo() {
        let a = free_addrs(3).unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| x.ip().is_loopback()));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten().take(2) {
                let mut b = [0u8; 16];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
        wait_accepting(addr, Duration::from_secs(2)).unwrap();
        assert!(wait_echo(addr, Instant::now(), Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn http_probe_wants_a_200() {
        let answer = |status: &'static str| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            std::thread::spawn(move || {
                if let Some(mut s) = l.incoming().flatten().next() {
                    let mut b = [0u8; 256];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes());
                }
            });
            addr
        };
        assert!(http_ok(answer("200 OK"), "bench.example"));
        assert!(!http_ok(answer("502 Bad Gateway"), "bench.example"));
    }
}
