//! The figures the runner records for each path and round, how each one is compared
//! with direct (ratio, added, or not at all), and which direction is better.

/// How a figure relates to the direct path of the same round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versus {
    /// `path / direct` (throughput, rates): the ratio is the headline.
    Ratio,
    /// `path - direct` (latency): what the proxy adds; the ratio is shown too.
    Added,
    /// Direct has no proxy process (CPU, memory, agent start-up): no comparison.
    None,
}

/// One recorded figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub versus: Versus,
}

const fn m(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    versus: Versus,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        higher_is_better,
        versus,
    }
}

pub const THR1: Metric = m(
    "thr1_gbps",
    "throughput, 1 stream",
    "Gbit/s",
    true,
    Versus::Ratio,
);
pub const THR4: Metric = m(
    "thr4_gbps",
    "throughput, 4 streams",
    "Gbit/s",
    true,
    Versus::Ratio,
);
pub const CPU_GB: Metric = m(
    "cpu_s_per_gb",
    "proxy CPU per GB (1 stream)",
    "CPU s/GB",
    false,
    Versus::None,
);
pub const RR_P50: Metric = m(
    "rr_p50_us",
    "rr 64 B closed loop p50",
    "µs",
    false,
    Versus::Added,
);
pub const RR_P99: Metric = m(
    "rr_p99_us",
    "rr 64 B closed loop p99",
    "µs",
    false,
    Versus::Added,
);
pub const RR_P999: Metric = m(
    "rr_p999_us",
    "rr 64 B closed loop p99.9",
    "µs",
    false,
    Versus::Added,
);
pub const RR_RATE: Metric = m(
    "rr_per_s",
    "rr 64 B closed loop rate",
    "req/s",
    true,
    Versus::Ratio,
);
pub const OPEN_P50: Metric = m(
    "open_p50_us",
    "rr 64 B open loop p50",
    "µs",
    false,
    Versus::Added,
);
pub const OPEN_P99: Metric = m(
    "open_p99_us",
    "rr 64 B open loop p99",
    "µs",
    false,
    Versus::Added,
);
pub const OPEN_P999: Metric = m(
    "open_p999_us",
    "rr 64 B open loop p99.9",
    "µs",
    false,
    Versus::Added,
);
pub const CONN_RATE: Metric = m(
    "conn_per_s",
    "connections/s, async client, 32 concurrent",
    "conn/s",
    true,
    Versus::Ratio,
);
pub const CONN_POOL_RATE: Metric = m(
    "conn_pool_per_s",
    "connections/s, 32 blocking client threads",
    "conn/s",
    true,
    Versus::Ratio,
);
pub const CPU_CONN_POOL: Metric = m(
    "cpu_us_per_conn_pool",
    "proxy CPU per connection (32 blocking threads)",
    "CPU µs",
    false,
    Versus::None,
);
pub const CONN_ONE_RATE: Metric = m(
    "conn_one_per_s",
    "connections/s, one at a time (1 blocking thread)",
    "conn/s",
    true,
    Versus::Ratio,
);
pub const CONN_ONE_P50: Metric = m(
    "conn_one_p50_us",
    "connect to first byte p50, one at a time",
    "µs",
    false,
    Versus::Added,
);
pub const CONN_P50: Metric = m(
    "conn_p50_us",
    "connect to first byte p50 (async, 32 concurrent)",
    "µs",
    false,
    Versus::Added,
);
pub const CONN_P99: Metric = m(
    "conn_p99_us",
    "connect to first byte p99",
    "µs",
    false,
    Versus::Added,
);
pub const CPU_CONN: Metric = m(
    "cpu_us_per_conn",
    "proxy CPU per connection",
    "CPU µs",
    false,
    Versus::None,
);
pub const HTTP_KA_RATE: Metric = m(
    "http_ka_per_s",
    "HTTP/1.1 requests/s, 32 kept-alive connections",
    "req/s",
    true,
    Versus::Ratio,
);
pub const HTTP_ONE_P50: Metric = m(
    "http_one_p50_us",
    "HTTP/1.1 request p50, one at a time (1 kept-alive connection)",
    "µs",
    false,
    Versus::Added,
);
pub const HTTP_ONE_P99: Metric = m(
    "http_one_p99_us",
    "HTTP/1.1 request p99, one at a time",
    "µs",
    false,
    Versus::Added,
);
pub const CPU_HTTP_KA: Metric = m(
    "cpu_us_per_http_ka",
    "proxy CPU per HTTP request, kept alive",
    "CPU µs",
    false,
    Versus::None,
);
pub const HTTP_NEW_RATE: Metric = m(
    "http_new_per_s",
    "HTTP/1.1 requests/s, a new connection each (32 at once)",
    "req/s",
    true,
    Versus::Ratio,
);
pub const CPU_HTTP_NEW: Metric = m(
    "cpu_us_per_http_new",
    "proxy CPU per HTTP request, a new connection each",
    "CPU µs",
    false,
    Versus::None,
);
pub const HELD: Metric = m("held", "connections held", "", true, Versus::Ratio);
pub const RSS_EDGE: Metric = m(
    "rss_edge_b_per_conn",
    "edge RSS per held connection",
    "B",
    false,
    Versus::None,
);
pub const RSS_AGENT: Metric = m(
    "rss_agent_b_per_conn",
    "agent RSS per held connection",
    "B",
    false,
    Versus::None,
);
pub const RSS_TOTAL: Metric = m(
    "rss_b_per_conn",
    "edge + agent RSS per held connection",
    "B",
    false,
    Versus::None,
);
pub const AGENT_UP: Metric = m(
    "agent_usable_ms",
    "new agent usable after",
    "ms",
    false,
    Versus::None,
);
pub const ERRORS: Metric = m(
    "errors",
    "load errors (all workloads)",
    "",
    false,
    Versus::None,
);

/// Every figure, in report order.
pub const ALL: [Metric; 30] = [
    THR1,
    THR4,
    CPU_GB,
    RR_P50,
    RR_P99,
    RR_P999,
    RR_RATE,
    OPEN_P50,
    OPEN_P99,
    OPEN_P999,
    CONN_RATE,
    CONN_P50,
    CONN_P99,
    CPU_CONN,
    CONN_POOL_RATE,
    CPU_CONN_POOL,
    CONN_ONE_RATE,
    CONN_ONE_P50,
    HTTP_KA_RATE,
    CPU_HTTP_KA,
    HTTP_NEW_RATE,
    CPU_HTTP_NEW,
    HTTP_ONE_P50,
    HTTP_ONE_P99,
    HELD,
    RSS_EDGE,
    RSS_AGENT,
    RSS_TOTAL,
    AGENT_UP,
    ERRORS,
];

/// The metric with this key.
pub fn by_key(key: &str) -> Option<Metric> {
    ALL.iter().copied().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_found() {
        for m in ALL {
            assert_eq!(by_key(m.key), Some(m));
            assert_eq!(ALL.iter().filter(|o| o.key == m.key).count(), 1);
        }
        assert_eq!(by_key("nope"), None);
    }
}
