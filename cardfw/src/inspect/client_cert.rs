//! The user's client certificate, kept on the card and presented to the sites an inspecting
//! rule names with `client-cert` (seed 000, 3.1: "the smartcard will only use the user's key
//! to authorise to the server after the user has been authenticated").
//!
//! # Life of the key
//!
//! - **Upload** on the card page, PKCS#12 (with its password, as browsers and operating
//!   systems export it) or PEM (certificates and one unencrypted key). It is checked before
//!   anything is written: the key must match the certificate, the certificate must be allowed
//!   for client authentication and not expired. The card keeps it sealed in the store
//!   (`client-cert.sealed`: PEM of the chain and the key), replacing the one before.
//! - **Locked** is the normal state: the key is not in memory, and a site whose rule says
//!   `client-cert` gets a page saying the certificate is locked.
//! - **Unlocked** with the PIN on the card page: the key is read from the store into memory.
//!   It locks again after [`ClientIdentity::idle`] without a handshake that used it, when the
//!   owner locks it, when it is replaced or removed, and when the card restarts (memory only).
//!
//! The key is used through [`rustls`]' client certificate resolver, so it never leaves the
//! card: only signatures do. Sessions that presented it are not resumed (see
//! [`super::upstream`]), so a lock is never side-stepped by a resumed session.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use crate::store::{AdminSession, AuditEvent, Store, StoreError};

/// The largest upload accepted: a certificate chain and its key are a few kilobytes.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024;

/// The TLS client authentication purpose (RFC 5280, 4.2.1.12).
const CLIENT_AUTH_OID: &str = "1.3.6.1.5.5.7.3.2";

/// Why an upload, an unlock or the stored record was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error("the upload is larger than {} KiB", MAX_UPLOAD_BYTES / 1024)]
    TooLarge,
    #[error("the upload is empty: choose a .p12, .pfx or .pem file")]
    Empty,
    #[error("the PEM file does not parse: {0}")]
    NotPem(#[from] pem::PemError),
    #[error("the PKCS#12 file does not open (wrong password, or not PKCS#12): {0}")]
    Pkcs12(String),
    #[error("the file has no certificate")]
    NoCertificate,
    #[error("the file has no private key")]
    NoKey,
    #[error("the file has more than one private key: upload one certificate and its key")]
    TwoKeys,
    #[error(
        "the private key is encrypted PEM: upload it as PKCS#12 with its password, or unencrypted"
    )]
    EncryptedPem,
    #[error("certificate {index} of the file is not a valid X.509 certificate")]
    NotX509 { index: usize },
    #[error(
        "the certificate ({subject}) is not for client authentication (its extended key usage lacks clientAuth)"
    )]
    NotForClients { subject: String },
    #[error("the certificate ({subject}) has expired")]
    Expired { subject: String },
    #[error("the key does not fit the certificate, or the card cannot use it: {0}")]
    BadKey(rustls::Error),
    #[error("no client certificate is stored on the card")]
    NotStored,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the page shows of the stored certificate: all public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSummary {
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// The end of its validity, seconds since the Unix epoch.
    pub not_after: u64,
}

/// A certificate chain (the user's certificate first) and its private key, checked.
pub struct StoredIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    summary: ClientCertSummary,
}

