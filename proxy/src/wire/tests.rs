use bytes::BytesMut;

use super::*;

fn samples() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: PROTOCOL_VERSION,
            authtoken: "tok_abc".into(),
            agent_version: "sluice 0.1".into(),
            heartbeat_tolerance_ms: 15_000,
            metadata: Some("{\"site\":\"clinic-3\"}".into()),
        },
        Frame::Welcome {
            session_id: 42,
            secret: [7; 32],
            plain_channels: true,
            edge_id: "edge-a".into(),
        },
        Frame::Bind {
            request_id: 3,
            url: "tcp://db.internal:5432".into(),
            pooling: true,
            labels: Labels {
                description: "patient DB".into(),
                metadata: "{\"tier\":1}".into(),
            },
            traffic_policy: "{\"on_tcp_connect\":[]}".into(),
            upstream_protocol: UpstreamProtocol::Http2,
        },
        Frame::BindOk { request_id: 3 },
        Frame::Error {
            request_id: 3,
            code: ErrorCode::AlreadyBound,
            message: "tcp://db.internal:5432 is bound by another session".into(),
        },
        Frame::Ping { nonce: u64::MAX },
        Frame::Pong { nonce: 1 },
        Frame::NeedChannels { count: 4 },
        Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id: 9,
            seq: 17,
            proof: [1; 32],
        },
        Frame::Stream(StreamStart {
            client: "203.0.113.7:5555".parse().unwrap(),
            server: "198.51.100.1:443".parse().unwrap(),
            internal_url: "tcp://db.internal:5432".into(),
        }),
        Frame::Stream(StreamStart {
            client: "[2001:db8::1]:443".parse().unwrap(),
            server: "[2001:db8::2]:8443".parse().unwrap(),
            internal_url: "tls://api.internal:443".into(),
        }),
        Frame::MuxStream(StreamStart {
            client: "203.0.113.7:5555".parse().unwrap(),
            server: "198.51.100.1:80".parse().unwrap(),
            internal_url: "http://api.internal:80".into(),
        }),
        Frame::EndpointHealth {
            url: "tcp://db.internal:5432".into(),
            healthy: false,
            weight: 250,
        },
        Frame::StreamStatus {
            code: StreamCode::Ok,
        },
        Frame::StreamStatus {
            code: StreamCode::UpstreamFailed,
        },
        Frame::StreamStatus {
            code: StreamCode::UnknownEndpoint,
        },
        Frame::StreamStatus {
            code: StreamCode::PeerRefused,
        },
        Frame::Drain { grace_ms: 10_000 },
        Frame::PeerStream {
            edge: "edge-a".into(),
            at_ms: 1_765_000_000_000,
            nonce: 77,
            proof: [9; 32],
            start: StreamStart {
                client: "203.0.113.7:5555".parse().unwrap(),
                server: "198.51.100.1:21001".parse().unwrap(),
                internal_url: "tcp://db.internal:5432".into(),
            },
        },
    ]
}

#[test]
fn every_frame_round_trips() {
    for frame in samples() {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        let (decoded, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert_eq!(used, buf.len());
    }
}

#[test]
fn every_split_point_asks_for_more_then_decodes() {
    let mut all = BytesMut::new();
    for frame in samples() {
        encode(&frame, &mut all);
    }
    for frame in samples() {
        let mut one = BytesMut::new();
        encode(&frame, &mut one);
        for cut in 0..one.len() {
            assert_eq!(decode(&one[..cut]), Ok(None), "cut at {cut} of {frame:?}");
        }
    }
    let mut rest = &all[..];
    let mut seen = 0;
    while let Some((_, used)) = decode(rest).unwrap() {
        rest = &rest[used..];
        seen += 1;
    }
    assert_eq!(seen, samples().len());
    assert!(rest.is_empty());
}

#[test]
fn oversized_and_empty_lengths_are_rejected_before_buffering() {
    let huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
    assert_eq!(decode(&huge), Err(WireError::BadLength(MAX_FRAME_LEN + 1)));
    assert_eq!(decode(&[0, 0, 0, 0]), Err(WireError::BadLength(0)));
}

#[test]
fn malformed_bodies_name_what_is_wrong() {
    assert_eq!(
        decode(&[0, 0, 0, 1, 0xEE]),
        Err(WireError::UnknownKind(0xEE))
    );
    assert_eq!(
        decode(&[0, 0, 0, 3, 6, 0, 0]),
        Err(WireError::Truncated("ping.nonce"))
    );
    assert_eq!(
        decode(&[0, 0, 0, 6, 4, 0, 0, 0, 1, 9]),
        Err(WireError::Trailing(1))
    );
    // A string whose bytes are not UTF-8.
    let mut bad = vec![0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 1, 0, 2, 0xff, 0xfe];
    let body_len = (bad.len() - 4) as u32;
    bad[..4].copy_from_slice(&body_len.to_be_bytes());
    assert_eq!(decode(&bad), Err(WireError::BadString("error.message")));
    // An address with an unknown family tag.
    let bad_addr = [0, 0, 0, 2, 10, 5];
    assert_eq!(decode(&bad_addr), Err(WireError::BadAddress(5)));
}

#[test]
fn long_strings_are_truncated_at_a_char_boundary_and_still_decode() {
    let frame = Frame::Error {
        request_id: 0,
        code: ErrorCode::Internal,
        message: "é".repeat(5000),
    };
    let mut buf = BytesMut::new();
    encode(&frame, &mut buf);
    let (decoded, _) = decode(&buf).unwrap().unwrap();
    let Frame::Error { message, .. } = decoded else {
        panic!("wrong frame")
    };
    assert!(message.len() <= 4096 && message.chars().all(|c| c == 'é'));
}

#[test]
fn a_bind_carries_a_policy_up_to_its_limit_whole_and_never_a_cut_one() {
    let bind = |policy: String| Frame::Bind {
        request_id: 1,
        url: "tcp://db.internal:5432".into(),
        pooling: false,
        labels: Labels::default(),
        traffic_policy: policy,
        upstream_protocol: UpstreamProtocol::Http1,
    };
    let decoded = |frame: &Frame| {
        let mut buf = BytesMut::new();
        encode(frame, &mut buf);
        let (decoded, _) = decode(&buf).unwrap().unwrap();
        let Frame::Bind { traffic_policy, .. } = decoded else {
            panic!("wrong frame")
        };
        traffic_policy
    };
    let longest = "x".repeat(MAX_POLICY_LEN);
    assert_eq!(decoded(&bind(longest.clone())), longest);
    // Longer is never sent cut (the agent refuses it when it reads its file).
    assert_eq!(decoded(&bind(format!("{longest}y"))), "");
}

#[test]
fn a_stream_status_is_six_bytes_and_unknown_codes_read_as_failure() {
    let mut buf = BytesMut::new();
    encode(
        &Frame::StreamStatus {
            code: StreamCode::Ok,
        },
        &mut buf,
    );
    // Fixed size: the edge reads exactly this many bytes before splicing.
    assert_eq!(&buf[..], &[0, 0, 0, 2, 12, 0]);
    assert_eq!(
        decode(&[0, 0, 0, 2, 12, 77]),
        Ok(Some((
            Frame::StreamStatus {
                code: StreamCode::UpstreamFailed
            },
            6
        )))
    );
    assert_eq!(
        decode(&[0, 0, 0, 1, 12]),
        Err(WireError::Truncated("stream_status.code"))
    );
}

#[test]
fn channel_hello_has_a_fixed_length() {
    let mut out = BytesMut::new();
    encode(
        &Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id: u64::MAX,
            seq: u64::MAX,
            proof: [0xff; 32],
        },
        &mut out,
    );
    assert_eq!(out.len(), CHANNEL_HELLO_FRAME_LEN);
}

