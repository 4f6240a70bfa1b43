//! The configs of `log` and `set-vars`, which every phase's rules take: [`Log`],
//! [`SetVars`] and [`VarValue`], and how they are read (`vars:` as ngrok writes it, a
//! list of one-entry maps, or one map; names checked).

use std::collections::BTreeMap;

use serde::{
    de::{self, Deserializer},
    Deserialize, Serialize,
};

use crate::expr::Template;

/// Config of a `log` action: `metadata` keys and values (`${...}` filled in from the
/// connection).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Log {
    /// Logged with the event, in key order.
    pub metadata: BTreeMap<String, Template>,
}

/// Config of a `set-vars` action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetVars {
    /// Each variable and its value.
    pub vars: BTreeMap<String, VarValue>,
}

/// The value of a variable set by `set-vars`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VarValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Text, with `${...}` filled in from the connection.
    Text(Template),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    metadata: BTreeMap<String, Template>,
}

impl<'de> Deserialize<'de> for Log {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Log {
            metadata: RawLog::deserialize(d)?.metadata,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetVars {
    vars: Vars,
}

impl<'de> Deserialize<'de> for SetVars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SetVars {
            vars: RawSetVars::deserialize(d)?.vars.0,
        })
    }
}

/// `vars:` as ngrok writes it (a list of one-entry maps) or as one map.
pub(crate) struct Vars(pub(crate) BTreeMap<String, VarValue>);

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            List(Vec<BTreeMap<String, VarValue>>),
            Map(BTreeMap<String, VarValue>),
        }
        let vars = match Shape::deserialize(d)? {
            Shape::Map(m) => m,
            Shape::List(list) => list.into_iter().flatten().collect(),
        };
        if vars.is_empty() {
            return Err(de::Error::custom(
                "`vars` sets nothing: name at least one variable",
            ));
        }
        if let Some(bad) = vars.keys().find(|k| !is_identifier(k)) {
            return Err(de::Error::custom(format!(
                "`{bad}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        Ok(Vars(vars))
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'de> Deserialize<'de> for VarValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Bool(bool),
            Int(i64),
            Text(String),
        }
        Ok(match Scalar::deserialize(d)? {
            Scalar::Bool(b) => VarValue::Bool(b),
            Scalar::Int(i) => VarValue::Int(i),
            Scalar::Text(t) => VarValue::Text(Template::parse(&t).map_err(de::Error::custom)?),
        })
    }
}
