//! The enrolment record: what the sealed store keeps about the policy server that manages
//! the card (the `managed.sealed` file). The store reads it to refuse local edits; `managed`
//! writes it when the card enrols and after each bundle, and talks to the server with it.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// What the sealed store keeps about the policy server (the `managed.sealed` file).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    pub server: String,
    pub card_id: String,
    pub group: String,
    /// The only CA accepted for the server.
    pub ca_pem: String,
    /// The only key bundles may be signed with.
    pub policy_key_pem: String,
    pub certificate_pem: String,
    pub key_pem: String,
    /// The version of the last bundle installed: anything not newer is refused.
    pub installed_version: u64,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("server", &self.server)
            .field("card_id", &self.card_id)
            .field("group", &self.group)
            .field("installed_version", &self.installed_version)
            .finish_non_exhaustive()
    }
}

impl Enrolment {
    pub fn parse(bytes: &[u8]) -> Option<Enrolment> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn emit(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serialises")
    }

    /// The store's enrolment, if the card is enrolled.
    pub fn load(store: &Store) -> Result<Option<Enrolment>, StoreError> {
        match store.managed_record()? {
            None => Ok(None),
            Some(bytes) => {
                Enrolment::parse(&bytes)
                    .map(Some)
                    .ok_or_else(|| StoreError::Unreadable {
                        file: super::MANAGED_FILE.to_string(),
                    })
            }
        }
    }

    /// For the card's page: who manages the rules.
    pub fn describe(&self) -> String {
        format!(
            "{} (group {}, card {}, bundle version {})",
            self.server, self.group, self.card_id, self.installed_version
        )
    }
}
