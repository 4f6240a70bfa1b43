//! Forwarding between a local socket and a reusable, chunk-framed channel (a TLS data
//! channel): the local side's bytes become chunks, the channel's chunks become bytes,
//! each direction's EOF becomes an end marker and back (half-close passes through).
//! When both directions ended cleanly the channel is handed back for the next stream.
//! The local side is a TCP socket, or TLS over one (an endpoint that terminates TLS).

use monoio::{
    buf::{IoBuf, IoBufMut},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable},
};

use super::{
    framed::{Chunk, FrameError, FrameReader},
    readiness::{kept_or_new, read_paced, NextRead, Readiness},
    sockets,
    splice::{join_or_first_error, PumpError},
    PumpStats, Side,
};
use crate::wire::chunk::{COPY_CHUNK, EOS_KEEP, EOS_RETIRE};

/// How a chunked forward ended.
pub struct ChunkedOutcome<T> {
    /// The channel, when both directions ended cleanly and both sides keep it.
    pub reusable: Option<T>,
    /// Bytes moved, or the error that ended the stream.
    pub result: Result<PumpStats, PumpError>,
}

/// Forwards `local <-> channel` until both directions end. `keep_channel` is asked
/// when the local side reaches EOF: its answer goes into our end marker. The channel
/// comes back only if both end markers said "keep"; bytes the reader buffered past the
/// end marker stay in `reader` (they may be the next stream's header). Not cancel-safe.
pub async fn forward<L, T>(
    local: L,
    channel: T,
    reader: &mut FrameReader,
    keep_channel: impl FnOnce() -> bool,
    progress: &super::idle::Progress,
) -> ChunkedOutcome<T>
where
    L: super::Duplex,
    T: Split + AsyncReadRent + AsyncWriteRent + Readiness,
{
    let local_fd = std::os::fd::AsRawFd::as_raw_fd(&local);
    let (mut local_r, mut local_w) = local.into_split();
    let (mut chan_r, mut chan_w) = channel.into_split();
    let result = {
        let up = std::pin::pin!(async {
            let mut buf: Vec<u8> = Vec::new();
            let mut total = 0u64;
            let mut next = NextRead::Small;
            loop {
                let room = next.room(COPY_CHUNK);
                let mut kept = std::mem::take(&mut buf);
                let (res, b) = read_paced(&mut local_r, next, || {
                    let mut buf = kept_or_new(&mut kept, 4 + room);
                    buf.extend_from_slice(&[0; 4]);
                    // Read behind the 4-byte header (monoio fills a plain Vec from index 0).
                    buf.slice_mut(4..4 + room)
                })
                .await;
                buf = b.into_inner();
                let n = res.map_err(|source| PumpError {
                    side: Side::Inbound,
                    source,
                })?;
                next = NextRead::after(n, room);
                if n == 0 {
                    let marker = if keep_channel() { EOS_KEEP } else { EOS_RETIRE };
                    let (res, _) = chan_w.write_all(marker.to_be_bytes().to_vec()).await;
                    res.map_err(|source| PumpError {
                        side: Side::Outbound,
                        source,
                    })?;
                    return Ok::<_, PumpError>((total, marker == EOS_KEEP));
                }
                buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
                let (res, b) = chan_w.write_all(buf.slice(..4 + n)).await;
                buf = b.into_inner();
                res.map_err(|source| PumpError {
                    side: Side::Outbound,
                    source,
                })?;
                total += n as u64;
                progress.bump(n as u64);
            }
        });
        let down = std::pin::pin!(async {
            let mut total = 0u64;
            loop {
                match reader.next_chunk(&mut chan_r).await {
                    Ok(Chunk::Data(bytes)) => {
                        let n = bytes.len() as u64;
                        let (res, _) = local_w.write_all(bytes).await;
                        res.map_err(|source| PumpError {
                            side: Side::Inbound,
                            source,
                        })?;
                        total += n;
                        progress.bump(n);
                    }
                    Ok(Chunk::End { keep }) => {
                        // FIN on a socket (one syscall), close_notify first under TLS.
                        let _ = local_w.shutdown().await;
                        return Ok((total, keep));
                    }
                    Err(FrameError::Io(source)) => {
                        return Err(PumpError {
                            side: Side::Outbound,
                            source,
                        })
                    }
                    Err(e) => {
                        return Err(PumpError {
                            side: Side::Outbound,
                            source: std::io::Error::other(e.to_string()),
                        })
                    }
                }
            }
        });
        join_or_first_error(up, down).await
    };
    match result {
        Ok(((up_bytes, we_keep), (down_bytes, they_keep))) => {
            let stats = PumpStats {
                inbound_to_outbound: up_bytes,
                outbound_to_inbound: down_bytes,
            };
            let reusable = if we_keep && they_keep {
                chan_r.reunite(chan_w).ok()
            } else {
                None
            };
            ChunkedOutcome {
                reusable,
                result: Ok(stats),
            }
        }
        Err(e) => {
            if e.side == Side::Outbound {
                sockets::reset_on_close(local_fd);
                // Dropping a monoio write half sends FIN (it shuts down writing),
                // which the peer would read as a clean end before our RST. Drop
                // the reunited stream instead: closing it sends only the RST.
                drop(local_r.reunite(local_w));
            }
            ChunkedOutcome {
                reusable: None,
                result: Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::{
        io::{
            idle::Progress,
            readiness::watched::{
                assert_never_idle, echo_client, pair, Watched, ECHO_MESSAGES as MESSAGES,
            },
        },
        runtime::{block_on, Driver},
    };

    #[test]
    fn neither_direction_lends_a_large_buffer_to_a_socket_with_nothing_to_read() {
        let (client, local_near) = pair();
        let (mut agent, channel_near) = pair();
        // The channel's far end echoes each chunk back as a chunk, and answers the end
        // marker with its own.
        let agent_side = std::thread::spawn(move || loop {
            let mut header = [0u8; 4];
            agent.read_exact(&mut header).unwrap();
            if u32::from_be_bytes(header) == EOS_KEEP {
                agent.write_all(&EOS_KEEP.to_be_bytes()).unwrap();
                return;
            }
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            agent.read_exact(&mut body).unwrap();
            agent.write_all(&header).unwrap();
            agent.write_all(&body).unwrap();
        });
        let client_side = echo_client(client, &MESSAGES);
        let (result, kept, local_reads, channel_reads) = block_on(Driver::Legacy, || async move {
            let (local, local_reads) = Watched::new(local_near);
            let (channel, channel_reads) = Watched::new(channel_near);
            let mut reader = FrameReader::new();
            let outcome = forward(local, channel, &mut reader, || true, &Progress::default()).await;
            let kept = outcome.reusable.is_some();
            (outcome.result, kept, local_reads, channel_reads)
        })
        .unwrap();
        client_side.join().unwrap();
        agent_side.join().unwrap();
        let stats = result.unwrap();
        let sent: usize = MESSAGES.iter().sum();
        assert_eq!(stats.inbound_to_outbound, sent as u64);
        assert_eq!(stats.outbound_to_inbound, sent as u64);
        assert!(kept, "both ends kept the channel");
        assert_never_idle("client", &local_reads);
        assert_never_idle("channel", &channel_reads);
    }
}
