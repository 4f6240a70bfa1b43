//! One request on an `http://` or `https://` endpoint, phase by phase: route (its
//! `Host` to an endpoint, or the endpoint its TLS named), admit (the endpoint's limits
//! and `on_tcp_connect`, on the client address: a refusal is an HTTP page, not a
//! reset), `on_http_request` (the policy's rules change the request, answer it
//! themselves, or name its target; without a target from them, `on_tcp_connect`'s),
//! route the target to a pool (local, or another edge of the fleet), open a stream of
//! its own on a pool member's data channel (another member while nothing reached an
//! upstream, as for any connection: edge/pipeline.rs; a `forward-internal` with
//! `on_error: continue` whose target has no agent or no reachable member hands the
//! request back to the policy's next action), then the request sent over that stream by
//! hyper's HTTP/1.1 client with the forwarding headers, and the upstream's response
//! passed back as it arrives, through `on_http_response` when the policy has it.
//!
//! The pool picks a member for each request; a kept-alive upstream connection of that
//! member (upstreams.rs) carries it when this worker has one, else a new stream on one of
//! its data channels, which is kept alive for the next request once the response ended
//! (HTTP keep-alive through the tunnel). A request carried to another edge of the fleet
//! goes likewise on a connection this worker kept through that edge (its peer link
//! stream, relayed there to one member), else on a new stream. When a stream ends, its
//! data channel goes back to its session. A request
//! that switches protocols (`Upgrade`, websockets) keeps its stream: after the
//! upstream's 101 both sides' bytes are relayed as they are until both end.

use std::{net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use hyper::{body::Incoming, client::conn::http1::SendRequest, header, Request, Response};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use sluice_policy::{
    Conn as PolicyConn, Effects, HttpLog, HttpPhases, OnError, RequestVerdict, ResponseVerdict,
    Resume,
};

use super::{
    headers, multiplexed,
    page::{self, Body, Code},
    rt,
    stall::Flowing,
    upstreams,
};
use crate::{
    edge::{
        account::{Conn, Outcome},
        conn_facts::PublicConn,
        datachan::{DataChannel, OpenError, ParkedChannel},
        denials,
        endpoint_policy::BoundPolicy,
        peer_out::PeerLoad,
        pipeline::{self, Carried, Via},
        pool::MemberLoad,
        EdgeShared, LiveEndpoint,
    },
    io::{mux::Gone, readiness::Readiness, substream::ChunkedSub},
    wire::UpstreamProtocol,
};

/// How long a finished stream waits for the agent's end of it before its data channel
/// is closed rather than parked again.
const STREAM_END_WAIT: Duration = Duration::from_secs(2);

/// The connection a request came on.
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// Its address as `X-Forwarded-For` names it (headers.rs's `client_value`).
    pub client_value: header::HeaderValue,
    /// The address it connected to.
    pub server: SocketAddr,
    /// The edge.
    pub shared: Arc<EdgeShared>,
    /// The endpoint its TLS named (`https://`); `None`: each request's `Host` picks one.
    pub endpoint: Option<Arc<LiveEndpoint>>,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The connection its last request kept through another edge, for its next one
    /// (it goes when the client's connection does).
    pub kept_peer: Rc<PeerSlot>,
}

/// A connection kept alive through another edge of the fleet for one client
/// connection. That edge checked the agent endpoint's policy for this client when the
/// stream opened, so the stream serves no other client.
pub type PeerSlot = std::cell::RefCell<Option<PeerKept>>;

/// See [`PeerSlot`].
pub struct PeerKept {
    edge: Arc<str>,
    url: String,
    sender: SendRequest<Body>,
    channel: std::os::fd::RawFd,
}

/// Where a connection goes once its response ended: among the worker's connections to
/// a local member (upstreams.rs), or into its client connection's [`PeerSlot`].
struct Keep {
    url: String,
    client: std::rc::Weak<PeerSlot>,
}

/// Answers one request: the upstream's response, or the edge's page saying why not;
/// the request line and its outcome logged (the edge's own answers at `info`, rate
/// limited; the upstream's at `debug`).
pub async fn request(
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<Response<Body>, ClosedByPolicy> {
    let started = std::time::Instant::now();
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let response = phases(req, conn).await;
    if let Some(closed) = response.extensions().get::<ClosedByPolicy>() {
        crate::log_throttled!(info, peer = %conn.peer, %method, %uri, rule = %closed.rule,
            "http: the endpoint's policy closed the connection (close-connection)");
        return Err(closed.clone());
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match response.headers().get(page::ERROR_CODE_HEADER) {
        Some(code) => {
            crate::log_throttled!(info, peer = %conn.peer, %method, %uri, status,
                code = code.to_str().unwrap_or(""), ms, "http request answered by the edge");
        }
        None => {
            tracing::debug!(peer = %conn.peer, %method, %uri, status, ms, "http request");
        }
    }
    Ok(response)
}

/// A `close-connection` action's verdict: the connection is closed without an answer
/// (hyper ends an HTTP/1.1 connection on a service error, and resets an HTTP/2
/// stream). Carried out of the phases as a marker on an empty response.
#[derive(Debug, Clone)]
pub struct ClosedByPolicy {
    /// The rule, as `rule 2 ("name")`.
    pub rule: String,
}

impl std::fmt::Display for ClosedByPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "closed by the endpoint's traffic policy ({})", self.rule)
    }
}

