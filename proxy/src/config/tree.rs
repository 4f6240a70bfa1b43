//! A YAML document as a plain tree whose every node and key remembers its line and
//! column, for the validation that must keep going after the first problem (the
//! daemons' loaders and `sluice config check`, [`super::validate`]) and for reading a
//! few keys without knowing the whole schema (`sluice service`).
//! Nodes can be marked pruned: [`super::tree_de`] then deserializes as if they were
//! absent, while their original positions (list indices, locations) stay put.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Line and column (1-based; 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loc {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

/// One node of the document.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the node starts.
    pub loc: Loc,
    /// Its value.
    pub value: Value,
    /// Set by checks that found the node broken: deserializers skip it.
    pub pruned: bool,
}

/// A node's value, YAML's core schema.
#[derive(Debug, Clone)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key as text.
    pub key: String,
    /// Where the key is.
    pub key_loc: Loc,
    /// The value (its `pruned` flag removes the whole entry).
    pub value: Node,
}

/// One step of a key path: a mapping key or a list index (in the original document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key.
    Key(String),
    /// A list position.
    Index(usize),
}

/// A key path such as `endpoints[1].traffic_policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Seg>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Path {
    /// Parses `a.b[2].c` (the prefix of the loaders' messages); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Path> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok {
                return None;
            }
            segs.push(Seg::Key(key.to_string()));
            while !rest.is_empty() {
                let (n, after) = rest.split_once(']')?;
                segs.push(Seg::Index(n.parse().ok()?));
                rest = after.strip_prefix('[').unwrap_or(after);
                if !after.is_empty() && !after.starts_with('[') {
                    return None;
                }
            }
        }
        Some(Path(segs))
    }
}

/// Parses a YAML document into a tree, with the parser's own error (line and column in
/// its text) when the text is not YAML.
///
/// The tree is typeless, so plain scalars are classified without knowing the field
/// they are for. Spellings that serde-saphyr would read as text for a string field but
/// that a typeless read would turn into something else stay text here: YAML 1.1
/// booleans (`yes`, `on`, `n`, ... as values and as keys), numbers with a leading zero
/// (`0123`) or underscores (`1_000`). A boolean or number field still reads them as
/// serde-saphyr does ([`super::tree_de`]).
pub fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    };
    serde_saphyr::from_str_with_options(text, options)
}

impl Node {
    /// The node at `path`, pruned or not.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        path.0.iter().try_fold(self, |node, seg| node.child(seg))
    }

    /// The node at `path`, for pruning.
    pub fn get_mut(&mut self, path: &[Seg]) -> Option<&mut Node> {
        let mut node = self;
        for seg in path {
            node = match (&mut node.value, seg) {
                (Value::Map(entries), Seg::Key(k)) => {
                    &mut entries.iter_mut().find(|e| &e.key == k)?.value
                }
                (Value::Seq(items), Seg::Index(i)) => items.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// A direct child.
    pub fn child(&self, seg: &Seg) -> Option<&Node> {
        match (&self.value, seg) {
            (Value::Map(entries), Seg::Key(k)) => {
                entries.iter().find(|e| &e.key == k).map(|e| &e.value)
            }
            (Value::Seq(items), Seg::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    /// The value under `key` of a mapping, unless pruned.
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.child(&Seg::Key(key.to_string())).filter(|n| !n.pruned)
    }

    /// The list items that are not pruned, with their original index.
    pub fn items(&self) -> impl Iterator<Item = (usize, &Node)> {
        let items = match &self.value {
            Value::Seq(items) => items.as_slice(),
            _ => &[],
        };
        items.iter().enumerate().filter(|(_, n)| !n.pruned)
    }

    /// Every list item, pruned or not, with its index.
    pub fn all_items(&self) -> impl Iterator<Item = (usize, &Node)> {
        let items = match &self.value {
            Value::Seq(items) => items.as_slice(),
            _ => &[],
        };
        items.iter().enumerate()
    }

    /// The scalar text under `key` of a mapping, unless that value is pruned.
    pub fn text(&self, key: &str) -> Option<String> {
        self.key(key).and_then(Node::as_text)
    }

    /// A string value (numbers and booleans as written in the core schema).
    pub fn as_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Calls `f` with the path and node of every mapping entry, depth first.
    pub fn walk(&self, f: &mut impl FnMut(&Path, &str, &Node)) {
        fn go(node: &Node, path: &mut Vec<Seg>, f: &mut impl FnMut(&Path, &str, &Node)) {
            match &node.value {
                Value::Map(entries) => {
                    for e in entries {
                        path.push(Seg::Key(e.key.clone()));
                        f(&Path(path.clone()), &e.key, &e.value);
                        go(&e.value, path, f);
                        path.pop();
                    }
                }
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        go(item, path, f);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        go(self, &mut Vec::new(), f)
    }
}

// ---- building the tree from YAML --------------------------------------------------

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            loc: Loc {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
            },
            value: spanned.value,
            pruned: false,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: key.as_text().unwrap_or_else(|| "<complex key>".to_string()),
                key_loc: key.loc,
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_keys_know_their_lines() {
        let tree = parse("a: 1\nb:\n  - x\n  - { c: true }\n").unwrap();
        let Value::Map(entries) = &tree.value else {
            panic!("map")
        };
        assert_eq!(entries[1].key, "b");
        assert_eq!(entries[1].key_loc.line, 2);
        let c = tree.get(&Path::parse("b[1].c").unwrap()).unwrap();
        assert!(matches!(c.value, Value::Bool(true)));
        assert_eq!(c.loc.line, 4);
    }

    #[test]
    fn paths_parse_and_print() {
        for p in [
            "agents.tls.cert",
            "endpoints[3].url",
            "a[0][1].b",
            "version",
        ] {
            assert_eq!(Path::parse(p).unwrap().to_string(), p);
        }
        for bad in ["", "a b", "x[y]", "a..b", "a[1]b"] {
            assert!(Path::parse(bad).is_none(), "{bad}");
        }
    }
}
