//! The `sluice` command: parses flags and config, then calls the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;

use clap::{Parser, Subcommand};
use sluice_proxy::{
    agent,
    config::{agent::AgentSettings, edge::EdgeSettings},
    demo, drain, edge,
    logging::{self, LogFormat},
    runtime::Driver,
    signals, token,
};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Self-hosted edge proxy for reverse tunnels",
    after_help = "Examples:\n  \
        sluice demo                                   # edge + agent + echo and HTTP upstreams on loopback\n  \
        sluice certs new --dir certs --name edge.example.com\n  \
        sluice token new                              # a token and its hash\n  \
        sluice config check edge.yml\n  \
        sluice edge --config /etc/sluice/edge.yml\n  \
        sluice --driver legacy agent --config agent.yml   # --driver/--pump go before the subcommand\n  \
        sluice service install --config /etc/sluice/edge.yml --user sluice"
)]
struct Cli {
    /// Log filter (e.g. `info`, `sluice_proxy=debug`); default info.
    #[arg(long, global = true, env = "SLUICE_LOG")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    /// io_uring (`uring`), epoll (`legacy`), or `auto` (edge, agent, demo).
    #[arg(long, env = "SLUICE_DRIVER", default_value = "auto")]
    driver: Driver,
    /// How plain-TCP hops move bytes: `splice` (zero-copy) or `copy` (for comparison)
    /// (edge, agent, demo).
    #[arg(long, env = "SLUICE_PUMP", default_value = "splice")]
    pump: sluice_proxy::io::Pump,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge (public side).
    #[command(
        after_help = "Example:\n  sluice edge --config /etc/sluice/edge.yml\n\n\
        SIGHUP (or the file changing) reloads edge.yml; SIGTERM drains, a second one exits."
    )]
    Edge {
        /// Path to edge.yml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the agent (private side).
    #[command(
        after_help = "Example:\n  sluice agent --config /etc/sluice/agent.yml\n\n\
        SIGTERM leaves the edge and lets streams finish; exit status 2: the edge refuses this \
        agent's token or every endpoint for good."
    )]
    Agent {
        /// Path to agent.yml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the edge or agent as a systemd service (install, uninstall, start, stop, …).
    Service {
        #[command(subcommand)]
        command: sluice_proxy::service::ServiceCommand,
    },
    /// Authtokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The edge's control-plane state: move it between SQLite and a fleet's etcd.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Certificates for the agent port (and mTLS clients), from a private CA.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Edge + agent + an echo upstream (TCP endpoint) and an HTTP upstream (HTTP endpoint,
    /// on the next port up) on loopback, ready to connect to.
    Demo {
        /// Public port of the demo endpoint (busy: a free one is used).
        #[arg(long, default_value_t = 21001)]
        port: u16,
        /// Data channel transport (`tls` or `tcp`).
        #[arg(long, default_value = "tls")]
        transport: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate an edge or agent config without starting anything.
    #[command(
        after_help = "Example:\n  sluice config check /etc/sluice/edge.yml   # every problem, with its line"
    )]
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// Convert an ngrok v2 agent file (`tunnels:`) into a sluice agent file and the
    /// edge endpoints it implies.
    #[command(
        after_help = "Example:\n  sluice config convert ngrok.yml --connect-url edge.acme.example:4443 --out-dir converted\n  \
        # converted/agent.yml, converted/edge-endpoints.yml (add them under edge.yml's endpoints:)"
    )]
    Convert {
        /// The ngrok v2 file.
        file: PathBuf,
        /// The edge's agent port, for the agent file (`host:port`).
        #[arg(long)]
        connect_url: Option<String>,
        /// Write agent.yml and edge-endpoints.yml here (default: both to stdout).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write every API-made object (token hashes included) and the audit log of the
    /// state edge.yml names (state_dir or state.etcd) as one JSON document.
    #[command(
        after_help = "Example (SQLite to etcd):\n  sluice state export --config edge-sqlite.yml --out state.json\n  \
        sluice state import --config edge-etcd.yml state.json"
    )]
    Export {
        /// The edge config naming the state.
        #[arg(long)]
        config: PathBuf,
        /// Write here (created with mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write an exported state into the state edge.yml names, which must hold no
    /// objects yet. Running edges of a fleet apply it at once.
    Import {
        /// The edge config naming the target state.
        #[arg(long)]
        config: PathBuf,
        /// The exported document.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a CA, the edge's certificate for every --name, and client certificates:
    /// `sluice certs new --dir certs --name edge.example.com`. Put edge.crt/edge.key in
    /// edge.yml (agents.tls) and ca.crt in every agent.yml (agent.connect_cas).
    New {
        /// Directory to write into (created; existing files are never overwritten).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A DNS name or IP address agents dial the edge by (repeat for several).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Issue a client certificate with this name too (mTLS; repeat for several).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Days the certificates stay valid.
        #[arg(long, default_value_t = sluice_proxy::certs::VALID_DAYS)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh token and, on the next line, the hash to put in edge.yml.
    #[command(
        after_help = "Example:\n  sluice token new > token.txt   # line 1 to agent.yml, line 2 to edge.yml"
    )]
    New,
    /// Print the `sha256:` hash of a token read from standard input (first line), so
    /// it never shows in the process list or shell history: `sluice token hash < file`.
    Hash {
        /// The token; `-` or nothing: read it from standard input. (A token given here
        /// is visible to other users of the machine; a warning says so.)
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token { command } => {
            match command {
                TokenCommand::New => {
                    let t = token::generate();
                    println!("{}", t.expose());
                    println!("{}", token::TokenHash::of(t.expose()));
                }
                TokenCommand::Hash { token: t } => {
                    let t = match t.as_deref() {
                        None | Some("-") => {
                            let mut line = String::new();
                            std::io::stdin()
                                .read_line(&mut line)
                                .context("reading the token from standard input")?;
                            let t = line.trim().to_string();
                            anyhow::ensure!(!t.is_empty(), "no token on standard input");
                            t
                        }
                        Some(t) => {
                            eprintln!(
                                "warning: a token on the command line is visible to other users \
                                 (process list, shell history); pipe it: `sluice token hash < FILE`"
                            );
                            t.to_string()
                        }
                    };
                    println!("{}", token::TokenHash::of(&t));
                }
            }
            Ok(())
        }
        Command::Service { command } => sluice_proxy::service::run(command),
        Command::Certs {
            command:
                CertsCommand::New {
                    dir,
                    names,
                    clients,
                    days,
                },
        } => {
            let written = sluice_proxy::certs::make(&sluice_proxy::certs::CertRequest {
                dir: dir.clone(),
                names,
                clients,
                days,
            })?;
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            println!(
                "edge.yml:  agents: {{ tls: {{ cert: {0}/edge.crt, key: {0}/edge.key }} }}\n\
                 agent.yml: agent: {{ connect_cas: {0}/ca.crt }}   (copy ca.crt to the agent; keep ca.key offline)",
                dir.display()
            );
            Ok(())
        }
        Command::State { command } => {
            logging::init(cli.log_level.as_deref(), cli.log_format, None);
            run_state(command)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let report = sluice_proxy::config::check::check_file(&file)?;
            for w in &report.warnings {
                println!("warning: {}: {w}", file.display());
            }
            for p in &report.problems {
                println!("{p}");
            }
            match report.problems.len() {
                0 => println!("{}: valid {} config", file.display(), report.kind),
                n => anyhow::bail!(
                    "{}: {n} problem(s) in this {} config",
                    file.display(),
                    report.kind
                ),
            }
            Ok(())
        }
        Command::Config {
            command:
                ConfigCommand::Convert {
                    file,
                    connect_url,
                    out_dir,
                },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let converted =
                sluice_proxy::config::convert::convert_v2(&text, connect_url.as_deref())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for note in &converted.notes {
                eprintln!("note: {note}");
            }
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    for (name, text) in [
                        ("agent.yml", &converted.agent),
                        ("edge-endpoints.yml", &converted.edge_endpoints),
                    ] {
                        let path = dir.join(name);
                        std::fs::write(&path, text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                }
                None => {
                    println!("{}", converted.agent);
                    println!("{}", converted.edge_endpoints);
                }
            }
            Ok(())
        }
        Command::Edge { config } => {
            let mut settings = EdgeSettings::load(&config)?;
            settings.pump = cli.pump;
            logging::init(
                cli.log_level.as_deref(),
                cli.log_format,
                Some(&settings.edge_id),
            );
            signals::block_with_hangup();
            run_edge(settings, &config, cli.driver)
        }
        Command::Agent { config } => {
            let mut settings = AgentSettings::load(&config)?;
            settings.pump = cli.pump;
            // The command line (and SLUICE_LOG) over the file's ngrok-style keys.
            let file = &settings.logging;
            let level = cli
                .log_level
                .clone()
                .or_else(|| file.level.map(|l| l.filter().to_owned()));
            let format = match (cli.log_format, file.format) {
                (LogFormat::Auto, Some(f)) => f.format(),
                (format, _) => format,
            };
            logging::init_to(level.as_deref(), format, None, &file.target)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            for warning in &settings.warnings {
                tracing::warn!(file = %config.display(), "{warning}");
            }
            signals::block_with_hangup();
            let drain_timeout = settings.drain_timeout;
            let agent = agent::start(settings, cli.driver)?;
            let sig = loop {
                match signals::wait_with_hangup() {
                    signals::Signal::Terminate(name) => break name,
                    signals::Signal::Hangup => tracing::warn!(
                        config = %config.display(),
                        "SIGHUP: the agent does not reload agent.yml; restart it to apply changes"
                    ),
                }
            };
            drain_after("agent", sig, drain_timeout, agent.in_flight(), || {
                agent.leave_edge()
            });
            Ok(())
        }
        Command::Demo { port, transport } => {
            logging::init(cli.log_level.as_deref(), cli.log_format, None);
            signals::block_termination_signals();
            let d = demo::start(port, &transport, cli.driver)?;
            println!("sluice demo: edge, agent, echo and hello upstreams are running");
            println!(
                "  public endpoint  tcp://{}  (loopback clients only)",
                d.public_addr
            );
            println!(
                "  http endpoint    http://localhost:{}  (loopback clients only)",
                d.http_addr.port()
            );
            println!("  agent port       {}", d.agent_addr);
            println!("  echo upstream    {}", d.upstream_addr);
            println!(
                "  console          http://{}/console  (API key: {})",
                d.admin_addr, d.admin_key
            );
            println!("  configs          {}", d.dir.display());
            println!(
                "try it:  echo hello | nc -q1 {} {}",
                d.public_addr.ip(),
                d.public_addr.port()
            );
            println!("     and:  curl http://localhost:{}/", d.http_addr.port());
            println!("Ctrl-C stops the demo.");
            signals::wait_for_termination();
            let _ = std::fs::remove_dir_all(&d.dir);
            Ok(())
        }
    }
}