impl std::error::Error for ClosedByPolicy {}

/// The marker response for [`ClosedByPolicy`].
fn closed(rule: String) -> Response<Body> {
    let mut response = page::error(Code::Denied);
    response.extensions_mut().insert(ClosedByPolicy { rule });
    response
}

/// Writes the `log` actions' events a phase of `policy_of`'s policy reached
/// (edge/policy_log.rs).
fn write_logs(endpoint: &str, policy_of: &str, client: SocketAddr, logs: Vec<HttpLog>) {
    for event in logs {
        let name = event.rule_name.as_deref();
        crate::edge::policy_log::write(
            endpoint,
            policy_of,
            client,
            event.phase,
            event.rule,
            name,
            event.metadata,
        );
    }
}

/// [`request`]'s phases.
async fn phases(req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
    let accepted_at = std::time::Instant::now();
    let shared = &*conn.shared;
    let Some(host) = headers::host_of(&req) else {
        return page::error(Code::NoHost);
    };
    let Some(endpoint) = conn
        .endpoint
        .clone()
        .or_else(|| shared.endpoints.route_host(&host))
    else {
        crate::log_throttled!(info, peer = %conn.peer, %host, "http: no endpoint serves the host");
        return page::error(Code::NoEndpoint);
    };
    let _active = endpoint.stats.active.track();
    endpoint.stats.connections.inc();
    let account = |outcome| {
        Conn {
            edge: &shared.stats,
            endpoint: &endpoint,
            peer: conn.peer,
        }
        .account(outcome)
    };
    let counted = |response: Response<Body>| {
        if response.extensions().get::<ClosedByPolicy>().is_none() {
            let class = (response.status().as_u16() / 100).clamp(1, 5) as usize - 1;
            endpoint.stats.http_responses[class].inc();
        }
        response
    };

    let policy = endpoint.policy.load();
    let facts = PublicConn {
        server: || conn.server,
        hello: &[],
    };
    let (_ip_slot, conn_target) = match pipeline::admit(&endpoint, conn.peer, &policy, &facts) {
        Ok(admitted) => {
            if let Some(why) = admitted.would_deny {
                account(Outcome::WouldDeny(why));
            }
            (admitted.ip_slot, admitted.target)
        }
        Err(refusal) => {
            let code = match refusal {
                Outcome::OverLimit(_) => Code::OverLimit,
                _ => Code::Denied,
            };
            account(refusal);
            return counted(page::error(code));
        }
    };
    // As the client wrote it (an HTTP/2 request's is its `:authority`).
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| host.clone());
    let mut req = req;
    // A protocol switch (websockets): the client's side of it, once answered.
    let upgrade =
        headers::upgrade_of(req.headers()).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();

    // on_http_request: the target, or the policy's own answer; a target that cannot
    // take the request sends it on to the policy's next action when its
    // `forward-internal` says `on_error: continue`.
    let rules = policy.http();
    let mut country = None;
    let policy_conn = with_country(
        rules,
        PolicyConn {
            client: conn.peer,
            server: conn.server,
            scheme: conn.proto,
            country: None,
        },
        &mut country,
    );
    let mut resume = Resume::default();
    // The agent endpoint's own policy, when the pool the request goes to has one (its
    // response phase runs before the cloud endpoint's).
    let mut bound: Option<Arc<BoundPolicy>> = None;
    // This request opens the worker's multiplexed link to the member the pool picked
    // (held until the link is kept, or this request is done).
    let mut link_opening = None;
    let (target, carrier) = loop {
        let (target, on_error) = match next_target(
            rules,
            &mut parts,
            policy_conn,
            &mut resume,
            conn_target.as_deref(),
            &endpoint,
        ) {
            Ok(next) => next,
            Err(answer) => return counted(*answer),
        };
        let go_on = on_error == OnError::Continue;
        let unaccounted = Conn {
            edge: &shared.stats,
            endpoint: &endpoint,
            peer: conn.peer,
        };
        let route = match pipeline::route(shared, &target) {
            Ok(route) => route,
            Err(_) if go_on => {
                tracing::debug!(endpoint = %endpoint.url, peer = %conn.peer, %target,
                    "http: no agent serves the target; the policy goes on (on_error: continue)");
                continue;
            }
            Err(refusal) => {
                unaccounted.account(refusal);
                return counted(page::error(Code::AgentOffline));
            }
        };
        if let pipeline::Route::Local(pool) = &route {
            if let Some(policy) = &pool.policy {
                if let Err(answer) =
                    endpoint_policy_on_request(policy, &target, &mut parts, policy_conn, &endpoint)
                {
                    return counted(*answer);
                }
                bound = Some(policy.clone());
            }
        }
        // A kept-alive upstream connection of the member the pool picks, when this
        // worker has one.
        if let (pipeline::Route::Local(pool), None) = (&route, &upgrade) {
            if let Some(member) = pool.pick(&[]) {
                let kept = match member.upstream {
                    UpstreamProtocol::Http2 => {
                        upstreams::http2(member.id(), &target).map(Kept::Http2)
                    }
                    UpstreamProtocol::Http1Multiplexed => {
                        match kept_multiplexed(shared, member, &endpoint, conn, &target).await {
                            Ok(kept) => Some(kept),
                            Err(opening) => {
                                link_opening = opening;
                                None
                            }
                        }
                    }
                    UpstreamProtocol::Http1 => {
                        upstreams::take(member.id(), &target).map(|(sender, channel)| Kept::Http1 {
                            sender,
                            channel,
                            via: Via::Member(MemberLoad::new(member)),
                        })
                    }
                };
                if let Some(kept) = kept {
                    break (target, Carrier::Kept { kept, route });
                }
            }
        }
        // Or the one this client connection kept through another edge holding the URL's
        // sessions.
        if let (pipeline::Route::Peer(routes), None) = (&route, &upgrade) {
            let kept = conn.kept_peer.take().and_then(|k| {
                let route = routes
                    .lookup(&target)?
                    .iter()
                    .find(|r| r.edge == k.edge && k.url == target)?;
                upstreams::reusable(&k.sender, k.channel).then(|| Kept::Http1 {
                    sender: k.sender,
                    channel: k.channel,
                    via: Via::Peer(PeerLoad::reused(route)),
                })
            });
            if let Some(kept) = kept {
                break (target, Carrier::Kept { kept, route });
            }
        }
        match open(shared, &endpoint, route, conn, &target, upgrade.is_none()).await {
            Ok(carried) => break (target, Carrier::Opened(carried)),
            Err(_) if go_on => {
                tracing::debug!(endpoint = %endpoint.url, peer = %conn.peer, %target,
                    "http: no member of the target reached its upstream; the policy goes on (on_error: continue)");
            }
            Err(failure) => {
                unaccounted.account(Outcome::NoMember {
                    target: &target,
                    failure,
                });
                return counted(page::error(Code::UpstreamUnreachable));
            }
        }
    };
    // Held until this request is done (unless the link was kept before).
    let _link_opening = link_opening;
    // The request as the response phases see it (only when they have rules).
    let bound_rules = bound.as_ref().map(|b| (b.compiled.http(), b.url.as_str()));
    let sent_head = (rules.has_response_rules()
        || bound_rules.is_some_and(|(rules, _)| rules.has_response_rules()))
    .then(|| head_of(&parts));
    let finish = |response: Response<Body>| {
        let response = match bound_rules {
            Some((agent_rules, url)) => on_response(
                agent_rules,
                url,
                sent_head.as_ref(),
                policy_conn,
                &endpoint,
                response,
            ),
            None => response,
        };
        if response.extensions().get::<ClosedByPolicy>().is_some() {
            return counted(response);
        }
        counted(on_response(
            rules,
            crate::edge::policy_log::ENDPOINT_POLICY,
            sent_head.as_ref(),
            policy_conn,
            &endpoint,
            response,
        ))
    };

    // Bytes of this exchange moving either way (the stall cut watches them: stall.rs).
    let motion = Rc::new(crate::io::idle::Progress::default());
    let mut req = to_upstream(
        Request::from_parts(parts, body),
        &motion,
        &conn.client_value,
        conn.proto,
        &host_header,
        upgrade.as_ref().map(|u| &u.0),
    );

    let carried = match carrier {
        Carrier::Opened(carried) => carried,
        // The request goes on the kept connection (a kept-alive HTTP/1.1 one, or this
        // worker's HTTP/2 one to the member), unless it could not even be sent there;
        // then on a new stream.
        Carrier::Kept { mut kept, route } => {
            let replay = replayable(&req);
            let sent = monoio::time::timeout(endpoint.response_timeout, kept.try_send(req)).await;
            let Ok(sent) = sent else {
                account(Outcome::Forwarded {
                    failovers: 0,
                    open_latency: accepted_at.elapsed(),
                });
                return counted(no_response_in_time(&endpoint, conn.peer));
            };
            match sent {
                Ok(response) => {
                    account(Outcome::Forwarded {
                        failovers: 0,
                        open_latency: accepted_at.elapsed(),
                    });
                    kept.keep(Keep {
                        url: target.clone(),
                        client: Rc::downgrade(&conn.kept_peer),
                    });
                    return finish(to_client(response, motion, &endpoint, conn.peer));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    (Some(unsent), _) => req = unsent,
                    // The kept connection broke before any response (its agent or
                    // upstream went away meanwhile): an idempotent request without a
                    // body is sent again on a new stream, which is confirmed before the
                    // request goes (RFC 9110 9.2.2).
                    (None, Some(copy)) => {
                        tracing::debug!(endpoint = %endpoint.url, peer = %conn.peer,
                            error = %e.error(), "http: a kept upstream connection broke; request sent again");
                        req = copy;
                    }
                    (None, None) => {
                        crate::log_throttled!(info, endpoint = %endpoint.url, peer = %conn.peer,
                            error = %e.error(), "http: the upstream's response failed");
                        return counted(page::error(Code::UpstreamFailed));
                    }
                },
            }
            drop(kept);
            match open(shared, &endpoint, route, conn, &target, true).await {
                Ok(carried) => carried,
                Err(failure) => {
                    account(Outcome::NoMember {
                        target: &target,
                        failure,
                    });
                    return counted(page::error(Code::UpstreamUnreachable));
                }
            }
        }
    };
    account(Outcome::Forwarded {
        failovers: carried.failovers,
        open_latency: accepted_at.elapsed(),
    });

    let key = upgrade.is_none().then(|| Keep {
        url: target.clone(),
        client: Rc::downgrade(&conn.kept_peer),
    });
    match send(
        carried,
        req,
        upgrade.is_some(),
        key,
        endpoint.response_timeout,
    )
    .await
    {
        Ok((mut response, via)) => {
            if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                if let (Some((_, client_side)), Some(via)) = (upgrade, via) {
                    let upstream_side = hyper::upgrade::on(&mut response);
                    monoio::spawn(tunnel(
                        client_side,
                        upstream_side,
                        via,
                        endpoint.idle_timeout,
                    ));
                    let (mut parts, body) = response.into_parts();
                    headers::keep_upgrade(&mut parts.headers);
                    return counted(Response::from_parts(
                        parts,
                        http_body_util::Either::Left(Flowing::plain(body)),
                    ));
                }
            }
            finish(to_client(response, motion, &endpoint, conn.peer))
        }
        Err(SendFailure::Timeout) => counted(no_response_in_time(&endpoint, conn.peer)),
        Err(SendFailure::Http(e)) => {
            crate::log_throttled!(info, endpoint = %endpoint.url, peer = %conn.peer, error = %e,
                "http: the upstream's response failed");
            counted(page::error(Code::UpstreamFailed))
        }
        Err(SendFailure::Multiplexed(gone)) => {
            crate::log_throttled!(info, endpoint = %endpoint.url, peer = %conn.peer, error = %gone,
                "http: the multiplexed link's first connection failed");
            counted(page::error(Code::UpstreamUnreachable))
        }
        Err(SendFailure::Unsupported(what)) => {
            crate::log_throttled!(info, endpoint = %endpoint.url, peer = %conn.peer, what,
                "http: not supported; answered 502");
            counted(page::error(Code::UpstreamFailed))
        }
    }
}

