//! [`Table4`]: the IPv4 lookup table.
//!
//! Large tables use the dense layout: a 65,536-entry first level on the top
//! 16 bits of the address (256 KiB) whose entries delimit a run of 16-bit
//! keys (the low halves of the boundaries in that /16), searched with SSE2.
//! A lookup is one index load and one or two cache lines of keys, about
//! 3 bytes per boundary (2 for the key, 1 for the value). Small tables use
//! the generic [`Indexed`] layout, whose index grows with the table instead
//! of costing 256 KiB for ten prefixes.

use crate::indexed::Indexed;
use crate::search::count_le_u16;

/// Boundaries from which the dense layout is used.
const DENSE_FROM: usize = 32 * 1024;
/// Keys of padding after the last run, so a 16-lane load never leaves the slice.
const PAD: usize = 16;

/// IPv4 segment table with values `V`.
#[derive(Debug)]
pub(crate) enum Table4<V> {
    /// Few boundaries: adaptive index, full 32-bit keys.
    Small(Indexed<u32, V>),
    /// Many boundaries: 16-bit first level, 16-bit keys.
    Dense(Dense16<V>),
}

impl<V: Copy> Table4<V> {
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
            Table4::Dense(t) => t.vals.len(),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Table4::Small(t) => t.heap_bytes(),
            Table4::Dense(t) => {
                std::mem::size_of_val(&*t.index)
                    + std::mem::size_of_val(&*t.keys)
                    + std::mem::size_of_val(&*t.vals)
            }
        }
    }
}

/// The dense layout; see the module docs.
#[derive(Debug)]
pub(crate) struct Dense16<V> {
    /// `index[b]..index[b + 1]` are the boundaries whose top 16 bits are `b`.
    index: Box<[u32]>,
    /// Low 16 bits of each boundary, sign bit flipped, plus [`PAD`] keys.
    keys: Box<[u16]>,
    vals: Box<[V]>,
}

impl<V: Copy> Dense16<V> {
    fn new(keys: &[u32], vals: Vec<V>) -> Self {
        assert!(keys.first() == Some(&0) && keys.len() == vals.len());
        let mut index = Vec::with_capacity(65_537);
        let mut i = 0usize;
        for b in 0..65_536u32 {
            while i < keys.len() && (keys[i] >> 16) < b {
                i += 1;
            }
            index.push(i as u32);
        }
        index.push(keys.len() as u32);
        let mut low = Vec::with_capacity(keys.len() + PAD);
        low.extend(keys.iter().map(|&k| (k as u16) ^ 0x8000));
        low.extend([0u16; PAD]);
        Dense16 {
            index: index.into_boxed_slice(),
            keys: low.into_boxed_slice(),
            vals: vals.into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn get(&self, x: u32) -> V {
        let b = (x >> 16) as usize;
        let lo = self.index[b] as usize;
        let hi = self.index[b + 1] as usize;
        // Key 0 is in bucket 0, so for b > 0 lo >= 1 and the segment of the
        // previous bucket's last key covers x when the run has none <= x.
        self.vals[lo + count_le_u16(&self.keys, lo, hi, x as u16) - 1]
    }
}
