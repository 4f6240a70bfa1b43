//! [`Table6`]: the IPv6 lookup table, the generic [`Indexed`] layout.
//!
//! When every boundary has its low 64 bits zero (all CIDRs are /64 or
//! shorter, the usual case for IPv6 allow and deny lists), the table keys
//! are the top 64 bits only: half the memory and cheaper compares, and
//! exact, since a boundary `k << 64` is `<= x` exactly when `k <= x >> 64`.
//! Otherwise the keys are full `u128`. The first level covers only the span
//! between the lowest and highest boundary (typically inside 2000::/3), up
//! to 2^20 buckets, about two boundaries per bucket.

use crate::indexed::Indexed;

/// IPv6 segment table with values `V`.
#[derive(Debug)]
pub(crate) enum Table6<V> {
    /// Keys are the top 64 bits of the boundaries.
    Hi64(Indexed<u64, V>),
    /// Full 128-bit keys.
    Full(Indexed<u128, V>),
}

impl<V: Copy> Table6<V> {
    /// Builds from boundaries (`keys[0] == 0`, strictly increasing) and values.
    pub(crate) fn new(keys: Vec<u128>, vals: Vec<V>) -> Self {
        if keys.iter().all(|&k| k as u64 == 0) {
            let hi = keys.iter().map(|&k| (k >> 64) as u64).collect();
            Table6::Hi64(Indexed::new(hi, vals, 20))
        } else {
            Table6::Full(Indexed::new(keys, vals, 20))
        }
    }

    /// The value of the segment containing the address whose top and
    /// bottom 64 bits are `hi` and `lo`.
    #[inline(always)]
    pub(crate) fn get(&self, hi: u64, lo: u64) -> V {
        match self {
            Table6::Hi64(t) => t.get(hi),
            Table6::Full(t) => t.get(u128::from(hi) << 64 | u128::from(lo)),
        }
    }

    /// Number of boundaries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Table6::Hi64(t) => t.len(),
            Table6::Full(t) => t.len(),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Table6::Hi64(t) => t.heap_bytes(),
            Table6::Full(t) => t.heap_bytes(),
        }
    }
}
