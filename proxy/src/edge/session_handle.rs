//! One live agent session as the rest of the edge sees it: [`SessionHandle`], with its
//! identity, its queue of parked data channels ([`SessionHandle::take_channel`],
//! [`SessionHandle::park`]), its control queue ([`SessionHandle::send_control`]),
//! whether it is starved of channels, and the signals of its end and of a kick.
//!
//! Parked data channels wait in a bounded `async-channel` per session: its storage is
//! `concurrent-queue`'s lock-free array queue (the same design as crossbeam's
//! `ArrayQueue`), and unlike a bare crossbeam queue it can wake a task on another
//! worker's runtime when a channel arrives, which a public connection waiting for a
//! refill needs.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use super::{auth::Identity, datachan::ParkedChannel};
use crate::{
    io::sockets,
    wire::{
        channel_proof::{self, Replay, ReplayWindow},
        Frame,
    },
};

/// Most idle data channels parked per session; more are closed on arrival.
pub const MAX_IDLE_CHANNELS: usize = 4096;

/// One authenticated agent connection and its parked data channels.
pub struct SessionHandle {
    /// Session id (quoted by data channels).
    pub id: u64,
    secret: [u8; 32],
    /// Channel numbers already used.
    replay: Mutex<ReplayWindow>,
    /// Who the agent authenticated as (user, token, bind rules).
    pub identity: Arc<Identity>,
    /// The agent's address.
    pub peer: SocketAddr,
    /// The agent's version string.
    pub agent_version: String,
    /// The agent file's `metadata`.
    pub metadata: String,
    /// The `description` and `metadata` of each URL it bound.
    labels: Mutex<std::collections::HashMap<String, crate::wire::Labels>>,
    /// When the session started (ms since the epoch).
    pub started_at: i64,
    /// Last control-channel round trip measured by the edge, in microseconds (0: none yet).
    pub rtt_us: AtomicU64,
    idle_tx: async_channel::Sender<ParkedChannel>,
    idle_rx: async_channel::Receiver<ParkedChannel>,
    /// Since when (ms on [`crate::clock::mono_ms`]) a connection has been waiting for a data
    /// channel with none parked since; 0: none waiting, or a channel came.
    starved_since: AtomicU64,
    control_tx: async_channel::Sender<Frame>,
    /// Streams forwarded through this session right now (pool balancing).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Fired when the session ends, to wake waiters.
    ended: Signal,
    /// Fired when the session is kicked, to cut its streams.
    kicked: Signal,
    /// Why it was kicked (the session's end is reported with this reason).
    kick_reason: Mutex<Option<String>>,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// A one-time event any number of tasks, on any worker, can wait for: a channel that
/// never carries a message, closed to fire (which wakes every waiter, and answers later
/// ones at once).
struct Signal {
    rx: async_channel::Receiver<()>,
    tx: async_channel::Sender<()>,
}

impl Signal {
    fn new() -> Self {
        let (tx, rx) = async_channel::bounded(1);
        Self { rx, tx }
    }

    fn fire(&self) {
        self.tx.close();
    }

    async fn fired(&self) {
        let _ = self.rx.recv().await;
    }
}

/// Why no data channel could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// The session ended.
    SessionGone,
    /// None arrived in time.
    Timeout,
}

