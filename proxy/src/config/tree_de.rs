//! A serde `Deserializer` over a [`Node`] tree whose errors carry the key path and the
//! line and column of the node (or key) they are about, so the config structs' own
//! derived rules (unknown keys, types, custom validation such as the policy crate's)
//! report where they failed. Pruned nodes are treated as absent.
//!
//! A quoted scalar asked for as a number or a boolean (`data_channels: "8"`,
//! `pooling_enabled: "true"`) is read exactly as serde-saphyr reads a scalar for that
//! type: its text is handed back to serde-saphyr as a one-scalar document. Files
//! written or templated with every value quoted are common in ngrok-style configs, and
//! the daemons always started with them; [`super::validate`] has the reasoning. Text
//! that is no such number or boolean is refused as before (`invalid type: string`).

use std::fmt;

use serde::de::{
    self, value::BorrowedStrDeserializer, DeserializeSeed, Deserializer, EnumAccess, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

use super::tree::{Loc, Node, Path, Seg, Value};

/// A deserialization error located in the tree.
#[derive(Debug, Clone)]
pub struct DeError {
    /// What serde or the type's own validation said.
    pub message: String,
    /// Path of the failing node (or key), filled in as the error leaves each level.
    pub path: Path,
    /// Location of the innermost node (or key) the error passed through.
    pub loc: Option<Loc>,
    /// The error is about a mapping key itself (e.g. unknown).
    pub at_key: bool,
    /// `missing field` errors: the field's name.
    pub missing: Option<String>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            path: Path::default(),
            loc: None,
            at_key: false,
            missing: None,
        }
    }
    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom(format_args!("missing field `{field}`"));
        e.missing = Some(field.to_string());
        e
    }
}

impl DeError {
    /// Adds the step `seg` above the path so far, and `loc` if none is set yet.
    fn through(mut self, seg: Seg, loc: Loc) -> Self {
        self.path.0.insert(0, seg);
        self.loc.get_or_insert(loc);
        self
    }
}

/// Deserializes `T` from the tree's root, every error located.
pub fn from_node<'a, T: serde::Deserialize<'a>>(node: &'a Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|mut e| {
        e.loc.get_or_insert(node.loc);
        e
    })
}

/// Deserializer for one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(_) | Value::Seq(_) | Value::Map(_) | Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
    }
}

/// `text` read as serde-saphyr reads a scalar for `T` (a number or a boolean): the
/// text, quoted as a JSON string (which YAML reads back verbatim), parsed as a document.
fn scalar_as<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    let quoted = serde_json::to_string(text).ok()?;
    serde_saphyr::from_str(&quoted).ok()
}

