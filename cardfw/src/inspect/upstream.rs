//! The card's own TLS client for inspected connections, and what it says when a server's
//! certificate is refused.
//!
//! Server certificates are checked on the card (seed 000, 3.1) by rustls' webpki verifier
//! against Mozilla's roots (compiled in by `webpki-roots`) plus the CAs the owner added. Every
//! refusal is a [`CertReason`] with a stable [`CertReason::code`] and a sentence for the block
//! page; a refused server never gets a forged certificate shown for it.
//!
//! # Incomplete chains
//!
//! webpki reports a chain it cannot build as "unknown issuer", whether the issuer is unknown or
//! the server simply did not send its intermediate. [`CardVerifier`] tells them apart by what the
//! server sent: no intermediate at all, and a leaf whose issuer is not itself and not one of the
//! trusted roots, is [`CertReason::IncompleteChain`]. Without fetching the issuer the card
//! cannot tell a missing intermediate from a leaf signed directly by an unknown root; real
//! public CAs always issue through intermediates, so the first is by far the likely one.
//!
//! Such a refusal carries the leaf's AIA "CA Issuers" URL ([`Refused::ca_issuers`]). The
//! inspecting proxy fetches it only when the rules allow that URL as a plain `http` request
//! (`proxy/aia.rs`), keeps the CA certificate it gets in [`Intermediates`], and connects again:
//! the verifier then offers the fetched certificate to webpki as the missing link, so the
//! chain still has to end at a trusted root (a fetched certificate adds no trust, only a path).
//! Browsers do the same (Chromium and Firefox fetch or preload intermediates).

//! # Revocation: what is and is not checked
//!
//! - **Stapled OCSP is checked** ([`super::ocsp`]): a staple that verifies (signed by the
//!   issuer or its authorised responder, current, naming this certificate) and says
//!   `revoked` refuses the site as [`CertReason::Revoked`]; one that does not verify is
//!   ignored like an absent one. Without a staple the card does not ask the CA's responder
//!   itself (public CAs are retiring OCSP: Let's Encrypt ended its service in 2025), so a
//!   revoked certificate served without a staple passes, as in Chromium.
//! - **CRLs are checked when given**: [`UpstreamTls::new`] takes CRLs (DER); with any, the end
//!   entity's revocation is checked against them ([`CertReason::Revoked`]), and a certificate
//!   none of them covers is allowed (unknown status is not a refusal, as in browsers). The card
//!   does not download CRLs by itself yet.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;

use super::ocsp::{self, Staple};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, OtherError, RootCertStore,
};

/// Why the card refused an upstream server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertReason {
    Expired,
    NotYetValid,
    /// The certificate does not name the host the client asked for.
    WrongName,
    /// The chain ends at a CA that is neither one of Mozilla's roots nor one the owner added.
    UnknownIssuer,
    /// The server sent its certificate without the intermediate that links it to a root.
    IncompleteChain,
    /// A CRL the card holds lists the certificate.
    Revoked,
    /// Anything else, in rustls' words (a bad signature, a wrong purpose, bad encoding…).
    Other(String),
}

impl CertReason {
    /// A stable code for logs, counters and tests; it never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            CertReason::Expired => "cert-expired",
            CertReason::NotYetValid => "cert-not-yet-valid",
            CertReason::WrongName => "cert-wrong-name",
            CertReason::UnknownIssuer => "cert-unknown-issuer",
            CertReason::IncompleteChain => "cert-incomplete-chain",
            CertReason::Revoked => "cert-revoked",
            CertReason::Other(_) => "cert-invalid",
        }
    }

    /// The reason found in a handshake error: the one [`CardVerifier`] recorded, or rustls' own
    /// certificate error named the same way. `None` when the handshake failed for another
    /// reason than the certificate.
    pub fn of(error: &Error) -> Option<CertReason> {
        let Error::InvalidCertificate(error) = error else {
            return None;
        };
        Some(match error {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertReason::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertReason::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertReason::WrongName
            }
            CertificateError::UnknownIssuer => CertReason::UnknownIssuer,
            CertificateError::Revoked => CertReason::Revoked,
            CertificateError::Other(OtherError(other)) => other
                .downcast_ref::<Refused>()
                .map(|refused| refused.reason.clone())
                .unwrap_or_else(|| CertReason::Other(other.to_string())),
            other => CertReason::Other(other.to_string()),
        })
    }

    /// [`CertReason::of`] for the `io::Error` a tokio-rustls connect returns.
    pub fn of_io(error: &io::Error) -> Option<CertReason> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .and_then(CertReason::of)
    }
}

