//! TLS inspection for chosen sites (issue 14): the card terminates the inside TLS connection
//! with a certificate from its own CA, checks the upstream server's certificate itself, and
//! relays HTTP in between, so path, method, content-type and size rules apply inside HTTPS.
//!
//! - [`ca`]: the card's CA, made at first use and kept sealed in the [`crate::store`]; its
//!   certificate and fingerprint are public, its key never leaves the store file; re-key with
//!   the PIN.
//! - [`leaf`]: leaf certificates minted per name (SAN set, a day of validity, random serial)
//!   and a bounded cache of them, served to rustls by the hello's SNI.
//! - [`upstream`]: the card's own TLS client: webpki over Mozilla's roots plus the added CAs,
//!   and a named [`upstream::CertReason`] for every refused server certificate, for the block
//!   page.
//! - [`client_cert`]: the user's client certificate, sealed in the store, presented to the
//!   sites a `client-cert` rule names only while the owner has unlocked it with the PIN.
//!
//! # How it plugs in
//!
//! [`Inspection`] holds the three for the running card (made at start when the card has a
//! store, kept in [`crate::firewall::Firewall::inspection`]); `proxy/tls.rs` and
//! `proxy/inspect.rs` use it:
//!
//! 1. **The rule.** An `https` rule takes the flag `inspect`; a hello matching such a rule is
//!    terminated, every other hello is spliced as today (so a pinned app breaks only where the
//!    owner asked for inspection).
//! 2. **Terminating.** `proxy/tls.rs` has already read the ClientHello to decide; for an
//!    `inspect` decision it replays the buffered hello into a rustls server connection whose
//!    config comes from [`leaf::LeafCache::server_config`] (the resolver mints or reuses the
//!    leaf for the SNI; a hello without SNI gets the original destination's address). ALPN
//!    offers `h2` and `http/1.1`.
//! 3. **Upstream.** The card connects to the original destination with
//!    [`upstream::UpstreamTls::client_config`] (built once per trust, so sessions resume) and
//!    the SNI the client sent; a `client-cert` rule takes
//!    [`upstream::UpstreamTls::presenting_config`] instead, and a locked certificate ends in a
//!    page saying so before any handshake. A refused certificate ends in the block page (over the inside TLS session)
//!    naming [`upstream::CertReason::code`] and its sentence, never in a forged certificate for a
//!    server that did not prove itself.
//! 4. **HTTP.** The two TLS streams are joined by the HTTP relay, every request going through
//!    the same decide-and-record call as plain HTTP, so a denied path in HTTPS gets the same
//!    block page and the same log line.
//!
//! Also wired: the CA's certificate and fingerprint on the card page (`/inspection-ca`) and
//! from `cardfw inspection-ca`; the CA's re-key and the owner's CAs ([`owner_cas`]) on the
//! card page (`/inspection`), both taking effect at once; owner CAs from the file
//! `[inspect] trusted_cas` too; `inspect` rules in managed bundles (they are rule text), and
//! the CAs a managed bundle carries (never private keys: see `rules::bundle`), trusted from
//! the install on ([`Inspection::reload_managed_cas`]) and counted on the card page.
//!
//! Missing intermediates are fetched from the leaf's AIA URL where the rules allow that URL
//! (`proxy/aia.rs`, kept in [`Intermediates`]); the user's client certificate is presented to
//! `client-cert` sites while unlocked ([`client_cert`]).
//!
//! Stapled OCSP responses are checked ([`ocsp`]).
//!
//! Inspection runs inside CONNECT tunnels of the explicit proxy too (`proxy/http/connect.rs`
//! hands the tunnel's hello to the same path), and WebSockets on inspected sites are relayed
//! (`proxy/inspect.rs`).

pub mod ca;
pub mod client_cert;
pub mod leaf;
pub mod ocsp;
pub mod owner_cas;
pub mod upstream;

/// Also the PKI and handshake helpers of other modules' tests (a managed bundle's CAs).
#[cfg(test)]
pub(crate) mod tests;

pub use ca::{CaError, CardCa};
pub use client_cert::{ClientCertError, ClientIdentity, IdentityState, StoredIdentity, Unlock};
pub use leaf::{LeafCache, LeafResolver, Subject};
pub use owner_cas::{OwnerCa, OwnerCaError, OwnerCas};
pub use upstream::{Alpn, CertReason, Intermediates, Refused, UpstreamError, UpstreamTls};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;

