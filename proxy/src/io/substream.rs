//! One stream of a chunk-framed data channel seen as a plain byte stream, so the agent
//! can run TLS (its `agent_tls_termination`) over the client's bytes while they are
//! still inside a reusable `tls` data channel. Reads return chunk payloads and 0 at the
//! peer's end marker; writes become chunks; `shutdown` sends our end marker. When both
//! markers said "keep" the channel (and the reader, which may hold the next header)
//! comes back for the next stream.

use std::os::fd::{AsRawFd, RawFd};

use bytes::{Buf, BytesMut};
use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split},
    BufResult,
};

use super::{
    framed::{Chunk, FrameError, FrameReader},
    readiness::Readiness,
};
use crate::wire::chunk::{COPY_CHUNK, EOS_KEEP, EOS_RETIRE};

/// Largest write buffer kept between writes; a larger one (a bulk write's chunk) is
/// freed after its write, so an idle stream does not keep it.
const KEPT_WRITE: usize = 4 * 1024;

/// One stream on a chunk-framed channel `T`.
pub struct ChunkedSub<T> {
    channel: T,
    reader: FrameReader,
    /// Payload of the current chunk not yet handed out.
    pending: BytesMut,
    /// The peer's end marker, once read: whether it keeps the channel.
    peer_end: Option<bool>,
    /// Our end marker, once written: whether we keep the channel.
    our_end: Option<bool>,
    keep: Box<dyn Fn() -> bool>,
    /// Set when the stream failed: our end marker retires the channel.
    retire: bool,
    wbuf: Vec<u8>,
}

// SAFETY: reads touch only `reader`, `pending`, `peer_end` and the channel's read side;
// writes only `wbuf`, `our_end` and its write side. `T` being `Split` makes interleaving
// its reads and writes sound.
unsafe impl<T: Split> Split for ChunkedSub<T> {}

impl<T: AsRawFd> AsRawFd for ChunkedSub<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }
}

impl<T: AsyncReadRent + AsyncWriteRent + Readiness> ChunkedSub<T> {
    /// The stream that starts on `channel`; `reader` holds bytes already read from it.
    /// `keep` is asked when our direction ends: its answer goes into our end marker.
    pub fn new(channel: T, reader: FrameReader, keep: impl Fn() -> bool + 'static) -> Self {
        Self {
            channel,
            reader,
            pending: BytesMut::new(),
            peer_end: None,
            our_end: None,
            keep: Box::new(keep),
            retire: false,
            wbuf: Vec::new(),
        }
    }

    /// Makes our end marker say the channel will be closed (the stream failed).
    pub fn retire(&mut self) {
        self.retire = true;
    }

    /// The channel and its reader, when both directions ended and both sides keep it.
    /// A TLS session over this stream ends at close_notify, usually before the peer's
    /// end marker arrives: that is waited for, up to `limit`.
    pub async fn finish(mut self, limit: std::time::Duration) -> Option<(T, FrameReader)> {
        if self.peer_end.is_none() && self.pending.is_empty() && self.our_end == Some(true) {
            // Anything but the end marker (stream bytes after close_notify, an error,
            // the deadline) retires the channel; a timed-out read is dropped with it.
            match monoio::time::timeout(limit, self.next_payload()).await {
                Ok(Ok(())) if self.pending.is_empty() => {}
                _ => return None,
            }
        }
        let reusable =
            self.peer_end == Some(true) && self.our_end == Some(true) && self.pending.is_empty();
        reusable.then_some((self.channel, self.reader))
    }

    /// Moves as much of the current chunk's payload as fits into `buf` (0 when none is
    /// left, which after the peer's end marker means the end).
    fn take_pending<B: IoBufMut>(&mut self, buf: &mut B) -> usize {
        let n = self.pending.len().min(buf.bytes_total());
        // SAFETY: `n` fits the buffer's writable capacity, which it owns for this call.
        unsafe {
            std::ptr::copy_nonoverlapping(self.pending.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        self.pending.advance(n);
        if self.pending.is_empty() {
            // An empty slice still holds the chunk's whole allocation.
            self.pending = BytesMut::new();
        }
        n
    }

    async fn next_payload(&mut self) -> std::io::Result<()> {
        match self.reader.next_chunk(&mut self.channel).await {
            Ok(Chunk::Data(bytes)) => self.pending = bytes,
            Ok(Chunk::End { keep }) => self.peer_end = Some(keep),
            Err(FrameError::Io(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        Ok(())
    }
}

impl<T: AsyncReadRent + AsyncWriteRent + Readiness> AsyncReadRent for ChunkedSub<T> {
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        if self.pending.is_empty() && self.peer_end.is_none() {
            if let Err(e) = self.next_payload().await {
                return (Err(e), buf);
            }
        }
        let n = self.take_pending(&mut buf);
        (Ok(n), buf)
    }

    async fn readv<B: IoVecBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
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

impl<T: AsyncReadRent + AsyncWriteRent + Readiness> Readiness for ChunkedSub<T> {
    async fn wait_readable(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() || self.peer_end.is_some() || self.reader.has_leftover() {
            return Ok(());
        }
        self.channel.wait_readable().await
    }

    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<std::io::Result<usize>> {
        // Payload already taken out of a chunk; a new chunk is read the ordinary way.
        (!self.pending.is_empty() || self.peer_end.is_some()).then(|| Ok(self.take_pending(buf)))
    }
}

impl<T: AsyncReadRent + AsyncWriteRent + Readiness> AsyncWriteRent for ChunkedSub<T> {
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: the buffer's initialised bytes, owned by `buf` for this call.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = data.len().min(COPY_CHUNK);
        if n == 0 {
            return (Ok(0), buf);
        }
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend_from_slice(&data[..n]);
        let (res, back) = self.channel.write_all(out).await;
        if back.capacity() <= KEPT_WRITE {
            self.wbuf = back;
        }
        (res.map(|_| n), buf)
    }

    async fn writev<B: IoVecBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: the raw buffer borrows the first iovec, which outlives this call.
        let res = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (res, buf)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.channel.flush().await
    }

    /// Ends our direction with an end marker (the channel itself stays open).
    async fn shutdown(&mut self) -> std::io::Result<()> {
        if self.our_end.is_some() {
            return Ok(());
        }
        let keep = !self.retire && (self.keep)();
        let marker = if keep { EOS_KEEP } else { EOS_RETIRE };
        let (res, _) = self.channel.write_all(marker.to_be_bytes().to_vec()).await;
        res?;
        self.our_end = Some(keep);
        Ok(())
    }
}
