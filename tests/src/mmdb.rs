//! A MaxMind-format country database written from a list of IPv4 networks and their
//! country codes, for tests and benchmarks of `conn.geo.country_code` (the format:
//! <https://maxmind.github.io/MaxMind-DB/>; an IPv4 tree, 24-bit records, one data
//! record `{country: {iso_code}}` per country). A more specific network inserted
//! after a less specific one wins for its addresses.

use std::net::Ipv4Addr;

/// One record of the search tree.
#[derive(Clone)]
enum Rec {
    Empty,
    Data(u32),
    Node(Box<[Rec; 2]>),
}

/// The bytes of a database mapping each `(network, prefix length)` to its country.
pub fn country_database(networks: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets: Vec<(String, u32)> = Vec::new();
    let mut root = Rec::Node(Box::new([Rec::Empty, Rec::Empty]));
    for &(net, len, code) in networks {
        assert!((1..=32).contains(&len), "prefix length {len}");
        let offset = match offsets.iter().find(|(c, _)| c == code) {
            Some((_, o)) => *o,
            None => {
                let o = data.len() as u32;
                map(&mut data, 1);
                string(&mut data, "country");
                map(&mut data, 1);
                string(&mut data, "iso_code");
                string(&mut data, code);
                offsets.push((code.to_owned(), o));
                o
            }
        };
        insert(&mut root, u32::from(net), 0, len, offset);
    }
    // Number the nodes breadth first, the root first.
    let mut nodes: Vec<&[Rec; 2]> = Vec::new();
    let mut queue = std::collections::VecDeque::from([&root]);
    while let Some(rec) = queue.pop_front() {
        if let Rec::Node(children) = rec {
            nodes.push(children);
            queue.extend(children.iter());
        }
    }
    let node_count = nodes.len() as u32;
    let mut next_node = 1u32;
    let mut out = Vec::new();
    for children in &nodes {
        for child in children.iter() {
            let value = match child {
                Rec::Empty => node_count,
                Rec::Data(offset) => node_count + 16 + offset,
                Rec::Node(_) => {
                    next_node += 1;
                    next_node - 1
                }
            };
            out.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    extended(&mut out, 9, &1_700_000_000u64.to_be_bytes()[4..]);
    string(&mut out, "database_type");
    string(&mut out, "sluice-test-Country");
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "sluice test countries");
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "languages");
    out.extend_from_slice(&[1, 11 - 7]);
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, node_count);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    out
}

fn insert(rec: &mut Rec, bits: u32, depth: u8, len: u8, data: u32) {
    if depth == len {
        *rec = Rec::Data(data);
        return;
    }
    if !matches!(rec, Rec::Node(_)) {
        let old = std::mem::replace(rec, Rec::Empty);
        *rec = Rec::Node(Box::new([old.clone(), old]));
    }
    let Rec::Node(children) = rec else {
        unreachable!("just made a node")
    };
    let bit = (bits >> (31 - depth)) & 1;
    insert(&mut children[bit as usize], bits, depth + 1, len, data);
}

fn map(out: &mut Vec<u8>, entries: u8) {
    assert!(entries < 29);
    out.push(7 << 5 | entries);
}

fn string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 29);
    out.push(2 << 5 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// A `uint16` (type 5) or `uint32` (type 6) in as few bytes as it needs.
fn uint(out: &mut Vec<u8>, kind: u8, value: u32) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(kind << 5 | (4 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// An extended type (`uint64` is 9) with its value's bytes.
fn extended(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(bytes.len() as u8);
    out.push(kind - 7);
    out.extend_from_slice(bytes);
}

/// The database the tests of `tests/ngrok/` use: 127.0.0.1 in the US, 127.0.0.2 in
/// CN, 127.0.0.3 in DE.
pub fn ngrok_test_countries() -> Vec<u8> {
    country_database(&[
        (Ipv4Addr::new(127, 0, 0, 1), 32, "US"),
        (Ipv4Addr::new(127, 0, 0, 2), 32, "CN"),
        (Ipv4Addr::new(127, 0, 0, 3), 32, "DE"),
    ])
}