/// A connection to the upstream of `member` (bound `Http1Multiplexed`) through this
/// worker's link to it: a kept-alive one, or a new sub-stream of the link (waiting,
/// within [`LINK_WAIT`], for the link another request is opening). `Err` when there is
/// none: with the right to open the link when no other request is opening it (the
/// caller holds it while its request opens a stream of its own), or none when the
/// agent refused the sub-stream (its upstream unreachable: the member is suspect, and
/// the request fails over as the open phase does).
async fn kept_multiplexed(
    shared: &EdgeShared,
    member: Arc<crate::edge::pool::Member>,
    endpoint: &LiveEndpoint,
    conn: &ConnInfo,
    target: &str,
) -> Result<Kept, Option<upstreams::LinkOpening>> {
    let sender = match upstreams::take(member.id(), target) {
        Some((sender, _)) => sender,
        None => {
            let mut waited = false;
            let link = loop {
                match upstreams::link(member.id(), target) {
                    upstreams::LinkState::Open(link) => break link,
                    upstreams::LinkState::Absent(opening) => return Err(Some(opening)),
                    upstreams::LinkState::Opening(_) if waited => return Err(None),
                    upstreams::LinkState::Opening(done) => {
                        let _ = monoio::time::timeout(LINK_WAIT, done.recv()).await;
                        waited = true;
                    }
                }
            };
            match multiplexed::connection(&link).await {
                Ok(sender) => sender,
                Err(Gone::Refused) => {
                    crate::edge::open::suspect(
                        &shared.registry,
                        &member,
                        OpenError::UpstreamFailed,
                        &crate::edge::open::Target {
                            endpoint: &endpoint.url,
                            peer: conn.peer,
                            url: target,
                        },
                    );
                    return Err(None);
                }
                Err(_) => return Err(None),
            }
        }
    };
    Ok(Kept::Http1 {
        sender,
        channel: -1,
        via: Via::Member(MemberLoad::new(member)),
    })
}