/// The sentence the block page shows.
impl fmt::Display for CertReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertReason::Expired => f.write_str("the server's certificate has expired"),
            CertReason::NotYetValid => f.write_str(
                "the server's certificate is not valid yet (or the card's clock is behind)",
            ),
            CertReason::WrongName => {
                f.write_str("the server's certificate is for another name than the one asked for")
            }
            CertReason::UnknownIssuer => f.write_str(
                "the server's certificate was issued by a CA the card does not trust \
                 (add it on the card page if you trust it)",
            ),
            CertReason::IncompleteChain => f.write_str(
                "the server sent its certificate without the intermediate certificate that \
                 links it to a trusted CA (a server misconfiguration)",
            ),
            CertReason::Revoked => f.write_str("the server's certificate has been revoked"),
            CertReason::Other(why) => write!(f, "the server's certificate was refused: {why}"),
        }
    }
}

impl std::error::Error for CertReason {}

/// What [`CardVerifier`] puts in the error of a refused certificate: the reason, and for an
/// incomplete chain where to fetch the missing issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: CertReason,
    /// The leaf's AIA "CA Issuers" URL, for [`CertReason::IncompleteChain`].
    pub ca_issuers: Option<String>,
}

impl Refused {
    /// The refusal in a tokio-rustls connect error, when the verifier made one.
    pub fn of_io(error: &io::Error) -> Option<&Refused> {
        let Error::InvalidCertificate(CertificateError::Other(OtherError(other))) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())?
        else {
            return None;
        };
        other.downcast_ref::<Refused>()
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// How many fetched intermediates the card keeps.
pub const INTERMEDIATES_CAPACITY: usize = 64;

/// Intermediate CA certificates fetched from servers' AIA URLs, by subject; the least recently
/// used is forgotten first. Kept across trust changes (they add no trust, only paths).
#[derive(Debug)]
pub struct Intermediates {
    by_subject: Mutex<LruCache<Vec<u8>, CertificateDer<'static>>>,
}

impl Default for Intermediates {
    fn default() -> Self {
        Intermediates {
            by_subject: Mutex::new(LruCache::new(INTERMEDIATES_CAPACITY)),
        }
    }
}

impl Intermediates {
    /// Keeps `certificate`, which must be a CA certificate webpki can read.
    pub fn insert(&self, certificate: CertificateDer<'static>) -> Result<(), Error> {
        let not_ca = || Error::General("the certificate is not a CA certificate".into());
        let (rest, cert) =
            x509_parser::parse_x509_certificate(&certificate).map_err(|_| not_ca())?;
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(c)) if c.value.ca);
        if !rest.is_empty() || !is_ca {
            return Err(not_ca());
        }
        let subject = webpki::anchor_from_trusted_cert(&certificate)
            .map_err(|e| Error::General(format!("not a usable CA certificate: {e}")))?
            .subject
            .as_ref()
            .to_vec();
        self.lock().insert(subject, certificate);
        Ok(())
    }

    /// The kept certificate whose subject is `subject` (DER, without the outer SEQUENCE).
    fn issuer_of(&self, subject: &[u8]) -> Option<CertificateDer<'static>> {
        self.lock().get(subject).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Vec<u8>, CertificateDer<'static>>> {
        // Whole entries only: a panic cannot leave one half written.
        self.by_subject.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the upstream TLS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("an added CA certificate is not usable: {0}")]
    BadOwnerCa(Error),
    #[error("the certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the TLS client: {0}")]
    Tls(#[from] Error),
}

/// Which protocols the card offers a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1` ([`super::ALPN`]): the connection an inspected client's requests
    /// share; hyper speaks whichever the site picks.
    Any,
    /// `http/1.1` only: for a WebSocket upgrade, which HTTP/2 would carry only with the
    /// extended CONNECT few sites offer.
    Http1,
}

/// The card's TLS client for inspected sites: Mozilla's roots and the owner's CAs. Its client
/// configurations are built once per trust (not per connection), so their session caches let
/// the card resume TLS with a site it spoke to before.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// By [`Alpn`]: `Any`, then `Http1`.
    anonymous: [Arc<ClientConfig>; 2],
    /// For sites whose rule says `client-cert`: presents the user's certificate through
    /// `identity` while it is unlocked. Never resumes: a resumed TLS 1.3 session counts as
    /// authenticated by the certificate of the full handshake, which would outlive a lock.
    presenting: Option<[Arc<ClientConfig>; 2]>,
}

