//! End-to-end: the edge and the agent raise their open-files limit at start. Each is
//! started through `prlimit` with a soft limit of 256 under a hard limit of 8192; the
//! limits in force are read back from `/proc/<pid>/limits`.

use std::path::Path;

use sluice_tests::{
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const SOFT: u64 = 256;
const HARD: u64 = 8192;

/// Soft and hard "Max open files" of a process.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in:\n{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].parse().unwrap(), fields[4].parse().unwrap())
}

/// Starts `sluice <role> --config <cfg>` under `prlimit --nofile=SOFT:HARD` (which
/// sets the limits and execs sluice, keeping the PID).
fn start_limited(role: &str, cfg: &Path) -> Sluice {
    let prefix = ["prlimit".to_string(), format!("--nofile={SOFT}:{HARD}")];
    Sluice::start_prefixed(
        role,
        &prefix,
        &[role, "--config", cfg.to_str().unwrap()],
        DRIVERS[0],
    )
}

/// What the process should have raised its soft limit to: the hard limit, or past it
/// up to `fs.nr_open` (at most 2^20) when it may raise its hard limit too.
fn assert_raised(p: &mut Sluice) {
    let logged = p.wait_for_n("the limit log", 1, |v| {
        v["message"] == "file descriptor limit"
    });
    let (soft, hard) = nofile(p.pid());
    let role = p.role.clone();
    assert!(
        soft > SOFT,
        "{role}: soft limit {soft} not raised from {SOFT}"
    );
    assert_eq!(soft, hard, "{role}: soft limit below the hard one");
    assert_eq!(logged["open_files"], soft, "{role}: logged {logged}");
    if hard != HARD {
        // Only a process allowed to raise its hard limit gets past it, and then to
        // the ceiling.
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(hard, nr_open.min(1 << 20), "{role}: hard limit {hard}");
    }
    eprintln!("{role}: open files {soft}/{hard} (started with {SOFT}/{HARD})");
}

#[test]
fn edge_and_agent_raise_a_low_soft_open_files_limit_at_start() {
    // The prefix works as intended: a plain child of prlimit keeps what it was given.
    let out = std::process::Command::new("prlimit")
        .arg(format!("--nofile={SOFT}:{HARD}"))
        .args(["sh", "-c", "ulimit -Sn; ulimit -Hn"])
        .output()
        .expect("run prlimit");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{SOFT}\n{HARD}\n"),
        "prlimit did not set the limits"
    );

    let fx = Fixture::new();
    let echo = Echo::start();
    let url = "tcp://echo.internal:7";
    let edge_cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(url))]),
    );
    let mut edge = start_limited("edge", &edge_cfg);
    let (agent_addr, eps) = edge.edge_addrs(1);
    assert_raised(&mut edge);
    let agent_cfg = fx.write(
        "agent.yml",
        &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(url, echo.addr)]),
    );
    let mut agent = start_limited("agent", &agent_cfg);
    agent.wait_for("endpoint bound");
    assert_raised(&mut agent);
    // And they work as usual.
    sluice_tests::client::echo_ok(None, eps[0], b"limits raised").unwrap();
}