/// Longest a request waits for the multiplexed link another request is opening before
/// it opens a stream of its own.
const LINK_WAIT: Duration = crate::edge::CHANNEL_WAIT;

/// What carries a request upstream.
enum Carrier {
    /// A stream opened for it.
    Opened(Carried),
    /// A kept connection (its route kept, to open a stream should the connection turn
    /// out broken).
    Kept { kept: Kept, route: pipeline::Route },
}

/// A connection to a member that the request can go on without a stream of its own.
enum Kept {
    /// A kept-alive HTTP/1.1 connection, idle since its last response (to a local
    /// member, or through another edge).
    Http1 {
        sender: SendRequest<Body>,
        channel: std::os::fd::RawFd,
        via: Via,
    },
    /// This worker's HTTP/2 connection to the member.
    Http2(upstreams::Http2Sender),
}

impl Kept {
    /// Sends `req` on it (hyper hands the request back when it could not be sent).
    async fn try_send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>> {
        match self {
            Kept::Http1 { sender, .. } => sender.try_send_request(req).await,
            Kept::Http2(sender) => sender.try_send_request(for_version(req, true)).await,
        }
    }

    /// After a response: an HTTP/1.1 connection goes back among the worker's idle ones
    /// once its response has ended; an HTTP/2 one stays this worker's connection.
    fn keep(self, keep: Keep) {
        if let Kept::Http1 {
            sender,
            channel,
            via,
        } = self
        {
            keep_alive(sender, via, Some((keep, channel)));
        }
    }
}

