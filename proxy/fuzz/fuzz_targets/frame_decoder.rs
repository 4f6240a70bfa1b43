//! The agent protocol decoder, fed an arbitrary byte stream as a peer would send it.
//!
//! Properties: `decode` never panics; it never claims more bytes than it was given; a
//! strict prefix of a frame asks for more (`Ok(None)`); every decoded frame re-encodes
//! to bytes that decode to an equal frame of the same length. The same bytes also go
//! through the TLS data channel's chunk header decoder.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_proxy::wire::{chunk::decode_chunk_header, decode, encode, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut out = BytesMut::new();
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!(
            used <= rest.len(),
            "consumed {used} of {} bytes",
            rest.len()
        );
        assert!(
            (5..=4 + MAX_FRAME_LEN).contains(&used),
            "frame of {used} bytes"
        );
        assert_eq!(
            decode(&rest[..used - 1]),
            Ok(None),
            "a strict prefix of a frame must ask for more"
        );

        out.clear();
        encode(&frame, &mut out);
        assert_eq!(out.len(), used, "re-encoded {frame:?} has another length");
        match decode(&out) {
            Ok(Some((again, again_used))) => {
                assert_eq!(again, frame, "round trip changed the frame");
                assert_eq!(again_used, used, "round trip changed the length");
            }
            other => panic!("re-encoded {frame:?} does not decode: {other:?}"),
        }
        rest = &rest[used..];
    }

    // Chunk headers: only the first 4 bytes count, any value is fine.
    let _ = decode_chunk_header(data);
    for w in data.chunks(4) {
        let _ = decode_chunk_header(w);
    }
});
