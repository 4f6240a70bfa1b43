//! Stream framing inside data channels (`tcp` and `tls`), so a channel can carry one stream after
//! another: each direction is a run of chunks `len: u32 BE` + `len` bytes, ended by a
//! marker — [`EOS_KEEP`] (this direction is done, the channel may be reused) or
//! [`EOS_RETIRE`] (done, and the sender will close the channel afterwards).

use super::codec::WireError;

/// Largest data chunk a receiver accepts. Receivers never buffer a whole chunk: they
/// hand its bytes on as they arrive ([`crate::io::framed::FrameReader::next_chunk`]),
/// or splice them.
pub const MAX_CHUNK: usize = 1 << 20;
/// Largest chunk a sender that copies through user space makes (its read buffer).
pub const COPY_CHUNK: usize = 64 * 1024;
/// End of this direction's stream; the channel stays usable.
pub const EOS_KEEP: u32 = 0;
/// End of this direction's stream; the channel will be closed.
pub const EOS_RETIRE: u32 = u32::MAX;

/// What a chunk header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkHeader {
    /// This many data bytes follow.
    Data(usize),
    /// The direction ended; `keep` says whether the channel may be reused.
    End {
        /// Whether the sender keeps the channel for another stream.
        keep: bool,
    },
}

/// Decodes a chunk header from the front of `buf` (`Ok(None)`: fewer than 4 bytes).
pub fn decode_chunk_header(buf: &[u8]) -> Result<Option<ChunkHeader>, WireError> {
    let Some(bytes) = buf.get(..4) else {
        return Ok(None);
    };
    match u32::from_be_bytes(bytes.try_into().expect("4 bytes")) {
        EOS_KEEP => Ok(Some(ChunkHeader::End { keep: true })),
        EOS_RETIRE => Ok(Some(ChunkHeader::End { keep: false })),
        n if n as usize <= MAX_CHUNK => Ok(Some(ChunkHeader::Data(n as usize))),
        n => Err(WireError::BadLength(n as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_decode_and_lengths_are_bounded() {
        assert_eq!(decode_chunk_header(&[0, 0, 1]), Ok(None));
        assert_eq!(
            decode_chunk_header(&0u32.to_be_bytes()),
            Ok(Some(ChunkHeader::End { keep: true }))
        );
        assert_eq!(
            decode_chunk_header(&u32::MAX.to_be_bytes()),
            Ok(Some(ChunkHeader::End { keep: false }))
        );
        assert_eq!(
            decode_chunk_header(&5u32.to_be_bytes()),
            Ok(Some(ChunkHeader::Data(5)))
        );
        let too_big = (MAX_CHUNK as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_chunk_header(&too_big),
            Err(WireError::BadLength(MAX_CHUNK + 1))
        );
    }
}
