//! The card's own TLS identity, for its web page: an ECDSA P-256 key and a self-signed
//! certificate for `card.cardwall` and the card's inside address, made at first use.
//!
//! | file | content |
//! |---|---|
//! | `tls.key.sealed` | sealed like every store file (its name is the associated data): the inside address the certificate names, then the PKCS#8 key |
//! | `tls.crt` | the certificate, DER, in clear: it is public, and the owner pins it |
//!
//! A new identity is made when either file is missing, when the key no longer opens (a factory
//! reset made a new device key), or when the inside address changed. Someone who can change the
//! files could make the card present another certificate only by deleting them, which makes a
//! new key on the card: the fingerprint shown on the page then changes, which is what the owner
//! checks.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use super::{Store, StoreError, io_error};

pub(super) const KEY_FILE: &str = "tls.key.sealed";
pub(super) const CERT_FILE: &str = "tls.crt";
/// The name the certificate carries beside the inside address.
pub const CARD_NAME: &str = "card.cardwall";

/// The card's certificate and key, and the rustls configuration that serves them.
pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    /// PKCS#8, wiped when dropped.
    pub key_der: Zeroizing<Vec<u8>>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// TLS 1.2 and 1.3 with the ring provider, HTTP/1.1 only.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// SHA-256 of the certificate, `AB:CD:…`, as browsers show it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }
}

/// The fingerprint of the certificate in the store, if one was made.
pub fn stored_fingerprint(store: &Store) -> Option<String> {
    fs::read(store.dir.join(CERT_FILE))
        .ok()
        .map(|der| fingerprint(&der))
}

/// SHA-256 of `der` as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The card's identity for `inside` (its inside address), made and stored at first use.
pub fn tls_identity(store: &Store, inside: IpAddr) -> Result<TlsIdentity, StoreError> {
    let _guard = store.lock();
    if let Some(identity) = load(store, inside)? {
        return Ok(identity);
    }
    let (cert_der, key_der) = generate(inside)?;
    let mut sealed = Zeroizing::new(Vec::with_capacity(64 + key_der.len()));
    let address = inside.to_string();
    sealed.push(address.len() as u8);
    sealed.extend_from_slice(address.as_bytes());
    sealed.extend_from_slice(&key_der);
    // The key first: a certificate is only ever paired with the key written before it.
    store.write_sealed(KEY_FILE, &sealed)?;
    store.write_durably(CERT_FILE, &cert_der)?;
    identity(cert_der, key_der)
}

fn load(store: &Store, inside: IpAddr) -> Result<Option<TlsIdentity>, StoreError> {
    let cert_der = match fs::read(store.dir.join(CERT_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(format!("reading {CERT_FILE}"))(e)),
    };
    let sealed = match store.read_sealed(KEY_FILE) {
        Ok(sealed) => sealed,
        Err(StoreError::Missing { .. }) => return Ok(None),
        Err(error @ (StoreError::Tampered { .. } | StoreError::Malformed { .. })) => {
            tracing::warn!(%error, "the card's TLS key does not open: making a new one");
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let Some((&len, rest)) = sealed.split_first() else {
        return Ok(None);
    };
    let Some((address, key)) = rest.split_at_checked(usize::from(len)) else {
        return Ok(None);
    };
    if address != inside.to_string().as_bytes() {
        tracing::info!(%inside, "the inside address changed: making a new TLS certificate");
        return Ok(None);
    }
    match identity(cert_der, Zeroizing::new(key.to_vec())) {
        Ok(identity) => Ok(Some(identity)),
        Err(error) => {
            tracing::warn!(%error, "the stored TLS identity is unusable: making a new one");
            Ok(None)
        }
    }
}

fn generate(inside: IpAddr) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), StoreError> {
    let failed = |error: rcgen::Error| StoreError::Io {
        what: "making the card's TLS certificate".into(),
        source: io::Error::other(error),
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![CARD_NAME.to_owned(), inside.to_string()])
        .map_err(failed)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CARD_NAME);
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.der().to_vec(), Zeroizing::new(key.serialize_der())))
}

fn identity(cert_der: Vec<u8>, key_der: Zeroizing<Vec<u8>>) -> Result<TlsIdentity, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)
        })
        .map_err(|error| StoreError::Io {
            what: "loading the card's TLS identity".into(),
            source: io::Error::other(error),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        cert_der,
        key_der,
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PinCost;

    fn store(dir: &std::path::Path) -> Store {
        Store::open_or_create(dir, "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap()
    }

    const INSIDE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 31, 77, 2));

    #[test]
    fn tls_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = tls_identity(&store(dir.path()), INSIDE).unwrap();
        let again = tls_identity(&store(dir.path()), INSIDE).unwrap();
        assert_eq!(first.cert_der, again.cert_der);
        assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
        // The key is sealed: its bytes are not in the file.
        let sealed = fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(!sealed.windows(32).any(|w| w == &first.key_der[40..72]));
        assert_eq!(
            fs::read(dir.path().join(CERT_FILE)).unwrap(),
            first.cert_der
        );
    }

    #[test]
    fn tls_identity_is_renewed_for_a_new_address_or_a_tampered_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = tls_identity(&store(dir.path()), INSIDE).unwrap();
        let other = tls_identity(&store(dir.path()), "10.0.0.1".parse().unwrap()).unwrap();
        assert_ne!(first.cert_der, other.cert_der);
        let path = dir.path().join(KEY_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let renewed = tls_identity(&store(dir.path()), "10.0.0.1".parse().unwrap()).unwrap();
        assert_ne!(renewed.cert_der, other.cert_der);
    }

    #[test]
    fn tls_key_is_bound_to_its_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        tls_identity(&store, INSIDE).unwrap();
        // The TLS key file copied over the PIN file does not open as a PIN record.
        fs::copy(dir.path().join(KEY_FILE), dir.path().join("pin.sealed")).unwrap();
        assert!(matches!(
            store.pin_state(),
            Err(StoreError::Tampered { .. })
        ));
    }
}
