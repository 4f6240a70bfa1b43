//! [`Settings`]: every option of a run as it appears in the report. All keys are
//! always present; a setting that does not apply to the command is `null`.
use serde::{Deserialize, Serialize};

use crate::{
    connect::ConnectOptions, hold::HoldOptions, http::HttpOptions, rr::RrOptions,
    throughput::ThroughputOptions, ClientOptions,
};

/// The settings of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Target address as resolved.
    pub target: String,
    /// TLS on.
    pub tls: bool,
    /// Server name presented under TLS.
    pub sni: Option<String>,
    /// Worker threads.
    pub threads: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Per-operation timeout, seconds.
    pub timeout_s: f64,
    /// Source address.
    pub bind: Option<String>,
    /// Driver asked for (`auto`, `uring`, `legacy`).
    pub driver: String,
    /// rr, hold: connections.
    pub connections: Option<usize>,
    /// rr, connect: payload bytes.
    pub size: Option<usize>,
    /// rr: open-loop rate (requests/s); null in closed loop.
    pub rate: Option<f64>,
    /// throughput: streams.
    pub streams: Option<usize>,
    /// throughput: `up`, `down` or `both`.
    pub direction: Option<String>,
    /// throughput: bytes per read/write.
    pub buffer: Option<usize>,
    /// throughput: received bytes verified.
    pub verify: Option<bool>,
    /// connect: loops at once.
    pub concurrency: Option<usize>,
    /// hold: seconds between keep-alive echoes.
    pub interval_s: Option<f64>,
    /// hold: connection attempts in flight per worker.
    pub open_concurrency: Option<usize>,
    /// http: the request line (`GET /path`).
    #[serde(default)]
    pub request: Option<String>,
    /// http: a new connection per request.
    #[serde(default)]
    pub new_connection: Option<bool>,
}

impl Settings {
    fn client(c: &ClientOptions) -> Self {
        Settings {
            target: c.target.to_string(),
            tls: c.tls.is_some(),
            sni: c.tls.as_ref().map(|t| t.server_name.to_str().into_owned()),
            threads: c.threads,
            duration_s: c.duration.as_secs_f64(),
            warmup_s: c.warmup.as_secs_f64(),
            timeout_s: c.timeout.as_secs_f64(),
            bind: c.bind.map(|ip| ip.to_string()),
            driver: format!("{:?}", c.driver).to_lowercase(),
            connections: None,
            size: None,
            rate: None,
            streams: None,
            direction: None,
            buffer: None,
            verify: None,
            concurrency: None,
            interval_s: None,
            open_concurrency: None,
            request: None,
            new_connection: None,
        }
    }

    /// Settings of an `http` run (`size` is the request body).
    #[must_use]
    pub fn http(o: &HttpOptions) -> Self {
        Settings {
            connections: Some(o.connections),
            size: Some(o.body),
            request: Some(format!("{} {}", o.method, o.path)),
            new_connection: Some(o.new_connection),
            ..Self::client(&o.client)
        }
    }

    /// Settings of a `throughput` run.
    #[must_use]
    pub fn throughput(o: &ThroughputOptions) -> Self {
        Settings {
            streams: Some(o.streams),
            direction: Some(format!("{:?}", o.direction).to_lowercase()),
            buffer: Some(o.buffer),
            verify: Some(o.verify),
            ..Self::client(&o.client)
        }
    }

    /// Settings of an `rr` run.
    #[must_use]
    pub fn rr(o: &RrOptions) -> Self {
        Settings {
            connections: Some(o.connections),
            size: Some(o.size),
            rate: o.rate,
            ..Self::client(&o.client)
        }
    }

    /// Settings of a `connect` run.
    #[must_use]
    pub fn connect(o: &ConnectOptions) -> Self {
        Settings {
            concurrency: Some(o.concurrency),
            size: Some(o.size),
            rate: o.rate,
            ..Self::client(&o.client)
        }
    }

    /// Settings of a `hold` run.
    #[must_use]
    pub fn hold(o: &HoldOptions) -> Self {
        Settings {
            connections: Some(o.connections),
            interval_s: Some(o.interval.as_secs_f64()),
            open_concurrency: Some(o.open_concurrency),
            ..Self::client(&o.client)
        }
    }
}
