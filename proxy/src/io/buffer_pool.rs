//! Large read buffers a worker keeps for its streams to borrow. A stream lets its large
//! buffer go whenever it has nothing to read ([`super::readiness`]), and during bulk
//! transfer that happens between many reads: each worker keeps a few such buffers so
//! the next read reuses one instead of asking the allocator (for 256 KiB, a fresh
//! mapping and its page faults) again. At most [`KEPT`] per worker.

use std::cell::RefCell;

/// Buffers kept per worker thread.
pub const KEPT: usize = 8;
/// Smallest capacity worth keeping.
const LARGE: usize = 32 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes (and at most twice that),
/// from the worker's spares when one fits.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity >= LARGE {
        let spare = SPARE.with_borrow_mut(|spare| {
            let fits = spare
                .iter()
                .position(|buf| (capacity..=capacity * 2).contains(&buf.capacity()))?;
            Some(spare.swap_remove(fits))
        });
        if let Some(mut buf) = spare {
            buf.clear();
            return buf;
        }
    }
    Vec::with_capacity(capacity)
}

/// Hands a buffer back: kept when it is large and the worker keeps fewer than [`KEPT`].
pub fn give_back(buf: Vec<u8>) {
    if buf.capacity() >= LARGE {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < KEPT {
                spare.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_given_back_is_lent_again_and_the_spares_stay_bounded() {
        let buf = take(256 * 1024);
        let at = buf.as_ptr();
        give_back(buf);
        let again = take(200 * 1024);
        assert_eq!(again.as_ptr(), at, "the spare is reused");
        assert!(
            take(4096).capacity() < LARGE,
            "small buffers come from the allocator"
        );
        for _ in 0..KEPT + 4 {
            give_back(Vec::with_capacity(LARGE));
        }
        assert_eq!(SPARE.with_borrow(Vec::len), KEPT);
        drop(again);
    }
}
