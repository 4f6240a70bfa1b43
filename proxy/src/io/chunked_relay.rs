//! A stream relayed between two chunk-framed channels ([`crate::wire::chunk`]): a peer
//! link from another edge of the fleet and an agent's data channel, at the edge that
//! holds the session. Chunks pass through as they arrive (copied); each direction's end
//! marker ends that direction on the other channel too (half-close passes through), with
//! this edge's own marker, "keep". When both directions ended, each channel whose far
//! side kept it comes back, so the link can carry the next stream from the same edge
//! and the data channel can be parked for its session again.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::{
    copy::Halves,
    framed::{Chunk, FrameError, FrameReader},
    idle::Progress,
    readiness::Readiness,
    sockets,
    splice::{join_or_first_error, PumpError},
    Duplex, PumpStats, Side,
};
use crate::wire::chunk::EOS_KEEP;

/// How a relayed stream ended.
pub struct RelayOutcome<A, B> {
    /// Bytes moved (`inbound_to_outbound`: `a` to `b`), or the first error, after which
    /// both channels were set to reset on close.
    pub result: Result<PumpStats, PumpError>,
    /// `a`, when both directions ended cleanly and its far side kept it (bytes past
    /// its end marker stay in its reader: the far side may already have sent more).
    pub a_again: Option<A>,
    /// `b`, likewise, unless bytes came past its end marker (its far side sends nothing
    /// unasked between streams).
    pub b_again: Option<B>,
}

/// Relays one chunk-framed stream between `a` (its bytes already received in
/// `a_reader`) and `b` (in `b_reader`) until both directions end. Bytes received past
/// an end marker stay in the reader (the next stream's opening). An error on either side
/// resets both. Not cancel-safe.
pub async fn relay<A: Duplex, B: Duplex>(
    a: A,
    a_reader: &mut FrameReader,
    b: B,
    b_reader: &mut FrameReader,
    progress: &Progress,
) -> RelayOutcome<A, B> {
    let fds = [
        std::os::fd::AsRawFd::as_raw_fd(&a),
        std::os::fd::AsRawFd::as_raw_fd(&b),
    ];
    let mut a = Halves::new(a);
    let mut b = Halves::new(b);
    let result = {
        let (a_r, a_w) = a.parts();
        let (b_r, b_w) = b.parts();
        let a_to_b = std::pin::pin!(one_way(a_reader, a_r, b_w, progress, Side::Inbound));
        let b_to_a = std::pin::pin!(one_way(b_reader, b_r, a_w, progress, Side::Outbound));
        join_or_first_error(a_to_b, b_to_a).await
    };
    match result {
        Ok(((a_bytes, a_keeps), (b_bytes, b_keeps))) => RelayOutcome {
            result: Ok(PumpStats {
                inbound_to_outbound: a_bytes,
                outbound_to_inbound: b_bytes,
            }),
            a_again: a.reunite().filter(|_| a_keeps),
            b_again: b.reunite().filter(|_| b_keeps && !b_reader.has_leftover()),
        },
        Err(e) => {
            for fd in fds {
                sockets::reset_on_close(fd);
            }
            RelayOutcome {
                result: Err(e),
                a_again: None,
                b_again: None,
            }
        }
    }
}

