//! The agent and edge config parsers. Errors are expected, panics are bugs.
//!
//! Both get the same text. The config path is a file that does not exist in a private
//! directory holding a valid `edge.crt` / `edge.key` / `ca.pem`, so seeds that name
//! those files reach the validation after TLS loading. Inputs naming `/dev`, `/proc`
//! or `/sys` are skipped (reading `/dev/zero` as a certificate would never end).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_proxy::config::{agent::AgentSettings, edge::EdgeSettings};
use sluice_proxy_fuzz::{touches_special_files, ConfigSandbox};

static SANDBOX: OnceLock<ConfigSandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if touches_special_files(text) {
        return;
    }
    let sandbox = SANDBOX.get_or_init(|| ConfigSandbox::create().expect("fuzz sandbox dir"));
    let _ = AgentSettings::from_yaml(text, &sandbox.config_path("agent.yml"));
    let _ = EdgeSettings::from_yaml(text, &sandbox.config_path("edge.yml"));
});
