//! Audit events waiting for etcd: while it cannot be reached, events of the data path
//! (sessions, binds) queue here instead of holding anyone up, at most
//! [`MAX_PENDING_EVENTS`] (the oldest are dropped beyond, with a warning). They go out
//! oldest first, in batches, as soon as etcd answers again: from the link thread when
//! its watch is back, or with the next event or write of the store, whichever comes
//! first (an event sent twice is the same key twice: one event).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// Audit events kept while etcd is away.
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// An event as it will be stored: its key and value.
pub(super) type Entry = (String, Vec<u8>);

/// The queue.
#[derive(Default)]
pub(super) struct Backlog {
    queue: Mutex<VecDeque<Entry>>,
    dropped: AtomicU64,
}

impl Backlog {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event behind the others.
    pub fn push(&self, entry: Entry) {
        let mut q = self.queue();
        if q.len() >= MAX_PENDING_EVENTS {
            q.pop_front();
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "etcd away too long: oldest queued audit events dropped"
                );
            }
        }
        q.push_back(entry);
    }

    /// Takes up to `n` of the oldest events, to send.
    pub fn take(&self, n: usize) -> Vec<Entry> {
        let mut q = self.queue();
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts back events whose sending failed, ahead of the rest.
    pub fn put_back(&self, batch: Vec<Entry>) {
        let mut q = self.queue();
        for e in batch.into_iter().rev() {
            q.push_front(e);
        }
        while q.len() > MAX_PENDING_EVENTS {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_failed_batches_go_back_ahead_and_the_queue_is_bounded() {
        let b = Backlog::default();
        for i in 0..5 {
            b.push((format!("k{i}"), vec![]));
        }
        let batch = b.take(2);
        assert_eq!(batch[0].0, "k0");
        b.put_back(batch);
        assert_eq!(
            b.take(5).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["k0", "k1", "k2", "k3", "k4"]
        );
        for i in 0..MAX_PENDING_EVENTS + 3 {
            b.push((format!("n{i}"), vec![]));
        }
        assert_eq!(b.len(), MAX_PENDING_EVENTS);
        assert_eq!(b.take(1)[0].0, "n3");
    }
}
