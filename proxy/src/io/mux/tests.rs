use std::{future::Future, io::Write, time::Duration};

use super::*;
use crate::runtime::{block_on, Driver};

/// An opener and an acceptor over a loopback connection (std sockets made
/// non-blocking, as monoio's legacy driver needs).
fn linked() -> (Mux, Mux) {
    let (a, b) = crate::io::readiness::watched::pair();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let a = monoio::net::TcpStream::from_std(a).unwrap();
    let b = monoio::net::TcpStream::from_std(b).unwrap();
    (Mux::start(a, Role::Opener), Mux::start(b, Role::Acceptor))
}

/// An acceptor whose peer is a raw socket the test writes frames on.
fn raw_peer() -> (std::net::TcpStream, Mux) {
    let (a, b) = crate::io::readiness::watched::pair();
    b.set_nonblocking(true).unwrap();
    let b = monoio::net::TcpStream::from_std(b).unwrap();
    (a, Mux::start(b, Role::Acceptor))
}

fn frame(id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&id.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    monoio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
}

async fn recv_bytes(sub: &SubStream) -> Vec<u8> {
    within("recv", sub.recv()).await.unwrap().unwrap().to_vec()
}

#[test]
fn streams_carry_bytes_both_ways_their_answers_and_their_ends() {
    block_on(Driver::Legacy, || async {
        let (edge, agent) = linked();
        let one = edge.open().unwrap();
        let two = edge.open().unwrap();
        let far_one = within("accept", agent.accept()).await.unwrap();
        let far_two = within("accept", agent.accept()).await.unwrap();
        far_one.answer(Answer::Opened);
        far_two.answer(Answer::Refused);
        assert_eq!(within("answer", one.answered()).await, Ok(()));
        assert_eq!(within("answer", two.answered()).await, Err(Gone::Refused));
        one.send_all(b"to one").await.unwrap();
        assert_eq!(recv_bytes(&far_one).await, b"to one");
        far_one.send_all(b"back").await.unwrap();
        assert_eq!(recv_bytes(&one).await, b"back");
        far_one.finish();
        assert_eq!(within("fin", one.recv()).await, Ok(None));
    })
    .unwrap();
}

#[test]
fn a_sender_stops_at_a_window_the_reader_has_not_taken() {
    block_on(Driver::Legacy, || async {
        let (edge, agent) = linked();
        let near = edge.open().unwrap();
        let far = within("accept", agent.accept()).await.unwrap();
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 0;
        while sent < WINDOW {
            let room = within("credit", near.credit(chunk.len())).await.unwrap();
            near.send(&chunk[..room]);
            sent += room;
        }
        assert_eq!(sent, WINDOW);
        // No credit left: the next wait does not resolve until the reader takes bytes.
        let mut waiting = std::pin::pin!(near.credit(1));
        assert!(poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_pending())).await);
        let mut taken = 0;
        while taken < WINDOW / 2 {
            taken += recv_bytes(&far).await.len();
        }
        assert!(within("credit back", waiting).await.is_ok());
    })
    .unwrap();
}

#[test]
fn a_dropped_stream_resets_its_peer_and_the_opener_closes_after_its_last() {
    block_on(Driver::Legacy, || async {
        let (edge, agent) = linked();
        let near = edge.open().unwrap();
        let far = within("accept", agent.accept()).await.unwrap();
        drop(near);
        within("reset", far.gone()).await;
        assert_eq!(far.recv().await, Err(Gone::Reset));
        // The opener's last stream went: its link closes, and so does the acceptor's.
        assert!(edge.is_closed());
        assert!(within("close", agent.accept()).await.is_none());
    })
    .unwrap();
}

#[test]
fn an_aborted_link_ends_every_stream_on_both_sides() {
    block_on(Driver::Legacy, || async {
        let (edge, agent) = linked();
        let near = edge.open().unwrap();
        let far = within("accept", agent.accept()).await.unwrap();
        edge.abort();
        assert_eq!(near.recv().await, Err(Gone::Closed));
        within("cut", far.gone()).await;
        assert!(agent.is_closed());
    })
    .unwrap();
}

