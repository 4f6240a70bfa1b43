//! [`Cidr`]: one CIDR from a policy, parsed and normalised.
//!
//! Normalisation: host bits are cleared (`10.0.0.1/8` becomes `10.0.0.0/8`),
//! a bare address is a single-host prefix (`/32` or `/128`), and an
//! IPv4-mapped IPv6 prefix of length 96 or more (`::ffff:10.0.0.0/104`)
//! becomes the IPv4 prefix it denotes (`10.0.0.0/8`), because IPv4-mapped
//! client addresses are checked as IPv4.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PolicyError;

/// A normalised CIDR (network address with host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Parses and normalises `addr/len` or a bare address.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        parse(text).map_err(|reason| PolicyError::InvalidCidr {
            value: text.to_owned(),
            reason,
        })
    }

    /// Normalises an [`IpNet`] (clears host bits, maps `::ffff:0:0/96` subnets to IPv4).
    pub fn new(net: IpNet) -> Self {
        match net {
            IpNet::V4(n) => Cidr(IpNet::V4(n.trunc())),
            IpNet::V6(n) => match (n.network().to_ipv4_mapped(), n.prefix_len()) {
                (Some(v4), len) if len >= 96 => Cidr(IpNet::V4(
                    Ipv4Net::new(v4, len - 96).expect("len - 96 <= 32").trunc(),
                )),
                _ => Cidr(IpNet::V6(n.trunc())),
            },
        }
    }

    /// The normalised network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `addr` lies in this CIDR (no IPv4-mapped translation here).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }
}

impl From<IpNet> for Cidr {
    fn from(net: IpNet) -> Self {
        Cidr::new(net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Cidr {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
            .map_err(|reason| serde::de::Error::custom(format!("invalid CIDR `{text}`: {reason}")))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

fn parse(text: &str) -> Result<Cidr, &'static str> {
    let text = text.trim();
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| "not an IPv4 or IPv6 address")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) => {
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the prefix length is not a number");
            }
            let len: u8 = len
                .parse()
                .map_err(|_| "the prefix length is not a number")?;
            if len > max {
                return Err(if max == 32 {
                    "the prefix length exceeds 32"
                } else {
                    "the prefix length exceeds 128"
                });
            }
            len
        }
    };
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).map_err(|_| "bad prefix length")?),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).map_err(|_| "bad prefix length")?),
    };
    Ok(Cidr::new(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let c = |s: &str| Cidr::parse(s).unwrap().to_string();
        assert_eq!(c("10.0.0.1/8"), "10.0.0.0/8");
        assert_eq!(c("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(c("2001:db8::1/32"), "2001:db8::/32");
        assert_eq!(c("::1"), "::1/128");
        assert_eq!(c("::ffff:10.1.2.3/104"), "10.0.0.0/8");
        assert_eq!(c("::ffff:0:0/96"), "0.0.0.0/0");
        assert_eq!(c("::/0"), "::/0");
        assert_eq!(c(" 0.0.0.0/0 "), "0.0.0.0/0");
    }

    #[test]
    fn rejects() {
        for (bad, why) in [
            ("10.0.0.300/8", "not an IPv4"),
            ("10.0.0.0/33", "exceeds 32"),
            ("::/129", "exceeds 128"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/-1", "not a number"),
            ("example.com", "not an IPv4"),
            ("", "not an IPv4"),
        ] {
            let err = Cidr::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }
}
