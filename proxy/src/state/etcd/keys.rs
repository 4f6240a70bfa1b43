//! Where each object lives in etcd, under the fleet's prefix `P`:
//!
//! | key | value |
//! | --- | --- |
//! | `P/objects/endpoints/<id>` | an endpoint (JSON) |
//! | `P/objects/reserved/<id>` | a reserved address |
//! | `P/objects/users/<id>` | a service user |
//! | `P/objects/tokens/<id>` | a token record and its hash |
//! | `P/objects/owners/<url>` | the owner of an internal URL |
//! | `P/objects/index/endpoint_url/<url>` | the id of the endpoint with that URL |
//! | `P/objects/index/tcp_port/<port>` | the id of the `tcp://` endpoint on that port |
//! | `P/objects/index/user_name/<name>` | the id of the user with that name |
//! | `P/objects/index/reservations` | touched by every reservation change |
//! | `P/objects/index/written` | put by every write: which edge wrote, and when (wall-clock ms); the others' watch lag in time |
//! | `P/token_used/<id>` | when a token last authenticated (ms) |
//! | `P/routes/<edge>` | which internal URLs that edge holds sessions for, and where its peers reach it; under the edge's lease (gone with the edge) |
//! | `P/fleet/peer_key` | the fleet's key for peer links (random, made by the first edge that needs it) |
//! | `P/events/<class>/<edge>/<at>-<nonce>` | an audit event (`class`: `routine` or `security`, pruned apart); its id is its create revision |
//!
//! Every edge mirrors and watches `P/objects/`; index keys make uniqueness part of the
//! write's transaction. Events and token use are outside it: they change often and
//! nothing live depends on them.

use super::super::Changes;

/// The key layout of one fleet.
#[derive(Clone)]
pub(super) struct Keys {
    prefix: String,
}

/// The collections of `P/objects/`.
pub(super) const ENDPOINTS: &str = "endpoints/";
pub(super) const RESERVED: &str = "reserved/";
pub(super) const USERS: &str = "users/";
pub(super) const TOKENS: &str = "tokens/";
pub(super) const OWNERS: &str = "owners/";

impl Keys {
    /// The layout under `prefix` (`/sluice`, no trailing slash).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `P/objects/`: everything mirrored and watched.
    pub fn objects(&self) -> String {
        format!("{}/objects/", self.prefix)
    }

    /// `P/objects/<collection><name>`.
    pub fn object(&self, collection: &str, name: &str) -> String {
        format!("{}/objects/{collection}{name}", self.prefix)
    }

    pub fn endpoint_url(&self, url: &str) -> String {
        self.object("index/endpoint_url/", url)
    }

    pub fn tcp_port(&self, port: u16) -> String {
        self.object("index/tcp_port/", &port.to_string())
    }

    pub fn user_name(&self, name: &str) -> String {
        self.object("index/user_name/", name)
    }

    pub fn reservations_guard(&self) -> String {
        self.object("index/", "reservations")
    }

    /// `P/<rest>`: keys of the fleet's features beyond the state (routes, peer key).
    pub fn under(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// The stamp every write puts: [`WriteStamp`].
    pub fn written(&self) -> String {
        self.object("index/", "written")
    }

    pub fn token_used_prefix(&self) -> String {
        format!("{}/token_used/", self.prefix)
    }

    pub fn token_used(&self, id: &str) -> String {
        format!("{}{id}", self.token_used_prefix())
    }

    pub fn events(&self) -> String {
        format!("{}/events/", self.prefix)
    }

    /// Events of one retention class (`routine`, `security`).
    pub fn event_class(&self, class: &str) -> String {
        format!("{}{class}/", self.events())
    }

    pub fn event(&self, class: &str, edge: &str, at: i64, nonce: u32) -> String {
        format!("{}{edge}/{at:013}-{nonce:08x}", self.event_class(class))
    }

    /// What a change of `key` means for the live edge.
    pub fn changes_of(&self, key: &str) -> Changes {
        let rest = key.strip_prefix(&self.objects()).unwrap_or_default();
        let mut c = Changes::default();
        if rest.starts_with(ENDPOINTS) {
            c.endpoints = true;
        } else if rest.starts_with(USERS) {
            c.auth = true;
            c.owners = true;
        } else if rest.starts_with(TOKENS) {
            c.auth = true;
        } else if rest.starts_with(OWNERS) {
            c.owners = true;
        }
        c
    }
}

/// Which edge wrote last, and when: put by every write, so an edge whose watch
/// delivers it knows how long the change took to reach it (clocks of the fleet's
/// hosts assumed in sync, as with NTP).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct WriteStamp {
    pub edge: String,
    pub at_ms: i64,
}

/// The `tcp://` port of an endpoint URL, for the fleet-wide port index.
pub(super) fn tcp_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("tcp://")?;
    rest.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_follow_the_collection() {
        let k = Keys::new("/sluice/");
        assert_eq!(
            k.object(ENDPOINTS, "ep_1"),
            "/sluice/objects/endpoints/ep_1"
        );
        assert!(k.changes_of(&k.object(ENDPOINTS, "ep_1")).endpoints);
        let user = k.changes_of(&k.object(USERS, "usr_1"));
        assert!(user.auth && user.owners && !user.endpoints);
        assert!(!k.changes_of(&k.user_name("clinic")).any());
        assert!(!k.changes_of("/other/objects/endpoints/x").any());
        assert_eq!(tcp_port("tcp://0.0.0.0:21001"), Some(21001));
        assert_eq!(tcp_port("tcp://[::]:443"), Some(443));
        assert_eq!(tcp_port("tls://db.example.com"), None);
    }
}
