//! Managed mode: the card enrolled with a policy server (`policyd`) takes its rules from
//! signed bundles only.
//!
//! - `cardfw enroll --server URL --token T --ca ca.pem` (PIN on stdin): the card makes its own
//!   key and certificate request, sends it with the one-time token over TLS checked against
//!   `ca.pem`, and pins what comes back in its sealed store ([`Enrolment`]): the CA, the policy
//!   key, the group, its certificate and key. From then on the rule editor is read-only.
//! - [`poller`]: keeps a long poll open; each bundle is checked ([`apply`]): signature under
//!   the pinned key, group, validity dates, version higher than the installed one. Only then
//!   is it installed as the store's next version and swapped in; anything else is refused,
//!   logged and reported, and the rules in force stay. [`network`] tells it when the card's
//!   network comes up, so it asks at once instead of finishing a back-off.
//! - `cardfw unenroll` (PIN on stdin) leaves the fleet; the rules in force stay.

pub mod network;
pub mod poller;

#[cfg(test)]
mod tests;

use std::time::Duration;

use policy_client::{Client, ClientError, ClientIdentity};
use proto::policy::{self, EnrolRequest, EnrolResponse};
use rules::bundle::{self, BundleError, Trust, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Time for the enrolment call.
const ENROL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not reached, refused, or answered with something else than an enrolment.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the bundle is refused: {0}")]
    Bundle(#[from] BundleError),
    #[error("the enrolment record is damaged: {0}")]
    Record(String),
    #[error("the card is already enrolled with {0}: `cardfw unenroll` first")]
    AlreadyEnrolled(String),
    #[error("the card is not enrolled")]
    NotEnrolled,
}

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
    pub fn load(store: &Store) -> Result<Option<Enrolment>, ManagedError> {
        match store.managed_record()? {
            None => Ok(None),
            Some(bytes) => Enrolment::parse(&bytes)
                .map(Some)
                .ok_or_else(|| ManagedError::Record("not an enrolment record".into())),
        }
    }

    /// For the card's page: who manages the rules.
    pub fn describe(&self) -> String {
        format!(
            "{} (group {}, card {}, bundle version {})",
            self.server, self.group, self.card_id, self.installed_version
        )
    }

    pub fn policy_key(&self) -> Result<VerifyingKey, ManagedError> {
        bundle::public_key_from_pem(&self.policy_key_pem)
            .map_err(|e| ManagedError::Record(e.to_string()))
    }

    /// A client that accepts only the pinned CA and presents the card's certificate.
    pub fn client(&self) -> Result<Client, ManagedError> {
        Ok(Client::new(
            &self.server,
            &self.ca_pem,
            Some(&ClientIdentity {
                certificate_pem: self.certificate_pem.clone(),
                key_pem: self.key_pem.clone(),
            }),
        )?)
    }
}

/// The enrolment call: a new key and CSR, the token, the answer. Nothing is stored here.
pub async fn request_enrolment(
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<Enrolment, ManagedError> {
    let client = Client::new(server, ca_pem, None)?;
    let (key_pem, csr_pem) = policy_client::new_key_and_csr()?;
    let request = EnrolRequest {
        token: token.trim().to_string(),
        csr_pem,
    };
    let response: EnrolResponse = client
        .post_json(
            policy::ENROL_PATH,
            &[],
            &request,
            ENROL_TIMEOUT,
            policy::MAX_JSON_BODY,
        )
        .await?
        .success()?
        .json()?;
    // The CA the server was checked against is the one pinned, whatever the answer says.
    let enrolment = Enrolment {
        server: client.server().to_string(),
        card_id: response.card_id,
        group: response.group,
        ca_pem: ca_pem.to_string(),
        policy_key_pem: response.policy_key_pem,
        certificate_pem: response.certificate_pem,
        key_pem,
        installed_version: 0,
    };
    enrolment.policy_key()?;
    enrolment.client()?;
    Ok(enrolment)
}

/// `cardfw enroll`: checks the PIN first (a wrong one costs a try and spends no token), then
/// enrols and pins the result.
pub fn enroll(
    store: &Store,
    pin: &str,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<Enrolment, ManagedError> {
    if let Some(existing) = Enrolment::load(store)? {
        return Err(ManagedError::AlreadyEnrolled(existing.server));
    }
    let session = store.login(pin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ManagedError::Runtime)?;
    let enrolment = runtime.block_on(request_enrolment(server, ca_pem, token))?;
    session.set_managed(Some(&enrolment.emit()))?;
    Ok(enrolment)
}

/// `cardfw unenroll`: needs the PIN; the rules in force stay.
pub fn unenroll(store: &Store, pin: &str) -> Result<Enrolment, ManagedError> {
    let enrolment = Enrolment::load(store)?.ok_or(ManagedError::NotEnrolled)?;
    store.login(pin)?.set_managed(None)?;
    Ok(enrolment)
}

/// Checks a bundle against the enrolment and installs it. Returns the updated enrolment.
pub fn apply(
    store: &Store,
    enrolment: &Enrolment,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Enrolment, ManagedError> {
    let key = enrolment.policy_key()?;
    let verified = bundle::verify(
        bytes,
        &Trust {
            key: &key,
            installed_version: enrolment.installed_version,
            group: &enrolment.group,
            now,
        },
    )?;
    let updated = Enrolment {
        installed_version: verified.bundle.version,
        ..enrolment.clone()
    };
    store.install_bundle(&verified, &updated.emit())?;
    Ok(updated)
}
