use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rustls::pki_types::ServerName;

use super::*;

// ---- ClientHellos from rustls -------------------------------------------------------

/// The first flight rustls sends to `server_name` (one record holding the ClientHello).
fn rustls_hello(server_name: &str, tls12_only: bool, sni: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut config = builder
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls into a Vec");
    }
    out
}

fn db_hello() -> &'static [u8] {
    static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
    HELLO.get_or_init(|| rustls_hello("db.acme.example", false, true))
}

/// The handshake bytes of a single-record first flight.
fn handshake_of(flight: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
    assert_eq!(flight.len(), 5 + len, "one record");
    &flight[5..]
}

// ---- Hand-built ClientHellos ---------------------------------------------------------

fn record(kind: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `handshake` split into handshake records of at most `size` payload bytes.
fn fragment(handshake: &[u8], size: usize) -> Vec<u8> {
    handshake
        .chunks(size)
        .flat_map(|c| record(22, 0x0301, c))
        .collect()
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A server_name extension body with the given (name_type, name) entries.
fn server_name(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend(list);
    out
}

/// A ClientHello handshake message; `extensions: None` omits the extensions block.
fn hello(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    if let Some(extensions) = extensions {
        let all: Vec<u8> = extensions.concat();
        body.extend_from_slice(&(all.len() as u16).to_be_bytes());
        body.extend(all);
    }
    let mut out = vec![1];
    out.extend_from_slice(&u24(body.len()));
    out.extend(body);
    out
}

fn hello_with_name(name: &[u8]) -> Vec<u8> {
    hello(Some(&[
        extension(10, &[0, 2, 0, 29]),
        extension(0, &server_name(&[(0, name)])),
        extension(43, &[2, 3, 4]),
    ]))
}

fn found(name: &str) -> Result<SniPeek<'static>, SniError> {
    Ok(SniPeek::Found(Cow::Owned(name.to_owned())))
}

/// Every proper prefix answers NeedMore and the whole input answers `expected`.
fn assert_every_split(input: &[u8], expected: &Result<SniPeek<'_>, SniError>) {
    for cut in 0..input.len() {
        assert_eq!(
            peek_sni(&input[..cut]),
            Ok(SniPeek::NeedMore),
            "prefix of {cut} of {} bytes",
            input.len()
        );
    }
    assert_eq!(&peek_sni(input), expected);
}

/// Every prefix answers NeedMore or the whole input's answer.
fn assert_prefixes_agree(input: &[u8]) {
    let whole = peek_sni(input);
    for cut in 0..input.len() {
        let part = peek_sni(&input[..cut]);
        assert!(
            part == Ok(SniPeek::NeedMore) || part == whole,
            "prefix {cut}: {part:?}, whole: {whole:?}"
        );
    }
}

// ---- Real ClientHellos ---------------------------------------------------------------

#[test]
fn rustls_hellos_route_at_every_split_offset() {
    for (name, tls12) in [
        ("db.acme.example", false),
        ("db.acme.example", true),
        ("x", false),
        ("Mixed-Case.Example", false),
    ] {
        let flight = rustls_hello(name, tls12, true);
        let Ok(SniPeek::Found(got)) = peek_sni(&flight) else {
            panic!("{name}: {:?}", peek_sni(&flight));
        };
        assert!(got.eq_ignore_ascii_case(name), "{got} vs {name}");
        assert!(matches!(got, Cow::Borrowed(_)), "one record: no copy");
        assert_every_split(&flight, &Ok(SniPeek::Found(got.clone())));
    }
}

#[test]
fn bytes_after_the_hello_change_nothing() {
    let mut flight = db_hello().to_vec();
    flight.extend_from_slice(&record(20, 0x0303, &[1])); // ChangeCipherSpec
    flight.extend_from_slice(&record(23, 0x0303, b"early data"));
    assert_eq!(peek_sni(&flight), found("db.acme.example"));
}

#[test]
fn ip_address_or_disabled_sni_gives_no_sni() {
    for flight in [
        rustls_hello("192.0.2.7", false, true),
        rustls_hello("2001:db8::1", false, true),
        rustls_hello("db.acme.example", false, false),
    ] {
        assert_every_split(&flight, &Ok(SniPeek::NoSni));
    }
}

#[test]
fn refragmented_hello_is_reassembled() {
    let handshake = handshake_of(db_hello());
    for size in (1..=80).chain([100, 255, 256, 1000, handshake.len()]) {
        let stream = fragment(handshake, size);
        assert_eq!(peek_sni(&stream), found("db.acme.example"), "size {size}");
        if size <= 3 || size == 50 {
            assert_every_split(&stream, &found("db.acme.example"));
        }
    }
}

#[test]
fn a_name_straddling_records_is_copied_once() {
    let handshake = hello_with_name(b"db.acme.example");
    let at = handshake
        .windows(4)
        .position(|w| w == b"acme")
        .expect("name inside");
    let mut stream = record(22, 0x0301, &handshake[..at + 2]);
    stream.extend(record(22, 0x0301, &handshake[at + 2..]));
    assert_every_split(&stream, &found("db.acme.example"));
    assert!(matches!(
        peek_sni(&stream),
        Ok(SniPeek::Found(Cow::Owned(_)))
    ));
}

// ---- Hand-built ClientHellos: shapes and errors --------------------------------------

#[test]
fn well_formed_variants() {
    let single = |h: &[u8]| record(22, 0x0301, h);
    assert_every_split(&single(&hello(None)), &Ok(SniPeek::NoSni));
    assert_every_split(&single(&hello(Some(&[]))), &Ok(SniPeek::NoSni));
    let other_type = hello(Some(&[extension(0, &server_name(&[(7, b"opaque")]))]));
    assert_eq!(peek_sni(&single(&other_type)), Ok(SniPeek::NoSni));
    let both = hello(Some(&[extension(
        0,
        &server_name(&[(7, b"x"), (0, b"a.example")]),
    )]));
    assert_eq!(peek_sni(&single(&both)), found("a.example"));
    for version in [0x0300, 0x0301, 0x0303, 0x0304] {
        let stream = record(22, version, &hello_with_name(b"a.example"));
        assert_eq!(peek_sni(&stream), found("a.example"), "{version:#x}");
    }
    let underscore = single(&hello_with_name(b"_acme-challenge.a1.example"));
    assert_eq!(peek_sni(&underscore), found("_acme-challenge.a1.example"));
}

#[test]
fn record_layer_errors() {
    let h = hello_with_name(b"a.example");
    assert_eq!(peek_sni(&[0x80, 0x2e, 0x01]), Err(SniError::SslV2(0x80)));
    assert_eq!(peek_sni(&[0x16, 0x03]), Ok(SniPeek::NeedMore));
    assert_eq!(
        peek_sni(&record(23, 0x0301, &h)),
        Err(SniError::NotHandshake(23))
    );
    assert_eq!(
        peek_sni(b"GET / HTTP/1.1\r\n"),
        Err(SniError::NotHandshake(b'G'))
    );
    assert_eq!(
        peek_sni(&record(22, 0x0205, &h)),
        Err(SniError::RecordVersion(0x0205))
    );
    assert_eq!(
        peek_sni(&record(22, 0x0305, &h)),
        Err(SniError::RecordVersion(0x0305))
    );
    assert_eq!(peek_sni(&[22, 3, 1, 0, 0]), Err(SniError::RecordLength(0)));
    assert_eq!(
        peek_sni(&[22, 3, 1, 0x40, 0x01]),
        Err(SniError::RecordLength(16385))
    );
    // An alert in the middle of a fragmented ClientHello.
    let mut stream = record(22, 0x0301, &h[..20]);
    stream.extend(record(21, 0x0303, &[2, 40]));
    assert_eq!(peek_sni(&stream), Err(SniError::NotHandshake(21)));
    assert_prefixes_agree(&stream);
    // A handshake message other than ClientHello (ServerHello).
    let mut server_hello = h.clone();
    server_hello[0] = 2;
    assert_eq!(
        peek_sni(&record(22, 0x0303, &server_hello)[..6]),
        Err(SniError::NotClientHello(2))
    );
}

#[test]
fn length_errors_are_named() {
    let h = hello_with_name(b"a.example");
    let wrap = |h: &[u8]| record(22, 0x0301, h);
    // Offsets in `hello`: 4 header, 2 version, 32 random, 1+32 session id, 2+4 suites,
    // 1+1 compression, then 2 extensions length.
    let (sid, suites, compression, exts) = (38, 71, 77, 79);
    let cases: [(usize, u8, SniError); 7] = [
        (4, 2, SniError::HelloVersion(0x0203)),
        (sid, 33, SniError::BadLength("session_id")),
        (suites + 1, 3, SniError::BadLength("cipher_suites")),
        (suites + 1, 0, SniError::BadLength("cipher_suites")),
        (compression, 0, SniError::BadLength("compression_methods")),
        (exts + 1, h[exts + 1] + 1, SniError::BadLength("extensions")),
        (exts + 1, h[exts + 1] - 1, SniError::BadLength("extensions")),
    ];
    for (at, value, expected) in cases {
        let mut bad = h.clone();
        bad[at] = value;
        assert_eq!(peek_sni(&wrap(&bad)), Err(expected.clone()), "byte {at}");
        assert_prefixes_agree(&wrap(&bad));
    }
    // A handshake length beyond the record: more records are due, but the extensions
    // block no longer fills the ClientHello.
    let mut longer = h.clone();
    longer[1..4].copy_from_slice(&u24(h.len() - 4 + 10));
    assert_eq!(
        peek_sni(&wrap(&longer)),
        Err(SniError::BadLength("extensions"))
    );
    let mut no_extensions = hello(None);
    let len = no_extensions.len();
    no_extensions[1..4].copy_from_slice(&u24(len - 4 + 10));
    assert_eq!(peek_sni(&wrap(&no_extensions)), Ok(SniPeek::NeedMore));
    // A handshake length shorter than its fields.
    let mut shorter = h.clone();
    shorter[1..4].copy_from_slice(&u24(50));
    assert_eq!(
        peek_sni(&wrap(&shorter)),
        Err(SniError::BadLength("session_id"))
    );
    // server_name list length disagreeing with the extension length.
    let mut list = server_name(&[(0, b"a.example")]);
    list[1] += 1;
    let bad = hello(Some(&[extension(0, &list)]));
    assert_eq!(
        peek_sni(&wrap(&bad)),
        Err(SniError::BadLength("server_name list"))
    );
    let empty = hello(Some(&[extension(0, &[0, 0])]));
    assert_eq!(
        peek_sni(&wrap(&empty)),
        Err(SniError::BadLength("server_name list"))
    );
    let cut_entry = hello(Some(&[extension(0, &[0, 3, 0, 0, 5])]));
    assert_eq!(
        peek_sni(&wrap(&cut_entry)),
        Err(SniError::BadLength("server_name entry"))
    );
}

#[test]
fn duplicates_are_rejected() {
    let sni = extension(0, &server_name(&[(0, b"a.example")]));
    let twice = hello(Some(&[sni.clone(), sni]));
    assert_eq!(
        peek_sni(&record(22, 0x0301, &twice)),
        Err(SniError::Duplicate("server_name extension"))
    );
    let two_names = hello(Some(&[extension(
        0,
        &server_name(&[(0, b"a.example"), (0, b"b.example")]),
    )]));
    assert_eq!(
        peek_sni(&record(22, 0x0301, &two_names)),
        Err(SniError::Duplicate("host_name"))
    );
}

#[test]
fn host_names_are_validated() {
    let long_label = [b'a'; 64];
    let long_name = [b"a.".repeat(126), b"ab".to_vec()].concat(); // 254 bytes
    let ok_name = [b"a.".repeat(126), b"a".to_vec()].concat(); // 253 bytes
    let cases: [(&[u8], &str); 9] = [
        (b"", "empty"),
        (b"a..example", "empty label"),
        (b"example.", "trailing dot"),
        (&long_label, "label longer than 63 bytes"),
        (&long_name, "longer than 253 bytes"),
        (b"-a.example", "label starts or ends with '-'"),
        (
            b"a b.example",
            "character other than letters, digits, '-' and '_'",
        ),
        (
            "d\u{e9}j\u{e0}.example".as_bytes(),
            "character other than letters, digits, '-' and '_'",
        ),
        (b"192.0.2.1", "IPv4 address literal"),
    ];
    for (name, why) in cases {
        let stream = record(22, 0x0301, &hello_with_name(name));
        assert_eq!(
            peek_sni(&stream),
            Err(SniError::InvalidHostName(why)),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    let stream = record(22, 0x0301, &hello_with_name(&ok_name));
    assert!(matches!(peek_sni(&stream), Ok(SniPeek::Found(_))));
}

#[test]
fn size_is_bounded() {
    let name = extension(0, &server_name(&[(0, b"a.example")]));
    let with_padding = |pad: usize| hello(Some(&[name.clone(), extension(21, &vec![0; pad])]));
    // Largest ClientHello that fits in MAX_CLIENT_HELLO as two records.
    let base = with_padding(0).len();
    let fits = with_padding(MAX_CLIENT_HELLO - 10 - base);
    let stream = fragment(&fits, 8200);
    assert_eq!(stream.len(), MAX_CLIENT_HELLO);
    assert_eq!(peek_sni(&stream), found("a.example"));
    let over = with_padding(MAX_CLIENT_HELLO - 10 - base + 1);
    let stream = fragment(&over, 8200);
    assert_eq!(peek_sni(&stream), Err(SniError::TooLarge));
    // Known from the handshake header alone, before any body byte.
    assert_eq!(peek_sni(&stream[..9]), Err(SniError::TooLarge));
    assert_eq!(
        peek_sni(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(SniError::TooLarge)
    );
    // Tiny records: the record headers count too.
    let tiny = fragment(&with_padding(3000), 1);
    assert_eq!(peek_sni(&tiny), Err(SniError::TooLarge));
    assert!(peek_sni(&tiny[..MAX_CLIENT_HELLO]).is_err());
}

// ---- Router --------------------------------------------------------------------------

#[test]
fn router_prefers_exact_names_and_matches_one_label() {
    let mut r = SniRouter::new();
    assert_eq!(r.insert("*.acme.example", "wild"), Ok(None));
    assert_eq!(r.insert("DB.acme.example", "db"), Ok(None));
    assert_eq!(r.insert("acme.example", "apex"), Ok(None));
    assert_eq!(r.len(), 3);
    assert_eq!(r.route("db.acme.example"), Some(&"db"));
    assert_eq!(r.route("Db.ACME.example"), Some(&"db"));
    assert_eq!(r.route("web.acme.example"), Some(&"wild"));
    assert_eq!(r.route("WEB.Acme.Example"), Some(&"wild"));
    assert_eq!(r.route("acme.example"), Some(&"apex"));
    assert_eq!(r.route("a.b.acme.example"), None);
    assert_eq!(r.route(".acme.example"), None);
    assert_eq!(r.route("other.example"), None);
    assert_eq!(r.route(&"a".repeat(300)), None);
    assert_eq!(r.insert("*.ACME.example", "wild2"), Ok(Some("wild")));
    for bad in [
        "",
        "*",
        "*.",
        "a.*.example",
        "**.example",
        "a..b",
        "1.2.3.4",
    ] {
        assert!(r.insert(bad, "x").is_err(), "{bad}");
    }
}

// ---- Properties ----------------------------------------------------------------------

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,10}[a-zA-Z0-9_])?"
}

fn host_name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5)
        .prop_map(|labels| labels.join("."))
        .prop_filter("not an IPv4 literal", |n| {
            n.parse::<std::net::Ipv4Addr>().is_err()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_and_prefixes_agree(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        assert_prefixes_agree(&bytes);
    }

    #[test]
    fn random_after_a_record_header_prefixes_agree(
        len in 1usize..400,
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut stream = vec![22, 3, 1, (len >> 8) as u8, len as u8, 1];
        stream.extend(bytes);
        assert_prefixes_agree(&stream);
    }

    #[test]
    fn corrupted_real_hellos_prefixes_agree(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        size in 1usize..600,
    ) {
        let mut handshake = handshake_of(db_hello()).to_vec();
        for (at, value) in flips {
            let at = at.index(handshake.len());
            handshake[at] = value;
        }
        assert_prefixes_agree(&fragment(&handshake, size));
    }

    #[test]
    fn built_hellos_give_their_name(
        name in host_name(),
        before in prop::collection::vec((1u16..100, prop::collection::vec(any::<u8>(), 0..40)), 0..5),
        after in prop::collection::vec((1u16..100, prop::collection::vec(any::<u8>(), 0..40)), 0..5),
        size in 1usize..400,
        cut in any::<prop::sample::Index>(),
    ) {
        let ext = |(kind, data): &(u16, Vec<u8>)| extension(*kind, data);
        let mut extensions: Vec<Vec<u8>> = before.iter().map(ext).collect();
        extensions.push(extension(0, &server_name(&[(0, name.as_bytes())])));
        extensions.extend(after.iter().map(ext));
        let stream = fragment(&hello(Some(&extensions)), size);
        prop_assert_eq!(peek_sni(&stream), found(&name));
        let cut = cut.index(stream.len());
        prop_assert_eq!(peek_sni(&stream[..cut]), Ok(SniPeek::NeedMore));
    }
}