#[test]
fn an_opener_opens_no_more_than_max_streams_and_none_once_retired() {
    block_on(Driver::Legacy, || async {
        let (edge, _agent) = linked();
        let open: Vec<_> = (0..MAX_STREAMS).map(|_| edge.open().unwrap()).collect();
        assert!(edge.open().is_none());
        assert!(!edge.is_usable());
        drop(open);
        let (edge, _agent) = linked();
        let kept = edge.open().unwrap();
        edge.retire();
        assert!(edge.open().is_none());
        assert!(
            !edge.is_closed(),
            "a retired link lasts while its streams do"
        );
        drop(kept);
        assert!(edge.is_closed());
    })
    .unwrap();
}

/// Each of these frames from a peer ends the link.
#[test]
fn a_peer_breaking_the_protocol_ends_the_link() {
    let past_window = {
        let mut f = frame(1, OPEN, &[]);
        f.extend(frame(1, DATA, &vec![0u8; WINDOW / 2 + 1]));
        f.extend(frame(1, DATA, &vec![0u8; WINDOW / 2]));
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("data past the window", past_window),
        ("a frame longer than allowed", frame(1, CREDIT, &[0; 8])),
        ("an unknown kind", frame(1, 99, &[])),
        ("an answer sent to the acceptor", frame(1, OPENED, &[])),
        ("an open of stream 0", frame(0, OPEN, &[])),
        (
            "an id opened twice",
            [frame(3, OPEN, &[]), frame(3, OPEN, &[])].concat(),
        ),
        (
            "more credit than a window",
            [frame(1, OPEN, &[]), frame(1, CREDIT, &1u32.to_be_bytes())].concat(),
        ),
    ];
    for (what, bytes) in cases {
        block_on(Driver::Legacy, || async {
            let (mut raw, agent) = raw_peer();
            raw.write_all(&bytes).unwrap();
            // Streams it opened before breaking the rules are accepted and then end.
            // (kept, so that frames for them are not dropped as late ones).
            let mut accepted = Vec::new();
            within(what, async {
                while let Some(sub) = agent.accept().await {
                    accepted.push(sub);
                }
            })
            .await;
            assert!(agent.is_closed(), "{what}");
        })
        .unwrap();
    }
}

/// What a hostile peer could send (a customer's agent to the edge, or the edge to an
/// agent): frames with arbitrary fields and noise, cut anywhere. The link takes them or
/// ends; it never panics, and what it holds of a frame not yet complete stays within
/// one frame's bound. (A credit frame shorter than its 4 bytes made it panic.)
#[test]
fn arbitrary_bytes_from_a_peer_never_panic_and_stay_bounded() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut ended = 0;
    for _ in 0..2000 {
        for role in [Role::Opener, Role::Acceptor] {
            let mux = Mux::state(role, -1);
            let streams: Vec<SubStream> = match role {
                Role::Opener => (0..3).filter_map(|_| mux.open()).collect(),
                Role::Acceptor => Vec::new(),
            };
            let mut pending = BytesMut::new();
            let mut input = Vec::new();
            for _ in 0..next() % 12 {
                if next() % 5 == 0 {
                    input.extend((0..next() % 40).map(|_| next() as u8));
                    continue;
                }
                let len = match next() % 10 {
                    0 => WINDOW + 1,
                    1 => (next() % 300) as usize,
                    n => [0, 1, 3, 4, 5, 8, 16, 64][n as usize % 8],
                };
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                input.extend(frame((next() % 5) as u32, (next() % 9) as u8, &payload));
            }
            let mut rest = &input[..];
            while !rest.is_empty() {
                // (as the reader gets them: at most a read's worth at a time)
                let cut = 1 + (next() as usize % rest.len().min(READ_SIZE));
                pending.extend_from_slice(&rest[..cut]);
                rest = &rest[cut..];
                if mux.dispatch(&mut pending).is_err() {
                    ended += 1;
                    break;
                }
                assert!(pending.len() < HEADER + WINDOW);
                // The streams' readers take what arrived, granting credit back.
                let mut cx = Context::from_waker(Waker::noop());
                for sub in &streams {
                    while let Poll::Ready(Ok(Some(bytes))) = sub.poll_recv(&mut cx) {
                        mux.took(sub.id, bytes.len());
                    }
                }
            }
        }
    }
    assert!(
        ended > 0,
        "no input broke the protocol: the generator is too tame"
    );
}
