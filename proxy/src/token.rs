//! Authtokens: generation, the `sha256:<hex>` form the edge stores, and the
//! constant-time check of a presented token against stored hashes.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every token sluice generates (makes leaked tokens easy to grep for).
const TOKEN_PREFIX: &str = "slt_";
/// Prefix of a stored token hash.
pub const HASH_PREFIX: &str = "sha256:";

/// A secret authtoken. `Debug` never prints it; its memory is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The SHA-256 of a token, as stored by the edge.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a presented token.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses the stored form `sha256:<64 hex digits>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex_part = s
            .strip_prefix(HASH_PREFIX)
            .ok_or_else(|| format!("token hash must start with `{HASH_PREFIX}`"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| "token hash must be `sha256:` and 64 hex digits".to_string())?;
        Ok(Self(out))
    }

    /// Constant-time equality (the comparison does not leak how many bytes matched).
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The first of `candidates` whose hash is that of `token`. Every candidate is
    /// compared, in constant time, so the time taken says nothing about which (or
    /// whether one) matched.
    pub fn find<'a, T: 'a>(
        token: &str,
        candidates: impl IntoIterator<Item = (&'a TokenHash, T)>,
    ) -> Option<T> {
        let presented = Self::of(token);
        let mut found = None;
        for (hash, value) in candidates {
            if hash.matches(&presented) && found.is_none() {
                found = Some(value);
            }
        }
        found
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> serde::Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TokenHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A fresh random authtoken: `slt_` and 48 hex digits (192 bits).
pub fn generate() -> Secret {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    Secret(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_and_hash_round_trips() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        let stored = TokenHash::of(a.expose()).to_string();
        let parsed = TokenHash::parse(&stored).unwrap();
        assert!(parsed.matches(&TokenHash::of(a.expose())));
        assert!(!parsed.matches(&TokenHash::of(b.expose())));
    }

    #[test]
    fn malformed_hashes_are_rejected() {
        assert!(TokenHash::parse("md5:abcd").is_err());
        assert!(TokenHash::parse("sha256:xyz").is_err());
        assert!(TokenHash::parse(&format!("sha256:{}", "a".repeat(63))).is_err());
    }

    #[test]
    fn secret_debug_hides_the_value() {
        assert_eq!(format!("{:?}", Secret::new("slt_abc")), "***");
    }
}
