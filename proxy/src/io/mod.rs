//! Byte movement and socket plumbing shared by the edge and the agent: framed reads and
//! writes of control frames, the splice and copy pumps that move stream bytes, and
//! socket construction (SO_REUSEPORT listeners, non-blocking, reset on close).

pub mod chunked;
pub mod chunked_splice;
pub mod copy;
pub mod framed;
pub mod idle;
pub mod maybe_tls;
pub mod sockets;
pub mod splice;
pub mod substream;
pub mod tls_stream;

/// What the user-space pumps forward between: a byte stream whose halves may be used
/// concurrently, backed by a socket that can be made to reset on close.
pub trait Duplex:
    monoio::io::Split + monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent + std::os::fd::AsRawFd
{
}

impl<T> Duplex for T where
    T: monoio::io::Split
        + monoio::io::AsyncReadRent
        + monoio::io::AsyncWriteRent
        + std::os::fd::AsRawFd
{
}

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

/// How plain-TCP hops move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pump {
    /// `splice(2)` through a per-direction pipe: bytes never enter user space.
    #[default]
    Splice,
    /// A user-space copy loop with 64 KiB buffers (for comparison).
    Copy,
}

impl std::str::FromStr for Pump {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "splice" => Ok(Pump::Splice),
            "copy" => Ok(Pump::Copy),
            other => Err(format!("unknown pump `{other}` (splice, copy)")),
        }
    }
}

/// Forwards between two plain TCP sockets with the chosen pump, counting bytes in
/// `progress` (for idle timeouts).
pub async fn forward_tcp(
    pump: Pump,
    inbound: monoio::net::TcpStream,
    outbound: monoio::net::TcpStream,
    progress: &idle::Progress,
) -> Result<PumpStats, splice::PumpError> {
    match pump {
        Pump::Splice => {
            use std::os::fd::AsRawFd;
            for s in [&inbound, &outbound] {
                sockets::set_nonblocking(s.as_raw_fd()).map_err(|source| splice::PumpError {
                    side: Side::Inbound,
                    source,
                })?;
            }
            splice::forward(&inbound, &outbound, progress).await
        }
        // Boxed: its futures (a buffer per direction in flight) would otherwise size
        // every stream's task, spliced or not.
        Pump::Copy => Box::pin(copy::forward(inbound, outbound, progress)).await,
    }
}
