//! Validation of the host name a ClientHello or a routing pattern carries.

use std::net::Ipv4Addr;

use super::{SniError, MAX_HOST_NAME};

/// Checks that `name` is a DNS host name as SNI carries it: 1..=253 bytes, labels of
/// 1..=63 ASCII letters, digits, `-` (not first or last) and `_`, no trailing dot, and
/// not an IPv4 literal (RFC 6066 forbids IP addresses in SNI).
pub(super) fn validate_host_name(name: &[u8]) -> Result<&str, SniError> {
    let bad = |why| Err(SniError::InvalidHostName(why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_HOST_NAME {
        return bad("longer than 253 bytes");
    }
    if name.ends_with(b".") {
        return bad("trailing dot");
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return bad("empty label");
        }
        if label.len() > 63 {
            return bad("label longer than 63 bytes");
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("character other than letters, digits, '-' and '_'");
        }
        if label.starts_with(b"-") || label.ends_with(b"-") {
            return bad("label starts or ends with '-'");
        }
    }
    let Ok(name) = std::str::from_utf8(name) else {
        return bad("not ASCII"); // unreachable: checked byte by byte above
    };
    if name.parse::<Ipv4Addr>().is_ok() {
        return bad("IPv4 address literal");
    }
    Ok(name)
}
