//! `sluice service`: run the edge or the agent as a systemd service.
//!
//! - [`unit`]: the unit file, rendered from what the config says (pure, unit-tested).
//! - [`target`]: reads the config: edge or agent, drain timeout, low ports, state dir.
//! - [`systemctl`]: finds systemd and runs `systemctl`.
//!
//! `install` writes `NAME.service` into the unit directory (`/etc/systemd/system`, or
//! `--unit-dir` / `SLUICE_SYSTEMD_UNIT_DIR`), reloads systemd and enables the unit;
//! `uninstall` stops, disables and removes it; `start|stop|restart|status` wrap
//! `systemctl`. Without systemd every command but `install --print` says so and fails.

pub mod systemctl;
pub mod target;
pub mod unit;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use self::{systemctl::Systemd, unit::UnitSpec};

/// `sluice service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit for the edge or agent of --config, and enable it at boot.
    Install {
        /// The edge or agent config the service runs with.
        #[arg(long)]
        config: PathBuf,
        /// Unit name (default: sluice-edge or sluice-agent).
        #[arg(long)]
        name: Option<String>,
        /// User the daemon runs as (create it first, e.g. `useradd --system sluice`).
        #[arg(long, default_value = "sluice")]
        user: String,
        /// Directory for the unit file.
        #[arg(long, env = "SLUICE_SYSTEMD_UNIT_DIR")]
        unit_dir: Option<PathBuf>,
        /// Print the unit instead of installing it.
        #[arg(long, alias = "dry-run")]
        print: bool,
    },
    /// Stop and disable the service and remove its unit.
    Uninstall(Target),
    /// Start the service.
    Start(Target),
    /// Stop the service.
    Stop(Target),
    /// Restart the service.
    Restart(Target),
    /// Show the service's state (`systemctl status`).
    Status(Target),
}

/// Which installed service a command is about.
#[derive(Debug, Args)]
pub struct Target {
    /// Unit name, as given to install.
    #[arg(long)]
    name: Option<String>,
    /// Or the config it was installed with (names it sluice-edge / sluice-agent).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of the unit file.
    #[arg(long, env = "SLUICE_SYSTEMD_UNIT_DIR")]
    unit_dir: Option<PathBuf>,
}

/// Runs one `sluice service` command.
pub fn run(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Install {
            config,
            name,
            user,
            unit_dir,
            print,
        } => install(&config, name, user, unit_dir, print),
        ServiceCommand::Uninstall(t) => {
            let (systemd, unit) = locate(t)?;
            let path = systemd.unit_dir.join(&unit);
            if !path.exists() {
                bail!(
                    "{unit} is not installed ({} does not exist)",
                    path.display()
                );
            }
            systemd.run(&["stop", &unit])?;
            systemd.run(&["disable", &unit])?;
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            systemd.run(&["daemon-reload"])?;
            println!("removed {}", path.display());
            Ok(())
        }
        ServiceCommand::Start(t) => wrap("start", t),
        ServiceCommand::Stop(t) => wrap("stop", t),
        ServiceCommand::Restart(t) => wrap("restart", t),
        ServiceCommand::Status(t) => {
            let (systemd, unit) = locate(t)?;
            systemd.run(&["status", "--no-pager", &unit])
        }
    }
}

fn wrap(verb: &str, t: Target) -> anyhow::Result<()> {
    let (systemd, unit) = locate(t)?;
    systemd.run(&[verb, &unit])
}

/// systemd, and the unit file name a command is about.
fn locate(t: Target) -> anyhow::Result<(Systemd, String)> {
    let name = match (t.name, t.config) {
        (Some(name), _) => name,
        (None, Some(config)) => default_name(target::read(&absolute(&config)?)?.kind.name()),
        (None, None) => bail!("which service? give --name NAME or --config FILE"),
    };
    let unit = unit_file_name(&name)?;
    Ok((Systemd::detect(t.unit_dir)?, unit))
}

fn default_name(kind: &str) -> String {
    format!("sluice-{kind}")
}

