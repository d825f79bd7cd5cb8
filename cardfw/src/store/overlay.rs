//! The card's overlay (issue 16): the rules the policy server's administrator approved for
//! this one card, from a bundle signed for the group `card:<card id>` with its own version
//! sequence (see `managed::apply_overlay`), kept in `overlay.sealed` with its version.
//!
//! The overlay's rules come **before** the group's in the rules in force: the merged policy is
//! the overlay's rules, then the group's rules, `default` and lists. Every overlay rule is
//! named `overlay-…` ([`proto::policy::OVERLAY_RULE_PREFIX`]), so the status page, explain
//! and block pages show which rules come from the overlay; the group's unnamed rules keep
//! their `file:line` ids, as their lines do not move. An overlay holds nothing but such rules:
//! a `default` or a `list` in it is refused ([`check_overlay`]), so it can add exceptions
//! and never change what the group's rules mean otherwise.
//!
//! The same file keeps the VPNs the policy server pushed to this card (issue 15), which come
//! in the overlay bundle: one atomic write installs both, so a power cut leaves the last good
//! overlay whole, its VPNs included.

use proto::policy::{OVERLAY_RULE_PREFIX, OVERLAY_RULES_NAME};
use serde::{Deserialize, Serialize};

use super::{OVERLAY_FILE, Store, StoreError, redact_list_diagnostics};

/// The installed overlay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Anything not newer is refused.
    pub version: u64,
    pub text: String,
    /// The VPNs the policy server pushed, already checked (`crate::managed::pushed_vpns`).
    /// Absent from files written before managed VPNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpns: Vec<proto::policy::ManagedVpn>,
}

/// Why an overlay's text is refused.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("the overlay's rules do not parse:\n{0}")]
    Rules(rules::Diagnostics),
    #[error("an overlay holds only rules: `default` and `list` belong to the group's bundle")]
    NotOnlyRules,
    #[error("overlay rule on line {line} is not named `{OVERLAY_RULE_PREFIX}…`")]
    Unnamed { line: u32 },
}

/// Parses an overlay's text and checks it holds only `overlay-…` rules.
pub fn check_overlay(text: &str) -> Result<rules::Policy, OverlayError> {
    let policy = rules::parse(OVERLAY_RULES_NAME, text).map_err(OverlayError::Rules)?;
    if policy.default.is_some() || !policy.lists.is_empty() {
        return Err(OverlayError::NotOnlyRules);
    }
    if let Some(rule) = policy.rules.iter().find(|r| {
        !r.name
            .as_deref()
            .is_some_and(|n| n.starts_with(OVERLAY_RULE_PREFIX))
    }) {
        return Err(OverlayError::Unnamed { line: rule.line });
    }
    Ok(policy)
}

impl Store {
    /// The installed overlay, if the card has one.
    pub fn overlay(&self) -> Result<Option<Overlay>, StoreError> {
        match self.read_sealed_if_present(OVERLAY_FILE)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|_| StoreError::Unreadable {
                        file: OVERLAY_FILE.into(),
                    })
            }
        }
    }

    /// Installs a verified overlay (its signature, group and version were checked by the
    /// caller, its text by [`check_overlay`]) in one atomic write. No PIN: the policy key's
    /// signature is the authority, as for a group bundle.
    pub fn install_overlay(&self, overlay: &Overlay) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.write_sealed(
            OVERLAY_FILE,
            &serde_json::to_vec(overlay).expect("plain data serialises"),
        )?;
        self.append_audit(super::AuditEvent::OverlayInstalled {
            version: overlay.version,
        })
    }

    /// Compiles the group's rules `text` (named `name`) with the installed overlay's rules in
    /// front of them; without an overlay, [`Store::compile`].
    pub fn compile_with_overlay(
        &self,
        name: &str,
        text: &str,
        overlay: Option<&Overlay>,
    ) -> Result<rules::RuleSet, String> {
        let Some(overlay) = overlay else {
            return self.compile(name, text).map_err(|d| d.to_string());
        };
        let extra = check_overlay(&overlay.text).map_err(|e| e.to_string())?;
        let group = rules::parse(name, text).map_err(|d| d.to_string())?;
        let merged = rules::Policy {
            default: group.default,
            lists: group.lists,
            rules: extra.rules.into_iter().chain(group.rules).collect(),
        };
        rules::RuleSet::compile(name, &merged, &self.lists())
            .map_err(|d| redact_list_diagnostics(name, d).to_string())
    }
}