/// A stream of its own for the request on `route` (edge/pipeline.rs's open phase: a
/// member's data channel, another member while none reached the upstream, or another
/// edge). `http_requests`: the request switches no protocol, so the stream may be a
/// multiplexed link to a member bound `Http1Multiplexed` (multiplexed.rs).
async fn open(
    shared: &EdgeShared,
    endpoint: &LiveEndpoint,
    route: pipeline::Route,
    conn: &ConnInfo,
    target: &str,
    http_requests: bool,
) -> Result<Carried, crate::edge::open::NoMember> {
    Box::pin(pipeline::open_phase(
        shared,
        endpoint,
        route,
        Vec::new(),
        conn.peer,
        conn.server,
        target,
        http_requests,
    ))
    .await
    .map(|(carried, _)| carried)
}

/// The internal URL (canonical) the request goes to next and what a failure to reach
/// it does, or the policy's own answer: `on_http_request` from `resume`, then the
/// connection's target (`on_tcp_connect`'s) when no rule forwarded.
fn next_target(
    rules: &HttpPhases,
    parts: &mut hyper::http::request::Parts,
    conn: PolicyConn<'_>,
    resume: &mut Resume,
    conn_target: Option<&str>,
    endpoint: &LiveEndpoint,
) -> Result<(String, OnError), Box<Response<Body>>> {
    let mut effects = Effects::default();
    let verdict = rules.on_request(parts, conn, *resume, &mut effects);
    for rule in effects.would_deny {
        crate::log_throttled!(info, peer = %conn.client, %rule,
            "http: a restrict-ips with enforce: false would have refused the request");
    }
    let policy_of = crate::edge::policy_log::ENDPOINT_POLICY;
    write_logs(&endpoint.url, policy_of, conn.client, effects.logs);
    let denials = &endpoint.stats.recent_denials;
    match verdict {
        RequestVerdict::Close { rule } => {
            endpoint.stats.denied.inc();
            denials.record(denials::Refusal {
                client: conn.client.ip(),
                cause: "close-connection",
                by: "endpoint",
                rule: None,
                rule_name: Some(&rule),
            });
            Err(Box::new(closed(rule)))
        }
        RequestVerdict::Answer(answer) => {
            tracing::debug!(peer = %conn.client, rule = %answer.rule, status = answer.status.as_u16(),
                "http: the endpoint's policy answered the request");
            if let Some(refusal) = answer.refusal {
                denials.record(denials::Refusal {
                    client: conn.client.ip(),
                    cause: refusal_cause(refusal),
                    by: "endpoint",
                    rule: None,
                    rule_name: Some(&answer.rule),
                });
            }
            Err(Box::new(page::policy_answer(answer)))
        }
        RequestVerdict::Forward {
            url,
            on_error,
            resume: next,
        } => {
            *resume = next;
            Ok((url.canonical(), on_error))
        }
        // The connection's target comes last (and `Halt`: nothing follows it).
        RequestVerdict::Pass => conn_target
            .map(|t| (t.to_owned(), OnError::Halt))
            .ok_or_else(|| Box::new(page::error(Code::NoRoute))),
    }
}

/// The agent endpoint's own policy on a request the cloud endpoint sent to it: its
/// `on_tcp_connect` rules on the client (the edge's 403 page when they refuse), then
/// its `on_http_request` rules (which answer, close, or change the request and pass
/// it on; they cannot forward).
fn endpoint_policy_on_request(
    policy: &BoundPolicy,
    target: &str,
    parts: &mut hyper::http::request::Parts,
    conn: PolicyConn<'_>,
    endpoint: &LiveEndpoint,
) -> Result<(), Box<Response<Body>>> {
    let facts = PublicConn {
        server: || conn.server,
        hello: &[],
    };
    let denials = &endpoint.stats.recent_denials;
    let mut country = None;
    let conn = with_country(policy.compiled.http(), conn, &mut country);
    if let Err(why) = policy.check(&endpoint.url, conn.client, &facts) {
        crate::log_throttled!(info, endpoint = %endpoint.url, peer = %conn.client, internal_url = %target,
            rule = why.rule(), cause = why.cause().as_str(),
            "http: denied by the agent endpoint's traffic policy");
        endpoint.stats.denied.inc();
        denials.record(denials::Refusal {
            client: conn.client.ip(),
            cause: why.cause().as_str(),
            by: target,
            rule: Some(why.rule()),
            rule_name: why.rule_name(),
        });
        return Err(Box::new(page::error(Code::Denied)));
    }
    let rules = policy.compiled.http();
    if rules.is_empty() {
        return Ok(());
    }
    let mut effects = Effects::default();
    let verdict = rules.on_request(parts, conn, Resume::default(), &mut effects);
    for rule in effects.would_deny {
        crate::log_throttled!(info, peer = %conn.client, internal_url = %target, %rule,
            "http: a restrict-ips with enforce: false of the agent endpoint would have refused the request");
    }
    write_logs(&endpoint.url, &policy.url, conn.client, effects.logs);
    match verdict {
        RequestVerdict::Answer(answer) => {
            if let Some(refusal) = answer.refusal {
                denials.record(denials::Refusal {
                    client: conn.client.ip(),
                    cause: refusal_cause(refusal),
                    by: target,
                    rule: None,
                    rule_name: Some(&answer.rule),
                });
            }
            Err(Box::new(page::policy_answer(answer)))
        }
        RequestVerdict::Close { rule } => {
            endpoint.stats.denied.inc();
            denials.record(denials::Refusal {
                client: conn.client.ip(),
                cause: "close-connection",
                by: target,
                rule: None,
                rule_name: Some(&rule),
            });
            Err(Box::new(closed(rule)))
        }
        // An agent endpoint's policy cannot forward (refused when it is parsed).
        RequestVerdict::Forward { .. } | RequestVerdict::Pass => Ok(()),
    }
}

