//! Admission of a data channel to its session: the session it names must be live and
//! its proof right and unused. Shared by both ways a data channel arrives (plain TCP in
//! `agent_port.rs`, TLS in `control.rs`).

use std::{net::SocketAddr, sync::Arc};

use super::{agent_refusal::AgentRefusal, session_handle::SessionHandle, EdgeShared};

/// The session a data channel claims, if it exists and the channel's proof is right
/// and unused.
pub(super) fn authenticate_channel(
    shared: &EdgeShared,
    peer: SocketAddr,
    session_id: u64,
    seq: u64,
    proof: &[u8; 32],
) -> Option<Arc<SessionHandle>> {
    let Some(session) = shared.registry.session(session_id) else {
        crate::log_throttled!(info, %peer, session = session_id, "data channel for an unknown session; closed");
        return None;
    };
    if let Err(reason) = session.admit_channel(seq, proof) {
        AgentRefusal::ChannelRefused {
            session: session_id,
            seq,
            reason,
        }
        .account(shared, peer);
        return None;
    }
    Some(session)
}
