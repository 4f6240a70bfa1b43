//! Which edges the agent holds sessions with. `connect_url` lists the fleet's edges (a
//! name with several addresses counts as several); the agent keeps
//! `edge_connections` sessions, each on a distinct edge, one per slot (a name's
//! addresses of the first answer's family: a dual-stack edge is one edge). A slot whose
//! session is lost picks another edge (not the one it lost, while another is free);
//! an edge another slot holds is never picked twice. Names are resolved anew at each
//! choice, so an edge whose address changed is found again.
//!
//! An edge that says it is leaving (a fleet edge's drain) is avoided for
//! [`LEAVING_AVOIDED_FOR`] while another edge is free; the slot that held it is
//! replaced by a new one ([`EdgeSlots::add_slot`]) and retired once its session ends
//! ([`EdgeSlots::retire`]).

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs},
    sync::Mutex,
    time::{Duration, Instant},
};

use rustls_pki_types::ServerName;

use crate::config::agent::EdgeTarget;

/// One edge to dial: its address and the name its certificate must show.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
}

/// How long an edge that said it is leaving is avoided (while another is free).
pub const LEAVING_AVOIDED_FOR: Duration = Duration::from_secs(30);

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Holding (or dialing) this edge, or nothing yet.
    Live(Option<SocketAddr>),
    /// Replaced after its edge said it is leaving; never used again.
    Retired,
}

/// The slots and the edge each holds (or is dialing).
pub(crate) struct EdgeSlots {
    targets: Vec<EdgeTarget>,
    held: Mutex<Vec<Slot>>,
    /// Edges that said they are leaving, and since when.
    leaving: Mutex<HashMap<SocketAddr, Instant>>,
}

impl EdgeSlots {
    /// `wanted` slots over `targets`, capped by the edges they resolve to now (a
    /// target that does not resolve yet counts as one edge).
    pub fn new(targets: Vec<EdgeTarget>, wanted: usize) -> Self {
        let known: usize = targets
            .iter()
            .map(|t| resolve(t).len().max(1))
            .sum::<usize>()
            .max(1);
        let slots = wanted.clamp(1, known);
        Self {
            targets,
            held: Mutex::new(vec![Slot::Live(None); slots]),
            leaving: Mutex::default(),
        }
    }

    /// How many sessions the agent keeps (one more while one moves off a leaving
    /// edge).
    pub fn slots(&self) -> usize {
        self.held().iter().filter(|s| **s != Slot::Retired).count()
    }

