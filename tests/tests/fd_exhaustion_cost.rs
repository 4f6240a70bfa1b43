//! End-to-end, on both drivers: what running out of file descriptors costs the edge.
//! Its soft open-files limit is lowered from outside (prlimit) to just above what it
//! holds, then clients connect until accept fails with EMFILE. Measured while exhausted:
//! the held connections keep echoing, the edge's CPU time over a window (it must not
//! spin on the failing accept) and its log lines (once per interval); then how soon
//! connections are served again after held clients leave: the one that waited in the
//! backlog, or, when the edge had accepted it but found no data channel within 5 s and
//! reset it, a new one.
//! `fd_exhaustion.rs` checks the same path on one driver.
//!
//! prlimit(2) on a child of the same user needs no privilege (lowering the soft limit
//! below the hard one); where it is refused anyway the test fails, naming the reason.

mod common;

use std::{
    io::Read,
    time::{Duration, Instant},
};

use common::Tunnel;
use sluice_tests::{
    client,
    faults::{self, set_soft_nofile},
    DRIVERS,
};

/// Descriptors left to the edge above what it holds when the limit is lowered.
const HEADROOM: u64 = 12;
/// The edge's (rate-limited) log line for a failing accept.
const ACCEPT_FAILED: &str = "accept failed; retrying every 50 ms";
/// How long the exhausted edge is watched.
const WINDOW: Duration = Duration::from_secs(2);

#[test]
fn out_of_descriptors_the_edge_idles_logs_once_and_serves_the_backlog_when_fds_free() {
    for driver in DRIVERS {
        let mut t = Tunnel::start(driver, "tcp");
        client::echo_ok(None, t.public, b"warm").unwrap();
        let pid = t.edge.pid();
        let held_fds = faults::fd_count(pid) as u64;
        let old_soft = set_soft_nofile(pid, held_fds + HEADROOM);
        let accept_failures_before = t.edge.count(|v| v["message"] == ACCEPT_FAILED);

        // Fill the edge: each tunneled connection costs it a client socket and a data
        // channel (and the agent's replacement channel), so a few are enough.
        let mut held = Vec::new();
        let stuck = loop {
            assert!(
                held.len() < 2 * HEADROOM as usize,
                "{driver}: {} connections served under a limit of {} descriptors",
                held.len(),
                held_fds + HEADROOM
            );
            let mut s = client::connect_from(None, t.public).unwrap();
            if client::echoes(&mut s, b"fill", Duration::from_secs(2)) {
                held.push(s);
            } else {
                break s;
            }
        };
        assert!(
            !held.is_empty(),
            "{driver}: nothing served before exhaustion"
        );
        let exhausted = t
            .edge
            .wait_for_n("EMFILE", accept_failures_before + 1, |v| {
                v["message"] == ACCEPT_FAILED
            });
        assert!(
            exhausted["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Too many open files"),
            "{exhausted}"
        );

        // Exhausted: the held connections still work, and the edge idles.
        let logs0 = t.edge.count(|v| v["message"] == ACCEPT_FAILED);
        let faults::HeldEchoes {
            cpu,
            window,
            rounds,
        } = faults::echo_held(
            pid,
            &mut held,
            WINDOW,
            &format!("{driver}, the edge out of descriptors"),
        );
        let logged = t.edge.count(|v| v["message"] == ACCEPT_FAILED) - logs0;
        assert!(
            cpu < window / 4,
            "{driver}: the exhausted edge used {cpu:?} of CPU in {window:?}: spinning"
        );
        // One line per interval (5 s), however often accept fails.
        assert!(
            logged <= 1,
            "{driver}: {logged} 'accept failed' lines in {window:?}: the log is flooded"
        );

        // Descriptors free up: the waiting connection is served, new ones work.
        let freed = held.len() / 2 + 1;
        held.truncate(held.len() - freed.min(held.len()));
        let mut stuck = stuck;
        let recovered = Instant::now();
        let mut buf = [0u8; 4];
        stuck
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        // A connection the edge did accept but found no data channel for (the agent's
        // replacement channels could not be accepted either) is reset after the edge's
        // 5 s channel wait; one still in the backlog is served once descriptors free.
        let waiting = match stuck.read_exact(&mut buf) {
            Ok(()) => {
                assert_eq!(&buf, b"fill");
                "the waiting connection served"
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ),
                    "{driver}: the waiting connection neither served nor closed: {e}"
                );
                "the waiting connection had been reset (no data channel within 5 s); a new one served"
            }
        };
        client::wait_until_echo(t.public, Duration::from_secs(15)).unwrap();
        let waited = recovered.elapsed();
        set_soft_nofile(pid, old_soft);
        client::wait_until_echo(t.public, Duration::from_secs(15)).unwrap();
        client::echo_ok(None, t.public, &sluice_tests::client::payload(7, 100_000)).unwrap();
        println!(
            "fd_exhaustion/{driver}: limit {} ({held_fds} held at the time): {} connections \
             served, then EMFILE; over {:.1} s exhausted: {} echo rounds on the held ones, \
             edge CPU {} ms, {logged} 'accept failed' lines; {waiting} {:.0} ms after \
             {freed} clients left",
            held_fds + HEADROOM,
            held.len() + freed,
            window.as_secs_f64(),
            rounds,
            cpu.as_millis(),
            waited.as_secs_f64() * 1e3
        );
    }
}
