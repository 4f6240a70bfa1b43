//! The session loop's decisions and the registry's bind decisions, on a fake clock and
//! without sockets.

use std::sync::Arc;

use crate::wire::UpstreamProtocol;

use super::*;
use crate::edge::{
    auth::BindRule, endpoint_policy::BoundPolicy, registry::Registry, session_handle::SessionHandle,
};

const T0: u64 = 10_000_000;
const URL: &str = "tcp://db.internal:5432";

fn identity(user: &str, rules: &[&str]) -> Arc<Identity> {
    Arc::new(Identity {
        user_id: format!("usr_{user}"),
        user_name: user.to_string(),
        token_id: format!("tok_{user}"),
        acl: rules.iter().map(|r| BindRule::parse(r).unwrap()).collect(),
    })
}

fn logic(tolerance_ms: u32) -> SessionLogic {
    SessionLogic::new(identity("alice", &[]), tolerance_ms, T0)
}

fn bind(request_id: u32, url: &str, pooling: bool) -> Frame {
    bind_with_policy(request_id, url, pooling, "")
}

fn bind_with_policy(request_id: u32, url: &str, pooling: bool, policy: &str) -> Frame {
    Frame::Bind {
        request_id,
        url: url.to_string(),
        pooling,
        labels: crate::wire::Labels {
            description: format!("bind {request_id}"),
            metadata: String::new(),
        },
        traffic_policy: policy.to_owned(),
        upstream_protocol: crate::wire::UpstreamProtocol::Http1,
    }
}

#[test]
fn silence_past_the_tolerance_ends_the_session_and_any_frame_restarts_the_count() {
    let mut s = logic(3000);
    assert_eq!(s.read_timeout(T0), Duration::from_secs(3));
    assert_eq!(s.on_tick(T0 + 2999), None);
    assert_eq!(
        s.on_frame(Frame::Ping { nonce: 7 }, T0 + 2000, 0),
        Action::Reply(Frame::Pong { nonce: 7 })
    );
    assert_eq!(s.read_timeout(T0 + 2500), Duration::from_millis(2500));
    assert_eq!(s.on_tick(T0 + 4999), None);
    let Some(Action::End {
        error: None,
        reason,
    }) = s.on_tick(T0 + 5000)
    else {
        panic!("silent for the whole tolerance")
    };
    assert_eq!(reason, "no heartbeat for 3s");
    assert_eq!(s.read_timeout(T0 + 6000), Duration::ZERO);
}

#[test]
fn the_tolerance_an_agent_asks_for_is_bounded() {
    assert_eq!(logic(10).tolerance(), MIN_TOLERANCE);
    assert_eq!(logic(u32::MAX).tolerance(), MAX_TOLERANCE);
    assert_eq!(logic(4000).ping_interval(), Duration::from_secs(2));
    assert_eq!(logic(60_000).ping_interval(), RTT_INTERVAL);
}

#[test]
fn the_edges_pongs_give_the_round_trip_and_the_agents_are_ignored() {
    let mut s = logic(3000);
    let Frame::Ping { nonce } = SessionLogic::rtt_ping(5_000_000) else {
        panic!("a ping")
    };
    assert_eq!(
        s.on_frame(Frame::Pong { nonce }, T0, 5_001_500),
        Action::RecordRtt(1500)
    );
    assert_eq!(
        s.on_frame(Frame::Pong { nonce: 3 }, T0, 5_001_500),
        Action::Nothing
    );
}

#[test]
fn health_reports_name_the_canonical_url() {
    let mut s = logic(3000);
    let action = s.on_frame(
        Frame::EndpointHealth {
            url: "TCP://DB.internal:5432".into(),
            healthy: false,
            weight: 7,
        },
        T0,
        0,
    );
    assert_eq!(
        action,
        Action::ReportHealth {
            url: URL.into(),
            healthy: false,
            weight: 7
        }
    );
}

