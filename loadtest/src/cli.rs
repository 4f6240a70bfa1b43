//! The `sluice-load` command line: clap definitions, value parsers for durations and
//! sizes, and [`main`], which turns flags into library options, runs the command,
//! prints the summary and writes `--json` / `--report`. Exit codes: 0 when the run
//! completed (failures of single connections are in the report, not the exit code),
//! 2 for bad arguments, 1 when the run could not start or finish.
use std::{
    ffi::OsString,
    io::Write,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    connect::{self, ConnectOptions},
    hold::{self, HoldOptions},
    http::{self, HttpOptions},
    report::{text, Settings},
    rr::{self, RrOptions},
    serve,
    throughput::{self, ThroughputOptions},
    tls::{self, Roots},
    ClientModel, ClientOptions, Direction, DriverChoice, LoadError, Report, RunResult, ServeMode,
    ServeOptions, Shutdown,
};

/// `sluice-load`: TCP and TLS load, honest latency, reports.
#[derive(Debug, Parser)]
#[command(name = "sluice-load", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an upstream: echo, sink or source, one worker per core.
    Serve(ServeArgs),
    /// Bulk transfer: Gbit/s per second and in total.
    Throughput(ThroughputArgs),
    /// Request/response latency on persistent connections (closed loop, or open loop with --rate).
    Rr(RrArgs),
    /// Connection-setup rate and connect-to-first-byte latency.
    Connect(ConnectArgs),
    /// Open many connections and keep them alive with a small echo.
    Hold(HoldArgs),
    /// HTTP/1.1 requests/s and latency, kept alive or a new connection per request.
    Http(HttpArgs),
}

/// Flags of every client command.
#[derive(Debug, Args)]
pub struct Common {
    /// Address of the service, HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub target: String,
    /// Measured time (e.g. 10s, 500ms, 2m; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time run before measuring starts.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Worker threads [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Source IP of every connection.
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Longest connect, handshake or exchange before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Speak TLS.
    #[arg(long)]
    pub tls: bool,
    /// Server name to send and verify [default: the target's host name].
    #[arg(long, requires = "tls")]
    pub sni: Option<String>,
    /// PEM file of CA certificates to trust [default: the Mozilla roots].
    #[arg(
        long,
        requires = "tls",
        conflicts_with = "insecure",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate.
    #[arg(long, requires = "tls")]
    pub insecure: bool,
    /// Write the JSON report here ("-" for stdout; the summary then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown report here, with its SVG charts beside it.
    #[arg(long, value_name = "FILE.md")]
    pub report: Option<PathBuf>,
    /// Runtime driver.
    #[arg(long, value_enum, default_value = "auto")]
    pub driver: DriverChoice,
    /// No progress line even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// What to do with connections.
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: ServeMode,
    /// Worker threads [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runtime driver.
    #[arg(long, value_enum, default_value = "auto")]
    pub driver: DriverChoice,
    /// Terminate TLS with this PEM certificate chain.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Stop after this long [default: run until killed].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Flags of `throughput`.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Parallel connections.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// up (server reads: sink), down (server writes: source), both (server echoes).
    #[arg(long, value_enum, default_value = "up")]
    pub direction: Direction,
    /// Bytes per write and read (e.g. 128KiB).
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    pub buffer: usize,
    /// Do not check received bytes against the pattern (for servers other than `serve`).
    #[arg(long)]
    pub no_verify: bool,
}

/// Flags of `rr`.
#[derive(Debug, Args)]
pub struct RrArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Request size (echoed back), e.g. 64, 1KiB.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Persistent connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Open loop at this many requests/s in total (latency corrected for coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client model: async tasks on --threads runtimes, or blocking: one OS thread per
    /// connection on blocking sockets (closed loop only).
    #[arg(long, value_enum, default_value = "async")]
    pub model: ClientModel,
}

/// Flags of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Connect loops at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Payload echoed on each connection (0: connect and close only, any TCP service).
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub size: usize,
    /// Open loop: start this many connections per second in total, however long each
    /// takes (latency corrected for coordinated omission). Needs enough --concurrency
    /// to keep up.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client model: async tasks on --threads runtimes, or blocking: a pool of
    /// --concurrency OS threads on blocking sockets, one connection at a time each
    /// (closed loop only; --concurrency 1 is one at a time).
    #[arg(long, value_enum, default_value = "async")]
    pub model: ClientModel,
}

/// Flags of `hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Time between keep-alive echoes on one connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Connection attempts in flight at once, per worker.
    #[arg(long, default_value_t = 256)]
    pub open_concurrency: usize,
}

/// Flags of `http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Requests in flight at once, one per connection.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Request target: path and query.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// `Host` header [default: --target as written].
    #[arg(long)]
    pub host: Option<String>,
    /// Request body bytes (with Content-Length), e.g. 1KiB.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub body: usize,
    /// A new connection for every request (`Connection: close`); latency then
    /// includes the connect.
    #[arg(long)]
    pub new_connection: bool,
}

/// Parses `10`, `1.5` (seconds), or a humantime duration such as `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 10s, 500ms, 2m"))
}

/// Parses a byte size: `64`, `4k`/`4KiB`, `1m`/`1MiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [
        ("kib", 1usize << 10),
        ("mib", 1 << 20),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| {
        lower
            .strip_suffix(suffix)
            .map(|n| (n.trim().to_string(), *m))
    })
    .unwrap_or((lower.clone(), 1));
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{t:?} is not a size; use e.g. 64, 4KiB, 1MiB"))
}

fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Resolves `--target` and builds the shared client options.
pub fn client_options(c: &Common) -> Result<ClientOptions, LoadError> {
    let target = c
        .target
        .to_socket_addrs()
        .map_err(|_| LoadError::Resolve(c.target.clone()))?
        .next()
        .ok_or_else(|| LoadError::Resolve(c.target.clone()))?;
    let tls = if c.tls {
        let host = c
            .target
            .rsplit_once(':')
            .map_or(c.target.as_str(), |(h, _)| h);
        let name = c.sni.clone().unwrap_or_else(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        let roots = match (&c.ca, c.insecure) {
            (_, true) => Roots::Insecure,
            (Some(path), false) => Roots::Certs(tls::load_certs(path)?),
            (None, false) => Roots::WebPki,
        };
        Some(tls::client_options(roots, &name)?)
    } else {
        None
    };
    Ok(ClientOptions::new(target)
        .threads(default_threads(c.threads))
        .duration(c.duration)
        .warmup(c.warmup)
        .timeout(c.timeout)
        .bind(c.bind)
        .tls(tls)
        .driver(c.driver)
        .progress(!c.quiet))
}

/// [`client_options`] for a command with a client model: the blocking model runs one
/// OS thread per client, so its thread count is `clients` (and an explicit `--threads`
/// that says otherwise is an error rather than silently ignored).
pub fn model_options(
    c: &Common,
    model: ClientModel,
    clients: usize,
) -> Result<ClientOptions, LoadError> {
    let o = client_options(c)?;
    match (model, c.threads) {
        (ClientModel::Async, _) => Ok(o),
        (ClientModel::Blocking, Some(t)) if t != clients => Err(crate::options::invalid(format!(
            "--model blocking runs one thread per client: --threads {t} does not match {clients} clients (leave --threads out)"
        ))),
        (ClientModel::Blocking, _) => Ok(o.threads(clients)),
    }
}

/// Runs the command line `args` (program name first) and returns the exit code.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let argv: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match run(cli, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ LoadError::Invalid(_)) | Err(e @ LoadError::Resolve(_)) => {
            eprintln!("sluice-load: error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("sluice-load: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, argv: Vec<String>) -> Result<(), LoadError> {
    let (name, common, settings, result): (&str, &Common, Settings, RunResult) = match &cli.command
    {
        Command::Serve(a) => return run_serve(a),
        Command::Throughput(a) => {
            let o = ThroughputOptions::new(client_options(&a.common)?)
                .streams(a.streams)
                .direction(a.direction)
                .buffer(a.buffer)
                .verify(!a.no_verify);
            (
                "throughput",
                &a.common,
                Settings::throughput(&o),
                throughput::run(&o)?,
            )
        }
        Command::Rr(a) => {
            let o = RrOptions::new(model_options(&a.common, a.model, a.connections)?)
                .size(a.size)
                .connections(a.connections)
                .rate(a.rate)
                .model(a.model);
            ("rr", &a.common, Settings::rr(&o), rr::run(&o)?)
        }
        Command::Connect(a) => {
            let o = ConnectOptions::new(model_options(&a.common, a.model, a.concurrency)?)
                .concurrency(a.concurrency)
                .size(a.size)
                .rate(a.rate)
                .model(a.model);
            (
                "connect",
                &a.common,
                Settings::connect(&o),
                connect::run(&o)?,
            )
        }
        Command::Hold(a) => {
            let o = HoldOptions::new(client_options(&a.common)?)
                .connections(a.connections)
                .interval(a.interval)
                .open_concurrency(a.open_concurrency);
            ("hold", &a.common, Settings::hold(&o), hold::run(&o)?)
        }
        Command::Http(a) => {
            let o = HttpOptions::new(client_options(&a.common)?)
                .connections(a.connections)
                .path(a.path.clone())
                .method(a.method.clone())
                .host(a.host.clone().unwrap_or_else(|| a.common.target.clone()))
                .body(a.body)
                .new_connection(a.new_connection);
            ("http", &a.common, Settings::http(&o), http::run(&o)?)
        }
    };
    let report = Report::new(name, argv, settings, &result);
    let summary = text::summary(&report);
    match &common.json {
        Some(p) if p.as_os_str() == "-" => {
            eprint!("{summary}");
            println!("{}", report.to_json()?);
        }
        Some(p) => {
            print!("{summary}");
            report.write_json(p)?;
        }
        None => print!("{summary}"),
    }
    if let Some(p) = &common.report {
        report.write_markdown(p)?;
    }
    Ok(())
}

fn run_serve(a: &ServeArgs) -> Result<(), LoadError> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            tls::load_certs(cert)?,
            tls::load_key(key)?,
        )?),
        _ => None,
    };
    let opts = ServeOptions::new(a.listen)
        .mode(a.mode)
        .threads(default_threads(a.threads))
        .driver(a.driver)
        .tls(tls);
    let threads = opts.threads;
    let handle = serve::serve(opts, Shutdown::new())?;
    println!(
        "listening on {} ({:?}, {} workers, {}{})",
        handle.local_addr(),
        a.mode,
        threads,
        handle.driver().name(),
        if a.tls_cert.is_some() { ", TLS" } else { "" }
    );
    let _ = std::io::stdout().flush();
    match a.duration {
        Some(d) => {
            std::thread::sleep(d);
            handle.stop()
        }
        None => handle.wait(),
    }
}