/// `conn` with the client's country from the edge's database, when `rules` read it and
/// it is not there yet (`slot` holds the looked-up name).
fn with_country<'a>(
    rules: &HttpPhases,
    conn: PolicyConn<'a>,
    slot: &'a mut Option<String>,
) -> PolicyConn<'a> {
    if conn.country.is_some() || !rules.reads_country() {
        return conn;
    }
    *slot = crate::geo::country_code(conn.client.ip());
    let looked_up: &'a Option<String> = slot;
    PolicyConn {
        country: looked_up.as_deref(),
        ..conn
    }
}

fn refusal_cause(refusal: sluice_policy::Refusal) -> &'static str {
    match refusal {
        sluice_policy::Refusal::Restricted => "restrict-ips",
        sluice_policy::Refusal::Denied => "deny",
        sluice_policy::Refusal::RateLimited => "rate-limit",
    }
}

/// The head of a request, for `on_http_response` to read once the request itself went
/// upstream.
fn head_of(parts: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// `on_http_response` on the upstream's response (when the policy has rules for it):
/// its headers changed, or the policy's answer instead of it.
fn on_response(
    rules: &HttpPhases,
    policy_of: &str,
    sent: Option<&hyper::http::request::Parts>,
    conn: PolicyConn<'_>,
    endpoint: &LiveEndpoint,
    response: Response<Body>,
) -> Response<Body> {
    let Some(request) = sent else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let mut effects = Effects::default();
    let mut country = None;
    let conn = with_country(rules, conn, &mut country);
    let verdict = rules.on_response(request, &mut parts, conn, &mut effects);
    write_logs(&endpoint.url, policy_of, conn.client, effects.logs);
    match verdict {
        ResponseVerdict::Send => Response::from_parts(parts, body),
        ResponseVerdict::Answer(answer) => page::policy_answer(answer),
        ResponseVerdict::Close { rule } => {
            endpoint.stats.denied.inc();
            closed(rule)
        }
    }
}

/// The client's request as the upstream gets it: hop-by-hop headers gone, the
/// forwarding headers set, in origin form, with the protocol switch the client asked
/// for (`upgrade`).
fn to_upstream(
    req: Request<Incoming>,
    motion: &Rc<crate::io::idle::Progress>,
    client: &header::HeaderValue,
    proto: &'static str,
    host: &str,
    upgrade: Option<&header::HeaderValue>,
) -> Request<Body> {
    let mut req = req.map(|body| http_body_util::Either::Left(Flowing::counted(body, motion)));
    let headers = req.headers_mut();
    let trailers = headers::accepts_trailers(headers);
    headers::strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, header::HeaderValue::from_static("trailers"));
    }
    headers::add_forwarded(headers, client, proto, host);
    if !headers.contains_key(header::HOST) {
        if let Ok(value) = header::HeaderValue::from_str(host) {
            headers.insert(header::HOST, value);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
    }
    if req.uri().authority().is_some() {
        let origin = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .expect("a path and query is a valid origin-form URI");
        *req.uri_mut() = origin;
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    req
}

/// A copy of `req` to send again should the kept-alive connection it goes on break
/// before any response: only for an idempotent method and a request without a body
/// (which is all there is to copy).
fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    use hyper::body::Body as _;
    if !req.method().is_idempotent() || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(http_body_util::Either::Right(Default::default()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The upstream's response as the client gets it: hop-by-hop headers gone (hyper
/// frames the body for the client's connection), its body cut should none of it move
/// for the endpoint's idle timeout (stall.rs).
fn to_client(
    response: Response<Incoming>,
    motion: Rc<crate::io::idle::Progress>,
    endpoint: &Arc<LiveEndpoint>,
    peer: SocketAddr,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let period = endpoint.idle_timeout;
    let watched = endpoint.clone();
    let body = Flowing::watched(body, motion, period, move || {
        watched.stats.idle_timeouts.inc();
        crate::log_throttled!(info, endpoint = %watched.url, %peer,
            idle_timeout_s = period.map_or(0, |p| p.as_secs()),
            "http: a response cut: none of it moved for the endpoint's idle timeout");
    });
    Response::from_parts(parts, http_body_util::Either::Left(body))
}

/// Sends `req` over the opened stream; the response head once it arrives (its body
/// follows as the client reads it), and for an `upgrade` request the stream's load
/// guard, for the switched protocol to hold.
async fn send(
    carried: Carried,
    req: Request<Body>,
    upgrade: bool,
    keep: Option<Keep>,
    response_timeout: Duration,
) -> Result<(Response<Incoming>, Option<Via>), SendFailure> {
    let Carried { via, channel, .. } = carried;
    match channel {
        DataChannel::Plain(tcp, reader) => {
            let stream = ChunkedSub::new(tcp, reader, || true);
            let park = |tcp| Some(ParkedChannel::plain(tcp));
            exchange(stream, via, req, upgrade, keep, response_timeout, park).await
        }
        DataChannel::Tls(tls, reader) => {
            let stream = ChunkedSub::new(*tls, reader, || true);
            Box::pin(exchange(
                stream,
                via,
                req,
                upgrade,
                keep,
                response_timeout,
                ParkedChannel::tls,
            ))
            .await
        }
    }
}

/// Once the response to the request just sent on `sender` has ended, keeps the
/// connection (`keep`: its URL and data channel socket) for the next request to that
/// URL on the same member (upstreams.rs), or (`None`) lets it go; the stream counts
/// against its member (`via`) until then.
fn keep_alive(mut sender: SendRequest<Body>, via: Via, keep: Option<(Keep, std::os::fd::RawFd)>) {
    monoio::spawn(async move {
        let ready = sender.ready().await;
        let (Ok(()), Some((keep, channel))) = (ready, keep) else {
            return;
        };
        match &via {
            Via::Member(load) => upstreams::put(load.0.id(), &keep.url, sender, channel),
            Via::Peer(load) => {
                if let Some(slot) = keep.client.upgrade() {
                    let mut slot = slot.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(PeerKept {
                            edge: load.edge.clone(),
                            url: keep.url,
                            sender,
                            channel,
                        });
                    }
                }
            }
        }
    });
}

/// [`exchange`] with an HTTP/2 upstream: a connection on the stream (prior knowledge;
/// over `upstream.tls` the agent negotiated `h2`), kept as this worker's connection to
/// the member (`keep`: its URL) for the requests after this one. The stream counts
/// against its member (`via`) while the connection lasts; its data channel is closed,
/// not parked, when the connection ends.
async fn exchange_http2<T>(
    stream: ChunkedSub<T>,
    via: Via,
    req: Request<Body>,
    keep: Option<Keep>,
    response_timeout: Duration,
) -> Result<(Response<Incoming>, Option<Via>), SendFailure>
where
    T: AsyncReadRent + AsyncWriteRent + Readiness + std::os::fd::AsRawFd + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(rt::Exec)
        .timer(rt::Timer)
        .handshake(rt::io(stream))
        .await
        .map_err(SendFailure::Http)?;
    let member = match &via {
        Via::Member(load) => Some(load.0.id()),
        Via::Peer(_) => None,
    };
    monoio::spawn(async move {
        let _counted = via;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "http: an HTTP/2 upstream connection ended");
        }
    });
    let response = answer(
        sender.send_request(for_version(req, true)),
        response_timeout,
    )
    .await?;
    if let (Some(keep), Some(member)) = (keep, member) {
        upstreams::keep_http2(member, &keep.url, sender);
    }
    Ok((response, None))
}

