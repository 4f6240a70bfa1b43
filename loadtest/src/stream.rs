//! Connections as a pair of halves, [`Reader`] and [`Writer`], over plain TCP or TLS,
//! with monoio's owned buffers: every call takes a `Vec<u8>` and a range and hands the
//! buffer back. Halves can be driven by two tasks at once (`throughput --direction
//! both`); under TLS they share the rustls state through an `Rc<RefCell<_>>` that is
//! never borrowed across an `await`.
//!
//! None of these futures is cancel-safe: dropping one mid-way (a timeout) may lose
//! bytes, so callers drop the whole connection after a timeout.
use std::{
    cell::RefCell,
    io::{self, Read, Write},
    ops::Range,
    rc::Rc,
    sync::Arc,
};

use monoio::{
    buf::{IoBuf, IoBufMut, SliceMut},
    io::{
        AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
    },
    net::TcpStream,
};

use crate::options::TlsClientOptions;

/// Ciphertext read from the socket at once under TLS.
const TLS_READ_BUF: usize = 64 * 1024;

type Shared = Rc<RefCell<rustls::Connection>>;

/// A connection split into halves.
pub struct Stream {
    /// Receiving half.
    pub reader: Reader,
    /// Sending half.
    pub writer: Writer,
}

/// Receiving half of a [`Stream`].
pub enum Reader {
    /// Plain TCP.
    Plain(OwnedReadHalf<TcpStream>),
    /// TLS.
    Tls(TlsReader),
}

/// Sending half of a [`Stream`].
pub enum Writer {
    /// Plain TCP.
    Plain(OwnedWriteHalf<TcpStream>),
    /// TLS.
    Tls(TlsWriter),
}

/// TLS receiving half: ciphertext buffered from the socket, fed to rustls on demand.
pub struct TlsReader {
    conn: Shared,
    io: OwnedReadHalf<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

/// TLS sending half.
pub struct TlsWriter {
    conn: Shared,
    io: OwnedWriteHalf<TcpStream>,
    out: Vec<u8>,
}

fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Stream {
    /// A plain TCP stream.
    #[must_use]
    pub fn plain(tcp: TcpStream) -> Self {
        let (r, w) = tcp.into_split();
        Self {
            reader: Reader::Plain(r),
            writer: Writer::Plain(w),
        }
    }

    /// Runs a TLS client handshake over `tcp`.
    pub async fn tls_client(tcp: TcpStream, opts: &TlsClientOptions) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(opts.config.clone(), opts.server_name.clone())
            .map_err(tls_io)?;
        handshake(tcp, conn.into()).await
    }

    /// Runs a TLS server handshake over `tcp`.
    pub async fn tls_server(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(tls_io)?;
        handshake(tcp, conn.into()).await
    }
}

async fn handshake(mut tcp: TcpStream, mut conn: rustls::Connection) -> io::Result<Stream> {
    let mut inbuf = vec![0u8; TLS_READ_BUF];
    let mut out = Vec::with_capacity(4096);
    let (mut start, mut end) = (0, 0);
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            let (res, b) = tcp.write_all(out).await;
            out = b;
            res?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if start < end {
            start += conn.read_tls(&mut &inbuf[start..end])?;
            conn.process_new_packets().map_err(tls_io)?;
            continue;
        }
        let (res, b) = tcp.read(inbuf.slice_mut(..)).await;
        inbuf = b.into_inner();
        let n = res?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed during the TLS handshake",
            ));
        }
        (start, end) = (0, n);
    }
    let (rd, wr) = tcp.into_split();
    let conn = Rc::new(RefCell::new(conn));
    Ok(Stream {
        reader: Reader::Tls(TlsReader {
            conn: conn.clone(),
            io: rd,
            buf: inbuf,
            start,
            end,
            eof: false,
        }),
        writer: Writer::Tls(TlsWriter { conn, io: wr, out }),
    })
}

fn full(buf: Vec<u8>, range: Range<usize>) -> SliceMut<Vec<u8>> {
    buf.slice_mut(range)
}

impl Reader {
    /// Reads some bytes into `buf[range]`; `Ok(0)` is an orderly end of stream.
    pub async fn read(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Reader::Plain(r) => {
                let (res, slice) = r.read(full(buf, range)).await;
                (res, slice.into_inner())
            }
            Reader::Tls(t) => t.read(buf, range).await,
        }
    }
}

impl TlsReader {
    async fn read(
        &mut self,
        mut buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<usize>, Vec<u8>) {
        loop {
            {
                let mut c = self.conn.borrow_mut();
                match c.reader().read(&mut buf[range.clone()]) {
                    Ok(n) => return (Ok(n), buf),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return (Err(e), buf),
                }
                if self.eof {
                    return (Ok(0), buf);
                }
                if self.start < self.end {
                    match c.read_tls(&mut &self.buf[self.start..self.end]) {
                        Ok(n) => self.start += n,
                        Err(e) => return (Err(e), buf),
                    }
                    if let Err(e) = c.process_new_packets() {
                        return (Err(tls_io(e)), buf);
                    }
                    continue;
                }
            }
            let (res, b) = self
                .io
                .read(std::mem::take(&mut self.buf).slice_mut(..))
                .await;
            self.buf = b.into_inner();
            match res {
                Ok(0) => {
                    self.eof = true;
                    // Tell rustls: its reader then reports a missing close_notify.
                    let mut c = self.conn.borrow_mut();
                    if let Err(e) = c.read_tls(&mut &[][..]) {
                        return (Err(e), buf);
                    }
                    if let Err(e) = c.process_new_packets() {
                        return (Err(tls_io(e)), buf);
                    }
                }
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) => return (Err(e), buf),
            }
        }
    }
}

impl Writer {
    /// Writes all of `buf[range]`.
    pub async fn write_all(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Writer::Plain(w) => {
                let (res, slice) = w.write_all(buf.slice(range)).await;
                (res.map(|_| ()), slice.into_inner())
            }
            Writer::Tls(t) => t.write_all(buf, range).await,
        }
    }

    /// Ends the sending direction (TLS: `close_notify` first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Writer::Plain(w) => w.shutdown().await,
            Writer::Tls(t) => {
                t.conn.borrow_mut().send_close_notify();
                t.flush().await?;
                t.io.shutdown().await
            }
        }
    }
}

impl TlsWriter {
    async fn write_all(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>) {
        let mut off = range.start;
        while off < range.end {
            let n = match self.conn.borrow_mut().writer().write(&buf[off..range.end]) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            off += n;
            match self.flush().await {
                Ok(0) if n == 0 => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "TLS writer accepts no data");
                    return (Err(e), buf);
                }
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends every pending TLS record; returns how many bytes went out.
    async fn flush(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        loop {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            {
                let mut c = self.conn.borrow_mut();
                while c.wants_write() {
                    c.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                self.out = out;
                return Ok(sent);
            }
            sent += out.len();
            let (res, b) = self.io.write_all(out).await;
            self.out = b;
            res?;
        }
    }
}
