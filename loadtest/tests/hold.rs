//! `hold` reaching a few thousand connections against `serve`, and losing them
//! visibly when the server goes away.
mod common;

use std::time::Duration;

use common::{drivers, short, start};
use sluice_loadtest::{
    hold::{self, HoldOptions},
    ServeMode,
};

#[test]
fn holds_three_thousand_connections() {
    let d = *drivers().last().unwrap();
    let server = start(ServeMode::Echo, 2, d);
    let client = short(server.local_addr(), 1500)
        .threads(2)
        .driver(d)
        .timeout(Duration::from_secs(2));
    let o = HoldOptions::new(client)
        .connections(3000)
        .interval(Duration::from_millis(500));
    let r = hold::run(&o).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert_eq!(r.conns.opened, 3000);
    assert_eq!(r.conns.held, 3000);
    assert_eq!(r.conns.peak_open, 3000);
    // Keep-alive echoes flowed on the held connections (at least one per connection;
    // how many more fit in 1.5 s depends on how busy the machine is).
    assert!(r.ops >= 3000, "{} keep-alive echoes", r.ops);
    server.stop().unwrap();
}

#[test]
fn connections_lost_to_the_server_are_counted() {
    let server = common::TestServer::start(|mut c| {
        // Answer one keep-alive echo, then close.
        let req = common::read_n(&mut c, 16);
        let _ = std::io::Write::write_all(&mut c, &req);
    });
    let o = HoldOptions::new(short(server.addr, 700))
        .connections(20)
        .interval(Duration::from_millis(200));
    let r = hold::run(&o).unwrap();
    assert_eq!(r.conns.opened, 20);
    assert_eq!(r.conns.held, 0);
    assert_eq!(r.conns.dropped, 20);
    assert_eq!(r.errors.total(), 20, "{:?}", r.errors);
}