#[test]
fn binds_are_checked_against_the_url_syntax_and_the_tokens_rules_first() {
    let mut s = SessionLogic::new(identity("alice", &["bind:web.internal"]), 3000, T0);
    assert_eq!(
        s.on_frame(bind(1, "tcp://web.internal:80", true), T0, 0),
        Action::Bind {
            request_id: 1,
            url: "tcp://web.internal:80".into(),
            pooling: true,
            labels: crate::wire::Labels {
                description: "bind 1".into(),
                metadata: String::new(),
            },
            policy: None,
            upstream: UpstreamProtocol::Http1,
        }
    );
    let Action::RefuseBind { error, answer, .. } = s.on_frame(bind(2, URL, false), T0, 0) else {
        panic!("refused by the rules")
    };
    assert!(matches!(error, BindError::Forbidden { .. }));
    let Frame::Error {
        request_id: 2,
        code: ErrorCode::BindForbidden,
        message,
    } = answer
    else {
        panic!("{answer:?}")
    };
    assert!(message.contains("may not bind"), "{message}");
    let Action::RefuseBind { error, answer, .. } = s.on_frame(bind(3, "nonsense", false), T0, 0)
    else {
        panic!("an invalid URL")
    };
    assert!(matches!(error, BindError::InvalidUrl(_)));
    assert!(matches!(
        answer,
        Frame::Error {
            request_id: 3,
            code: ErrorCode::BadRequest,
            ..
        }
    ));
}

#[test]
fn an_unexpected_frame_or_a_broken_channel_ends_the_session_with_a_word_to_the_agent() {
    let mut s = logic(3000);
    let Action::End {
        error:
            Some(Frame::Error {
                code: ErrorCode::BadRequest,
                ..
            }),
        reason,
    } = s.on_frame(Frame::NeedChannels { count: 1 }, T0, 0)
    else {
        panic!("ended")
    };
    assert_eq!(reason, "unexpected need_channels frame");
    assert!(matches!(
        s.on_read_error(&"bad length"),
        Action::End {
            error: Some(Frame::Error {
                code: ErrorCode::Malformed,
                ..
            }),
            ..
        }
    ));
    assert_eq!(
        s.on_closed(),
        Action::End {
            error: None,
            reason: "agent closed the control channel".into()
        }
    );
}

fn session(
    registry: &Registry,
    user: &str,
) -> (Arc<SessionHandle>, async_channel::Receiver<Frame>) {
    registry.open_session(
        identity(user, &[]),
        "127.0.0.1:9".parse().unwrap(),
        "test".into(),
        String::new(),
    )
}

fn code(outcome: Result<crate::edge::registry::Bound, BindError>) -> ErrorCode {
    outcome.expect_err("refused").code()
}

#[test]
fn a_bind_claims_the_url_and_a_second_unpooled_session_is_refused_until_the_first_leaves() {
    let registry = Registry::default();
    let (a, _a_rx) = session(&registry, "alice");
    let (b, _b_rx) = session(&registry, "alice");
    let bound = registry
        .bind(URL, &a, false, None, UpstreamProtocol::Http1)
        .unwrap();
    assert_eq!((bound.members, bound.claimed), (1, true));
    assert_eq!(
        code(registry.bind(URL, &b, false, None, UpstreamProtocol::Http1)),
        ErrorCode::AlreadyBound
    );
    assert_eq!(
        code(registry.bind(URL, &a, false, None, UpstreamProtocol::Http1)),
        ErrorCode::AlreadyBoundHere
    );
    // The first session ends (its agent drained and left): the URL is free again.
    assert_eq!(registry.close_session(&a), vec![URL.to_string()]);
    let rebound = registry
        .bind(URL, &b, false, None, UpstreamProtocol::Http1)
        .unwrap();
    assert_eq!((rebound.members, rebound.claimed), (1, false));
}

