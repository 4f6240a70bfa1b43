//! Session-level happenings on the data-path workers (agent session start/stop, binds,
//! unbinds, token use) handed to the control plane, which stores them as audit events.
//! Workers never touch the database: they `try_send` into a bounded queue and count
//! what did not fit.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
        Arc,
    },
};

use super::auth::Identity;

/// Events queued before the control plane stores them; more are dropped and counted.
pub const AUDIT_QUEUE: usize = 8192;

/// What happened on the data path.
#[derive(Debug)]
pub enum AuditEvent {
    /// An agent authenticated and its session started.
    SessionStarted {
        /// Session id.
        session: u64,
        /// Who.
        identity: Arc<Identity>,
        /// From where.
        peer: SocketAddr,
        /// The agent's version string.
        agent_version: String,
        /// The agent file's `metadata`.
        metadata: String,
    },
    /// A session ended.
    SessionEnded {
        /// Session id.
        session: u64,
        /// Who.
        identity: Arc<Identity>,
        /// Why.
        reason: String,
        /// URLs it held.
        unbound: Vec<String>,
    },
    /// A session bound an internal URL.
    Bound {
        /// Session id.
        session: u64,
        /// Who.
        identity: Arc<Identity>,
        /// The URL.
        url: String,
        /// Pool size after the bind.
        members: usize,
    },
    /// A bind was refused.
    BindRefused {
        /// Session id.
        session: u64,
        /// Who.
        identity: Arc<Identity>,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
        /// The URL's owner, when the refusal is that another user owns it.
        owner: Option<super::ownership::Owner>,
    },
    /// A bind claimed an internal URL nobody owned for the session's user.
    UrlClaimed {
        /// Session id.
        session: u64,
        /// Who (now the owner).
        identity: Arc<Identity>,
        /// The URL.
        url: String,
    },
    /// Not a happening: answered once every event queued before it is stored, so the
    /// control plane can order its own writes after the data path's (a first bind's
    /// claim must be stored before an admin release of that URL).
    Flush(SyncSender<()>),
    /// An agent presented a token nobody issued (or that was revoked).
    AuthFailed {
        /// From where.
        peer: SocketAddr,
    },
}

/// The workers' end of the audit queue.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: Option<SyncSender<AuditEvent>>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// A sink and the receiver the control plane drains.
    pub fn channel() -> (Self, Receiver<AuditEvent>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(AUDIT_QUEUE);
        (
            Self {
                tx: Some(tx),
                dropped: Default::default(),
            },
            rx,
        )
    }

    /// A sink that discards everything (no control plane).
    pub fn discard() -> Self {
        Self {
            tx: None,
            dropped: Default::default(),
        }
    }

    /// Queues an event without blocking.
    pub fn send(&self, event: AuditEvent) {
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_)) = tx.try_send(event) {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("audit queue full; events dropped (counted)");
                }
            }
        }
    }

    /// Waits until every event queued before this call is stored, at most `timeout`;
    /// false if the writer did not answer in time (or there is none to wait for).
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        tx.send(AuditEvent::Flush(done_tx)).is_ok() && done_rx.recv_timeout(timeout).is_ok()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
