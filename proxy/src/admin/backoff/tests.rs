use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::*;

const S: BackoffSettings = BackoffSettings {
    failures: 3,
    window: Duration::from_secs(10),
    initial: Duration::from_secs(1),
    max: Duration::from_secs(4),
};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn holds_off_after_n_wrong_keys_then_doubles_up_to_max() {
    let t0 = Instant::now();
    let mut f = AuthFailures::new(S);
    assert_eq!(f.failure(ip(1), true, t0).held_for, None);
    assert_eq!(f.failure(ip(1), true, t0).held_for, None);
    assert_eq!(f.failure(ip(1), true, t0).held_for, Some(secs(1)));
    assert_eq!(f.held(Client::of(ip(1)), t0), Some(secs(1)));
    assert_eq!(
        f.held(Client::of(ip(2)), t0),
        None,
        "other clients untouched"
    );
    // Over: one more wrong key holds again, twice as long, and so on up to max.
    let t = t0 + secs(1);
    assert_eq!(f.held(Client::of(ip(1)), t), None);
    assert_eq!(f.failure(ip(1), true, t).held_for, Some(secs(2)));
    let t = t + secs(2);
    assert_eq!(f.failure(ip(1), true, t).held_for, Some(secs(4)));
    let t = t + secs(4);
    assert_eq!(f.failure(ip(1), true, t).held_for, Some(secs(4)));
}

#[test]
fn a_right_key_resets_and_failures_spread_over_windows_never_hold() {
    let t0 = Instant::now();
    let mut f = AuthFailures::new(S);
    f.failure(ip(1), true, t0);
    f.failure(ip(1), true, t0);
    f.success(ip(1));
    assert_eq!(f.failure(ip(1), true, t0).held_for, None);
    f.failure(ip(1), true, t0);
    assert_eq!(f.failure(ip(1), true, t0).held_for, Some(secs(1)));
    f.success(ip(1));
    assert_eq!(f.held(Client::of(ip(1)), t0), None);
    assert_eq!(
        f.failure(ip(1), true, t0).held_for,
        None,
        "strikes reset too"
    );

    let mut f = AuthFailures::new(S);
    for i in 0..10 {
        let t = t0 + secs(6 * i);
        assert_eq!(f.failure(ip(3), true, t).held_for, None);
        f.sweep(t);
    }
}

#[test]
fn missing_keys_are_audited_but_never_hold_off() {
    let t0 = Instant::now();
    let mut f = AuthFailures::new(S);
    for _ in 0..10 {
        assert_eq!(f.failure(ip(1), false, t0).held_for, None);
    }
    assert_eq!(f.held(Client::of(ip(1)), t0), None);
}

#[test]
fn one_audit_event_per_client_per_window_and_no_failure_lost() {
    let t0 = Instant::now();
    let mut f = AuthFailures::new(S);
    assert_eq!(f.failure(ip(1), true, t0).audit, Some(1));
    assert_eq!(f.failure(ip(2), false, t0).audit, Some(1), "per client");
    for i in 1..=5 {
        assert_eq!(f.failure(ip(1), false, t0 + secs(i)).audit, None);
    }
    assert!(f.sweep(t0 + secs(9)).is_empty());
    assert_eq!(f.sweep(t0 + secs(10)), vec![(Client::of(ip(1)), 5)]);
    // The next failure within the window after that summary waits for the next one.
    assert_eq!(f.failure(ip(1), false, t0 + secs(11)).audit, None);
    assert_eq!(f.sweep(t0 + secs(20)), vec![(Client::of(ip(1)), 1)]);
    // Quiet for a window: forgotten, and the next failure is stored at once.
    assert!(f.sweep(t0 + secs(40)).is_empty());
    assert_eq!(f.tracked(), 0);
    assert_eq!(f.failure(ip(1), false, t0 + secs(41)).audit, Some(1));
}

#[test]
fn a_held_client_is_kept_until_its_hold_ends() {
    let s = BackoffSettings {
        window: secs(2),
        max: secs(60),
        initial: secs(30),
        ..S
    };
    let t0 = Instant::now();
    let mut f = AuthFailures::new(s);
    for _ in 0..3 {
        f.failure(ip(1), true, t0);
    }
    f.sweep(t0 + secs(20));
    assert_eq!(f.held(Client::of(ip(1)), t0 + secs(20)), Some(secs(10)));
    f.sweep(t0 + secs(31));
    assert_eq!(f.tracked(), 0);
}

#[test]
fn ipv6_clients_are_tracked_per_64_and_mapped_ipv4_as_ipv4() {
    let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
    assert_eq!(Client::of(a), Client::of(b));
    assert_eq!(Client::of(a).to_string(), "2001:db8:1:2::/64");
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(Client::of(mapped), Client::of(ip(1)));
    assert_eq!(Client::of(ip(1)).to_string(), "192.0.2.1");
}

#[test]
fn beyond_capacity_failures_are_audited_as_other_and_hold_no_one() {
    let t0 = Instant::now();
    let mut f = AuthFailures::new(S);
    for i in 0..CAPACITY as u32 {
        f.failure(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), false, t0);
    }
    let out = ip(200);
    let first = f.failure(out, true, t0);
    assert_eq!(first.client, Client::Other);
    assert_eq!(first.audit, Some(1));
    for _ in 0..5 {
        assert_eq!(f.failure(out, true, t0).held_for, None);
    }
    let due = f.sweep(t0 + S.window);
    assert!(due.contains(&(Client::Other, 5)), "{due:?}");
}
