//! Branch-free "how many sorted keys are <= x" searches over one short run
//! of a table: the only loop on the lookup path.

use crate::key::Key;

/// Runs at most this long are scanned with a fixed-length masked loop;
/// longer runs are bisected down to it.
pub(crate) const LINEAR: usize = 8;

/// Number of keys in `keys[lo..hi]` (sorted) that are `<= x`. `keys` must
/// extend at least [`LINEAR`] elements past `hi` (padding): the final scan
/// always reads `LINEAR` keys and masks those past the run, so its trip
/// count never depends on the data and never mispredicts.
#[inline(always)]
pub(crate) fn count_le<K: Key>(keys: &[K], lo: usize, hi: usize, x: K) -> usize {
    let mut base = lo;
    let mut n = hi - lo;
    while n > LINEAR {
        let half = n / 2;
        // Compiles to a conditional move: no branch on the data.
        base = if keys[base + half] <= x {
            base + half
        } else {
            base
        };
        n -= half;
    }
    let window = &keys[base..base + LINEAR];
    let mut count = base - lo;
    for (i, &k) in window.iter().enumerate() {
        count += usize::from(k <= x) & usize::from(i < n);
    }
    count
}

/// Number of keys in `keys[lo..hi]` that are `<= x`, for the 16-bit runs of
/// the dense IPv4 table. Keys are stored with the sign bit flipped
/// (`k ^ 0x8000`) so that SSE2's signed 16-bit compare orders them as
/// unsigned. `keys` must extend at least 8 elements past `hi` (padding).
#[inline(always)]
pub(crate) fn count_le_u16(keys: &[u16], lo: usize, hi: usize, x: u16) -> usize {
    let xf = (x ^ 0x8000) as i16;
    let mut base = lo;
    let mut n = hi - lo;
    while n > 16 {
        let half = n / 2;
        base = if (keys[base + half] as i16) <= xf {
            base + half
        } else {
            base
        };
        n -= half;
    }
    (base - lo) + count_le_u16_short(keys, base, n, xf)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn count_le_u16_short(keys: &[u16], start: usize, n: usize, xf: i16) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi16,
    };
    assert!(start + 16 <= keys.len() && n <= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline. The two 8-lane loads read
    // keys[start..start + 16], which the assert above keeps in bounds; lanes
    // past `n` are masked out below.
    unsafe {
        let k = _mm_set1_epi16(xf);
        let p = keys.as_ptr().add(start).cast::<__m128i>();
        let a = _mm_loadu_si128(p);
        let b = _mm_loadu_si128(p.add(1));
        let gt_a = _mm_movemask_epi8(_mm_cmpgt_epi16(a, k)) as u32;
        let gt_b = _mm_movemask_epi8(_mm_cmpgt_epi16(b, k)) as u32;
        let le = !(gt_a | (gt_b << 16));
        let valid = if n >= 16 {
            u32::MAX
        } else {
            (1u32 << (2 * n)) - 1
        };
        ((le & valid).count_ones() / 2) as usize
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn count_le_u16_short(keys: &[u16], start: usize, n: usize, xf: i16) -> usize {
    keys[start..start + n]
        .iter()
        .map(|&k| usize::from((k as i16) <= xf))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_le_matches_naive() {
        for len in 0..70usize {
            let s: Vec<u32> = (0..len as u32).map(|i| i * 3 + 1).collect();
            let mut padded = vec![0u32, 0];
            padded.extend(&s);
            padded.extend([0u32; LINEAR]);
            for x in 0..(len as u32 * 3 + 3) {
                let naive = s.iter().filter(|&&k| k <= x).count();
                assert_eq!(count_le(&padded, 2, 2 + len, x), naive, "len {len} x {x}");
            }
        }
    }

    #[test]
    fn count_le_u16_matches_naive() {
        for len in 0..70usize {
            let raw: Vec<u16> = (0..len as u32).map(|i| (i * 900) as u16).collect();
            let mut keys: Vec<u16> = vec![0x8000; 3];
            keys.extend(raw.iter().map(|k| k ^ 0x8000));
            keys.extend([0u16; 16]);
            for x in (0..=u16::MAX).step_by(97).chain([0, u16::MAX]) {
                let naive = raw.iter().filter(|&&k| k <= x).count();
                assert_eq!(count_le_u16(&keys, 3, 3 + len, x), naive, "len {len} x {x}");
            }
        }
    }
}
