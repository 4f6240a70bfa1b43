//! `sluice service`: the generated systemd units pass `systemd-analyze verify`, the
//! lifecycle commands run the right `systemctl` calls (a fake `systemctl` first on PATH
//! records them), and without systemd the command says so.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sluice_tests::{
    fixture::{forward_all, Fixture},
    process::sluice_bin,
};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An edge config whose agent port is 443 (so the unit grants CAP_NET_BIND_SERVICE);
/// the edge is never started.
fn edge_config(fx: &Fixture) -> PathBuf {
    let mut yaml = fx.edge_yaml(
        "127.0.0.1:443",
        &[("127.0.0.1:0", forward_all("tcp://db.internal:5432"))],
    );
    yaml.push_str("drain_timeout: 2m\n");
    fx.write("edge.yml", &yaml)
}

fn agent_config(fx: &Fixture) -> PathBuf {
    fx.write(
        "agent.yml",
        &fx.agent_yaml(
            &fx.token,
            "127.0.0.1:4443".parse().unwrap(),
            "tls",
            &[("tcp://db.internal:5432", "127.0.0.1:5432".parse().unwrap())],
        ),
    )
}

/// The values of `key=` lines.
fn keys(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn generated_units_pass_systemd_analyze_verify() {
    let fx = Fixture::new();
    for (config, role) in [(edge_config(&fx), "edge"), (agent_config(&fx), "agent")] {
        let out = Command::new(sluice_bin())
            .args(["service", "install", "--print", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let unit = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            keys(&unit, "ExecStart"),
            [format!(
                "{} {role} --config {}",
                sluice_bin().display(),
                config.canonicalize().unwrap().display()
            )]
        );
        let caps = if role == "edge" {
            "CAP_NET_BIND_SERVICE"
        } else {
            ""
        };
        assert_eq!(keys(&unit, "AmbientCapabilities"), [caps], "{unit}");
        if role == "edge" {
            assert_eq!(keys(&unit, "TimeoutStopSec"), ["135s"], "{unit}");
            assert_eq!(keys(&unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
        }

        // Verified under its own name, as systemd would load it.
        let path = fx.path(&format!("sluice-{role}.service"));
        std::fs::write(&path, &unit).unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package `systemd`; .ci/run installs it)");
        assert!(
            verify.status.success(),
            "systemd-analyze verify failed:\n{}\n{unit}",
            text(&verify)
        );
        // verify exits 0 on unknown keys and unsafe settings: it must say nothing at all.
        assert_eq!(text(&verify).trim(), "", "{unit}");
    }
}

/// A directory with a fake `systemctl` that appends its arguments to `calls` and claims
/// to be systemd 256.
struct FakeSystemd {
    dir: PathBuf,
}

impl FakeSystemd {
    fn new(fx: &Fixture) -> FakeSystemd {
        let dir = fx.path("fake-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("systemctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\n[ \"$1\" = --version ] && echo 'systemd 256 (256.5-1)'\nexit 0\n",
                fx.path("calls").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSystemd { dir }
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.dir.clone()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }
}

fn calls(fx: &Fixture) -> Vec<String> {
    std::fs::read_to_string(fx.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn service(fake: &FakeSystemd, units: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("service")
        .args(args)
        .env("PATH", fake.path_env())
        .env("SLUICE_SYSTEMD_UNIT_DIR", units)
        .output()
        .unwrap()
}

#[test]
fn lifecycle_runs_systemctl_install_start_status_stop_restart_uninstall() {
    let fx = Fixture::new();
    let fake = FakeSystemd::new(&fx);
    let units = fx.path("units");
    let config = edge_config(&fx);
    let cfg = config.to_str().unwrap();
    let unit_path = units.join("sluice-test.service");

    // Never as root, and never a name that could smuggle another unit line in.
    for bad in ["root", "sluice\nExecStartPre=/bin/sh"] {
        let out = service(
            &fake,
            &units,
            &[
                "install",
                "--config",
                cfg,
                "--name",
                "sluice-test",
                "--user",
                bad,
            ],
        );
        assert!(!out.status.success(), "--user {bad:?} accepted");
        assert!(!unit_path.exists(), "a unit was written for --user {bad:?}");
    }
    assert!(
        calls(&fx).is_empty(),
        "systemctl called for a refused install"
    );
    let out = service(
        &fake,
        &units,
        &[
            "install",
            "--config",
            cfg,
            "--name",
            "sluice-test",
            "--user",
            "nobody",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The fixture's config lives under the temp directory, which PrivateTmp hides.
    if cfg.starts_with("/tmp/") {
        assert!(
            text(&out).contains("PrivateTmp=yes"),
            "no warning that the unit cannot see {cfg}: {}",
            text(&out)
        );
    }
    assert_eq!(
        calls(&fx),
        ["--version", "daemon-reload", "enable sluice-test.service"]
    );
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(keys(&unit, "User"), ["nobody"]);
    // systemd 256 (the fake's) gets the growing restart back-off.
    assert_eq!(keys(&unit, "RestartSteps"), ["10"], "{unit}");

    for verb in ["start", "status", "stop", "restart"] {
        let out = service(&fake, &units, &[verb, "--name", "sluice-test"]);
        assert!(out.status.success(), "{verb}: {}", text(&out));
    }
    // Named by the config instead: the edge's default name.
    let out = service(&fake, &units, &["restart", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out));

    let out = service(&fake, &units, &["uninstall", "--name", "sluice-test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!unit_path.exists());
    assert_eq!(
        calls(&fx)[3..],
        [
            "start sluice-test.service",
            "status --no-pager sluice-test.service",
            "stop sluice-test.service",
            "restart sluice-test.service",
            "restart sluice-edge.service",
            "stop sluice-test.service",
            "disable sluice-test.service",
            "daemon-reload",
        ]
    );

    let out = service(&fake, &units, &["uninstall", "--name", "sluice-test"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not installed"), "{}", text(&out));
}

#[test]
fn without_systemd_the_command_says_so() {
    let fx = Fixture::new();
    let config = edge_config(&fx);
    let empty = fx.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();

    // No systemctl on PATH, even with a unit directory given.
    let out = Command::new(sluice_bin())
        .args(["service", "install", "--config"])
        .arg(&config)
        .env("PATH", &empty)
        .env("SLUICE_SYSTEMD_UNIT_DIR", fx.path("units"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("systemd not found: there is no `systemctl` on PATH"),
        "{}",
        text(&out)
    );
    assert!(!fx.path("units").exists(), "nothing written");

    let out = Command::new(sluice_bin())
        .args(["service", "status", "--name", "sluice-edge"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("systemd not found"), "{}", text(&out));

    // systemctl present but systemd not running (as in this sandbox and CI): only a
    // machine booted with systemd has /run/systemd/system.
    let fake = FakeSystemd::new(&fx);
    let out = Command::new(sluice_bin())
        .args(["service", "start", "--name", "sluice-edge"])
        .env("PATH", fake.path_env())
        .env_remove("SLUICE_SYSTEMD_UNIT_DIR")
        .output()
        .unwrap();
    if Path::new("/run/systemd/system").is_dir() {
        assert!(out.status.success(), "{}", text(&out));
    } else {
        assert!(!out.status.success());
        assert!(
            text(&out).contains("systemd is not running on this machine"),
            "{}",
            text(&out)
        );
        assert!(
            calls(&fx).is_empty(),
            "systemctl not called: {:?}",
            calls(&fx)
        );
    }

    // Printing the unit needs no systemd.
    let out = Command::new(sluice_bin())
        .args(["service", "install", "--print", "--config"])
        .arg(&config)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[Service]"));
}
