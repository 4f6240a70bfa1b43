//! HTTP keep-alive through the tunnel: each worker keeps the upstream connections whose
//! last response ended, per pool member (agent session) and internal URL, so the next
//! request for that member reuses one (no data channel to take, no stream to announce,
//! no upstream connect at the agent) as HAProxy's `http-reuse` does. Most recently used
//! first, at most [`MAX_IDLE_PER_MEMBER`] per member, each for at most [`IDLE_FOR`]
//! (a reaper lets expired ones go, within a quarter of it, while the worker has any);
//! one the upstream closed meanwhile is skipped. (Connections kept through another edge
//! of the fleet belong to their client's connection instead: forward.rs's `PeerSlot`.)
//! Dropping one ends its stream, and its data channel goes back to the session
//! (forward.rs).
//!
//! An HTTP/2 upstream (`upstream.protocol: http2`) multiplexes: one connection per
//! member, URL and worker carries every request, each on a stream of its own, for as
//! long as it stays open ([`http2`], [`keep_http2`]).
//!
//! An HTTP/1.1 upstream whose agent multiplexes (`Http1Multiplexed`) has one link per
//! member, URL and worker ([`link`], [`keep_link`]; requests arriving while it is being
//! opened wait for it rather than open their own); its connections are sub-streams
//! of it, kept idle here as any other (with no data channel socket of their own to
//! peek at: a link that ended ends them, and hyper's handle says so).

use std::{
    cell::RefCell,
    collections::HashMap,
    os::fd::RawFd,
    time::{Duration, Instant},
};

use hyper::client::conn::http1::SendRequest;

use super::page::Body;

use crate::io::{mux::Mux, sockets};

/// Longest an upstream connection waits here for its next request.
pub const IDLE_FOR: Duration = Duration::from_secs(15);
/// Most idle upstream connections a worker keeps per member and URL.
pub const MAX_IDLE_PER_MEMBER: usize = 64;

type Key = (u64, String);

/// An idle upstream connection: hyper's handle, the data channel's socket under it
/// (open while hyper's connection is), and since when it waits.
struct Idle {
    sender: SendRequest<Body>,
    channel: RawFd,
    since: Instant,
}

/// Each member's idle connections, by URL (a member serves one URL or a few: found by
/// comparing them, with no key to allocate per request).
type IdleByMember = HashMap<u64, Vec<(String, Vec<Idle>)>>;

thread_local! {
    static IDLE: RefCell<IdleByMember> = RefCell::new(HashMap::new());
    /// Whether this worker's reaper task runs.
    static REAPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static HTTP2: RefCell<HashMap<Key, Http2Sender>> = RefCell::new(HashMap::new());
    /// Multiplexed links, by member and URL (one or a few per worker).
    static LINKS: RefCell<Vec<(Key, Slot)>> = const { RefCell::new(Vec::new()) };
}

/// hyper's handle of an HTTP/2 upstream connection.
pub type Http2Sender = hyper::client::conn::http2::SendRequest<Body>;

