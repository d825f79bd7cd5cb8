//! Managed mode: the card enrolled with a policy server (`policyd`) takes its rules from
//! signed bundles only.
//!
//! - `cardfw enroll --server URL --token T --ca ca.pem` (PIN on stdin): the card makes its own
//!   key and certificate request, sends it with the one-time token over TLS checked against
//!   `ca.pem`, and pins what comes back in its sealed store ([`Enrolment`], a record of the store's): the CA, the policy
//!   key, the group, its certificate and key. From then on the rule editor is read-only.
//! - [`poller`]: keeps a long poll open; each bundle is checked ([`apply`]): signature under
//!   the pinned key, group, validity dates, version higher than the installed one. Only then
//!   is it installed as the store's next version and swapped in (with the CAs it carries for
//!   inspected sites, each checked as an owner's CA first); anything else is refused,
//!   logged and reported, and the rules in force stay. [`network`] tells it when the card's
//!   network comes up, so it asks at once instead of finishing a back-off.
//! - [`requests`]: sends the access requests users made on block pages (queued in the store)
//!   and reads back the administrator's answers.
//! - Overlays ([`apply_overlay`]): the rules the administrator approved for this card alone
//!   come as a second signed stream, a bundle for the group `card:<card id>` with its own
//!   versions (anti-rollback per card: a version not above the installed overlay's is
//!   refused), installed in `overlay.sealed` and compiled before the group's rules
//!   (`store::overlay`). The poll names both installed versions
//!   (`?after=N&overlay_after=M`); the answer's `x-cardwall-bundle-kind` says which it is.
//! - [`vpns`]: the overlay also carries the VPNs the server pushes to this card (issue 15),
//!   checked as the file's `[vpn.NAME]`, kept with the overlay, started locked; the card
//!   reports their public keys on its first check-in and after each change.
//! - `cardfw unenroll` (PIN on stdin) leaves the fleet; the rules in force stay.

pub mod network;
pub mod poller;
pub mod requests;
pub mod vpns;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::inspect::{OwnerCaError, OwnerCas};
use crate::store::{Enrolment, Store, StoreError};
use policy_client::{Client, ClientError, ClientIdentity};
use proto::policy::{self, EnrolRequest, EnrolResponse};
use rules::bundle::{self, BundleError, Trust, VerifyingKey};

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
    #[error("the bundle's trusted CAs are refused: {0}")]
    TrustedCa(#[from] OwnerCaError),
    #[error("the overlay is refused: {0}")]
    Overlay(#[from] crate::store::overlay::OverlayError),
    #[error("an overlay carries nothing but its rules and VPNs (no list files, no CAs)")]
    OverlayExtras,
    #[error("the pushed VPNs are refused: {0}")]
    Vpns(#[from] vpns::PushedVpnError),
    #[error("VPN settings come only in the card's own overlay, never in a group's bundle")]
    VpnsInGroupBundle,
    #[error("the overlay's rules do not compile with the card's: {0}")]
    OverlayRules(String),
    #[error("the enrolment record is damaged: {0}")]
    Record(String),
    #[error("the card is already enrolled with {0}: `cardfw unenroll` first")]
    AlreadyEnrolled(String),
    #[error("the card is not enrolled")]
    NotEnrolled,
}

/// The key bundles must be signed with, as the enrolment pinned it.
fn policy_key(enrolment: &Enrolment) -> Result<VerifyingKey, ManagedError> {
    bundle::public_key_from_pem(&enrolment.policy_key_pem)
        .map_err(|e| ManagedError::Record(e.to_string()))
}

/// A client that accepts only the pinned CA and presents the card's certificate.
pub fn client_for(enrolment: &Enrolment) -> Result<Client, ManagedError> {
    Ok(Client::new(
        &enrolment.server,
        &enrolment.ca_pem,
        Some(&ClientIdentity {
            certificate_pem: enrolment.certificate_pem.clone(),
            key_pem: enrolment.key_pem.clone(),
        }),
    )?)
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
    policy_key(&enrolment)?;
    client_for(&enrolment)?;
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

/// Checks a bundle against the enrolment and installs it. Returns the updated enrolment. The
/// caller then has [`crate::inspect::Inspection::reload_managed_cas`] trust the CAs it carries.
///
/// The bundle's format check (`rules::bundle`) knows only PEM; the CAs are checked here as
/// X.509 CAs usable as trust anchors, before anything is written, so a bundle whose CAs the
/// card would not trust is refused whole and reported, not installed without them.
pub fn apply(
    store: &Store,
    enrolment: &Enrolment,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Enrolment, ManagedError> {
    let key = policy_key(enrolment)?;
    let verified = bundle::verify(
        bytes,
        &Trust {
            key: &key,
            installed_version: enrolment.installed_version,
            group: &enrolment.group,
            now,
        },
    )?;
    // Each card has its own tunnel address: a group's bundle has no VPN to give.
    if verified.bundle.vpns.is_some() {
        return Err(ManagedError::VpnsInGroupBundle);
    }
    if let Some(cas) = &verified.bundle.trusted_cas {
        OwnerCas::from_pem(cas.as_bytes())?;
    }
    let updated = Enrolment {
        installed_version: verified.bundle.version,
        ..enrolment.clone()
    };
    store.install_bundle(&verified, &updated.emit())?;
    Ok(updated)
}

/// Checks an overlay bundle against the enrolment (the pinned key, the group
/// `card:<card id>`, dates, a version above the installed overlay's) and its VPNs against
/// `config` ([`vpns::pushed_vpns`]), and installs it. Returns the installed version. The
/// caller then reloads the rules and starts the VPNs ([`crate::vpn::added::start_added`]).
pub fn apply_overlay(
    store: &Store,
    enrolment: &Enrolment,
    config: &crate::config::Config,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, ManagedError> {
    let key = policy_key(enrolment)?;
    let installed = store.overlay()?.map_or(0, |o| o.version);
    let group = policy::overlay_group(&enrolment.card_id);
    let verified = bundle::verify(
        bytes,
        &Trust {
            key: &key,
            installed_version: installed,
            group: &group,
            now,
        },
    )?;
    let bundle = &verified.bundle;
    if !bundle.list_files.is_empty() || bundle.trusted_cas.is_some() {
        return Err(ManagedError::OverlayExtras);
    }
    crate::store::overlay::check_overlay(&bundle.rules.1)?;
    let overlay = crate::store::overlay::Overlay {
        version: bundle.version,
        text: bundle.rules.1.clone(),
        vpns: vpns::pushed_vpns(
            config,
            &crate::vpn::added::page_vpns(config, &store.page_vpns()?),
            bundle.vpns.as_deref(),
        )?,
    };
    // Compiled with the rules in force before it is installed: an overlay the card could not
    // run would otherwise stop every later reload, group bundles' too.
    let current = store.rules()?;
    store
        .compile_with_overlay("rules", &current.text, Some(&overlay))
        .map_err(ManagedError::OverlayRules)?;
    store.install_overlay(&overlay)?;
    Ok(bundle.version)
}
