//! `sluice-load http` against the library's own `serve --mode http` on both drivers,
//! kept alive and a connection per request, and against small servers that answer
//! otherwise: statuses counted as `http_status`, chunked and close-delimited bodies,
//! a server that closes kept connections.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use common::{drivers, short, start, TestServer};
use sluice_loadtest::{
    http::{self, HttpOptions},
    ErrorClass, ServeMode,
};

#[test]
fn kept_alive_and_a_connection_per_request_against_serve() {
    for d in drivers() {
        let server = start(ServeMode::Http, 1, d);
        let kept = HttpOptions::new(short(server.local_addr(), 300).driver(d)).connections(4);
        let r = http::run(&kept).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 10, "{d:?}: only {} requests", r.ops);
        assert_eq!(r.latency.len(), r.ops);
        assert_eq!(r.conns.opened, 4, "{d:?}: kept alive, four connections");

        let each = HttpOptions::new(short(server.local_addr(), 300).driver(d))
            .connections(4)
            .method("POST")
            .body(1000)
            .new_connection(true);
        let r = http::run(&each).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 4, "{d:?}: only {} requests", r.ops);
        assert!(
            r.conns.opened >= r.ops,
            "{d:?}: {} connections for {} requests",
            r.conns.opened,
            r.ops
        );
        server.stop().unwrap();
    }
}

/// Reads one request head (and no body: these tests send none) from a blocking socket.
fn read_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[test]
fn statuses_and_body_framings_of_other_servers() {
    // 404s in chunks, kept alive: every response is a request and an `http_status`.
    let chunked = TestServer::start(|mut s| {
        while read_head(&mut s) {
            let answer = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                           5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            if s.write_all(answer).is_err() {
                return;
            }
        }
    });
    let r = http::run(&HttpOptions::new(short(chunked.addr, 300)).connections(2)).unwrap();
    assert!(r.ops > 4, "only {} requests", r.ops);
    assert_eq!(r.errors.get(ErrorClass::HttpStatus), r.errors.total());
    // Errors are counted in the measured window only; each response was one.
    assert!(
        r.errors.get(ErrorClass::HttpStatus) >= r.ops - 2,
        "{} statuses for {} requests",
        r.errors.get(ErrorClass::HttpStatus),
        r.ops
    );
    assert_eq!(r.conns.opened, 2, "chunked bodies keep the connection");

    // An interim 103 first, then the answer in chunks with trailers: one request each,
    // and the connection kept.
    let interim = TestServer::start(|mut s| {
        while read_head(&mut s) {
            let answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
                           HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                           3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
            if s.write_all(answer).is_err() {
                return;
            }
        }
    });
    let r = http::run(&HttpOptions::new(short(interim.addr, 300))).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 4, "only {} requests", r.ops);
    assert_eq!(
        r.conns.opened, 1,
        "interim answers and trailers keep the connection"
    );

    // No length: the body runs to the close, and each request takes a new connection.
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let until_close = TestServer::start(move |mut s| {
        count.fetch_add(1, Ordering::SeqCst);
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of this is the body");
        }
    });
    let r = http::run(&HttpOptions::new(short(until_close.addr, 300))).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 5, "only {} requests", r.ops);
    assert!(accepted.load(Ordering::SeqCst) as u64 >= r.ops);

    // Garbage instead of a status line: counted as `other`, not as a request.
    let garbage = TestServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
    });
    let r = http::run(&HttpOptions::new(short(garbage.addr, 200))).unwrap();
    assert_eq!(r.ops, 0);
    assert!(r.errors.get(ErrorClass::Other) > 0, "{:?}", r.samples);
    assert!(
        r.samples.iter().any(|s| s.contains("malformed")),
        "{:?}",
        r.samples
    );
}

#[test]
fn head_requests_against_serve_keep_their_connection() {
    let server = start(ServeMode::Http, 1, drivers()[0]);
    let o = HttpOptions::new(short(server.local_addr(), 300))
        .connections(2)
        .method("HEAD");
    let r = http::run(&o).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 10, "only {} requests", r.ops);
    assert_eq!(r.conns.opened, 2);
    server.stop().unwrap();
}

#[test]
fn bad_request_options_are_refused() {
    let server = start(ServeMode::Http, 1, drivers()[0]);
    for o in [
        HttpOptions::new(short(server.local_addr(), 100)).path("no-slash"),
        HttpOptions::new(short(server.local_addr(), 100)).path("/a b"),
        HttpOptions::new(short(server.local_addr(), 100)).method(""),
        HttpOptions::new(short(server.local_addr(), 100)).host("a\r\nX-Injected: 1"),
    ] {
        let err = http::run(&o).unwrap_err().to_string();
        assert!(err.contains("--"), "{err}");
    }
    server.stop().unwrap();
}
