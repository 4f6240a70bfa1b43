//! sluice-bench: criterion benchmarks live in `benches/`; the comparison runner is issue 9.