#[test]
fn debug_never_prints_secrets() {
    let frames = [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            authtoken: "slt_supersecret".into(),
            agent_version: "v".into(),
            heartbeat_tolerance_ms: 1,
            metadata: None,
        },
        Frame::Welcome {
            session_id: 1,
            secret: [0xab; 32],
            plain_channels: false,
            edge_id: String::new(),
        },
        Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id: 1,
            seq: 2,
            proof: [0xcd; 32],
        },
    ];
    for frame in frames {
        let text = format!("{frame:?}");
        assert!(text.contains("***"), "{text}");
        for leak in ["supersecret", "171", "205"] {
            assert!(!text.contains(leak), "{text}");
        }
    }
}

#[test]
fn every_error_code_round_trips_and_unknown_ones_keep_their_number() {
    let known = [
        ErrorCode::Unauthorized,
        ErrorCode::VersionMismatch,
        ErrorCode::AlreadyBound,
        ErrorCode::BadRequest,
        ErrorCode::Malformed,
        ErrorCode::UnknownSession,
        ErrorCode::NotOwner,
        ErrorCode::PoolingMismatch,
        ErrorCode::SessionEnding,
        ErrorCode::AlreadyBoundHere,
        ErrorCode::BindForbidden,
        ErrorCode::PolicyMismatch,
        ErrorCode::InvalidPolicy,
        ErrorCode::Internal,
    ];
    let numbers: std::collections::HashSet<u16> = known.iter().map(|c| c.to_u16()).collect();
    assert_eq!(numbers.len(), known.len(), "distinct numbers");
    for code in known
        .into_iter()
        .chain([ErrorCode::Unknown(14), ErrorCode::Unknown(4242)])
    {
        let frame = Frame::Error {
            request_id: 3,
            code,
            message: "m".into(),
        };
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        assert_eq!(decode(&buf).unwrap().unwrap().0, frame, "{}", code.name());
    }
    assert_eq!(ErrorCode::from_u16(14), ErrorCode::Unknown(14));
    assert_eq!(ErrorCode::from_u16(7).name(), "NotOwner");
}

#[test]
fn an_older_agents_hello_decodes_without_metadata_to_be_refused_for_its_version() {
    // A version 5 Hello: no metadata field at the end.
    let mut body = BytesMut::new();
    body.extend_from_slice(&[1]); // kind: Hello
    body.extend_from_slice(&5u16.to_be_bytes());
    for text in ["tok_abc", "sluice 0.0"] {
        body.extend_from_slice(&(text.len() as u16).to_be_bytes());
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(&15_000u32.to_be_bytes());
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let (decoded, used) = decode(&frame).unwrap().unwrap();
    assert_eq!(used, frame.len());
    // It re-encodes to the same bytes (the fuzzer's round-trip property).
    let mut again = BytesMut::new();
    encode(&decoded, &mut again);
    assert_eq!(&again[..], &frame[..]);
    let Frame::Hello {
        version, metadata, ..
    } = decoded
    else {
        panic!("{decoded:?}")
    };
    assert_eq!((version, metadata), (5, None));
}
