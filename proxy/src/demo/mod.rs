//! `sluice demo`: an edge, an agent, an echo upstream (behind a TCP endpoint) and a
//! hello-world HTTP upstream (behind an HTTP endpoint) in one process, on loopback,
//! from the embedded configs beside this file; the edge serves its admin API and
//! console with a fresh key. The certificate is generated and
//! self-signed, the token is fresh, and both land in a private temporary directory, so
//! the demo goes through exactly the config loading a real deployment does.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
};

use anyhow::Context;

use crate::{
    agent,
    config::{agent::AgentSettings, edge::EdgeSettings},
    managed_edge,
    runtime::Driver,
    tls, token,
};

mod hello;

const EDGE_TEMPLATE: &str = include_str!("edge.yml");
const AGENT_TEMPLATE: &str = include_str!("agent.yml");

/// What the demo started.
pub struct Demo {
    /// The public endpoint to connect to.
    pub public_addr: SocketAddr,
    /// The HTTP endpoints' port (`http://localhost` there).
    pub http_addr: SocketAddr,
    /// The edge's agent port.
    pub agent_addr: SocketAddr,
    /// The echo upstream.
    pub upstream_addr: SocketAddr,
    /// The admin API and console.
    pub admin_addr: SocketAddr,
    /// The admin API key (fresh for each run).
    pub admin_key: String,
    /// Where the generated certificate and configs live.
    pub dir: PathBuf,
}

/// Starts the echo and hello upstreams, the edge and the agent; returns once all are
/// listening. `public_port` 0 picks a free port; a busy fixed port falls back to a
/// free one (the HTTP port is the next one up and the console's the one after, or
/// free ones).
pub fn start(public_port: u16, transport: &str, driver: Driver) -> anyhow::Result<Demo> {
    let upstream = TcpListener::bind("127.0.0.1:0").context("binding the echo upstream")?;
    let upstream_addr = upstream.local_addr()?;
    std::thread::Builder::new()
        .name("demo-echo".into())
        .spawn(move || echo_server(upstream))?;
    let hello = TcpListener::bind("127.0.0.1:0").context("binding the hello upstream")?;
    let hello_addr = hello.local_addr()?;
    std::thread::Builder::new()
        .name("demo-hello".into())
        .spawn(move || hello::serve(hello))?;

    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = tls::self_signed_pem(&["localhost", "127.0.0.1"])?;
    std::fs::write(dir.join("edge.crt"), cert)?;
    write_private(&dir.join("edge.key"), &key)?;

    let secret = token::generate();
    let hash = token::TokenHash::of(secret.expose()).to_string();
    let port = if TcpListener::bind(("127.0.0.1", public_port)).is_ok() {
        public_port
    } else {
        tracing::warn!(port = public_port, "demo port busy; using a free one");
        0
    };
    let next_free = |offset: u16| match port.checked_add(offset).filter(|p| *p > offset) {
        Some(p) if TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
        _ => 0,
    };
    let http_port = next_free(1);
    let admin_port = next_free(2);
    let admin_key = token::generate();
    let admin_key_hash = token::TokenHash::of(admin_key.expose()).to_string();
    let edge_yml = EDGE_TEMPLATE
        .replace("{TOKEN_HASH}", &hash)
        .replace("{PUBLIC_PORT}", &port.to_string())
        .replace("{HTTP_PORT}", &http_port.to_string())
        .replace("{ADMIN_PORT}", &admin_port.to_string())
        .replace("{ADMIN_KEY_HASH}", &admin_key_hash)
        .replace("{PLAIN_CHANNELS}", &(transport == "tcp").to_string());
    let edge_path = dir.join("edge.yml");
    std::fs::write(&edge_path, &edge_yml)?;
    let managed = managed_edge::start(
        EdgeSettings::from_yaml(&edge_yml, &edge_path)?,
        &edge_path,
        driver,
    )?;
    let admin_addr = managed.admin_addr.context("the demo's admin listener")?;
    let edge = managed.edge;
    let public_addr = edge
        .shared
        .endpoints
        .list()
        .iter()
        .find(|e| e.url.starts_with("tcp://"))
        .map(|e| e.addr)
        .context("the demo's tcp endpoint")?;
    let http_addr = edge.http_addr.context("the demo's http port")?;

    let agent_yml = AGENT_TEMPLATE
        .replace("{TOKEN}", secret.expose())
        .replace("{EDGE_ADDR}", &edge.agent_addr.to_string())
        .replace("{TRANSPORT}", transport)
        .replace("{UPSTREAM}", &upstream_addr.to_string())
        .replace("{HELLO}", &hello_addr.to_string());
    let agent_path = dir.join("agent.yml");
    write_private(&agent_path, &agent_yml)?;
    agent::start(AgentSettings::from_yaml(&agent_yml, &agent_path)?, driver)?;
    Ok(Demo {
        public_addr,
        http_addr,
        agent_addr: edge.agent_addr,
        upstream_addr,
        admin_addr,
        admin_key: admin_key.expose().to_string(),
        dir,
    })
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A plain echo server, one thread per connection (the demo's stand-in upstream).
fn echo_server(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        let _ = std::thread::Builder::new()
            .name("demo-echo-conn".into())
            .spawn(move || echo(conn));
    }
}

fn echo(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = conn.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