/// Runs the edge with its control plane (state, admin API, reloads) until SIGINT or
/// SIGTERM, then drains. SIGHUP reloads edge.yml.
fn run_edge(
    settings: EdgeSettings,
    config: &std::path::Path,
    driver: Driver,
) -> anyhow::Result<()> {
    let drain_timeout = settings.drain_timeout;
    let sluice_proxy::managed_edge::ManagedEdge {
        edge,
        plane,
        in_fleet,
        ..
    } = sluice_proxy::managed_edge::start(settings, config, driver)?;
    let sig = loop {
        match signals::wait_with_hangup() {
            signals::Signal::Hangup => {
                let _ = plane.reload("SIGHUP");
            }
            signals::Signal::Terminate(name) => break name,
        }
    };
    tracing::info!(role = "edge", signal = sig, ?drain_timeout, "edge draining");
    if in_fleet {
        leave_fleet(&edge, drain_timeout);
    }
    edge.stop_accepting();
    let end = drain::wait(&edge.shared.in_flight, drain_timeout);
    tracing::info!(role = "edge", ?end, "edge stopped");
    Ok(())
}

/// Longest a fleet edge waits, on SIGTERM, for its agents to move their sessions to
/// other edges before it stops accepting (bounded by `drain_timeout` too).
const FLEET_LEAVE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Least a fleet edge stays in service after SIGTERM (not ready, still accepting), so
/// a balancer polling `/readyz` takes it out of rotation before its listeners close.
const FLEET_LEAVE_MIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A fleet edge's first step on SIGTERM: not ready any more, agents told to move, and
/// public connections still served (forwarded once the sessions are elsewhere) for at
/// least [`FLEET_LEAVE_MIN`], then until no session is left here or the grace ends.
fn leave_fleet(edge: &edge::EdgeHandle, drain_timeout: std::time::Duration) {
    let grace = FLEET_LEAVE_GRACE.min(drain_timeout / 2);
    let least = FLEET_LEAVE_MIN.min(grace);
    let started = std::time::Instant::now();
    edge.leave_fleet(grace);
    while started.elapsed() < grace
        && (started.elapsed() < least || !edge.shared.registry.sessions().is_empty())
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = edge.shared.registry.sessions().len();
    tracing::info!(after = ?started.elapsed(), sessions_left = left, "leaving the fleet: agents moved; closing public listeners");
}

