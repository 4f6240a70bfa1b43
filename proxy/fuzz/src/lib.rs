//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`seed_frames`]: one of each frame kind, the source of `corpus/frame_decoder/`
//!   (regenerate with `SLUICE_FUZZ_REGEN=1 cargo test -p sluice-proxy --test
//!   fuzz_seeds`, see `docs/fuzzing.md`).
//! - [`ConfigSandbox`]: a private directory holding a valid self-signed certificate and
//!   key, so edge and agent configs that name `edge.crt` / `edge.key` / `ca.pem` get past
//!   file loading and the fuzzer reaches the validation behind it.
//! - [`touches_special_files`]: keeps fuzzed configs away from `/dev` and `/proc`
//!   (`cert: /dev/zero` would make the parser read forever: a harness hazard, not a bug).

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use sluice_proxy::wire::{encode, ErrorCode, Frame, StreamCode, StreamStart, PROTOCOL_VERSION};

/// One frame of each kind, with edge values (empty and non-ASCII strings, IPv6).
pub fn seed_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello",
            Frame::Hello {
                version: PROTOCOL_VERSION,
                authtoken: "slt_abc".into(),
                agent_version: "sluice 0.1".into(),
                heartbeat_tolerance_ms: 15_000,
                metadata: Some("{\"site\": \"clinic-3\"}".into()),
            },
        ),
        (
            "hello-empty",
            Frame::Hello {
                version: 0,
                authtoken: String::new(),
                agent_version: "ünïcødé ✓".into(),
                heartbeat_tolerance_ms: u32::MAX,
                metadata: None,
            },
        ),
        (
            "welcome",
            Frame::Welcome {
                session_id: 42,
                secret: [7; 32],
                plain_channels: true,
                edge_id: "edge-a".into(),
            },
        ),
        (
            "bind",
            Frame::Bind {
                request_id: 3,
                url: "tcp://db.internal:5432".into(),
                pooling: true,
                labels: sluice_proxy::wire::Labels {
                    description: "patient DB".into(),
                    metadata: String::new(),
                },
                traffic_policy: r#"{"on_tcp_connect":[{"actions":[{"type":"close-connection"}]}]}"#
                    .into(),
                upstream_protocol: sluice_proxy::wire::UpstreamProtocol::Http2,
            },
        ),
        ("bind-ok", Frame::BindOk { request_id: 3 }),
        (
            "error",
            Frame::Error {
                request_id: 3,
                code: ErrorCode::AlreadyBound,
                message: "tcp://db.internal:5432 is bound by another session".into(),
            },
        ),
        ("ping", Frame::Ping { nonce: u64::MAX }),
        ("pong", Frame::Pong { nonce: 1 }),
        ("need-channels", Frame::NeedChannels { count: 4 }),
        (
            "channel-hello",
            Frame::ChannelHello {
                version: PROTOCOL_VERSION,
                session_id: 9,
                seq: 17,
                proof: [1; 32],
            },
        ),
        (
            "stream-v4",
            Frame::Stream(StreamStart {
                client: "203.0.113.7:5555".parse().expect("literal"),
                server: "198.51.100.1:21001".parse().expect("literal"),
                internal_url: "tcp://db.internal:5432".into(),
            }),
        ),
        (
            "stream-v6",
            Frame::Stream(StreamStart {
                client: "[2001:db8::1]:443".parse().expect("literal"),
                server: "[2001:db8::2]:443".parse().expect("literal"),
                internal_url: "tls://api.internal".into(),
            }),
        ),
        (
            "mux-stream",
            Frame::MuxStream(StreamStart {
                client: "203.0.113.9:6000".parse().expect("literal"),
                server: "198.51.100.1:80".parse().expect("literal"),
                internal_url: "http://api.internal:80".into(),
            }),
        ),
        (
            "endpoint-health",
            Frame::EndpointHealth {
                url: "tcp://db.internal:5432".into(),
                healthy: false,
                weight: 1000,
            },
        ),
        (
            "stream-status",
            Frame::StreamStatus {
                code: StreamCode::UpstreamFailed,
            },
        ),
        ("drain", Frame::Drain { grace_ms: 10_000 }),
        (
            "peer-stream",
            Frame::PeerStream {
                edge: "edge-a".into(),
                at_ms: 1_765_000_000_000,
                nonce: 7,
                proof: [3; 32],
                start: StreamStart {
                    client: "203.0.113.7:5555".parse().expect("literal"),
                    server: "198.51.100.1:21001".parse().expect("literal"),
                    internal_url: "tcp://db.internal:5432".into(),
                },
            },
        ),
    ]
}

