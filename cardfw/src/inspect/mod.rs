//! TLS inspection for chosen sites (issue 14): the card terminates the inside TLS connection
//! with a certificate from its own CA, checks the upstream server's certificate itself, and
//! relays HTTP in between, so path, method, content-type and size rules apply inside HTTPS.
//!
//! - [`ca`]: the card's CA, made at first use and kept sealed in the [`crate::store`]; its
//!   certificate and fingerprint are public, its key never leaves the store file; re-key with
//!   the PIN.
//! - [`leaf`]: leaf certificates minted per name (SAN set, a day of validity, random serial)
//!   and a bounded cache of them, served to rustls by the hello's SNI.
//! - [`upstream`]: the card's own TLS client: webpki over Mozilla's roots plus the owner's CAs,
//!   and a named [`upstream::CertReason`] for every refused server certificate, for the block
//!   page.
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
//!    [`upstream::UpstreamTls::client_config`], the SNI the client sent, and the same ALPN the
//!    client chose. A refused certificate ends in the block page (over the inside TLS session)
//!    naming [`upstream::CertReason::code`] and its sentence, never in a forged certificate for a
//!    server that did not prove itself.
//! 4. **HTTP.** The two TLS streams are joined by the HTTP relay, every request going through
//!    the same decide-and-record call as plain HTTP, so a denied path in HTTPS gets the same
//!    block page and the same log line.
//!
//! Also wired: the CA's certificate and fingerprint on the card page (`/inspection-ca`) and
//! from `cardfw inspection-ca`; owner CAs from the file `[inspect] trusted_cas` (not yet added
//! on the card page); `inspect` rules in managed bundles (they are rule text).
//!
//! Still to come: the user's client certificate (sealed, unlocked with the PIN, presented
//! through the client config's certificate resolver), the CA re-key and owner CAs on the card
//! page, extra trusted CAs in managed bundles (never private keys), intermediates fetched by
//! AIA, inspection inside CONNECT tunnels of the explicit proxy.

pub mod ca;
pub mod leaf;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use ca::{CaError, CardCa};
pub use leaf::{LeafCache, LeafResolver, Subject};
pub use upstream::{CertReason, UpstreamError, UpstreamTls};

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::store::Store;

/// ALPN the card offers on both sides of an inspected connection, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why inspection could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("reading the trusted CAs in {path}: {why}")]
    TrustedCas { path: String, why: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Everything an inspected connection needs: the leaves for the inside, the trust for the
/// outside.
#[derive(Debug)]
pub struct Inspection {
    pub ca: Arc<CardCa>,
    pub leaves: Arc<LeafCache>,
    pub upstream: UpstreamTls,
}

impl Inspection {
    /// The card's CA from `store` (made there on first use), and upstream trust in Mozilla's
    /// roots plus the CAs in the PEM file `trusted_cas`.
    pub fn start(store: &Store, trusted_cas: Option<&Path>) -> Result<Inspection, InspectionError> {
        let ca = Arc::new(CardCa::load_or_create(store)?);
        let owner_cas = match trusted_cas {
            Some(path) => read_pem_certificates(path)?,
            None => Vec::new(),
        };
        Ok(Inspection {
            leaves: Arc::new(LeafCache::new(ca.clone(), leaf::CACHE_CAPACITY)),
            ca,
            upstream: UpstreamTls::new(&owner_cas, Vec::new())?,
        })
    }
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
