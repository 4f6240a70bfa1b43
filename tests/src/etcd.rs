//! A real etcd cluster (Debian's `etcd-server`, installed by `tests/run.sh`) for the
//! fleet tests: one or more members on loopback ports of their own, each in a data
//! directory of its own, stopped by their PIDs when dropped.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where Debian's package puts the server.
const ETCD: &str = "/usr/bin/etcd";

struct Member {
    name: String,
    /// None while killed.
    child: Option<Child>,
    dir: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    /// The TLS client listener, when the cluster serves one.
    tls_client: Option<SocketAddr>,
}

/// Files of a cluster that also serves clients over TLS and asks them for a
/// certificate (etcd's `--client-cert-auth`).
pub struct EtcdTls {
    /// The server certificate (PEM; its names must include 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that client certificates must chain to.
    pub ca: PathBuf,
}

/// A running etcd cluster.
pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    /// More command-line flags for every member.
    extra: Vec<String>,
}

/// Ports per member: client, peer and (with TLS) the TLS client listener.
const PORTS_PER_MEMBER: u16 = 3;

impl Etcd {
    /// Starts a one-member cluster on 127.0.0.1 and waits until it answers `/health`.
    pub fn start() -> Etcd {
        Etcd::start_cluster(1)
    }

    /// Starts a cluster of `n` members on 127.0.0.1 and waits until each answers
    /// `/health` (the cluster has a leader).
    pub fn start_cluster(n: u16) -> Etcd {
        Etcd::start_with(n, &[])
    }

    /// [`Etcd::start_cluster`] with more flags for every member (`--auth-token-ttl 2`).
    pub fn start_with(n: u16, extra: &[&str]) -> Etcd {
        Etcd::start_members(n, extra, false)
    }

    /// A one-member cluster that also serves clients over TLS (see [`EtcdTls`]) on a
    /// port of its own ([`Etcd::tls_urls`]); health checks keep the plain one.
    pub fn start_tls(tls: &EtcdTls) -> Etcd {
        let flags = [
            "--cert-file",
            tls.cert.to_str().unwrap(),
            "--key-file",
            tls.key.to_str().unwrap(),
            "--trusted-ca-file",
            tls.ca.to_str().unwrap(),
            "--client-cert-auth",
        ];
        Etcd::start_members(1, &flags, true)
    }

    fn start_members(n: u16, extra: &[&str], with_tls: bool) -> Etcd {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: run the suite with `bash tests/run.sh`, which installs etcd-server"
        );
        let ip = "127.0.0.1".parse().unwrap();
        let deadline = Instant::now() + crate::process::WAIT;
        loop {
            let base = crate::fixture::free_port_range(ip, PORTS_PER_MEMBER * n);
            let tag = rand::random::<u32>();
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    child: None,
                    dir: std::env::temp_dir()
                        .join(format!("sluice-etcd-{}-{tag:08x}-m{i}", std::process::id())),
                    client: SocketAddr::new(ip, base + PORTS_PER_MEMBER * i),
                    peer: SocketAddr::new(ip, base + PORTS_PER_MEMBER * i + 1),
                    tls_client: with_tls
                        .then(|| SocketAddr::new(ip, base + PORTS_PER_MEMBER * i + 2)),
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}=http://{}", m.name, m.peer))
                .collect::<Vec<_>>()
                .join(",");
            let mut etcd = Etcd {
                members,
                initial_cluster,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            for i in 0..etcd.members.len() {
                etcd.spawn(i);
            }
            // A port taken between the probe and etcd's bind ends that member at once:
            // try other ports.
            if (0..etcd.members.len()).all(|i| etcd.wait_healthy(i, deadline)) {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
        }
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let clients = match m.tls_client {
            Some(tls) => format!("http://{},https://{tls}", m.client),
            None => format!("http://{}", m.client),
        };
        let child = Command::new(ETCD)
            .args([
                "--name",
                &m.name,
                "--data-dir",
                m.dir.to_str().unwrap(),
                "--listen-client-urls",
                &clients,
                "--advertise-client-urls",
                &clients,
                "--listen-peer-urls",
                &format!("http://{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://{}", m.peer),
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                "new",
                "--log-level",
                "error",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Whether member `i` answers `/health` before `deadline` (false once it exited).
    fn wait_healthy(&mut self, i: usize, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if healthy(self.members[i].client) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.members[i].child.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills every member (SIGKILL, by PID), keeping their data for [`Etcd::restart`].
    pub fn kill(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Kills member `i` (SIGKILL, by its PID), keeping its data.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every killed member again on its ports and data, and waits until each
    /// is healthy.
    pub fn restart(&mut self) {
        let killed: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_none())
            .collect();
        for &i in &killed {
            self.spawn(i);
        }
        let deadline = Instant::now() + crate::process::WAIT;
        for i in killed {
            assert!(
                self.wait_healthy(i, deadline),
                "etcd member {i} did not come back on {}",
                self.members[i].client
            );
        }
    }

    /// The index of the member that is the cluster's leader now, as the first member
    /// that answers says.
    pub fn leader(&self) -> usize {
        let status = |client| -> Option<serde_json::Value> {
            let text = post(client, "/v3/maintenance/status", "{}")?;
            serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
        };
        let deadline = Instant::now() + crate::process::WAIT;
        loop {
            let statuses: Vec<Option<serde_json::Value>> = self
                .members
                .iter()
                .map(|m| m.child.as_ref().and_then(|_| status(m.client)))
                .collect();
            let leader = statuses
                .iter()
                .flatten()
                .find_map(|s| s["leader"].as_str().map(String::from));
            if let Some(leader) = leader {
                if let Some(i) = statuses.iter().position(|s| {
                    s.as_ref()
                        .is_some_and(|s| s["header"]["member_id"] == leader.as_str())
                }) {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no etcd member names a leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Turns on etcd's authentication with `user` as its root (etcd's JSON gateway on
    /// the first member): from then on every request needs a token.
    pub fn enable_auth(&self, user: &str, password: &str) {
        let client = self.members[0].client;
        for (path, body) in [
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_string()),
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"{user}","password":"{password}"}}"#),
            ),
            (
                "/v3/auth/user/grant",
                format!(r#"{{"user":"{user}","role":"root"}}"#),
            ),
            ("/v3/auth/enable", "{}".to_string()),
        ] {
            let answer = post(client, path, &body).unwrap_or_default();
            assert!(answer.starts_with("HTTP/1.1 200"), "etcd {path}: {answer}");
        }
    }

    /// `http://IP:PORT` of the first member.
    pub fn url(&self) -> String {
        format!("http://{}", self.members[0].client)
    }

    /// Every member's `https://IP:PORT` (clusters started with [`Etcd::start_tls`]).
    pub fn tls_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("https://{}", m.tls_client.expect("a TLS listener")))
            .collect()
    }

    /// Every member's `http://IP:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }
}

/// Whether `GET /health` at `client` says so.
fn healthy(client: SocketAddr) -> bool {
    request(
        client,
        "GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n",
    )
    .is_some_and(|a| a.contains("\"health\":\"true\""))
}

/// `POST path` with a JSON `body` (etcd's JSON gateway); the whole answer.
fn post(client: SocketAddr, path: &str, body: &str) -> Option<String> {
    request(
        client,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn request(client: SocketAddr, raw: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&client, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    Some(answer)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}
