//! The library's one error type, [`LoadError`]: everything that stops a run from
//! starting or finishing. Failures of single connections during a run are not errors
//! of the run: they are classified and counted (see [`crate::classify`]).
use std::{io, path::PathBuf};

/// Why a run (or a server) could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option is out of range or contradicts another one.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// The target address could not be resolved.
    #[error("cannot resolve target {0:?}")]
    Resolve(String),
    /// A listening socket could not be created.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start worker {name}: {source}")]
    Worker {
        /// Thread name, e.g. `load-worker-0`.
        name: String,
        /// The OS error (io_uring setup, thread spawn...).
        source: io::Error,
    },
    /// A worker thread panicked.
    #[error("worker {0} panicked")]
    WorkerPanicked(String),
    /// TLS configuration (certificates, keys, server name) is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// JSON encoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}