/// `NAME.service`, refusing names systemd would not take.
fn unit_file_name(name: &str) -> anyhow::Result<String> {
    let name = name.strip_suffix(".service").unwrap_or(name);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !ok {
        bail!("invalid unit name `{name}`: use letters, digits and :-_.@");
    }
    Ok(format!("{name}.service"))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("{}: cannot read", p.display()))
}

fn install(
    config: &Path,
    name: Option<String>,
    user: String,
    unit_dir: Option<PathBuf>,
    print: bool,
) -> anyhow::Result<()> {
    check_user(&user)?;
    let config = absolute(config)?;
    let facts = target::read(&config)?;
    let unit = unit_file_name(&name.unwrap_or_else(|| default_name(facts.kind.name())))?;
    let exec = std::env::current_exe().context("locating the sluice binary")?;
    let mut spec = UnitSpec {
        kind: facts.kind,
        exec,
        config,
        user,
        low_port: facts.low_port,
        state_dir: facts.state_dir,
        drain_timeout: facts.drain_timeout,
        systemd_version: None,
    };
    if print {
        spec.systemd_version = systemctl::version_on_path();
        print!("{}", unit::render(&spec));
        return Ok(());
    }
    let systemd = Systemd::detect(unit_dir)?;
    spec.systemd_version = systemd.version();
    if !user_exists(&spec.user) {
        eprintln!(
            "warning: user `{0}` does not exist; create it before starting the service, e.g. \
             `useradd --system --no-create-home --shell /usr/sbin/nologin {0}`, and let it \
             read the config, certificates and keys",
            spec.user
        );
    }
    for hidden in ["/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/"] {
        if spec.config.starts_with(hidden) {
            eprintln!(
                "warning: {} is under {hidden}, which the unit hides from the service \
                 (ProtectHome=yes, PrivateTmp=yes): it would not start. Keep the config, \
                 certificates and keys under /etc/sluice (or another system directory)",
                spec.config.display()
            );
        }
    }
    std::fs::create_dir_all(&systemd.unit_dir)
        .with_context(|| format!("creating {}", systemd.unit_dir.display()))?;
    let path = systemd.unit_dir.join(&unit);
    std::fs::write(&path, unit::render(&spec))
        .with_context(|| format!("writing {}", path.display()))?;
    systemd.run(&["daemon-reload"])?;
    systemd.run(&["enable", &unit])?;
    println!(
        "installed {} (enabled at boot); start it with `sluice service start --name {}`",
        path.display(),
        unit.trim_end_matches(".service")
    );
    Ok(())
}

/// A service user name that is safe to write into `User=` and is not root: a
/// POSIX-style name (letters, digits, `_`, `-`, `.`, not starting with `-`), at most
/// 32 characters.
fn check_user(user: &str) -> anyhow::Result<()> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        anyhow::bail!(
            "--user `{}`: expected a user name (letters, digits, `_`, `-`, `.`; at most 32)",
            user.escape_debug()
        );
    }
    if user == "root" || user == "0" {
        anyhow::bail!(
            "--user root: sluice must not run as root; create a system user, e.g. \
             `useradd --system --no-create-home --shell /usr/sbin/nologin sluice`"
        );
    }
    Ok(())
}

fn user_exists(user: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(user) else {
        return false;
    };
    // SAFETY: getpwnam with a NUL-terminated name; only the pointer's nullness is read.
    !unsafe { libc::getpwnam(c.as_ptr()) }.is_null()
}

#[cfg(test)]
mod user_tests {
    #[test]
    fn unit_users_are_plain_names_and_never_root() {
        assert!(super::check_user("sluice").is_ok());
        assert!(super::check_user("sluice-edge_1.a").is_ok());
        for bad in [
            "",
            "root",
            "0",
            "-x",
            "a\nExecStartPre=/bin/sh",
            "a b",
            "x".repeat(33).as_str(),
        ] {
            assert!(super::check_user(bad).is_err(), "{bad:?}");
        }
    }
}
