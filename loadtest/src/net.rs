//! Sockets: outgoing connections with an optional source address ([`connect`]) and the
//! per-worker `SO_REUSEPORT` listeners of `serve` ([`listeners`]).
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd},
    time::Duration,
};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::{Failure, LoadError};

/// Connects to `target`, from `bind` if given, within `timeout`; `TCP_NODELAY` is on.
///
/// Cancel-safe only in the sense that dropping it closes the half-made socket.
pub async fn connect(
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    let fut = async {
        let stream = match bind {
            None => TcpStream::connect_addr(target).await?,
            Some(ip) => connect_from(target, ip).await?,
        };
        stream.set_nodelay(true)?;
        Ok::<_, io::Error>(stream)
    };
    match monoio::time::timeout(timeout, fut).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Failure::io("connect", &e)),
        Err(_) => Err(Failure::timeout("connect")),
    }
}

/// A TCP socket for `target`, bound to source address `ip` with the port left to
/// connect(), so many connections from one IP do not exhaust the ephemeral ports
/// that bind() alone would reserve. Shared by the async and the blocking clients.
pub(crate) fn socket_from(target: SocketAddr, ip: IpAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option value points to a live c_int of the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    Ok(socket)
}

/// Non-blocking connect from a chosen source address.
async fn connect_from(target: SocketAddr, ip: IpAddr) -> io::Result<TcpStream> {
    let socket = socket_from(target, ip)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    // SAFETY: the fd stays open for the borrow: `stream` owns it and outlives it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    if let Some(e) = SockRef::from(&fd).take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// Binds `n` listeners to `addr` with `SO_REUSEPORT`, so that the kernel spreads
/// connections over the workers. The first one resolves port 0; the others bind the
/// same port. `SO_REUSEPORT` also lets another process join the port: `serve` is a
/// test upstream, not a guarded service.
pub fn listeners(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, LoadError> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n {
        let l = listener(bound).map_err(|source| LoadError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        if out.is_empty() {
            bound = l.local_addr().map_err(|source| LoadError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        }
        out.push(l);
    }
    Ok(out)
}

fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
