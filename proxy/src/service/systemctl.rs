//! Finding systemd and running `systemctl`: the only part of `sluice service` that
//! touches the system besides writing the unit file.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// Where units go unless overridden.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";

/// Present while systemd runs as the init system (sd_booted(3)).
const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";

/// A usable systemd: its `systemctl` and the directory units are written to.
#[derive(Debug)]
pub struct Systemd {
    systemctl: PathBuf,
    /// Unit directory.
    pub unit_dir: PathBuf,
}

/// `name` found in a directory of `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Systemd {
    /// systemd as found here. `unit_dir_override` (flag or SLUICE_SYSTEMD_UNIT_DIR)
    /// also skips the check that systemd is the running init system.
    pub fn detect(unit_dir_override: Option<PathBuf>) -> anyhow::Result<Systemd> {
        let Some(systemctl) = on_path("systemctl") else {
            bail!(
                "systemd not found: there is no `systemctl` on PATH. `sluice service` manages \
                 systemd units; without systemd, run `sluice edge|agent --config FILE` under \
                 your own supervisor (`sluice service install --config FILE --print` shows \
                 the unit systemd would get)"
            );
        };
        if unit_dir_override.is_none() && !Path::new(SYSTEMD_RUNTIME_DIR).is_dir() {
            bail!(
                "systemd is not running on this machine ({SYSTEMD_RUNTIME_DIR} is missing), \
                 so there is no service manager to install into; run `sluice edge|agent \
                 --config FILE` under your own supervisor, or pass --unit-dir to write the unit \
                 anyway"
            );
        }
        Ok(Systemd {
            systemctl,
            unit_dir: unit_dir_override.unwrap_or_else(|| DEFAULT_UNIT_DIR.into()),
        })
    }

    /// Runs `systemctl ARGS…` with the terminal's stdin/stdout/stderr; an error when it
    /// exits non-zero.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(&self.systemctl)
            .args(args)
            .status()
            .with_context(|| format!("running {}", self.systemctl.display()))?;
        if !status.success() {
            bail!("`systemctl {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// systemd's version from `systemctl --version` (`systemd 252 (…)`), if it says.
    pub fn version(&self) -> Option<u32> {
        let out = Command::new(&self.systemctl)
            .arg("--version")
            .output()
            .ok()?;
        parse_version(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The version from `systemctl --version`'s first line.
pub fn parse_version(text: &str) -> Option<u32> {
    let first = text.lines().next()?;
    first
        .strip_prefix("systemd ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// systemd's version when a `systemctl` is on PATH (for `--print` without a running systemd).
pub fn version_on_path() -> Option<u32> {
    let systemctl = on_path("systemctl")?;
    let out = Command::new(systemctl).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_systemctl_version() {
        assert_eq!(
            super::parse_version("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT\n"),
            Some(252)
        );
        assert_eq!(super::parse_version("systemd 256\n"), Some(256));
        assert_eq!(super::parse_version("nope"), None);
    }
}
