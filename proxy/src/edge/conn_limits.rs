//! Connection limits of one endpoint: at most `max_connections` at once, and at most
//! `max_connections_per_ip` from one client address. A connection over a limit is
//! closed (reset) before its policy is even evaluated, counted, and logged (rate
//! limited). The per-address table is sharded by a hash of the address, so workers
//! rarely meet on a lock, and entries leave it when their last connection closes.

use std::{collections::HashMap, hash::BuildHasher, net::IpAddr, sync::Mutex};

const SHARDS: usize = 32;

/// One shard of the per-address table: open connections per client IP.
type Shard = Mutex<HashMap<IpAddr, u32>>;

/// Limits as configured (None: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Connections at once through the endpoint.
    pub max_connections: Option<usize>,
    /// Connections at once from one client IP.
    pub max_connections_per_ip: Option<u32>,
}

/// Which limit a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The endpoint's `max_connections`.
    Endpoint,
    /// The endpoint's `max_connections_per_ip`.
    PerIp,
}

impl LimitHit {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::Endpoint => "max_connections",
            LimitHit::PerIp => "max_connections_per_ip",
        }
    }
}

/// One endpoint's limits and its per-address counts.
pub struct ConnLimits {
    /// What is enforced.
    pub settings: LimitSettings,
    per_ip: Option<Box<[Shard]>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Holds one connection's place in the per-address table until dropped.
pub struct IpSlot<'a> {
    limits: &'a ConnLimits,
    ip: IpAddr,
}

impl ConnLimits {
    /// Limits enforcing `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        let per_ip = settings
            .max_connections_per_ip
            .map(|_| (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect());
        Self {
            settings,
            per_ip,
            hasher: Default::default(),
        }
    }

    fn shard(&self, ip: IpAddr) -> Option<&Shard> {
        let shards = self.per_ip.as_ref()?;
        Some(&shards[self.hasher.hash_one(ip) as usize % SHARDS])
    }

    /// Admits a connection from `ip` when `open` connections (this one included) are
    /// open on the endpoint; the slot keeps its per-address place until dropped.
    pub fn admit(&self, ip: IpAddr, open: usize) -> Result<Option<IpSlot<'_>>, LimitHit> {
        if self.settings.max_connections.is_some_and(|max| open > max) {
            return Err(LimitHit::Endpoint);
        }
        let (Some(max), Some(shard)) = (self.settings.max_connections_per_ip, self.shard(ip))
        else {
            return Ok(None);
        };
        let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= max {
            return Err(LimitHit::PerIp);
        }
        *count += 1;
        Ok(Some(IpSlot { limits: self, ip }))
    }

    /// Client addresses with open connections now (for tests and metrics).
    pub fn tracked_addresses(&self) -> usize {
        self.per_ip.as_ref().map_or(0, |shards| {
            shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
                .sum()
        })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        if let Some(shard) = self.limits.shard(self.ip) {
            let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = table.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    table.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits() {
        let limits = ConnLimits::new(LimitSettings {
            max_connections: Some(3),
            max_connections_per_ip: Some(2),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limits.admit(a, 1).unwrap();
        let s2 = limits.admit(a, 2).unwrap();
        assert_eq!(limits.admit(a, 3).err(), Some(LimitHit::PerIp));
        let s3 = limits.admit(b, 3).unwrap();
        assert_eq!(limits.admit(b, 4).err(), Some(LimitHit::Endpoint));
        drop(s1);
        assert!(limits.admit(a, 3).is_ok());
        drop((s2, s3));
        assert_eq!(limits.tracked_addresses(), 0);
    }

    #[test]
    fn unlimited_by_default() {
        let limits = ConnLimits::new(LimitSettings::default());
        assert!(limits
            .admit("::1".parse().unwrap(), 1_000_000)
            .unwrap()
            .is_none());
    }
}
