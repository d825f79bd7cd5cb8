//! The CAs the owner adds on the card page, trusted for upstream servers beside Mozilla's roots
//! (for a company's or a home lab's own CA).
//!
//! An upload is PEM text with one or more `CERTIFICATE` blocks, at most [`MAX_UPLOAD_BYTES`];
//! each must parse as X.509, say it is a CA (basic constraints), and be usable by webpki as a
//! trust anchor, or nothing of the upload is kept. The card holds at most [`MAX_COUNT`] of them.
//!
//! They are kept in the sealed store (`owner-cas.sealed`, see [`crate::store`]) as the PEM text
//! of all of them: a certificate is public, but which CAs the card trusts is the owner's
//! decision, and only a PIN-opened [`AdminSession`] replaces the record, so sealing it keeps
//! anyone with the storage but not the device key from adding one.
//!
//! The CAs a policy bundle carries (`managed-cas.sealed`, written by
//! [`Store::install_bundle`]) are read with [`OwnerCas::from_pem`]: each passes the same
//! checks as an owner's, and the list is kept apart from the owner's, which the policy
//! server neither sees nor replaces.

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::store::{AdminSession, AuditEvent, Store, StoreError};

/// The largest upload accepted: a CA certificate is one or two kilobytes.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024;
/// How many CAs the owner may add.
pub const MAX_COUNT: usize = 32;

/// Why an upload (or the stored record) was refused.
#[derive(Debug, thiserror::Error)]
pub enum OwnerCaError {
    #[error("the upload is larger than {} KiB", MAX_UPLOAD_BYTES / 1024)]
    TooLarge,
    #[error("the upload is not PEM text: {0}")]
    NotPem(#[from] pem::PemError),
    #[error("the upload has no CERTIFICATE block")]
    NoCertificate,
    #[error("certificate {index} of the upload is not a valid X.509 certificate")]
    NotX509 { index: usize },
    #[error("certificate {index} of the upload ({subject}) is not a CA certificate")]
    NotCa { index: usize, subject: String },
    #[error("certificate {index} of the upload cannot be a trust anchor: {why}")]
    NotAnchor { index: usize, why: String },
    #[error("the card would trust more than {MAX_COUNT} added CAs: remove one first")]
    TooMany,
    #[error("no added CA has the fingerprint {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One added CA, with what the page lists of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCa {
    der: CertificateDer<'static>,
    pub subject: String,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// The end of its validity, seconds since the Unix epoch (0 when before it).
    pub not_after: u64,
}

impl OwnerCa {
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// `der` checked as a CA certificate; `index` (from 1) names it in errors.
    fn check(der: Vec<u8>, index: usize) -> Result<OwnerCa, OwnerCaError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| OwnerCaError::NotX509 { index })?;
        if !rest.is_empty() {
            return Err(OwnerCaError::NotX509 { index });
        }
        let subject = cert.subject().to_string();
        let is_ca =
            matches!(cert.basic_constraints(), Ok(Some(constraints)) if constraints.value.ca);
        if !is_ca {
            return Err(OwnerCaError::NotCa { index, subject });
        }
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        let der = CertificateDer::from(der);
        webpki::anchor_from_trusted_cert(&der).map_err(|error| OwnerCaError::NotAnchor {
            index,
            why: error.to_string(),
        })?;
        Ok(OwnerCa {
            fingerprint: crate::store::tls::fingerprint(&der),
            der,
            subject,
            not_after,
        })
    }
}

/// The added CAs, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerCas(Vec<OwnerCa>);

impl OwnerCas {
    /// The CAs in `store`; none before the first upload.
    pub fn load(store: &Store) -> Result<OwnerCas, OwnerCaError> {
        match store.owner_cas_record()? {
            Some(record) => OwnerCas::from_pem(&record),
            None => Ok(OwnerCas::default()),
        }
    }

    /// The CAs the installed policy bundle carries, as in `store`; none when it carries none.
    pub fn load_managed(store: &Store) -> Result<OwnerCas, OwnerCaError> {
        match store.managed_cas_record()? {
            Some(record) => OwnerCas::from_pem(&record),
            None => Ok(OwnerCas::default()),
        }
    }

    /// Every `CERTIFICATE` block of PEM `text`, checked as in an upload, at most
    /// [`MAX_COUNT`] of them (a policy bundle's CAs, before it is installed and when read back).
    pub fn from_pem(text: &[u8]) -> Result<OwnerCas, OwnerCaError> {
        OwnerCas::default().with(parse(text)?)
    }

    /// Every CA in an upload, checked (see the module documentation).
    pub fn parse_upload(text: &str) -> Result<Vec<OwnerCa>, OwnerCaError> {
        if text.len() > MAX_UPLOAD_BYTES {
            return Err(OwnerCaError::TooLarge);
        }
        let cas = parse(text.as_bytes())?;
        if cas.is_empty() {
            return Err(OwnerCaError::NoCertificate);
        }
        Ok(cas)
    }

    /// These and `added` (one already held is not added twice), or why not.
    pub fn with(&self, added: Vec<OwnerCa>) -> Result<OwnerCas, OwnerCaError> {
        let mut cas = self.0.clone();
        for ca in added {
            if !cas.iter().any(|held| held.fingerprint == ca.fingerprint) {
                cas.push(ca);
            }
        }
        if cas.len() > MAX_COUNT {
            return Err(OwnerCaError::TooMany);
        }
        Ok(OwnerCas(cas))
    }

    /// These without the one with `fingerprint`.
    pub fn without(&self, fingerprint: &str) -> Result<OwnerCas, OwnerCaError> {
        let cas: Vec<_> = self
            .0
            .iter()
            .filter(|ca| !ca.fingerprint.eq_ignore_ascii_case(fingerprint))
            .cloned()
            .collect();
        if cas.len() == self.0.len() {
            return Err(OwnerCaError::NotFound(fingerprint.to_owned()));
        }
        Ok(OwnerCas(cas))
    }

    /// Writes these as the store's record, audited as `event`.
    pub fn save(&self, session: &AdminSession<'_>, event: AuditEvent) -> Result<(), StoreError> {
        let blocks: Vec<_> = self
            .0
            .iter()
            .map(|ca| pem::Pem::new("CERTIFICATE", ca.der.to_vec()))
            .collect();
        let record = Zeroizing::new(pem::encode_many(&blocks).into_bytes());
        session.replace_owner_cas_record(&record, event)
    }

    pub fn iter(&self) -> impl Iterator<Item = &OwnerCa> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every `CERTIFICATE` block of PEM `text`, checked; other blocks are ignored.
fn parse(text: &[u8]) -> Result<Vec<OwnerCa>, OwnerCaError> {
    pem::parse_many(text)?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .enumerate()
        .map(|(index, block)| OwnerCa::check(block.into_contents(), index + 1))
        .collect()
}
