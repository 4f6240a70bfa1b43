//! Misbehaving upstreams and resource probes for fault tests.
//!
//! - [`Silent`]: accepts and never answers (reads and drops, never writes, never closes
//!   first); counts connections still open, to show the tunnel released them.
//! - [`Resetter`]: accepts and resets at once (SO_LINGER 0).
//! - [`gone_addr`]: an address on loopback where nothing listens (connect: refused).
//! - [`fd_count`], [`rss_kib`], [`tcp_fds`]: a process's open descriptors, resident
//!   memory and TCP sockets (with their addresses) from `/proc/PID`.
//! - [`echo_held`]: held connections kept echoing while a process's CPU time is taken.

use std::{
    collections::HashMap,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
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

/// Sets the soft open-files limit of process `pid` (a child of the test), keeping its
/// hard limit; returns the old soft limit. Lowering the soft limit needs no privilege.
pub fn set_soft_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on the PID of a child we started, with valid pointers; a null
    // new limit only reads.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit on {pid}: {}",
        std::io::Error::last_os_error()
    );
    old.rlim_cur
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the name, state is index 0.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    std::time::Duration::from_millis(ticks * 1000 / hz)
}

/// What process `pid` spent while [`echo_held`] kept its connections busy.
pub struct HeldEchoes {
    /// CPU time (user + system) the process used meanwhile.
    pub cpu: Duration,
    /// How long the echoes went on.
    pub window: Duration,
    /// Rounds of one echo on every held connection.
    pub rounds: usize,
}

/// Echoes once on every connection in `held` every 100 ms for `window`, each echo
/// within 5 s or a panic naming `what` and the connection, and takes the CPU time
/// process `pid` used meanwhile: whether a process in trouble keeps serving the streams
/// it has, and idles rather than spins.
pub fn echo_held(pid: u32, held: &mut [TcpStream], window: Duration, what: &str) -> HeldEchoes {
    let cpu0 = cpu_time(pid);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < window {
        for (i, s) in held.iter_mut().enumerate() {
            assert!(
                crate::client::echoes(s, format!("held {i}").as_bytes(), Duration::from_secs(5)),
                "{what}: held connection {i} stopped echoing"
            );
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    HeldEchoes {
        window: started.elapsed(),
        cpu: cpu_time(pid) - cpu0,
        rounds,
    }
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

/// Process `pid`'s IPv4 TCP sockets by inode.
fn tcp_by_inode(pid: u32) -> HashMap<String, TcpFd> {
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
    by_inode
}

/// Process `pid`'s descriptors: number, and the socket inode for sockets.
fn descriptors(pid: u32) -> Vec<(u64, Option<String>)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .flatten()
        .filter_map(|entry| {
            let number = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let inode = target
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .map(str::to_string);
            Some((number, inode))
        })
        .collect()
}

/// The IPv4 TCP sockets among process `pid`'s descriptors, and how many descriptors
/// are something else (pipes, eventfds, files, other sockets).
pub fn tcp_fds(pid: u32) -> (Vec<TcpFd>, usize) {
    let by_inode = tcp_by_inode(pid);
    let mut tcp = Vec::new();
    let mut other = 0;
    for (_, inode) in descriptors(pid) {
        match inode.and_then(|i| by_inode.get(&i)) {
            Some(fd) => tcp.push(*fd),
            None => other += 1,
        }
    }
    (tcp, other)
}

/// The lowest descriptor number among process `pid`'s connected TCP sockets, or the
/// lowest free number if that is lower. A soft `RLIMIT_NOFILE` at this value leaves
/// the process no descriptor to open, and keeps it so while connections come and go (a
/// closed connection frees a number above the limit, which a new descriptor may not
/// take); the descriptors below it are the ones a process keeps for its life (stdio,
/// logs, the ring, listeners).
pub fn lowest_connection_fd(pid: u32) -> u64 {
    let by_inode = tcp_by_inode(pid);
    let held = descriptors(pid);
    let numbers: std::collections::HashSet<u64> = held.iter().map(|(n, _)| *n).collect();
    let first_free = (0..).find(|n| !numbers.contains(n)).unwrap();
    held.into_iter()
        .filter(|(_, inode)| {
            inode
                .as_ref()
                .and_then(|i| by_inode.get(i))
                .is_some_and(|fd| !fd.listening)
        })
        .map(|(number, _)| number)
        .min()
        .unwrap_or_else(|| panic!("process {pid} holds no TCP connection"))
        .min(first_free)
}
