//! Host names and patterns: validation, normalisation, and the suffix index that finds every
//! rule naming a host (directly or through a list of a million names) in a few hash lookups.

use std::fmt;

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::diagnostic::ErrorKind;
use crate::sets::{RuleSets, SetId};
use crate::value::ValueError;

/// Longest DNS name in text form (RFC 1035, without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A host condition value, as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `example.com`: exactly that name.
    Exact(String),
    /// `*.example.com`: any name below `example.com`, at any depth, but not `example.com`.
    Subdomains(String),
    /// `@name`: every pattern of the named list.
    List(String),
}

impl HostPattern {
    /// Parses one pattern as written in a rule or a list (lists may not nest, so `@` is
    /// refused when `allow_list_ref` is false).
    pub(crate) fn parse(text: &str, allow_list_ref: bool) -> Result<HostPattern, ValueError> {
        if let Some(name) = text.strip_prefix('@') {
            if !allow_list_ref {
                return Err(ValueError::at(
                    ErrorKind::BadHost,
                    0,
                    "a list cannot contain another list",
                ));
            }
            crate::value::check_name(name).map_err(|e| e.shifted(1))?;
            return Ok(HostPattern::List(name.to_string()));
        }
        if let Some(base) = text.strip_prefix("*.") {
            return Ok(HostPattern::Subdomains(
                normalize_name(base).map_err(|e| e.shifted(2))?,
            ));
        }
        if text.contains('*') {
            let at = text.find('*').unwrap_or(0);
            return Err(ValueError::at(
                ErrorKind::BadHost,
                at,
                format!(
                    "`{text}`: a wildcard is only allowed as a whole first label, as in *.example.com"
                ),
            ));
        }
        Ok(HostPattern::Exact(normalize_name(text)?))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(name) => write!(f, "*.{name}"),
            HostPattern::List(name) => write!(f, "@{name}"),
        }
    }
}

/// Validates a DNS name and returns it lowercased without a trailing dot.
///
/// Names compare case-insensitively in DNS, so everything is stored and looked up in lower
/// case. Non-ASCII names must be written in punycode: the wire carries `xn--` labels, and
/// accepting Unicode here would let two spellings of one name slip past each other.
pub fn normalize_name(text: &str) -> Result<String, ValueError> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() {
        return Err(ValueError::at(ErrorKind::BadHost, 0, "empty host name"));
    }
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(ValueError::at(
            ErrorKind::BadHost,
            0,
            format!("`{trimmed}` is an address, not a name; match it with `dst {trimmed}`"),
        ));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(ValueError::at(
            ErrorKind::BadHost,
            0,
            format!(
                "host name is {} characters long; DNS allows at most {MAX_NAME_LEN}",
                trimmed.len()
            ),
        ));
    }
    let mut label_start = 0;
    for (offset, c) in trimmed.char_indices() {
        match c {
            '.' => {
                check_label(trimmed, label_start, offset)?;
                label_start = offset + 1;
            }
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => {}
            _ if !c.is_ascii() => {
                return Err(ValueError::at(
                    ErrorKind::BadHost,
                    trimmed[..offset].chars().count(),
                    format!("`{c}` is not ASCII; write international names in punycode (xn--…)"),
                ));
            }
            _ => {
                return Err(ValueError::at(
                    ErrorKind::BadHost,
                    trimmed[..offset].chars().count(),
                    format!("`{c}` cannot appear in a host name"),
                ));
            }
        }
    }
    check_label(trimmed, label_start, trimmed.len())?;
    Ok(trimmed.to_ascii_lowercase())
}

fn check_label(name: &str, start: usize, end: usize) -> Result<(), ValueError> {
    if start == end {
        return Err(ValueError::at(
            ErrorKind::BadHost,
            start,
            format!("empty label in host name `{name}`"),
        ));
    }
    if end - start > MAX_LABEL_LEN {
        return Err(ValueError::at(
            ErrorKind::BadHost,
            start,
            format!(
                "label is {} characters long; DNS allows at most {MAX_LABEL_LEN}",
                end - start
            ),
        ));
    }
    Ok(())
}

/// Lowercases a queried name into `buf` and strips one trailing dot, without allocating.
/// Returns `None` for names no rule can match (too long, empty, or not ASCII), which then only
/// match rules without a host condition.
pub(crate) fn query_name<'b>(host: &str, buf: &'b mut [u8; MAX_NAME_LEN]) -> Option<&'b str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_NAME_LEN || !host.is_ascii() {
        return None;
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// One name in the index, with the rules that name it exactly and the rules that name its
/// subdomains (`*.name`).
#[derive(Debug, Clone, Copy)]
struct HostEntry {
    start: u32,
    len: u32,
    exact: SetId,
    subdomains: SetId,
}

/// Every host name any rule mentions, stored once in one string arena.
///
/// A million-name blocklist is a million short strings; one arena plus a table of 16-byte
/// entries keeps that to roughly the size of the text itself, where a `HashMap<String, _>`
/// would add an allocation and 40 bytes per name.
#[derive(Debug)]
pub(crate) struct HostIndex {
    arena: String,
    table: HashTable<HostEntry>,
    hasher: DefaultHashBuilder,
}

