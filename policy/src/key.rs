//! [`Key`]: the address integer of one family (`u32` for IPv4, `u128` for
//! IPv6, `u64` for the top half of IPv6 addresses), so interval building, the sweep and the generic table are written once.

/// An address as an unsigned integer.
pub(crate) trait Key:
    Copy + Ord + Eq + Default + Send + Sync + std::fmt::Debug + 'static
{
    /// Bits in the address.
    const BITS: u32;
    /// The largest address (table padding).
    const MAX: Self;
    /// `self - other`, or 0 when `other > self`.
    fn sat_sub(self, other: Self) -> Self;
    /// First-level bucket of an offset: `self >> shift` clamped to `last`.
    /// `shift` must be below `BITS`.
    fn bucket(self, shift: u32, last: usize) -> usize;
    /// `self + 1`, or `None` at the top of the address space.
    fn inc(self) -> Option<Self>;
    /// `self - other` (caller guarantees `self >= other`).
    fn minus(self, other: Self) -> Self;
    /// `self >> shift` as usize, saturating (0 when `shift >= BITS`).
    fn shr(self, shift: u32) -> usize;
    /// Number of significant bits (`BITS - leading_zeros`).
    fn bit_len(self) -> u32;
    /// Last address of the prefix `self/len` (`self` already truncated).
    fn last_of(self, len: u8) -> Self;
    /// `self` with the bits after the first `len` cleared.
    fn trunc(self, len: u8) -> Self;
}

/// The three impls differ only in the type; `last` (a bucket count) and shifted
/// offsets are compared in the key's own width, so no value is truncated.
macro_rules! impl_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            const BITS: u32 = <$t>::BITS;
            const MAX: Self = <$t>::MAX;
            #[inline(always)]
            fn sat_sub(self, other: Self) -> Self {
                self.saturating_sub(other)
            }
            #[inline(always)]
            fn bucket(self, shift: u32, last: usize) -> usize {
                (self >> shift).min(last as $t) as usize
            }
            #[inline(always)]
            fn inc(self) -> Option<Self> {
                self.checked_add(1)
            }
            #[inline(always)]
            fn minus(self, other: Self) -> Self {
                self - other
            }
            #[inline(always)]
            fn shr(self, shift: u32) -> usize {
                usize::try_from(self.checked_shr(shift).unwrap_or(0)).unwrap_or(usize::MAX)
            }
            fn bit_len(self) -> u32 {
                <$t>::BITS - self.leading_zeros()
            }
            #[inline(always)]
            fn last_of(self, len: u8) -> Self {
                self | <$t>::MAX.checked_shr(u32::from(len)).unwrap_or(0)
            }
            #[inline(always)]
            fn trunc(self, len: u8) -> Self {
                self & !<$t>::MAX.checked_shr(u32::from(len)).unwrap_or(0)
            }
        }
    )*};
}

impl_key!(u32, u64, u128);
