//! [`Shutdown`]: a one-way, cross-thread stop signal that async tasks on any worker
//! can await (the runtimes are built with monoio's `sync` feature, so a wake from
//! another thread reaches them).
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
};

/// A cloneable stop signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    fired: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
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
        let wakers = std::mem::take(&mut *self.0.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers {
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
        Wait(self.clone())
    }
}

/// Future returned by [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait(Shutdown);

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_triggered() {
            return Poll::Ready(());
        }
        let mut wakers = self.0 .0.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.is_triggered() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
