//! Upstream health checks: per endpoint, a TCP connect to the upstream every
//! `interval` (bounded by `timeout`). The state flips after `unhealthy_threshold`
//! failures or `healthy_threshold` successes in a row, is logged once per transition
//! and reported to the edge ([`Frame::EndpointHealth`]) on the live control channel;
//! every new session reports the current state right after its binds.
//!
//! An endpoint starts healthy (the edge also learns of refusals from each stream's
//! status, so a member whose upstream is down at start loses no connection meanwhile).
//!
//! Whatever the upstream checks say, every endpoint is reported unhealthy to an edge
//! while the agent cannot open data channels to it ([`ChannelHealth`], one per
//! session: [`FAILING_AFTER`] failures in a row, e.g. out of descriptors, or that edge
//! unreachable for data), since a stream could not reach it through that edge anyway;
//! the first channel that opens again restores that edge's reports. Other edges' are
//! not affected.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use monoio::net::TcpStream;

use super::{AgentShared, SessionTicket};
use crate::{config::agent::HealthCheck, wire::Frame};

/// One endpoint's current upstream health.
pub(crate) struct EndpointHealth {
    healthy: AtomicBool,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
        }
    }
}

impl EndpointHealth {
    /// Whether the upstream passed its checks.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Data channel failures in a row after which the agent reports itself unable to
/// take streams.
pub(crate) const FAILING_AFTER: u32 = 3;

/// Whether this agent can open data channels for one session (kept in its
/// [`SessionTicket`]): failures in a row, and whether that run made every endpoint
/// report unhealthy to that session's edge. A dial of an ended session finishing late
/// counts for nothing, and each session starts afresh.
#[derive(Default)]
pub(crate) struct ChannelHealth {
    failures_in_a_row: AtomicU32,
    failing: AtomicBool,
}

impl ChannelHealth {
    /// A data channel of `ticket`'s session could not be opened.
    pub fn failed(
        &self,
        shared: &AgentShared,
        ticket: &SessionTicket,
        error: &dyn std::fmt::Display,
    ) {
        if !ticket.is_alive() {
            return;
        }
        let run = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= FAILING_AFTER && !self.failing.swap(true, Ordering::Relaxed) {
            crate::log_throttled!(warn, failures = run, %error, edge = %ticket.edge_addr, "data channels cannot be opened; reporting every endpoint unhealthy to this edge until one opens");
            report_all_to(shared, ticket);
        }
    }

    /// A data channel of `ticket`'s session opened and is parked at the edge.
    pub fn opened(&self, shared: &AgentShared, ticket: &SessionTicket) {
        if !ticket.is_alive() {
            return;
        }
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        if self.failing.swap(false, Ordering::Relaxed) {
            crate::log_throttled!(info, edge = %ticket.edge_addr, "data channels open again; endpoint health restored");
            report_all_to(shared, ticket);
        }
    }

    /// Whether the live session's channels are failing.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// The health frame for endpoint `index`, as it stands, for the session of `ticket`.
pub(crate) fn report(shared: &AgentShared, index: usize, ticket: &SessionTicket) -> Frame {
    let ep = &shared.settings.endpoints[index];
    Frame::EndpointHealth {
        url: ep.url.clone(),
        healthy: shared.health[index].healthy() && !ticket.channel_health.failing(),
        weight: ep.weight,
    }
}

/// Sends every endpoint's health as it stands to the session of `ticket`.
fn report_all_to(shared: &AgentShared, ticket: &SessionTicket) {
    for session in shared.live_sessions().iter() {
        if std::ptr::eq(Arc::as_ptr(&session.ticket), ticket) {
            for index in 0..shared.settings.endpoints.len() {
                let _ = session.control.try_send(report(shared, index, ticket));
            }
        }
    }
}

/// Sends endpoint `index`'s health to every live session, each as its edge sees it.
fn report_to_all(shared: &AgentShared, index: usize) {
    for session in shared.live_sessions().iter() {
        let _ = session
            .control
            .try_send(report(shared, index, &session.ticket));
    }
}

/// Starts one checker per endpoint that has checks on (on the calling worker).
pub(crate) fn spawn_checkers(shared: &Arc<AgentShared>) {
    for (index, ep) in shared.settings.endpoints.iter().enumerate() {
        if let Some(check) = ep.health_check {
            monoio::spawn(run(shared.clone(), index, check));
        }
    }
}

async fn run(shared: Arc<AgentShared>, index: usize, check: HealthCheck) {
    let ep = &shared.settings.endpoints[index];
    let (mut ok_run, mut fail_run) = (0u32, 0u32);
    loop {
        if shared.draining.load(Ordering::Acquire) {
            return;
        }
        let result = probe(&ep.upstream, check.timeout).await;
        let state = &shared.health[index];
        match &result {
            Ok(()) => (ok_run, fail_run) = (ok_run.saturating_add(1), 0),
            Err(_) => (ok_run, fail_run) = (0, fail_run.saturating_add(1)),
        }
        let flip_to = if state.healthy() {
            (fail_run >= check.unhealthy_threshold).then_some(false)
        } else {
            (ok_run >= check.healthy_threshold).then_some(true)
        };
        if let Some(healthy) = flip_to {
            state.healthy.store(healthy, Ordering::Relaxed);
            match &result {
                Ok(()) => {
                    tracing::info!(url = %ep.url, upstream = %ep.upstream, checks = ok_run, "upstream healthy")
                }
                Err(e) => {
                    tracing::warn!(url = %ep.url, upstream = %ep.upstream, checks = fail_run, error = %e, "upstream unhealthy")
                }
            }
            report_to_all(&shared, index);
        }
        monoio::time::sleep(check.interval).await;
    }
}

/// One check: can a TCP connection to `upstream` be opened within `timeout`?
async fn probe(upstream: &str, timeout: Duration) -> Result<(), String> {
    match monoio::time::timeout(timeout, TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}
