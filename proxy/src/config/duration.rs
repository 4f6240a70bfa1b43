//! Human durations in config files (`10s`, `1m30s`, `250ms`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `deserialize_with` helper for a human-readable duration.
pub fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
}

/// `deserialize_with` helper for an optional human-readable duration (pair it with
/// `#[serde(default)]`).
pub fn human_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    human(d).map(Some)
}
