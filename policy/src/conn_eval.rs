//! `on_tcp_connect` per connection, for the verdicts the lookup table left pending
//! (a rule whose expressions need more than the client address, or `set-vars`): the
//! program runs on from there with the connection's facts ([`ConnInfo`], asked only
//! for what an expression reads), and [`log_events`] renders the metadata of the `log`
//! actions a connection reached.

use std::net::{IpAddr, SocketAddr};

use crate::{
    expr::Expression,
    model::{SetVars, VarValue},
    program::{run, Facts, Start, Step},
    scope::{ConnFacts, Scope, Var},
    verdict::{CidrSet, Verdict, Verdicts},
};

/// What an expression may read of a connection beyond its client address: the edge
/// gives what it knows, asked only when an expression of the policy reads it.
pub trait ConnInfo {
    /// The edge's address the client connected to (`conn.server_ip`, `server_port`).
    fn server(&self) -> Option<SocketAddr> {
        None
    }
    /// The SNI of the client's ClientHello (`conn.tls.sni`, `tls://` endpoints).
    fn sni(&self) -> Option<String> {
        None
    }
    /// The country of an address, ISO 3166 alpha-2 (`conn.geo.country_code`), from the
    /// operator's database.
    fn country_code(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// A connection about which nothing more is known.
pub struct NoConnInfo;

impl ConnInfo for NoConnInfo {}

/// The program of `on_tcp_connect`, kept for the verdicts that pend.
#[derive(Default)]
pub(crate) struct Program {
    pub(crate) steps: Box<[Step]>,
    pub(crate) cel: Box<[Expression]>,
    pub(crate) set_vars: Box<[SetVars]>,
    /// Whether some CEL expression or template reads `conn.tls.sni`, `conn.geo`,
    /// `conn.server_*`.
    pub(crate) reads_sni: bool,
    pub(crate) reads_geo: bool,
    pub(crate) reads_server: bool,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("steps", &self.steps.len())
            .field("cel", &self.cel)
            .finish()
    }
}

impl Program {
    /// Records which facts `source` (an expression or a template) reads.
    pub(crate) fn note_reads(&mut self, source: &str) {
        self.reads_sni |= source.contains("sni");
        self.reads_geo |= source.contains("geo");
        self.reads_server |= source.contains("server_");
    }
}

/// A run per connection.
struct Live<'a> {
    sets: &'a [CidrSet],
    program: &'a Program,
    info: &'a dyn ConnInfo,
    client: SocketAddr,
    country: Option<Option<String>>,
    facts: Option<ConnFacts>,
    scope: Option<Scope>,
}

impl Live<'_> {
    fn country(&mut self) -> Option<&str> {
        let (info, ip) = (self.info, self.client.ip());
        self.country
            .get_or_insert_with(|| info.country_code(ip))
            .as_deref()
    }

    fn facts(&mut self) -> &mut ConnFacts {
        if self.facts.is_none() {
            let p = self.program;
            let facts = ConnFacts {
                client: Some(self.client),
                server: if p.reads_server {
                    self.info.server()
                } else {
                    None
                },
                sni: if p.reads_sni { self.info.sni() } else { None },
                country: if p.reads_geo {
                    self.country().map(str::to_owned)
                } else {
                    None
                },
                vars: Vec::new(),
            };
            self.facts = Some(facts);
        }
        self.facts.as_mut().expect("just set")
    }

    fn scope(&mut self) -> &Scope {
        if self.scope.is_none() {
            let scope = Scope::connection(self.facts());
            self.scope = Some(scope);
        }
        self.scope.as_ref().expect("just set")
    }
}

impl Facts for Live<'_> {
    fn has(&self, set: u32) -> bool {
        let set = &self.sets[set as usize];
        match self.client.ip() {
            IpAddr::V4(a) => set.v4.most_specific(u32::from(a)).is_some(),
            IpAddr::V6(a) => set.v6.most_specific(u128::from(a)).is_some(),
        }
    }

    fn country_in(&mut self, codes: &[String]) -> Option<bool> {
        Some(
            self.country()
                .is_some_and(|c| codes.iter().any(|code| code.eq_ignore_ascii_case(c))),
        )
    }

    fn cel(&mut self, id: u32) -> Option<bool> {
        let program = self.program;
        Some(program.cel[id as usize].holds(self.scope()))
    }

    fn set_vars(&mut self, id: u32) -> Option<()> {
        let program = self.program;
        let mut values = Vec::new();
        for (name, value) in &program.set_vars[id as usize].vars {
            let v = match value {
                VarValue::Bool(b) => Var::Bool(*b),
                VarValue::Int(i) => Var::Int(*i),
                VarValue::Text(t) if t.is_constant() => Var::Text(t.as_str().to_owned()),
                VarValue::Text(t) => {
                    let scope = self.scope();
                    Var::Text(t.render(|| scope))
                }
            };
            values.push((name.clone(), v));
        }
        let facts = self.facts();
        for (name, v) in values {
            match facts.vars.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = v,
                None => facts.vars.push((name, v)),
            }
        }
        self.scope = None;
        Some(())
    }
}

/// One `log` action a connection reached.
#[derive(Debug, PartialEq, Eq)]
pub struct LogEvent<'a> {
    /// The rule (0-based) and its name.
    pub rule: usize,
    /// The rule's `name`.
    pub rule_name: Option<&'a str>,
    /// The metadata, `${...}` filled in.
    pub metadata: Vec<(&'a str, String)>,
}

/// Runs pending verdict `v` on with the connection's facts; `client` is the address
/// as checked (IPv4-mapped IPv6 as IPv4).
pub(crate) fn resume(
    program: &Program,
    sets: &[CidrSet],
    v: &Verdict,
    client: SocketAddr,
    info: &dyn ConnInfo,
) -> Verdict {
    let Some(start) = Start::resume(v) else {
        return *v;
    };
    let mut live = Live {
        sets,
        program,
        info,
        client,
        country: None,
        facts: None,
        scope: None,
    };
    run(&program.steps, start, &mut live)
}

/// The `log` actions whose bits `logs` has, their metadata rendered (`${conn.client_ip}`,
/// …; `vars.*` are not kept for logs).
pub(crate) fn log_events<'v>(
    verdicts: &'v Verdicts,
    logs: u64,
    client: SocketAddr,
    info: &dyn ConnInfo,
) -> Vec<LogEvent<'v>> {
    let mut scope: Option<Scope> = None;
    let mut out = Vec::new();
    for (bit, log) in verdicts.logs.iter().enumerate() {
        if logs & (1 << bit) == 0 {
            continue;
        }
        let metadata = log
            .config
            .metadata
            .iter()
            .map(|(k, t)| {
                let text = t.render(|| {
                    scope.get_or_insert_with(|| {
                        Scope::connection(&ConnFacts {
                            client: Some(client),
                            server: info.server(),
                            sni: info.sni(),
                            country: info.country_code(client.ip()),
                            vars: Vec::new(),
                        })
                    })
                });
                (k.as_str(), text)
            })
            .collect();
        out.push(LogEvent {
            rule: log.rule as usize,
            rule_name: verdicts
                .rule_names
                .get(log.rule as usize)
                .and_then(|n| n.as_deref()),
            metadata,
        });
    }
    out
}
