//! sluice-tests: helpers for end-to-end tests (processes, ports, certificates).
