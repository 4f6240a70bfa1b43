//! This edge's copy of the fleet's objects (`P/objects/`), at a known etcd revision:
//! loaded whole, then kept current by the watch and by this edge's own writes. Reads
//! of the control plane are served from it, so they work while etcd is away, and the
//! revisions it holds guard writes against lost updates.
//!
//! Each key remembers the revision of its last change; a deletion is kept as a
//! tombstone until the watch has passed it, so an older event of the watch can never
//! bring back what this edge already saw deleted.

use std::collections::BTreeMap;

use super::{super::Changes, keys::Keys};

struct Entry {
    /// None: deleted (a tombstone).
    value: Option<Vec<u8>>,
    mod_revision: i64,
}

/// The mirrored objects.
#[derive(Default)]
pub(super) struct Mirror {
    entries: BTreeMap<String, Entry>,
    /// Every change up to this revision has been applied (from a load or the watch).
    pub revision: i64,
    /// A load has completed at least once.
    pub loaded: bool,
}

impl Mirror {
    /// Replaces everything with a fresh load at `revision`; what changed.
    pub fn replace_all(
        &mut self,
        kvs: impl IntoIterator<Item = (String, Vec<u8>, i64)>,
        revision: i64,
        keys: &Keys,
    ) -> Changes {
        let mut fresh = BTreeMap::new();
        for (key, value, mod_revision) in kvs {
            fresh.insert(
                key,
                Entry {
                    value: Some(value),
                    mod_revision,
                },
            );
        }
        let mut changes = Changes::default();
        for (key, entry) in &self.entries {
            let now = fresh.get(key).and_then(|e| e.value.as_ref());
            if entry.value.as_ref() != now {
                changes.merge(keys.changes_of(key));
            }
        }
        for (key, entry) in &fresh {
            if !self.entries.contains_key(key) && entry.value.is_some() {
                changes.merge(keys.changes_of(key));
            }
        }
        self.entries = fresh;
        self.revision = revision;
        self.loaded = true;
        changes
    }

    /// Applies a put seen at `revision`; whether it changed anything.
    pub fn put(&mut self, key: &str, value: Vec<u8>, revision: i64) -> bool {
        self.set(key, Some(value), revision)
    }

    /// Applies a deletion seen at `revision`; whether it changed anything.
    pub fn delete(&mut self, key: &str, revision: i64) -> bool {
        self.set(key, None, revision)
    }

    /// `key` becomes `value` (None: deleted) unless a change at `revision` or later
    /// is already applied; whether what the key holds changed.
    fn set(&mut self, key: &str, value: Option<Vec<u8>>, revision: i64) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if e.mod_revision >= revision => false,
            Some(e) => {
                let changed = e.value != value;
                e.value = value;
                e.mod_revision = revision;
                changed
            }
            None => {
                let changed = value.is_some();
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        value,
                        mod_revision: revision,
                    },
                );
                changed
            }
        }
    }

    /// The watch has applied everything up to `revision`: tombstones at or below it
    /// can go.
    pub fn advance(&mut self, revision: i64) {
        if revision > self.revision {
            self.revision = revision;
        }
        let upto = self.revision;
        self.entries
            .retain(|_, e| e.value.is_some() || e.mod_revision > upto);
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key)?.value.as_deref()
    }

    /// The revision of the last change of `key` while present (None when absent).
    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        self.entries
            .get(key)
            .filter(|e| e.value.is_some())
            .map(|e| e.mod_revision)
    }

    /// Values of the present keys starting with `prefix`, in key order.
    pub fn values_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter_map(|(_, e)| e.value.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_events_never_undo_newer_ones() {
        let keys = Keys::new("/s");
        let k = keys.object(super::super::keys::ENDPOINTS, "ep_1");
        let mut m = Mirror::default();
        m.replace_all([], 10, &keys);
        // This edge's own write at 11, then its delete at 12, before the watch
        // delivers either.
        assert!(m.put(&k, b"v1".to_vec(), 11));
        assert!(m.delete(&k, 12));
        // The watch delivers them late: nothing changes, nothing comes back.
        assert!(!m.put(&k, b"v1".to_vec(), 11));
        assert!(!m.delete(&k, 12));
        assert_eq!(m.get(&k), None);
        m.advance(12);
        assert_eq!(m.values_under(&keys.objects()).count(), 0);
        // A later put from another edge counts.
        assert!(m.put(&k, b"v2".to_vec(), 13));
        assert_eq!(m.mod_revision(&k), Some(13));
    }

    #[test]
    fn a_reload_reports_what_differs() {
        let keys = Keys::new("/s");
        let ep = keys.object(super::super::keys::ENDPOINTS, "ep_1");
        let tok = keys.object(super::super::keys::TOKENS, "tok_1");
        let mut m = Mirror::default();
        let c = m.replace_all([(ep.clone(), b"a".to_vec(), 5)], 5, &keys);
        assert!(c.endpoints && !c.auth);
        let c = m.replace_all(
            [
                (ep.clone(), b"a".to_vec(), 5),
                (tok.clone(), b"t".to_vec(), 7),
            ],
            7,
            &keys,
        );
        assert!(!c.endpoints && c.auth);
        let c = m.replace_all([(tok, b"t".to_vec(), 7)], 9, &keys);
        assert!(c.endpoints && !c.auth);
    }
}
