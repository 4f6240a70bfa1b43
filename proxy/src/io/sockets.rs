//! Socket construction and small socket operations: listeners, non-blocking mode,
//! half-close and reset-on-close.
//!
//! # Every listener is exclusive
//!
//! The edge's workers each own one `SO_REUSEPORT` listener per address, and the kernel
//! spreads accepted connections over them ([`reuseport_listeners`]: the first binds,
//! even to port 0, the rest join its real port). `SO_REUSEPORT` is a group any socket
//! may join that also sets it, if it belongs to the same user: a second `sluice edge`
//! on the same port, or one of our own listeners for another purpose (a `tcp://`
//! endpoint on the agent port) would bind without error and silently take a share of
//! the connections.
//!
//! So before binding a group on a fixed port, [`ensure_free`] binds a probe socket on
//! that address *without* `SO_REUSEPORT` and closes it again. Linux refuses that bind
//! (`EADDRINUSE`) while any listener, reuseport or not, of any process holds an
//! overlapping address (the same IP, or a wildcard covering it); the probe sets
//! `SO_REUSEADDR`, like our listeners, so connections of an earlier run lingering in
//! `TIME_WAIT`, or still open after their listener closed, do not count. Only then is the
//! group bound, with `SO_REUSEPORT` set explicitly. With port 0 there is nothing to
//! probe: the kernel picks a port no socket is bound to (an ephemeral bind never joins
//! an existing group).
//!
//! A predecessor that just died still holds its listeners for a moment: io_uring tears
//! a dead process's ring down asynchronously, and a listener with an accept in flight
//! stays open (and listening) until that is done, after the process has been reaped
//! (measured here: 6–9 ms after `kill -9` of an idle edge on the uring driver, nothing
//! on epoll). A restart right after a crash must not take that for a clash, so the
//! probe retries for up to [`PREDECESSOR_GRACE`] before the address counts as in use;
//! a real clash is thus reported that much later.
//!
//! What the probe cannot do: it checks at bind time only. A process of the same user
//! that deliberately sets `SO_REUSEPORT` can still join the group afterwards; the
//! kernel allows it, and such a process could as well read our memory, so the boundary
//! is the user: run sluice as a user of its own. And between closing the probe and
//! binding the group there is a window of microseconds in which another socket could
//! take the address; a non-reuseport one then makes our bind fail as it should.
//!
//! Listeners that need no spreading (the admin API, the agent's metrics) are single
//! sockets without `SO_REUSEPORT` ([`exclusive_listener`]): nobody can join them, and
//! binding one fails while anybody else holds the address.

use std::{
    io,
    mem::MaybeUninit,
    net::{SocketAddr, TcpListener},
    os::fd::RawFd,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog for public and agent listeners.
const BACKLOG: i32 = 4096;

/// How long an address may stay held before [`ensure_free`] calls it in use (a dying
/// predecessor's listeners close within milliseconds; see the module doc).
pub const PREDECESSOR_GRACE: Duration = Duration::from_secs(1);

/// How often [`ensure_free`] probes again within the grace period.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Binds `count` listeners on `addr` with SO_REUSEPORT so the kernel spreads accepts
/// over workers. With port 0, the first listener's port is used for the rest. An
/// address some other listener (of this process or another) holds is an
/// [`io::ErrorKind::AddrInUse`] error; every error names the address.
pub fn reuseport_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let mut out: Vec<TcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let listener = listener(addr, true).map_err(|e| listen_error(addr, e))?;
        addr = listener.local_addr().map_err(|e| listen_error(addr, e))?;
        out.push(listener);
    }
    Ok(out)
}

/// Binds one non-blocking listener on `addr` without SO_REUSEPORT: no other socket can
/// share its port. Errors name the address, as [`reuseport_listeners`]'s do.
pub fn exclusive_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    listener(addr, false).map_err(|e| listen_error(addr, e))
}

/// Fails with [`io::ErrorKind::AddrInUse`] when any listener holds `addr` (or an
/// address overlapping it) for longer than [`PREDECESSOR_GRACE`]: see the module doc.
/// Blocks the calling thread meanwhile.
pub fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let start = Instant::now();
    loop {
        match probe(addr) {
            Ok(()) => {
                if start.elapsed() >= PROBE_INTERVAL {
                    tracing::info!(%addr, waited_ms = start.elapsed().as_millis() as u64,
                        "address released by its previous holder");
                }
                return Ok(());
            }
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < PREDECESSOR_GRACE =>
            {
                std::thread::sleep(PROBE_INTERVAL)
            }
            Err(e) => return Err(listen_error(addr, e)),
        }
    }
}

/// Binds a socket on `addr` without SO_REUSEPORT (SO_REUSEADDR set) and closes it.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
    // The probe closes here, before anything listens on it.
}

/// A listening, non-blocking socket on `addr`; SO_REUSEPORT set to `reuse_port`.
/// `TCP_NODELAY` is set on the listener: Linux copies it to every accepted connection,
/// which saves a `setsockopt` per connection.
fn listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// `e`, naming `addr` once; a busy address says so in words.
pub fn listen_error(addr: SocketAddr, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another process or listener"),
        ),
        kind => io::Error::new(kind, format!("cannot listen on {addr}: {e}")),
    }
}

/// Puts a socket into non-blocking mode (needed for our own splice calls): one
/// `ioctl(FIONBIO)`, where `fcntl` would take two (read the flags, then set them).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int from a live local; the caller owns the fd.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends FIN: the peer reads EOF, while we can still read its remaining bytes.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on an fd the caller owns; errors (already closed) are irrelevant.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Turns TCP keepalive on: probes after `idle` without traffic, every `interval`,
/// `count` of them unanswered end the connection (a peer that vanished without a FIN
/// is noticed). Best effort.
pub fn keepalive(fd: RawFd, idle: std::time::Duration, interval: std::time::Duration, count: u32) {
    // SAFETY: the fd is an open socket the caller owns; SockRef does not close it.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let options = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(count);
    let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&options);
}

