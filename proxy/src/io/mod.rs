//! Byte movement and socket plumbing shared by the edge and the agent: framed reads and
//! writes of control frames, the splice and copy pumps that move stream bytes, and
//! socket construction (SO_REUSEPORT listeners, non-blocking, reset on close).

pub mod buffer_pool;
pub mod chunked;
pub mod chunked_relay;
pub mod chunked_splice;
pub mod copy;
pub mod framed;
pub mod idle;
pub mod maybe_tls;
pub mod mux;
pub mod readiness;
pub mod sockets;
pub mod splice;
pub mod substream;
pub mod tls_stream;

/// What the user-space pumps forward between: a byte stream whose halves may be used
/// concurrently, backed by a socket that can be made to reset on close.
pub trait Duplex:
    monoio::io::Split
    + monoio::io::AsyncReadRent
    + monoio::io::AsyncWriteRent
    + readiness::Readiness
    + std::os::fd::AsRawFd
{
}

impl<T> Duplex for T where
    T: monoio::io::Split
        + monoio::io::AsyncReadRent
        + monoio::io::AsyncWriteRent
        + readiness::Readiness
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

/// Forwards one stream, chunk-framed, between `local` (a client or an upstream, plain
/// or TLS) and a `tcp` data channel: spliced ([`chunked_splice::forward`]) when `local`
/// is a plain socket and `pump` says splice, copied ([`chunked::forward`]) otherwise.
/// `keep_channel` is asked when `local` reaches EOF; the channel comes back when both
/// ends kept it, and bytes after the peer's end marker stay in `reader`.
/// Not cancel-safe.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps its arguments once; an async fn, twice"
)]
pub fn forward_on_tcp_channel<'a, C>(
    pump: Pump,
    local: maybe_tls::MaybeTls<C>,
    channel: monoio::net::TcpStream,
    reader: &'a mut framed::FrameReader,
    keep_channel: impl FnOnce() -> bool + 'a,
    progress: &'a idle::Progress,
) -> impl std::future::Future<Output = chunked::ChunkedOutcome<monoio::net::TcpStream>> + 'a
where
    maybe_tls::MaybeTls<C>: Duplex,
    C: 'a,
{
    async move {
        match local {
            maybe_tls::MaybeTls::Plain(local) if pump == Pump::Splice => {
                chunked_splice::forward(local, channel, reader, keep_channel, progress).await
            }
            // Boxed: the copy pump's buffers would otherwise size every stream's task.
            local => {
                Box::pin(chunked::forward(
                    local,
                    channel,
                    reader,
                    keep_channel,
                    progress,
                ))
                .await
            }
        }
    }
}
