//! The rule set the firewall runs: compiled from the sealed store if the card has one, else
//! from the rule file, with what the status page shows as its version.

use std::path::Path;
use std::time::SystemTime;

use rules::RuleSet;

use crate::config::Config;
use crate::store::{RulesSource, Store};

/// A compiled rule set and where it came from.
#[derive(Debug)]
pub struct LoadedRules {
    pub rules: RuleSet,
    /// What the status page shows as the rules' version: for a local file, its path and a
    /// hash of its text, so two cards with the same rules show the same value.
    pub version: String,
    pub loaded_at: u64,
}

impl LoadedRules {
    pub fn from_file(path: &Path) -> Result<LoadedRules, rules::LoadError> {
        let rules = RuleSet::from_path(path)?;
        let text = std::fs::read(path).unwrap_or_default();
        Ok(LoadedRules {
            rules,
            version: format!("{} #{:016x}", path.display(), fnv1a(&text)),
            loaded_at: unix_now(),
        })
    }

    /// The rules from the store if there is one, else from the rule file.
    pub fn load(config: &Config, store: Option<&Store>) -> Result<LoadedRules, String> {
        match store {
            Some(store) => LoadedRules::from_store(store),
            None => LoadedRules::from_file(&config.rules).map_err(|e| e.to_string()),
        }
    }

    /// The rule set the store holds now. Reading needs no PIN: the firewall must run.
    pub fn from_store(store: &Store) -> Result<LoadedRules, String> {
        let current = store.rules().map_err(|e| e.to_string())?;
        let name = format!("store v{}", current.version);
        let overlay = store.overlay().map_err(|e| e.to_string())?;
        let rules = store.compile_with_overlay(&name, &current.text, overlay.as_ref())?;
        let mut version = match current.source {
            RulesSource::Current => name,
            RulesSource::PreviousFallback => {
                format!("{name} (the newest version is damaged)")
            }
        };
        if let Some(overlay) = &overlay {
            version.push_str(&format!(" + overlay v{}", overlay.version));
        }
        Ok(LoadedRules {
            rules,
            version,
            loaded_at: unix_now(),
        })
    }
}

/// FNV-1a: a stable fingerprint of the rule text, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub use serve::unix_now;

/// What changes when the rules do: the rule file's modification time, or the store's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesStamp {
    Modified(Option<SystemTime>),
    Version(Option<u64>),
}

impl RulesStamp {
    pub fn of(config: &Config, store: Option<&Store>) -> RulesStamp {
        match store {
            Some(store) => RulesStamp::Version(store.version().ok()),
            None => RulesStamp::Modified(
                std::fs::metadata(&config.rules)
                    .and_then(|m| m.modified())
                    .ok(),
            ),
        }
    }
}
