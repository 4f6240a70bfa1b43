//! [`Table4`]: the IPv4 lookup table.
//!
//! Large tables use the dense layout: a 65,536-entry first level on the top
//! 16 bits of the address (256 KiB) whose entries delimit a block per /16:
//! the run of 16-bit keys (the low halves of the boundaries in that /16),
//! searched with SSE2, directly followed by the block's values. A lookup is
//! one index load and one or two cache lines of keys, and the value is
//! usually in a line already loaded. About 3 bytes per boundary (2 for the
//! key, 1 for the value) plus one value per /16. Small tables use
//! the generic [`Indexed`] layout, whose index grows with the table instead
//! of costing 256 KiB for ten prefixes.

use std::marker::PhantomData;

use crate::indexed::Indexed;
use crate::search::{count_le_u16, WIDE};

/// Boundaries from which the dense layout is used.
const DENSE_FROM: usize = 32 * 1024;
/// Keys of padding after the last run, so a [`WIDE`]-lane load never
/// leaves the slice.
const PAD: usize = WIDE;

/// Values the dense layout may copy byte for byte and read back unaligned: plain
/// integers with no padding, no pointers and every bit pattern valid. Sealed: only
/// the types listed here implement it.
pub(crate) trait PlainValue: Copy + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
}

impl PlainValue for u8 {}
impl PlainValue for u16 {}

/// IPv4 segment table with values `V`.
#[derive(Debug)]
pub(crate) enum Table4<V> {
    /// Few boundaries: adaptive index, full 32-bit keys.
    Small(Indexed<u32, V>),
    /// Many boundaries: 16-bit first level, 16-bit keys.
    Dense(Dense16<V>),
}

impl<V: PlainValue> Table4<V> {
    /// Builds from boundaries (`keys[0] == 0`, strictly increasing) and values.
    pub(crate) fn new(keys: Vec<u32>, vals: Vec<V>) -> Self {
        if keys.len() >= DENSE_FROM {
            Table4::Dense(Dense16::new(&keys, vals))
        } else {
            Table4::Small(Indexed::new(keys, vals, 12))
        }
    }

    /// The value of the segment containing `x`.
    #[inline(always)]
    pub(crate) fn get(&self, x: u32) -> V {
        match self {
            Table4::Small(t) => t.get(x),
            Table4::Dense(t) => t.get(x),
        }
    }

    /// Number of boundaries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Table4::Small(t) => t.len(),
            Table4::Dense(t) => t.len,
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Table4::Small(t) => t.heap_bytes(),
            Table4::Dense(t) => std::mem::size_of_val(&*t.index) + std::mem::size_of_val(&*t.data),
        }
    }
}

/// The dense layout; see the module docs.
///
/// Bucket `b` (the /16 `b`) holds the boundaries `lo..hi` with
/// `lo = index[b]`, `hi = index[b + 1]`, `n = hi - lo`. Its block in `data`
/// starts at byte `(2 + S) * lo + S * b` (`S = size_of::<V>()`) and is:
/// `n` keys (low 16 bits of the boundaries, sign bit flipped, native byte
/// order), then `n + 1` values: the value in force at the start of the /16
/// (that of the last boundary below it), then the value from each key on.
/// With `c` keys `<= x`, the value is the block's value `c`.
///
/// Invariants the unchecked lookup relies on (established by `new`, never
/// changed after): `index.len() == 65_537`, non-decreasing, `index[65_536]
/// == len`; `data` holds the 65,536 blocks back to back and then
/// [`PAD`] `* 2` bytes, so a 64-byte key window from any key never leaves it.
#[derive(Debug)]
pub(crate) struct Dense16<V> {
    /// `index[b]..index[b + 1]` are the boundaries whose top 16 bits are `b`.
    index: Box<[u32]>,
    /// The blocks, then padding.
    data: Box<[u8]>,
    /// Number of boundaries.
    len: usize,
    _vals: PhantomData<V>,
}

impl<V: PlainValue> Dense16<V> {
    const S: usize = std::mem::size_of::<V>();

