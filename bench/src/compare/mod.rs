//! The side-by-side comparison runner (`--bin compare`): sluice against a direct
//! connection, HAProxy chained twice, rathole and bore, on loopback, with the same
//! `sluice-load` workloads, interleaved rounds and every figure also relative to
//! direct in the same round. See bench/reports/ and README's "Benchmarks".
//!
//! Pure parts (configs, statistics, report, charts) are unit-tested; the run itself
//! is never part of `cargo test`.

pub mod args;
pub mod configs;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod peers;
pub mod procs;
pub mod report;
pub mod results;
pub mod run;
pub mod setup;
pub mod stats;
pub mod svg;
pub mod workloads;
