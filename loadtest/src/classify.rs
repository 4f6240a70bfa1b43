//! Failure classes of single connections: every failed connect, handshake or exchange
//! becomes a [`Failure`] with one [`ErrorClass`] and is counted in [`ErrorCounts`],
//! never dropped.
//!
//! Rules: `ECONNREFUSED` is `refused`; `ECONNRESET`, `EPIPE` and `ECONNABORTED` are
//! `reset`; our own per-operation timer (and `ETIMEDOUT`) is `timeout`; an orderly
//! close before the expected bytes arrived is `short_read`; bytes that differ from
//! what was sent are `data_mismatch`; anything that goes wrong during the TLS
//! handshake, and any rustls error later, is `tls`; the rest is `other` (with the
//! message kept in the report's samples).
use std::io;

use serde::Serialize;

/// The class of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The connection was refused.
    Refused,
    /// The peer reset the connection.
    Reset,
    /// Connect, handshake or exchange took longer than `--timeout`.
    Timeout,
    /// The peer closed before sending all expected bytes.
    ShortRead,
    /// Received bytes differ from the expected ones.
    DataMismatch,
    /// TLS handshake or record failure.
    Tls,
    /// An HTTP response whose status is not 2xx or 3xx (`sluice-load http`).
    HttpStatus,
    /// Anything else (address in use, too many open files...).
    Other,
}

impl ErrorClass {
    /// Every class, in report order.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Refused,
        ErrorClass::Reset,
        ErrorClass::Timeout,
        ErrorClass::ShortRead,
        ErrorClass::DataMismatch,
        ErrorClass::Tls,
        ErrorClass::HttpStatus,
        ErrorClass::Other,
    ];

    /// The snake_case name used in JSON and reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::Reset => "reset",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ShortRead => "short_read",
            ErrorClass::DataMismatch => "data_mismatch",
            ErrorClass::Tls => "tls",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Other => "other",
        }
    }

    /// The class of an I/O error outside the TLS handshake.
    #[must_use]
    pub fn of(e: &io::Error) -> ErrorClass {
        if is_rustls(e) {
            return ErrorClass::Tls;
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorClass::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorClass::Reset,
            io::ErrorKind::TimedOut => ErrorClass::Timeout,
            io::ErrorKind::UnexpectedEof => ErrorClass::ShortRead,
            _ => ErrorClass::Other,
        }
    }
}

fn is_rustls(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// One classified failure with a human-readable detail.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its class.
    pub class: ErrorClass,
    /// What happened, for the report's samples.
    pub detail: String,
}

impl Failure {
    /// A failure of a class with a detail.
    #[must_use]
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> Self {
        Self {
            class,
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error that happened while doing `what`.
    #[must_use]
    pub fn io(what: &str, e: &io::Error) -> Self {
        Self::new(ErrorClass::of(e), format!("{what}: {e}"))
    }

    /// An I/O error during the TLS handshake: `tls` unless it is a timeout.
    #[must_use]
    pub fn handshake(e: &io::Error) -> Self {
        let class = match e.kind() {
            io::ErrorKind::TimedOut => ErrorClass::Timeout,
            _ => ErrorClass::Tls,
        };
        Self::new(class, format!("TLS handshake: {e}"))
    }

    /// Our own timer ran out while doing `what`.
    #[must_use]
    pub fn timeout(what: &str) -> Self {
        Self::new(
            ErrorClass::Timeout,
            format!("{what}: no progress within the timeout"),
        )
    }

    /// The peer closed after `got` of `want` bytes.
    #[must_use]
    pub fn short_read(what: &str, got: usize, want: usize) -> Self {
        Self::new(
            ErrorClass::ShortRead,
            format!("{what}: peer closed after {got} of {want} bytes"),
        )
    }

    /// Received bytes differ from the expected ones.
    #[must_use]
    pub fn mismatch(what: &str) -> Self {
        Self::new(
            ErrorClass::DataMismatch,
            format!("{what}: received bytes differ from sent"),
        )
    }
}

/// How many failures of each class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// `refused`.
    pub refused: u64,
    /// `reset`.
    pub reset: u64,
    /// `timeout`.
    pub timeout: u64,
    /// `short_read`.
    pub short_read: u64,
    /// `data_mismatch`.
    pub data_mismatch: u64,
    /// `tls`.
    pub tls: u64,
    /// `http_status`.
    pub http_status: u64,
    /// `other`.
    pub other: u64,
}

impl ErrorCounts {
    /// Counts one failure of `class`.
    pub fn add(&mut self, class: ErrorClass) {
        *self.slot(class) += 1;
    }

    /// The count of `class`.
    #[must_use]
    pub fn get(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::Refused => self.refused,
            ErrorClass::Reset => self.reset,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::ShortRead => self.short_read,
            ErrorClass::DataMismatch => self.data_mismatch,
            ErrorClass::Tls => self.tls,
            ErrorClass::HttpStatus => self.http_status,
            ErrorClass::Other => self.other,
        }
    }

    fn slot(&mut self, class: ErrorClass) -> &mut u64 {
        match class {
            ErrorClass::Refused => &mut self.refused,
            ErrorClass::Reset => &mut self.reset,
            ErrorClass::Timeout => &mut self.timeout,
            ErrorClass::ShortRead => &mut self.short_read,
            ErrorClass::DataMismatch => &mut self.data_mismatch,
            ErrorClass::Tls => &mut self.tls,
            ErrorClass::HttpStatus => &mut self.http_status,
            ErrorClass::Other => &mut self.other,
        }
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for c in ErrorClass::ALL {
            *self.slot(c) += other.get(c);
        }
    }

    /// All failures.
    #[must_use]
    pub fn total(&self) -> u64 {
        ErrorClass::ALL.iter().map(|c| self.get(*c)).sum()
    }
}
