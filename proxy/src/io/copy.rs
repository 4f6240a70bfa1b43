//! Forwarding through user space with a buffer per direction, for a client whose TLS
//! the agent terminates, carried in a data channel's chunks (agent/datachan/framed.rs).

use std::io;

use monoio::{
    buf::IoBuf,
    io::{
        AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Split,
        Splitable,
    },
};

use super::{
    idle::Progress,
    sockets,
    splice::{join_or_first_error, PumpError},
    PumpStats, Side,
};

/// Buffer size per direction.
pub const COPY_BUF: usize = 64 * 1024;

/// Which end of a one-way copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `r -> w` until EOF on `r`, then shuts `w` down for writing. Not cancel-safe.
async fn copy_one_way<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    progress: &Progress,
) -> Result<u64, CopyError> {
    let mut buf = Vec::with_capacity(COPY_BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = res.map_err(CopyError::Read)?;
        if n == 0 {
            w.shutdown().await.map_err(CopyError::Write)?;
            return Ok(total);
        }
        let (res, slice) = w.write_all(buf.slice(..n)).await;
        buf = slice.into_inner();
        res.map_err(CopyError::Write)?;
        total += n as u64;
        progress.bump(n as u64);
    }
}

fn blame(e: CopyError, read_side: Side, write_side: Side) -> PumpError {
    match e {
        CopyError::Read(source) => PumpError {
            side: read_side,
            source,
        },
        CopyError::Write(source) => PumpError {
            side: write_side,
            source,
        },
    }
}

/// Forwards both ways between two streams (TCP sockets, or TLS over them) through
/// user-space buffers until both directions saw EOF (half-close passed on) or one side
/// fails (the other is reset), handing the inbound stream back when both directions
/// ended cleanly (a stream inside a reusable data channel). Not cancel-safe.
pub async fn forward_returning<A: super::Duplex, B: super::Duplex>(
    inbound: A,
    outbound: B,
    progress: &Progress,
) -> (Result<PumpStats, PumpError>, Option<A>) {
    let in_fd = std::os::fd::AsRawFd::as_raw_fd(&inbound);
    let out_fd = std::os::fd::AsRawFd::as_raw_fd(&outbound);
    let mut inbound = Halves::new(inbound);
    let mut outbound = Halves::new(outbound);
    let result = {
        let (in_r, in_w) = inbound.parts();
        let (out_r, out_w) = outbound.parts();
        let up = std::pin::pin!(async {
            copy_one_way(in_r, out_w, progress)
                .await
                .map_err(|e| blame(e, Side::Inbound, Side::Outbound))
        });
        let down = std::pin::pin!(async {
            copy_one_way(out_r, in_w, progress)
                .await
                .map_err(|e| blame(e, Side::Outbound, Side::Inbound))
        });
        join_or_first_error(up, down).await
    };
    if let Err(e) = &result {
        sockets::reset_on_close(if e.side == Side::Inbound {
            out_fd
        } else {
            in_fd
        });
        return (result.map(|_| PumpStats::default()), None);
    }
    let stats = result.map(|(a, b)| PumpStats {
        inbound_to_outbound: a,
        outbound_to_inbound: b,
    });
    (stats, inbound.reunite())
}

/// A stream split into halves for the two directions, put back together before it is
/// dropped — also when the pump is dropped midway (a stream cut from outside). A monoio
/// write half dropped on its own shuts a TCP socket down for writing, and that FIN
/// would reach the peer ahead of the reset a failed or cut stream must end with.
pub(crate) struct Halves<T: AsyncWriteRent> {
    read: Option<OwnedReadHalf<T>>,
    write: Option<OwnedWriteHalf<T>>,
}

impl<T: AsyncWriteRent + Split> Halves<T> {
    pub(crate) fn new(stream: T) -> Self {
        let (read, write) = stream.into_split();
        Self {
            read: Some(read),
            write: Some(write),
        }
    }
}

impl<T: AsyncWriteRent> Halves<T> {
    pub(crate) fn parts(&mut self) -> (&mut OwnedReadHalf<T>, &mut OwnedWriteHalf<T>) {
        match (self.read.as_mut(), self.write.as_mut()) {
            (Some(read), Some(write)) => (read, write),
            _ => unreachable!("halves are only taken apart on drop or reunite"),
        }
    }

    pub(crate) fn reunite(mut self) -> Option<T> {
        let (read, write) = (self.read.take()?, self.write.take()?);
        read.reunite(write).ok()
    }
}

impl<T: AsyncWriteRent> Drop for Halves<T> {
    fn drop(&mut self) {
        if let (Some(read), Some(write)) = (self.read.take(), self.write.take()) {
            drop(read.reunite(write));
        }
    }
}