/// Typed scalar requests: a string node whose text reads as the type is visited as
/// that type; anything else goes through `deserialize_any` (and its type errors).
macro_rules! quoted_scalars {
    ($($method:ident: $ty:ty => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match &self.0.value {
                Value::Str(s) => match scalar_as::<$ty>(s) {
                    Some(x) => v.$visit(x),
                    None => self.deserialize_any(v),
                },
                _ => self.deserialize_any(v),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    quoted_scalars! {
        deserialize_bool: bool => visit_bool,
        deserialize_i8: i8 => visit_i8,
        deserialize_i16: i16 => visit_i16,
        deserialize_i32: i32 => visit_i32,
        deserialize_i64: i64 => visit_i64,
        deserialize_i128: i128 => visit_i128,
        deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16,
        deserialize_u32: u32 => visit_u32,
        deserialize_u64: u64 => visit_u64,
        deserialize_u128: u128 => visit_u128,
        deserialize_f32: f32 => visit_f32,
        deserialize_f64: f64 => visit_f64,
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(n), _) => v.visit_i64(n),
                (_, Ok(n)) => v.visit_u64(n),
                _ => v.visit_i128(*i),
            },
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_borrowed_str(s),
            Value::Seq(items) => v.visit_seq(Items {
                items: items.iter().enumerate(),
            }),
            Value::Map(entries) => v.visit_map(Entries {
                entries: entries.iter().enumerate(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match scalar_text(&self.0.value) {
            Some(text) => v.visit_string(text),
            None => self.deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.0.value {
            Value::Str(s) => v.visit_enum(BorrowedStrDeserializer::new(s)),
            Value::Map(entries) => {
                let mut live = entries.iter().filter(|e| !e.value.pruned);
                match (live.next(), live.next()) {
                    (Some(entry), None) => v.visit_enum(Variant {
                        key: &entry.key,
                        node: &entry.value,
                    }),
                    _ => Err(de::Error::custom(
                        "expected a variant name or a mapping with a single key",
                    )),
                }
            }
            _ => self.deserialize_any(v),
        }
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

struct Items<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.find(|(_, n)| !n.pruned) else {
            return Ok(None);
        };
        seed.deserialize(NodeDe(node))
            .map(Some)
            .map_err(|e| e.through(Seg::Index(i), node.loc))
    }
}

struct Entries<'a> {
    entries: std::iter::Enumerate<std::slice::Iter<'a, super::tree::Entry>>,
    value: Option<&'a super::tree::Entry>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((_, entry)) = self.entries.find(|(_, e)| !e.value.pruned) else {
            return Ok(None);
        };
        self.value = Some(entry);
        seed.deserialize(BorrowedStrDeserializer::<DeError>::new(&entry.key))
            .map(Some)
            .map_err(|mut e| {
                e.at_key = true;
                e.through(Seg::Key(entry.key.clone()), entry.key_loc)
            })
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value asked before its key"))?;
        seed.deserialize(NodeDe(&entry.value))
            .map_err(|e| e.through(Seg::Key(entry.key.clone()), entry.value.loc))
    }
}

struct Variant<'a> {
    key: &'a str,
    node: &'a Node,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = DeError;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let v = seed.deserialize(BorrowedStrDeserializer::<DeError>::new(self.key))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        serde::Deserialize::deserialize(NodeDe(self.node))
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let (key, loc) = (self.key.to_string(), self.node.loc);
        seed.deserialize(NodeDe(self.node))
            .map_err(|e| e.through(Seg::Key(key), loc))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        let (key, loc) = (self.key.to_string(), self.node.loc);
        NodeDe(self.node)
            .deserialize_any(v)
            .map_err(|e| e.through(Seg::Key(key), loc))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.tuple_variant(0, v)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::config::tree;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Tcp,
    }

    #[test]
    fn deserializes_like_the_yaml_parser() {
        let t =
            tree::parse("name: 5\nitems:\n  - { port: 80, kind: tcp }\n  - port: 81\n").unwrap();
        let o: Outer = from_node(&t).unwrap();
        assert_eq!(o.name, "5");
        assert_eq!(o.items[0].kind, Some(Kind::Tcp));
        assert_eq!(o.items[1].port, 81);
    }

    #[test]
    fn errors_name_path_and_line() {
        let t = tree::parse("name: a\nitems:\n  - port: 80\n  - port: 99999\n").unwrap();
        let e = from_node::<Outer>(&t).unwrap_err();
        assert_eq!(e.path.to_string(), "items[1].port");
        assert_eq!(e.loc.unwrap().line, 4);

        let t = tree::parse("name: a\nitems:\n  - port: 80\n    colour: red\n").unwrap();
        let e = from_node::<Outer>(&t).unwrap_err();
        assert!(e.at_key && e.message.contains("colour"), "{e:?}");
        assert_eq!(e.path.to_string(), "items[0].colour");
        assert_eq!(e.loc.unwrap(), tree::Loc { line: 4, column: 5 });

        let t = tree::parse("items: []\n").unwrap();
        let e = from_node::<Outer>(&t).unwrap_err();
        assert_eq!(e.missing.as_deref(), Some("name"));
        assert!(e.path.0.is_empty());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Scalars {
        count: u16,
        flag: bool,
        maybe: Option<u8>,
        big: i128,
        x: f64,
    }

    #[test]
    fn quoted_numbers_and_booleans_read_as_serde_saphyr_reads_them() {
        let text = "count: \"8\"\nflag: \"true\"\nmaybe: '2'\nbig: \"-3\"\nx: \"1.5\"\n";
        let t = tree::parse(text).unwrap();
        let direct: Scalars = serde_saphyr::from_str(text).unwrap();
        let via_tree: Scalars = from_node(&t).unwrap();
        assert_eq!(via_tree, direct);
        assert_eq!(via_tree.count, 8);
        assert!(via_tree.flag);
        // Whatever serde-saphyr makes of odd spellings, the tree makes the same.
        for (count, flag) in [("0x10", "yes"), ("+7", "off"), ("1_000", "FALSE")] {
            let text = format!("count: \"{count}\"\nflag: \"{flag}\"\nmaybe: ~\nbig: 1\nx: 2\n");
            let direct = serde_saphyr::from_str::<Scalars>(&text).ok();
            let via_tree = from_node::<Scalars>(&tree::parse(&text).unwrap()).ok();
            assert!(direct.is_some(), "{text}");
            assert_eq!(via_tree, direct, "{text}");
        }
        // Unquoted too, and text that only looks like a boolean or number stays text
        // for a string field, keys included.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Mixed {
            on: String,
            flag: bool,
            count: u16,
            name: String,
            id: String,
        }
        let text = "on: yes\nflag: on\ncount: 1_000\nname: n\nid: 0123\n";
        let direct: Mixed = serde_saphyr::from_str(text).unwrap();
        let via_tree: Mixed = from_node(&tree::parse(text).unwrap()).unwrap();
        assert_eq!(via_tree, direct);
        assert_eq!((via_tree.on.as_str(), via_tree.flag), ("yes", true));
        assert_eq!(
            (via_tree.name.as_str(), via_tree.id.as_str()),
            ("n", "0123")
        );
        for bad in [
            "count: \"eight\"",
            "count: \"70000\"",
            "count: \"08\"",
            "count: \"\"",
        ] {
            let text = format!("{bad}\nflag: true\nmaybe: 1\nbig: 1\nx: 2\n");
            let e = from_node::<Scalars>(&tree::parse(&text).unwrap()).unwrap_err();
            assert_eq!(e.path.to_string(), "count", "{bad}: {e}");
            assert!(serde_saphyr::from_str::<Scalars>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn pruned_nodes_are_absent() {
        let mut t = tree::parse("name: a\nitems:\n  - port: x\n  - port: 81\n").unwrap();
        t.get_mut(&tree::Path::parse("items[0]").unwrap().0)
            .unwrap()
            .pruned = true;
        let o: Outer = from_node(&t).unwrap();
        assert_eq!(o.items.len(), 1);
    }
}
