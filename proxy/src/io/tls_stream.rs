//! A rustls connection over a monoio stream (a `TcpStream` by default, or any other
//! splittable byte stream such as one stream inside a chunk-framed data channel), with
//! large ciphertext buffers.
//!
//! monoio-rustls moves ciphertext 16 KiB per I/O operation, so a 64 KiB chunk costs
//! four or more sequential io_uring round trips each way; this stream reads up to
//! [`MAX_READ`] per operation and writes every pending record in one. Read and write
//! halves may run concurrently (it is `Split`): the read path only reads the socket and
//! the write path only writes it, and neither holds a borrow of the rustls state across
//! an await. Handshake messages rustls wants to send while reading (TLS 1.3 key
//! updates) go out with the next write.
//!
//! Ciphertext already read by someone else (the ClientHello the SNI router peeked) is
//! fed in first with [`TlsStream::with_early`].
//!
//! An idle stream holds no large buffer: reads are paced as `readiness` describes (once
//! a large read has drained the socket, the next frees the ciphertext buffer and waits
//! for readiness first), rustls is let shrink its own buffer then, and a write keeps its
//! ciphertext buffer only when it is small.

use std::{
    io::{self, BufRead, Write},
    ops::{Deref, DerefMut},
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
};

use super::{
    buffer_pool,
    readiness::{NextRead, Readiness, SMALL_READ},
};
use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split},
    net::TcpStream,
    BufResult,
};
use rustls::{
    pki_types::ServerName, ClientConfig, ClientConnection, ConnectionCommon, ServerConfig,
    ServerConnection, SideData,
};

/// Most ciphertext read from the socket in one operation.
pub const MAX_READ: usize = 256 * 1024;
/// Plaintext rustls may buffer in each direction.
const RUSTLS_BUFFER_LIMIT: usize = 512 * 1024;
/// Largest ciphertext write buffer kept between writes (one full record and change);
/// larger ones are freed after their write.
const KEPT_WRITE: usize = 18 * 1024;

/// How the next socket read is made ([`NextRead`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SocketState {
    /// A small buffer lent to the ring: small messages are flowing.
    Small,
    /// `read_size` bytes of what has already arrived; when nothing has, the buffer is
    /// let go until the socket is readable, so a stream that idles after a burst holds
    /// none.
    Large,
    /// A readiness wait ended: read what arrived at once.
    Woken,
}

/// A TLS stream; `C` is `ServerConnection` or `ClientConnection`, `IO` the transport.
pub struct TlsStream<C, IO = TcpStream> {
    io: IO,
    conn: C,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Size of the next socket read: doubles while reads fill it, up to [`MAX_READ`].
    read_size: usize,
    socket: SocketState,
    wbuf: Vec<u8>,
}

// SAFETY: reads use only `io`'s read side, `rbuf` and synchronous rustls calls; writes
// use only `io`'s write side, `wbuf` and synchronous rustls calls. No borrow of `conn`
// lives across an await, so interleaving a read and a write (on one thread) is sound
// in the same way monoio's own TcpStream halves are (given `IO` is `Split` itself).
unsafe impl<C, IO: Split> Split for TlsStream<C, IO> {}

impl<C, IO: AsRawFd> AsRawFd for TlsStream<C, IO> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// Accepts a TLS connection (server side), handshake included.
pub async fn accept<IO: AsyncReadRent + AsyncWriteRent + Readiness>(
    io: IO,
    config: Arc<ServerConfig>,
) -> io::Result<TlsStream<ServerConnection, IO>> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = TlsStream::from_parts(io, conn);
    tls.handshake().await?;
    Ok(tls)
}

