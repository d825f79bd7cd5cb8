//! cardwall's rule language.
//!
//! A rule file is read by [`parse`] into a [`Policy`] (the syntax tree, which prints back as
//! text), compiled by [`RuleSet::compile`] into indexes, and asked with [`RuleSet::decide`]:
//! every decision the card makes goes through that one call. [`bundle`] signs and verifies
//! rule sets for the policy server. The language itself is described in `rules/README.md`.

#![forbid(unsafe_code)]

pub mod builtin;
pub mod bundle;
mod diagnostic;
mod host;
mod index;
mod lists;
mod parse;
mod policy;
mod ruleset;
mod sets;
mod time;
mod value;

pub use diagnostic::{Diagnostic, Diagnostics, ErrorKind};
pub use host::{HostPattern, normalize_name};
pub use lists::{DirLoader, ListLoader, NoFiles, read_list_file};
pub use parse::parse;
pub use policy::{Action, ListDef, ListSource, Policy, Protocol, Rule};
pub use ruleset::{Decision, Explanation, Request, Response, RuleInfo, RuleSet, Stats};
pub use time::{LocalTime, TimeWindow};
pub use value::{Cidr, MediaRange, PortRange, ValueError, normalize_path};

/// Why a rule file could not be loaded from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}
