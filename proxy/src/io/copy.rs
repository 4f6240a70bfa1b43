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
    readiness::{kept_or_new, read_paced, NextRead, Readiness},
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
async fn copy_one_way<R: AsyncReadRent + Readiness, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    progress: &Progress,
) -> Result<u64, CopyError> {
    let mut buf = Vec::new();
    let mut total = 0u64;
    let mut next = NextRead::Small;
    loop {
        let room = next.room(COPY_BUF);
        let mut kept = std::mem::take(&mut buf);
        let (res, b) = read_paced(r, next, || kept_or_new(&mut kept, room)).await;
        buf = b;
        let n = res.map_err(CopyError::Read)?;
        next = NextRead::after(n, room);
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::{
        io::readiness::watched::{
            assert_never_idle, echo_client, pair, Watched, ECHO_MESSAGES as MESSAGES,
        },
        runtime::{block_on, Driver},
    };

    #[test]
    fn neither_direction_lends_a_large_buffer_to_a_socket_with_nothing_to_read() {
        let (client, inbound_near) = pair();
        let (mut upstream, outbound_near) = pair();
        let upstream_side = std::thread::spawn(move || {
            let mut buf = vec![0u8; 100_000];
            loop {
                let n = upstream.read(&mut buf).unwrap();
                if n == 0 {
                    return upstream.shutdown(std::net::Shutdown::Write).unwrap();
                }
                upstream.write_all(&buf[..n]).unwrap();
            }
        });
        let client_side = echo_client(client, &MESSAGES);
        let (result, inbound_reads, outbound_reads) = block_on(Driver::Legacy, || async move {
            let (inbound, inbound_reads) = Watched::new(inbound_near);
            let (outbound, outbound_reads) = Watched::new(outbound_near);
            let (result, _) = forward_returning(inbound, outbound, &Progress::default()).await;
            (result, inbound_reads, outbound_reads)
        })
        .unwrap();
        client_side.join().unwrap();
        upstream_side.join().unwrap();
        let stats = result.unwrap();
        let sent: u64 = MESSAGES.iter().sum::<usize>() as u64;
        assert_eq!(
            (stats.inbound_to_outbound, stats.outbound_to_inbound),
            (sent, sent)
        );
        assert_never_idle("inbound", &inbound_reads);
        assert_never_idle("outbound", &outbound_reads);
    }
}
