//! The `sluice-load` binary: bad arguments fail clearly with exit code 2, and a full
//! run against `sluice-load serve` writes the JSON and the Markdown report.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-load");

fn fails(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {needle:?} not in {stderr}"
    );
}

#[test]
fn bad_arguments_fail_clearly() {
    let t = "--target=127.0.0.1:9";
    fails(&[], "Usage");
    fails(&["rr"], "--target");
    fails(&["rr", t, "--duration", "soon"], "not a duration");
    fails(&["rr", t, "--duration", "0s"], "--duration must be");
    fails(
        &["rr", t, "--threads", "0"],
        "--threads must be between 1 and 1024",
    );
    fails(
        &["rr", t, "--connections", "0"],
        "--connections must be between",
    );
    fails(&["rr", t, "--rate=-5"], "--rate must be");
    fails(&["connect", t, "--rate=0"], "--rate must be");
    fails(&["rr", t, "--size", "12parsecs"], "not a size");
    fails(&["rr", t, "--sni", "x"], "--tls");
    fails(
        &["rr", t, "--tls", "--insecure", "--ca", "ca.pem"],
        "cannot be used with",
    );
    fails(&["rr", "--target", "no-port-here"], "cannot resolve");
    fails(&["rr", "--target", "127.0.0.1:0"], "port other than 0");
    fails(&["rr", t, "--bind", "::1"], "address family");
    fails(&["throughput", t, "--direction", "sideways"], "sideways");
    fails(&["hold", t, "--interval", "1ms"], "--interval must be");
    fails(
        &["serve", "--listen", "127.0.0.1:0", "--tls-cert", "c.pem"],
        "--tls-key",
    );
    fails(
        &["serve", "--listen", "127.0.0.1:0", "--mode", "mirror"],
        "mirror",
    );
}

#[test]
fn a_full_run_writes_json_and_report() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--duration",
            "20s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The first stdout line names the bound address; wait for it with a deadline.
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("serve prints its address");
    let addr = line
        .split_whitespace()
        .nth(2)
        .expect("listening on ADDR")
        .to_string();

    let json = dir.join("rr.json");
    let md = dir.join("rr.md");
    let args = [
        "rr",
        "--target",
        addr.as_str(),
        "--duration",
        "300ms",
        "--threads",
        "1",
        "--connections",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--report",
        md.to_str().unwrap(),
    ];
    let out = Command::new(BIN).args(args).output().unwrap();
    server.kill().unwrap();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("errors     0"), "{stdout}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mut argv = vec![BIN.to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    assert_eq!(v["command_line"], serde_json::json!(argv));
    assert_eq!(v["command"], "rr");
    assert!(v["totals"]["ops"].as_u64().unwrap() > 10);
    assert_eq!(v["errors"]["total"], 0);

    let report = std::fs::read_to_string(&md).unwrap();
    assert!(
        report.contains("![latency by percentile](rr-latency.svg)"),
        "{report}"
    );
    for chart in ["rr-latency.svg", "rr-timeline.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{chart}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
