//! The chunk-framed splice pump of `tcp` data channels (`io::chunked_splice`), between
//! real loopback sockets: a blocking client on the local side, and on the channel side a
//! peer that reads and writes the chunk framing by hand (independently of sluice's
//! decoder). It must frame small messages as one chunk each, move bulk in chunks no copy
//! buffer could make, accept chunks of any allowed length, end each direction with its
//! end marker, and hand the channel back with the bytes that followed the peer's marker.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::mpsc,
    thread,
};

mod common;

use common::{pair, pattern, read_header, write_chunk};
use sluice_proxy::{
    io::{chunked_splice, framed::FrameReader, idle::Progress},
    runtime::{self, Driver},
};

const SMALL: &[u8] = b"a 64-byte request, as a database client or an API call sends it.";
const BULK_UP: usize = 3 << 20;
const BULK_DOWN: usize = 2 << 20;

/// What the channel's peer saw, up to the pump's end marker.
struct PeerLog {
    /// Lengths of the data chunks, in order.
    chunks: Vec<usize>,
    /// Their bytes, concatenated.
    bytes: Vec<u8>,
}

/// The channel's far end: reads chunks until the end marker; on cue, answers with one
/// large chunk, one small, its own end marker and then the next stream's first bytes.
fn channel_peer(mut peer: TcpStream, answer_after: usize, first: mpsc::Sender<()>) -> PeerLog {
    let mut log = PeerLog {
        chunks: Vec::new(),
        bytes: Vec::new(),
    };
    let mut answered = false;
    while let Some(len) = read_header(&mut peer) {
        let mut data = vec![0u8; len];
        peer.read_exact(&mut data).unwrap();
        log.chunks.push(len);
        log.bytes.extend_from_slice(&data);
        let _ = first.send(());
        if !answered && log.bytes.len() >= answer_after {
            answered = true;
            // One chunk of 1 MiB (the largest allowed), then the rest in one.
            let down = pattern(BULK_DOWN, 2);
            for piece in [&down[..1 << 20], &down[1 << 20..]] {
                write_chunk(&mut peer, piece);
            }
            write_chunk(&mut peer, SMALL);
        }
    }
    // The pump's end marker came: ours, then what would be the next stream's header.
    peer.write_all(&[&0u32.to_be_bytes()[..], b"NEXT"].concat())
        .unwrap();
    // The channel the pump handed back still works: its next bytes arrive here.
    let mut next = [0u8; 4];
    peer.read_exact(&mut next).unwrap();
    assert_eq!(&next, b"PING");
    log
}

fn frames_both_ways_and_hands_the_channel_back(driver: Driver) {
    runtime::block_on(driver, || async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, local) = pair(&listener);
        let (channel, peer) = pair(&listener);
        drop(listener);
        let local = monoio::net::TcpStream::from_std(local).unwrap();
        // A data channel is made non-blocking once, where it is made.
        channel.set_nonblocking(true).unwrap();
        let channel = monoio::net::TcpStream::from_std(channel).unwrap();

        let (first_tx, first_rx) = mpsc::channel();
        let peer = thread::spawn(move || channel_peer(peer, SMALL.len() + BULK_UP, first_tx));
        let client = thread::spawn(move || {
            client.write_all(SMALL).unwrap();
            // The small message leaves as its own chunk before the bulk follows.
            first_rx.recv().unwrap();
            client.write_all(&pattern(BULK_UP, 1)).unwrap();
            let mut back = vec![0u8; BULK_DOWN + SMALL.len()];
            client.read_exact(&mut back).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(
                rest.is_empty(),
                "bytes after the peer's end marker reached the client"
            );
            back
        });

        let mut reader = FrameReader::new();
        let outcome =
            chunked_splice::forward(local, channel, &mut reader, || true, &Progress::default())
                .await;
        let stats = outcome.result.expect("the pump failed");
        let mut channel = outcome.reusable.expect("channel not handed back");
        let (res, _) =
            monoio::io::AsyncWriteRentExt::write_all(&mut channel, b"PING".to_vec()).await;
        res.unwrap();
        // Bytes after the peer's end marker are the next stream's: kept in the reader
        // or still in the socket, never lost or delivered.
        let mut next = reader.buffer_mut().to_vec();
        if next.len() < 4 {
            let missing = vec![0u8; 4 - next.len()];
            let (res, missing) =
                monoio::io::AsyncReadRentExt::read_exact(&mut channel, missing).await;
            res.unwrap();
            next.extend_from_slice(&missing);
        }
        assert_eq!(next, b"NEXT", "{driver:?}: the bytes after the end marker");
        assert_eq!(stats.inbound_to_outbound, (SMALL.len() + BULK_UP) as u64);
        assert_eq!(stats.outbound_to_inbound, (BULK_DOWN + SMALL.len()) as u64);

        let log = peer.join().unwrap();
        assert_eq!(
            log.chunks[0],
            SMALL.len(),
            "{driver:?}: a small message is one chunk"
        );
        let mut expected = SMALL.to_vec();
        expected.extend_from_slice(&pattern(BULK_UP, 1));
        assert!(
            log.bytes == expected,
            "{driver:?}: bytes to the channel differ"
        );
        let largest = log.chunks.iter().max().copied().unwrap_or(0);
        assert!(
            largest > chunked_splice::SMALL,
            "{driver:?}: no chunk larger than the copy buffer ({largest}): bulk was not spliced"
        );
        let back = client.join().unwrap();
        let mut expected = pattern(BULK_DOWN, 2);
        expected.extend_from_slice(SMALL);
        assert!(back == expected, "{driver:?}: bytes to the client differ");
    })
    .unwrap();
}

#[test]
fn small_messages_and_bulk_are_framed_both_ways_and_the_channel_comes_back() {
    frames_both_ways_and_hands_the_channel_back(Driver::Uring);
    frames_both_ways_and_hands_the_channel_back(Driver::Legacy);
}
