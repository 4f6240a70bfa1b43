//! Forwarding through user space with a buffer per direction: the path for hops where
//! splice cannot work (TLS) and the baseline the splice pump is benchmarked against.

use std::io;

use monoio::{
    buf::IoBuf,
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
};

/// Buffer size per direction.
pub const COPY_BUF: usize = 64 * 1024;

/// Copies `r -> w` until EOF on `r`, then shuts `w` down for writing. Returns the
/// bytes copied. Not cancel-safe.
pub async fn copy_one_way<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    progress: &super::idle::Progress,
) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(COPY_BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        let (res, slice) = w.write_all(buf.slice(..n)).await;
        buf = slice.into_inner();
        res?;
        total += n as u64;
        progress.bump(n as u64);
    }
}

/// Forwards both ways between two TCP sockets through user-space buffers until both
/// directions saw EOF (half-close passed on) or one side fails (the other is reset).
/// The baseline the splice pump is measured against. Not cancel-safe.
pub async fn forward(
    inbound: monoio::net::TcpStream,
    outbound: monoio::net::TcpStream,
    progress: &super::idle::Progress,
) -> Result<super::PumpStats, super::splice::PumpError> {
    use monoio::io::Splitable;

    use super::{splice::PumpError, Side};
    let (in_fd, out_fd) = (
        std::os::fd::AsRawFd::as_raw_fd(&inbound),
        std::os::fd::AsRawFd::as_raw_fd(&outbound),
    );
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    // A read error is blamed on the side read from; a write error on the side written to.
    let up = async {
        copy_one_way(&mut in_r, &mut out_w, progress)
            .await
            .map_err(|source| PumpError {
                side: Side::Inbound,
                source,
            })
    };
    let down = async {
        copy_one_way(&mut out_r, &mut in_w, progress)
            .await
            .map_err(|source| PumpError {
                side: Side::Outbound,
                source,
            })
    };
    let result = super::splice::join_or_first_error(up, down).await;
    if let Err(e) = &result {
        super::sockets::reset_on_close(if e.side == Side::Inbound {
            out_fd
        } else {
            in_fd
        });
    }
    result.map(|(a, b)| super::PumpStats {
        inbound_to_outbound: a,
        outbound_to_inbound: b,
    })
}
