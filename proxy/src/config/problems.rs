//! Every problem of a config file, not just the first: a [`Problem`] list, and
//! [`collect`], which deserializes a type from a [`Node`] tree again and again, each time
//! recording the error serde reports and pruning the node it is about, until the rest
//! deserializes. Unknown keys, wrong types and the types' own validation (e.g. the policy
//! crate's) thus all come from the config structs themselves: nothing here knows the
//! schema, so keys added to the structs are covered as they are added.

use std::{collections::HashSet, fmt, path::PathBuf};

use super::{
    tree::{Loc, Node, Path, Seg},
    tree_de::{from_node, DeError},
};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// Line and column, where known.
    pub loc: Option<Loc>,
    /// Key path (`endpoints[1].url`); empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem of the whole file (it cannot be read, is not YAML, …).
    pub fn whole(file: &std::path::Path, message: impl ToString) -> Self {
        Self {
            file: file.to_path_buf(),
            loc: None,
            path: String::new(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.loc.filter(|l| l.line > 0) {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects problems of one file, locating key paths in its tree.
pub struct Problems<'t> {
    file: PathBuf,
    tree: &'t Node,
    /// What was found, in order.
    pub list: Vec<Problem>,
}

impl<'t> Problems<'t> {
    /// An empty list for `file`, whose parsed text is `tree`.
    pub fn new(file: PathBuf, tree: &'t Node) -> Self {
        Self {
            file,
            tree,
            list: Vec::new(),
        }
    }

    /// Records a problem at `path` (e.g. `agents.tls.cert`), located through the tree.
    pub fn at(&mut self, path: &str, message: impl ToString) {
        let loc = Path::parse(path)
            .and_then(|p| self.tree.get(&p))
            .map(|n| n.loc);
        self.push(Problem {
            file: self.file.clone(),
            loc,
            path: path.to_string(),
            message: message.to_string(),
        });
    }

    /// Nothing found so far.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Records problems found elsewhere (serde's, from [`collect`]).
    pub fn extend(&mut self, found: impl IntoIterator<Item = Problem>) {
        for p in found {
            self.push(p);
        }
    }

    /// The list in file order; problems without a line (the whole file) last.
    pub fn into_sorted(mut self) -> Vec<Problem> {
        self.list
            .sort_by_key(|p| p.loc.filter(|l| l.line > 0).map_or(u64::MAX, |l| l.line));
        self.list
    }

    fn push(&mut self, p: Problem) {
        if !self.list.contains(&p) {
            self.list.push(p);
        }
    }
}

/// Most problems reported for one file before giving up on it.
const MAX_ROUNDS: usize = 200;

/// Deserializes `T` from `tree`, recording every error in `out` and pruning what failed
/// until the rest deserializes; `None` when the root itself is unusable (then the
/// sections that did deserialize can still be checked one by one).
pub fn collect<T: serde::de::DeserializeOwned>(
    tree: &mut Node,
    file: &std::path::Path,
    out: &mut Vec<Problem>,
) -> Option<T> {
    // (parent path, key) pairs removed here: a later `missing field` for them is a
    // consequence, not news.
    let mut removed: HashSet<(String, String)> = HashSet::new();
    // Values pruned as invalid: an error about a node that contained one (e.g. an
    // `allow` list left empty by a dropped CIDR) is a consequence too.
    let mut pruned_values: Vec<Path> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let e: DeError = match from_node::<T>(tree) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        let parent = Path(e.path.0[..e.path.0.len().saturating_sub(1)].to_vec());
        let consequence = match &e.missing {
            Some(f) => removed.contains(&(e.path.to_string(), f.clone())),
            None => pruned_values.iter().any(|p| p.0.starts_with(&e.path.0)),
        };
        if !consequence {
            let p = Problem {
                file: file.to_path_buf(),
                loc: e.loc,
                path: e.path.to_string(),
                message: with_suggestion(&e.message),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if let Some(Seg::Key(k)) = e.path.0.last() {
            removed.insert((parent.to_string(), k.clone()));
        }
        if !e.at_key {
            pruned_values.push(e.path.clone());
        }
        match tree.get_mut(&e.path.0) {
            Some(node) if !e.path.0.is_empty() && !node.pruned => node.pruned = true,
            _ => return None,
        }
    }
    None
}

/// serde's "unknown field `X`, expected ..." with the closest expected key suggested
/// (a misspelling: at most a third of the key's letters off, and at most 3); any other
/// message as it is.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (edit_distance(unknown, known), known))
        .filter(|(d, _)| *d > 0 && *d <= (unknown.chars().count() / 3).clamp(1, 3))
        .min();
    match closest {
        Some((_, known)) => format!("{message}; did you mean `{known}`?"),
        None => message.to_owned(),
    }
}

/// Levenshtein distance between two keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::config::tree;

    #[test]
    fn a_misspelt_key_gets_the_closest_known_one() {
        let m =
            "unknown field `conect_url`, expected one of `authtoken`, `connect_url`, `connect_cas`";
        assert_eq!(
            with_suggestion(m),
            format!("{m}; did you mean `connect_url`?")
        );
        let m = "unknown field `colour`, expected `color` or `size`";
        assert!(with_suggestion(m).ends_with("did you mean `color`?"));
        // Nothing close: no guess.
        let m = "unknown field `metadata`, expected one of `authtoken`, `connect_url`";
        assert_eq!(with_suggestion(m), m);
        let m = "invalid type: string \"x\", expected u32";
        assert_eq!(with_suggestion(m), m);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        listen: std::net::SocketAddr,
        section: Section,
        #[serde(default)]
        list: Vec<Section>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        port: u16,
    }

    fn run(text: &str) -> (Option<File>, Vec<String>) {
        let mut t = tree::parse(text).unwrap();
        let mut out = Vec::new();
        let f = collect::<File>(&mut t, std::path::Path::new("f.yml"), &mut out);
        (f, out.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn every_error_once_with_line_and_path() {
        let (f, out) = run(
            "listen: 127.0.0.1:1\nsection: { port: 1, colour: red }\nlist:\n  - port: x\n  - port: 2\n    size: 3\n  - port: 4\n",
        );
        assert_eq!(f.unwrap().list.len(), 2, "{out:?}");
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].starts_with("f.yml:2:21: section.colour: unknown field `colour`"));
        assert!(out[1].starts_with("f.yml:4:11: list[0].port: "));
        assert!(out[2].starts_with("f.yml:6:5: list[1].size: unknown field"));
    }

    #[test]
    fn a_broken_required_section_is_reported_once() {
        let (f, out) = run("listen: nope\nsection: { port: -1 }\n");
        assert!(f.is_none());
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].contains("listen"), "{out:?}");
        assert!(out[1].contains("section.port"), "{out:?}");
    }
}
