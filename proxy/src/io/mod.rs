//! Byte movement and socket plumbing shared by the edge and the agent: framed reads and
//! writes of control frames, the splice and copy pumps that move stream bytes, and
//! socket construction (SO_REUSEPORT listeners, non-blocking, reset on close).

pub mod chunked;
pub mod copy;
pub mod framed;
pub mod sockets;
pub mod splice;

/// Which side of a forwarded stream an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The public client (edge) or the data channel (agent).
    Inbound,
    /// The data channel (edge) or the upstream (agent).
    Outbound,
}

/// Bytes moved by a pump, per direction, and how it ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct PumpStats {
    /// Bytes from the inbound side to the outbound side.
    pub inbound_to_outbound: u64,
    /// Bytes from the outbound side to the inbound side.
    pub outbound_to_inbound: u64,
}
