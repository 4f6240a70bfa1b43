//! What an `on_tcp_connect` rule's expression tests, recognised from its syntax tree
//! so the common shapes cost no CEL at all: a test of the client address against
//! CIDRs or addresses (`inCidrRange(conn.client_ip, '10.0.0.0/8')`,
//! `inCidrRanges(conn.client_ip, [...])`, `conn.client_ip == '192.0.2.7'`,
//! `conn.client_ip in [...]`, their `!`, `!=` and `||`) becomes a CIDR set folded
//! into the policy's lookup table; a test of the client's country
//! (`conn.geo.country_code == 'NL'`, `in [...]`, `!=`, `!`) becomes one database
//! lookup and a comparison. Anything else is evaluated by CEL per connection.

use cel::common::ast::{operators, CallExpr, Expr, LiteralValue};

use crate::{expr::Expression, Cidr};

/// What one expression tests.
#[derive(Debug, PartialEq)]
pub(crate) enum Guard {
    /// The client address is in (`negate`: is not in) these CIDRs.
    Client { cidrs: Vec<Cidr>, negate: bool },
    /// The client's country code is one of (`negate`: none of) these.
    Country { codes: Vec<String>, negate: bool },
    /// Anything else: CEL per connection.
    Cel,
}

/// What `expr` tests. A recognised shape with a CIDR or address that does not parse
/// is an error (CEL would only find it false, connection after connection).
pub(crate) fn classify(expr: &Expression) -> Result<Guard, String> {
    let mut shape = shape(&expr.tree().expr)?;
    if let Some(Guard::Client { cidrs, .. }) = &mut shape {
        cidrs.sort();
        cidrs.dedup();
    }
    Ok(shape.unwrap_or(Guard::Cel))
}

/// `None`: not a recognised shape.
fn shape(expr: &Expr) -> Result<Option<Guard>, String> {
    let Expr::Call(call) = expr else {
        return Ok(None);
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        (operators::LOGICAL_NOT, [inner]) => Ok(shape(&inner.expr)?.map(negated)),
        (operators::LOGICAL_OR, [a, b]) => Ok(match (shape(&a.expr)?, shape(&b.expr)?) {
            (
                Some(Guard::Client {
                    cidrs: mut x,
                    negate: false,
                }),
                Some(Guard::Client {
                    cidrs: y,
                    negate: false,
                }),
            ) => {
                x.extend(y);
                Some(Guard::Client {
                    cidrs: x,
                    negate: false,
                })
            }
            (
                Some(Guard::Country {
                    codes: mut x,
                    negate: false,
                }),
                Some(Guard::Country {
                    codes: y,
                    negate: false,
                }),
            ) => {
                x.extend(y);
                Some(Guard::Country {
                    codes: x,
                    negate: false,
                })
            }
            _ => None,
        }),
        ("inCidrRange", [ip, cidr]) if is_client_ip(&ip.expr) && call.target.is_none() => {
            let Some(text) = string(&cidr.expr) else {
                return Ok(None);
            };
            Ok(Some(client(vec![cidr_of(text)?])))
        }
        ("inCidrRanges", [ip, list]) if is_client_ip(&ip.expr) && call.target.is_none() => {
            let Some(texts) = strings(&list.expr) else {
                return Ok(None);
            };
            Ok(Some(client(
                texts.into_iter().map(cidr_of).collect::<Result<_, _>>()?,
            )))
        }
        (operators::EQUALS | operators::NOT_EQUALS, [a, b]) => {
            let negate = call.func_name == operators::NOT_EQUALS;
            let (field, value) = match (string(&a.expr), string(&b.expr)) {
                (None, Some(v)) => (&a.expr, v),
                (Some(v), None) => (&b.expr, v),
                _ => return Ok(None),
            };
            compared(field, vec![value], negate)
        }
        (operators::IN, [field, list]) => match strings(&list.expr) {
            Some(values) => compared(&field.expr, values, false),
            None => Ok(None),
        },
        _ => Ok(None),
    }
    .map(|g: Option<Guard>| g.filter(|_| plain_call(call)))
}

/// A call without a receiver (`x.f(...)` is not one of the shapes).
fn plain_call(call: &CallExpr) -> bool {
    call.target.is_none()
}