    /// The slots in use at start (their indexes are `0..initial`).
    pub fn initial(&self) -> usize {
        self.held().len()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new slot, to replace one whose edge is leaving: its index.
    pub fn add_slot(&self) -> usize {
        let mut held = self.held();
        held.push(Slot::Live(None));
        held.len() - 1
    }

    /// `slot` is done for good (replaced).
    pub fn retire(&self, slot: usize) {
        self.held()[slot] = Slot::Retired;
    }

    /// `edge` said it is leaving.
    pub fn mark_leaving(&self, edge: SocketAddr) {
        self.leaving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(edge, Instant::now());
    }

    fn is_leaving(&self, edge: SocketAddr) -> bool {
        let mut leaving = self.leaving.lock().unwrap_or_else(|p| p.into_inner());
        leaving.retain(|_, since| since.elapsed() < LEAVING_AVOIDED_FOR);
        leaving.contains_key(&edge)
    }

    /// Every edge `connect_url` names now, in its order, each address once.
    pub fn known(&self) -> Vec<Edge> {
        let mut out: Vec<Edge> = Vec::new();
        for target in &self.targets {
            for addr in resolve(target) {
                if !out.iter().any(|e| e.addr == addr) {
                    out.push(Edge {
                        addr,
                        server_name: target.server_name.clone(),
                    });
                }
            }
        }
        out
    }

    /// Picks the edge for `slot` and marks it held: the first edge from `slot`'s turn
    /// (`turn` rotates the start, so slots spread over the list and retries move on)
    /// that no other slot holds, preferring one other than `avoid` (the edge just
    /// lost). None when every known edge is held by another slot, or none resolves.
    pub fn choose(&self, slot: usize, turn: usize, avoid: Option<SocketAddr>) -> Option<Edge> {
        let known = self.known();
        if known.is_empty() {
            return None;
        }
        let leaving: Vec<bool> = known.iter().map(|e| self.is_leaving(e.addr)).collect();
        let mut held = self.held();
        let taken = |addr: SocketAddr| {
            held.iter()
                .enumerate()
                .any(|(other, h)| other != slot && *h == Slot::Live(Some(addr)))
        };
        let start = (slot + turn) % known.len();
        let order = (0..known.len()).map(|i| (start + i) % known.len());
        let free: Vec<usize> = order.filter(|&i| !taken(known[i].addr)).collect();
        // Best: neither leaving nor the edge just lost; then not leaving; then any.
        let chosen = free
            .iter()
            .find(|&&i| !leaving[i] && Some(known[i].addr) != avoid)
            .or_else(|| free.iter().find(|&&i| !leaving[i]))
            .or(free.first())
            .map(|&i| known[i].clone())?;
        held[slot] = Slot::Live(Some(chosen.addr));
        Some(chosen)
    }

    /// `slot` holds no edge any more.
    pub fn release(&self, slot: usize) {
        let mut held = self.held();
        if held[slot] != Slot::Retired {
            held[slot] = Slot::Live(None);
        }
    }
}

/// The addresses of `target`: those of the family of the first answer, so that a
/// dual-stack edge (one A and one AAAA record, `localhost`) stays one edge, while a
/// name with several A (or several AAAA) records is several edges.
fn resolve(target: &EdgeTarget) -> Vec<SocketAddr> {
    let Ok(addrs) = target.addr.to_socket_addrs() else {
        return Vec::new();
    };
    let mut addrs = addrs.peekable();
    let Some(ipv4) = addrs.peek().map(SocketAddr::is_ipv4) else {
        return Vec::new();
    };
    addrs.filter(|a| a.is_ipv4() == ipv4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(addrs: &[&str]) -> Vec<EdgeTarget> {
        addrs
            .iter()
            .map(|a| EdgeTarget {
                addr: a.to_string(),
                server_name: ServerName::try_from("localhost").unwrap(),
            })
            .collect()
    }

    #[test]
    fn slots_take_distinct_edges_and_a_lost_one_moves_to_a_free_edge() {
        let slots = EdgeSlots::new(
            targets(&["127.0.0.1:4001", "127.0.0.2:4001", "127.0.0.3:4001"]),
            2,
        );
        assert_eq!(slots.slots(), 2);
        let a = slots.choose(0, 0, None).unwrap().addr;
        let b = slots.choose(1, 0, None).unwrap().addr;
        assert_ne!(a, b, "two slots on one edge");
        // Slot 0 loses its edge: it moves to the third, the one nobody holds.
        slots.release(0);
        let moved = slots.choose(0, 1, Some(a)).unwrap().addr;
        assert!(moved != a && moved != b, "{moved}");
        // With every other edge held, the lost one is picked again.
        slots.release(0);
        let slots_full = EdgeSlots::new(targets(&["127.0.0.1:4001", "127.0.0.2:4001"]), 2);
        let x = slots_full.choose(0, 0, None).unwrap().addr;
        let y = slots_full.choose(1, 0, None).unwrap().addr;
        slots_full.release(0);
        assert_eq!(slots_full.choose(0, 3, Some(x)).unwrap().addr, x);
        assert_ne!(x, y);
    }

    #[test]
    fn a_leaving_edge_is_avoided_while_another_is_free_and_its_slot_replaced() {
        let slots = EdgeSlots::new(
            targets(&["127.0.0.1:4001", "127.0.0.2:4001", "127.0.0.3:4001"]),
            2,
        );
        let a = slots.choose(0, 0, None).unwrap().addr;
        let b = slots.choose(1, 0, None).unwrap().addr;
        slots.mark_leaving(a);
        let extra = slots.add_slot();
        assert_eq!(slots.slots(), 3, "one more while moving");
        let moved = slots.choose(extra, 0, None).unwrap().addr;
        assert!(moved != a && moved != b, "{moved}");
        slots.retire(0);
        slots.release(0);
        assert_eq!(slots.slots(), 2);
        // With every other edge taken, a leaving edge is still chosen (it may be back).
        let only = EdgeSlots::new(targets(&["127.0.0.1:4001"]), 1);
        let x = only.choose(0, 0, None).unwrap().addr;
        only.mark_leaving(x);
        let again = only.add_slot();
        only.retire(0);
        assert_eq!(only.choose(again, 0, None).unwrap().addr, x);
    }

    #[test]
    fn slots_are_capped_by_the_edges_known() {
        let one = EdgeSlots::new(targets(&["127.0.0.1:4001"]), 2);
        assert_eq!(one.slots(), 1);
        let many = EdgeSlots::new(targets(&["127.0.0.1:4001", "127.0.0.1:4002"]), 5);
        assert_eq!(many.slots(), 2);
        // localhost has an address of each family: one edge.
        let dual = EdgeSlots::new(targets(&["localhost:4001"]), 2);
        assert_eq!(dual.slots(), 1);
    }
}
