//! Finding the peers, installing the missing ones, and their versions: HAProxy from
//! Debian's packages (`apt-get install -y haproxy`), rathole and bore-cli from crates.io
//! with `cargo install` into a cache directory (`bench/.peers/`, git-ignored). A peer
//! that cannot be installed is reported with the reason, and the run goes on without it.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A located peer binary, or why there is none.
#[derive(Debug, Clone)]
pub struct Peer {
    pub bin: Result<PathBuf, String>,
    pub version: Option<String>,
}

/// `name` on PATH or in the usual system directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The first line of `bin args…`' output (stdout, else stderr), trimmed.
pub fn version_of(bin: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let text = String::from_utf8_lossy(&text);
    let mut line = text.lines().next().map(|l| l.trim().to_string())?;
    // rathole prints its name alone, the version on a "Build Version:" line.
    if let Some(v) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build Version:"))
    {
        line = format!("{line} {}", v.trim());
    }
    // HAProxy appends " - https://haproxy.org/" to its version line.
    let line = line
        .split(" - ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    (!line.is_empty()).then_some(line)
}

fn run_quiet(cmd: &mut Command, log: &Path) -> bool {
    let Ok(f) = std::fs::File::create(log) else {
        return false;
    };
    let Ok(f2) = f.try_clone() else { return false };
    cmd.stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .status()
        .is_ok_and(|s| s.success())
}

/// HAProxy, installed from Debian's packages when missing.
pub fn haproxy(log_dir: &Path) -> Peer {
    if which("haproxy").is_none() {
        eprintln!("compare: haproxy missing, apt-get install -y haproxy");
        let log = log_dir.join("install-haproxy.log");
        if !run_quiet(
            Command::new("apt-get").args(["install", "-y", "haproxy"]),
            &log,
        ) {
            run_quiet(
                Command::new("apt-get").arg("update"),
                &log_dir.join("apt-update.log"),
            );
            run_quiet(
                Command::new("apt-get").args(["install", "-y", "haproxy"]),
                &log,
            );
        }
    }
    match which("haproxy") {
        Some(bin) => Peer {
            version: version_of(&bin, &["-v"]),
            bin: Ok(bin),
        },
        None => Peer {
            bin: Err("haproxy could not be installed (apt-get install -y haproxy failed)".into()),
            version: None,
        },
    }
}

/// A binary from crates.io: the cache's `bin/`, then `~/.cargo/bin`, then PATH; else
/// `cargo install --locked` into the cache, retried without `--locked` (old lock files
/// pin crates that no longer build with the current compiler).
pub fn cargo_peer(krate: &str, bin_name: &str, cache: &Path, log_dir: &Path) -> Peer {
    let home_bin = std::env::var("HOME")
        .map(|h| Path::new(&h).join(".cargo/bin").join(bin_name))
        .ok();
    let find = || {
        [Some(cache.join("bin").join(bin_name)), home_bin.clone()]
            .into_iter()
            .flatten()
            .find(|p| p.is_file())
            .or_else(|| which(bin_name))
    };
    if find().is_none() {
        eprintln!(
            "compare: {bin_name} missing, cargo install {krate} into {}",
            cache.display()
        );
        let log = log_dir.join(format!("install-{krate}.log"));
        for locked in [true, false] {
            let mut cmd = Command::new("cargo");
            cmd.arg("install")
                .arg("--root")
                .arg(cache)
                .arg(krate)
                .env("CARGO_TARGET_DIR", cache.join("build"));
            if locked {
                cmd.arg("--locked");
            }
            if run_quiet(&mut cmd, &log) {
                break;
            }
        }
    }
    match find() {
        Some(bin) => Peer {
            version: version_of(&bin, &["--version"]),
            bin: Ok(bin),
        },
        None => Peer {
            bin: Err(format!(
                "{krate} could not be installed (cargo install {krate} failed; log {})",
                log_dir.join(format!("install-{krate}.log")).display()
            )),
            version: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_system_binary_and_its_version() {
        let sh = which("sh").expect("sh on PATH");
        assert!(sh.is_file());
        assert!(which("no-such-binary-sluice").is_none());
        assert!(version_of(Path::new("/no/such"), &[]).is_none());
    }
}
