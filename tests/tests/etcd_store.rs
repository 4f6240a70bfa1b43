//! The etcd state store driven directly against a real etcd server: what the fleet
//! tests see only through edges — the audit log's retention per class, and changes
//! made through one store reported to another on the same prefix.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sluice_proxy::{
    config::fleet::EtcdSettings,
    state::{etcd::EtcdStore, Changes, EventQuery, NewEvent, Store, UserRecord},
};
use sluice_tests::{etcd::Etcd, wait_until};

fn store(etcd: &Etcd, prefix: &str, edge: &str) -> EtcdStore {
    let settings = EtcdSettings {
        endpoints: etcd.urls(),
        prefix: prefix.into(),
        user: None,
        tls: None,
    };
    let store = EtcdStore::connect(settings, edge).expect("connect");
    assert!(
        store.status().loaded,
        "state not loaded from a running etcd"
    );
    store
}

fn prefix() -> String {
    format!("/store-test-{:08x}", rand::random::<u32>())
}

fn event(kind: &str, n: usize) -> NewEvent {
    NewEvent::now(kind, "test", format!("{n}"), serde_json::json!({}))
}

#[test]
fn the_audit_log_keeps_its_newest_events_and_routine_ones_never_push_security_ones_out() {
    let etcd = Etcd::start();
    let mut s = store(&etcd, &prefix(), "edge-a").with_retention(50, 10);
    // 10 security events first, then 240 routine ones: 250 in all, the last prune
    // runs at the last event.
    for n in 0..10 {
        s.append_event(&event("authtoken.revoked", n)).unwrap();
    }
    for n in 0..240 {
        s.append_event(&event("session.started", n)).unwrap();
    }
    let all = s
        .events(&EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    let routine: Vec<usize> = all
        .iter()
        .filter(|e| e.kind == "session.started")
        .map(|e| e.subject.parse().unwrap())
        .collect();
    let security = all.iter().filter(|e| e.kind == "authtoken.revoked").count();
    assert_eq!(security, 10, "routine events pushed security ones out");
    // The 50 newest routine events, newest first.
    assert_eq!(routine, (190..240).rev().collect::<Vec<_>>());
    // Each names the edge that recorded it.
    assert!(all.iter().all(|e| e.edge.as_deref() == Some("edge-a")));
}

#[test]
fn a_change_through_one_store_is_reported_to_the_other_and_names_stay_unique() {
    let etcd = Etcd::start();
    let prefix = prefix();
    let mut a = store(&etcd, &prefix, "edge-a");
    let mut b = store(&etcd, &prefix, "edge-b");
    let seen: Arc<Mutex<Changes>> = Default::default();
    let sink = seen.clone();
    b.on_remote_change(Box::new(move |c| sink.lock().unwrap().merge(c)));

    let user = UserRecord {
        id: "usr_1".into(),
        name: "clinic".into(),
        description: String::new(),
        active: true,
        created_at: 1,
    };
    a.put_user(&user, &event("service_user.created", 0))
        .unwrap();
    wait_until("B reports the user", Duration::from_secs(5), || {
        seen.lock().unwrap().auth
    });
    assert_eq!(b.users().unwrap(), vec![user.clone()]);
    // B measured how long A's write took to reach it.
    let lag = b.status().watch_lag_ms;
    assert!(lag.is_some_and(|l| (0..5000).contains(&l)), "{lag:?}");
    // Another user with the same name, through B: refused, nothing written.
    let twin = UserRecord {
        id: "usr_2".into(),
        ..user.clone()
    };
    let refused = b.put_user(&twin, &event("service_user.created", 1));
    assert!(
        matches!(refused, Err(sluice_proxy::state::StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(b.users().unwrap(), vec![user]);
    assert_eq!(b.status().write_conflicts, 1);
    // A's own write was never reported back to A as a remote change, nor taken for
    // another edge's lag (B's refused write stamped nothing).
    assert_eq!(a.status().remote_changes, 0);
    assert_eq!(a.status().watch_lag_ms, None);
}
