//! End-to-end: an edge that runs out of file descriptors (its open-files limit lowered
//! from outside with prlimit(2)) keeps serving the connections it has, does not spin on
//! the failing accept (it logs once per interval), and serves the waiting client by
//! itself once descriptors are free again. (A client it accepted while no pipe could be
//! made for the splice is served through a copy: see `io::splice`.)

use std::time::{Duration, Instant};

use sluice_tests::{
    client, faults,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
};

const URL: &str = "tcp://db.internal:5432";

#[test]
fn out_of_descriptors_the_edge_keeps_serving_and_recovers() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, "uring");
    let (agent_addr, eps) = edge.edge_addrs(1);
    let upstream = Echo::start();
    let mut agent = Sluice::agent(
        &fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)]),
        ),
        "uring",
    );
    agent.wait_for("endpoint bound");
    client::wait_until_echo(eps[0], Duration::from_secs(10)).unwrap();

    // Room for a handful of connections (each holds a client socket and a data channel
    // at the edge, plus replacement channels the agent opens).
    faults::set_soft_nofile(edge.pid(), faults::fd_count(edge.pid()) as u64 + 12);
    let mut served = Vec::new();
    let mut stuck = None;
    for _ in 0..40 {
        let mut s = client::connect_from(None, eps[0]).unwrap();
        if client::echoes(&mut s, b"ping\n", Duration::from_secs(2)) {
            served.push(s);
        } else {
            stuck = Some(s);
            break;
        }
    }
    let mut stuck = stuck.expect("the edge never ran out of descriptors");
    assert!(
        served.len() >= 2,
        "only {} connections served",
        served.len()
    );
    edge.wait_for_n("accept failure logged", 1, |v| {
        v["message"] == "accept failed; retrying every 50 ms"
    });
    // Established connections keep flowing while accept fails.
    for s in &mut served {
        assert!(client::echoes(s, b"ping\n", Duration::from_secs(5)));
    }
    // No spinning log: a 50 ms retry loop would log ~20 times a second per worker.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        assert!(client::echoes(
            &mut served[0],
            b"ping\n",
            Duration::from_secs(5)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged = edge.count(|v| v["message"] == "accept failed; retrying every 50 ms");
    assert!(
        logged <= 2 * 3,
        "{logged} accept-failure lines: the loop is not rate limited"
    );
    assert!(edge.is_running());

    // Free descriptors: the waiting client is served without any other action.
    served.clear();
    assert!(
        client::echoes(&mut stuck, b"ping\n", Duration::from_secs(10)),
        "the waiting client was not served after recovery; edge log:\n{}",
        edge.log_text()
    );
    client::echo_ok(None, eps[0], b"after recovery").unwrap();
}
