//! [`Shutdown`]: a one-way, cross-thread stop signal that async tasks on any worker
//! can await (the runtimes are built with monoio's `sync` feature, so a wake from
//! another thread reaches them).
//!
//! Each waiting [`Wait`] owns one slot, which every poll overwrites with the waker of
//! that poll and which is freed when the `Wait` is dropped: the waiters never grow
//! past the number of live `Wait`s, however often one is polled. (They used to be a
//! list that a poll appended to unless an earlier waker `will_wake`; monoio hands a
//! task a fresh waker on every poll, so `serve`'s accept loop, polled once per
//! connection next to its stop signal, grew the list by one per connection and
//! scanned it whole on the next: after a few hundred thousand connections the echo
//! server spent hundreds of µs per connection there, and every `connect` figure
//! measured through it was bounded by it.)
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll, Waker},
};

/// A cloneable stop signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    fired: AtomicBool,
    waiters: Mutex<Waiters>,
}

/// The wakers of the pending [`Wait`]s, one slot each.
#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    slots: HashMap<u64, Waker>,
}

impl Shutdown {
    /// A signal that has not fired.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        let slots = std::mem::take(&mut self.waiters().slots);
        for w in slots.into_values() {
            w.wake();
        }
    }

    /// Whether the signal has fired.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Resolves once the signal has fired. Cancel-safe.
    pub fn wait(&self) -> Wait {
        Wait {
            shutdown: self.clone(),
            slot: None,
        }
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.0.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakers registered now (one per pending [`Wait`]); for tests.
    #[doc(hidden)]
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiters().slots.len()
    }
}

/// Future returned by [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait {
    shutdown: Shutdown,
    /// This waiter's slot, once it has been polled.
    slot: Option<u64>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let mut waiters = this.shutdown.waiters();
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let id = *this.slot.get_or_insert_with(|| {
            waiters.next += 1;
            waiters.next
        });
        match waiters.slots.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                waiters.slots.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.slot {
            self.shutdown.waiters().slots.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
    };

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiter_polled_with_fresh_wakers_keeps_one_slot() {
        let s = Shutdown::new();
        let mut w = std::pin::pin!(s.wait());
        let counts: Vec<Arc<Count>> = (0..1000)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        for c in &counts {
            let waker = Waker::from(c.clone());
            assert!(w
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        assert_eq!(s.waiting(), 1);
        s.trigger();
        // Only the waker of the latest poll is woken.
        assert_eq!(counts[999].0.load(Ordering::SeqCst), 1);
        assert_eq!(counts[0].0.load(Ordering::SeqCst), 0);
        let waker = Waker::from(counts[0].clone());
        assert!(w.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }

    #[test]
    fn a_dropped_waiter_frees_its_slot() {
        let s = Shutdown::new();
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(c.clone());
        {
            let mut w = std::pin::pin!(s.wait());
            assert!(w
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            assert_eq!(s.waiting(), 1);
        }
        assert_eq!(s.waiting(), 0);
        s.trigger();
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
    }
}
