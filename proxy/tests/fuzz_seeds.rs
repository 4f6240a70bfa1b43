//! The fuzz crate's own tests (in proxy/fuzz/src/lib.rs), compiled into sluice-proxy's
//! test run: the `frame_decoder` seed corpus in git is what the codec encodes today,
//! and the config sandbox's TLS files load. The fuzz crate is a workspace of its own,
//! so testing it there would build sluice-proxy and its dependencies once more.
//! Regenerate the seeds with `SLUICE_FUZZ_REGEN=1 cargo test -p sluice-proxy --test
//! fuzz_seeds`.

#[allow(dead_code, reason = "the fuzz targets use the rest of the helpers")]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_helpers;
