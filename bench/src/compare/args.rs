//! The runner's command line: `--quick | --full`, `--out DIR`, `--name NAME`,
//! `--paths a,b` (a subset; direct is always measured), `--rounds N`, `--baseline BIN`
//! (another build of sluice, measured beside this one in every round).
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::results::Settings;

#[derive(Debug, Clone)]
pub struct Args {
    pub settings: Settings,
    pub out: PathBuf,
    pub name: Option<String>,
    pub paths: Option<Vec<String>>,
    /// Another build of sluice (say, main before a change): each selected sluice path
    /// is measured with it too, as `sluice-tcp-baseline` / `sluice-tls-baseline`.
    pub baseline: Option<PathBuf>,
}

/// The settings of a mode: `quick` fits in a few minutes, `full` is the reference.
pub fn settings(mode: &str) -> Settings {
    match mode {
        "full" => Settings {
            mode: "full".into(),
            rounds: 5,
            seconds: 5.0,
            open_loop_rate: 2000,
            hold_connections: 10_000,
            hold_seconds: 15.0,
        },
        _ => Settings {
            mode: "quick".into(),
            rounds: 3,
            seconds: 2.0,
            open_loop_rate: 2000,
            hold_connections: 2_000,
            hold_seconds: 5.0,
        },
    }
}

pub const USAGE: &str = "usage: compare (--quick | --full) [--out bench/reports] [--name NAME] [--paths sluice-tcp,bore,...] [--rounds N] [--baseline OTHER_SLUICE_BINARY]\n       compare --render RUN.json quick|full   (the report again from a run's JSON)";

pub fn parse(argv: &[String]) -> Result<Args> {
    let mut mode = None;
    let mut out = PathBuf::from("bench/reports");
    let (mut name, mut paths, mut rounds, mut baseline) = (None, None, None, None);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => mode = Some("quick"),
            "--full" => mode = Some("full"),
            "--out" => out = PathBuf::from(value()?),
            "--name" => name = Some(value()?),
            "--paths" => paths = Some(value()?.split(',').map(str::to_string).collect()),
            "--baseline" => baseline = Some(PathBuf::from(value()?)),
            "--rounds" => {
                rounds = Some(
                    value()?
                        .parse::<u32>()
                        .map_err(|e| anyhow::anyhow!("--rounds: {e}"))?,
                )
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let Some(mode) = mode else {
        bail!("choose --quick or --full\n{USAGE}")
    };
    let mut settings = settings(mode);
    if let Some(r) = rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        settings.rounds = r;
    }
    Ok(Args {
        settings,
        out,
        name,
        paths,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn modes_and_options() {
        let a = parse(&v("--quick --out /tmp/r")).unwrap();
        assert_eq!(a.settings.mode, "quick");
        assert!(a.settings.rounds >= 3);
        assert_eq!(a.out, PathBuf::from("/tmp/r"));
        let f = parse(&v("--full --paths sluice-tcp,bore --rounds 7 --name x")).unwrap();
        assert_eq!(f.settings.hold_connections, 10_000);
        assert_eq!(f.settings.rounds, 7);
        assert_eq!(f.paths.unwrap(), ["sluice-tcp", "bore"]);
        assert_eq!(f.name.as_deref(), Some("x"));
        assert!(f.baseline.is_none());
        let b = parse(&v("--quick --baseline /tmp/sluice-before")).unwrap();
        assert_eq!(b.baseline, Some(PathBuf::from("/tmp/sluice-before")));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse(&v(""))
            .unwrap_err()
            .to_string()
            .contains("--quick or --full"));
        assert!(parse(&v("--quick --out"))
            .unwrap_err()
            .to_string()
            .contains("--out needs a value"));
        assert!(parse(&v("--quick --bogus"))
            .unwrap_err()
            .to_string()
            .contains("unknown argument --bogus"));
        assert!(parse(&v("--quick --rounds 0")).is_err());
    }
}