    fn new(keys: &[u32], vals: Vec<V>) -> Self {
        assert!(keys.first() == Some(&0) && keys.len() == vals.len());
        assert!(keys.len() < u32::MAX as usize);
        let mut index = Vec::with_capacity(65_537);
        let mut i = 0usize;
        for b in 0..65_536u32 {
            while i < keys.len() && (keys[i] >> 16) < b {
                i += 1;
            }
            index.push(i as u32);
        }
        index.push(keys.len() as u32);
        let s = Self::S;
        let total = (2 + s) * keys.len() + s * 65_536 + 2 * PAD;
        let mut data = vec![0u8; total];
        let mut at = 0;
        for b in 0..65_536usize {
            let (lo, hi) = (index[b] as usize, index[b + 1] as usize);
            debug_assert_eq!(at, (2 + s) * lo + s * b);
            for (chunk, &k) in data[at..at + 2 * (hi - lo)]
                .chunks_exact_mut(2)
                .zip(&keys[lo..hi])
            {
                chunk.copy_from_slice(&((k as u16) ^ 0x8000).to_ne_bytes());
            }
            at += 2 * (hi - lo);
            let block_vals = &mut data[at..at + s * (hi - lo + 1)];
            // SAFETY: `V: PlainValue` is plain data (`u8` or `u16`); the value
            // in force at the start of the /16 and then `vals[lo..hi]` are
            // copied byte for byte into `block_vals`, which is exactly
            // `s * (hi - lo + 1)` bytes long.
            unsafe {
                let dst = block_vals.as_mut_ptr();
                let carry = vals[lo.saturating_sub(1)];
                std::ptr::copy_nonoverlapping((&carry as *const V).cast::<u8>(), dst, s);
                std::ptr::copy_nonoverlapping(
                    vals[lo..hi].as_ptr().cast::<u8>(),
                    dst.add(s),
                    s * (hi - lo),
                );
            }
            at += s * (hi - lo + 1);
        }
        assert_eq!(at + 2 * PAD, total);
        assert!(index.len() == 65_537 && index[65_536] as usize == keys.len());
        Dense16 {
            index: index.into_boxed_slice(),
            data: data.into_boxed_slice(),
            len: keys.len(),
            _vals: PhantomData,
        }
    }

    #[inline(always)]
    fn get(&self, x: u32) -> V {
        let b = (x >> 16) as usize;
        // SAFETY: `b <= 65_535` and `index.len() == 65_537`.
        let (lo, hi) = unsafe {
            (
                *self.index.get_unchecked(b) as usize,
                *self.index.get_unchecked(b + 1) as usize,
            )
        };
        let n = hi - lo;
        // SAFETY: block `b` starts at `(2 + S) * lo + S * b` and its `n` keys
        // are followed by at least `2 * PAD == 2 * WIDE` bytes of `data`
        // (its values, later blocks, the padding). `c <= n`, so value `c`
        // lies inside the block; `V: PlainValue` is read unaligned.
        unsafe {
            let block = self.data.as_ptr().add((2 + Self::S) * lo + Self::S * b);
            let c = count_le_u16(block, n, x as u16);
            block.add(2 * n + Self::S * c).cast::<V>().read_unaligned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boundaries spread over the space plus crowded /16s (runs of hundreds
    /// of keys), values `u8` and `u16`, checked against a binary search.
    fn check<V: PlainValue + PartialEq + std::fmt::Debug>(val: impl Fn(usize) -> V) {
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        let mut keys = vec![0u32];
        for i in 0..60_000 {
            let k = next() as u32;
            keys.push(if i % 3 == 0 {
                0x0a0a_0000 | (k & 0x3_ffff)
            } else {
                k
            });
        }
        keys.extend([1, 0xffff, 0x1_0000, 0x1_0001, 0xffff_0000, u32::MAX]);
        keys.sort_unstable();
        keys.dedup();
        let vals: Vec<V> = (0..keys.len()).map(&val).collect();
        let t = Table4::new(keys.clone(), vals.clone());
        assert!(matches!(t, Table4::Dense(_)));
        assert_eq!(t.len(), keys.len());
        let mut probes: Vec<u32> = (0..200_000).map(|_| next() as u32).collect();
        for &k in keys.iter().step_by(7) {
            probes.extend([k, k.wrapping_sub(1), k.wrapping_add(1)]);
        }
        probes.extend([0, u32::MAX, 0x0a0a_ffff, 0x0a0b_0000]);
        for x in probes {
            let want = vals[keys.partition_point(|&k| k <= x) - 1];
            assert_eq!(t.get(x), want, "x {x:#x}");
        }
    }

    #[test]
    fn dense_u8_matches_binary_search() {
        check(|i| (i * 7 % 251) as u8);
    }

    #[test]
    fn dense_u16_matches_binary_search() {
        check(|i| (i * 7 % 60_011) as u16);
    }
}
