//! Which path bytes take on each hop, for the start-up log: splice where both ends of
//! a hop are kernel sockets, rustls in user space where TLS is in the way. kTLS would
//! let splice work under TLS too; it needs the kernel's `tls` ULP, which is detected
//! here and, where missing, reported (the TLS hops then copy through user space).

use crate::{config::agent::Transport, io::Pump};

/// Whether the kernel offers the `tls` upper-layer protocol (kTLS).
pub fn ktls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|ulps| ulps.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false)
}

/// How one hop moves bytes.
pub fn hop(transport: Transport, pump: Pump) -> &'static str {
    match (transport, pump) {
        (Transport::Tcp, Pump::Splice) => "splice (zero-copy)",
        (Transport::Tcp, Pump::Copy) => "copy (user space)",
        (Transport::Tls, _) => "rustls (user space, chunk-framed, channel reused)",
    }
}

/// Logs the data path of both transports once at edge start.
pub fn log_edge(pump: Pump) {
    tracing::info!(
        tcp_channels = hop(Transport::Tcp, pump),
        tls_channels = hop(Transport::Tls, pump),
        ktls = if ktls_available() {
            "available (not used yet)"
        } else {
            "unavailable: no tls ULP"
        },
        "data path public client <-> data channel"
    );
}

/// Logs the data path of the agent's transport once per session.
pub fn log_agent(transport: Transport, pump: Pump) {
    tracing::info!(
        edge_hop = hop(transport, pump),
        upstream_hop = hop(transport, pump),
        ktls = if ktls_available() {
            "available (not used yet)"
        } else {
            "unavailable: no tls ULP"
        },
        "data path data channel <-> upstream"
    );
}
