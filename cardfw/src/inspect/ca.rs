//! The card's inspection CA: an ECDSA P-256 key and a self-signed CA certificate, made on the
//! card at first use and kept in the sealed store as one record, so the key never exists in
//! clear on disk and a re-key replaces key and certificate in one atomic write.
//!
//! The record (inside `inspect-ca.sealed`, see [`crate::store`]):
//!
//! ```text
//! offset  size  field
//! 0       1     record version (1)
//! 1       4     certificate length n, big-endian
//! 5       n     the CA certificate, DER
//! 5+n     rest  the CA key, PKCS#8 DER
//! ```
//!
//! The CA's name carries a random tag (`cardwall card CA 1a2b3c4d`): after a re-key the old and
//! the new CA differ in name as well as in key, so a browser that still trusts the old one does
//! not mistake one for the other when it builds a chain. The certificate allows no intermediate
//! below it (path length 0): it only ever signs leaves. Name constraints are not set: the owner
//! chooses which sites are inspected, and those are any names.

use std::io;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::store::{AdminSession, Store, StoreError};

const RECORD_VERSION: u8 = 1;
/// How long the CA certificate is valid: browsers do not limit the lifetime of a root the user
/// installed, and a re-key is the owner's decision, not a date's.
const CA_LIFETIME: Duration = Duration::days(10 * 365);
/// Backdating, so a host whose clock is behind the card's still accepts the CA.
const CLOCK_SLACK: Duration = Duration::days(1);

/// Why the CA could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the inspection CA record is not understood by this firmware: re-key the CA")]
    Unreadable,
    #[error("the inspection CA's certificate or key is unusable: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("no randomness from the system: {0}")]
    Random(getrandom::Error),
}

/// The CA that signs the leaves the card shows to inside clients.
pub struct CardCa {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CardCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CardCa {
    /// The card's CA from the store, made and sealed there when there is none (first use, or
    /// a record that no longer opens).
    pub fn load_or_create(store: &Store) -> Result<CardCa, CaError> {
        let record = store.inspection_ca_record_or_create(|| {
            generate().map_err(|error| StoreError::Io {
                what: "making the card's inspection CA".into(),
                source: io::Error::other(error),
            })
        })?;
        CardCa::from_record(&record)
    }

    /// A new key and certificate replace the old ones (one atomic write, audited). Browsers
    /// that trusted the old CA must be given the new certificate.
    pub fn rekey(session: &AdminSession<'_>) -> Result<CardCa, CaError> {
        let record = generate()?;
        session.replace_inspection_ca_record(&record)?;
        CardCa::from_record(&record)
    }

    /// The CA certificate, DER (`.crt`/`.cer` downloads).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM (`.pem` downloads, Firefox and Linux trust stores).
    pub fn cert_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.cert_der.to_vec()))
    }

    /// SHA-256 of the certificate, `AB:CD:…`, as browsers show it in their certificate viewers.
    pub fn fingerprint(&self) -> String {
        crate::store::tls::fingerprint(&self.cert_der)
    }

    /// What signs the leaves.
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn from_record(record: &[u8]) -> Result<CardCa, CaError> {
        let (cert_der, key_der) = parse_record(record).ok_or(CaError::Unreadable)?;
        let cert_der = CertificateDer::from(cert_der.to_vec());
        let key = KeyPair::try_from(key_der)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CardCa { cert_der, issuer })
    }
}

/// A new CA as a store record.
fn generate() -> Result<Zeroizing<Vec<u8>>, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(CaError::Random)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("cardwall card CA {:08x}", u32::from_be_bytes(tag)),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cardwall");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial().map_err(CaError::Random)?);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SLACK;
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key)?;
    let key_der = Zeroizing::new(key.serialize_der());
    let cert_der = cert.der();
    let mut record = Zeroizing::new(Vec::with_capacity(5 + cert_der.len() + key_der.len()));
    record.push(RECORD_VERSION);
    let cert_len = u32::try_from(cert_der.len()).expect("a certificate is far below 4 GiB");
    record.extend_from_slice(&cert_len.to_be_bytes());
    record.extend_from_slice(cert_der);
    record.extend_from_slice(&key_der);
    Ok(record)
}

/// `(certificate, key)` from a record, or `None` when it is not a version-1 record.
pub(super) fn parse_record(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&version, rest) = record.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    let (len, rest) = rest.split_at_checked(4)?;
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let (cert, key) = rest.split_at_checked(len)?;
    (!cert.is_empty() && !key.is_empty()).then_some((cert, key))
}

/// A positive serial of 127 random bits (RFC 5280 asks for at most 20 octets, CA/B Forum
/// rules for at least 64 random bits).
pub(super) fn random_serial() -> Result<SerialNumber, getrandom::Error> {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial)?;
    // The top bit clear keeps the DER INTEGER positive; the next one set keeps it 16 bytes.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&serial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_malformed_ones_are_refused() {
        let record = generate().unwrap();
        let ca = CardCa::from_record(&record).unwrap();
        let (cert, key) = parse_record(&record).unwrap();
        assert_eq!(cert, ca.cert_der().as_ref());
        assert_eq!(KeyPair::try_from(key).unwrap().serialize_der(), key);
        // Cut anywhere up to the end of the certificate: no key, or no whole certificate.
        for len in 0..=5 + cert.len() {
            assert_eq!(parse_record(&record[..len]), None, "cut at {len}");
        }
        let mut other_version = record.to_vec();
        other_version[0] = 2;
        assert_eq!(parse_record(&other_version), None);
        assert!(matches!(
            CardCa::from_record(&other_version),
            Err(CaError::Unreadable)
        ));
        let mut too_long = record.to_vec();
        too_long[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_record(&too_long), None);
    }

    #[test]
    fn serials_are_positive_sixteen_bytes_and_differ() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_eq!((a.len(), a[0] & 0xc0), (16, 0x40));
        assert_ne!(a, b);
    }
}
