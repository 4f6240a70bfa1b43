//! End-to-end: README.md's quick start, run verbatim. The `sh` block under "Quick
//! start" is executed by bash in a fresh directory with the built `sluice` first on the
//! PATH; it must end by printing what crossed the tunnel. The script runs in a process
//! group of its own, which the test ends (by its id) whatever happens, so nothing it
//! started outlives the test.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sluice_tests::process::sluice_bin;

/// The first ```sh block after the "## Quick start" heading of README.md.
fn quick_start_script() -> String {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let section = text
        .split("\n## Quick start\n")
        .nth(1)
        .expect("README.md has a '## Quick start' section");
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the quick start has a ```sh block")
        .split("\n```")
        .next()
        .unwrap();
    assert!(
        block.contains("sluice edge") && block.contains("sluice agent"),
        "{block}"
    );
    block.to_string()
}

#[test]
fn the_readme_quick_start_runs_as_printed() {
    let script = quick_start_script();
    let dir = std::env::temp_dir().join(format!("sluice-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.sh"), format!("set -e\n{script}\n")).unwrap();
    let bin_dir = sluice_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("run.sh")
        .current_dir(&dir)
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let pgid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on the process group this test created for the script; ends
    // whatever it left running (nothing, when it succeeded).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let logs = ["edge.log", "agent.log"]
        .map(|f| std::fs::read_to_string(dir.join("quickstart").join(f)).unwrap_or_default())
        .join("\n");
    assert!(
        status.is_some(),
        "the quick start did not finish in 60 s\n{out}\n{err}\n{logs}"
    );
    assert!(
        status.unwrap().success() && out.contains("Directory listing for /"),
        "the quick start failed: {status:?}\nstdout:\n{out}\nstderr:\n{err}\nlogs:\n{logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
