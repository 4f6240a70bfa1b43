//! The paths under comparison and how each one is started on loopback: its own
//! generated config, the edge-side process(es) first, then the agent-side one(s), timed
//! from the agent's start until an echo gets through (the "new agent usable" figure).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::configs::{self, Public, RatholeTransport, Upstreams};
use super::net::{free_addrs, wait_accepting, wait_echo, wait_http};
use super::procs::Proc;

/// bore's server always listens for clients on this port (fixed in bore).
pub const BORE_CONTROL_PORT: u16 = 7835;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What kind of path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    /// `baseline`: the build given with `--baseline`, not this tree's.
    Sluice {
        tls: bool,
        baseline: bool,
    },
    Haproxy,
    Rathole {
        transport: RatholeKind,
    },
    Bore,
}

/// rathole's data-channel transports compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatholeKind {
    Tcp,
    Tls,
    Noise,
}

/// Every path, in the order they are interleaved: (key, label, kind).
pub const ALL: [(&str, &str, Kind); 10] = [
    ("direct", "direct", Kind::Direct),
    (
        "sluice-tcp",
        "sluice, tcp transport",
        Kind::Sluice {
            tls: false,
            baseline: false,
        },
    ),
    (
        "sluice-tcp-baseline",
        "sluice baseline build, tcp transport",
        Kind::Sluice {
            tls: false,
            baseline: true,
        },
    ),
    (
        "sluice-tls",
        "sluice, tls transport",
        Kind::Sluice {
            tls: true,
            baseline: false,
        },
    ),
    (
        "sluice-tls-baseline",
        "sluice baseline build, tls transport",
        Kind::Sluice {
            tls: true,
            baseline: true,
        },
    ),
    ("haproxy-x2", "HAProxy x2 (splice)", Kind::Haproxy),
    (
        "rathole-tcp",
        "rathole, tcp",
        Kind::Rathole {
            transport: RatholeKind::Tcp,
        },
    ),
    (
        "rathole-tls",
        "rathole, tls",
        Kind::Rathole {
            transport: RatholeKind::Tls,
        },
    ),
    (
        "rathole-noise",
        "rathole, noise",
        Kind::Rathole {
            transport: RatholeKind::Noise,
        },
    ),
    ("bore", "bore", Kind::Bore),
];

/// Files and binaries every path start needs.
pub struct Env {
    pub dir: PathBuf,
    pub sluice: PathBuf,
    /// The `--baseline` build, when one was given.
    pub baseline: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub rathole: Option<PathBuf>,
    pub bore: Option<PathBuf>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pkcs12: PathBuf,
    pub pkcs12_password: String,
    pub token: String,
    pub token_hash: String,
    pub noise: Option<(String, String)>,
    pub up: Upstreams,
    pub maxconn: u32,
}

/// A started path: its public addresses and processes (stopped when dropped).
pub struct Running {
    pub key: &'static str,
    pub public: Public,
    pub edge: Vec<Proc>,
    pub agent: Vec<Proc>,
    /// From the agent's start until an echo got through (none for direct).
    pub usable: Option<Duration>,
}

impl Running {
    pub fn edge_pids(&self) -> Vec<u32> {
        self.edge.iter().map(Proc::pid).collect()
    }
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agent.iter().map(Proc::pid).collect()
    }
    pub fn all_pids(&self) -> Vec<u32> {
        self.edge_pids()
            .into_iter()
            .chain(self.agent_pids())
            .collect()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn need<'a>(bin: &'a Option<PathBuf>, what: &str) -> Result<&'a PathBuf> {
    bin.as_ref()
        .ok_or_else(|| anyhow!("{what} is not installed"))
}

/// Edge side already up: start the agent side with `agent`, time until usable, then
/// wait for the sink side to accept too.
fn finish(
    key: &'static str,
    public: Public,
    edge: Vec<Proc>,
    agent: impl FnOnce() -> Result<Vec<Proc>>,
) -> Result<Running> {
    let t0 = Instant::now();
    let mut r = Running {
        key,
        public,
        edge,
        agent: Vec::new(),
        usable: None,
    };
    r.agent = agent()?;
    let usable = wait_echo(public.echo, t0, START_TIMEOUT).map_err(|e| {
        let logs: Vec<String> = r
            .edge
            .iter()
            .chain(&r.agent)
            .map(|p| format!("{}: {}", p.name, p.log_tail()))
            .collect();
        anyhow!("{key}: {e}\n{}", logs.join("\n"))
    })?;
    r.usable = Some(usable);
    wait_accepting(public.sink, START_TIMEOUT)?;
    if let Some(http) = public.http {
        wait_http(http, configs::HTTP_HOST, START_TIMEOUT)?;
    }
    Ok(r)
}

/// Free public addresses for a path: echo and sink, and HTTP when `http`.
fn public_addrs(http: bool) -> Result<Public> {
    let a = free_addrs(3)?;
    Ok(Public {
        echo: a[0],
        sink: a[1],
        http: http.then_some(a[2]),
    })
}

