//! Idle timeouts for forwarded streams without a clock read per chunk: pumps bump a
//! byte counter, and a watchdog that wakes once per period ends the stream when the
//! counter did not move for a whole period (so an idle stream ends after one to two
//! periods).

use std::{
    cell::Cell,
    future::{poll_fn, Future},
    pin::Pin,
    task::Poll,
    time::Duration,
};

/// Bytes moved so far by the pumps of one stream.
#[derive(Default)]
pub struct Progress(Cell<u64>);

impl Progress {
    /// Records `n` bytes moved.
    #[inline]
    pub fn bump(&self, n: u64) {
        self.0.set(self.0.get().wrapping_add(n));
    }

    fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Runs `work` to completion, or returns `None` once `progress` stood still for a
/// whole `period` (the work is then dropped). `period: None` never times out.
pub async fn until_idle<F: Future>(
    period: Option<Duration>,
    progress: &Progress,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    let Some(period) = period else {
        return Some(work.await);
    };
    let mut seen = progress.get();
    loop {
        // Boxed: the timer is 640 bytes and 128-byte aligned; inline, it would align
        // (and pad) every future that holds a stream, all for a wake-up per period.
        let mut tick = Box::pin(monoio::time::sleep(period));
        let finished = poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if tick.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match finished {
            Some(v) => return Some(v),
            None if progress.get() == seen => return None,
            None => seen = progress.get(),
        }
    }
}
