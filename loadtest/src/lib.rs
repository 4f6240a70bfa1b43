//! sluice-loadtest: the library behind the `sluice-load` harness.
//!
//! It drives TCP and TLS load against any service and measures it honestly:
//! bulk [`throughput`], request/response latency ([`rr`], closed loop or open loop
//! corrected for coordinated omission), connection-setup rate ([`connect`]) and
//! many concurrent idle connections ([`hold`]), and HTTP/1.1 requests ([`http`], kept
//! alive or a new connection each). [`serve`] is the matching upstream
//! (echo, sink, source or http) that sluice's own tests and benchmarks put behind the proxy.
//!
//! `connect` and `rr` also run on a pool of blocking OS threads ([`blocking`],
//! `--model blocking`), the client model of most applications, so that a figure can be
//! checked against a second client that shares none of the async code.
//!
//! The async model is thread-per-core: [`runtime`] starts one `monoio` runtime per worker
//! thread (io_uring, or epoll where io_uring is unavailable), each worker records into
//! its own [`stats::Recorder`], and the recorders are merged at the end into a
//! [`report::Report`], whose JSON shape is the stable interface (see `docs/loadtest.md`).
//! The `sluice-load` binary is only the clap front-end in [`cli`].
#![warn(missing_docs)]

pub mod blocking;
pub mod classify;
pub mod cli;
pub mod client;
pub mod connect;
pub mod error;
pub mod hold;
pub mod http;
pub mod http_wire;
pub mod net;
pub mod options;
pub mod pace;
pub mod pattern;
pub mod progress;
pub mod report;
pub mod rlimit;
pub mod rr;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod stats;
pub mod stream;
pub mod throughput;
pub mod tls;

pub use classify::{ErrorClass, ErrorCounts, Failure};
pub use error::LoadError;
pub use options::{
    ClientModel, ClientOptions, Direction, DriverChoice, ServeMode, TlsClientOptions,
};
pub use report::Report;
pub use serve::{serve, ServeHandle, ServeOptions};
pub use shutdown::Shutdown;
pub use stats::RunResult;
