//! The `sluice` command line: token subcommands and error reporting. (Being an
//! integration test of this package also makes `cargo test` build the `sluice` binary
//! that the end-to-end tests in `tests/` start.)

use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice")
}

fn sluice_with_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sluice");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait for sluice")
}

#[test]
fn token_new_prints_a_token_and_its_hash_that_token_hash_reproduces() {
    let out = sluice(&["token", "new"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap();
    let hash = lines.next().unwrap();
    assert!(token.starts_with("slt_") && token.len() > 40, "{token}");
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    // From standard input (no argument, or `-`): the token never shows in argv.
    for args in [&["token", "hash"][..], &["token", "hash", "-"][..]] {
        let again = sluice_with_stdin(args, &format!("{token}\n"));
        assert!(again.status.success());
        assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), hash);
        assert!(again.stderr.is_empty(), "no warning for stdin");
    }
    // As an argument it still works, with a warning.
    let argv = sluice(&["token", "hash", token]);
    assert_eq!(String::from_utf8(argv.stdout).unwrap().trim(), hash);
    assert!(String::from_utf8(argv.stderr)
        .unwrap()
        .contains("visible to other users"));
    let other = String::from_utf8(sluice(&["token", "new"]).stdout).unwrap();
    assert_ne!(
        other.lines().next().unwrap(),
        token,
        "tokens must be random"
    );
}

#[test]
fn a_missing_config_file_is_named_in_the_error() {
    let out = sluice(&["agent", "--config", "/nonexistent/agent.yml"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("/nonexistent/agent.yml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn an_unknown_driver_is_a_clear_error() {
    let out = sluice(&["--driver", "kqueue", "token", "new"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("unknown driver"));
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_accepts_a_good_agent_file_and_names_the_problem_in_a_bad_one() {
    let good = write_temp(
        "good.yml",
        "version: 3\nagent:\n  authtoken: slt_x\n  connect_url: edge.example.com:4443\nendpoints:\n  - url: tcp://db.internal:5432\n    upstream: { url: 10.0.0.5:5432 }\n",
    );
    let out = sluice(&["config", "check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("valid agent config"));

    let bad = write_temp(
        "bad.yml",
        "version: 3\nagent:\n  authtoken: slt_x\n  connect_url: edge.example.com:4443\nendpoints:\n  - url: tcp://db.example.com:5432\n    upstream: { url: 10.0.0.5:5432 }\n",
    );
    let out = sluice(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    // The problem list goes to stdout, the summary to stderr.
    let err = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.yml") && err.contains("db.example.com") && err.contains(".internal"),
        "{err}"
    );

    let neither = write_temp("neither.yml", "version: 7\n");
    let out = sluice(&["config", "check", neither.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("neither an edge config"));
}

#[test]
fn help_shows_examples_and_the_environment_and_only_the_flags_that_apply() {
    let top = String::from_utf8(sluice(&["--help"]).stdout).unwrap();
    assert!(
        top.contains("Examples:") && top.contains("SLUICE_LOG"),
        "{top}"
    );
    for sub in [
        &["token", "--help"][..],
        &["config", "check", "--help"],
        &["certs", "new", "--help"],
    ] {
        let help = String::from_utf8(sluice(sub).stdout).unwrap();
        assert!(
            !help.contains("--driver") && !help.contains("--pump"),
            "{sub:?} shows data-path flags:\n{help}"
        );
    }
    for sub in [
        &["edge", "--help"][..],
        &["agent", "--help"],
        &["config", "check", "--help"],
    ] {
        let help = String::from_utf8(sluice(sub).stdout).unwrap();
        assert!(help.contains("Example"), "{sub:?} has no example:\n{help}");
    }
}