/// `sluice state export|import`.
fn run_state(command: StateCommand) -> anyhow::Result<()> {
    use sluice_proxy::state::snapshot;
    match command {
        StateCommand::Export { config, out } => {
            let settings = EdgeSettings::load(&config)?;
            let store = sluice_proxy::state::open(&settings, false)?;
            anyhow::ensure!(
                store.status().loaded,
                "the state is not loaded (etcd does not answer); nothing exported"
            );
            let snapshot = snapshot::export(store.as_ref())?;
            let text = serde_json::to_string_pretty(&snapshot)?;
            match out {
                None => println!("{text}"),
                Some(path) => {
                    use std::{io::Write, os::unix::fs::OpenOptionsExt};
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    f.write_all(text.as_bytes())?;
                    f.write_all(b"\n")?;
                }
            }
            eprintln!(
                "exported {} endpoints, {} reserved addresses, {} service users, {} authtokens, {} URL owners, {} events from {}",
                snapshot.endpoints.len(),
                snapshot.reserved_addrs.len(),
                snapshot.service_users.len(),
                snapshot.authtokens.len(),
                snapshot.internal_url_owners.len(),
                snapshot.events.len(),
                snapshot.source
            );
            Ok(())
        }
        StateCommand::Import { config, file } => {
            let settings = EdgeSettings::load(&config)?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let snapshot: snapshot::Snapshot = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a state export: {e}", file.display()))?;
            let mut store = sluice_proxy::state::open(&settings, false)?;
            anyhow::ensure!(
                store.status().loaded,
                "the target state is not loaded (etcd does not answer); nothing imported"
            );
            let done = snapshot::import(store.as_mut(), snapshot, "cli:state-import")?;
            eprintln!(
                "imported {} objects and {} events into {}",
                done.objects,
                done.events,
                store.status().backend
            );
            Ok(())
        }
    }
}

/// Drains after the termination signal `sig`: `stop_new_work`, then waits for the
/// work in flight, up to `drain_timeout` (a second signal ends the wait).
fn drain_after(
    role: &'static str,
    sig: &'static str,
    drain_timeout: std::time::Duration,
    in_flight: &drain::InFlight,
    stop_new_work: impl FnOnce(),
) {
    tracing::info!(role, signal = sig, ?drain_timeout, "{role} draining");
    stop_new_work();
    let end = drain::wait(in_flight, drain_timeout);
    tracing::info!(role, ?end, "{role} stopped");
}