/// Starts one path for round `round`.
pub fn start(key: &'static str, kind: Kind, env: &Env, round: u32) -> Result<Running> {
    let tag = format!("{key}-r{round}");
    let dir = &env.dir;
    match kind {
        Kind::Direct => Ok(Running {
            key,
            public: Public {
                echo: env.up.echo,
                sink: env.up.sink,
                http: Some(env.up.http),
            },
            edge: vec![],
            agent: vec![],
            usable: None,
        }),
        Kind::Sluice { tls, baseline } => {
            let bin = if baseline {
                need(&env.baseline, "the --baseline build")?
            } else {
                &env.sluice
            };
            let control = free_addrs(1)?[0];
            let public = public_addrs(true)?;
            let e = write(
                dir,
                &format!("{tag}-edge.yml"),
                &configs::sluice_edge(control, &env.cert, &env.key, &env.token_hash, public),
            )?;
            let transport = if tls { "tls" } else { "tcp" };
            let a = write(
                dir,
                &format!("{tag}-agent.yml"),
                &configs::sluice_agent(&env.token, control, &env.ca, transport, env.up),
            )?;
            let args = |role: &str, cfg: &Path| {
                vec![
                    "--log-level".into(),
                    "warn".into(),
                    role.into(),
                    "--config".into(),
                    s(cfg),
                ]
            };
            let edge = Proc::spawn(&format!("{tag}-edge"), dir, bin, &args("edge", &e))?;
            wait_accepting(control, START_TIMEOUT)?;
            finish(key, public, vec![edge], || {
                Ok(vec![Proc::spawn(
                    &format!("{tag}-agent"),
                    dir,
                    bin,
                    &args("agent", &a),
                )?])
            })
        }
        Kind::Haproxy => {
            let bin = need(&env.haproxy, "haproxy")?;
            let public = public_addrs(true)?;
            let mid = free_addrs(3)?;
            let e = write(
                dir,
                &format!("{tag}-edge.cfg"),
                &configs::haproxy_hop(
                    &[(public.echo, mid[0]), (public.sink, mid[1])],
                    public.http.map(|http| (http, mid[2])),
                    env.maxconn,
                ),
            )?;
            let a = write(
                dir,
                &format!("{tag}-agent.cfg"),
                &configs::haproxy_hop(
                    &[(mid[0], env.up.echo), (mid[1], env.up.sink)],
                    Some((mid[2], env.up.http)),
                    env.maxconn,
                ),
            )?;
            let args = |cfg: &Path| vec!["-db".into(), "-f".into(), s(cfg)];
            let edge = Proc::spawn(&format!("{tag}-edge"), dir, bin, &args(&e))?;
            wait_accepting(public.echo, START_TIMEOUT)?;
            finish(key, public, vec![edge], || {
                Ok(vec![Proc::spawn(
                    &format!("{tag}-agent"),
                    dir,
                    bin,
                    &args(&a),
                )?])
            })
        }
        Kind::Rathole { transport } => {
            let bin = need(&env.rathole, "rathole")?;
            let t = match transport {
                RatholeKind::Tcp => RatholeTransport::Tcp,
                RatholeKind::Tls => RatholeTransport::Tls {
                    pkcs12: s(&env.pkcs12),
                    password: env.pkcs12_password.clone(),
                    ca: s(&env.ca),
                },
                RatholeKind::Noise => {
                    let (private_key, public_key) = env
                        .noise
                        .clone()
                        .ok_or_else(|| anyhow!("no noise key pair (rathole --genkey failed)"))?;
                    RatholeTransport::Noise {
                        private_key,
                        public_key,
                    }
                }
            };
            let control = free_addrs(1)?[0];
            let public = public_addrs(false)?;
            let e = write(
                dir,
                &format!("{tag}-server.toml"),
                &configs::rathole_server(control, &env.token, &t, public),
            )?;
            let a = write(
                dir,
                &format!("{tag}-client.toml"),
                &configs::rathole_client(control, &env.token, &t, env.up),
            )?;
            let edge = Proc::spawn(
                &format!("{tag}-server"),
                dir,
                bin,
                &["--server".into(), s(&e)],
            )?;
            wait_accepting(control, START_TIMEOUT)?;
            finish(key, public, vec![edge], || {
                Ok(vec![Proc::spawn(
                    &format!("{tag}-client"),
                    dir,
                    bin,
                    &["--client".into(), s(&a)],
                )?])
            })
        }
        Kind::Bore => {
            let bin = need(&env.bore, "bore")?;
            let control: SocketAddr = ([127, 0, 0, 1], BORE_CONTROL_PORT).into();
            if std::net::TcpListener::bind(control).is_err() {
                bail!("port {BORE_CONTROL_PORT} (bore's fixed control port) is busy");
            }
            let public = public_addrs(false)?;
            let (lo, hi) = (
                public.echo.port().min(public.sink.port()),
                public.echo.port().max(public.sink.port()),
            );
            let secret = env.token.clone();
            let edge = Proc::spawn(
                &format!("{tag}-server"),
                dir,
                bin,
                &configs::bore_server_args(lo, hi, &secret),
            )?;
            wait_accepting(control, START_TIMEOUT)?;
            let echo_args = configs::bore_local_args(env.up.echo, public.echo.port(), &secret);
            let sink_args = configs::bore_local_args(env.up.sink, public.sink.port(), &secret);
            // One `bore local` per exposed port; the echo one is timed, the sink one
            // starts right after it.
            finish(key, public, vec![edge], || {
                let echo = Proc::spawn(&format!("{tag}-local-echo"), dir, bin, &echo_args)?;
                let sink = Proc::spawn(&format!("{tag}-local-sink"), dir, bin, &sink_args)?;
                Ok(vec![echo, sink])
            })
        }
    }
}
