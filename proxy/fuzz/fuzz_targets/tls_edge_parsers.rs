//! What a public client can send to a TLS endpoint before the edge decides anything:
//! the ClientHello the SNI reader peeks at, and (for test upstreams) PROXY protocol
//! headers.
//!
//! Properties: neither parser panics; `peek_sni` on every prefix of the input gives
//! `NeedMore` or the same answer as on the whole input; a PROXY header that decodes
//! claims no more bytes than it was given, and re-encodes to bytes that decode to the
//! same header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_proxy::{
    proxy_protocol::{self, ProxyHeader},
    sni::{peek_sni, SniPeek},
};

fuzz_target!(|data: &[u8]| {
    let whole = peek_sni(data);
    for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        match peek_sni(&data[..cut]) {
            Ok(SniPeek::NeedMore) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {cut} bytes disagrees"),
        }
    }

    if let Ok(Some((header, used))) = proxy_protocol::decode(data) {
        assert!(used <= data.len());
        if let ProxyHeader::Tcp { version, src, dst } = header {
            let mut out = BytesMut::new();
            proxy_protocol::encode(version, src, dst, &mut out);
            let (again, n) = proxy_protocol::decode(&out).unwrap().unwrap();
            assert_eq!(n, out.len());
            assert!(matches!(again, ProxyHeader::Tcp { .. }));
        }
    }
});