#[test]
fn pooled_and_unpooled_binds_refuse_each_other_and_pooled_ones_share() {
    let registry = Registry::default();
    let (a, _a_rx) = session(&registry, "alice");
    let (b, _b_rx) = session(&registry, "alice");
    let (c, _c_rx) = session(&registry, "alice");
    registry
        .bind(URL, &a, true, None, UpstreamProtocol::Http1)
        .unwrap();
    let refused = registry
        .bind(URL, &b, false, None, UpstreamProtocol::Http1)
        .unwrap_err();
    assert_eq!(refused, BindError::PoolingMismatch { pool_pooling: true });
    assert!(refused.message(URL).contains("pooling_enabled"));
    assert_eq!(
        registry
            .bind(URL, &c, true, None, UpstreamProtocol::Http1)
            .unwrap()
            .members,
        2
    );
    assert_eq!(registry.lookup(URL).unwrap().members.len(), 2);
}

#[test]
fn another_users_url_is_refused_and_an_ending_session_binds_nothing() {
    let registry = Registry::default();
    let (a, _a_rx) = session(&registry, "alice");
    let (m, _m_rx) = session(&registry, "mallory");
    registry
        .bind(URL, &a, true, None, UpstreamProtocol::Http1)
        .unwrap();
    let Err(BindError::NotOwner(owner)) =
        registry.bind(URL, &m, true, None, UpstreamProtocol::Http1)
    else {
        panic!("mallory may not join alice's pool")
    };
    assert_eq!(owner.user_name, "alice");
    let n = registry.kick_where(|s| s.id == a.id, ErrorCode::Unauthorized, "revoked");
    assert_eq!(n, 1);
    assert!(
        registry.lookup(URL).is_none(),
        "a kicked session is unbound at once"
    );
    assert_eq!(
        code(registry.bind(URL, &a, true, None, UpstreamProtocol::Http1)),
        ErrorCode::SessionEnding
    );
}

const OFFICE_ONLY: &str = r#"{"on_tcp_connect":[{"actions":[{"type":"restrict-ips","config":{"enforce":true,"allow":["10.0.0.0/8"],"deny":[]}}]}]}"#;

#[test]
fn a_binds_traffic_policy_is_compiled_or_the_bind_refused() {
    let mut s = logic(3000);
    let Action::Bind {
        policy: Some(policy),
        ..
    } = s.on_frame(bind_with_policy(1, URL, true, OFFICE_ONLY), T0, 0)
    else {
        panic!("a valid policy binds");
    };
    let facts = sluice_policy::NoConnInfo;
    assert!(policy
        .check(URL, "10.1.2.3:4000".parse().unwrap(), &facts)
        .is_ok());
    assert!(policy
        .check(URL, "192.0.2.1:4000".parse().unwrap(), &facts)
        .is_err());
    for broken in [
        "{\"on_tcp_connect\": 3}",
        r#"{"on_tcp_connect":[{"actions":[{"type":"forward-internal","config":{"url":"tcp://x.internal:1"}}]}]}"#,
    ] {
        let Action::RefuseBind { error, answer, .. } =
            s.on_frame(bind_with_policy(2, URL, true, broken), T0, 0)
        else {
            panic!("{broken} was accepted");
        };
        assert!(matches!(error, BindError::InvalidPolicy(_)), "{error:?}");
        assert!(matches!(
            answer,
            Frame::Error {
                code: ErrorCode::InvalidPolicy,
                ..
            }
        ));
    }
}

#[test]
fn pool_members_must_carry_the_same_traffic_policy() {
    let registry = Registry::default();
    let (a, _a_rx) = session(&registry, "alice");
    let (b, _b_rx) = session(&registry, "alice");
    let (c, _c_rx) = session(&registry, "alice");
    let url: sluice_policy::InternalUrl = URL.parse().unwrap();
    let office = || {
        BoundPolicy::from_bind(OFFICE_ONLY, &url)
            .unwrap()
            .map(Arc::new)
    };
    registry
        .bind(URL, &a, true, office(), UpstreamProtocol::Http1)
        .unwrap();
    assert_eq!(
        code(registry.bind(URL, &b, true, None, UpstreamProtocol::Http1)),
        ErrorCode::PolicyMismatch
    );
    assert_eq!(
        registry
            .bind(URL, &c, true, office(), UpstreamProtocol::Http1)
            .unwrap()
            .members,
        2
    );
}