/// Makes the coming close send RST instead of FIN (SO_LINGER with zero timeout).
pub fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a correctly sized linger struct on an fd the caller owns.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// True when the peer has closed the connection (or it failed): used to skip idle
/// data channels that died while parked. Never blocks.
pub fn peer_closed(fd: RawFd) -> bool {
    peek_first_byte(fd).is_err()
}

/// Appends to `buf` what `fd` has already received, up to `LIMIT` bytes in all; never
/// blocks, and grows `buf` only by what arrived. Nothing there yet, an end of stream or
/// an error appends nothing: the next read on the socket sees them again.
pub fn read_ready<const LIMIT: usize>(fd: RawFd, buf: &mut Vec<u8>) {
    let mut scratch = [MaybeUninit::<u8>::uninit(); LIMIT];
    let room = LIMIT.saturating_sub(buf.len());
    if room == 0 {
        return;
    }
    if let Ok(got) = recv_uninit(fd, &mut scratch[..room], libc::MSG_DONTWAIT) {
        buf.extend_from_slice(got);
    }
}

/// One `recv(2)` into uninitialised memory, so a large stack buffer costs no zeroing
/// per call: the bytes received (none at EOF), or the error (`WouldBlock` included).
pub fn recv_uninit(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
) -> io::Result<&[u8]> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first `n` (<= buf.len()) bytes.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) })
}

/// Peeks at the first byte without consuming it; `Ok(None)` when none is there yet.
pub fn peek_first_byte(fd: RawFd) -> io::Result<Option<u8>> {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    // MSG_PEEK leaves the byte in the socket; MSG_DONTWAIT keeps it non-blocking.
    match recv_uninit(fd, &mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(&[b]) => Ok(Some(b)),
        Ok(_) => Err(io::ErrorKind::UnexpectedEof.into()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a listening socket stop accepting: pending and future `accept`s fail
/// (EINVAL), which ends the accept loop without closing the fd under its owner.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: shutdown on a listening fd that stays open (owned by a worker).
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Shuts a connected socket down both ways: the peer sees end-of-file and a pending
/// read on it returns. The caller must own an open descriptor for `fd`.
pub fn shutdown_both(fd: RawFd) {
    // SAFETY: shutdown on a socket fd the caller keeps open.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

#[cfg(test)]
mod tests {
    use std::{
        io::{ErrorKind, Read},
        net::TcpStream,
    };

    use super::*;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn assert_in_use(result: io::Result<impl std::fmt::Debug>, addr: SocketAddr) {
        let e = result.expect_err("the address is held");
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
        assert_eq!(
            e.to_string(),
            format!("{addr} is already in use by another process or listener")
        );
    }

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        for listener in [
            exclusive_listener(loopback(0)).unwrap(),
            reuseport_listeners(loopback(0), 1).unwrap().remove(0),
        ] {
            let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            listener.set_nonblocking(false).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            assert!(accepted.nodelay().unwrap());
        }
    }

    #[test]
    fn set_nonblocking_makes_reads_return_would_block() {
        let listener = exclusive_listener(loopback(0)).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        // SAFETY: F_GETFL on a live socket.
        let flags = || unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(flags() & libc::O_NONBLOCK, 0);
        set_nonblocking(fd).unwrap();
        assert_ne!(flags() & libc::O_NONBLOCK, 0);
        let e = client.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }

    #[test]
    fn port_zero_puts_every_worker_on_one_port_that_nobody_else_can_join() {
        let group = reuseport_listeners(loopback(0), 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(group.iter().all(|l| l.local_addr().unwrap() == addr));
        // Another group (a second edge), a wildcard over it, a plain listener.
        assert_in_use(reuseport_listeners(addr, 2), addr);
        let wildcard = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert_in_use(reuseport_listeners(wildcard, 2), wildcard);
        assert_in_use(exclusive_listener(addr), addr);
        drop(group);
        reuseport_listeners(addr, 2).expect("free again once closed");
    }

    #[test]
    fn a_foreign_reuseport_listener_is_not_joined() {
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        foreign.set_reuse_address(true).unwrap();
        foreign.set_reuse_port(true).unwrap();
        foreign.bind(&loopback(0).into()).unwrap();
        foreign.listen(8).unwrap();
        let addr = foreign.local_addr().unwrap().as_socket().unwrap();
        assert_in_use(reuseport_listeners(addr, 2), addr);
    }

    #[test]
    fn an_exclusive_listener_cannot_be_joined() {
        let admin = exclusive_listener(loopback(0)).unwrap();
        let addr = admin.local_addr().unwrap();
        assert_in_use(reuseport_listeners(addr, 2), addr);
    }

    #[test]
    fn connections_left_in_time_wait_do_not_hold_the_port() {
        let group = reuseport_listeners(loopback(0), 1).unwrap();
        let addr = group[0].local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = loop {
            match group[0].accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        // The server closes first: its side of the connection, bound to the port,
        // goes to TIME_WAIT.
        drop(accepted);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        drop(client);
        drop(group);
        reuseport_listeners(addr, 2).expect("TIME_WAIT leftovers do not block a restart");
    }

    #[test]
    fn other_errors_name_the_address_once() {
        // Not an address of this host.
        let addr: SocketAddr = "192.0.2.1:4443".parse().unwrap();
        let e = reuseport_listeners(addr, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrNotAvailable, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot listen on 192.0.2.1:4443: "),
            "{text}"
        );
        assert_eq!(text.matches("192.0.2.1").count(), 1, "{text}");
    }
}
