//! Socket construction and small socket operations: per-worker `SO_REUSEPORT`
//! listeners that all share one port (the first binds, even to port 0, the rest join
//! its real port), non-blocking mode, half-close and reset-on-close.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::RawFd,
};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog for public and agent listeners.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners on `addr` with SO_REUSEPORT so the kernel spreads accepts
/// over workers. With port 0, the first listener's port is used for the rest.
pub fn reuseport_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut out: Vec<TcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Puts a socket into non-blocking mode (needed for our own splice calls).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends FIN: the peer reads EOF, while we can still read its remaining bytes.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on an fd the caller owns; errors (already closed) are irrelevant.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
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

/// Peeks at the first byte without consuming it; `Ok(None)` when none is there yet.
pub fn peek_first_byte(fd: RawFd) -> io::Result<Option<u8>> {
    let mut byte = 0u8;
    // SAFETY: recv into a one-byte buffer we own; MSG_DONTWAIT keeps it non-blocking
    // and MSG_PEEK leaves the byte in the socket.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        1 => Ok(Some(byte)),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            }
        }
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