impl SessionHandle {
    /// Admits data channel `seq` of this session if `proof` is its proof and the
    /// number was not used before ([`crate::wire::channel_proof`]); else says why not.
    pub fn admit_channel(&self, seq: u64, proof: &[u8; 32]) -> Result<(), &'static str> {
        if !channel_proof::verify(&self.secret, self.id, seq, proof) {
            return Err("wrong proof");
        }
        let mut window = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        window.accept(seq).map_err(|r| match r {
            Replay::Seen => "replayed channel hello",
            Replay::TooOld => "channel number too old",
        })
    }

    /// Parks an authenticated idle data channel; closes it if the pool is full or the
    /// session is gone.
    pub fn park(&self, channel: ParkedChannel) {
        match self.idle_tx.try_send(channel) {
            Ok(()) => self.starved_since.store(0, Ordering::Relaxed),
            Err(e) => tracing::debug!(session = self.id, "idle data channel dropped: {e}"),
        }
    }

    /// Whether a connection has been waiting at least `for_at_least` for a data
    /// channel of this session with none arriving meanwhile: its agent cannot open
    /// them (out of descriptors, data path broken) or not fast enough.
    pub fn starved(&self, for_at_least: Duration) -> bool {
        self.starved_at(for_at_least, crate::clock::mono_ms())
    }

    /// [`Self::starved`] at `now_ms` on the crate clock.
    pub fn starved_at(&self, for_at_least: Duration, now_ms: u64) -> bool {
        waited_past(
            self.starved_since.load(Ordering::Relaxed),
            now_ms,
            for_at_least,
        )
    }

    /// Takes an idle data channel, skipping ones whose agent side already closed. When
    /// none is parked, asks the agent for more and waits up to `wait`.
    /// Cancel-safe: a channel is either returned or stays parked.
    pub async fn take_channel(&self, wait: Duration) -> Result<ParkedChannel, TakeError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let channel = match self.idle_rx.try_recv() {
                Ok(c) => c,
                Err(async_channel::TryRecvError::Closed) => return Err(TakeError::SessionGone),
                Err(async_channel::TryRecvError::Empty) => {
                    let _ = self.starved_since.compare_exchange(
                        0,
                        crate::clock::mono_ms(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    let _ = self.control_tx.try_send(Frame::NeedChannels { count: 1 });
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match crate::io::idle::within(left, self.idle_rx.recv()).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(_)) => return Err(TakeError::SessionGone),
                        Err(_) => return Err(TakeError::Timeout),
                    }
                }
            };
            if !sockets::peer_closed(std::os::fd::AsRawFd::as_raw_fd(&channel)) {
                return Ok(channel);
            }
        }
    }

    /// Resolves when the session has ended (at once if it already has).
    pub async fn ended(&self) {
        self.ended.fired().await;
    }

    /// Whether the session ended or is ending.
    pub fn is_closed(&self) -> bool {
        self.control_tx.is_closed()
    }

    /// Queues a frame for the control channel; false if the session is ending.
    pub fn send_control(&self, frame: Frame) -> bool {
        self.control_tx.try_send(frame).is_ok()
    }

    /// Ends the session from outside (token revoked, user deactivated): queues an error
    /// frame saying why, then closes the control queue; the control channel's writer
    /// sends what is queued and shuts the connection, which ends the session loop.
    /// Streams flowing through the session are cut ([`Self::kicked`]).
    pub fn kick(&self, code: crate::wire::ErrorCode, message: String) {
        *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        let _ = self.control_tx.try_send(Frame::Error {
            request_id: 0,
            code,
            message,
        });
        self.control_tx.close();
        self.kicked.fire();
    }

    /// Why the session was kicked, if it was.
    pub fn kick_reason(&self) -> Option<String> {
        self.kick_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when the session has been kicked (at once if it has): its agent's
    /// authority is gone, so the streams it carries must end. A session that ends any
    /// other way (its control channel lost) leaves flowing streams alone: their data
    /// channels are connections of their own.
    pub async fn kicked(&self) {
        self.kicked.fired().await;
    }

    /// Data channels parked at the edge now.
    pub fn idle_channels(&self) -> usize {
        self.idle_rx.len()
    }

    /// A new session `id` with a fresh secret; returns it and the receiving end of its
    /// control queue (the control channel's writer sends what is queued).
    pub(super) fn open(
        id: u64,
        identity: Arc<Identity>,
        peer: SocketAddr,
        agent_version: String,
        metadata: String,
    ) -> (Arc<SessionHandle>, async_channel::Receiver<Frame>) {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let (idle_tx, idle_rx) = async_channel::bounded(MAX_IDLE_CHANNELS);
        let (control_tx, control_rx) = async_channel::bounded(1024);
        let session = Arc::new(SessionHandle {
            id,
            secret,
            replay: Default::default(),
            identity,
            peer,
            agent_version,
            metadata,
            labels: Mutex::default(),
            started_at: crate::clock::wall_ms(),
            rtt_us: AtomicU64::new(0),
            idle_tx,
            idle_rx,
            starved_since: AtomicU64::new(0),
            control_tx,
            in_flight: Default::default(),
            ended: Signal::new(),
            kicked: Signal::new(),
            kick_reason: Mutex::new(None),
        });
        (session, control_rx)
    }

    /// Keeps the `description` and `metadata` the agent gave with its bind of `url`.
    pub fn set_labels(&self, url: &str, labels: crate::wire::Labels) {
        let mut all = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        if labels == crate::wire::Labels::default() {
            all.remove(url);
        } else {
            all.insert(url.to_owned(), labels);
        }
    }

    /// The `description` and `metadata` of `url` (empty when the bind gave none).
    pub fn labels_of(&self, url: &str) -> crate::wire::Labels {
        let all = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        all.get(url).cloned().unwrap_or_default()
    }

    /// The session's secret, to hand to the agent once.
    pub(super) fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// A session with no agent behind it, carrying `in_flight` streams (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(in_flight: usize) -> Arc<SessionHandle> {
        Self::for_tests_as("", in_flight).0
    }

    /// A session of service user `user` with no agent behind it, carrying `in_flight`
    /// streams, and its control queue (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests_as(
        user: &str,
        in_flight: usize,
    ) -> (Arc<SessionHandle>, async_channel::Receiver<Frame>) {
        static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
        let identity = Arc::new(Identity {
            user_id: user.to_string(),
            user_name: user.to_string(),
            token_id: String::new(),
            acl: Vec::new(),
        });
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (session, control_rx) = Self::open(
            id,
            identity,
            "127.0.0.1:1".parse().unwrap(),
            String::new(),
            String::new(),
        );
        session.in_flight.store(in_flight, Ordering::Relaxed);
        (session, control_rx)
    }

    /// Marks the session as having left a connection waiting for `ms_ago` ms.
    #[cfg(test)]
    pub(crate) fn starve_for_tests(&self, ms_ago: u64) {
        self.starved_since
            .store(crate::clock::mono_ms() - ms_ago, Ordering::Relaxed);
    }

    /// Ends the session's queues: parked channels are closed, waiters see `SessionGone`.
    pub(super) fn close(&self) {
        self.idle_rx.close();
        while self.idle_rx.try_recv().is_ok() {}
        self.control_tx.close();
        self.ended.fire();
    }
}

/// Whether a wait that began at `since_ms` (0: none waiting) has lasted `for_at_least`
/// by `now_ms` (both on the crate clock).
fn waited_past(since_ms: u64, now_ms: u64, for_at_least: Duration) -> bool {
    since_ms != 0 && now_ms >= since_ms.saturating_add(for_at_least.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starvation_on_a_fake_clock() {
        let wait = Duration::from_millis(250);
        assert!(!waited_past(0, u64::MAX, wait), "nobody waiting");
        assert!(!waited_past(10_000, 10_249, wait));
        assert!(waited_past(10_000, 10_250, wait));
    }
}