/// Which way a rule's id reached a query's candidates; `explain` turns it into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostHit<'a> {
    Exact(&'a str),
    Subdomain(&'a str),
}

impl HostIndex {
    pub fn new() -> Self {
        HostIndex {
            arena: String::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Records that rule `rule` matches `name` (`subdomains`: names below it).
    pub fn insert(&mut self, sets: &mut RuleSets, name: &str, subdomains: bool, rule: u32) {
        let hash = self.hasher.hash_one(name);
        let arena = &self.arena;
        let found = self.table.find_mut(hash, |e| entry_name(arena, e) == name);
        let entry = match found {
            Some(entry) => entry,
            None => {
                let start = u32::try_from(self.arena.len()).expect("host arena under 4 GiB");
                self.arena.push_str(name);
                let entry = HostEntry {
                    start,
                    len: name.len() as u32,
                    exact: SetId::EMPTY,
                    subdomains: SetId::EMPTY,
                };
                let arena = &self.arena;
                let hasher = &self.hasher;
                self.table
                    .insert_unique(hash, entry, |e| hasher.hash_one(entry_name(arena, e)))
                    .into_mut()
            }
        };
        let slot = if subdomains {
            &mut entry.subdomains
        } else {
            &mut entry.exact
        };
        *slot = sets.with(*slot, rule);
    }

    fn get(&self, name: &str) -> Option<&HostEntry> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |e| entry_name(&self.arena, e) == name)
    }

    /// Calls `visit` with the rule sets that match `name`: its exact entry, then the
    /// subdomain entry of every proper suffix (`a.b.c` → `b.c`, `c`).
    pub fn lookup<'q>(&self, name: &'q str, mut visit: impl FnMut(SetId, HostHit<'q>)) {
        if let Some(entry) = self.get(name) {
            visit(entry.exact, HostHit::Exact(name));
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(entry) = self.get(rest) {
                visit(entry.subdomains, HostHit::Subdomain(rest));
            }
        }
    }

    /// Gives back the growth slack once every name is in: the arena doubles as it grows, and
    /// a rule set lives for as long as the policy does.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        let arena = &self.arena;
        let hasher = &self.hasher;
        self.table
            .shrink_to_fit(|e| hasher.hash_one(entry_name(arena, e)));
    }

    pub fn names(&self) -> usize {
        self.table.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.table.capacity() * (std::mem::size_of::<HostEntry>() + 1)
    }
}

fn entry_name<'a>(arena: &'a str, entry: &HostEntry) -> &'a str {
    &arena[entry.start as usize..(entry.start + entry.len) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Result<HostPattern, ValueError> {
        HostPattern::parse(text, true)
    }

    #[test]
    fn names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(
            pattern("WWW.Example.COM.").unwrap(),
            HostPattern::Exact("www.example.com".into())
        );
        assert_eq!(
            pattern("*.Example.com").unwrap(),
            HostPattern::Subdomains("example.com".into())
        );
        assert_eq!(pattern("@ads").unwrap(), HostPattern::List("ads".into()));
    }

    #[test]
    fn empty_label_points_at_the_gap() {
        let err = pattern("a..b").unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadHost);
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("empty label"), "{}", err.message);
        let err = pattern("*..b").unwrap_err();
        assert_eq!(err.offset, 2);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for (text, needle) in [
            ("exa mple.com", "cannot appear"),
            ("bücher.de", "punycode"),
            ("a.*.com", "wildcard"),
            ("10.0.0.1", "dst 10.0.0.1"),
            ("::1", "dst ::1"),
            ("", "empty"),
            (".", "empty"),
        ] {
            let err = pattern(text).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadHost, "{text}");
            assert!(err.message.contains(needle), "{text}: {}", err.message);
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(pattern(&long_label).unwrap_err().message.contains("63"));
        let long_name = vec!["abcdefghi"; 26].join(".");
        assert!(pattern(&long_name).unwrap_err().message.contains("253"));
        assert!(HostPattern::parse("@ads", false).is_err());
    }

    #[test]
    fn lookup_visits_exact_then_each_parent_suffix() {
        let mut sets = RuleSets::new();
        let mut index = HostIndex::new();
        index.insert(&mut sets, "example.com", false, 0);
        index.insert(&mut sets, "example.com", true, 1);
        index.insert(&mut sets, "b.example.com", false, 2);
        index.insert(&mut sets, "com", true, 3);
        let mut seen = Vec::new();
        index.lookup("a.b.example.com", |set, hit| {
            seen.push((sets.get(set).to_vec(), hit))
        });
        assert_eq!(
            seen,
            vec![
                (vec![], HostHit::Subdomain("b.example.com")),
                (vec![1], HostHit::Subdomain("example.com")),
                (vec![3], HostHit::Subdomain("com")),
            ]
        );
        let mut seen = Vec::new();
        index.lookup("example.com", |set, _| {
            seen.extend_from_slice(sets.get(set))
        });
        assert_eq!(
            seen,
            vec![0, 3],
            "*.example.com must not match example.com itself"
        );
    }

    #[test]
    fn query_names_are_normalised_without_allocating() {
        let mut buf = [0u8; MAX_NAME_LEN];
        assert_eq!(
            query_name("WWW.Example.com.", &mut buf),
            Some("www.example.com")
        );
        assert_eq!(query_name("", &mut buf), None);
        assert_eq!(query_name("bücher.de", &mut buf), None);
    }
}
