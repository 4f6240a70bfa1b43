use super::*;
use proptest::prelude::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn v1(src: &str, dst: &str) -> String {
    let mut out = BytesMut::new();
    encode_v1(sa(src), sa(dst), &mut out);
    String::from_utf8(out.to_vec()).expect("ASCII")
}

fn v2(src: &str, dst: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_v2(sa(src), sa(dst), &mut out);
    out.to_vec()
}

fn tcp(version: Version, src: &str, dst: &str) -> ProxyHeader {
    ProxyHeader::Tcp {
        version,
        src: sa(src),
        dst: sa(dst),
    }
}

/// Every proper prefix is incomplete, the whole decodes to `expected`, and bytes
/// after the header are left alone.
fn assert_every_split(header: &[u8], expected: ProxyHeader) {
    for cut in 0..header.len() {
        assert_eq!(decode(&header[..cut]), Ok(None), "prefix {cut}");
    }
    let with_payload = [header, b"GET / HTTP/1.1\r\n"].concat();
    for input in [header, &with_payload] {
        assert_eq!(decode(input), Ok(Some((expected, header.len()))));
    }
}

#[test]
fn v1_encodings_match_the_spec() {
    let cases = [
        (
            "192.168.0.1:56324",
            "192.168.0.11:443",
            "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ),
        (
            "255.255.255.255:65535",
            "255.255.255.255:65535",
            "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ),
        (
            "[2001:db8::1]:1234",
            "[2001:db8:0:0:1::2]:0",
            "PROXY TCP6 2001:db8::1 2001:db8::1:0:0:2 1234 0\r\n",
        ),
        ("[::]:1", "[::1]:2", "PROXY TCP6 :: ::1 1 2\r\n"),
        // Mixed families: the IPv4 side goes IPv4-mapped, in hexadecimal.
        (
            "192.0.2.1:1234",
            "[2001:db8::1]:443",
            "PROXY TCP6 ::ffff:c000:201 2001:db8::1 1234 443\r\n",
        ),
        // IPv4-mapped on both sides (a dual-stack listener) is plain IPv4.
        (
            "[::ffff:192.0.2.1]:1234",
            "[::ffff:192.0.2.2]:443",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n",
        ),
    ];
    for (src, dst, line) in cases {
        assert_eq!(v1(src, dst), line);
    }
    let longest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
    assert_eq!(v1(longest, longest).len(), 104);
    assert_eq!(
        v1("255.255.255.255:65535", "255.255.255.255:65535").len(),
        56
    );
}

#[test]
fn v2_encodings_are_byte_exact() {
    // haproxy's send-proxy-v2 for 172.19.0.1:42578 -> 172.19.0.3:80.
    let expected = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
        0x0c, 0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50,
    ];
    assert_eq!(v2("172.19.0.1:42578", "172.19.0.3:80"), expected);
    let six = v2("[2001:db8::1]:1", "[::ffff:10.0.0.1]:2");
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend([0x21, 0x21, 0, 36]);
    expected.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
    expected.extend([0, 1, 0, 2]);
    assert_eq!(six, expected);
}

#[test]
fn round_trips_at_every_split_offset() {
    for (src, dst, expected_src, expected_dst) in [
        (
            "10.1.2.3:5000",
            "10.9.8.7:443",
            "10.1.2.3:5000",
            "10.9.8.7:443",
        ),
        (
            "[fe80::1]:5000",
            "[2001:db8::2]:443",
            "[fe80::1]:5000",
            "[2001:db8::2]:443",
        ),
        (
            "10.1.2.3:5000",
            "[2001:db8::2]:443",
            "10.1.2.3:5000",
            "[2001:db8::2]:443",
        ),
        (
            "[::ffff:10.1.2.3]:1",
            "10.0.0.1:2",
            "10.1.2.3:1",
            "10.0.0.1:2",
        ),
    ] {
        let line = v1(src, dst);
        let expected = tcp(Version::V1, expected_src, expected_dst);
        assert_every_split(line.as_bytes(), expected);
        let expected = tcp(Version::V2, expected_src, expected_dst);
        assert_every_split(&v2(src, dst), expected);
    }
}

#[test]
fn unknown_and_local() {
    let unknown_v1 = ProxyHeader::Unknown {
        version: Version::V1,
    };
    assert_every_split(b"PROXY UNKNOWN\r\n", unknown_v1);
    let worst = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        ["ffff"; 8].join(":")
    );
    assert_eq!(worst.len(), V1_MAX_LEN);
    assert_every_split(worst.as_bytes(), unknown_v1);

    let mut local = V2_SIGNATURE.to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    assert_every_split(&local, ProxyHeader::Local);
    // LOCAL with an address block: skipped whatever the family says.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend([0x20, 0x11, 0, 3, 1, 2, 3]);
    assert_every_split(&local, ProxyHeader::Local);
    let unknown_v2 = ProxyHeader::Unknown {
        version: Version::V2,
    };
    for family in [0x00, 0x12, 0x22, 0x31, 0x32] {
        let mut block = V2_SIGNATURE.to_vec();
        block.extend([0x21, family, 0, 216]);
        block.extend([0; 216]);
        assert_eq!(decode(&block), Ok(Some((unknown_v2, 232))), "{family:#x}");
    }
    // TLVs after the addresses are skipped.
    let mut tlvs = v2("1.2.3.4:5", "6.7.8.9:10");
    tlvs[15] += 7;
    tlvs.extend([0x04, 0, 4, 0, 0, 0, 0]);
    assert_every_split(&tlvs, tcp(Version::V2, "1.2.3.4:5", "6.7.8.9:10"));
}

