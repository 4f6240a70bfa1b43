//! Branch-free "how many sorted keys are <= x" searches over one short run
//! of a table: the only loop on the lookup path.

use crate::key::Key;

/// Runs at most this long are scanned with a fixed-length loop; longer runs
/// are bisected down to it.
pub(crate) const LINEAR: usize = 8;

/// Runs at most this long are counted with four SSE2 compares (one 64-byte
/// window) in the dense IPv4 table; longer runs are bisected down to it.
pub(crate) const WIDE: usize = 32;

/// Number of keys in `keys[lo..hi]` (sorted) that are `<= x`.
///
/// The final scan always reads [`LINEAR`] keys from where the bisection
/// stopped and clamps the count to the run length, so its trip count never
/// depends on the data. That clamp is exact because the keys after `hi`
/// are never `<= x` while a key inside the run is not: they are the
/// following boundaries (larger) and then padding of `K::MAX`.
///
/// # Safety
///
/// `lo <= hi`, `hi + LINEAR <= keys.len()`, and `keys[lo..]` is sorted
/// (non-decreasing) up to the end of the slice.
#[inline(always)]
pub(crate) unsafe fn count_le<K: Key>(keys: &[K], lo: usize, hi: usize, x: K) -> usize {
    debug_assert!(lo <= hi && hi + LINEAR <= keys.len());
    let mut base = lo;
    let mut n = hi - lo;
    while n > LINEAR {
        let half = n / 2;
        // SAFETY: `base + half < base + n <= hi < keys.len()` (the loop keeps
        // `base + n <= hi`).
        let k = unsafe { *keys.get_unchecked(base + half) };
        // Compiles to a conditional move: no branch on the data.
        base = if k <= x { base + half } else { base };
        n -= half;
    }
    let mut count = 0;
    for i in 0..LINEAR {
        // SAFETY: `base <= hi`, so `base + i < hi + LINEAR <= keys.len()`.
        count += usize::from(unsafe { *keys.get_unchecked(base + i) } <= x);
    }
    (base - lo) + count.min(n)
}

/// Number of keys `<= x` in a run of `n` sorted 16-bit keys starting at
/// `run` (native byte order, possibly unaligned), for the dense IPv4 table.
/// Keys are stored with the sign bit flipped (`k ^ 0x8000`) so that SSE2's
/// signed 16-bit compare orders them as unsigned. Runs longer than [`WIDE`]
/// are bisected down to it; the last step reads `WIDE` keys (64 bytes)
/// whatever `n`, and whatever follows the run there does not matter.
///
/// # Safety
///
/// `run` is readable for `2 * (n + WIDE)` bytes (the run and 64 bytes more).
#[inline(always)]
pub(crate) unsafe fn count_le_u16(run: *const u8, n: usize, x: u16) -> usize {
    let xf = (x ^ 0x8000) as i16;
    let key = |i: usize| {
        // SAFETY: callers pass `i < n`, so the two bytes are in the run.
        unsafe { run.add(2 * i).cast::<u16>().read_unaligned() as i16 }
    };
    let mut base = 0;
    let mut n = n;
    while n > WIDE {
        let half = n / 2;
        // `base + half < base + n <=` the run length (kept by the loop).
        base = if key(base + half) <= xf {
            base + half
        } else {
            base
        };
        n -= half;
    }
    // SAFETY: `base <=` the run length, so `run + 2 * base` is readable for
    // at least `2 * WIDE` bytes, and `n <= WIDE`.
    base + unsafe { count_le_u16_short(run.add(2 * base), n, xf) }
}

/// Keys `<= xf` among the `n` keys at `keys`, reading `WIDE` keys.
///
/// # Safety
///
/// `keys` readable for `2 * WIDE` bytes and `n <= WIDE`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn count_le_u16_short(keys: *const u8, n: usize, xf: i16) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
        _mm_set1_epi16,
    };
    debug_assert!(n <= WIDE);
    // SAFETY: SSE2 is part of the x86_64 baseline; the four unaligned
    // 16-byte loads read `keys[..64]`, readable by the caller's contract.
    let gt = unsafe {
        let k = _mm_set1_epi16(xf);
        let p = keys.cast::<__m128i>();
        let g0 = _mm_cmpgt_epi16(_mm_loadu_si128(p), k);
        let g1 = _mm_cmpgt_epi16(_mm_loadu_si128(p.add(1)), k);
        let g2 = _mm_cmpgt_epi16(_mm_loadu_si128(p.add(2)), k);
        let g3 = _mm_cmpgt_epi16(_mm_loadu_si128(p.add(3)), k);
        // Saturating packs keep the all-ones / zero lanes: bit i = key i > x.
        let lo = _mm_movemask_epi8(_mm_packs_epi16(g0, g1)) as u32;
        let hi = _mm_movemask_epi8(_mm_packs_epi16(g2, g3)) as u32;
        u64::from(lo) | (u64::from(hi) << 16)
    };
    // The keys > x form a suffix of the sorted run, so the count is the
    // position of the first one, or `n` (the sentinel bit) when there is
    // none; lanes past `n` never matter.
    (gt | (1u64 << n)).trailing_zeros() as usize
}

/// Portable fallback of the SSE2 count.
///
/// # Safety
///
/// `keys` readable for `2 * n` bytes.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
unsafe fn count_le_u16_short(keys: *const u8, n: usize, xf: i16) -> usize {
    (0..n)
        // SAFETY: `i < n`.
        .map(|i| {
            usize::from(unsafe { keys.add(2 * i).cast::<u16>().read_unaligned() } as i16 <= xf)
        })
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
            padded.extend([u32::MAX; LINEAR]);
            for x in (0..(len as u32 * 3 + 3)).chain([u32::MAX - 1, u32::MAX]) {
                let naive = s.iter().filter(|&&k| k <= x).count();
                // SAFETY: 2 + len + LINEAR == padded.len(); sorted to the end.
                let got = unsafe { count_le(&padded, 2, 2 + len, x) };
                assert_eq!(got, naive, "len {len} x {x}");
            }
        }
    }

    #[test]
    fn count_le_u16_matches_naive() {
        for len in 0..140usize {
            let raw: Vec<u16> = (0..len as u32).map(|i| (i * 450) as u16).collect();
            // One odd byte first so the run is unaligned, as in the table.
            let mut bytes = vec![0xaau8];
            for k in &raw {
                bytes.extend((k ^ 0x8000).to_ne_bytes());
            }
            // Garbage after the run, as the values and next run would be.
            bytes.extend((0..2 * WIDE as u32).map(|i| (i * 37) as u8));
            for x in (0..=u16::MAX)
                .step_by(97)
                .chain([0, u16::MAX])
                .chain(raw.clone())
            {
                let naive = raw.iter().filter(|&&k| k <= x).count();
                // SAFETY: the run is followed by 2 * WIDE readable bytes.
                let got = unsafe { count_le_u16(bytes.as_ptr().add(1), len, x) };
                assert_eq!(got, naive, "len {len} x {x}");
            }
        }
    }
}