/// Opens a TLS connection (client side), handshake included.
pub async fn connect<IO: AsyncReadRent + AsyncWriteRent + Readiness>(
    io: IO,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<TlsStream<ClientConnection, IO>> {
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut tls = TlsStream::from_parts(io, conn);
    tls.handshake().await?;
    Ok(tls)
}

impl<C, IO, SD> TlsStream<C, IO>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Wraps an established (or fresh) rustls connection and its socket.
    pub fn from_parts(io: IO, mut conn: C) -> Self {
        conn.set_buffer_limit(Some(RUSTLS_BUFFER_LIMIT));
        Self {
            io,
            conn,
            rbuf: Vec::new(),
            rpos: 0,
            read_size: SMALL_READ,
            socket: SocketState::Small,
            wbuf: Vec::new(),
        }
    }

    /// Takes the stream apart, for parking it on another thread. `None` when
    /// ciphertext is still buffered here (it would be lost).
    pub fn into_parts(self) -> Option<(IO, C)> {
        (self.rpos >= self.rbuf.len()).then_some((self.io, self.conn))
    }

    /// Ciphertext that was read from the transport before this stream existed (a
    /// peeked ClientHello); rustls consumes it before reading the transport.
    pub fn with_early(mut self, early: Vec<u8>) -> Self {
        self.rbuf = early;
        self.rpos = 0;
        self
    }

    /// The rustls connection (peer certificates, negotiated parameters).
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The transport underneath.
    pub fn io_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<C, IO, SD> TlsStream<C, IO>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    /// Runs the handshake to completion. A peer that fails it (a bad or missing
    /// certificate) is sent the alert rustls prepared, then the error is returned.
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
            } else {
                match self.fill().await {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = self.flush_tls().await;
                        return Err(e);
                    }
                }
            }
        }
        self.flush_tls().await
    }

    /// Writes every pending TLS record in one operation.
    async fn flush_tls(&mut self) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        if !out.is_empty() {
            let (res, back) = self.io.write_all(out).await;
            out = back;
            res?;
        }
        if out.capacity() <= KEPT_WRITE {
            self.wbuf = out;
        }
        Ok(())
    }

    /// Feeds buffered ciphertext to rustls, reading more from the socket when none is
    /// buffered. Returns the ciphertext bytes consumed (0 at the socket's EOF).
    async fn fill(&mut self) -> io::Result<usize> {
        while self.rpos >= self.rbuf.len() {
            let mut buf = self.take_read_buffer();
            let res = match self.socket {
                SocketState::Small => {
                    let (res, back) = self.io.read(buf).await;
                    buf = back;
                    res
                }
                SocketState::Large | SocketState::Woken => match self.io.read_arrived(&mut buf) {
                    Some(res) => res,
                    None if self.socket == SocketState::Woken => {
                        // Woken early: an ordinary read.
                        let (res, back) = self.io.read(buf).await;
                        buf = back;
                        res
                    }
                    None => {
                        buffer_pool::give_back(buf);
                        self.release_read_buffers();
                        self.io.wait_readable().await?;
                        self.socket = SocketState::Woken;
                        continue;
                    }
                },
            };
            if self.socket_read(res, buf)? == 0 {
                return Ok(0);
            }
        }
        self.feed()
    }

    /// The ciphertext buffer, emptied and sized for the next socket read.
    fn take_read_buffer(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.rbuf);
        if buf.capacity() != self.read_size {
            // Another size (back to small reads, or on to large ones): the one held goes
            // back to the worker's spares.
            buffer_pool::give_back(buf);
            buf = buffer_pool::take(self.read_size);
        }
        buf.clear();
        buf
    }

    /// Takes in a socket read into `buf` (from [`Self::take_read_buffer`]): keeps the
    /// bytes for rustls, notes whether the socket drained, grows the next read when this
    /// one filled its buffer, and tells rustls at EOF that the transport ended (so it can
    /// tell a clean close_notify from a truncation). Returns the bytes read.
    fn socket_read(&mut self, res: io::Result<usize>, buf: Vec<u8>) -> io::Result<usize> {
        let asked = buf.capacity();
        self.rbuf = buf;
        self.rpos = 0;
        let n = res?;
        self.socket = match NextRead::after(n, asked) {
            NextRead::Large => {
                if n == asked {
                    self.read_size = (asked * 2).min(MAX_READ);
                }
                SocketState::Large
            }
            NextRead::Small => {
                self.read_size = SMALL_READ;
                SocketState::Small
            }
        };
        if n == 0 {
            self.conn.read_tls(&mut io::empty())?;
        }
        Ok(n)
    }

    /// Feeds buffered ciphertext to rustls and decrypts it: the bytes consumed (at
    /// least 1, so a caller can tell it from EOF).
    fn feed(&mut self) -> io::Result<usize> {
        let mut pending = &self.rbuf[self.rpos..];
        let n = self.conn.read_tls(&mut pending)?;
        self.rpos += n;
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n.max(1))
    }

    /// Frees the ciphertext buffer (all of it consumed) and lets rustls shrink its record
    /// buffer, before a wait for readiness: rustls keeps up to a record and a read (about
    /// 20 KiB) until its next read, and a read that finds nothing resizes it to 4 KiB
    /// when no partial record is in it, changing nothing else.
    fn release_read_buffers(&mut self) {
        struct NothingYet;
        impl io::Read for NothingYet {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        if self.rpos >= self.rbuf.len() {
            buffer_pool::give_back(std::mem::take(&mut self.rbuf));
            self.rpos = 0;
            let _ = self.conn.read_tls(&mut NothingYet);
        }
    }

    /// Moves the plaintext rustls has decrypted into `buf`'s spare capacity, record by
    /// record, as much as fits: `Ok(Some(n))` with `n` bytes moved (0 at a clean
    /// close_notify, or for a buffer with no room), `Ok(None)` when none is decrypted yet.
    /// Copied straight into the (possibly uninitialised) capacity, so nothing is zeroed
    /// first.
    fn take_plain<T: IoBufMut>(&mut self, buf: &mut T) -> io::Result<Option<usize>> {
        let room = buf.bytes_total();
        let mut moved = 0;
        let mut reader = self.conn.reader();
        while moved < room {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(_) if moved > 0 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(room - moved);
            // SAFETY: `write_ptr()..+bytes_total()` is the buffer's own allocation, owned
            // by it for this call; `moved + n <= room` keeps the copy inside it, and rustls's
            // plaintext is a separate allocation.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr().add(moved), n) };
            reader.consume(n);
            moved += n;
        }
        Ok(Some(moved))
    }

    /// Waits for plaintext and moves it into `buf` ([`Self::take_plain`]); 0 at the end.
    async fn read_plain<T: IoBufMut>(&mut self, buf: &mut T) -> io::Result<usize> {
        loop {
            if let Some(n) = self.take_plain(buf)? {
                return Ok(n);
            }
            if self.fill().await? == 0 {
                return self.plain_at_eof(buf);
            }
        }
    }

    /// The last plaintext after the socket's EOF. Without close_notify rustls calls the
    /// EOF a truncation; many servers close that way, and sluice forwards byte streams
    /// whose protocols delimit their own messages (data channels frame theirs), so it
    /// reads as EOF and is passed on as FIN, as plain TCP would be.
    fn plain_at_eof<T: IoBufMut>(&mut self, buf: &mut T) -> io::Result<usize> {
        match self.take_plain(buf) {
            Ok(n) => Ok(n.unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// [`Readiness::read_arrived`]: plaintext already decrypted, or decrypted from what
    /// the socket already holds, without waiting. `Ok(None)` when a whole record has not
    /// arrived yet.
    fn plain_arrived<T: IoBufMut>(&mut self, buf: &mut T) -> io::Result<Option<usize>> {
        loop {
            if let Some(n) = self.take_plain(buf)? {
                return Ok(Some(n));
            }
            if self.rpos >= self.rbuf.len() {
                let mut rbuf = self.take_read_buffer();
                let Some(res) = self.io.read_arrived(&mut rbuf) else {
                    // Nothing more yet: hold no buffer, nor lend one to the next read.
                    buffer_pool::give_back(rbuf);
                    self.socket = SocketState::Large;
                    return Ok(None);
                };
                if self.socket_read(res, rbuf)? == 0 {
                    return self.plain_at_eof(buf).map(Some);
                }
            }
            self.feed()?;
        }
    }
}

impl<C, IO, SD> AsyncReadRent for TlsStream<C, IO>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let res = self.read_plain(&mut buf).await;
        if let Ok(n) = res {
            // SAFETY: `take_plain` initialised the first `n` bytes.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer borrows the first iovec, which outlives this call.
        let res = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = res {
            // SAFETY: `n` bytes of the first iovec were initialised above.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl<C, IO, SD> Readiness for TlsStream<C, IO>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn wait_readable(&mut self) -> io::Result<()> {
        let decrypted = !matches!(
            self.conn.reader().fill_buf(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        if decrypted || self.rpos < self.rbuf.len() {
            return Ok(());
        }
        self.release_read_buffers();
        self.io.wait_readable().await?;
        self.socket = SocketState::Woken;
        Ok(())
    }

    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<io::Result<usize>> {
        let res = self.plain_arrived(buf).transpose()?;
        if let Ok(n) = res {
            // SAFETY: `take_plain` initialised the first `n` bytes.
            unsafe { buf.set_init(n) };
        }
        Some(res)
    }
}

impl<C, IO, SD> AsyncWriteRent for TlsStream<C, IO>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the buffer's initialised bytes, owned by `buf` for this call.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        if self.conn.wants_write() {
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
        }
        let res = match self.conn.writer().write(data) {
            Ok(n) => self.flush_tls().await.map(|()| n),
            Err(e) => Err(e),
        };
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer borrows the first iovec, which outlives this call.
        let res = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::{
        io::readiness::watched::{assert_never_idle, pattern, Watched},
        runtime::{block_on, Driver},
    };

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
        let none = Path::new("-");
        let server = crate::tls::server_config(vec![cert.clone()], key, none, none).unwrap();
        let client = crate::tls::client_config(Some(vec![cert])).unwrap();
        (server, client)
    }

    /// What a client reading with `read_size` buffers got from a server that wrote
    /// `sent` in `writes` records and then closed (`close_notify` or a bare FIN).
    fn received(sent: Vec<u8>, writes: usize, read_size: usize, close_notify: bool) -> Vec<u8> {
        block_on(Driver::Legacy, || async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (server_config, client_config) = configs();
            let server = monoio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = accept(tcp, server_config).await.unwrap();
                for part in sent.chunks(sent.len().div_ceil(writes)) {
                    let (res, _) = tls.write_all(part.to_vec()).await;
                    res.unwrap();
                }
                if close_notify {
                    tls.shutdown().await.unwrap();
                } else {
                    tls.io_mut().shutdown().await.unwrap();
                }
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connect(tcp, client_config, name).await.unwrap();
            let mut got = Vec::new();
            loop {
                let (res, buf) = tls.read(Vec::with_capacity(read_size)).await;
                let n = res.unwrap();
                assert_eq!(buf.len(), n);
                assert!(n <= read_size);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            server.await;
            got
        })
        .unwrap()
    }

    #[test]
    fn small_reads_take_records_apart_and_large_reads_gather_them_in_order() {
        let sent = pattern(100_000);
        for read_size in [1, 7, 1000, 16 * 1024, 200_000] {
            for writes in [1, 9] {
                let got = received(sent.clone(), writes, read_size, true);
                assert!(
                    got == sent,
                    "read size {read_size}, {writes} writes: {} bytes of {} came back intact",
                    got.len(),
                    sent.len()
                );
            }
        }
    }

    #[test]
    fn a_fin_without_close_notify_reads_as_the_end_after_every_byte() {
        let sent = pattern(40_000);
        assert!(received(sent.clone(), 3, 4096, false) == sent);
    }

    #[test]
    fn the_stream_lends_no_large_buffer_to_a_socket_with_nothing_to_read() {
        let bursts = [1usize, 100, 70_000, 300_000, 5, 40_000, 200_000, 7];
        let (counts, held) = block_on(Driver::Legacy, || async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (server_config, client_config) = configs();
            // Each burst goes out once the client acknowledged the one before, so the
            // client's stream drains and idles between them.
            let server = monoio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = accept(tcp, server_config).await.unwrap();
                for size in bursts {
                    let (res, _) = tls.write_all(pattern(size)).await;
                    res.unwrap();
                    let (res, _) =
                        monoio::io::AsyncReadRentExt::read_exact(&mut tls, vec![0u8; 1]).await;
                    res.unwrap();
                }
                tls.shutdown().await.unwrap();
            });
            let (watched, counts) = Watched::new(std::net::TcpStream::connect(addr).unwrap());
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connect(watched, client_config, name).await.unwrap();
            let mut held = Vec::new();
            for (i, size) in bursts.into_iter().enumerate() {
                let mut got = 0;
                while got < size {
                    let (res, buf) = tls.read(Vec::with_capacity(64 * 1024)).await;
                    let n = res.unwrap();
                    assert!(n > 0 && buf[..n] == pattern(got + n)[got..]);
                    got += n;
                }
                let (res, _) = tls.write_all(vec![1u8]).await;
                res.unwrap();
                // Half the waits for the next burst happen here, half in the next read.
                if i % 2 == 0 {
                    tls.wait_readable().await.unwrap();
                    held.push(tls.rbuf.capacity());
                }
            }
            let (res, _) = tls.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 0, "close_notify ends the stream");
            server.await;
            (counts, held)
        })
        .unwrap();
        assert_never_idle("client", &counts);
        assert!(
            held.iter().all(|&capacity| capacity == 0),
            "ciphertext buffer held while waiting for readiness: {held:?}"
        );
    }
}