use crate::store::{AdminSession, AuditEvent, Store};

/// ALPN the card offers on both sides of an inspected connection, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why inspection could not be set up at start, or a change on the card page was refused.
#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("reading the trusted CAs in {path}: {why}")]
    TrustedCas { path: String, why: String },
    #[error(transparent)]
    OwnerCa(#[from] OwnerCaError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    ClientCert(#[from] ClientCertError),
}

/// Everything an inspected connection needs: the leaves for the inside, the trust for the
/// outside. The CA (inside [`LeafCache`]) and the trust are swapped in place when the owner
/// re-keys or adds a CA on the card page; connections already open keep what they started
/// with.
#[derive(Debug)]
pub struct Inspection {
    pub leaves: Arc<LeafCache>,
    upstream: ArcSwap<UpstreamTls>,
    /// The user's client certificate, presented through [`UpstreamTls::presenting_config`].
    pub client_identity: Arc<ClientIdentity>,
    /// Intermediates fetched from AIA URLs (`proxy/aia.rs`), offered to every trust.
    pub intermediates: Arc<Intermediates>,
    /// The CAs from the config file (`[inspect] trusted_cas`), trusted with the owner's.
    file_cas: Vec<CertificateDer<'static>>,
    /// The CAs added on the card page and by the policy server, as in the store; the lock also
    /// keeps two changes from interleaving their read and write of the store, and from
    /// building the trust from a mix of old and new lists.
    added: Mutex<AddedCas>,
}

/// The CAs trusted beside Mozilla's roots and the file's, by who added them.
#[derive(Debug, Default)]
struct AddedCas {
    /// Added by the owner on the card page.
    owner: OwnerCas,
    /// Carried by the installed policy bundle (read-only on the card).
    managed: OwnerCas,
}

impl Inspection {
    /// The card's CA from `store` (made there on first use), and upstream trust in Mozilla's
    /// roots plus the CAs in the PEM file `trusted_cas` and those the owner added on the page.
    /// Added CAs that no longer open are left out (and logged): trusting fewer is safe, and the
    /// page says so and lets the owner add them again. The client certificate starts locked
    /// and locks again after `client_cert_idle` without use.
    pub fn start(
        store: &Store,
        trusted_cas: Option<&Path>,
        client_cert_idle: Duration,
    ) -> Result<Inspection, InspectionError> {
        let ca = Arc::new(CardCa::load_or_create(store)?);
        let file_cas = match trusted_cas {
            Some(path) => read_pem_certificates(path)?,
            None => Vec::new(),
        };
        let added = AddedCas {
            owner: OwnerCas::load(store).unwrap_or_else(|error| {
                tracing::warn!(%error, "the CAs added on the card page do not open: none trusted");
                OwnerCas::default()
            }),
            managed: OwnerCas::load_managed(store).unwrap_or_else(|error| {
                tracing::warn!(%error, "the policy server's CAs do not open: none trusted");
                OwnerCas::default()
            }),
        };
        let client_identity = Arc::new(ClientIdentity::load(store, client_cert_idle));
        let intermediates = Arc::default();
        let upstream = trust(&file_cas, &added, &client_identity, &intermediates)?;
        Ok(Inspection {
            leaves: Arc::new(LeafCache::new(ca, leaf::CACHE_CAPACITY)),
            upstream: ArcSwap::from_pointee(upstream),
            client_identity,
            intermediates,
            file_cas,
            added: Mutex::new(added),
        })
    }

    /// The CA that signs the leaves now.
    pub fn ca(&self) -> Arc<CardCa> {
        self.leaves.ca()
    }

    /// The trust for upstream connections now.
    pub fn upstream(&self) -> Arc<UpstreamTls> {
        self.upstream.load_full()
    }

    /// The CAs the owner added, as in the store.
    pub fn owner_cas(&self) -> OwnerCas {
        self.lock_added().owner.clone()
    }

    /// The CAs the installed policy bundle carries.
    pub fn managed_cas(&self) -> OwnerCas {
        self.lock_added().managed.clone()
    }

