//! [`Table6`]: the IPv6 lookup table, the generic [`Indexed`] layout on
//! `u128` addresses. Its first level covers only the span between the
//! lowest and highest boundary (typically inside 2000::/3), up to 2^20
//! buckets, about two boundaries per bucket.

use crate::indexed::Indexed;

/// IPv6 segment table with values `V`.
#[derive(Debug)]
pub(crate) struct Table6<V>(Indexed<u128, V>);

impl<V: Copy> Table6<V> {
    /// Builds from boundaries (`keys[0] == 0`, strictly increasing) and values.
    pub(crate) fn new(keys: Vec<u128>, vals: Vec<V>) -> Self {
        Table6(Indexed::new(keys, vals, 20))
    }

    /// The value of the segment containing `x`.
    #[inline(always)]
    pub(crate) fn get(&self, x: u128) -> V {
        self.0.get(x)
    }

    /// Number of boundaries.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}
