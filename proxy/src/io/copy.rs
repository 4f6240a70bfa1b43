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
    }
}
