//! Leaf certificates for inspected connections, and the bounded cache that keeps a repeat
//! handshake to the same name free of signing.
//!
//! Each leaf has its own fresh P-256 key and names exactly one subject in its SAN (a DNS name,
//! or an IP address for a client that connected to an address): the complaint users have about
//! forged certificates without a SAN does not apply. It is valid from an hour before it is made
//! (hosts whose clock is a little behind) to a day after, far inside the CA's validity, with a
//! 127-bit random serial and only the serverAuth purpose.
//!
//! The cache holds ready [`CertifiedKey`]s, at most [`CACHE_CAPACITY`], the least recently used
//! forgotten first. A leaf is reused for [`LEAF_REUSE`] (half its life), then minted again, so a
//! card that runs for weeks never serves an expired one. Two handshakes for a name not yet
//! cached may both mint (minting happens outside the lock, so one slow mint never stalls the
//! others); the second simply replaces the first in the cache.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hashlink::LruCache;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::ca::{CardCa, random_serial};

/// How many leaves the cache keeps: a browsing session touches a few hundred names at most, and
/// a leaf with its key is about a kilobyte.
pub const CACHE_CAPACITY: usize = 1024;
/// How long before now a leaf is valid from.
pub const LEAF_BACKDATE: time::Duration = time::Duration::hours(1);
/// How long after now a leaf is valid until.
pub const LEAF_LIFETIME: time::Duration = time::Duration::hours(24);
/// How long a cached leaf is served before a new one is minted (half of [`LEAF_LIFETIME`]).
pub const LEAF_REUSE: std::time::Duration = std::time::Duration::from_secs(12 * 60 * 60);

/// What a leaf is for: the name the client asked for, or the address it connected to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A DNS name, lower case.
    Name(String),
    Address(IpAddr),
}

impl Subject {
    /// An address when `text` is one, else a DNS name (lower-cased: names are compared
    /// case-insensitively, and the cache must not hold one leaf per spelling).
    pub fn parse(text: &str) -> Subject {
        match text.parse() {
            Ok(address) => Subject::Address(address),
            Err(_) => Subject::Name(text.to_ascii_lowercase()),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Name(name) => f.write_str(name),
            Subject::Address(address) => address.fmt(f),
        }
    }
}

/// Why a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("`{0}` is not a DNS name a certificate can carry")]
    BadName(String),
    #[error("making the leaf certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("loading the leaf key: {0}")]
    Key(#[from] rustls::Error),
    #[error("no randomness from the system: {0}")]
    Random(getrandom::Error),
}

struct Cached {
    leaf: Arc<CertifiedKey>,
    minted_at: Instant,
}

struct Inner {
    ca: Arc<CardCa>,
    leaves: LruCache<Subject, Cached>,
    /// TLS sessions of every inspected connection's server side: each connection has its own
    /// configuration (its address without a name), and a client coming back must find its
    /// session whichever config it meets next, or every repeat connection pays a full
    /// handshake. rustls resumes only for the same SNI. Replaced with the CA: a resumed
    /// session skips the certificate, so an old one would go on under the old CA's leaf.
    sessions: Arc<ServerSessionMemoryCache>,
}

/// The minted leaves, by subject, for the current CA.
pub struct LeafCache {
    provider: Arc<CryptoProvider>,
    capacity: usize,
    inner: Mutex<Inner>,
    minted: AtomicU64,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("cached", &self.len())
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// An empty cache of at most `capacity` leaves signed by `ca`.
    pub fn new(ca: Arc<CardCa>, capacity: usize) -> LeafCache {
        LeafCache {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            capacity,
            inner: Mutex::new(Inner {
                ca,
                leaves: LruCache::new(capacity),
                sessions: ServerSessionMemoryCache::new(capacity),
            }),
            minted: AtomicU64::new(0),
        }
    }

    /// The leaf for `subject`: the cached one while it is young enough, else a new one.
    pub fn get(&self, subject: &Subject) -> Result<Arc<CertifiedKey>, MintError> {
        let ca = {
            let mut inner = self.lock();
            if let Some(cached) = inner.leaves.get(subject)
                && cached.minted_at.elapsed() < LEAF_REUSE
            {
                return Ok(cached.leaf.clone());
            }
            inner.ca.clone()
        };
        let leaf = Arc::new(self.mint(&ca, subject)?);
        let mut inner = self.lock();
        // A re-key while this one was minted: the leaf is still served to this handshake, but
        // not cached, since it names the old CA.
        if Arc::ptr_eq(&inner.ca, &ca) {
            inner.leaves.insert(
                subject.clone(),
                Cached {
                    leaf: leaf.clone(),
                    minted_at: Instant::now(),
                },
            );
        }
        Ok(leaf)
    }

    /// Signs with `ca` from now on and forgets every leaf of the old one and every TLS session
    /// made under it (after a re-key): the next handshake of every client is a full one, with
    /// a leaf of the new CA.
    pub fn replace_ca(&self, ca: Arc<CardCa>) {
        let mut inner = self.lock();
        inner.ca = ca;
        inner.leaves.clear();
        inner.sessions = ServerSessionMemoryCache::new(self.capacity);
    }

    /// The CA that signs new leaves.
    pub fn ca(&self) -> Arc<CardCa> {
        self.lock().ca.clone()
    }

    /// Leaves signed since start: a repeat handshake to a cached name does not add one.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// Leaves held now.
    pub fn len(&self) -> usize {
        self.lock().leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rustls configuration that terminates inspected connections: TLS 1.2 and 1.3, the
    /// leaf chosen by the hello's SNI, or for a hello without one, the leaf for
    /// `address_without_name` (the original destination; `None` refuses such hellos). `alpn`
    /// is offered in that order (`h2`, `http/1.1`).
    pub fn server_config(
        self: &Arc<Self>,
        address_without_name: Option<IpAddr>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let resolver = LeafResolver {
            leaves: self.clone(),
            address_without_name,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn;
        config.session_storage = self.lock().sessions.clone();
        Ok(Arc::new(config))
    }

    fn mint(&self, ca: &CardCa, subject: &Subject) -> Result<CertifiedKey, MintError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let (common_name, san) = match subject {
            Subject::Name(name) => (
                name.clone(),
                SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|_| MintError::BadName(name.clone()))?,
                ),
            ),
            Subject::Address(address) => (address.to_string(), SanType::IpAddress(*address)),
        };
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().map_err(MintError::Random)?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + LEAF_LIFETIME;
        let cert = params.signed_by(&key, ca.issuer())?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        // The leaf alone: clients trust the card CA itself, so sending it adds bytes only.
        Ok(CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            signing_key,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds no invariant a panic could break halfway: a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Picks the leaf for a hello by its SNI (see [`LeafCache::server_config`]).
#[derive(Debug)]
pub struct LeafResolver {
    leaves: Arc<LeafCache>,
    address_without_name: Option<IpAddr>,
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let subject = match hello.server_name() {
            Some(name) => Subject::parse(name),
            None => Subject::Address(self.address_without_name?),
        };
        self.leaves
            .get(&subject)
            .inspect_err(|error| tracing::warn!(%subject, %error, "no leaf certificate"))
            .ok()
    }
}
