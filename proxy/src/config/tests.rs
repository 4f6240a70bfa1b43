//! The daemons' loaders and `sluice config check` give the same verdict, with the same
//! problems, on every file in `proxy/tests/config/`: `agent-*` and `edge-*` files, each
//! `-ok-` (loads) or `-bad-` (refused), with `# expect: TEXT` lines that some reported
//! problem must contain. The files refer to `edge.crt`, `edge.key` and `ca.pem`, made
//! here next to a copy of them.

use std::path::{Path, PathBuf};

use super::{agent::AgentSettings, check::check_file, edge::EdgeSettings, ConfigError};
use crate::tls;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/config");

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_with_fixtures() -> (Scratch, Vec<String>) {
    let dir = std::env::temp_dir().join(format!(
        "sluice-config-fixtures-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir);
    let (cert, key) = tls::self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(scratch.0.join("edge.crt"), &cert).unwrap();
    std::fs::write(scratch.0.join("edge.key"), key).unwrap();
    std::fs::write(scratch.0.join("ca.pem"), &cert).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yml") {
            std::fs::copy(&path, scratch.0.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    (scratch, names)
}

/// The loader's verdict: `Ok` or every problem, one a line.
fn load(name: &str, path: &Path) -> Result<(), Vec<String>> {
    let loaded = if name.starts_with("agent-") {
        AgentSettings::load(path).map(drop)
    } else if name.starts_with("edge-") {
        EdgeSettings::load(path).map(drop)
    } else {
        panic!("{name}: fixtures are named agent-… or edge-…");
    };
    loaded.map_err(lines)
}

/// `sluice config check`'s verdict, the same way.
fn check(path: &Path) -> Result<(), Vec<String>> {
    match check_file(path) {
        Err(e) => Err(lines(e)),
        Ok(r) if r.problems.is_empty() => Ok(()),
        Ok(r) => Err(r.problems.iter().map(ToString::to_string).collect()),
    }
}

fn lines(e: ConfigError) -> Vec<String> {
    assert!(!e.problems.is_empty(), "{e:?}");
    e.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn the_loaders_and_config_check_agree_on_every_fixture() {
    let (scratch, names) = scratch_with_fixtures();
    assert!(
        names.len() >= 25,
        "found only {} fixtures in {FIXTURES}: {names:?}",
        names.len()
    );
    // The four files `config check` used to refuse while the agent started with them.
    for quoted in [
        "agent-ok-quoted-version.yml",
        "agent-ok-quoted-data-channels.yml",
        "agent-ok-quoted-proxy-protocol.yml",
        "agent-ok-quoted-pooling.yml",
    ] {
        assert!(names.iter().any(|n| n == quoted), "{quoted} missing");
    }
    let (mut ok, mut bad) = (0, 0);
    for name in &names {
        let path = scratch.0.join(name);
        let want_ok = match (name.contains("-ok-"), name.contains("-bad-")) {
            (true, false) => true,
            (false, true) => false,
            _ => panic!("{name}: fixtures are named …-ok-… or …-bad-…"),
        };
        let loaded = load(name, &path);
        let checked = check(&path);
        assert_eq!(loaded.is_ok(), want_ok, "{name}: loader: {loaded:?}");
        assert_eq!(checked.is_ok(), want_ok, "{name}: check: {checked:?}");
        // The same problems word for word, except where `check` could not tell the
        // file's kind (a wrong `version:`) and said that instead.
        let kind_unknown = check_file(&path).is_err() && super::check::read_tree(&path).is_ok();
        if !kind_unknown {
            assert_eq!(loaded, checked, "{name}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for wanted in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
            let wanted = wanted.trim_end();
            for (who, found) in [("loader", &loaded), ("check", &checked)] {
                let found = found.as_ref().err().cloned().unwrap_or_default();
                assert!(
                    found.iter().any(|line| line.contains(wanted)),
                    "{name}: {who} does not report `{wanted}`: {found:#?}"
                );
            }
        }
        if want_ok {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    assert!(ok >= 8 && bad >= 15, "{ok} valid, {bad} invalid fixtures");
}

#[test]
fn a_daemon_refusing_a_file_names_every_problem() {
    let (scratch, _) = scratch_with_fixtures();
    let e = AgentSettings::load(&scratch.0.join("agent-bad-every-problem.yml")).unwrap_err();
    assert_eq!(e.problems.len(), 5, "{e}");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("agent-bad-every-problem.yml:")),
        "{text}"
    );
}

#[test]
fn warnings_come_from_the_same_validation() {
    let (scratch, _) = scratch_with_fixtures();
    let r = check_file(&scratch.0.join("agent-ok-no-endpoints.yml")).unwrap();
    assert!(r.problems.is_empty(), "{r:?}");
    assert_eq!(
        r.warnings,
        ["endpoints: none; the agent will bind nothing"],
        "{r:?}"
    );
    let r = check_file(&scratch.0.join("agent-ok-minimal.yml")).unwrap();
    assert!(r.warnings.is_empty(), "{r:?}");
    // ngrok's cloud-only keys: one warning naming each, and the file is valid.
    let r = check_file(&scratch.0.join("agent-ok-ngrok-cloud-keys.yml")).unwrap();
    assert!(r.problems.is_empty(), "{r:?}");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    for key in ["update_channel", "console_ui", "web_addr", "api_key"] {
        assert!(r.warnings[0].contains(&format!("agent.{key} (")), "{r:?}");
    }
    // A plain-HTTP admin listener beyond loopback is a problem, and only with the
    // explicit escape hatch a warning.
    let r = check_file(&scratch.0.join("edge-bad-admin.yml")).unwrap();
    assert!(r.warnings.is_empty(), "{r:?}");
    let text = std::fs::read_to_string(scratch.0.join("edge-bad-admin.yml")).unwrap();
    let allowed = scratch.0.join("edge-allowed.yml");
    std::fs::write(
        &allowed,
        text.replace("  max_connections: 0\n", "  allow_plaintext_remote: true\n")
            .replace(
                "admin:\n",
                &format!("admin:\n  api_keys: [\"sha256:{}\"]\n", "ab".repeat(32)),
            ),
    )
    .unwrap();
    let r = check_file(&allowed).unwrap();
    assert!(r.problems.is_empty(), "{r:?}");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(
        r.warnings[0].contains("plain HTTP beyond loopback"),
        "{r:?}"
    );
}
