//! Cost of the agent protocol's frame codec: encoding and decoding the frames on the
//! per-connection path (a data channel's `ChannelHello`, the `Stream` start, a `Ping`)
//! and the control channel's `Hello`, plus the chunk header read on every TLS-channel
//! chunk. `cargo bench -p sluice-bench --bench wire_codec`
use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use sluice_proxy::wire::{self, chunk, Frame, StreamStart, PROTOCOL_VERSION};

fn frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello",
            Frame::Hello {
                version: PROTOCOL_VERSION,
                authtoken: "slt_0123456789abcdef0123456789abcdef".into(),
                agent_version: "sluice 0.1.0".into(),
                heartbeat_tolerance_ms: 30_000,
                metadata: Some(String::new()),
            },
        ),
        (
            "channel_hello",
            Frame::ChannelHello {
                version: PROTOCOL_VERSION,
                session_id: 42,
                seq: 7,
                proof: [7; 32],
            },
        ),
        (
            "stream",
            Frame::Stream(StreamStart {
                client: "198.51.100.7:53122".parse().unwrap(),
                server: "203.0.113.1:21001".parse().unwrap(),
                internal_url: "tcp://db.internal:5432".into(),
            }),
        ),
        (
            "ping",
            Frame::Ping {
                nonce: 0x0123_4567_89ab_cdef,
            },
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let mut buf = BytesMut::with_capacity(256);
    for (name, frame) in frames() {
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                wire::encode(black_box(&frame), &mut buf);
                buf.len()
            })
        });
        let mut encoded = BytesMut::new();
        wire::encode(&frame, &mut encoded);
        assert_eq!(
            wire::decode(&encoded).unwrap(),
            Some((frame.clone(), encoded.len()))
        );
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| wire::decode(black_box(&encoded)).unwrap().map(|(_, n)| n))
        });
    }
    let header = 16_384u32.to_be_bytes();
    g.bench_function("chunk_header", |b| {
        b.iter(|| chunk::decode_chunk_header(black_box(&header)).unwrap())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
}

criterion_group! { name = benches; config = config(); targets = codec }
criterion_main!(benches);