impl UpstreamTls {
    /// Mozilla's roots plus `owner_cas` (DER), with `crls` checked for end entities (see the
    /// module documentation on revocation); `identity` answers servers that ask for a client
    /// certificate on `client-cert` sites; `intermediates` completes chains sent without
    /// their intermediate.
    pub fn new(
        owner_cas: &[CertificateDer<'_>],
        crls: Vec<CertificateRevocationListDer<'static>>,
        identity: Option<Arc<dyn ResolvesClientCert>>,
        intermediates: Arc<Intermediates>,
    ) -> Result<UpstreamTls, UpstreamError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for ca in owner_cas {
            roots
                .add(ca.clone().into_owned())
                .map_err(UpstreamError::BadOwnerCa)?;
        }
        let root_subjects = roots
            .roots
            .iter()
            .map(|anchor| anchor.subject.as_ref().to_vec())
            .collect();
        let mut builder =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !crls.is_empty() {
            builder = builder
                .with_crls(crls)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = Arc::new(CardVerifier {
            webpki: builder.build()?,
            root_subjects,
            intermediates,
        });
        let client = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(verifier.clone())
                })
        };
        let both_alpns = |config: ClientConfig| {
            let offering = |alpn: &[&[u8]]| {
                let mut config = config.clone();
                config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                Arc::new(config)
            };
            [offering(&super::ALPN), offering(&[b"http/1.1"])]
        };
        let presenting = match identity {
            Some(identity) => {
                let mut config = client()?.with_client_cert_resolver(identity);
                config.resumption = Resumption::disabled();
                Some(both_alpns(config))
            }
            None => None,
        };
        Ok(UpstreamTls {
            anonymous: both_alpns(client()?.with_no_client_auth()),
            presenting,
        })
    }

    /// The configuration for an inspected site: TLS 1.2 and 1.3, this trust, `alpn`, no
    /// client certificate.
    pub fn client_config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        self.anonymous[alpn as usize].clone()
    }

    /// The configuration for a `client-cert` site, presenting the user's certificate while it
    /// is unlocked; `None` when this client was built without an identity.
    pub fn presenting_config(&self, alpn: Alpn) -> Option<Arc<ClientConfig>> {
        Some(self.presenting.as_ref()?[alpn as usize].clone())
    }
}

/// The webpki verifier, with every refusal turned into a [`CertReason`] carried in
/// `CertificateError::Other` (read back with [`CertReason::of`]).
#[derive(Debug)]
pub struct CardVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The subjects of every trusted root, DER without the outer SEQUENCE (as webpki gives a
    /// certificate's issuer), to tell an incomplete chain from an unknown issuer.
    root_subjects: HashSet<Vec<u8>>,
    intermediates: Arc<Intermediates>,
}

impl CardVerifier {
    fn refused(
        &self,
        error: &Error,
        end_entity: &CertificateDer<'_>,
        sent_intermediates: bool,
    ) -> Refused {
        let reason = CertReason::of(error).unwrap_or_else(|| CertReason::Other(error.to_string()));
        let unrefined = |reason| Refused {
            reason,
            ca_issuers: None,
        };
        if reason != CertReason::UnknownIssuer || sent_intermediates {
            return unrefined(reason);
        }
        match webpki::EndEntityCert::try_from(end_entity) {
            Ok(leaf)
                if leaf.issuer() != leaf.subject()
                    && !self.root_subjects.contains(leaf.issuer()) =>
            {
                Refused {
                    reason: CertReason::IncompleteChain,
                    ca_issuers: ca_issuers_url(end_entity),
                }
            }
            _ => unrefined(reason),
        }
    }
}

/// The AIA "CA Issuers" URL of `certificate` (RFC 5280 4.2.2.1), the first `http:` one.
fn ca_issuers_url(certificate: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(certificate).ok()?;
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => aia
                .accessdescs
                .iter()
                .filter(|desc| {
                    desc.access_method
                        == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS
                })
                .find_map(|desc| match &desc.access_location {
                    GeneralName::URI(uri) if uri.starts_with("http://") => Some((*uri).to_owned()),
                    _ => None,
                }),
            _ => None,
        })
}

impl ServerCertVerifier for CardVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // A server that sent no intermediate: one fetched earlier may be the missing link.
        let fetched: Vec<_> = if intermediates.is_empty() {
            webpki::EndEntityCert::try_from(end_entity)
                .ok()
                .and_then(|leaf| self.intermediates.issuer_of(leaf.issuer()))
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        let offered = if fetched.is_empty() {
            intermediates
        } else {
            &fetched[..]
        };
        let refuse = |refused: Refused| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refused))))
        };
        let verified = self
            .webpki
            .verify_server_cert(end_entity, offered, server_name, ocsp_response, now)
            .map_err(|error| refuse(self.refused(&error, end_entity, !offered.is_empty())))?;
        if !ocsp_response.is_empty() {
            match ocsp::check(end_entity, offered, ocsp_response, now) {
                Staple::Good => {}
                Staple::Revoked => {
                    return Err(refuse(Refused {
                        reason: CertReason::Revoked,
                        ca_issuers: None,
                    }));
                }
                Staple::Ignored(why) => tracing::debug!(why, "stapled OCSP response ignored"),
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}
