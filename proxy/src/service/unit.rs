//! The systemd unit for an edge or an agent, rendered as text from a [`UnitSpec`]: no
//! I/O, so every choice is unit-tested and the result checked by `systemd-analyze verify`.

use std::{path::PathBuf, time::Duration};

use crate::config::check::Kind;

/// `Restart*` back-off keys (`RestartSteps`, `RestartMaxDelaySec`) need systemd 254.
pub const BACKOFF_SYSTEMD: u32 = 254;

/// Whether the daemon reloads its config on SIGHUP: the edge does, the agent does not
/// (SIGHUP would end it cleanly, and `Restart=on-failure` would not bring it back), so
/// only the edge's unit gets `ExecReload=/bin/kill -HUP $MAINPID`.
pub fn reloads_on_sighup(kind: Kind) -> bool {
    kind == Kind::Edge
}

/// Everything the unit depends on.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    /// Edge or agent.
    pub kind: Kind,
    /// Absolute path of the `sluice` binary.
    pub exec: PathBuf,
    /// Absolute path of the config file.
    pub config: PathBuf,
    /// The user the daemon runs as.
    pub user: String,
    /// The config binds a port below 1024 (CAP_NET_BIND_SERVICE is granted).
    pub low_port: bool,
    /// A directory the daemon writes (`state_dir`), made writable under ProtectSystem.
    pub state_dir: Option<PathBuf>,
    /// The config's `drain_timeout`: systemd waits longer before SIGKILL.
    pub drain_timeout: Duration,
    /// The running systemd's version, when known (newer keys only where supported).
    pub systemd_version: Option<u32>,
}

/// Quotes one word for ExecStart= / ReadWritePaths= (specifiers and variables escaped).
pub fn quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// The unit file's text.
pub fn render(spec: &UnitSpec) -> String {
    let role = spec.kind.name();
    let stop_timeout = spec.drain_timeout.as_secs() + 15;
    let caps = if spec.low_port {
        "CAP_NET_BIND_SERVICE"
    } else {
        ""
    };
    let mut u = String::new();
    let mut line = |s: &str| {
        u.push_str(s);
        u.push('\n');
    };
    line("# Written by `sluice service install`; `sluice service uninstall` removes it.");
    line("[Unit]");
    line(&format!(
        "Description=sluice {role} (reverse-tunnel {})",
        if spec.kind == Kind::Edge {
            "edge proxy"
        } else {
            "agent"
        }
    ));
    line("Wants=network-online.target");
    line("After=network-online.target");
    // Never give up restarting; the back-off below spaces the attempts.
    line("StartLimitIntervalSec=0");
    line("");
    line("[Service]");
    line("Type=exec");
    line(&format!(
        "ExecStart={} {role} --config {}",
        quote(&spec.exec.to_string_lossy()),
        quote(&spec.config.to_string_lossy())
    ));
    if reloads_on_sighup(spec.kind) {
        line("ExecReload=/bin/kill -HUP $MAINPID");
    }
    line("KillSignal=SIGTERM");
    line(&format!("TimeoutStopSec={stop_timeout}s"));
    line("Restart=on-failure");
    if spec.systemd_version.is_some_and(|v| v >= BACKOFF_SYSTEMD) {
        line("RestartSec=1s");
        line("RestartSteps=10");
        line("RestartMaxDelaySec=1min");
    } else {
        line("RestartSec=5s");
    }
    line(&format!("User={}", spec.user));
    line(&format!("AmbientCapabilities={caps}"));
    line(&format!("CapabilityBoundingSet={caps}"));
    line("LimitNOFILE=1048576");
    // No core dumps (they would hold session secrets and keys); bounded memory and
    // tasks, so a runaway cannot take the host with it.
    line("LimitCORE=0");
    line("MemoryMax=80%");
    line("TasksMax=4096");
    line("NoNewPrivileges=yes");
    line("ProtectSystem=strict");
    if let Some(dir) = &spec.state_dir {
        line(&format!("ReadWritePaths={}", quote(&dir.to_string_lossy())));
    }
    for key in [
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "PrivateIPC=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        // @system-service includes io_uring (@aio) and setrlimit (@resources).
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "UMask=0077",
    ] {
        line(key);
    }
    line("");
    line("[Install]");
    line("WantedBy=multi-user.target");
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            kind: Kind::Edge,
            exec: "/usr/local/bin/sluice".into(),
            config: "/etc/sluice/edge.yml".into(),
            user: "sluice".into(),
            low_port: false,
            state_dir: None,
            drain_timeout: Duration::from_secs(30),
            systemd_version: Some(252),
        }
    }

    fn keys(unit: &str, key: &str) -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn edge_unit_runs_the_binary_unprivileged_and_restarts() {
        let u = render(&spec());
        assert_eq!(
            keys(&u, "ExecStart"),
            ["/usr/local/bin/sluice edge --config /etc/sluice/edge.yml"]
        );
        assert_eq!(keys(&u, "User"), ["sluice"]);
        assert_eq!(keys(&u, "AmbientCapabilities"), [""]);
        assert_eq!(keys(&u, "CapabilityBoundingSet"), [""]);
        assert_eq!(keys(&u, "Restart"), ["on-failure"]);
        assert_eq!(keys(&u, "LimitCORE"), ["0"]);
        assert_eq!(keys(&u, "ProcSubset"), ["pid"]);
        assert_eq!(keys(&u, "PrivateIPC"), ["yes"]);
        assert_eq!(keys(&u, "TasksMax"), ["4096"]);
        assert_eq!(keys(&u, "MemoryMax"), ["80%"]);
        assert_eq!(keys(&u, "TimeoutStopSec"), ["45s"]);
        assert_eq!(keys(&u, "WantedBy"), ["multi-user.target"]);
        assert_eq!(keys(&u, "After"), ["network-online.target"]);
        assert!(keys(&u, "RestartSteps").is_empty(), "systemd 252 lacks it");
        assert!(keys(&u, "ReadWritePaths").is_empty());
        assert_eq!(keys(&u, "ProtectSystem"), ["strict"]);
        assert_eq!(keys(&u, "LimitNOFILE"), ["1048576"]);
        assert_eq!(keys(&u, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
        assert_eq!(keys(&u, "KillSignal"), ["SIGTERM"]);
    }

    #[test]
    fn low_ports_state_dir_and_new_systemd() {
        let mut s = spec();
        s.kind = Kind::Agent;
        s.low_port = true;
        s.state_dir = Some("/var/lib/sluice state".into());
        s.drain_timeout = Duration::from_secs(120);
        s.systemd_version = Some(256);
        let u = render(&s);
        assert_eq!(keys(&u, "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(keys(&u, "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(keys(&u, "ReadWritePaths"), ["\"/var/lib/sluice state\""]);
        assert_eq!(keys(&u, "TimeoutStopSec"), ["135s"]);
        assert_eq!(keys(&u, "RestartSteps"), ["10"]);
        assert!(keys(&u, "ExecStart")[0].contains(" agent --config "));
        assert!(keys(&u, "ExecReload").is_empty(), "the agent has no reload");
    }

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote("/a/b"), "/a/b");
        assert_eq!(quote("/my dir/x"), "\"/my dir/x\"");
        assert_eq!(quote("50%$HOME"), "50%%$$HOME");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
