//! The agent protocol: versioned, length-prefixed binary frames.
//!
//! The codec does no I/O: [`decode`] looks at a byte slice and either returns a frame and
//! how many bytes it used, asks for more (`Ok(None)`), or fails with a [`WireError`];
//! [`encode`] appends one frame to a `BytesMut`. Every length is bounded before anything
//! is allocated, so a hostile peer can make us reject a frame but never make us buffer
//! more than [`MAX_FRAME_LEN`].
//!
//! Layout of a frame: `len: u32 BE` (of what follows), `kind: u8`, then the body whose
//! fields are fixed-width big-endian integers and `u16`-length-prefixed UTF-8 strings.
//! The protocol version is checked once, in [`Frame::Hello`] / [`Frame::ChannelHello`].

pub mod channel_proof;
pub mod chunk;
mod codec;
mod frame;
#[cfg(test)]
mod tests;

pub use codec::{char_prefix, decode, encode, WireError, CHANNEL_HELLO_FRAME_LEN, MAX_FRAME_LEN};
pub use frame::{
    ErrorCode, Frame, Labels, StreamCode, StreamStart, UpstreamProtocol, DATA_CHANNEL_MAGIC,
    MAX_POLICY_LEN, PEER_STREAM_MAGIC, PROTOCOL_VERSION,
};
