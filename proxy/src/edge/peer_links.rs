//! Idle peer links kept for the next connection to the same edge (edge/peer_out.rs):
//! a link whose stream ended cleanly on both sides carries the next one, so a
//! forwarded connection costs no TCP handshake to the other edge and no accept there.
//!
//! Each worker keeps its own (no lock, no cross-thread wake-up), per edge and boot
//! number (a restarted edge is another peer), most recently used first, at most
//! [`MAX_IDLE_PER_EDGE`] per edge, each for at most [`REUSE_WITHIN`] (the other edge
//! waits [`super::peer_in::LINK_IDLE`] for the next opening, longer). A link is taken
//! only while the other edge has neither closed it nor sent anything unasked; one that
//! breaks anyway before its status is replaced by a fresh link to the same edge.

use std::{
    cell::RefCell,
    collections::HashMap,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::io::sockets;

/// Longest a link waits here for its next stream.
pub const REUSE_WITHIN: Duration = Duration::from_secs(20);
/// Most idle links a worker keeps to one edge.
pub const MAX_IDLE_PER_EDGE: usize = 32;

/// An edge as peer links know it: its id and the boot number openings are proven for.
type PeerKey = (Arc<str>, u64);

thread_local! {
    static IDLE: RefCell<HashMap<PeerKey, Vec<(std::net::TcpStream, Instant)>>> =
        RefCell::new(HashMap::new());
}

/// An idle link to `edge` (booted as `boot`) that is still usable, if this worker
/// has one.
pub fn take(edge: &Arc<str>, boot: u64) -> Option<std::net::TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let links = idle.get_mut(&(edge.clone(), boot))?;
        while let Some((link, parked_at)) = links.pop() {
            let quiet = matches!(sockets::peek_first_byte(link.as_raw_fd()), Ok(None));
            if quiet && parked_at.elapsed() < REUSE_WITHIN {
                return Some(link);
            }
        }
        None
    })
}

/// Keeps `link` to `edge` for the next stream (closed instead when this worker
/// already keeps enough). Links past [`REUSE_WITHIN`] to any edge are closed now.
pub fn put(edge: Arc<str>, boot: u64, link: std::net::TcpStream) {
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        idle.retain(|_, links| {
            links.retain(|(_, parked_at)| now.duration_since(*parked_at) < REUSE_WITHIN);
            !links.is_empty()
        });
        let links = idle.entry((edge, boot)).or_default();
        if links.len() < MAX_IDLE_PER_EDGE {
            links.push((link, now));
        }
    });
}

/// Idle links this worker keeps (all edges).
#[cfg(test)]
fn idle_count() -> usize {
    IDLE.with_borrow(|idle| idle.values().map(Vec::len).sum())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (ours, theirs)
    }

    #[test]
    fn a_quiet_link_is_reused_for_its_edge_and_boot_only() {
        let edge: Arc<str> = Arc::from("edge-b");
        let (ours, _theirs) = pair();
        let fd = ours.as_raw_fd();
        put(edge.clone(), 7, ours);
        assert!(take(&edge, 8).is_none(), "another boot of the edge");
        assert!(take(&Arc::from("edge-c"), 7).is_none(), "another edge");
        let again = take(&edge, 7).expect("the quiet link");
        assert_eq!(again.as_raw_fd(), fd);
        assert!(take(&edge, 7).is_none(), "taken once");
    }

    #[test]
    fn a_link_the_other_edge_closed_or_wrote_on_is_not_reused() {
        let edge: Arc<str> = Arc::from("edge-d");
        let (closed, theirs) = pair();
        drop(theirs);
        let (chatty, mut theirs_chatty) = pair();
        theirs_chatty.write_all(b"?").unwrap();
        // Both events have reached our sockets once a peek sees them.
        for link in [&closed, &chatty] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(sockets::peek_first_byte(link.as_raw_fd()), Ok(None)) {
                assert!(
                    Instant::now() < deadline,
                    "the other end's event never arrived"
                );
                std::thread::yield_now();
            }
        }
        put(edge.clone(), 1, closed);
        put(edge.clone(), 1, chatty);
        assert!(take(&edge, 1).is_none());
    }

    #[test]
    fn a_worker_keeps_a_bounded_number_of_links_per_edge() {
        let edge: Arc<str> = Arc::from("edge-e");
        let before = idle_count();
        let mut theirs = Vec::new();
        for _ in 0..MAX_IDLE_PER_EDGE + 3 {
            let (ours, other) = pair();
            theirs.push(other);
            put(edge.clone(), 1, ours);
        }
        assert_eq!(idle_count() - before, MAX_IDLE_PER_EDGE);
    }
}
