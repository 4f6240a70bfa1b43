//! Child `sluice` processes with their logs captured and searchable.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Default deadline for waiting on a log event.
pub const WAIT: Duration = Duration::from_secs(20);

/// Path of the `sluice` binary built alongside this test (target/<profile>/sluice).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("sluice");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// Runs `sluice config check FILE`: whether it passed, and everything it printed
/// (stdout and stderr).
pub fn config_check(file: &Path) -> (bool, String) {
    let out = std::process::Command::new(sluice_bin())
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("run sluice config check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[derive(Default)]
struct Log {
    lines: Mutex<Lines>,
    changed: Condvar,
}

#[derive(Default)]
struct Lines {
    events: Vec<Value>,
    /// The child's stderr reached its end: every line it wrote is in `events`.
    ended: bool,
}

/// A running `sluice` child process; killed (by its PID) when dropped.
pub struct Sluice {
    child: Child,
    log: Arc<Log>,
    /// What it was started as, for messages.
    pub role: String,
}

impl Sluice {
    /// Starts `sluice <args…>` with JSON logs at debug level and the given driver.
    pub fn start(role: &str, args: &[&str], driver: &str) -> Sluice {
        Sluice::start_prefixed(role, &[], args, driver)
    }

    /// Like [`Sluice::start`], run through `prefix` (e.g. `ip netns exec NS`): the
    /// command becomes `prefix… sluice args…`. The child (and the PID) is the prefix's
    /// process, which `exec`s sluice.
    pub fn start_prefixed(role: &str, prefix: &[String], args: &[&str], driver: &str) -> Sluice {
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(sluice_bin());
                c
            }
            None => Command::new(sluice_bin()),
        };
        let mut child = command
            .args(args)
            .args([
                "--log-format",
                "json",
                "--log-level",
                "sluice_proxy=debug,info",
            ])
            .env("SLUICE_DRIVER", driver)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let name = role.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line, "raw": true }));
                if std::env::var_os("SLUICE_TEST_ECHO_LOGS").is_some() {
                    eprintln!("[{name}] {line}");
                }
                sink.lines.lock().unwrap().events.push(value);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().ended = true;
            sink.changed.notify_all();
        });
        Sluice {
            child,
            log,
            role: role.to_string(),
        }
    }

    /// Starts an edge with the given config file.
    pub fn edge(config: &Path, driver: &str) -> Sluice {
        Sluice::start(
            "edge",
            &["edge", "--config", config.to_str().unwrap()],
            driver,
        )
    }

    /// Starts an edge whose config names fixed ports (e.g. the ports of an edge that
    /// was stopped, to restart it "on the same ports"), and waits for its agent port
    /// and `endpoints` endpoint listeners. Those ports were free when chosen, but any
    /// process (a client's ephemeral port included) may have taken one since: an edge
    /// that exits because an address is in use is started again, until `WAIT` runs
    /// out. Returns the edge and its listening addresses.
    pub fn edge_on_fixed_ports(
        config: &Path,
        driver: &str,
        endpoints: usize,
    ) -> (Sluice, SocketAddr, Vec<SocketAddr>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut edge = Sluice::edge(config, driver);
            let listening = |v: &Value| {
                v["message"] == "listening" && (v["kind"] == "agents" || v["kind"] == "endpoint")
            };
            // Either every listener is up, or the process ended.
            loop {
                if edge.count(listening) > endpoints {
                    let (agents, eps) = edge.edge_addrs(endpoints);
                    return (edge, agents, eps);
                }
                if !edge.is_running() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "edge on fixed ports: not listening in time:\n{}",
                    edge.log_text()
                );
                let lines = edge.log.lines.lock().unwrap();
                drop(
                    edge.log
                        .changed
                        .wait_timeout(lines, Duration::from_millis(50)),
                );
            }
            let (code, log) = edge.wait_exit_and_log();
            let in_use = log.to_lowercase().contains("in use");
            assert!(
                in_use && Instant::now() < deadline,
                "edge on fixed ports exited ({code:?}), not for a port in use:\n{log}"
            );
        }
    }

    /// Starts an agent with the given config file.
    pub fn agent(config: &Path, driver: &str) -> Sluice {
        Sluice::start(
            "agent",
            &["agent", "--config", config.to_str().unwrap()],
            driver,
        )
    }

    /// Waits until `count` log events satisfy `pred`; returns the last of them.
    /// Panics with the log so far when the deadline passes or the process has exited
    /// and all it wrote has been read.
    pub fn wait_for_n(&mut self, what: &str, count: usize, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            let matching: Vec<&Value> = lines.events.iter().filter(|v| pred(v)).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            let now = Instant::now();
            let exited = self.child.try_wait().ok().flatten();
            if now >= deadline || (exited.is_some() && lines.ended) {
                let dump: Vec<String> = lines.events.iter().map(|v| v.to_string()).collect();
                panic!(
                    "{}: waited for {what} ({}): exit status {exited:?}\n{}",
                    self.role,
                    if now >= deadline {
                        "deadline passed"
                    } else {
                        "process exited"
                    },
                    dump.join("\n")
                );
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            lines = self.log.changed.wait_timeout(lines, step).unwrap().0;
        }
    }

    /// Waits for the first log event whose message equals `message`.
    pub fn wait_for(&mut self, message: &str) -> Value {
        self.wait_for_n(message, 1, |v| v["message"] == message)
    }

    /// Counts log events satisfying `pred` so far.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.log
            .lines
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|v| pred(v))
            .count()
    }

    /// Waits for the edge's `listening` events: the agent port and each endpoint.
    pub fn edge_addrs(&mut self, endpoints: usize) -> (SocketAddr, Vec<SocketAddr>) {
        let agent = self.wait_for_n("agent listener", 1, |v| {
            v["message"] == "listening" && v["kind"] == "agents"
        });
        let agent_addr = agent["agent_addr"].as_str().unwrap().parse().unwrap();
        let mut eps = Vec::new();
        for i in 1..=endpoints {
            let ep = self.wait_for_n("endpoint listener", i, |v| {
                v["message"] == "listening" && v["kind"] == "endpoint"
            });
            eps.push(ep["addr"].as_str().unwrap().parse().unwrap());
        }
        (agent_addr, eps)
    }

    /// Waits for the edge's shared `tls://` listener (`tls_endpoints`); its address.
    pub fn tls_endpoints_addr(&mut self) -> SocketAddr {
        self.wait_for_n("tls listener", 1, |v| {
            v["message"] == "listening" && v["kind"] == "tls-endpoints"
        })["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits for the edge's shared `http://` listener (`http_endpoints`); its address.
    pub fn http_endpoints_addr(&mut self) -> SocketAddr {
        self.wait_for_n("http listener", 1, |v| {
            v["message"] == "listening" && v["kind"] == "http-endpoints"
        })["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM to this child (by its PID).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Sends SIGHUP to this child (by its PID): the edge reloads its config.
    pub fn hangup(&self) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
    }

    /// Sends SIGSTOP to this child (by its PID): it goes silent without closing any
    /// socket, like a machine that froze or dropped off the network.
    pub fn freeze(&self) {
        let pid = self.child.id();
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        // The signal is queued at once but takes effect when each thread is next
        // scheduled: return once every thread is stopped, so work that starts after
        // this call cannot be served by the frozen process.
        let all_stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // pid (comm) STATE ...; comm may hold spaces and parentheses.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
        };
        let deadline = Instant::now() + WAIT;
        while !all_stopped() {
            assert!(
                Instant::now() < deadline,
                "{}: SIGSTOP never took effect",
                self.role
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends SIGKILL to this child (by PID) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own, up to the deadline; its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit in time", self.role);
    }

    /// Waits for the process to exit on its own and for its stderr to be read to the
    /// end, up to the deadline: its status code and everything it logged (the last
    /// words of a process that refuses to start included).
    pub fn wait_exit_and_log(&mut self) -> (Option<i32>, String) {
        let code = self.wait_exit();
        let deadline = Instant::now() + WAIT;
        let mut lines = self.log.lines.lock().unwrap();
        while !lines.ended {
            let now = Instant::now();
            assert!(now < deadline, "{}: stderr not closed in time", self.role);
            lines = self
                .log
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
        drop(lines);
        (code, self.log_text())
    }

    /// The captured stderr so far, one event per line (for assertions on messages).
    pub fn log_text(&self) -> String {
        let lines = self.log.lines.lock().unwrap();
        lines
            .events
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
    }
}
