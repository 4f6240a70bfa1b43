//! Per-test temporary directories with a generated certificate, a token and configs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use sha2::{Digest, Sha256};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory holding `edge.crt`/`edge.key` and any configs a test writes.
pub struct Fixture {
    /// The directory (removed on drop).
    pub dir: PathBuf,
    /// A valid authtoken.
    pub token: String,
    /// Its `sha256:` hash.
    pub token_hash: String,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Creates the directory, certificate and token.
    pub fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-{}-{}-{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("edge.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("edge.key"), cert.signing_key.serialize_pem()).unwrap();
        let token = format!("slt_{:032x}", rand::random::<u128>());
        let token_hash = token_hash(&token);
        Fixture {
            dir,
            token,
            token_hash,
        }
    }

    /// Writes a file into the fixture directory.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The fixture directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Path of a file in the fixture directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An edge config: agent port on `agent_listen`, one user owning `self.token`, and
    /// one TCP endpoint per `(listen, policy)` (policy in YAML flow style).
    pub fn edge_yaml(&self, agent_listen: &str, endpoints: &[(&str, String)]) -> String {
        let mut yaml = format!(
            "version: 1\nworkers: 2\nagents:\n  listen: {agent_listen}\n  tls: {{ cert: edge.crt, key: edge.key }}\n  plain_channels: true\n\
             service_users:\n  - name: test-user\n    authtokens: [\"{}\"]\nendpoints:\n",
            self.token_hash
        );
        for (listen, policy) in endpoints {
            yaml.push_str(&format!(
                "  - url: tcp://{listen}\n    traffic_policy: {policy}\n"
            ));
        }
        yaml
    }

    /// The head of an edge config with the shared `tls://` listener
    /// (`tls_endpoints`, 127.0.0.1:0) besides the agent port: everything up to
    /// `endpoints:`, for the caller to append endpoint entries (`  - url: …`).
    pub fn tls_edge_head(&self) -> String {
        format!(
            "version: 1\nworkers: 2\nagents:\n  listen: 127.0.0.1:0\n  tls: {{ cert: edge.crt, key: edge.key }}\n  plain_channels: true\n\
             tls_endpoints:\n  listen: 127.0.0.1:0\n\
             service_users:\n  - name: t\n    authtokens: [\"{}\"]\nendpoints:\n",
            self.token_hash
        )
    }

    /// An agent config dialing `edge`, binding each `(internal url, upstream)`.
    pub fn agent_yaml(
        &self,
        token: &str,
        edge: SocketAddr,
        transport: &str,
        endpoints: &[(&str, SocketAddr)],
    ) -> String {
        let mut yaml = format!(
            "version: 3\nagent:\n  authtoken: \"{token}\"\n  connect_url: \"{edge}\"\n  connect_cas: {}\n  \
             server_name: localhost\n  transport: {transport}\n  data_channels: 4\n  workers: 2\n  \
             heartbeat_interval: 1s\n  heartbeat_tolerance: 3s\nendpoints:\n",
            self.path("edge.crt").display()
        );
        for (url, upstream) in endpoints {
            yaml.push_str(&format!(
                "  - url: {url}\n    upstream: {{ url: \"{upstream}\" }}\n"
            ));
        }
        yaml
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `sha256:<hex>` of a token, computed independently of sluice.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `agent_yaml` (from [`Fixture::agent_yaml`]) with `pooling_enabled: true` on the
/// endpoint binding `url`.
pub fn pooled(agent_yaml: &str, url: &str) -> String {
    let entry = format!("  - url: {url}\n");
    assert!(
        agent_yaml.contains(&entry),
        "no endpoint {url} in:\n{agent_yaml}"
    );
    agent_yaml.replace(&entry, &format!("{entry}    pooling_enabled: true\n"))
}

/// `agent_yaml` (from [`Fixture::agent_yaml`]) with upstream health checks off on
/// every endpoint, so upstreams see only tunneled connections.
pub fn without_health_checks(agent_yaml: &str) -> String {
    agent_yaml.replace("\" }", "\", health_check: { enabled: false } }")
}

/// A policy forwarding every connection to `url`.
pub fn forward_all(url: &str) -> String {
    format!("{{ on_tcp_connect: [ {{ actions: [ {{ type: forward-internal, config: {{ url: \"{url}\" }} }} ] }} ] }}")
}

/// A policy allowing only `allow` (CIDRs) and forwarding those to `url`.
pub fn allow_only(allow: &[&str], url: &str) -> String {
    let list = allow
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{ on_tcp_connect: [ {{ actions: [ {{ type: restrict-ips, config: {{ allow: [{list}] }} }}, \
         {{ type: forward-internal, config: {{ url: \"{url}\" }} }} ] }} ] }}"
    )
}

/// Reads a whole file (for assertions).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The first of `n` consecutive ports on `ip` that were all free a moment ago: the
/// test binds them all and releases them just before returning. They are looked for
/// below the kernel's ephemeral range (`ip_local_port_range`), where no connect(2)
/// takes ports by itself (inside it, ports in TIME_WAIT from busy tests make runs of
/// free ports rare), starting at random places. Another process may still take one
/// before the caller binds it: callers retry on collision (see the reserved-range
/// test in admin_api.rs).
pub fn free_port_range(ip: std::net::IpAddr, n: u16) -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (low, high) = (ephemeral_low / 2, ephemeral_low - n);
    let mut last = None;
    for _ in 0..1000 {
        let start = low + (rand::random::<u16>() % (high - low));
        let taken: Result<Vec<_>, _> = (0..n)
            .map(|i| std::net::TcpListener::bind((ip, start + i)))
            .collect();
        match taken {
            Ok(_) => return start,
            Err(e) => last = Some(e),
        }
    }
    panic!("no {n} consecutive free ports on {ip} below {ephemeral_low}: {last:?}");
}
