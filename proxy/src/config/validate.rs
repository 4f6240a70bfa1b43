//! The one validation of a config file. The daemons' loaders
//! ([`AgentSettings::load`](super::agent::AgentSettings::load),
//! [`EdgeSettings::load`](super::edge::EdgeSettings::load), the edge's reload too) and
//! `sluice config check` ([`super::check`]) all call [`run`] with the file kind's
//! resolve step, and differ only in what they do with the [`Validated`] outcome: the
//! loader refuses the file when there is any problem, `check` prints them. The two
//! cannot disagree, because there is nothing else for them to disagree with.
//!
//! [`run`] works on the file's [`tree`](super::tree), in two passes that both record
//! into one [`Problems`] list:
//!
//! 1. the config structs deserialize the tree again and again, each error recorded and
//!    its node pruned ([`problems::collect`]): unknown keys, wrong types, policies;
//! 2. the kind's resolve step (`agent_validate`, `edge_validate`) reads each section
//!    that survived on its own, checks what serde cannot (bounds, duplicates, URLs,
//!    listener clashes, certificates and keys, ...) and builds the settings from it.
//!    Plain values an entry pruned by pass 1 still has (its URL, say) are read from the
//!    tree, so one broken key hides nothing else.
//!
//! The settings are handed out only when both passes found nothing at all; a resolve
//! step that could not build them without recording why is itself a problem, so a
//! file is never loaded half-checked.
//!
//! ## Quoted numbers and booleans
//!
//! `version: "3"`, `data_channels: "8"`, `proxy_protocol: "2"`, `pooling_enabled:
//! "true"` are accepted, by the daemons and by `check` alike, as the number or boolean
//! they spell. Files written or templated with every scalar quoted are common among
//! ngrok-style agent configs; the daemons read their files with serde-saphyr, which
//! always accepted them, while `check` alone refused them. Refusing them everywhere
//! would have broken files that run today for no safety gain (the value is still
//! range-checked: `data_channels: "2000"` is refused like `2000`). The tree's
//! deserializer ([`super::tree_de`]) reads such a scalar exactly as serde-saphyr does,
//! so spellings such as `"0x10"` or `"yes"` follow serde-saphyr's rules in both, and
//! text that is no number (`"eight"`) is refused with its line.
//!
//! The daemons used to deserialize the text straight into their structs with
//! serde-saphyr; they now read the same tree as `check`. The tree keeps plain scalars
//! that a string field would read as text as text ([`super::tree::parse`]: `yes`, `on`,
//! `0123`, `1_000`), so string fields see what they saw before, with one exception: a
//! typeless read normalises numbers in another base or with a sign, floats, and
//! `True`/`FALSE` (`name: 0x10` is `16`, `name: 1.50` is `1.5`, `name: TRUE` is
//! `true`). No string field of either file is a number in practice; quoting keeps the
//! text as written.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;

use super::{
    edge::TlsFiles,
    problems::{self, Problem, Problems},
    relative_to,
    tree::Node,
    ConfigError,
};
use crate::tls;

/// The outcome of validating one file.
#[derive(Debug)]
pub struct Validated<T> {
    /// The settings, or every problem found (never empty), in file order.
    pub outcome: Result<T, Vec<Problem>>,
    /// Things that are valid but probably not meant (e.g. policy rules that never run).
    pub warnings: Vec<String>,
}

impl<T> Validated<T> {
    /// The settings, or every problem as one error.
    pub fn into_result(self, path: &Path) -> Result<T, ConfigError> {
        self.outcome
            .map_err(|problems| ConfigError::from_problems(path, problems))
    }
}

/// Validates the file `path` parsed into `tree` as an `F` (its serde structs) and builds
/// its settings with `resolve`, which gets the tree (pruned where pass 1 failed), `F`
/// itself when its root deserialized (only top-level values may be taken from it: list
/// indices shift where items were pruned), the file, the problem list and the warnings.
pub(crate) fn run<F: DeserializeOwned, T>(
    mut tree: Node,
    path: &Path,
    resolve: impl FnOnce(&Node, Option<F>, &Path, &mut Problems, &mut Vec<String>) -> Option<T>,
) -> Validated<T> {
    let mut found = Vec::new();
    let whole = problems::collect::<F>(&mut tree, path, &mut found);
    let mut p = Problems::new(path.to_path_buf(), &tree);
    p.extend(found);
    let mut warnings = Vec::new();
    let settings = resolve(&tree, whole, path, &mut p, &mut warnings);
    let clean = p.is_empty();
    let mut problems = p.into_sorted();
    let outcome = match settings {
        Some(settings) if clean => Ok(settings),
        None if clean => {
            problems.push(Problem::whole(
                path,
                "internal error: the file passed every check but could not be resolved",
            ));
            Err(problems)
        }
        _ => Err(problems),
    };
    Validated { outcome, warnings }
}

/// A certificate chain and its key, as loaded by [`cert_and_key`].
pub(crate) struct CertAndKey {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate file, resolved against the config file.
    pub cert_path: PathBuf,
    /// The key file, resolved.
    pub key_path: PathBuf,
}

/// Loads the `cert` and `key` files named under `at` (`agents.tls`, `admin.tls`): each
/// unusable file is a problem at `{at}.cert` or `{at}.key`.
pub(crate) fn cert_and_key(
    file: &Path,
    at: &str,
    files: &TlsFiles,
    p: &mut Problems,
) -> Option<CertAndKey> {
    let cert_path = relative_to(file, &files.cert);
    let key_path = relative_to(file, &files.key);
    let certs = tls::load_certs(&cert_path).map_err(|e| p.at(&format!("{at}.cert"), e));
    let key = tls::load_key(&key_path).map_err(|e| p.at(&format!("{at}.key"), e));
    Some(CertAndKey {
        certs: certs.ok()?,
        key: key.ok()?,
        cert_path,
        key_path,
    })
}
