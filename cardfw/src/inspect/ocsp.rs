//! Stapled OCSP responses (RFC 6960) checked on the card, for inspected sites.
//!
//! rustls hands the verifier the response a server staples in its handshake; its webpki
//! verifier ignores it, and rustls-webpki has no OCSP (its maintainers declined it,
//! rustls/webpki#217). This module reads the response with RustCrypto's `x509-ocsp` types and
//! checks it the way RFC 6960 section 3.2 says, after webpki has accepted the chain:
//!
//! 1. the response is `successful` and `basic`;
//! 2. one of its single responses names this certificate: same serial, and the issuer's name
//!    and key hashed as its CertID says (SHA-1 or SHA-256);
//! 3. it is signed by that issuer, or by a responder certificate the issuer signed for
//!    `OCSPSigning` that is valid now (section 4.2.2.2);
//! 4. it is current: `thisUpdate` not in the future, `nextUpdate` not past (5 minutes of
//!    clock skew either way).
//!
//! Then `revoked` refuses the site ([`Staple::Revoked`], the block page's `cert-revoked`),
//! `good` passes. A staple that fails any check, or says `unknown`, is ignored as if absent,
//! as browsers do: whoever could forge a bad staple could also strip it, so it cannot be a
//! reason to trust less than without one, and refusing on it would break sites whose CA's
//! responder hiccupped. Only a verified `revoked` changes the outcome. The issuer must be among
//! the certificates the chain was built from (sent or fetched intermediates): a leaf issued
//! straight from a root has no issuer certificate here (Mozilla's roots are compiled in as
//! names and keys), and its staple is ignored.

use std::time::Duration;

use der::{Decode, Encode};
use rustls::pki_types::{CertificateDer, UnixTime};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

/// How far the card's clock and the responder's may disagree.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

const OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
const OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
const SHA1_OID: &str = "1.3.14.3.2.26";
const SHA256_OID: &str = "2.16.840.1.101.3.4.2.1";

/// What a stapled response says about the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staple {
    /// Verified: the certificate is good.
    Good,
    /// Verified: the certificate is revoked.
    Revoked,
    /// Not usable (why, for the log): treated as no staple.
    Ignored(String),
}

/// Checks `staple` for `leaf`, whose issuer should be among `chain` (see the module
/// documentation).
pub fn check(
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    staple: &[u8],
    now: UnixTime,
) -> Staple {
    match verified_status(leaf, chain, staple, now) {
        Ok(CertStatus::Good(_)) => Staple::Good,
        Ok(CertStatus::Revoked(_)) => Staple::Revoked,
        Ok(CertStatus::Unknown(_)) => Staple::Ignored("the responder does not know it".into()),
        Err(why) => Staple::Ignored(why),
    }
}

fn verified_status(
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    staple: &[u8],
    now: UnixTime,
) -> Result<CertStatus, String> {
    let leaf = Certificate::from_der(leaf).map_err(|e| format!("the certificate: {e}"))?;
    let issuer = chain
        .iter()
        .filter_map(|der| Certificate::from_der(der).ok())
        .find(|cert| cert.tbs_certificate.subject == leaf.tbs_certificate.issuer)
        .ok_or("its issuer is not among the chain's certificates")?;

    let response = OcspResponse::from_der(staple).map_err(|e| format!("not OCSP: {e}"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!("status {:?}", response.response_status));
    }
    let bytes = response.response_bytes.ok_or("no response bytes")?;
    if bytes.response_type.to_string() != OCSP_BASIC {
        return Err(format!("response type {}", bytes.response_type));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("not a basic response: {e}"))?;

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| names(single, &leaf, &issuer))
        .ok_or("no response for this certificate")?;
    check_signed(&basic, &issuer, now)?;

    let now = Duration::from_secs(now.as_secs());
    if single.this_update.0.to_unix_duration() > now + CLOCK_SKEW {
        return Err("thisUpdate is in the future".into());
    }
    match &single.next_update {
        Some(next) if next.0.to_unix_duration() + CLOCK_SKEW < now => {
            Err("nextUpdate has passed".into())
        }
        _ => Ok(single.cert_status),
    }
}

