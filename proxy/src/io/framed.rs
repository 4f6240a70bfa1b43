//! Reading and writing control frames on any monoio stream (TCP or TLS).

use std::io;

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt},
};

use super::readiness::{read_paced, NextRead, Readiness, SMALL_READ};
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
pub struct FrameReader {
    buf: BytesMut,
    /// Bytes of the current chunk not yet handed out by [`Self::next_chunk`].
    chunk_rest: usize,
    /// How [`Self::next_chunk`] makes its next read ([`NextRead`]); with nothing
    /// buffered, a large buffer is let go before a small read.
    next_read: NextRead,
}

/// Room for the first read of a frame into an empty buffer: a stream header, a
/// status or a ping fit, with the first client bytes behind a header when they are few;
/// a larger frame grows the buffer as it arrives. Small, because a data channel waiting
/// for its next stream holds this buffer in its pending read.
const FIRST_READ: usize = 512;

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            chunk_rest: 0,
            next_read: NextRead::Small,
        }
    }
}

impl FrameReader {
    /// A reader with an empty buffer (allocated by the first read).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads until one frame is complete. `Ok(None)` on EOF at a frame boundary.
    /// Not cancel-safe on io_uring: drop it only when the stream is being closed.
    pub async fn next<R: AsyncReadRent>(&mut self, r: &mut R) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(Some(frame));
            }
            let room = self.buf.capacity() - self.buf.len();
            if self.buf.is_empty() && room < FIRST_READ {
                self.buf.reserve(FIRST_READ);
            } else if !self.buf.is_empty() && room < 1024 {
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
    pub async fn next_chunk<R: AsyncReadRent + Readiness>(
        &mut self,
        r: &mut R,
    ) -> Result<Chunk, FrameError> {
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
            // A partial header stays in its buffer, whatever the read finds.
            let next = if self.buf.is_empty() {
                self.next_read
            } else {
                NextRead::Small
            };
            // A small read gets a small buffer; a large one room for the rest of the
            // current chunk (at most a copy chunk).
            let want = match next {
                NextRead::Small => SMALL_READ,
                NextRead::Large => self.chunk_rest.clamp(SMALL_READ, COPY_CHUNK),
            };
            let mut kept = std::mem::take(&mut self.buf);
            let mut asked = 0;
            let (res, back) = read_paced(r, next, || {
                let mut buf = std::mem::take(&mut kept);
                if buf.capacity() - buf.len() < want {
                    buf.reserve(want);
                }
                if next == NextRead::Small && buf.capacity() - buf.len() > SMALL_READ {
                    // Back to small messages: let the large buffer go (keeping what
                    // it holds).
                    let mut small = BytesMut::with_capacity(buf.len() + SMALL_READ);
                    small.extend_from_slice(&buf);
                    buf = small;
                }
                asked = buf.capacity() - buf.len();
                spare(buf)
            })
            .await;
            self.buf = back.into_inner();
            let n = res?;
            if n == 0 {
                return Err(FrameError::TruncatedEof);
            }
            self.next_read = NextRead::after(n, asked);
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::{
        runtime::{block_on, Driver},
        wire::ErrorCode,
    };

    #[test]
    fn small_frames_keep_a_small_buffer_and_large_ones_grow_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader_side, _) = listener.accept().unwrap();
        let large = Frame::Error {
            request_id: 7,
            code: ErrorCode::Internal,
            message: "x".repeat(3 * FIRST_READ),
        };
        let mut out = BytesMut::new();
        for frame in [
            Frame::Ping { nonce: 1 },
            large.clone(),
            Frame::Ping { nonce: 2 },
        ] {
            wire::encode(&frame, &mut out);
        }
        writer.write_all(&out).unwrap();
        drop(writer);

        block_on(Driver::Legacy, || async move {
            let mut stream = monoio::net::TcpStream::from_std(reader_side).unwrap();
            let mut reader = FrameReader::new();
            assert_eq!(
                reader.buf.capacity(),
                0,
                "nothing held before the first read"
            );
            let first = reader.next(&mut stream).await.unwrap();
            assert_eq!(first, Some(Frame::Ping { nonce: 1 }));
            assert!(
                reader.buf.capacity() <= FIRST_READ,
                "{}",
                reader.buf.capacity()
            );
            assert_eq!(reader.next(&mut stream).await.unwrap(), Some(large));
            assert_eq!(
                reader.next(&mut stream).await.unwrap(),
                Some(Frame::Ping { nonce: 2 })
            );
            assert_eq!(reader.next(&mut stream).await.unwrap(), None);
        })
        .unwrap();
    }
}