/// The encoded bytes of `frames`, back to back, as a peer would send them.
pub fn encode_all<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out);
    }
    out.to_vec()
}

/// Whether a fuzzed config names a device or kernel file: reading `/dev/zero` or
/// `/dev/stdin` as a certificate never ends. Such inputs are skipped, not parsed.
pub fn touches_special_files(text: &str) -> bool {
    text.contains("dev") || text.contains("proc") || text.contains("sys")
}

/// A directory of this process holding `edge.crt`, `edge.key` and `ca.pem` (the same
/// self-signed certificate) and no config file; config paths point inside it.
pub struct ConfigSandbox {
    dir: PathBuf,
}

impl ConfigSandbox {
    /// Creates the directory under the system temp dir and writes the PEM files.
    pub fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = sluice_proxy::tls::self_signed_pem(&["edge.example.com", "localhost"])
            .map_err(std::io::Error::other)?;
        std::fs::write(dir.join("edge.crt"), &cert)?;
        std::fs::write(dir.join("edge.key"), key)?;
        std::fs::write(dir.join("ca.pem"), cert)?;
        Ok(Self { dir })
    }

    /// The (never existing) config file path handed to `from_yaml`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sluice_proxy::wire::decode;

    use super::*;

    /// `corpus/<target>` of the fuzz crate, whether these tests are built by it or by
    /// sluice-proxy's `tests/fuzz_seeds.rs` (the usual way: CI's test run).
    fn corpus_dir(target: &str) -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fuzz = if manifest.ends_with("fuzz") {
            manifest.to_path_buf()
        } else {
            manifest.join("fuzz")
        };
        fuzz.join("corpus").join(target)
    }

    /// The frame seeds in git are exactly what the codec encodes today; with
    /// `SLUICE_FUZZ_REGEN=1` the test rewrites them instead.
    #[test]
    fn frame_seed_corpus_is_current() {
        let dir = corpus_dir("frame_decoder");
        let frames = seed_frames();
        let mut files: Vec<(String, Vec<u8>)> = frames
            .iter()
            .map(|(name, f)| (format!("seed-{name}.bin"), encode_all([f])))
            .collect();
        // A whole control-channel conversation in one input, as the stream decoder sees it.
        files.push((
            "seed-stream-all.bin".into(),
            encode_all(frames.iter().map(|(_, f)| f)),
        ));
        // Near-valid inputs: a truncated frame, an oversized length, an unknown kind.
        let hello = encode_all([&frames[0].1]);
        files.push((
            "seed-truncated.bin".into(),
            hello[..hello.len() - 3].to_vec(),
        ));
        files.push(("seed-bad-length.bin".into(), vec![0, 0, 0x40, 1, 6]));
        files.push(("seed-unknown-kind.bin".into(), vec![0, 0, 0, 1, 0xee]));
        // Chunk headers of a TLS data channel: data length, end-keep, end-retire.
        files.push((
            "seed-chunks.bin".into(),
            [
                5u32.to_be_bytes(),
                0u32.to_be_bytes(),
                u32::MAX.to_be_bytes(),
            ]
            .concat(),
        ));

        let regen = std::env::var_os("SLUICE_FUZZ_REGEN").is_some();
        for (name, bytes) in &files {
            let path = dir.join(name);
            if regen {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
            } else {
                let on_disk = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (SLUICE_FUZZ_REGEN=1)", path.display()));
                assert_eq!(&on_disk, bytes, "{} is stale (SLUICE_FUZZ_REGEN=1)", name);
            }
        }
        // Every single-frame seed decodes whole.
        for (name, f) in &frames {
            let bytes = encode_all([f]);
            let (got, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!((&got, used), (f, bytes.len()), "{name}");
        }
    }

    #[test]
    fn sandbox_holds_loadable_tls_files() {
        let sb = ConfigSandbox::create().unwrap();
        assert!(sluice_proxy::tls::load_certs(&sb.dir().join("edge.crt")).is_ok());
        assert!(sluice_proxy::tls::load_key(&sb.dir().join("edge.key")).is_ok());
        assert!(!sb.config_path("edge.yml").exists());
        std::fs::remove_dir_all(sb.dir()).unwrap();
    }
}
