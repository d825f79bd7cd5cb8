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
//! Fetching the missing intermediate from the leaf's AIA URL (when the rules allow that URL) is
//! not done yet: such a server is refused with that reason.
//!
//! # Revocation: what is and is not checked
//!
//! - **Stapled OCSP is not checked.** rustls hands the stapled response to the verifier, but its
//!   webpki verifier ignores it (rustls only logs it), and rustls-webpki has no OCSP parser:
//!   its maintainers closed that request (rustls/webpki#217) because public CAs are retiring
//!   OCSP (Let's Encrypt announced the end of its OCSP service in December 2024). Checking
//!   staples would need an OCSP parser and signature checks of our own; a server that staples
//!   a response for a revoked certificate is therefore not caught by its staple.
//! - **CRLs are checked when given**: [`UpstreamTls::new`] takes CRLs (DER); with any, the end
//!   entity's revocation is checked against them ([`CertReason::Revoked`]), and a certificate
//!   none of them covers is allowed (unknown status is not a refusal, as in browsers). The card
//!   does not download CRLs by itself yet.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::Arc;

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
                .downcast_ref::<CertReason>()
                .cloned()
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

/// The card's TLS client for inspected sites: Mozilla's roots and the owner's CAs, ALPN
/// [`super::ALPN`]. Its client configurations are built once per trust (not per connection),
/// so their session caches let the card resume TLS with a site it spoke to before.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    anonymous: Arc<ClientConfig>,
    /// For sites whose rule says `client-cert`: presents the user's certificate through
    /// `identity` while it is unlocked. Never resumes: a resumed TLS 1.3 session counts as
    /// authenticated by the certificate of the full handshake, which would outlive a lock.
    presenting: Option<Arc<ClientConfig>>,
}

impl UpstreamTls {
    /// Mozilla's roots plus `owner_cas` (DER), with `crls` checked for end entities (see the
    /// module documentation on revocation); `identity` answers servers that ask for a client
    /// certificate on `client-cert` sites.
    pub fn new(
        owner_cas: &[CertificateDer<'_>],
        crls: Vec<CertificateRevocationListDer<'static>>,
        identity: Option<Arc<dyn ResolvesClientCert>>,
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
        let with_alpn = |mut config: ClientConfig| {
            config.alpn_protocols = super::ALPN.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        let presenting = match identity {
            Some(identity) => {
                let mut config = client()?.with_client_cert_resolver(identity);
                config.resumption = Resumption::disabled();
                Some(with_alpn(config))
            }
            None => None,
        };
        Ok(UpstreamTls {
            anonymous: with_alpn(client()?.with_no_client_auth()),
            presenting,
        })
    }

    /// The configuration for an inspected site: TLS 1.2 and 1.3, this trust, ALPN `h2` and
    /// `http/1.1` (hyper speaks whichever the site picks), no client certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.anonymous.clone()
    }

    /// The configuration for a `client-cert` site, presenting the user's certificate while it
    /// is unlocked; `None` when this client was built without an identity.
    pub fn presenting_config(&self) -> Option<Arc<ClientConfig>> {
        self.presenting.clone()
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
}

impl CardVerifier {
    fn reason(
        &self,
        error: &Error,
        end_entity: &CertificateDer<'_>,
        sent_intermediates: bool,
    ) -> CertReason {
        let reason = CertReason::of(error).unwrap_or_else(|| CertReason::Other(error.to_string()));
        if reason != CertReason::UnknownIssuer || sent_intermediates {
            return reason;
        }
        match webpki::EndEntityCert::try_from(end_entity) {
            Ok(leaf)
                if leaf.issuer() != leaf.subject()
                    && !self.root_subjects.contains(leaf.issuer()) =>
            {
                CertReason::IncompleteChain
            }
            _ => reason,
        }
    }
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
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| {
                let reason = self.reason(&error, end_entity, !intermediates.is_empty());
                Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
            })
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
