//! Human durations in config files (`10s`, `1m30s`, `250ms`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `deserialize_with` helper for a human-readable duration.
pub fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
}