/// The HTTP/2 connection to `url` on session `member` this worker has, if it is open
/// and takes another request.
pub fn http2(member: u64, url: &str) -> Option<Http2Sender> {
    HTTP2.with_borrow_mut(|open| {
        let key = (member, url.to_owned());
        match open.get(&key) {
            Some(sender) if !sender.is_closed() => sender.is_ready().then(|| sender.clone()),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// Keeps `sender` as this worker's HTTP/2 connection to `url` on `member`.
pub fn keep_http2(member: u64, url: &str, sender: Http2Sender) {
    HTTP2.with_borrow_mut(|open| {
        open.retain(|_, s| !s.is_closed());
        open.insert((member, url.to_owned()), sender);
    });
}

/// An idle connection to `url` on session `member`, ready for a request: hyper's
/// connection is up, and nothing (an end, a reset, stray bytes) has arrived on its data
/// channel since its last response, so a request sent on it is not lost to an agent
/// that died meanwhile.
pub fn take(member: u64, url: &str) -> Option<(SendRequest<Body>, RawFd)> {
    IDLE.with_borrow_mut(|idle| {
        let urls = idle.get_mut(&member)?;
        let at = urls.iter().position(|(u, _)| u == url)?;
        let senders = &mut urls[at].1;
        while let Some(entry) = senders.pop() {
            if entry.since.elapsed() < IDLE_FOR && reusable(&entry.sender, entry.channel) {
                return Some((entry.sender, entry.channel));
            }
        }
        urls.swap_remove(at);
        if urls.is_empty() {
            idle.remove(&member);
        }
        None
    })
}

/// Whether a kept connection takes another request: hyper's connection is up, and
/// nothing (an end, a reset, stray bytes) has arrived on `channel`, its data channel or
/// peer link, since its last response (`channel` < 0: a multiplexed sub-stream, whose
/// end hyper's handle shows).
pub fn reusable(sender: &SendRequest<Body>, channel: RawFd) -> bool {
    sender.is_ready() && (channel < 0 || matches!(sockets::peek_first_byte(channel), Ok(None)))
}

/// A worker's multiplexed link to one member and URL: up, or being opened by a request
/// (the others wait for it: a burst of new clients shares one link).
enum Slot {
    Open(Mux),
    /// `done` is closed (its only sender dropped with the slot) once the link is kept
    /// or its opening failed.
    Opening {
        _sender: async_channel::Sender<()>,
        done: async_channel::Receiver<()>,
    },
}

/// What [`link`] found.
pub enum LinkState {
    /// The link, taking another sub-stream.
    Open(Mux),
    /// Another request is opening it: resolves (with an error) once it is kept or failed.
    Opening(async_channel::Receiver<()>),
    /// None: the caller opens it, holding this until it is kept ([`keep_link`]).
    Absent(LinkOpening),
}

/// The right to open the link to one member and URL; dropped without [`keep_link`]
/// (the opening failed, or went to another member), it lets the waiters go on.
pub struct LinkOpening {
    member: u64,
    url: String,
    done: async_channel::Receiver<()>,
}

impl Drop for LinkOpening {
    fn drop(&mut self) {
        LINKS.with_borrow_mut(|links| {
            links.retain(|((member, url), slot)| {
                !(*member == self.member
                    && *url == self.url
                    && matches!(slot, Slot::Opening { done, .. } if done.same_channel(&self.done)))
            })
        });
    }
}

/// This worker's multiplexed link to `url` on session `member` (multiplexed.rs), the
/// opening of it under way, or none (the caller is to open it).
pub fn link(member: u64, url: &str) -> LinkState {
    LINKS.with_borrow_mut(|links| {
        let at = links
            .iter()
            .position(|(key, _)| key.0 == member && key.1 == url);
        if let Some(at) = at {
            match &links[at].1 {
                Slot::Open(link) if link.is_usable() => return LinkState::Open(link.clone()),
                Slot::Opening { done, .. } => return LinkState::Opening(done.clone()),
                // Closed, full or retired: it lasts while its sub-streams do.
                Slot::Open(_) => {
                    links.swap_remove(at);
                }
            }
        }
        let (sender, done) = async_channel::bounded(1);
        links.push((
            (member, url.to_owned()),
            Slot::Opening {
                _sender: sender,
                done: done.clone(),
            },
        ));
        LinkState::Absent(LinkOpening {
            member,
            url: url.to_owned(),
            done,
        })
    })
}

/// Keeps `link` as this worker's multiplexed link to `url` on `member`; requests
/// waiting for it go on.
pub fn keep_link(member: u64, url: &str, link: Mux) {
    LINKS.with_borrow_mut(|links| {
        links.retain(|(key, slot)| {
            !((key.0 == member && key.1 == url)
                || matches!(slot, Slot::Open(kept) if kept.is_closed()))
        });
        links.push(((member, url.to_owned()), Slot::Open(link)));
    });
}

/// Lets go of the idle connections kept for session `member` (it ended: nothing will
/// pick it again), so that what holds them (a multiplexed link, data channels) closes
/// now rather than when they expire.
pub fn forget_member(member: u64) {
    IDLE.with_borrow_mut(|idle| idle.remove(&member));
}

/// Keeps `sender` (its last response ended; `channel` is its data channel's socket)
/// for the next request to `url` on `member`; that member's connections idle past
/// [`IDLE_FOR`] or closed are let go now (the others' by the reaper).
pub fn put(member: u64, url: &str, sender: SendRequest<Body>, channel: RawFd) {
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        let urls = idle.entry(member).or_default();
        let at = match urls.iter().position(|(u, _)| u == url) {
            Some(at) => at,
            None => {
                urls.push((url.to_owned(), Vec::new()));
                urls.len() - 1
            }
        };
        let senders = &mut urls[at].1;
        let_expired_go(senders, now);
        if senders.len() < MAX_IDLE_PER_MEMBER {
            senders.push(Idle {
                sender,
                channel,
                since: now,
            });
        }
    });
    if !REAPING.replace(true) {
        monoio::spawn(reap());
    }
}

/// Lets connections idle past [`IDLE_FOR`], or closed, go.
fn prune(idle: &mut IdleByMember, now: Instant) {
    idle.retain(|_, urls| {
        urls.retain_mut(|(_, senders)| {
            let_expired_go(senders, now);
            !senders.is_empty()
        });
        !urls.is_empty()
    });
}

/// Lets the connections of one member and URL idle past [`IDLE_FOR`], or closed, go.
fn let_expired_go(senders: &mut Vec<Idle>, now: Instant) {
    senders.retain(|e| !e.sender.is_closed() && now.duration_since(e.since) < IDLE_FOR);
}

/// While the worker keeps idle connections: lets the expired ones go every quarter of
/// [`IDLE_FOR`], so a worker that gets no more requests does not hold them (each holds
/// a data channel and an upstream connection at the agent).
async fn reap() {
    loop {
        monoio::time::sleep(IDLE_FOR / 4).await;
        let left = IDLE.with_borrow_mut(|idle| {
            prune(idle, Instant::now());
            idle.len()
        });
        if left == 0 {
            REAPING.set(false);
            return;
        }
    }
}