/// One direction: chunks from `from` (through `reader`) to `to`, until the end marker,
/// which is answered on `to` with ours ("keep"): (bytes, whether `from`'s side keeps its
/// channel). `read_side` names `from` in an error (the other side is `to`).
async fn one_way<R: AsyncReadRent + Readiness, W: AsyncWriteRent>(
    reader: &mut FrameReader,
    from: &mut R,
    to: &mut W,
    progress: &Progress,
    read_side: Side,
) -> Result<(u64, bool), PumpError> {
    let write_side = match read_side {
        Side::Inbound => Side::Outbound,
        Side::Outbound => Side::Inbound,
    };
    let failed = |side, source| PumpError { side, source };
    let mut total = 0u64;
    loop {
        match reader.next_chunk(from).await {
            Ok(Chunk::Data(bytes)) => {
                let n = bytes.len();
                let mut out = Vec::with_capacity(4 + n);
                out.extend_from_slice(&(n as u32).to_be_bytes());
                out.extend_from_slice(&bytes);
                let (res, _) = to.write_all(out).await;
                res.map_err(|e| failed(write_side, e))?;
                total += n as u64;
                progress.bump(n as u64);
            }
            Ok(Chunk::End { keep }) => {
                let (res, _) = to.write_all(EOS_KEEP.to_be_bytes().to_vec()).await;
                res.map_err(|e| failed(write_side, e))?;
                return Ok((total, keep));
            }
            Err(FrameError::Io(e)) => return Err(failed(read_side, e)),
            Err(e) => return Err(failed(read_side, std::io::Error::other(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::{
        runtime::{block_on, Driver},
        wire::chunk::EOS_RETIRE,
    };

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let far = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (near, _) = listener.accept().unwrap();
        (far, near)
    }

    fn chunk(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    /// Both relays: this copying one, and the splicing one for two plain sockets.
    const BOTH: [bool; 2] = [false, true];

    /// Relays (spliced or copied) between the near ends of two pairs whose far ends
    /// already sent their part: (whether a and b came back, a's reader leftover, the
    /// result).
    fn run(
        spliced: bool,
        a_near: std::net::TcpStream,
        b_near: std::net::TcpStream,
        after_a_end: usize,
    ) -> (bool, bool, Vec<u8>, Result<PumpStats, PumpError>) {
        block_on(Driver::Legacy, || async move {
            let a = monoio::net::TcpStream::from_std(a_near).unwrap();
            let b = monoio::net::TcpStream::from_std(b_near).unwrap();
            let (mut a_reader, mut b_reader) = (FrameReader::new(), FrameReader::new());
            let progress = Progress::default();
            let out = if spliced {
                crate::io::chunked_splice::relay(a, &mut a_reader, b, &mut b_reader, &progress)
                    .await
            } else {
                relay(a, &mut a_reader, b, &mut b_reader, &progress).await
            };
            // What a's far side sent after its end marker: some may still be in the
            // socket (the spliced relay reads only a header after a bulk chunk).
            let mut after = a_reader.buffer_mut().to_vec();
            let a_kept = out.a_again.is_some();
            if let Some(mut a) = out.a_again {
                while after.len() < after_a_end {
                    use monoio::io::AsyncReadRentExt;
                    let (res, more) = a.read_exact(vec![0u8; after_a_end - after.len()]).await;
                    res.unwrap();
                    after.extend_from_slice(&more);
                }
            }
            (a_kept, out.b_again.is_some(), after, out.result)
        })
        .unwrap()
    }

    #[test]
    fn chunks_pass_both_ways_and_both_channels_come_back_kept() {
        for spliced in BOTH {
            let (mut a_far, a_near) = pair();
            let (mut b_far, b_near) = pair();
            let mut from_a = chunk(b"hello");
            from_a.extend_from_slice(&chunk(&[9u8; 70_000]));
            from_a.extend_from_slice(&EOS_KEEP.to_be_bytes());
            from_a.extend_from_slice(b"next opening");
            a_far.write_all(&from_a).unwrap();
            let mut from_b = chunk(b"world");
            from_b.extend_from_slice(&EOS_KEEP.to_be_bytes());
            b_far.write_all(&from_b).unwrap();

            let (a_kept, b_kept, leftover, result) = run(spliced, a_near, b_near, 12);
            let stats = result.unwrap();
            assert_eq!(stats.inbound_to_outbound, 5 + 70_000);
            assert_eq!(stats.outbound_to_inbound, 5);
            assert!(a_kept && b_kept);
            assert_eq!(
                leftover, b"next opening",
                "the next opening stays for the link's next read"
            );

            // b received a's bytes (re-chunked as they arrived) and our end marker.
            let mut got = Vec::new();
            let mut reader = FrameReader::new();
            block_on(Driver::Legacy, || async {
                let mut far = monoio::net::TcpStream::from_std(b_far.try_clone().unwrap()).unwrap();
                loop {
                    match reader.next_chunk(&mut far).await.unwrap() {
                        crate::io::framed::Chunk::Data(bytes) => got.extend_from_slice(&bytes),
                        crate::io::framed::Chunk::End { keep } => break assert!(keep),
                    }
                }
            })
            .unwrap();
            assert_eq!(&got[..5], b"hello");
            assert_eq!(got.len(), 5 + 70_000);
            let mut back = [0u8; 13];
            a_far.read_exact(&mut back).unwrap();
            assert_eq!(back[..9], chunk(b"world")[..]);
            assert_eq!(back[9..], EOS_KEEP.to_be_bytes());
        }
    }

    #[test]
    fn a_channel_its_far_side_retires_does_not_come_back() {
        for spliced in BOTH {
            let (mut a_far, a_near) = pair();
            let (mut b_far, b_near) = pair();
            a_far.write_all(&EOS_KEEP.to_be_bytes()).unwrap();
            b_far.write_all(&EOS_RETIRE.to_be_bytes()).unwrap();
            let (a_kept, b_kept, _, result) = run(spliced, a_near, b_near, 0);
            assert!(result.is_ok());
            assert!(a_kept && !b_kept);
        }
    }

    #[test]
    fn a_reset_on_one_side_resets_the_other() {
        for spliced in BOTH {
            let (a_far, a_near) = pair();
            let (mut b_far, b_near) = pair();
            sockets::reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&a_far));
            drop(a_far);
            let (a_kept, b_kept, _, result) = run(spliced, a_near, b_near, 0);
            assert!(result.is_err());
            assert!(!a_kept && !b_kept);
            let mut buf = [0u8; 16];
            let err = b_far.read(&mut buf).expect_err("a reset, not an end");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        }
    }
}
