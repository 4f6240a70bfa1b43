//! End-to-end: the edge dies under load (`kill -9`, or SIGTERM) and a new one starts on
//! the same ports. The agent heals with no manual step; measured: the time from the
//! new edge's listeners being up to the first byte forwarded through the tunnel again,
//! and what clients saw meanwhile. Once healed, every connection works.

mod common;

use std::time::{Duration, Instant};

use common::Tunnel;
use sluice_tests::{load::Load, DRIVERS};

/// Hang guard only: the agent's redial backoff (agent/control.rs) doubles from 0.5 s
/// up to 30 s, so a redial comes within 30 s (+25% jitter) whatever happened before.
/// What the test asserts is how many redials it took (see below), not how long.
const HANG_GUARD: Duration = Duration::from_secs(40);
/// The agent's failed session attempt, logged before each backoff.
const REDIAL_FAILED: &str = "cannot establish a session with the edge";

#[test]
fn after_the_edge_is_killed_or_stopped_and_restarted_the_agent_heals_within_seconds() {
    for driver in DRIVERS {
        for kill in [true, false] {
            let how = if kill { "kill -9" } else { "SIGTERM" };
            let mut t = Tunnel::start(driver, "tcp");
            // Continuous load: one client after another, counting outcomes.
            let load = Load::start(t.public, 1);
            load.wait_for_more(20, &format!("{driver}: load before the restart"));
            assert_eq!(load.failed(), 0, "{driver}: failures before the restart");
            let down = Instant::now();
            if kill {
                t.edge.kill();
            } else {
                t.edge.terminate();
                assert_eq!(t.edge.wait_exit(), Some(0), "{driver}: drained exit");
            }
            t.agent
                .wait_for("session with the edge ended; reconnecting");
            let edge = t.restart_edge_on_same_ports(driver);
            let back = Instant::now();
            let failed_dials_at_back = t.agent.count(|v| v["message"] == REDIAL_FAILED);
            let ok_at_back = load.ok();
            while load.ok() == ok_at_back {
                assert!(
                    back.elapsed() < HANG_GUARD,
                    "{driver}/{how}: nothing forwarded {HANG_GUARD:?} after the edge was back"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let first_byte = back.elapsed();
            // Healing takes the agent's next redial once the edge listens, whatever the
            // machine's speed: at most one more failed dial is logged after the test
            // saw the new edge listening (one made just before it listened).
            let failed_dials = t.agent.count(|v| v["message"] == REDIAL_FAILED);
            assert!(
                failed_dials <= failed_dials_at_back + 1,
                "{driver}/{how}: {} redials failed after the new edge listened",
                failed_dials - failed_dials_at_back
            );
            let outage = down.elapsed();
            // Healed: from here on nothing fails.
            let healed = Instant::now();
            let failed_healed = load.failed();
            load.wait_for_more(100, &format!("{driver}/{how}: load after healing"));
            let (_, failures) = load.finish();
            let late: Vec<_> = failures.iter().filter(|(t, _)| *t >= healed).collect();
            assert!(
                late.is_empty(),
                "{driver}/{how}: connections failed after the tunnel healed: {late:?}"
            );
            println!(
                "edge_restart/{driver}/{how}: first forwarded byte {:.0} ms after the new \
                 edge listened; clients saw {:.0} ms of outage from the {how} (refused, \
                 {failed_healed} attempts at a 5 ms pace), then no failure; {failed_dials} \
                 redials failed in all",
                first_byte.as_secs_f64() * 1e3,
                outage.as_secs_f64() * 1e3,
            );
            t.edge = edge;
        }
    }
}