/// Names the certificate only: the key is never printed.
impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl StoredIdentity {
    /// An upload from the card page: PEM when it looks like text with a PEM header, else
    /// PKCS#12 opened with `password`.
    pub fn from_upload(bytes: &[u8], password: &str) -> Result<StoredIdentity, ClientCertError> {
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(ClientCertError::TooLarge);
        }
        if bytes.is_empty() {
            return Err(ClientCertError::Empty);
        }
        let identity = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            StoredIdentity::from_pem(bytes)?
        } else {
            StoredIdentity::from_pkcs12(bytes, password)?
        };
        if identity.summary.not_after <= serve::unix_now() {
            return Err(ClientCertError::Expired {
                subject: identity.summary.subject,
            });
        }
        identity.certified_key()?;
        Ok(identity)
    }

    /// The PEM `record` as the store keeps it.
    fn from_pem(text: &[u8]) -> Result<StoredIdentity, ClientCertError> {
        let mut chain = Vec::new();
        let mut keys = Vec::new();
        for block in pem::parse_many(text)? {
            let key = match block.tag() {
                "CERTIFICATE" => {
                    chain.push(CertificateDer::from(block.into_contents()));
                    continue;
                }
                "PRIVATE KEY" => {
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(block.into_contents()))
                }
                "RSA PRIVATE KEY" => {
                    PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(block.into_contents()))
                }
                "EC PRIVATE KEY" => {
                    PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(block.into_contents()))
                }
                "ENCRYPTED PRIVATE KEY" => return Err(ClientCertError::EncryptedPem),
                _ => continue,
            };
            keys.push(key);
        }
        StoredIdentity::new(chain, keys)
    }

    fn from_pkcs12(bytes: &[u8], password: &str) -> Result<StoredIdentity, ClientCertError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|error| ClientCertError::Pkcs12(error.to_string()))?;
        let mut chains = store.entries().filter_map(|(_, entry)| match entry {
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => Some(chain),
            _ => None,
        });
        let Some(chain) = chains.next() else {
            return Err(ClientCertError::NoKey);
        };
        if chains.next().is_some() {
            return Err(ClientCertError::TwoKeys);
        }
        let certificates = chain
            .certs()
            .iter()
            .map(|cert| CertificateDer::from(cert.as_der().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
        StoredIdentity::new(certificates, vec![key])
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        mut keys: Vec<PrivateKeyDer<'static>>,
    ) -> Result<StoredIdentity, ClientCertError> {
        let key = match (keys.pop(), keys.is_empty()) {
            (None, _) => return Err(ClientCertError::NoKey),
            (Some(_), false) => return Err(ClientCertError::TwoKeys),
            (Some(key), true) => key,
        };
        let Some(leaf) = chain.first() else {
            return Err(ClientCertError::NoCertificate);
        };
        let summary = summary(leaf)?;
        Ok(StoredIdentity {
            chain,
            key,
            summary,
        })
    }

    pub fn summary(&self) -> &ClientCertSummary {
        &self.summary
    }

    /// The key loaded for signing, with the chain; refused when the key does not match.
    fn certified_key(&self) -> Result<Arc<CertifiedKey>, ClientCertError> {
        CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider())
            .map(Arc::new)
            .map_err(ClientCertError::BadKey)
    }

    /// The store's record: PEM of the chain, then the key.
    fn to_record(&self) -> Zeroizing<Vec<u8>> {
        let mut blocks: Vec<_> = self
            .chain
            .iter()
            .map(|cert| pem::Pem::new("CERTIFICATE", cert.to_vec()))
            .collect();
        let (tag, der) = match &self.key {
            PrivateKeyDer::Pkcs1(key) => ("RSA PRIVATE KEY", key.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(key) => ("EC PRIVATE KEY", key.secret_sec1_der()),
            // Pkcs8, and any form a later rustls adds, which it reads as PKCS#8.
            other => ("PRIVATE KEY", other.secret_der()),
        };
        blocks.push(pem::Pem::new(tag, der.to_vec()));
        Zeroizing::new(pem::encode_many(&blocks).into_bytes())
    }
}

