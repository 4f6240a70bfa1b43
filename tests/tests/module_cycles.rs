//! No module cycles in `proxy/src` or `policy/src` (issue 15).
//!
//! A *module cycle* is two files that use each other (file A names a path
//! into file B and B names a path into A), or more generally any strongly
//! connected component of more than one file in the "uses" graph. This test
//! reads every `.rs` file of the `sluice-proxy` and `sluice-policy` library
//! crates (no compiler, no dependency: a small tokenizer below), builds that
//! graph and fails with the files, and the line of each reference, of every
//! cycle that is not in [`KNOWN_CYCLES`].
//!
//! # The rule: what counts as "file A uses file B"
//!
//! - Each file is a module: `lib.rs` is the crate root, `a/mod.rs` and `a.rs`
//!   are `a`, `a/b.rs` is `a::b`. `main.rs` (a separate binary crate that
//!   only goes through `sluice_proxy::`) is not read. Inline `mod x { .. }`
//!   blocks belong to their file.
//! - Test code is not read: any item under `#[cfg(test)]` (the inline
//!   `mod tests { .. }` blocks, and the files declared by
//!   `#[cfg(test)] mod tests;`) — tests legitimately use their parent.
//! - A reference is a path written in code: a `use` tree (grouped trees such
//!   as `use crate::{a, b::c}` and `self`/`super` inside them included) or a
//!   path in an expression, type or pattern that starts with `crate::`,
//!   `self::`, `super::`, or with the name of a child module of the current
//!   module (`child::f()`, `use child::X` are 2018-edition relative paths).
//!   Paths in comments, doc links and strings are not references.
//! - A reference resolves to the deepest module that exists along its path
//!   (`crate::a::b::f` is `a/b.rs` if that file exists, else `a.rs` or
//!   `a/mod.rs`). When the next segment is an item that module only
//!   re-exports (`pub use` / `pub(crate) use`, named or `*`), the reference
//!   is followed to where the item really lives: `crate::Cidr` in the policy
//!   crate is `cidr.rs`, not `lib.rs`.
//! - Parents and children: re-exporting (`pub use`, any visibility but
//!   private) is **not** a use, and a module's references to its own
//!   submodules (declaring `mod x;`, `use child::X`, `child::f()`, at any
//!   depth) are not uses either: the parent already depends on its children
//!   by declaring them, that direction is structure, not a design choice. A
//!   child's references to its ancestors (`super::Shared`) **are** uses. So
//!   a `mod.rs` and its children that use `super::` never make a cycle by
//!   themselves (the issue's "A uses B and B uses A" is about files neither
//!   of which contains the other), but a loop that leaves the parent does:
//!   `m/child.rs` -> `m/mod.rs` -> `x.rs` -> `m/child.rs` is reported, and
//!   two siblings using each other are. The crate root (`lib.rs`) is the
//!   ancestor of every file, so its own paths never count.
//! - A file's references to itself are ignored.
//!
//! Known blind spot: a parent that `pub use`s a child's item and also uses
//! that item by its bare name in its own code does not get an edge to the
//! child (there is no name resolution here).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// Cycles tolerated for a while (none today). Each entry is the exact set of
/// files of one strongly connected component, with a comment saying who removes
/// it. An entry that no longer matches a cycle fails the test too, so the list
/// only shrinks.
const KNOWN_CYCLES: &[&[&str]] = &[];

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits Rust source into identifiers and punctuation, dropping comments,
/// string/char/byte literals (raw ones too), numbers and lifetimes.
fn tokenize(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let n = chars.len();
    // Advances over chars[i], counting lines.
    macro_rules! bump {
        () => {{
            if chars[i] == '\n' {
                line += 1;
            }
            i += 1;
        }};
    }
    while i < n {
        let c = chars[i];
        if c.is_whitespace() {
            bump!();
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < n {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    bump!();
                }
            }
        } else if c == '"' {
            bump!();
            while i < n && chars[i] != '"' {
                if chars[i] == '\\' {
                    bump!();
                }
                if i < n {
                    bump!();
                }
            }
            i += 1;
        } else if c == '\'' {
            // Char literal ('x', '\n', '\u{..}') or lifetime ('a).
            if chars.get(i + 1) == Some(&'\\') {
                // Skip the backslash and the escaped char (`'\''` too).
                i += 3;
                while i < n && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                // Lifetime: skip the quote and the name.
                i += 1;
                while i < n && is_ident_continue(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while i < n && (is_ident_continue(chars[i]) || chars[i] == '.') {
                // `1..2`: stop before a range.
                if chars[i] == '.' && chars.get(i + 1) == Some(&'.') {
                    break;
                }
                i += 1;
            }
        } else if is_ident_start(c) {
            // Raw strings r"..", r#".."#, br"..", byte strings b"..", b'x'.
            let raw_start = if c == 'r' {
                Some(i + 1)
            } else if c == 'b' && chars.get(i + 1) == Some(&'r') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(mut j) = raw_start {
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) == Some(&'"') {
                    i = j + 1;
                    loop {
                        if i >= n {
                            break;
                        }
                        if chars[i] == '"'
                            && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#'))
                        {
                            i += 1 + hashes;
                            break;
                        }
                        bump!();
                    }
                    continue;
                }
            }
            if c == 'b' && matches!(chars.get(i + 1), Some('"') | Some('\'')) {
                // Byte string/char: drop the prefix, the literal is skipped next round.
                i += 1;
                continue;
            }
            let start = i;
            while i < n && is_ident_continue(chars[i]) {
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            // Raw identifiers r#name.
            if word == "r" && chars.get(i) == Some(&'#') {
                i += 1;
                let s = i;
                while i < n && is_ident_continue(chars[i]) {
                    i += 1;
                }
                word = chars[s..i].iter().collect();
            }
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Per-file scan

/// A path written in a file, with the inline module it was written in.
#[derive(Debug, Clone)]
struct Reference {
    /// Path segments as written (`crate`, `super`, `self`, names).
    path: Vec<String>,
    /// Inline module nesting inside the file where the path was written.
    inline: Vec<String>,
    line: usize,
}

/// What one file declares and references.
#[derive(Debug, Default)]
struct Scan {
    /// `mod x;` declarations outside test code (children in their own file).
    child_files: Vec<String>,
    /// `#[cfg(test)] mod x;` declarations (test files, not read).
    test_child_files: Vec<String>,
    /// Inline `mod x { .. }` outside test code, as paths relative to the file.
    inline_mods: Vec<Vec<String>>,
    /// Code references (private `use` and paths in code).
    uses: Vec<Reference>,
    /// Re-exports: exported name (`*` for a glob) to the path it names.
    reexports: Vec<(Vec<String>, String, Reference)>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Ident(s), ..
        }) => Some(s),
        _ => None,
    }
}

fn punct(t: Option<&Token>, c: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
}

/// Index just after the bracketed group opening at `i` (`(`, `[` or `{`).
fn skip_group(toks: &[Token], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct('(') | Tok::Punct('[') | Tok::Punct('{') => depth += 1,
            Tok::Punct(')') | Tok::Punct(']') | Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index just after the item starting at `i`: its `;` or its body `{ .. }`
/// at depth 0 (attributes before it included).
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    while i < toks.len() {
        match toks[i].tok {
            // A field or argument under the attribute ends at `,`; an
            // unmatched closer ends the enclosing item, not this one.
            Tok::Punct(';') | Tok::Punct(',') => return i + 1,
            Tok::Punct('}') | Tok::Punct(')') | Tok::Punct(']') => return i,
            Tok::Punct('{') => {
                let end = skip_group(toks, i);
                // `const X: T = { .. };`, `struct S { .. }`: eat a trailing `;`.
                return if punct(toks.get(end), ';') {
                    end + 1
                } else {
                    end
                };
            }
            Tok::Punct('(') | Tok::Punct('[') => i = skip_group(toks, i),
            _ => i += 1,
        }
    }
    i
}

/// Whether the attribute tokens `#[ .. ]` in `toks[a..b]` are a `cfg` that
/// only holds under test (`cfg(test)`, `cfg(all(test, ..))`).
fn is_test_cfg(toks: &[Token], a: usize, b: usize) -> bool {
    let inner = &toks[a..b];
    let names: Vec<&str> = inner.iter().filter_map(|t| ident(Some(t))).collect();
    names.first() == Some(&"cfg")
        && names.contains(&"test")
        && !names.contains(&"not")
        && !names.contains(&"any")
}

/// Parses a use tree starting at `i`, appending every full path to `out`.
/// Returns the index after the tree.
fn parse_use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, String, usize)>,
) -> usize {
    let mut path = prefix.to_vec();
    let mut line = toks.get(i).map_or(0, |t| t.line);
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::PathSep) => i += 1,
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    if punct(toks.get(i), '}') {
                        return i + 1;
                    }
                    if i >= toks.len() {
                        return i;
                    }
                    i = parse_use_tree(toks, i, &path, out);
                    if punct(toks.get(i), ',') {
                        i += 1;
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                out.push((path, "*".into(), line));
                return i + 1;
            }
            Some(Tok::Ident(s)) => {
                line = toks[i].line;
                if s == "self" && !path.is_empty() {
                    // `use a::{self}`: the module itself, named by its last segment.
                    let name = path.last().cloned().unwrap_or_default();
                    i += 1;
                    let name = rename(toks, &mut i).unwrap_or(name);
                    out.push((path, name, line));
                    return i;
                }
                path.push(s.clone());
                i += 1;
                if !matches!(toks.get(i).map(|t| &t.tok), Some(Tok::PathSep)) {
                    let name = rename(toks, &mut i).unwrap_or_else(|| s.clone());
                    out.push((path, name, line));
                    return i;
                }
            }
            _ => return i,
        }
    }
}

