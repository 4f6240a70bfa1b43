//! CEL in HTTP rules, as ngrok's Traffic Policy writes it: a rule's `expressions`
//! ([`Expression`], all must be true for its actions to run) and `${...}` in header
//! values and response bodies ([`Template`]), evaluated by cel-rust's interpreter over
//! the variables of one request or connection, built lazily ([`Scope`], scope.rs):
//! `req.method`, `req.url.path`, `req.headers`, `conn.client_ip`, `res.status_code`, …
//! (the full list is in docs/policy.md), plus ngrok's `inCidrRange(ip, cidr)` and
//! `inCidrRanges(ip, [cidr, …])`.
//!
//! Expressions compile when the policy is parsed (a syntax error names the expression);
//! an expression whose evaluation fails (a missing header indexed, a type mismatch)
//! counts as false, as a rule that does not apply.

use std::{fmt, sync::Arc};

use cel::{Program, Value};
use serde::{Serialize, Serializer};

use crate::scope::Scope;

/// One CEL expression, compiled.
#[derive(Clone)]
pub struct Expression {
    source: String,
    program: Arc<Program>,
}

impl Expression {
    /// Compiles `source`; the error is the parser's, with a caret under the problem.
    pub fn parse(source: &str) -> Result<Expression, String> {
        let program =
            Program::compile(source).map_err(|e| format!("invalid expression `{source}`: {e}"))?;
        Ok(Expression {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Its syntax tree (macros expanded).
    pub(crate) fn tree(&self) -> &cel::IdedExpr {
        self.program.expression()
    }

    /// Whether it holds in `scope` (an error or a value that is not a bool: no).
    pub fn holds(&self, scope: &Scope) -> bool {
        matches!(scope.run(&self.program), Ok(Value::Bool(true)))
    }

    /// Its value in `scope` as text (a list's items joined by `,`); `None` when it fails.
    pub fn text(&self, scope: &Scope) -> Option<String> {
        scope.run(&self.program).ok().map(|v| display(&v))
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Expression {}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Text with `${expression}` parts, filled in per request (`X-Client: ${conn.client_ip}`).
#[derive(Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone)]
enum Part {
    Text(String),
    Expr(Expression),
}

impl Template {
    /// Splits `source` into text and `${...}` expressions (each compiled).
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let inner = &rest[start + 2..];
            let end = closing_brace(inner)
                .ok_or_else(|| format!("`{source}`: `${{` without its closing `}}`"))?;
            parts.push(Part::Expr(Expression::parse(inner[..end].trim())?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it has any `${...}` (else it is the same text for every request).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text in the scope `scope` gives (asked for only when the template has
    /// expressions); an expression that fails gives the empty string.
    pub fn render<'s>(&self, scope: impl FnOnce() -> &'s Scope) -> String {
        if let [Part::Text(t)] = self.parts.as_slice() {
            return t.clone();
        }
        if self.parts.is_empty() {
            return String::new();
        }
        let scope = scope();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&e.text(scope).unwrap_or_default()),
            }
        }
        out
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// The index of the `}` closing an expression that starts at `text[0]` (braces of map
/// literals and quoted strings skipped).
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A value as text: strings as they are, lists joined by `,`.
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::List(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Facts;

    fn facts_for(req: &http::request::Parts) -> Facts<'_> {
        Facts {
            client: "203.0.113.7:40000".parse().unwrap(),
            server: "127.0.0.1:8080".parse().unwrap(),
            scheme: "https",
            request: req,
            response: None,
            country: None,
            vars: &[],
        }
    }

    fn request() -> http::request::Parts {
        http::Request::builder()
            .method("POST")
            .uri("/api/v2/orders?limit=5&tag=a&tag=b")
            .header("host", "api.example.com")
            .header("x-team", "billing")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn expressions_read_the_request_and_the_connection() {
        let req = request();
        let scope = Scope::new(&facts_for(&req));
        for (source, expected) in [
            ("req.method == 'POST'", true),
            ("req.url.path.startsWith('/api/')", true),
            ("req.url.path.matches('^/api/v[0-9]+/')", true),
            ("req.url.query == 'limit=5&tag=a&tag=b'", true),
            ("req.query_params['tag'] == ['a', 'b']", true),
            ("req.host == 'api.example.com'", true),
            (
                "req.url.raw == 'https://api.example.com/api/v2/orders?limit=5&tag=a&tag=b'",
                true,
            ),
            (
                "'x-team' in req.headers && req.headers['x-team'][0] == 'billing'",
                true,
            ),
            ("'x-other' in req.headers", false),
            ("req.headers['x-other'][0] == 'x'", false),
            (
                "conn.client_ip == '203.0.113.7' && conn.client_port == 40000",
                true,
            ),
            ("inCidrRange(conn.client_ip, '203.0.113.0/24')", true),
            (
                "inCidrRanges(conn.client_ip, ['10.0.0.0/8', '192.168.0.0/16'])",
                false,
            ),
            ("inCidrRange(conn.client_ip, 'not a cidr')", false),
            ("req.method", false),
        ] {
            let e = Expression::parse(source).unwrap();
            assert_eq!(e.holds(&scope), expected, "{source}");
        }
    }

    #[test]
    fn templates_fill_in_expressions_and_keep_the_text() {
        let req = request();
        let scope = Scope::new(&facts_for(&req));
        let t = Template::parse(
            "client=${conn.client_ip} path=${req.url.path}; tags=${req.query_params['tag']}",
        )
        .unwrap();
        assert_eq!(
            t.render(|| &scope),
            "client=203.0.113.7 path=/api/v2/orders; tags=a,b"
        );
        assert!(!t.is_constant());
        let m = Template::parse("${ {'a': 'x'}['a'] }!").unwrap();
        assert_eq!(m.render(|| &scope), "x!");
        let plain = Template::parse("just text").unwrap();
        assert!(plain.is_constant());
        assert_eq!(plain.render(|| unreachable!("no expression")), "just text");
    }

    #[test]
    fn a_broken_expression_is_refused_with_where_it_broke() {
        let e = Expression::parse("req.method ==").unwrap_err();
        assert!(e.contains("req.method =="), "{e}");
        let t = Template::parse("x ${conn.client_ip").unwrap_err();
        assert!(t.contains("closing"), "{t}");
    }

    #[test]
    fn the_response_is_there_in_the_response_phase() {
        let req = request();
        let res = http::Response::builder()
            .status(503)
            .header("retry-after", "3")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let scope = Scope::new(&Facts {
            response: Some(&res),
            ..facts_for(&req)
        });
        let e = Expression::parse("res.status_code >= 500 && res.headers['retry-after'][0] == '3'")
            .unwrap();
        assert!(e.holds(&scope));
    }
}