/// The request as the upstream's HTTP version wants it: HTTP/1.1 in origin form, or
/// HTTP/2 with its scheme and authority (from `Host`) and without the headers HTTP/2
/// forbids (RFC 9113 8.2.2).
fn for_version(mut req: Request<Body>, http2: bool) -> Request<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if http2 {
        *req.version_mut() = hyper::Version::HTTP_2;
        let headers = req.headers_mut();
        for name in [
            header::CONNECTION,
            header::UPGRADE,
            header::TRANSFER_ENCODING,
            header::HeaderName::from_static("keep-alive"),
            header::HeaderName::from_static("proxy-connection"),
        ] {
            headers.remove(name);
        }
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        if let Ok(uri) = format!("http://{authority}{path}").parse() {
            *req.uri_mut() = uri;
        }
    } else {
        *req.version_mut() = hyper::Version::HTTP_11;
        if let Ok(uri) = path.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// The `504` for a request whose upstream did not start its response within the
/// endpoint's `response_timeout`, logged (rate limited).
fn no_response_in_time(endpoint: &LiveEndpoint, peer: SocketAddr) -> Response<Body> {
    crate::log_throttled!(info, endpoint = %endpoint.url, %peer,
        timeout_s = endpoint.response_timeout.as_secs(), "http: no response from the upstream in time");
    page::error(Code::UpstreamTimeout)
}

/// Why a request sent upstream got no response.
enum SendFailure {
    /// What the edge does not do (the reason, for the log).
    Unsupported(&'static str),
    /// hyper's error (the stream broke, the answer was not HTTP).
    Http(hyper::Error),
    /// The new multiplexed link's first sub-stream was refused or ended unanswered.
    Multiplexed(Gone),
    /// No response head within the endpoint's `response_timeout`.
    Timeout,
}

/// The response head of a request sent, within `timeout` (the endpoint's
/// `response_timeout`).
async fn answer(
    sent: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
    timeout: Duration,
) -> Result<Response<Incoming>, SendFailure> {
    match monoio::time::timeout(timeout, sent).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(SendFailure::Http(e)),
        Err(_) => Err(SendFailure::Timeout),
    }
}

/// Bytes both ways between the two sides of a switched protocol, until both end or
/// nothing moves either way for `idle` (the endpoint's idle timeout, as for a TCP
/// connection: then both are closed); the stream counted against its member meanwhile.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    via: Via,
    idle: Option<Duration>,
) {
    let _via = via;
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let motion = Rc::new(crate::io::idle::Progress::default());
    let mut client = Counting {
        io: hyper_util::rt::TokioIo::new(client),
        motion: motion.clone(),
    };
    let mut upstream = Counting {
        io: hyper_util::rt::TokioIo::new(upstream),
        motion: motion.clone(),
    };
    let copy = std::pin::pin!(tokio::io::copy_bidirectional(&mut client, &mut upstream));
    match crate::io::idle::until_idle(idle, &motion, copy).await {
        Some(Err(e)) => {
            tracing::debug!(error = %e, "http: upgraded connection ended with an error")
        }
        Some(Ok(_)) => {}
        None => tracing::debug!("http: upgraded connection closed: idle"),
    }
}

