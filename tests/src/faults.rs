//! Misbehaving upstreams and resource probes for fault tests.
//!
//! - [`Silent`]: accepts and never answers (reads and drops, never writes, never closes
//!   first); counts connections still open, to show the tunnel released them.
//! - [`Resetter`]: accepts and resets at once (SO_LINGER 0).
//! - [`gone_addr`]: an address on loopback where nothing listens (connect: refused).
//! - [`fd_count`], [`rss_kib`], [`tcp_fds`]: a process's open descriptors, resident
//!   memory and TCP sockets (with their addresses) from `/proc/PID`.

use std::{
    collections::HashMap,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// An upstream that accepts, reads whatever comes and never writes a byte.
pub struct Silent {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Silent {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> Silent {
        Silent::start_on("127.0.0.1:0")
    }

    /// Starts on `bind` (e.g. an address inside a network namespace).
    pub fn start_on(bind: &str) -> Silent {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (acc, op) = (accepted.clone(), open.clone());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                acc.fetch_add(1, Ordering::Relaxed);
                op.fetch_add(1, Ordering::Relaxed);
                let op = op.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    // Until the peer closes or resets: the tunnel must end this side.
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    op.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Silent {
            addr,
            accepted,
            open,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Accepted connections the other side has not closed yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// An upstream that resets every connection as soon as it is accepted.
pub struct Resetter {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Resetter {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start() -> Resetter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                acc.fetch_add(1, Ordering::Relaxed);
                let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                drop(conn);
            }
        });
        Resetter { addr, accepted }
    }

    /// Connections accepted (and reset) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A loopback address where nothing listens: a port that was just bound and released.
pub fn gone_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// One IPv4 TCP socket a process holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFd {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address (0.0.0.0:0 for a listener).
    pub remote: SocketAddr,
    /// Whether it is a listening socket.
    pub listening: bool,
}

fn parse_v4(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    // The kernel prints the network-order address as a native-endian u32.
    let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
    Some(SocketAddr::new(
        ip.into(),
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// The IPv4 TCP sockets among process `pid`'s descriptors, and how many descriptors
/// are something else (pipes, eventfds, files, other sockets).
pub fn tcp_fds(pid: u32) -> (Vec<TcpFd>, usize) {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/net/tcp: {e}"));
    let mut by_inode = HashMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        if let (Some(local), Some(remote)) = (parse_v4(f[1]), parse_v4(f[2])) {
            let fd = TcpFd {
                local,
                remote,
                listening: f[3] == "0A",
            };
            by_inode.insert(f[9].to_string(), fd);
        }
    }
    let mut tcp = Vec::new();
    let mut other = 0;
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"));
    for entry in dir.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'));
        match inode.and_then(|i| by_inode.get(i)) {
            Some(fd) => tcp.push(*fd),
            None => other += 1,
        }
    }
    (tcp, other)
}