/// What the certificate says of itself, and whether it may authenticate a client.
fn summary(leaf: &CertificateDer<'_>) -> Result<ClientCertSummary, ClientCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| ClientCertError::NotX509 { index: 1 })?;
    let subject = cert.subject().to_string();
    if let Ok(Some(usage)) = cert.extended_key_usage() {
        let usage = &usage.value;
        let for_clients = usage.any
            || usage.client_auth
            || usage
                .other
                .iter()
                .any(|o| o.to_id_string() == CLIENT_AUTH_OID);
        if !for_clients {
            return Err(ClientCertError::NotForClients { subject });
        }
    }
    Ok(ClientCertSummary {
        issuer: cert.issuer().to_string(),
        fingerprint: crate::store::tls::fingerprint(leaf),
        not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        subject,
    })
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Where the identity stands, for the page and the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityState {
    /// No certificate is stored.
    Missing,
    Locked(ClientCertSummary),
    /// Unlocked; it locks by itself after `idle_left` without use.
    Unlocked {
        summary: ClientCertSummary,
        idle_left: Duration,
    },
}

/// The user's client certificate on the running card: what is stored, and the key while
/// unlocked. It is the resolver rustls asks during a handshake to a `client-cert` site.
#[derive(Debug)]
pub struct ClientIdentity {
    idle: Duration,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    stored: Option<ClientCertSummary>,
    unlocked: Option<Unlocked>,
    /// How many unlocks there were since the start: names each one.
    unlocks: u64,
}

#[derive(Debug)]
struct Unlocked {
    key: Arc<CertifiedKey>,
    last_used: Instant,
    unlock: Unlock,
}

/// One unlock of the certificate. A connection that presented the certificate carries the
/// unlock it did so under, and may go on only while that same unlock lasts: a TLS session the
/// server authenticated stays authenticated after the card locks, so the card itself stops
/// sending requests over it ([`ClientIdentity::still_unlocked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlock(u64);

impl ClientIdentity {
    /// What `store` holds, locked; it locks after `idle` without use once unlocked. A record
    /// that no longer opens counts as none (logged): the owner uploads it again.
    pub fn load(store: &Store, idle: Duration) -> ClientIdentity {
        let stored = match store.client_cert_record() {
            Ok(Some(record)) => match StoredIdentity::from_pem(&record) {
                Ok(identity) => Some(identity.summary),
                Err(error) => {
                    tracing::warn!(%error, "the stored client certificate does not open");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "the stored client certificate does not open");
                None
            }
        };
        ClientIdentity {
            idle,
            held: Mutex::new(Held {
                stored,
                ..Held::default()
            }),
        }
    }

    /// The configured idle time.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Where it stands now (an unlock past its idle time is locked first).
    pub fn state(&self) -> IdentityState {
        let mut held = self.lock_held();
        self.expire(&mut held);
        match (&held.stored, &held.unlocked) {
            (None, _) => IdentityState::Missing,
            (Some(summary), None) => IdentityState::Locked(summary.clone()),
            (Some(summary), Some(unlocked)) => IdentityState::Unlocked {
                summary: summary.clone(),
                idle_left: self.idle.saturating_sub(unlocked.last_used.elapsed()),
            },
        }
    }

    /// Keeps `identity` in the store in place of any before; the card holds it locked.
    pub fn replace(
        &self,
        session: &AdminSession<'_>,
        identity: &StoredIdentity,
    ) -> Result<(), ClientCertError> {
        let mut held = self.lock_held();
        session.replace_client_cert_record(
            Some(&identity.to_record()),
            AuditEvent::ClientCertStored,
        )?;
        held.stored = Some(identity.summary.clone());
        held.unlocked = None;
        Ok(())
    }

    /// Removes the stored certificate and key.
    pub fn remove(&self, session: &AdminSession<'_>) -> Result<(), ClientCertError> {
        let mut held = self.lock_held();
        if held.stored.is_none() {
            return Err(ClientCertError::NotStored);
        }
        session.replace_client_cert_record(None, AuditEvent::ClientCertRemoved)?;
        held.stored = None;
        held.unlocked = None;
        Ok(())
    }

    /// Reads the key from the store into memory (the session proves the PIN).
    pub fn unlock(&self, session: &AdminSession<'_>) -> Result<(), ClientCertError> {
        let mut held = self.lock_held();
        let record = session
            .unlock_client_cert_record()?
            .ok_or(ClientCertError::NotStored)?;
        let identity = StoredIdentity::from_pem(&record)?;
        let key = identity.certified_key()?;
        held.stored = Some(identity.summary);
        held.unlocks += 1;
        held.unlocked = Some(Unlocked {
            key,
            last_used: Instant::now(),
            unlock: Unlock(held.unlocks),
        });
        Ok(())
    }

    /// The unlock in force now; `None` while locked.
    pub fn current_unlock(&self) -> Option<Unlock> {
        let mut held = self.lock_held();
        self.expire(&mut held);
        held.unlocked.as_ref().map(|unlocked| unlocked.unlock)
    }

    /// Whether `unlock` is still the one in force (no lock since), counting as a use: asked
    /// before each request over a connection that presented the certificate.
    pub fn still_unlocked(&self, unlock: Unlock) -> bool {
        let mut held = self.lock_held();
        self.expire(&mut held);
        match held.unlocked.as_mut() {
            Some(unlocked) if unlocked.unlock == unlock => {
                unlocked.last_used = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Drops the key from memory; `true` when it was unlocked.
    pub fn lock(&self) -> bool {
        self.lock_held().unlocked.take().is_some()
    }

    /// Locks when the idle time has passed; run periodically so an unused key does not stay
    /// in memory. `true` when this call locked it.
    pub fn lock_if_idle(&self) -> bool {
        self.expire(&mut self.lock_held())
    }

    fn expire(&self, held: &mut Held) -> bool {
        let idle = held
            .unlocked
            .as_ref()
            .is_some_and(|unlocked| unlocked.last_used.elapsed() >= self.idle);
        if idle {
            held.unlocked = None;
            tracing::info!("client certificate locked: idle");
        }
        idle
    }

    /// The key for a handshake now, counting as a use; `None` while locked.
    fn take_for_handshake(&self) -> Option<Arc<CertifiedKey>> {
        let mut held = self.lock_held();
        self.expire(&mut held);
        let unlocked = held.unlocked.as_mut()?;
        unlocked.last_used = Instant::now();
        Some(unlocked.key.clone())
    }

    fn lock_held(&self) -> MutexGuard<'_, Held> {
        // Every change replaces whole fields: a panic cannot leave them half changed.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asked by rustls when a server requests a client certificate on a connection whose rule
/// says `client-cert`: the key while unlocked, else none (the server then refuses).
impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.take_for_handshake()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
