//! sluice-bench: criterion benchmarks live in `benches/`; the side-by-side comparison
//! runner (`--bin compare`) in [`compare`].

pub mod compare;
