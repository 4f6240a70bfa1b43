//! sluice-loadtest: the `sluice-load` harness (work in progress, see issue 4).
