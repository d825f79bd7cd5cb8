//! The module graph of every crate in the workspace, read from its sources: no crate has a
//! module cycle, and the card's front ends (the proxies, the card page, the APDU face, the
//! policy poller, the status endpoint) sit on the firewall core side by side, none reaching
//! into another. A cycle or a front end importing another is a seam drawn in the wrong place;
//! this test names it.
//!
//! The graph is built from paths, not from the compiler: every `crate::a…` (including
//! `use crate::{a, b}` groups) and every `super::…` that climbs out of a top-level module is
//! an edge from that module to `a`. Comments are not read, so a doc link is no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The card's front ends: each talks to the core, never to another front end.
const CARD_FRONT_ENDS: [&str; 5] = ["proxy", "admin", "iso7816", "managed", "status"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Every crate directory of the workspace with a `src/` (fuzz crates and build output aside).
fn crates() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(workspace())
        .expect("the workspace is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("Cargo.toml").is_file() && dir.join("src").is_dir())
        .collect();
    found.sort();
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `proxy/http.rs` → `[proxy, http]`,
/// `proxy/mod.rs` → `[proxy]`, `lib.rs` and `main.rs` → `[]` (the crate root).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("the file is under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments (line and block), so doc links are not dependencies.
/// String and character literals are kept as they are, but a `"` in them does not fool it.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_string {
            out.push(c);
            if c == '\\' {
                out.extend(next);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match (c, next) {
            ('"', _) => in_string = true,
            // A character literal: `'"'`, `'\''`, `'\\'`; a lifetime has no closing quote.
            ('\'', Some('\\')) => {
                let end = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(0, |p| p + 3);
                out.extend(&chars[i..i + end]);
                i += end.max(1);
                continue;
            }
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => {
                out.extend(&chars[i..i + 3]);
                i += 3;
                continue;
            }
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ('/', Some('*')) => {
                i += 2;
                while i < chars.len() && !(chars[i - 1] == '*' && chars[i] == '/') {
                    i += 1;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first identifier of each item in a `{a, b::c, self}` group starting at `text[0] == '{'`.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                depth += 1;
                item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && is_ident(c) => {
                let name: String = text[i..].chars().take_while(|&c| is_ident(c)).collect();
                for _ in 1..name.chars().count() {
                    chars.next();
                }
                heads.push(name);
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules `code` (of the module at `path`) names.
fn named_modules(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    let mut offset = 0;
    let earliest = |text: &str| {
        [text.find("crate::"), text.find("super::")]
            .into_iter()
            .flatten()
            .min()
    };
    while let Some(found) = earliest(rest) {
        let at = offset + found;
        let before = code[..at].chars().next_back();
        let is_super = code[at..].starts_with("super::");
        let step = if is_super {
            "super::".len()
        } else {
            "crate::".len()
        };
        offset = at + step;
        rest = &code[offset..];
        if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
            continue;
        }
        // `super::super::x` climbs one level per `super`.
        let mut depth = path.len();
        let mut tail = &code[at..];
        if is_super {
            while let Some(after) = tail.strip_prefix("super::") {
                depth = depth.saturating_sub(1);
                tail = after;
            }
            if depth > 0 {
                continue;
            }
        } else {
            tail = &tail["crate::".len()..];
        }
        if tail.starts_with('{') {
            named.extend(group_heads(tail));
        } else {
            let name: String = tail.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                named.insert(name);
            }
        }
    }
    named
}

/// The graph of one crate's top-level modules.
fn graph(crate_dir: &Path) -> Graph {
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|file| module_path(&src, file).first().cloned())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let path = module_path(&src, file);
        // The crate root wires the modules together; it is no module of its own.
        let Some(from) = path.first() else { continue };
        let source = std::fs::read_to_string(file).expect("a source file is readable");
        let edges = graph.entry(from.clone()).or_default();
        for to in named_modules(&code_only(&source), &path) {
            if &to != from && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    graph
}

/// A shortest path from `from` to `to` in `graph`, both ends included, if there is one.
fn path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![to.to_string()];
            let mut at = to;
            while at != from {
                at = came_from[at];
                path.push(at.to_string());
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(node).into_iter().flatten() {
            if next != from && !came_from.contains_key(next.as_str()) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every cycle through an edge of `graph`, once per edge: `a -> b -> … -> a`.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (from, edges) in graph {
        for to in edges {
            if let Some(back) = path(graph, to, from) {
                let mut cycle = vec![from.clone()];
                cycle.extend(back);
                found.push(cycle);
            }
        }
    }
    found
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut found = Vec::new();
    for dir in crates() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        for cycle in cycles(&graph(&dir)) {
            found.push(format!("{name}: {}", cycle.join(" -> ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cards_front_ends_do_not_import_each_other() {
    let graph = graph(&workspace().join("cardfw"));
    let mut crossings = Vec::new();
    for from in CARD_FRONT_ENDS {
        for to in graph.get(from).into_iter().flatten() {
            if CARD_FRONT_ENDS.contains(&to.as_str()) {
                crossings.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "front ends importing front ends (each should reach only the core):\n{}",
        crossings.join("\n")
    );
}

#[test]
fn nothing_imports_the_wiring() {
    let graph = graph(&workspace().join("cardfw"));
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(_, edges)| edges.contains("run"))
        .map(|(from, _)| from)
        .collect();
    assert!(
        importers.is_empty(),
        "`run` wires the card; imported by {importers:?}"
    );
}

#[test]
fn the_scan_reads_paths_the_way_rustc_does() {
    let code = code_only(
        "use crate::{a, b::{c, d}, e as f};\n// crate::commented\nuse super::g;\n\
         let x = crate::h::y(); let s = \"crate::in_string\"; let q = '\"'; $crate::m; super::super::k;",
    );
    let top = named_modules(&code, &["top".to_string()]);
    let wanted: BTreeSet<String> = ["a", "b", "e", "g", "h", "in_string", "k"]
        .map(String::from)
        .into();
    assert_eq!(top, wanted);
    let nested = named_modules(&code, &["top".to_string(), "inner".to_string()]);
    assert!(
        !nested.contains("g"),
        "super:: from a nested module stays inside"
    );
    assert!(nested.contains("k"));
    let mut cyclic = Graph::new();
    cyclic.insert("a".into(), ["b".to_string()].into());
    cyclic.insert("b".into(), ["a".to_string()].into());
    cyclic.insert("c".into(), ["a".to_string()].into());
    let cycles: Vec<String> = cycles(&cyclic).iter().map(|c| c.join(" -> ")).collect();
    assert_eq!(cycles, ["a -> b -> a", "b -> a -> b"]);
}
