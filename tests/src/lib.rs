//! sluice-tests: helpers for end-to-end tests that run the real `sluice` binary.
//!
//! - [`admin`]: a small HTTP/1.1 JSON client for the edge's admin API.
//! - [`process`]: start `sluice edge` / `sluice agent` as child processes, follow their
//!   JSON logs, wait for a log event with a deadline, stop them by PID on drop.
//! - [`upstream`]: real upstream servers on loopback (echo).
//! - [`client`]: clients that connect from a chosen source address and check bytes.
//! - [`load`]: client threads making echo connections in a loop, for tests under load.
//! - [`fixture`]: temporary directories, certificates, tokens and config files.
//! - [`tls_peers`]: a TLS echo upstream and a TLS client for `tls://` endpoints.
//! - [`pki`]: test CAs issuing server and client certificates (mTLS).
//! - [`openssl`]: `openssl s_client` as an independent TLS client.
//! - [`netns`]: network namespaces joined by veth pairs, for silent link failures.
//! - [`faults`]: misbehaving upstreams; fd and RSS probes from `/proc`.
//! - [`probes`]: upstreams reporting PROXY headers and half-closes; a half-closing TLS client.
//! - [`prom`]: sums of samples from a Prometheus `/metrics` scrape.
//! - [`etcd`]: a real etcd server on loopback ports, for the fleet tests.
//! - [`fleet`]: edges sharing their state in etcd, each on its own loopback address.
//! - [`http`]: an HTTP upstream that echoes requests, and `curl` as the client.
//! - [`mmdb`]: a MaxMind-format country database, written for `conn.geo` tests.
#![warn(missing_docs)]

pub mod admin;
pub mod browser;
pub mod client;
pub mod etcd;
pub mod faults;
pub mod fixture;
pub mod fleet;
pub mod http;
pub mod http2;
pub mod load;
pub mod mmdb;
pub mod netns;
pub mod openssl;
pub mod pki;
pub mod probes;
pub mod process;
pub mod prom;
pub mod tls_peers;
pub mod upstream;

/// Both monoio drivers; end-to-end tests run on each.
pub const DRIVERS: [&str; 2] = ["uring", "legacy"];

/// The agent protocol version of the `sluice` under test (docs/protocol.md), for tests
/// that write frames by hand; a hand-made hello of another version is refused before
/// what the test means to exercise.
pub const PROTOCOL_VERSION: u16 = 9;

/// Waits until `cond` holds, polling every 10 ms; panics naming `what` after
/// `deadline`.
pub fn wait_until(what: &str, deadline: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
