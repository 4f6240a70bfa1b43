//! Reading and writing control frames on any monoio stream (TCP or TLS).

use std::io;

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt},
};

use crate::wire::{self, chunk::COPY_CHUNK, Frame, WireError, MAX_FRAME_LEN};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer closed in the middle of a frame.
    #[error("connection closed mid-frame")]
    TruncatedEof,
}

/// Buffers bytes from a stream and yields whole frames. Bytes read past the last frame
/// stay available through [`FrameReader::into_leftover`].
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
    /// Bytes of the current chunk not yet handed out by [`Self::next_chunk`].
    chunk_rest: usize,
}

impl FrameReader {
    /// A reader with an empty buffer.
    pub fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            chunk_rest: 0,
        }
    }

    /// Reads until one frame is complete. `Ok(None)` on EOF at a frame boundary.
    /// Not cancel-safe on io_uring: drop it only when the stream is being closed.
    pub async fn next<R: AsyncReadRent>(&mut self, r: &mut R) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf
                    .reserve((MAX_FRAME_LEN + 4).min(self.buf.len() + 4096));
            }
            let (res, buf) = r.read(spare(std::mem::take(&mut self.buf))).await;
            self.buf = buf.into_inner();
            if res? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::TruncatedEof)
                };
            }
        }
    }

    /// Bytes received after the last returned frame.
    pub fn into_leftover(self) -> BytesMut {
        self.buf
    }
}

/// The unfilled tail of `buf` as a read target: monoio writes from the start of a
/// plain buffer, so reading into one that holds bytes would overwrite them.
fn spare(buf: BytesMut) -> monoio::buf::SliceMut<BytesMut> {
    let (len, cap) = (buf.len(), buf.capacity());
    buf.slice_mut(len..cap)
}

/// Reads exactly one frame without reading a byte past it: used on data channels,
/// where the bytes that follow belong to the tunneled stream.
pub async fn read_exact_frame<R: AsyncReadRent>(r: &mut R) -> Result<Frame, FrameError> {
    let (res, len_buf) = r.read_exact(vec![0u8; 4]).await;
    res.map_err(eof_as_truncated)?;
    let len = u32::from_be_bytes(len_buf[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(WireError::BadLength(len).into());
    }
    let mut whole = Vec::with_capacity(4 + len);
    whole.extend_from_slice(&len_buf);
    let (res, body) = r.read_exact(vec![0u8; len]).await;
    res.map_err(eof_as_truncated)?;
    whole.extend_from_slice(&body);
    match wire::decode(&whole)? {
        Some((frame, _)) => Ok(frame),
        None => Err(FrameError::TruncatedEof),
    }
}

fn eof_as_truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::TruncatedEof
    } else {
        FrameError::Io(e)
    }
}

/// Encodes and writes one frame.
pub async fn write_frame<W: AsyncWriteRent>(w: &mut W, frame: &Frame) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(64);
    wire::encode(frame, &mut out);
    let (res, _) = w.write_all(out).await;
    res?;
    w.flush().await
}

/// One piece of a chunked stream (see [`crate::wire::chunk`]).
#[derive(Debug)]
pub enum Chunk {
    /// Stream bytes.
    Data(BytesMut),
    /// The direction ended; whether the sender keeps the channel.
    End {
        /// Reusable afterwards.
        keep: bool,
    },
}

impl FrameReader {
    /// Reads the next piece of a chunked stream: stream bytes as they arrive (part of a
    /// chunk, never more than [`COPY_CHUNK`] buffered at once, whatever the chunk's
    /// length), or the end marker. Bytes after it stay buffered (they may be the next
    /// stream's header). Not cancel-safe.
    pub async fn next_chunk<R: AsyncReadRent>(&mut self, r: &mut R) -> Result<Chunk, FrameError> {
        use crate::wire::chunk::{decode_chunk_header, ChunkHeader};
        loop {
            if self.chunk_rest > 0 && !self.buf.is_empty() {
                let k = self.chunk_rest.min(self.buf.len());
                self.chunk_rest -= k;
                return Ok(Chunk::Data(self.buf.split_to(k)));
            }
            if self.chunk_rest == 0 {
                match decode_chunk_header(&self.buf)? {
                    Some(ChunkHeader::End { keep }) => {
                        let _ = self.buf.split_to(4);
                        return Ok(Chunk::End { keep });
                    }
                    Some(ChunkHeader::Data(n)) => {
                        let _ = self.buf.split_to(4);
                        self.chunk_rest = n;
                        continue;
                    }
                    None => {}
                }
            }
            // Room for the rest of the current chunk (at least a page, at most a copy
            // chunk): small messages keep small buffers, bulk arrives in large reads.
            let want = self.chunk_rest.clamp(4096, COPY_CHUNK);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            let (res, buf) = r.read(spare(std::mem::take(&mut self.buf))).await;
            self.buf = buf.into_inner();
            if res? == 0 {
                return Err(FrameError::TruncatedEof);
            }
        }
    }

    /// The buffer behind the reader: bytes received and not yet consumed, for a pump
    /// that parses chunks itself ([`super::chunked_splice`]).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether bytes are buffered past the last frame or chunk.
    pub fn has_leftover(&self) -> bool {
        !self.buf.is_empty()
    }
}