    /// Trusts the CAs the store's installed policy bundle carries (none when it carries none)
    /// instead of the previous bundle's, at once; called after every install. Returns how many.
    pub fn reload_managed_cas(&self, store: &Store) -> Result<usize, InspectionError> {
        let mut held = self.lock_added();
        let managed = OwnerCas::load_managed(store)?;
        let count = managed.len();
        let changed = AddedCas {
            owner: held.owner.clone(),
            managed,
        };
        self.upstream.store(Arc::new(self.trust(&changed)?));
        *held = changed;
        Ok(count)
    }

    /// How many CAs the config file adds.
    pub fn file_ca_count(&self) -> usize {
        self.file_cas.len()
    }

    /// A new CA ([`CardCa::rekey`]), signing every leaf from the next handshake on.
    pub fn rekey(&self, session: &AdminSession<'_>) -> Result<Arc<CardCa>, InspectionError> {
        let ca = Arc::new(CardCa::rekey(session)?);
        self.leaves.replace_ca(ca.clone());
        Ok(ca)
    }

    /// Trusts `added` too (checked by [`OwnerCas::parse_upload`]), in the store and at once.
    pub fn add_owner_cas(
        &self,
        session: &AdminSession<'_>,
        added: Vec<OwnerCa>,
    ) -> Result<usize, InspectionError> {
        self.change_owner_cas(
            session,
            |cas| cas.with(added),
            |count| AuditEvent::OwnerCaAdded { count },
        )
    }

    /// Stops trusting the added CA with `fingerprint`, in the store and at once.
    pub fn remove_owner_ca(
        &self,
        session: &AdminSession<'_>,
        fingerprint: &str,
    ) -> Result<usize, InspectionError> {
        self.change_owner_cas(
            session,
            |cas| cas.without(fingerprint),
            |count| AuditEvent::OwnerCaRemoved { count },
        )
    }

    /// The trust is built before the store is written, so a CA webpki would refuse changes
    /// nothing; the running trust is replaced only after the store holds the new list.
    fn change_owner_cas(
        &self,
        session: &AdminSession<'_>,
        change: impl FnOnce(&OwnerCas) -> Result<OwnerCas, OwnerCaError>,
        event: impl FnOnce(u64) -> AuditEvent,
    ) -> Result<usize, InspectionError> {
        let mut held = self.lock_added();
        let changed = AddedCas {
            owner: change(&held.owner)?,
            managed: held.managed.clone(),
        };
        let upstream = self.trust(&changed)?;
        let count = changed.owner.len();
        changed
            .owner
            .save(session, event(count as u64))
            .map_err(OwnerCaError::from)?;
        self.upstream.store(Arc::new(upstream));
        *held = changed;
        Ok(count)
    }

    /// The trust with `added` in place of the CAs added now.
    fn trust(&self, added: &AddedCas) -> Result<UpstreamTls, UpstreamError> {
        trust(
            &self.file_cas,
            added,
            &self.client_identity,
            &self.intermediates,
        )
    }

    fn lock_added(&self) -> std::sync::MutexGuard<'_, AddedCas> {
        // The lists are replaced whole: a panic cannot leave them half changed.
        self.added.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Mozilla's roots, the config file's CAs and the added ones; the user's certificate for the
/// sites that ask for it; the fetched intermediates.
fn trust(
    file_cas: &[CertificateDer<'static>],
    added: &AddedCas,
    identity: &Arc<ClientIdentity>,
    intermediates: &Arc<Intermediates>,
) -> Result<UpstreamTls, UpstreamError> {
    let cas: Vec<_> = file_cas
        .iter()
        .chain(added.owner.iter().map(OwnerCa::der))
        .chain(added.managed.iter().map(OwnerCa::der))
        .cloned()
        .collect();
    UpstreamTls::new(
        &cas,
        Vec::new(),
        Some(identity.clone()),
        intermediates.clone(),
    )
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, InspectionError> {
    let failed = |why: String| InspectionError::TrustedCas {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let blocks = pem::parse_many(text).map_err(|e| failed(e.to_string()))?;
    let certificates: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certificates.is_empty() {
        return Err(failed("no CERTIFICATE block".into()));
    }
    Ok(certificates)
}
