//! [`PolicyHandle`]: publishes compiled policies to any number of reader
//! threads with `arc-swap`.
//!
//! Build-then-publish: a new policy is parsed, validated and compiled off
//! the hot path, then swapped in with one atomic pointer store. Readers
//! never lock and never block; a reader sees either the old or the new
//! table, never a half-built one, and a connection that loaded the old
//! policy keeps it alive until it is done with it. A policy that fails to
//! parse or compile is rejected whole and the old one stays.
//!
//! Workers read through [`PolicyReader`] (a per-thread `arc_swap::Cache`:
//! one atomic load per call while nothing changed) or [`PolicyHandle::load`].

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache, Guard};

use crate::compiled::BuildStats;
use crate::{CompiledPolicy, PolicyError, TrafficPolicy};

#[derive(Debug)]
struct Inner {
    current: ArcSwap<CompiledPolicy>,
    generation: AtomicU64,
}

/// `Arc<Inner>` seen as the `ArcSwap` that `arc_swap::Cache` wants.
#[derive(Clone, Debug)]
struct Shared(Arc<Inner>);

impl Deref for Shared {
    type Target = ArcSwap<CompiledPolicy>;
    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

/// A hot-swappable compiled policy. Cloning is cheap and clones share the
/// same current policy.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    inner: Shared,
}

/// What a [`PolicyHandle::store`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwapReport {
    /// Generation now current (the first policy is generation 0).
    pub generation: u64,
    /// The new policy's compilation figures (its build time included).
    pub build: BuildStats,
    /// Time to publish (the pointer swap, plus waiting for readers that
    /// were mid-load to move on).
    pub publish: Duration,
}

impl PolicyHandle {
    /// A handle whose current policy is `policy` (generation 0).
    pub fn new(policy: CompiledPolicy) -> Self {
        PolicyHandle {
            inner: Shared(Arc::new(Inner {
                current: ArcSwap::from_pointee(policy),
                generation: AtomicU64::new(0),
            })),
        }
    }

    /// The current policy. Lock-free and cheap; hold the guard for one
    /// connection's decision, not for long (use [`load_full`](Self::load_full)
    /// to keep it).
    #[inline]
    pub fn load(&self) -> Guard<Arc<CompiledPolicy>> {
        self.inner.load()
    }

    /// The current policy as an owned `Arc`.
    pub fn load_full(&self) -> Arc<CompiledPolicy> {
        self.inner.load_full()
    }

    /// A per-thread reader: caches the current `Arc` and revalidates it
    /// with one atomic load per call.
    pub fn reader(&self) -> PolicyReader {
        PolicyReader {
            cache: Cache::new(self.inner.clone()),
        }
    }

    /// Publishes `policy`; readers pick it up on their next load.
    pub fn store(&self, policy: CompiledPolicy) -> SwapReport {
        self.store_shared(Arc::new(policy))
    }

    /// Publishes an already shared policy (one compiled policy can serve
    /// several endpoints, or be prepared ahead of time).
    pub fn store_shared(&self, policy: Arc<CompiledPolicy>) -> SwapReport {
        let build = *policy.stats();
        let started = Instant::now();
        self.inner.store(policy);
        let generation = self.inner.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
        SwapReport {
            generation,
            build,
            publish: started.elapsed(),
        }
    }

    /// Parses, validates and compiles `yaml`, then publishes it. On error
    /// nothing changes and the old policy stays.
    pub fn store_yaml(&self, yaml: &str) -> Result<SwapReport, PolicyError> {
        let compiled = TrafficPolicy::from_yaml(yaml)?.compile()?;
        Ok(self.store(compiled))
    }

    /// How many policies have been stored since [`new`](Self::new).
    pub fn generation(&self) -> u64 {
        self.inner.0.generation.load(Ordering::Acquire)
    }
}

/// A per-thread cached view of a [`PolicyHandle`] (`arc_swap::Cache`).
#[derive(Debug)]
pub struct PolicyReader {
    cache: Cache<Shared, Arc<CompiledPolicy>>,
}

impl PolicyReader {
    /// The current policy: one atomic load when nothing changed, no lock.
    #[inline]
    pub fn load(&mut self) -> &Arc<CompiledPolicy> {
        self.cache.load()
    }
}