/// Whether `single`'s CertID is `leaf` from `issuer`.
fn names(single: &x509_ocsp::SingleResponse, leaf: &Certificate, issuer: &Certificate) -> bool {
    let id = &single.cert_id;
    if id.serial_number != leaf.tbs_certificate.serial_number {
        return false;
    }
    let Ok(name) = issuer.tbs_certificate.subject.to_der() else {
        return false;
    };
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let (name_hash, key_hash): (Vec<u8>, Vec<u8>) = match id.hash_algorithm.oid.to_string().as_str()
    {
        SHA1_OID => (Sha1::digest(&name).to_vec(), Sha1::digest(key).to_vec()),
        SHA256_OID => (Sha256::digest(&name).to_vec(), Sha256::digest(key).to_vec()),
        _ => return false,
    };
    id.issuer_name_hash.as_bytes() == name_hash && id.issuer_key_hash.as_bytes() == key_hash
}

/// The response is signed by `issuer`, or by a responder certificate `issuer` signed for
/// OCSP signing and valid at `now`.
fn check_signed(
    basic: &BasicOcspResponse,
    issuer: &Certificate,
    now: UnixTime,
) -> Result<(), String> {
    let signed = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let signature = basic.signature.raw_bytes();
    let algorithm = basic.signature_algorithm.oid.to_string();
    if verify(issuer, &algorithm, &signed, signature).is_ok() {
        return Ok(());
    }
    let responders = basic.certs.iter().flatten();
    for responder in responders {
        if responder.tbs_certificate.issuer != issuer.tbs_certificate.subject
            || !for_ocsp_signing(responder)
            || !valid_at(responder, now)
        {
            continue;
        }
        let tbs = responder
            .tbs_certificate
            .to_der()
            .map_err(|e| e.to_string())?;
        let cert_algorithm = responder.signature_algorithm.oid.to_string();
        let issued = verify(
            issuer,
            &cert_algorithm,
            &tbs,
            responder.signature.raw_bytes(),
        );
        if issued.is_ok() && verify(responder, &algorithm, &signed, signature).is_ok() {
            return Ok(());
        }
    }
    Err("not signed by the issuer nor by a responder it authorised".into())
}

fn for_ocsp_signing(cert: &Certificate) -> bool {
    let Ok(der) = cert.to_der() else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    matches!(parsed.extended_key_usage(), Ok(Some(usage))
        if usage.value.ocsp_signing || usage.value.other.iter().any(|o| o.to_id_string() == OCSP_SIGNING))
}

fn valid_at(cert: &Certificate, now: UnixTime) -> bool {
    let validity = &cert.tbs_certificate.validity;
    let now = Duration::from_secs(now.as_secs());
    validity.not_before.to_unix_duration() <= now && now <= validity.not_after.to_unix_duration()
}

/// Checks `signature` over `message` with `signer`'s public key and the signature algorithm
/// `algorithm` (an OID), with ring (what rustls verifies with on the card).
fn verify(
    signer: &Certificate,
    algorithm: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), ()> {
    use ring::signature as sig;
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|oid| oid.to_string());
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    let verification: &dyn sig::VerificationAlgorithm = match (algorithm, curve.as_deref()) {
        ("1.2.840.10045.4.3.2", Some(P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.2", Some(P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some(P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.3", Some(P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.113549.1.1.5", _) => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        ("1.2.840.113549.1.1.11", _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        ("1.3.101.112", _) => &sig::ED25519,
        _ => return Err(()),
    };
    sig::UnparsedPublicKey::new(verification, spki.subject_public_key.raw_bytes())
        .verify(message, signature)
        .map_err(|_| ())
}
