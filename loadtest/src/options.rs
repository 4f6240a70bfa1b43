//! Options shared by every client command ([`ClientOptions`]) and the small enums
//! the commands and the server are parameterised by. Each command's own options live
//! in its module (`rr::RrOptions`, ...); all of them are checked whole by `validate()`
//! before anything starts.
use std::{net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};

use serde::Serialize;

use crate::LoadError;

/// Which `monoio` driver the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only (fails to start where it is unavailable).
    Uring,
    /// epoll only.
    Legacy,
}

/// How the clients of `connect` and `rr` are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClientModel {
    /// Tasks on one `monoio` runtime per worker thread (`--threads`), many
    /// connections per thread: a load generator.
    #[default]
    Async,
    /// A pool of OS threads on blocking std sockets, one connection at a time each
    /// (as many threads as `--concurrency` / `--connections`): most applications.
    Blocking,
}

/// Data direction of `throughput`, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client sends (server: `sink`, or anything that reads).
    Up,
    /// Client receives (server: `source`).
    Down,
    /// Client sends and receives the echo at once on each stream (server: `echo`).
    Both,
}

/// What `serve` does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ServeMode {
    /// Write back every byte read.
    Echo,
    /// Read and discard.
    Sink,
    /// Ignore input; stream the verification pattern until the client leaves.
    Source,
    /// Answer every HTTP/1.1 request with `200 OK` and a 64-byte body, keep-alive.
    Http,
}

/// Client-side TLS: a prepared rustls config and the name to present.
#[derive(Clone, Debug)]
pub struct TlsClientOptions {
    /// The rustls client config (roots, or the insecure verifier).
    pub config: Arc<rustls::ClientConfig>,
    /// Server name sent as SNI and verified against the certificate.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// Options every client command shares.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Where to connect.
    pub target: SocketAddr,
    /// Worker threads (one monoio runtime each).
    pub threads: usize,
    /// Measured time (after the warm-up).
    pub duration: Duration,
    /// Time run but not measured before `duration` starts.
    pub warmup: Duration,
    /// Source address of every connection (port chosen by the kernel).
    pub bind: Option<IpAddr>,
    /// Longest wait for one connect, handshake or exchange before it counts as `timeout`.
    pub timeout: Duration,
    /// TLS on top of TCP.
    pub tls: Option<TlsClientOptions>,
    /// Driver of the worker runtimes.
    pub driver: DriverChoice,
    /// Print a live progress line on stderr (only honoured when stderr is a terminal).
    pub progress: bool,
}

impl ClientOptions {
    /// Options with defaults: one thread, 10 s, no warm-up, 5 s timeout, plain TCP.
    #[must_use]
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            threads: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            bind: None,
            timeout: Duration::from_secs(5),
            tls: None,
            driver: DriverChoice::Auto,
            progress: false,
        }
    }

    /// Sets the number of worker threads.
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets the measured duration.
    #[must_use]
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = d;
        self
    }

    /// Sets the warm-up.
    #[must_use]
    pub fn warmup(mut self, d: Duration) -> Self {
        self.warmup = d;
        self
    }

    /// Sets the per-operation timeout.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets the source address.
    #[must_use]
    pub fn bind(mut self, ip: Option<IpAddr>) -> Self {
        self.bind = ip;
        self
    }

    /// Enables TLS.
    #[must_use]
    pub fn tls(mut self, tls: Option<TlsClientOptions>) -> Self {
        self.tls = tls;
        self
    }

    /// Chooses the driver.
    #[must_use]
    pub fn driver(mut self, driver: DriverChoice) -> Self {
        self.driver = driver;
        self
    }

    /// Turns the progress line on or off.
    #[must_use]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), LoadError> {
        check_range("--threads", self.threads as u64, 1, 1024)?;
        if self.duration.is_zero() || self.duration > Duration::from_secs(86_400) {
            return Err(invalid("--duration must be more than 0 and at most 24h"));
        }
        if self.warmup > Duration::from_secs(3_600) {
            return Err(invalid("--warmup must be at most 1h"));
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > Duration::from_secs(600) {
            return Err(invalid("--timeout must be between 1ms and 10m"));
        }
        if self.target.port() == 0 {
            return Err(invalid("--target needs a port other than 0"));
        }
        if let Some(ip) = self.bind {
            if ip.is_ipv4() != self.target.is_ipv4() {
                return Err(invalid(format!(
                    "--bind {ip} is not of the same address family as --target {}",
                    self.target
                )));
            }
        }
        Ok(())
    }
}

/// A [`LoadError::Invalid`] with this message.
pub fn invalid(msg: impl Into<String>) -> LoadError {
    LoadError::Invalid(msg.into())
}

/// Checks `lo <= v <= hi`, naming the flag in the error.
pub fn check_range(flag: &str, v: u64, lo: u64, hi: u64) -> Result<(), LoadError> {
    if v < lo || v > hi {
        return Err(invalid(format!(
            "{flag} must be between {lo} and {hi}, got {v}"
        )));
    }
    Ok(())
}

/// Checks an optional `--rate` (operations per second over the whole run).
pub fn check_rate(rate: Option<f64>) -> Result<(), LoadError> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0 && r <= 100_000_000.0) => Err(invalid(format!(
            "--rate must be more than 0 and at most 1e8 per second, got {r}"
        ))),
        _ => Ok(()),
    }
}
