//! The comparison run: set up, then for each round start every path, run each
//! workload through every path in turn (A B C … A B C …), hold connections path by
//! path, stop the round's paths; finally write the report, charts and raw JSON.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::args::Args;
use super::configs::Upstreams;
use super::load;
use super::machine;
use super::metrics;
use super::paths::{self, Env, Kind, Running};
use super::peers;
use super::procs::{check_interrupt, raise_nofile};
use super::report;
use super::results::{PathInfo, RunData};
use super::setup;
use super::workloads::{self, Workload};

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "undated".into())
}

fn scratch_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sluice-compare.{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Runs the whole comparison; returns the report's path.
pub fn run(args: Args, cmd: &str) -> Result<PathBuf> {
    let st = args.settings.clone();
    let work = scratch_dir()?;
    eprintln!("compare: scratch directory {}", work.display());
    let nofile = raise_nofile();
    let bin = setup::build_sluice()?;
    let (sluice, sluice_load) = (bin.join("sluice"), bin.join("sluice-load"));

    let cache = setup::workspace_root().join("bench/.peers");
    let chosen =
        |k: &str| k == "direct" || args.paths.as_ref().is_none_or(|p| p.iter().any(|x| x == k));
    // A baseline path runs beside its sluice path, when a baseline build was given.
    let wanted = |k: &str| match k.strip_suffix("-baseline") {
        Some(current) => args.baseline.is_some() && chosen(current),
        None => chosen(k),
    };
    let want_any = |prefix: &str| {
        paths::ALL
            .iter()
            .any(|(k, _, _)| k.starts_with(prefix) && wanted(k))
    };
    let haproxy = want_any("haproxy").then(|| peers::haproxy(&work));
    let rathole =
        want_any("rathole").then(|| peers::cargo_peer("rathole", "rathole", &cache, &work));
    let bore = want_any("bore").then(|| peers::cargo_peer("bore-cli", "bore", &cache, &work));
    let ok = |p: &Option<peers::Peer>| p.as_ref().and_then(|p| p.bin.clone().ok());

    let password = setup::certificates(&work)?;
    let (token, token_hash) = setup::sluice_token(&sluice)?;
    let noise = ok(&rathole).and_then(|r| setup::noise_keys(&r));
    let (_echo, echo) = setup::upstream(&sluice_load, &work, "echo")?;
    let (_sink, sink) = setup::upstream(&sluice_load, &work, "sink")?;
    let (_http, http) = setup::upstream(&sluice_load, &work, "http")?;
    let env = Env {
        dir: work.clone(),
        sluice: sluice.clone(),
        baseline: args.baseline.clone(),
        haproxy: ok(&haproxy),
        rathole: ok(&rathole),
        bore: ok(&bore),
        ca: work.join("ca.pem"),
        cert: work.join("edge.crt"),
        key: work.join("edge.key"),
        pkcs12: work.join("identity.p12"),
        pkcs12_password: password,
        token,
        token_hash,
        noise,
        up: Upstreams { echo, sink, http },
        maxconn: (st.hold_connections * 3).max(4096),
    };

    let version_for = |kind: Kind| -> (Option<String>, Option<String>) {
        let peer = match kind {
            Kind::Direct => return (None, None),
            Kind::Sluice { baseline, .. } => {
                let bin = if baseline {
                    match &args.baseline {
                        Some(b) => b,
                        None => return (None, Some("no --baseline build given".into())),
                    }
                } else {
                    &sluice
                };
                let version = peers::version_of(bin, &["--version"]);
                let version = match baseline {
                    true => version.map(|v| format!("{v} ({})", bin.display())),
                    false => version,
                };
                return (version, None);
            }
            Kind::Haproxy => &haproxy,
            Kind::Rathole { .. } => &rathole,
            Kind::Bore => &bore,
        };
        match peer {
            Some(p) => (p.version.clone(), p.bin.clone().err()),
            None => (None, Some("not selected".into())),
        }
    };
    let mut data = RunData {
        schema: "sluice-bench/compare/v1".into(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", st.mode, today())),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        settings: st.clone(),
        machine: machine::describe(),
        paths: Vec::new(),
        records: Vec::new(),
        raw: Vec::new(),
    };
    let mut selected = Vec::new();
    for (key, label, kind) in paths::ALL {
        let (version, problem) = version_for(kind);
        let status = if !wanted(key) {
            continue;
        } else if let Some(p) = problem {
            eprintln!("compare: SKIPPING {key} ({label}): {p}; its row is left out of the report");
            p
        } else if kind
            == (Kind::Rathole {
                transport: paths::RatholeKind::Noise,
            })
            && env.noise.is_none()
        {
            eprintln!(
                "compare: SKIPPING {key} ({label}): no Noise key pair (rathole --genkey failed)"
            );
            "no Noise key pair (rathole --genkey failed)".into()
        } else {
            selected.push((key, kind));
            "ok".into()
        };
        data.paths.push(PathInfo {
            key: key.into(),
            label: label.into(),
            status,
            version,
        });
    }
    eprintln!(
        "compare: open files limit {nofile}; paths: {}",
        selected.iter().map(|p| p.0).collect::<Vec<_>>().join(" ")
    );

    let mut failures: Vec<(String, String)> = Vec::new();
    let mut started_ok: Vec<&str> = Vec::new();
    for round in 0..st.rounds {
        check_interrupt()?;
        eprintln!(
            "compare: round {}/{} (load {})",
            round + 1,
            st.rounds,
            machine::loadavg()
        );
        let mut running: Vec<Running> = Vec::new();
        for (key, kind) in &selected {
            match paths::start(key, *kind, &env, round) {
                Ok(r) => {
                    if let Some(u) = r.usable {
                        data.push(round, key, metrics::AGENT_UP, u.as_secs_f64() * 1e3);
                    }
                    started_ok.push(key);
                    running.push(r);
                }
                Err(e) => {
                    eprintln!("compare: {key} did not start: {e:#}");
                    failures.push((
                        key.to_string(),
                        format!("round {round}: did not start: {e}"),
                    ));
                }
            }
            check_interrupt()?;
        }
        let mut errors = vec![0.0; running.len()];
        for w in workloads::ROUND {
            for (i, r) in running.iter().enumerate() {
                if w.args(&r.public, &data.settings).is_none() {
                    continue;
                }
                check_interrupt()?;
                match one(&mut data, &work, &sluice_load, r, w, round) {
                    Ok(e) => errors[i] += e,
                    Err(e) => {
                        eprintln!("compare: {} {}: {e:#}", r.key, w.name());
                        failures.push((
                            r.key.to_string(),
                            format!("round {round} {}: {e}", w.name()),
                        ));
                    }
                }
            }
        }
        for (r, mut e) in running.into_iter().zip(errors) {
            check_interrupt()?;
            match one(&mut data, &work, &sluice_load, &r, Workload::Hold, round) {
                Ok(x) => e += x,
                Err(err) => {
                    failures.push((r.key.to_string(), format!("round {round} hold: {err}")))
                }
            }
            data.push(round, r.key, metrics::ERRORS, e);
            drop(r); // stops the path's processes before the next path holds
        }
    }
    for p in &mut data.paths {
        if p.status == "ok" && !started_ok.contains(&p.key.as_str()) {
            let why = failures
                .iter()
                .find(|f| f.0 == p.key)
                .map_or("never started".to_string(), |f| f.1.clone());
            p.status = why.lines().next().unwrap_or_default().to_string();
        }
    }
    data.machine.loadavg_end = machine::loadavg();
    let out = write(&data, &args.out, cmd, &failures)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(out)
}

/// One workload through one path, its figures recorded; returns its error count.
fn one(
    data: &mut RunData,
    work: &Path,
    sluice_load: &Path,
    r: &Running,
    w: Workload,
    round: u32,
) -> Result<f64> {
    let st = &data.settings;
    let json = work.join(format!("{}-r{round}-{}.json", r.key, w.name()));
    let limit = Duration::from_secs_f64(st.seconds.max(st.hold_seconds) + 60.0);
    let watch = r.all_pids();
    let args = w
        .args(&r.public, st)
        .with_context(|| format!("{} forwards no HTTP", r.key))?;
    let run = load::run(sluice_load, &args, &json, limit, &watch)?;
    for (m, v) in w.figures(&run, r.edge.len(), !watch.is_empty()) {
        data.push(round, r.key, m, v);
    }
    let e = workloads::errors(&run);
    data.raw
        .push(load::slim(run.report, r.key, round, w.name()));
    Ok(e)
}

/// Renders the report, charts and summary again from a run's raw JSON (`--render`),
/// e.g. after a change to the report's layout; writes next to the JSON.
pub fn rerender(json: &Path, cmd: &str) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let data: RunData = serde_json::from_str(&text).context("parsing the run's JSON")?;
    write(&data, json.parent().unwrap_or(Path::new(".")), cmd, &[])
}

/// Writes `<out>/<name>.md`, `<name>.json` and the charts; returns the Markdown path.
fn write(data: &RunData, out: &Path, cmd: &str, failures: &[(String, String)]) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = report::render(data, cmd);
    if !failures.is_empty() {
        md.push_str("\n## Failures during the run\n\n");
        for (k, f) in failures {
            md.push_str(&format!(
                "- {k}: {}\n",
                f.lines().next().unwrap_or_default()
            ));
        }
    }
    let md_path = out.join(format!("{}.md", data.name));
    std::fs::write(&md_path, md)?;
    std::fs::write(
        out.join(format!("{}.json", data.name)),
        serde_json::to_string_pretty(data)?,
    )?;
    for (suffix, svg) in report::charts(data) {
        std::fs::write(out.join(format!("{}-{suffix}.svg", data.name)), svg)?;
    }
    println!("{}", report::summary_table(data));
    println!("{}", report::http_table(data));
    Ok(md_path)
}