/// `field == value` or `field in values`, for the two fields with a shape.
fn compared(field: &Expr, values: Vec<&str>, negate: bool) -> Result<Option<Guard>, String> {
    if is_client_ip(field) {
        let cidrs = values
            .into_iter()
            .map(|v| {
                v.parse::<std::net::IpAddr>()
                    .map(|ip| Cidr::new(ip.into()))
                    .map_err(|_| format!("`{v}` is not an IP address"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Some(Guard::Client { cidrs, negate }));
    }
    if path(field) == Some(vec!["conn", "geo", "country_code"]) {
        let codes = values.into_iter().map(str::to_owned).collect();
        return Ok(Some(Guard::Country { codes, negate }));
    }
    Ok(None)
}

fn client(cidrs: Vec<Cidr>) -> Guard {
    Guard::Client {
        cidrs,
        negate: false,
    }
}

fn negated(g: Guard) -> Guard {
    match g {
        Guard::Client { cidrs, negate } => Guard::Client {
            cidrs,
            negate: !negate,
        },
        Guard::Country { codes, negate } => Guard::Country {
            codes,
            negate: !negate,
        },
        Guard::Cel => Guard::Cel,
    }
}

fn cidr_of(text: &str) -> Result<Cidr, String> {
    Cidr::parse(text).map_err(|e| e.to_string())
}

fn is_client_ip(expr: &Expr) -> bool {
    path(expr) == Some(vec!["conn", "client_ip"])
}

/// `a.b.c` as `["a", "b", "c"]`.
fn path(expr: &Expr) -> Option<Vec<&str>> {
    match expr {
        Expr::Ident(name) => Some(vec![name.as_str()]),
        Expr::Select(s) if !s.test => {
            let mut p = path(&s.operand.expr)?;
            p.push(s.field.as_str());
            Some(p)
        }
        _ => None,
    }
}

fn string(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn strings(expr: &Expr) -> Option<Vec<&str>> {
    match expr {
        Expr::List(list) => list.elements.iter().map(|e| string(&e.expr)).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(source: &str) -> Result<Guard, String> {
        classify(&Expression::parse(source).unwrap())
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        let mut v: Vec<Cidr> = list.iter().map(|c| c.parse().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn client_address_shapes_become_cidr_sets() {
        for (source, list, negate) in [
            (
                "inCidrRange(conn.client_ip, '10.0.0.0/8')",
                &["10.0.0.0/8"][..],
                false,
            ),
            (
                "!inCidrRange(conn.client_ip, '10.0.0.0/8')",
                &["10.0.0.0/8"],
                true,
            ),
            (
                "inCidrRanges(conn.client_ip, ['10.0.0.0/8', '2001:db8::/32'])",
                &["10.0.0.0/8", "2001:db8::/32"],
                false,
            ),
            ("conn.client_ip == '192.0.2.7'", &["192.0.2.7/32"], false),
            ("'192.0.2.7' == conn.client_ip", &["192.0.2.7/32"], false),
            ("conn.client_ip != '192.0.2.7'", &["192.0.2.7/32"], true),
            (
                "conn.client_ip in ['192.0.2.7', '::1']",
                &["192.0.2.7/32", "::1/128"],
                false,
            ),
            (
                "!(conn.client_ip in ['192.0.2.7'] || inCidrRange(conn.client_ip, '10.0.0.0/8'))",
                &["192.0.2.7/32", "10.0.0.0/8"],
                true,
            ),
        ] {
            assert_eq!(
                of(source).unwrap(),
                Guard::Client {
                    cidrs: cidrs(list),
                    negate
                },
                "{source}"
            );
        }
    }

    #[test]
    fn country_shapes_become_a_code_list() {
        assert_eq!(
            of("conn.geo.country_code in ['NL', 'BE']").unwrap(),
            Guard::Country {
                codes: vec!["NL".into(), "BE".into()],
                negate: false
            }
        );
        assert_eq!(
            of("conn.geo.country_code != 'US'").unwrap(),
            Guard::Country {
                codes: vec!["US".into()],
                negate: true
            }
        );
    }

    #[test]
    fn everything_else_is_cel() {
        for source in [
            "conn.client_port > 1024",
            "conn.tls.sni == 'db.example.com'",
            "conn.client_ip.startsWith('10.')",
            "inCidrRange(conn.server_ip, '10.0.0.0/8')",
            "conn.client_ip == conn.server_ip",
            "conn.client_ip in ['10.0.0.1'] || conn.client_port == 1",
            "inCidrRange(conn.client_ip, '10.0.0.0/8') && conn.client_port == 1",
            "vars.office",
        ] {
            assert_eq!(of(source).unwrap(), Guard::Cel, "{source}");
        }
    }

    #[test]
    fn a_shape_with_a_bad_address_is_refused() {
        assert!(of("inCidrRange(conn.client_ip, '10.0.0.0/33')")
            .unwrap_err()
            .contains("10.0.0.0/33"));
        assert!(of("conn.client_ip == 'db.internal'")
            .unwrap_err()
            .contains("not an IP address"));
    }
}