#[test]
fn malformed_v1_lines_are_rejected() {
    let malformed = |line: &str, why: &'static str| {
        assert_eq!(
            decode(line.as_bytes()),
            Err(ProxyError::V1Malformed(match why {
                "fields" => "not five fields separated by single spaces",
                "v4" => "TCP4 address is not a dotted quad",
                "v6" => "TCP6 address is not hexadecimal IPv6",
                "port" => "port is not 0..=65535 without leading zeroes",
                "proto" => "protocol is not TCP4, TCP6 or UNKNOWN",
                "lf" => "line ends with LF instead of CRLF",
                "cr" => "CR inside the line",
                other => other,
            })),
            "{line:?}"
        );
    };
    malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lf");
    malformed("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "cr");
    malformed("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "fields");
    malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fields");
    malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "fields");
    malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "fields");
    malformed("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "v4");
    malformed("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v4");
    malformed("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "v4");
    malformed("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v6");
    malformed("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n", "v6");
    malformed("PROXY TCP6 ::1 ::1 1 65536\r\n", "port");
    malformed("PROXY TCP6 ::1 ::1 01 2\r\n", "port");
    malformed("PROXY TCP6 ::1 ::1 +1 2\r\n", "port");
    malformed("PROXY TCP6 ::1 ::1 1 \r\n", "port");
    malformed("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "proto");
    malformed("PROXY UNKNOWNX 1.2.3.4 5.6.7.8 1 2\r\n", "proto");
    malformed("PROXY \r\n", "fields");
    assert_eq!(
        decode(b"PROXY TCP4 \xff 1 2 3\r\n"),
        Err(ProxyError::V1Malformed("not US-ASCII"))
    );
    assert_eq!(
        decode(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n").map(|h| h.map(|h| h.1)),
        Ok(Some(32))
    );
    let long = format!("PROXY UNKNOWN {}", "x".repeat(100));
    assert_eq!(decode(&long.as_bytes()[..106]), Ok(None));
    assert_eq!(decode(long.as_bytes()), Err(ProxyError::V1TooLong));
    assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
    assert_eq!(decode(b"PROXx"), Err(ProxyError::NotProxy));
    assert_eq!(decode(b"PROX"), Ok(None));
    assert_eq!(decode(b""), Ok(None));
}

#[test]
fn malformed_v2_blocks_are_rejected() {
    let good = v2("1.2.3.4:5", "6.7.8.9:10");
    let with = |at: usize, value: u8| {
        let mut bad = good.clone();
        bad[at] = value;
        decode(&bad)
    };
    assert_eq!(with(12, 0x11), Err(ProxyError::V2Command(0x11)));
    assert_eq!(with(12, 0x22), Err(ProxyError::V2Command(0x22)));
    assert_eq!(decode(&good[..13]), Ok(None));
    assert_eq!(
        decode(&[&V2_SIGNATURE[..], &[0x31]].concat()),
        Err(ProxyError::V2Command(0x31))
    );
    assert_eq!(with(13, 0x13), Err(ProxyError::V2Family(0x13)));
    assert_eq!(with(13, 0x41), Err(ProxyError::V2Family(0x41)));
    assert_eq!(
        with(15, 11),
        Err(ProxyError::V2Length {
            family: 0x11,
            len: 11
        })
    );
    assert_eq!(
        with(13, 0x21),
        Err(ProxyError::V2Length {
            family: 0x21,
            len: 12
        })
    );
    let mut huge = good.clone();
    huge[14..16].copy_from_slice(&(V2_MAX_LEN as u16 + 1).to_be_bytes());
    assert_eq!(
        decode(&huge),
        Err(ProxyError::V2Length {
            family: 0x11,
            len: V2_MAX_LEN + 1
        })
    );
    assert_eq!(with(11, b'X'), Err(ProxyError::NotProxy));
    assert_eq!(decode(b"\r\n\r\n\0\r\nQUIT"), Ok(None));
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(mut g, port)| {
            // Runs of zeroes, for the "::" compression.
            for x in g.iter_mut() {
                if *x % 3 != 0 {
                    *x = 0;
                }
            }
            SocketAddr::from((g, port))
        }),
    ]
}

proptest! {
    #[test]
    fn random_addresses_round_trip(src in any_addr(), dst in any_addr(), v in any::<bool>()) {
        let version = if v { Version::V1 } else { Version::V2 };
        let mut out = BytesMut::new();
        encode(version, src, dst, &mut out);
        let header = ProxyHeader::Tcp {
            version,
            src: canonical(src),
            dst: canonical(dst),
        };
        prop_assert_eq!(decode(&out), Ok(Some((header, out.len()))));
        prop_assert!(out.len() <= V1_MAX_LEN);
    }

    #[test]
    fn hex6_matches_display_outside_mapped(groups in any::<[u16; 8]>(), zeros in any::<u8>()) {
        let mut g = groups;
        for (i, x) in g.iter_mut().enumerate() {
            if zeros & (1 << i) != 0 {
                *x = 0;
            }
        }
        let ip = Ipv6Addr::from(g);
        prop_assume!(ip.to_ipv4_mapped().is_none());
        prop_assert_eq!(Hex6(ip).to_string(), ip.to_string());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), sig in any::<bool>()) {
        let input = if sig { [&V2_SIGNATURE[..], &bytes].concat() } else { [b"PROXY ".as_slice(), &bytes].concat() };
        let whole = decode(&input);
        for cut in 0..input.len() {
            let part = decode(&input[..cut]);
            prop_assert!(part == Ok(None) || part == whole, "prefix {}: {:?} vs {:?}", cut, part, whole);
        }
    }
}
