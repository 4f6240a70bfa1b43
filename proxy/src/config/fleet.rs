//! The edge file's fleet settings: which edge this is (`edge_id`), the address its
//! cloud endpoints bind (`public_address`), and where its control-plane state lives
//! (`state: { etcd: … }`, shared by every edge of a fleet, beside `state_dir`).
//!
//! ```yaml
//! edge_id: edge-a
//! public_address: 127.0.0.2
//! state:
//!   etcd:
//!     endpoints: ["http://127.0.0.1:2379"]
//!     prefix: /sluice
//!     username: sluice            # optional, with password_file
//!     password_file: etcd.password
//!     tls: { ca: etcd-ca.crt, cert: edge.crt, key: edge.key }   # https endpoints
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{problems::Problems, relative_to, tree::Node, tree_de::from_node};

/// `state:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Keep the state in an etcd cluster shared by a fleet of edges.
    pub etcd: Option<EtcdSection>,
}

/// `state.etcd:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Client URLs of the etcd members (`http://IP:2379`, `https://HOST:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet's objects. Default `/sluice`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// etcd user (etcd's own authentication), with `password_file`.
    pub username: Option<String>,
    /// A file holding the etcd user's password (one line).
    pub password_file: Option<PathBuf>,
    /// TLS to etcd: the CA that signed the members' certificates, and this edge's
    /// client certificate and key when etcd asks for one.
    pub tls: Option<EtcdTlsSection>,
}

/// `state.etcd.tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsSection {
    /// PEM CA certificate(s) the members' certificates chain to.
    pub ca: PathBuf,
    /// PEM client certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM client key (with `cert`).
    pub key: Option<PathBuf>,
}

fn default_prefix() -> String {
    "/sluice".into()
}

/// Where an edge's state lives in etcd, resolved: files read, values checked.
#[derive(Clone)]
pub struct EtcdSettings {
    /// Member URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, with no trailing slash (`/sluice`).
    pub prefix: String,
    /// etcd user and password.
    pub user: Option<(String, String)>,
    /// CA PEM and optional client (certificate PEM, key PEM).
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// TLS material for etcd, read from the files `state.etcd.tls` names.
#[derive(Clone)]
pub struct EtcdTls {
    /// CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The edge's name when edge.yml gives none: the host name.
pub fn default_edge_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| valid_edge_id(h))
        .unwrap_or_else(|| "edge".into())
}

/// 1–64 characters of letters, digits, `-`, `_` and `.`.
pub fn valid_edge_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks `edge_id` (problems at its key); the id to run with.
pub(super) fn edge_id(tree: &Node, p: &mut Problems) -> String {
    match tree.key("edge_id").map(from_node::<String>) {
        None => default_edge_id(),
        Some(Ok(id)) if valid_edge_id(&id) => id,
        Some(Ok(id)) => {
            p.at(
                "edge_id",
                format!("`{id}`: use 1-64 letters, digits, '-', '_' or '.'"),
            );
            id
        }
        Some(Err(_)) => default_edge_id(),
    }
}

/// Checks `state:` and its relation to `state_dir` (problems at their keys); the etcd
/// settings when the state is in etcd.
pub(super) fn state(
    tree: &Node,
    file: &Path,
    has_state_dir: bool,
    p: &mut Problems,
) -> Option<EtcdSettings> {
    let section = from_node::<StateSection>(tree.key("state")?).ok()?;
    let Some(etcd) = section.etcd else {
        p.at(
            "state",
            "name a backend: `state: { etcd: { endpoints: [...] } }`",
        );
        return None;
    };
    if has_state_dir {
        p.at(
            "state",
            "`state_dir` (SQLite on this host) and `state.etcd` (shared) both given: keep one",
        );
    }
    let mut ok = true;
    if etcd.endpoints.is_empty() {
        p.at("state.etcd.endpoints", "list at least one etcd client URL");
        ok = false;
    }
    let mut https = false;
    for (i, e) in etcd.endpoints.iter().enumerate() {
        match e.split_once("://") {
            Some(("http", rest)) | Some(("https", rest)) if !rest.is_empty() => {
                https |= e.starts_with("https");
            }
            _ => {
                p.at(
                    &format!("state.etcd.endpoints[{i}]"),
                    format!("`{e}`: expected http://HOST:PORT or https://HOST:PORT"),
                );
                ok = false;
            }
        }
    }
    let prefix = etcd.prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        p.at(
            "state.etcd.prefix",
            format!("`{}`: expected a key prefix such as /sluice", etcd.prefix),
        );
        ok = false;
    }
    let user = match (&etcd.username, &etcd.password_file) {
        (None, None) => None,
        (Some(name), Some(file_name)) => {
            let path = relative_to(file, file_name);
            match std::fs::read_to_string(&path) {
                Ok(password) => Some((name.clone(), password.trim_end().to_string())),
                Err(e) => {
                    p.at(
                        "state.etcd.password_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    ok = false;
                    None
                }
            }
        }
        _ => {
            p.at(
                "state.etcd",
                "give both `username` and `password_file`, or neither",
            );
            ok = false;
            None
        }
    };
    let tls = match &etcd.tls {
        None => {
            if https {
                p.at(
                    "state.etcd.tls",
                    "https endpoints need `tls: { ca: FILE }` (the CA of the etcd members)",
                );
                ok = false;
            }
            None
        }
        Some(t) => tls(t, file, p),
    };
    if etcd.tls.is_some() && !https {
        p.at(
            "state.etcd.tls",
            "TLS is set but the endpoints are http://; use https:// URLs",
        );
        ok = false;
    }
    ok.then_some(EtcdSettings {
        endpoints: etcd.endpoints,
        prefix,
        user,
        tls,
    })
}

fn tls(t: &EtcdTlsSection, file: &Path, p: &mut Problems) -> Option<EtcdTls> {
    let mut read = |key: &str, name: &Path| {
        let path = relative_to(file, name);
        std::fs::read(&path)
            .map_err(|e| p.at(key, format!("cannot read {}: {e}", path.display())))
            .ok()
    };
    let ca_pem = read("state.etcd.tls.ca", &t.ca);
    let identity = match (&t.cert, &t.key) {
        (None, None) => Some(None),
        (Some(c), Some(k)) => {
            let cert = read("state.etcd.tls.cert", c);
            let key = read("state.etcd.tls.key", k);
            cert.zip(key).map(Some)
        }
        _ => {
            p.at("state.etcd.tls", "give both `cert` and `key`, or neither");
            None
        }
    };
    Some(EtcdTls {
        ca_pem: ca_pem?,
        identity: identity?,
    })
}
