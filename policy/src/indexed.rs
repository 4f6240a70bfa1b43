//! [`Indexed`]: the generic lookup table over one family's address line.
//!
//! The line is cut into segments by sorted boundary keys; each segment has a
//! value (an outcome id). A first-level index maps the top bits of
//! `addr - base` to the run of boundaries in that bucket, so a lookup is one
//! index load and a short branch-free search. Used for IPv6 at every size
//! and for IPv4 tables too small to pay for the dense 16-bit index.

use crate::key::Key;
use crate::search::{count_le, LINEAR};

/// A segment table: `keys[0] == 0`, keys strictly increasing, `vals[i]` is
/// the value from `keys[i]` up to the next key.
///
/// Invariants the unchecked lookup relies on (established by [`Indexed::new`],
/// never changed after): `shift < K::BITS`; `index.len() == last_bucket + 2`;
/// `1 <= index[b] <= index[b + 1] <= vals.len()` for every `b <= last_bucket`;
/// `keys.len() == vals.len() + LINEAR`, the padding being `K::MAX`.
#[derive(Debug)]
pub(crate) struct Indexed<K, V> {
    base: K,
    shift: u32,
    last_bucket: usize,
    index: Box<[u32]>,
    /// The boundaries plus [`LINEAR`] keys of padding (`K::MAX`).
    keys: Box<[K]>,
    vals: Box<[V]>,
}

impl<K: Key, V: Copy> Indexed<K, V> {
    /// Builds the table. `keys[0]` must be 0, keys strictly increasing,
    /// one value per key, and at most `u32::MAX` keys.
    pub(crate) fn new(keys: Vec<K>, vals: Vec<V>, max_index_bits: u32) -> Self {
        assert!(keys.first() == Some(&K::default()) && keys.len() == vals.len());
        assert!(keys.len() < u32::MAX as usize);
        let n = keys.len();
        let pad = |mut keys: Vec<K>| {
            keys.extend([K::MAX; LINEAR]);
            keys.into_boxed_slice()
        };
        if n == 1 {
            return Indexed {
                base: keys[0],
                // Every offset falls in bucket 0 (clamped), whose run is empty.
                shift: K::BITS - 1,
                last_bucket: 0,
                index: vec![1, 1].into_boxed_slice(),
                keys: pad(keys),
                vals: vals.into_boxed_slice(),
            };
        }
        let base = keys[1];
        let span = keys[n - 1].minus(base);
        // About two boundaries per bucket.
        let want = usize::BITS - (n / 2).leading_zeros();
        let bits = want.min(max_index_bits).min(span.bit_len());
        // `bits <= span.bit_len() <= K::BITS`, and `shift == K::BITS` would
        // need `bits == 0` with a full-width span: `shift < K::BITS`.
        let shift = span.bit_len() - bits;
        let buckets = span.shr(shift) + 1;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut i = 1usize;
        for b in 0..buckets {
            while i < n && keys[i].minus(base).shr(shift) < b {
                i += 1;
            }
            index.push(i as u32);
        }
        index.push(n as u32);
        assert!(shift < K::BITS && index.len() == buckets + 1 && index[0] >= 1);
        Indexed {
            base,
            shift,
            last_bucket: buckets - 1,
            index: index.into_boxed_slice(),
            keys: pad(keys),
            vals: vals.into_boxed_slice(),
        }
    }

    /// The value of the segment containing `x`.
    #[inline(always)]
    pub(crate) fn get(&self, x: K) -> V {
        // Below `base` the offset saturates to 0: bucket 0 starts at key 1
        // (`== base > x`), so the count is 0 and the value `vals[0]`.
        let b = x.sat_sub(self.base).bucket(self.shift, self.last_bucket);
        // SAFETY: `b <= last_bucket` and `index.len() == last_bucket + 2`.
        let (lo, hi) = unsafe {
            (
                *self.index.get_unchecked(b) as usize,
                *self.index.get_unchecked(b + 1) as usize,
            )
        };
        // SAFETY: `lo <= hi <= vals.len()`, and `keys` holds `LINEAR` keys of
        // `K::MAX` after the `vals.len()` sorted boundaries.
        let c = unsafe { count_le(&self.keys, lo, hi, x) };
        // `lo >= 1` and `keys[lo - 1] <= x`, so `lo + c - 1` is a valid segment:
        // at least 0 and at most `hi - 1 < vals.len()`.
        // SAFETY: as just argued.
        unsafe { *self.vals.get_unchecked(lo + c - 1) }
    }

    /// Number of boundaries.
    pub(crate) fn len(&self) -> usize {
        self.vals.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.index)
            + std::mem::size_of_val(&*self.keys)
            + std::mem::size_of_val(&*self.vals)
    }
}