/// `as name` after a use path: the new name (`_` for an anonymous import).
fn rename(toks: &[Token], i: &mut usize) -> Option<String> {
    if ident(toks.get(*i)) == Some("as") {
        let name = ident(toks.get(*i + 1)).map(str::to_owned);
        *i += 2;
        return name;
    }
    None
}

const KEYWORD_ROOTS: [&str; 3] = ["crate", "self", "super"];

fn scan(src: &str, child_mods_of: &dyn Fn(&[String]) -> Vec<String>) -> Scan {
    let toks = tokenize(src);
    let mut s = Scan::default();
    // Stack of (inline module name, depth of its braces).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    let mut test_attr = false;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('#') => {
                // Attribute `#[..]` or `#![..]`: never a reference; remember test cfgs.
                let mut j = i + 1;
                if punct(toks.get(j), '!') {
                    j += 1;
                }
                if punct(toks.get(j), '[') {
                    let end = skip_group(&toks, j);
                    if is_test_cfg(&toks, j + 1, end.saturating_sub(1)) {
                        test_attr = true;
                    }
                    i = end;
                    continue;
                }
                i += 1;
                continue;
            }
            _ if test_attr => {
                // The item under `#[cfg(test)]`: skipped, but note a test file child.
                let mut j = i;
                while matches!(ident(toks.get(j)), Some("pub") | Some("crate"))
                    || punct(toks.get(j), '(')
                {
                    j = if punct(toks.get(j), '(') {
                        skip_group(&toks, j)
                    } else {
                        j + 1
                    };
                }
                if ident(toks.get(j)) == Some("mod") && punct(toks.get(j + 2), ';') {
                    if let Some(name) = ident(toks.get(j + 1)) {
                        s.test_child_files.push(name.to_owned());
                    }
                }
                i = skip_item(&toks, i);
                test_attr = false;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    if punct(toks.get(i + 2), ';') {
                        s.child_files.push(name.to_owned());
                        i += 3;
                        continue;
                    }
                    if punct(toks.get(i + 2), '{') {
                        inline.push((name.to_owned(), depth + 1));
                        s.inline_mods
                            .push(inline.iter().map(|(n, _)| n.clone()).collect());
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(w) if w == "use" => {
                // Visibility before `use`: `pub`, `pub(crate)`, `pub(super)`, `pub(in ..)`.
                let mut k = i;
                if punct(toks.get(k.wrapping_sub(1)), ')') {
                    while k > 0 && !punct(toks.get(k), '(') {
                        k -= 1;
                    }
                }
                let public = ident(toks.get(k.wrapping_sub(1))) == Some("pub");
                let mut paths = Vec::new();
                let end = parse_use_tree(&toks, i + 1, &[], &mut paths);
                let here: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                for (path, name, line) in paths {
                    let r = Reference {
                        path,
                        inline: here.clone(),
                        line,
                    };
                    if public {
                        s.reexports.push((here.clone(), name, r));
                    } else {
                        s.uses.push(r);
                    }
                }
                i = end;
                continue;
            }
            Tok::Ident(w) if w == "pub" && punct(toks.get(i + 1), '(') => {
                // `pub(in crate::a)` is a visibility, not a use.
                i = skip_group(&toks, i + 1);
                continue;
            }
            Tok::Ident(w) => {
                // A path in code: `crate::..`, `self::..`, `super::..`, `child::..`,
                // not preceded by `::` (then it is the tail of another path).
                let after_sep = matches!(
                    toks.get(i.wrapping_sub(1)).map(|t| &t.tok),
                    Some(Tok::PathSep)
                );
                let here: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                let starts =
                    KEYWORD_ROOTS.contains(&w.as_str()) || child_mods_of(&here).contains(w);
                if !after_sep
                    && starts
                    && matches!(toks.get(i + 1).map(|t| &t.tok), Some(Tok::PathSep))
                {
                    let mut path = vec![w.clone()];
                    let mut j = i + 1;
                    while matches!(toks.get(j).map(|t| &t.tok), Some(Tok::PathSep)) {
                        match ident(toks.get(j + 1)) {
                            Some(seg) => path.push(seg.to_owned()),
                            None => break,
                        }
                        j += 2;
                    }
                    s.uses.push(Reference {
                        path,
                        inline: here,
                        line: t.line,
                    });
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s
}

// ---------------------------------------------------------------------------
// The crate graph

/// One library crate read from disk (or from inline samples in unit tests).
struct Crate {
    /// Display name of each file, by module path.
    files: BTreeMap<Vec<String>, String>,
    scans: BTreeMap<Vec<String>, Scan>,
    /// Every module (file or inline) to the module path of its file.
    module_file: HashMap<Vec<String>, Vec<String>>,
}

/// A "uses" edge with the places that make it.
type Edges = BTreeMap<String, BTreeMap<String, Vec<String>>>;

impl Crate {
    /// `sources`: (module path, display name, source text), files declared
    /// under `#[cfg(test)]` included (they are dropped here).
    fn new(sources: Vec<(Vec<String>, String, String)>) -> Crate {
        // Child modules that have a file: needed to read `child::x` paths.
        let all: BTreeSet<Vec<String>> = sources.iter().map(|(m, _, _)| m.clone()).collect();
        let mut files = BTreeMap::new();
        let mut scans = BTreeMap::new();
        for (module, name, src) in &sources {
            // A first pass finds the file's inline modules: `child::x` may name one.
            let inline = scan(src, &|_| Vec::new()).inline_mods;
            let children = |rel: &[String]| -> Vec<String> {
                let mut base = module.clone();
                base.extend_from_slice(rel);
                let files = all
                    .iter()
                    .filter(|m| m.len() == base.len() + 1 && m.starts_with(&base));
                let inlines = inline
                    .iter()
                    .filter(|m| m.len() == rel.len() + 1 && m.starts_with(rel));
                files
                    .chain(inlines)
                    .map(|m| m.last().unwrap().clone())
                    .collect()
            };
            scans.insert(module.clone(), scan(src, &children));
            files.insert(module.clone(), name.clone());
        }
        // Drop test files: declared `#[cfg(test)] mod x;` by their parent, and their children.
        let test_roots: Vec<Vec<String>> = scans
            .iter()
            .flat_map(|(m, s)| {
                s.test_child_files.iter().map(move |c| {
                    let mut p = m.clone();
                    p.push(c.clone());
                    p
                })
            })
            .collect();
        files.retain(|m, _| !test_roots.iter().any(|t| m.starts_with(t)));
        scans.retain(|m, _| files.contains_key(m));
        let mut module_file = HashMap::new();
        for (m, s) in &scans {
            module_file.insert(m.clone(), m.clone());
            for inl in &s.inline_mods {
                let mut p = m.clone();
                p.extend(inl.iter().cloned());
                module_file.insert(p, m.clone());
            }
        }
        Crate {
            files,
            scans,
            module_file,
        }
    }

    /// Absolute path of a reference written in `file` (None: another crate).
    fn absolute(&self, file: &[String], r: &Reference) -> Option<Vec<String>> {
        let mut base: Vec<String> = file.to_vec();
        base.extend(r.inline.iter().cloned());
        let mut segs = r.path.iter().peekable();
        let mut out = match segs.peek().map(|s| s.as_str()) {
            Some("crate") => {
                segs.next();
                Vec::new()
            }
            Some("self") | Some("super") => {
                let mut cur = base.clone();
                while let Some(s) = segs.peek() {
                    match s.as_str() {
                        "self" => {}
                        "super" => {
                            cur.pop();
                        }
                        _ => break,
                    }
                    segs.next();
                }
                cur
            }
            Some(first) => {
                // 2018 relative path: a child module of the current module.
                let mut child = base.clone();
                child.push(first.to_owned());
                if !self.module_file.contains_key(&child) {
                    return None;
                }
                base
            }
            None => return None,
        };
        out.extend(segs.cloned());
        Some(out)
    }

    /// The file a path names, following re-exports (at most `hops` times).
    fn resolve(&self, path: &[String], hops: usize) -> Option<Vec<String>> {
        let mut n = path.len();
        while n > 0 && !self.module_file.contains_key(&path[..n]) {
            n -= 1;
        }
        let module = &path[..n];
        let file = self.module_file.get(module)?.clone();
        let Some(next) = path.get(n) else {
            return Some(file);
        };
        if hops == 0 {
            return Some(file);
        }
        // Is `next` re-exported by that module? Then go where it comes from.
        let scan = &self.scans[&file];
        let inline = &module[file.len()..];
        let mut glob = None;
        for (at, name, r) in &scan.reexports {
            if at.as_slice() != inline {
                continue;
            }
            let Some(abs) = self.absolute(&file, r) else {
                continue;
            };
            if name == next {
                let mut target = abs;
                target.extend_from_slice(&path[n + 1..]);
                return self.resolve(&target, hops - 1);
            }
            if name == "*" && glob.is_none() {
                let mut target = abs;
                target.extend_from_slice(&path[n..]);
                let resolved = self.resolve(&target, hops - 1);
                if resolved.as_ref().is_some_and(|f| *f != file) {
                    glob = resolved;
                }
            }
        }
        Some(glob.unwrap_or(file))
    }

    /// Every "uses" edge between two different files, with where it is written.
    fn edges(&self) -> Edges {
        let mut edges: Edges = BTreeMap::new();
        for (module, scan) in &self.scans {
            let from = &self.files[module];
            for r in &scan.uses {
                let Some(abs) = self.absolute(module, r) else {
                    continue;
                };
                let Some(to) = self.resolve(&abs, 8) else {
                    continue;
                };
                // Itself, or one of its own submodules: not a use (see the rule).
                if to.starts_with(module) {
                    continue;
                }
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(self.files[&to].clone())
                    .or_default()
                    .push(format!("{from}:{} `{}`", r.line, r.path.join("::")));
            }
        }
        edges
    }
}

/// Strongly connected components of more than one file (Tarjan), each sorted.
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a Edges,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.edges.get(v) {
            for w in next.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[w].min(t.low[v]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.index[w].min(t.low[v]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// Describes one cycle: its files and every edge between them.
fn describe(cycle: &[String], edges: &Edges) -> String {
    let mut s = format!("cycle: {}\n", cycle.join(" <-> "));
    for a in cycle {
        for b in cycle {
            if let Some(places) = edges.get(a).and_then(|m| m.get(b)) {
                s += &format!("  {a} uses {b}:\n");
                for p in places {
                    s += &format!("    {p}\n");
                }
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------
// The real tree

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Reads the library crate under `src` (relative to the workspace).
fn read_crate(src: &str) -> Crate {
    let root = workspace().join(src);
    let mut paths = Vec::new();
    rs_files(&root, &mut paths);
    let mut sources = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(&root).unwrap();
        let mut module: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let last = module.pop().unwrap();
        match last.as_str() {
            "lib.rs" | "mod.rs" if module.len() <= 1 || last == "mod.rs" => {
                if last == "lib.rs" && !module.is_empty() {
                    module.push("lib".into());
                }
            }
            // Binary crate roots are other crates.
            "main.rs" if module.is_empty() => continue,
            _ if module.first().is_some_and(|d| d == "bin") => continue,
            _ => module.push(last.trim_end_matches(".rs").to_owned()),
        }
        let name = format!("{src}/{}", rel.to_string_lossy());
        sources.push((module, name, fs::read_to_string(&p).unwrap()));
    }
    Crate::new(sources)
}

#[test]
fn no_module_cycles() {
    let mut found = Vec::new();
    let mut all_edges = Edges::new();
    for src in ["proxy/src", "policy/src"] {
        let krate = read_crate(src);
        assert!(krate.files.len() > 10, "{src}: too few files read");
        let edges = krate.edges();
        found.extend(cycles(&edges));
        all_edges.extend(edges);
    }
    let mut report = String::new();
    for c in &found {
        let known = KNOWN_CYCLES
            .iter()
            .any(|k| k.len() == c.len() && k.iter().all(|f| c.iter().any(|g| g == f)));
        eprint!(
            "{}{}",
            if known { "[known] " } else { "" },
            describe(c, &all_edges)
        );
        if !known {
            report += &describe(c, &all_edges);
        }
    }
    for k in KNOWN_CYCLES {
        let live = found
            .iter()
            .any(|c| c.len() == k.len() && k.iter().all(|f| c.iter().any(|g| g == f)));
        if !live {
            report += &format!("KNOWN_CYCLES entry {k:?} is no longer a cycle: remove it\n");
        }
    }
    assert!(
        report.is_empty(),
        "module cycles (see the rule in tests/tests/module_cycles.rs):\n{report}"
    );
}

// ---------------------------------------------------------------------------
// The checker's own tests, on inline samples.

fn sample(files: &[(&str, &str)]) -> Crate {
    Crate::new(
        files
            .iter()
            .map(|(m, src)| {
                let module: Vec<String> = if m.is_empty() {
                    Vec::new()
                } else {
                    m.split("::").map(str::to_owned).collect()
                };
                let name = if m.is_empty() {
                    "lib.rs".to_owned()
                } else {
                    m.replace("::", "/") + ".rs"
                };
                (module, name, src.to_string())
            })
            .collect(),
    )
}

fn sample_cycles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    cycles(&sample(files).edges())
}

#[test]
fn finds_a_planted_two_file_cycle() {
    let found = sample_cycles(&[
        ("", "mod a; mod b;"),
        ("a", "use crate::b::Bee; pub struct Ay;"),
        ("b", "pub struct Bee(crate::a::Ay);"),
    ]);
    assert_eq!(found, vec![vec!["a.rs".to_owned(), "b.rs".to_owned()]]);
    let text = describe(
        &found[0],
        &sample(&[
            ("", "mod a; mod b;"),
            ("a", "use crate::b::Bee;"),
            ("b", "fn f() { crate::a::g() }"),
        ])
        .edges(),
    );
    assert!(text.contains("a.rs:1 `crate::b::Bee`"), "{text}");
    assert!(text.contains("b.rs:1 `crate::a::g`"), "{text}");
}

#[test]
fn finds_a_longer_cycle_and_ignores_a_chain() {
    let files = [
        ("", "mod a; mod b; mod c;"),
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::Y;"),
        ("c", "use crate::a::Z;"),
    ];
    assert_eq!(
        sample_cycles(&files),
        vec![vec![
            "a.rs".to_owned(),
            "b.rs".to_owned(),
            "c.rs".to_owned()
        ]]
    );
    let chain = [
        ("", "mod a; mod b; mod c;"),
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::Y;"),
        ("c", ""),
    ];
    assert!(sample_cycles(&chain).is_empty());
}

#[test]
fn grouped_self_and_super_paths() {
    // `use crate::{a, b::c}` with `self` in a group, `super::super` from an inline
    // module, `super::` and `self::` in code; a parent's own children do not count.
    let k = sample(&[
        ("", "mod a; mod b; mod d; use crate::d::D;"),
        ("d", "use crate::{a::A, b::{self, c::C}};"),
        ("a", "mod inner { use super::super::b::c::C; }"),
        ("b", "mod c; use self::c::C; fn f() { super::a::go() }"),
        ("b::c", "fn g() { self::h(); super::super::d::x() }"),
    ]);
    let e = k.edges();
    let to = |f: &str| {
        e.get(f)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(to("d.rs"), vec!["a.rs", "b.rs", "b/c.rs"]);
    assert_eq!(to("a.rs"), vec!["b/c.rs"]);
    assert_eq!(to("b.rs"), vec!["a.rs"]);
    assert_eq!(to("b/c.rs"), vec!["d.rs"]);
    assert!(to("lib.rs").is_empty());
}

#[test]
fn declarations_and_reexports_are_not_uses() {
    // A facade mod.rs and a child using `super::`: no cycle.
    let facade = [
        ("", "pub mod m;"),
        (
            "m",
            "mod child; pub use child::Thing; pub(crate) use self::child::*; pub struct Shared;",
        ),
        ("m::child", "use super::Shared; pub struct Thing;"),
    ];
    assert!(sample_cycles(&facade).is_empty());
    // A parent calling into its child that uses `super::` is no cycle either...
    let calls = [
        ("", "pub mod m; pub mod x;"),
        ("m", "mod child; pub struct Shared; fn f() { child::g() }"),
        ("m::child", "use super::Shared; pub fn g() {}"),
        ("x", ""),
    ];
    assert!(sample_cycles(&calls).is_empty());
    // ...but a loop that leaves the parent is: child -> parent -> x -> child.
    let out = [
        ("", "pub mod m; pub mod x;"),
        (
            "m",
            "mod child; pub struct Shared; fn f() { crate::x::h() }",
        ),
        ("m::child", "use super::Shared; pub fn g() {}"),
        ("x", "pub fn h() { crate::m::child::g() }"),
    ];
    assert_eq!(
        sample_cycles(&out),
        vec![vec![
            "m.rs".to_owned(),
            "m/child.rs".to_owned(),
            "x.rs".to_owned()
        ]]
    );
    // A grandparent is an ancestor too; siblings are not.
    let sib = [
        ("", "pub mod m;"),
        ("m", "pub mod a; pub mod b;"),
        ("m::a", "use super::b::B; pub struct A;"),
        ("m::b", "pub struct B(super::a::A);"),
    ];
    assert_eq!(
        sample_cycles(&sib),
        vec![vec!["m/a.rs".to_owned(), "m/b.rs".to_owned()]]
    );
}

#[test]
fn reexports_are_followed_to_the_defining_file() {
    // `crate::Cidr` is cidr.rs, so lib.rs's re-export makes no cycle with it,
    // and a cycle through a re-export is still found.
    let files = [
        (
            "",
            "mod cidr; mod model; pub use cidr::Cidr; pub use model::*;",
        ),
        ("cidr", "pub struct Cidr(crate::Model);"),
        ("model", "pub struct Model(crate::Cidr);"),
    ];
    assert_eq!(
        sample_cycles(&files),
        vec![vec!["cidr.rs".to_owned(), "model.rs".to_owned()]]
    );
}

#[test]
fn test_code_comments_and_strings_are_ignored() {
    let files = [
        ("", "mod a; mod b; #[cfg(test)] mod tests;"),
        ("a", "pub fn a() {}\n#[cfg(test)]\nmod tests { use crate::b::B; }\n#[cfg(test)] fn helper() { crate::b::f(); }"),
        ("b", "/// See [`crate::a::a`].\n// crate::a::a()\n/* crate::a::a() */ const S: &str = \"crate::a::a\"; const R: &str = r#\"crate::a\"#; const C: char = '\"'; fn f<'a>(x: &'a str) {}\npub fn g() { crate::tests::t() }"),
        ("tests", "use crate::b::g; use crate::a::a;"),
    ];
    let k = sample(&files);
    assert!(
        !k.files.contains_key(&vec!["tests".to_owned()]),
        "cfg(test) file read"
    );
    let e = k.edges();
    assert!(!e.contains_key("a.rs"), "{e:?}");
    // b.rs's only path goes to `crate::tests`, a test module: it resolves to lib.rs.
    assert_eq!(e["b.rs"].keys().collect::<Vec<_>>(), vec!["lib.rs"]);
}

#[test]
fn tokenizer_paths_and_visibility() {
    // `pub(in crate::a)` is no use; a path's tail (`x::crate`) is not a new path.
    let files = [
        ("", "mod a; mod b;"),
        (
            "a",
            "pub(in crate::b) fn f() {} fn g() -> Option<crate::b::B> { None }",
        ),
        ("b", "pub(crate) struct B;"),
    ];
    let e = sample(&files).edges();
    assert_eq!(e["a.rs"].keys().collect::<Vec<_>>(), vec!["b.rs"]);
    assert!(!e.contains_key("b.rs"));
}