/// One side of a switched protocol, its bytes read counted in `motion`.
struct Counting<T> {
    io: T,
    motion: Rc<crate::io::idle::Progress>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.motion.bump(read as u64);
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's client over one stream: the request sent, the response head returned; the
/// connection task runs on until the response body ended, then ends the stream and
/// parks the data channel with its session again (both sides kept it).
async fn exchange<T>(
    stream: ChunkedSub<T>,
    via: Via,
    req: Request<Body>,
    upgrade: bool,
    keep: Option<Keep>,
    response_timeout: Duration,
    park: fn(T) -> Option<ParkedChannel>,
) -> Result<(Response<Incoming>, Option<Via>), SendFailure>
where
    T: AsyncReadRent
        + AsyncWriteRent
        + Readiness
        + std::os::fd::AsRawFd
        + monoio::io::Split
        + Unpin
        + 'static,
{
    // As the open phase announced the stream (edge/open.rs).
    let (http2, link) = match &via {
        Via::Member(load) => match load.0.upstream {
            UpstreamProtocol::Http2 => (true, false),
            UpstreamProtocol::Http1Multiplexed => (false, !upgrade),
            UpstreamProtocol::Http1 => (false, false),
        },
        Via::Peer(_) => (false, false),
    };
    if let (true, Via::Member(load)) = (link, &via) {
        let link = multiplexed::start(stream, &load.0.session);
        if let Some(keep) = &keep {
            upstreams::keep_link(load.0.id(), &keep.url, link.clone());
        }
        let mut sender = multiplexed::connection(&link)
            .await
            .map_err(SendFailure::Multiplexed)?;
        let response = answer(
            sender.send_request(for_version(req, false)),
            response_timeout,
        )
        .await?;
        keep_alive(sender, via, keep.map(|keep| (keep, -1)));
        return Ok((response, None));
    }
    if http2 {
        if upgrade {
            return Err(SendFailure::Unsupported(
                "a protocol switch (websockets) to an HTTP/2 upstream",
            ));
        }
        return exchange_http2(stream, via, req, keep, response_timeout).await;
    }
    let channel_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let req = for_version(req, false);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(rt::io(stream))
        .await
        .map_err(SendFailure::Http)?;
    if upgrade {
        // The connection hands its stream to the switched protocol (tunnel) once the
        // upstream answers 101; the stream is not reused afterwards.
        monoio::spawn(connection.with_upgrades());
        let response = answer(sender.send_request(req), response_timeout).await?;
        return Ok((response, Some(via)));
    }
    // The session to park the data channel with once the connection ended.
    let session = match &via {
        Via::Member(load) => Some(load.0.session.clone()),
        Via::Peer(_) => None,
    };
    monoio::spawn(async move {
        let Ok(parts) = connection.without_shutdown().await else {
            return;
        };
        if !parts.read_buf.is_empty() {
            return;
        }
        let mut stream = rt::unwrap(parts.io);
        if stream.shutdown().await.is_err() {
            return;
        }
        let Some((channel, reader)) = stream.finish(STREAM_END_WAIT).await else {
            return;
        };
        if reader.has_leftover() {
            return;
        }
        if let (Some(session), Some(parked)) = (session, park(channel)) {
            session.park(parked);
        }
    });
    let response = answer(sender.send_request(req), response_timeout).await?;
    keep_alive(sender, via, keep.map(|keep| (keep, channel_fd)));
    Ok((response, None))
}
