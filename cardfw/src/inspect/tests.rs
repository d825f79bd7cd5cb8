//! Inspection through real rustls handshakes over in-memory pipes: the card CA and its leaves
//! seen by a client that trusts the CA, and upstream chains made with rcgen refused for each
//! named reason.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;
use crate::store::{AuditEvent, PinCost, Store};

const PIN: &str = "4711";
/// The client certificate's idle time where a test does not wait for it.
const IDLE: std::time::Duration = std::time::Duration::from_secs(600);

fn store(dir: &Path) -> Store {
    Store::open_or_create(dir, "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap()
}

/// A card: its CA made in a store in `dir`, a leaf cache of `capacity` over it, and a client
/// that trusts the CA (a browser the owner installed it in).
struct Card {
    ca_der: CertificateDer<'static>,
    leaves: Arc<LeafCache>,
    client: Arc<rustls::ClientConfig>,
}

fn card(dir: &Path, capacity: usize) -> Card {
    let ca = CardCa::load_or_create(&store(dir)).unwrap();
    let ca_der = ca.cert_der().clone();
    Card {
        client: client_trusting(std::slice::from_ref(&ca_der)),
        ca_der,
        leaves: Arc::new(LeafCache::new(Arc::new(ca), capacity)),
    }
}

/// A client that trusts only `roots`.
fn client_trusting(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth(),
    )
}

/// One TLS handshake over an in-memory pipe; the client's result, and on success the
/// certificates it was shown.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    // The server side's result is not asserted: it fails whenever the client refuses.
    let (_, client) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(name, client_io)
    );
    let client = client?;
    Ok(client.get_ref().1.peer_certificates().unwrap().to_vec())
}

/// A handshake over an in-memory pipe and one byte from the server read by the client: the
/// byte brings the server's session tickets to the client before it, and arrives only when
/// the server accepted the client (its certificate included). The client's side, or the
/// first side's error.
async fn first_byte(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let (server_side, client_side) = tokio::join!(
        tokio_rustls::TlsAcceptor::from(server).accept(server_io),
        tokio_rustls::TlsConnector::from(client).connect(name, client_io)
    );
    let (mut server_side, mut client_side) = (server_side?, client_side?);
    server_side.write_all(b"x").await?;
    server_side.flush().await?;
    client_side.read_exact(&mut [0u8; 1]).await?;
    Ok(client_side)
}

fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

#[tokio::test]
async fn a_leaf_for_a_name_verifies_against_the_card_ca_with_its_san_and_a_short_validity() {
    let dir = tempfile::tempdir().unwrap();
    let Card {
        ca_der,
        leaves,
        client,
    } = card(dir.path(), 8);
    let server = leaves.server_config(None, alpn()).unwrap();

    let chain = handshake(server.clone(), client.clone(), "a.example")
        .await
        .unwrap();
    assert_eq!(chain.len(), 1, "the leaf alone");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, [GeneralName::DNSName("a.example")]);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    assert!((now - 3600 - 60..=now - 3600 + 60).contains(&not_before));
    assert!((now + 86_400 - 60..=now + 86_400 + 60).contains(&not_after));
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca_cert.validity().not_after.timestamp() > not_after + 365 * 86_400);
    assert!(leaf.raw_serial().len() >= 8, "at least 64 random bits");
    assert!(
        leaf.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    assert!(!leaf.is_ca());
    assert_eq!(leaf.issuer(), ca_cert.subject());

    // A client asking for another name gets a leaf for that name, not this one.
    let other = handshake(server, client, "b.example").await.unwrap();
    assert_ne!(other[0], chain[0]);
}

#[tokio::test]
async fn a_cached_leaf_is_the_same_arc_and_costs_no_signing() {
    let dir = tempfile::tempdir().unwrap();
    let Card { leaves, client, .. } = card(dir.path(), leaf::CACHE_CAPACITY);
    let subject = Subject::parse("A.Example");
    assert_eq!(subject, Subject::Name("a.example".into()));
    let first = leaves.get(&subject).unwrap();
    let again = leaves.get(&Subject::parse("a.example")).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(leaves.minted(), 1);

    // Handshakes to a cached name reuse it too.
    let server = leaves.server_config(None, alpn()).unwrap();
    for _ in 0..3 {
        let chain = handshake(server.clone(), client.clone(), "a.example")
            .await
            .unwrap();
        assert_eq!(chain[0], first.cert[0]);
    }
    assert_eq!(leaves.minted(), 1);
    assert_eq!(leaves.len(), 1);
}

#[tokio::test]
async fn a_client_coming_back_resumes_its_session_on_another_connections_config() {
    let dir = tempfile::tempdir().unwrap();
    let Card { leaves, client, .. } = card(dir.path(), 8);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        // Each inspected connection builds its own server config, as proxy/inspect.rs does.
        let server = leaves.server_config(None, alpn()).unwrap();
        let client_side = first_byte(server, client.clone(), "a.example")
            .await
            .unwrap();
        kinds.push(client_side.get_ref().1.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[test]
fn the_cache_forgets_the_least_recently_used_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let leaves = card(dir.path(), 2).leaves;
    let a = leaves.get(&Subject::parse("a.example")).unwrap();
    leaves.get(&Subject::parse("b.example")).unwrap();
    // `a` used last, so `b` goes when `c` comes.
    leaves.get(&Subject::parse("a.example")).unwrap();
    leaves.get(&Subject::parse("c.example")).unwrap();
    assert_eq!((leaves.len(), leaves.minted()), (2, 3));
    assert!(Arc::ptr_eq(
        &a,
        &leaves.get(&Subject::parse("a.example")).unwrap()
    ));
    leaves.get(&Subject::parse("b.example")).unwrap();
    assert_eq!(leaves.minted(), 4, "b was forgotten and minted again");
}

#[tokio::test]
async fn an_address_gets_an_ip_san_even_without_sni() {
    let dir = tempfile::tempdir().unwrap();
    let Card { leaves, client, .. } = card(dir.path(), 8);
    let address: IpAddr = "10.1.2.3".parse().unwrap();
    assert_eq!(Subject::parse("10.1.2.3"), Subject::Address(address));
    // A client connecting to an address sends no SNI: the leaf is for the original destination.
    let server = leaves.server_config(Some(address), alpn()).unwrap();
    let chain = handshake(server, client.clone(), "10.1.2.3").await.unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [GeneralName::IPAddress(&[10, 1, 2, 3][..])]
    );
    // Without an address to fall back on, a hello without SNI gets no certificate.
    let server = leaves.server_config(None, alpn()).unwrap();
    assert!(handshake(server, client, "10.1.2.3").await.is_err());
}

/// Every file under `dir`, recursively, as bytes.
fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

/// The CA's private key as the store holds it (PKCS#8 DER), from the sealed record.
fn stored_ca_key(store: &Store) -> Vec<u8> {
    let record = store
        .inspection_ca_record_or_create(|| unreachable!("the CA exists"))
        .unwrap();
    ca::parse_record(&record).unwrap().1.to_vec()
}

fn assert_key_not_in_clear(dir: &Path, key_der: &[u8]) {
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key_der.to_vec()));
    // Any 16-byte window of the key (its private scalar is 32 bytes inside it).
    for (path, bytes) in every_file(dir) {
        for window in key_der.windows(16) {
            assert!(
                !bytes.windows(16).any(|w| w == window),
                "{} holds key bytes in clear",
                path.display()
            );
        }
        assert!(
            !bytes
                .windows(key_pem.len())
                .any(|w| w == key_pem.as_bytes()),
            "{} holds the key's PEM",
            path.display()
        );
    }
}

#[test]
fn the_ca_is_kept_sealed_and_a_rekey_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let first = CardCa::load_or_create(&store).unwrap();
    let again = CardCa::load_or_create(&store).unwrap();
    assert_eq!(first.fingerprint(), again.fingerprint());
    assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
    assert!(first.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let old_key = stored_ca_key(&store);
    assert_key_not_in_clear(dir.path(), &old_key);

    let code = store.setup_code().unwrap().unwrap();
    store.setup(&code, PIN).unwrap();
    let session = store.login(PIN).unwrap();
    let rekeyed = CardCa::rekey(&session).unwrap();
    assert_ne!(rekeyed.fingerprint(), first.fingerprint());
    assert_eq!(
        CardCa::load_or_create(&store).unwrap().fingerprint(),
        rekeyed.fingerprint()
    );
    let new_key = stored_ca_key(&store);
    assert_ne!(new_key, old_key);
    assert_key_not_in_clear(dir.path(), &old_key);
    assert_key_not_in_clear(dir.path(), &new_key);
    assert_eq!(
        store.audit().unwrap().last().unwrap().event,
        AuditEvent::InspectionCaRekeyed
    );

    // Leaves of the old CA are forgotten; new ones chain to the new CA.
    let leaves = LeafCache::new(Arc::new(first), 8);
    let old_leaf = leaves.get(&Subject::parse("a.example")).unwrap();
    leaves.replace_ca(Arc::new(rekeyed));
    assert!(leaves.is_empty());
    let new_leaf = leaves.get(&Subject::parse("a.example")).unwrap();
    assert!(!Arc::ptr_eq(&old_leaf, &new_leaf));
    let (_, new_leaf) = X509Certificate::from_der(&new_leaf.cert[0]).unwrap();
    let (_, old_leaf) = X509Certificate::from_der(&old_leaf.cert[0]).unwrap();
    assert_ne!(
        new_leaf.issuer(),
        old_leaf.issuer(),
        "a re-keyed CA has a new name"
    );
}

#[test]
fn a_ca_that_no_longer_opens_is_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    let first = CardCa::load_or_create(&store(dir.path())).unwrap();
    let path = dir.path().join("inspect-ca.sealed");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let renewed = CardCa::load_or_create(&store(dir.path())).unwrap();
    assert_ne!(renewed.fingerprint(), first.fingerprint());
}

/// An rcgen PKI standing in for the Internet: a root, an intermediate, leaves.
pub(crate) struct Pki {
    pub(crate) root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    intermediate_issuer: Issuer<'static, KeyPair>,
    /// The intermediate's key, PKCS#8, to sign OCSP responses with.
    intermediate_key: Vec<u8>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params(&format!("{name} root"))
            .self_signed(&root_key)
            .unwrap();
        let root_issuer = Issuer::new(ca_params(&format!("{name} root")), root_key);
        let intermediate_key = KeyPair::generate().unwrap();
        let intermediate_params = ca_params(&format!("{name} intermediate"));
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &root_issuer)
            .unwrap();
        Pki {
            root: root.der().clone(),
            intermediate: intermediate.der().clone(),
            intermediate_key: intermediate_key.serialize_der(),
            intermediate_issuer: Issuer::new(intermediate_params, intermediate_key),
        }
    }

    /// A server for `name`, valid over `validity` (from, until; relative to now), sending its
    /// leaf with the intermediate when `send_intermediate`, else the leaf alone.
    pub(crate) fn server(
        &self,
        name: &str,
        validity: (Duration, Duration),
        send_intermediate: bool,
    ) -> (Arc<rustls::ServerConfig>, SerialNumber) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now + validity.0;
        params.not_after = now + validity.1;
        let serial = SerialNumber::from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x01]);
        params.serial_number = Some(serial.clone());
        let leaf = params.signed_by(&key, &self.intermediate_issuer).unwrap();
        let mut chain = vec![leaf.der().clone()];
        if send_intermediate {
            chain.push(self.intermediate.clone());
        }
        (server_config(chain, &key), serial)
    }

    /// A server for `name` with its intermediate, stapling the OCSP response `staple` makes
    /// for its certificate (DER) and its serial.
    fn server_stapling(
        &self,
        name: &str,
        staple: impl FnOnce(&CertificateDer<'static>) -> Vec<u8>,
    ) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[0x42, 0x01]));
        let leaf = params.signed_by(&key, &self.intermediate_issuer).unwrap();
        let ocsp = staple(leaf.der());
        let chain = vec![leaf.der().clone(), self.intermediate.clone()];
        server_config_stapling(chain, &key, ocsp)
    }

    /// An OCSP response for `leaf` saying `status`, valid over `validity` (this and next
    /// update, relative to now), signed by the intermediate's key, or by `signer` (PKCS#8).
    fn ocsp(
        &self,
        leaf: &CertificateDer<'_>,
        status: x509_ocsp::CertStatus,
        validity: (Duration, Duration),
        signer: Option<&[u8]>,
    ) -> Vec<u8> {
        use der::{Decode, Encode};
        use x509_ocsp::builder::OcspResponseBuilder;
        let issuer = x509_cert::Certificate::from_der(&self.intermediate).unwrap();
        let leaf = x509_cert::Certificate::from_der(leaf).unwrap();
        let at = |offset: Duration| {
            let when = std::time::SystemTime::from(OffsetDateTime::now_utc() + offset);
            x509_ocsp::OcspGeneralizedTime::try_from(when).unwrap()
        };
        let id = x509_ocsp::CertId::from_issuer::<sha1::Sha1>(
            &issuer,
            leaf.tbs_certificate.serial_number.clone(),
        )
        .unwrap();
        let single = x509_ocsp::SingleResponse::new(id, status, at(validity.0))
            .with_next_update(at(validity.1));
        let key = signer.unwrap_or(&self.intermediate_key);
        let mut signer: p256::ecdsa::SigningKey =
            p256::pkcs8::DecodePrivateKey::from_pkcs8_der(key).unwrap();
        OcspResponseBuilder::new(x509_ocsp::ResponderId::ByName(
            issuer.tbs_certificate.subject.clone(),
        ))
        .with_single_response(single)
        .sign::<_, p256::ecdsa::DerSignature>(&mut signer, None, at(Duration::ZERO))
        .unwrap()
        .to_der()
        .unwrap()
    }

    /// A client certificate for `name` with `usage`, issued by the intermediate, and its key:
    /// PEM of the leaf, the intermediate and the key, as a user's file holds them.
    fn client_pem(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let leaf = params.signed_by(&key, &self.intermediate_issuer).unwrap();
        format!(
            "{}{}{}",
            pem_of(leaf.der()),
            pem_of(&self.intermediate),
            key.serialize_pem()
        )
    }

    /// A server for `name` that requires a client certificate issued under this PKI.
    fn server_requiring_client_cert(&self, name: &str) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.intermediate_issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![leaf.der().clone(), self.intermediate.clone()], key)
                .unwrap(),
        )
    }

    /// A CRL from the intermediate listing `serial`.
    fn crl_revoking(
        &self,
        serial: SerialNumber,
    ) -> rustls::pki_types::CertificateRevocationListDer<'static> {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: serial,
                revocation_time: now - Duration::hours(1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.intermediate_issuer)
        .unwrap()
        .der()
        .clone()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
    server_config_stapling(chain, key, Vec::new())
}

/// A site's TLS configuration that staples `ocsp` (none when empty).
fn server_config_stapling(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
    ocsp: Vec<u8>,
) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert_with_ocsp(chain, key, ocsp)
        .unwrap(),
    )
}

pub(crate) const VALID: (Duration, Duration) = (Duration::hours(-1), Duration::days(30));

/// The card's upstream handshake to `server` for `name`: `None` when it succeeded, else the
/// reason read back from the error the connect returned.
pub(crate) async fn verdict(
    upstream: &UpstreamTls,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Option<CertReason> {
    let client = upstream.client_config(Alpn::Any);
    match handshake(server, client, name).await {
        Ok(_) => None,
        Err(error) => Some(
            CertReason::of_io(&error)
                .unwrap_or_else(|| panic!("not a certificate refusal: {error}")),
        ),
    }
}

#[tokio::test]
async fn upstream_certificates_get_a_named_verdict() {
    let pki = Pki::new("origin");
    let trusting = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        Vec::new(),
        None,
        Arc::default(),
    )
    .unwrap();
    let name = "origin.example";

    let (good, _) = pki.server(name, VALID, true);
    assert_eq!(verdict(&trusting, good.clone(), name).await, None);

    let (expired, _) = pki.server(name, (Duration::days(-30), Duration::days(-1)), true);
    assert_eq!(
        verdict(&trusting, expired, name).await,
        Some(CertReason::Expired)
    );

    let (early, _) = pki.server(name, (Duration::days(1), Duration::days(30)), true);
    assert_eq!(
        verdict(&trusting, early, name).await,
        Some(CertReason::NotYetValid)
    );

    assert_eq!(
        verdict(&trusting, good.clone(), "other.example").await,
        Some(CertReason::WrongName)
    );

    // Mozilla's roots alone do not know this PKI: the chain is whole, the issuer unknown.
    let mozilla_only = UpstreamTls::new(&[], Vec::new(), None, Arc::default()).unwrap();
    assert_eq!(
        verdict(&mozilla_only, good, name).await,
        Some(CertReason::UnknownIssuer)
    );

    // The leaf alone, its issuer an intermediate not sent, the root trusted.
    let (leaf_only, _) = pki.server(name, VALID, false);
    assert_eq!(
        verdict(&trusting, leaf_only.clone(), name).await,
        Some(CertReason::IncompleteChain)
    );

    // Once the card holds that intermediate (fetched by AIA), the same server passes; one of
    // another PKI adds a path to an untrusted root only, never trust.
    let intermediates = Arc::new(Intermediates::default());
    let completing = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        Vec::new(),
        None,
        intermediates.clone(),
    )
    .unwrap();
    let other = Pki::new("other");
    intermediates.insert(other.intermediate.clone()).unwrap();
    let (other_leaf_only, _) = other.server(name, VALID, false);
    assert_eq!(
        verdict(&completing, other_leaf_only, name).await,
        Some(CertReason::UnknownIssuer)
    );
    assert_eq!(
        verdict(&completing, leaf_only.clone(), name).await,
        Some(CertReason::IncompleteChain)
    );
    intermediates.insert(pki.intermediate.clone()).unwrap();
    assert_eq!(verdict(&completing, leaf_only, name).await, None);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(
        intermediates.insert(leaf.der().clone()).is_err(),
        "a leaf is no intermediate"
    );
}

#[tokio::test]
async fn a_self_signed_server_is_an_unknown_issuer_not_an_incomplete_chain() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["origin.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let server = server_config(vec![cert.der().clone()], &key);
    let upstream = UpstreamTls::new(&[], Vec::new(), None, Arc::default()).unwrap();
    assert_eq!(
        verdict(&upstream, server, "origin.example").await,
        Some(CertReason::UnknownIssuer)
    );
}

#[tokio::test]
async fn a_certificate_a_crl_lists_is_revoked() {
    let pki = Pki::new("origin");
    let (server, serial) = pki.server("origin.example", VALID, true);
    let crl = pki.crl_revoking(serial);
    let upstream = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        vec![crl],
        None,
        Arc::default(),
    )
    .unwrap();
    assert_eq!(
        verdict(&upstream, server, "origin.example").await,
        Some(CertReason::Revoked)
    );
    // A CRL of another CA says nothing about this certificate: unknown status is no refusal.
    let unrelated = Pki::new("other").crl_revoking(SerialNumber::from(7u64));
    let upstream = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        vec![unrelated],
        None,
        Arc::default(),
    )
    .unwrap();
    let (server, _) = pki.server("origin.example", VALID, true);
    assert_eq!(verdict(&upstream, server, "origin.example").await, None);
}

#[test]
fn every_reason_has_a_distinct_code_and_a_sentence() {
    let reasons = [
        CertReason::Expired,
        CertReason::NotYetValid,
        CertReason::WrongName,
        CertReason::UnknownIssuer,
        CertReason::IncompleteChain,
        CertReason::Revoked,
        CertReason::Other("bad signature".into()),
    ];
    let codes: std::collections::HashSet<_> = reasons.iter().map(CertReason::code).collect();
    assert_eq!(codes.len(), reasons.len());
    for reason in &reasons {
        assert!(reason.code().starts_with("cert-"));
        assert!(reason.to_string().starts_with("the server"), "{reason}");
    }
    // rustls' own errors are named the same way when no verifier recorded a reason.
    assert_eq!(
        CertReason::of(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
        )),
        Some(CertReason::Expired)
    );
    assert_eq!(CertReason::of(&rustls::Error::HandshakeNotComplete), None);
}

/// A store in `dir`, set up with [`PIN`].
fn set_up_store(dir: &Path) -> Store {
    let store = store(dir);
    let code = store.setup_code().unwrap().unwrap();
    store.setup(&code, PIN).unwrap();
    store
}

pub(crate) fn pem_of(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[tokio::test]
async fn after_a_rekey_a_client_coming_back_gets_a_full_handshake_under_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let store = set_up_store(dir.path());
    let inspection = Inspection::start(&store, None, IDLE).unwrap();
    let old = inspection.ca();
    let session = store.login(PIN).unwrap();
    let new = inspection.rekey(&session).unwrap();
    assert_ne!(old.fingerprint(), new.fingerprint());
    assert_eq!(inspection.ca().fingerprint(), new.fingerprint());
    // A browser that trusts both CAs: only the session cache decides whether it resumes.
    let client = client_trusting(&[old.cert_der().clone(), new.cert_der().clone()]);
    // Start over under the old CA, so the client holds a session made with its leaf.
    inspection.leaves.replace_ca(old.clone());
    let mut seen = Vec::new();
    for ca in [None, Some(new.clone())] {
        if let Some(ca) = ca {
            inspection.leaves.replace_ca(ca);
        }
        let server = inspection.leaves.server_config(None, alpn()).unwrap();
        let client_side = first_byte(server, client.clone(), "a.example")
            .await
            .unwrap();
        let connection = client_side.get_ref().1;
        let leaf = connection.peer_certificates().unwrap()[0].clone();
        let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
        seen.push((connection.handshake_kind(), leaf.issuer().to_string()));
    }
    let issuer = |ca: &CardCa| {
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        cert.subject().to_string()
    };
    assert_eq!(
        seen,
        [
            (Some(rustls::HandshakeKind::Full), issuer(&old)),
            (Some(rustls::HandshakeKind::Full), issuer(&new)),
        ]
    );
}

#[tokio::test]
async fn an_owner_ca_is_trusted_at_once_kept_sealed_and_removable() {
    let dir = tempfile::tempdir().unwrap();
    let store = set_up_store(dir.path());
    let inspection = Inspection::start(&store, None, IDLE).unwrap();
    let pki = Pki::new("lab");
    let name = "origin.example";
    let (server, _) = pki.server(name, VALID, true);
    assert_eq!(
        verdict(&inspection.upstream(), server.clone(), name).await,
        Some(CertReason::UnknownIssuer)
    );

    let added = OwnerCas::parse_upload(&pem_of(&pki.root)).unwrap();
    assert_eq!(added[0].subject, "CN=lab root");
    let fingerprint = added[0].fingerprint.clone();
    let session = store.login(PIN).unwrap();
    assert_eq!(
        inspection.add_owner_cas(&session, added.clone()).unwrap(),
        1
    );
    // The same CA again is not a second one.
    assert_eq!(inspection.add_owner_cas(&session, added).unwrap(), 1);
    assert_eq!(
        verdict(&inspection.upstream(), server.clone(), name).await,
        None
    );
    assert_eq!(
        store.audit().unwrap().last().unwrap().event,
        AuditEvent::OwnerCaAdded { count: 1 }
    );
    // Sealed: the certificate's bytes are nowhere in clear in the store.
    for (path, bytes) in every_file(dir.path()) {
        assert!(
            !bytes
                .windows(pki.root.len())
                .any(|w| w == pki.root.as_ref()),
            "{} holds the CA in clear",
            path.display()
        );
    }

    // A reopened store (a restart) trusts it too.
    let reopened = Inspection::start(&self::store(dir.path()), None, IDLE).unwrap();
    assert_eq!(reopened.owner_cas(), inspection.owner_cas());
    assert_eq!(
        verdict(&reopened.upstream(), server.clone(), name).await,
        None
    );

    assert!(matches!(
        inspection.remove_owner_ca(&session, "00:11"),
        Err(InspectionError::OwnerCa(OwnerCaError::NotFound(_)))
    ));
    assert_eq!(
        inspection.remove_owner_ca(&session, &fingerprint).unwrap(),
        0
    );
    assert_eq!(
        verdict(&inspection.upstream(), server.clone(), name).await,
        Some(CertReason::UnknownIssuer)
    );
    let reopened = Inspection::start(&self::store(dir.path()), None, IDLE).unwrap();
    assert!(reopened.owner_cas().is_empty());
}

#[test]
fn uploads_that_are_not_ca_certificates_are_refused_whole() {
    let pki = Pki::new("lab");
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["origin.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let refusal = |text: &str| OwnerCas::parse_upload(text).unwrap_err().to_string();
    assert_eq!(refusal("hello"), "the upload has no CERTIFICATE block");
    assert_eq!(
        refusal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "certificate 1 of the upload is not a valid X.509 certificate"
    );
    // One good CA and a leaf: nothing of it is taken.
    let mixed = pem_of(&pki.root) + &pem_of(leaf.der());
    assert_eq!(
        refusal(&mixed),
        "certificate 2 of the upload (CN=rcgen self signed cert) is not a CA certificate"
    );
    let oversize = pem_of(&pki.root).repeat(owner_cas::MAX_UPLOAD_BYTES / 500);
    assert_eq!(refusal(&oversize), "the upload is larger than 64 KiB");

    let many: Vec<_> = (0..=owner_cas::MAX_COUNT)
        .flat_map(|i| OwnerCas::parse_upload(&pem_of(&Pki::new(&i.to_string()).root)).unwrap())
        .collect();
    assert!(matches!(
        OwnerCas::default().with(many),
        Err(OwnerCaError::TooMany)
    ));
}

/// Whether `server` accepted the handshake from `client` (its certificate included).
async fn accepted(server: &Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> bool {
    first_byte(server.clone(), client, "portal.example")
        .await
        .is_ok()
}

#[tokio::test]
async fn the_client_certificate_is_presented_only_while_unlocked_and_only_where_asked() {
    use client_cert::IdentityState;
    let dir = tempfile::tempdir().unwrap();
    let store = set_up_store(dir.path());
    let inspection = Inspection::start(&store, None, IDLE).unwrap();
    let identity = inspection.client_identity.clone();
    assert_eq!(identity.state(), IdentityState::Missing);

    let pki = Pki::new("corp");
    let upload = pki.client_pem("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let stored = StoredIdentity::from_upload(upload.as_bytes(), "").unwrap();
    assert_eq!(stored.summary().subject, "CN=alice");
    identity
        .replace(&store.login(PIN).unwrap(), &stored)
        .unwrap();
    assert!(matches!(identity.state(), IdentityState::Locked(_)));

    let server = pki.server_requiring_client_cert("portal.example");
    let upstream = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        Vec::new(),
        Some(identity.clone()),
        Arc::default(),
    )
    .unwrap();
    let presenting = upstream.presenting_config(Alpn::Any).unwrap();
    assert!(
        !accepted(&server, presenting.clone()).await,
        "locked: nothing presented"
    );

    identity.unlock(&store.login(PIN).unwrap()).unwrap();
    assert!(matches!(identity.state(), IdentityState::Unlocked { .. }));
    assert!(
        accepted(&server, presenting.clone()).await,
        "unlocked: presented"
    );
    assert!(
        !accepted(&server, upstream.client_config(Alpn::Any)).await,
        "a site whose rule does not say client-cert never gets it"
    );

    // A connection that presented it goes on only under the same unlock.
    let first = identity.current_unlock().unwrap();
    assert!(identity.still_unlocked(first));
    assert!(identity.lock());
    assert!(
        !accepted(&server, presenting).await,
        "locked again: not even resumed"
    );
    assert!(!identity.still_unlocked(first));
    identity.unlock(&store.login(PIN).unwrap()).unwrap();
    assert!(
        !identity.still_unlocked(first),
        "a new unlock does not revive a connection made under the old one"
    );
    assert!(identity.lock());

    // A restart starts locked, knowing what is stored.
    let reopened = Inspection::start(&store, None, IDLE).unwrap();
    match reopened.client_identity.state() {
        IdentityState::Locked(summary) => assert_eq!(summary.subject, "CN=alice"),
        other => panic!("{other:?}"),
    }
    let events: Vec<_> = store
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&AuditEvent::ClientCertStored));
    assert!(events.contains(&AuditEvent::ClientCertUnlocked));

    reopened
        .client_identity
        .remove(&store.login(PIN).unwrap())
        .unwrap();
    assert_eq!(reopened.client_identity.state(), IdentityState::Missing);
    assert!(!dir.path().join("client-cert.sealed").exists());
}

#[test]
fn an_unlocked_client_certificate_locks_itself_after_its_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = set_up_store(dir.path());
    let pki = Pki::new("corp");
    let upload = pki.client_pem("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let idle = std::time::Duration::from_millis(100);
    let identity = ClientIdentity::load(&store, idle);
    let stored = StoredIdentity::from_upload(upload.as_bytes(), "").unwrap();
    identity
        .replace(&store.login(PIN).unwrap(), &stored)
        .unwrap();
    identity.unlock(&store.login(PIN).unwrap()).unwrap();
    assert!(!identity.lock_if_idle());
    std::thread::sleep(idle * 2);
    assert!(identity.lock_if_idle());
    assert!(matches!(identity.state(), IdentityState::Locked(_)));
}

#[test]
fn a_pkcs12_upload_opens_with_its_password_only() {
    let pki = Pki::new("corp");
    let pem = pki.client_pem("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let blocks = pem::parse_many(&pem).unwrap();
    let certs: Vec<_> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| p12_keystore::Certificate::from_der(b.contents()).unwrap())
        .collect();
    let key = blocks.iter().find(|b| b.tag() == "PRIVATE KEY").unwrap();
    let mut keystore = p12_keystore::KeyStore::new();
    keystore.add_entry(
        "alice",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            b"1".as_slice(),
            p12_keystore::PrivateKey::from_der(key.contents()).unwrap(),
            certs,
        )),
    );
    let p12 = keystore.writer("s3cret").write().unwrap();
    let opened = StoredIdentity::from_upload(&p12, "s3cret").unwrap();
    assert_eq!(opened.summary().subject, "CN=alice");
    assert!(matches!(
        StoredIdentity::from_upload(&p12, "wrong"),
        Err(ClientCertError::Pkcs12(_))
    ));
}

#[test]
fn a_client_certificate_upload_is_refused_with_what_is_wrong() {
    let pki = Pki::new("corp");
    let alice = pki.client_pem("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let bob = pki.client_pem("bob", ExtendedKeyUsagePurpose::ClientAuth);
    let refusal = |text: &str| StoredIdentity::from_upload(text.as_bytes(), "").unwrap_err();
    let cert_of =
        |text: &str| text[..text.find("-----END CERTIFICATE-----").unwrap() + 26].to_owned();
    let key_of = |text: &str| text[text.find("-----BEGIN PRIVATE KEY-----").unwrap()..].to_owned();

    assert!(matches!(refusal(&cert_of(&alice)), ClientCertError::NoKey));
    assert!(matches!(
        refusal(&key_of(&alice)),
        ClientCertError::NoCertificate
    ));
    assert!(matches!(
        refusal(&format!("{}{}", cert_of(&alice), key_of(&bob))),
        ClientCertError::BadKey(_)
    ));
    assert!(matches!(
        refusal(&format!("{alice}{}", key_of(&bob))),
        ClientCertError::TwoKeys
    ));
    let server_only = pki.client_pem("www", ExtendedKeyUsagePurpose::ServerAuth);
    assert!(matches!(
        refusal(&server_only),
        ClientCertError::NotForClients { .. }
    ));
    assert!(matches!(
        refusal(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ),
        ClientCertError::EncryptedPem
    ));
    assert!(matches!(
        StoredIdentity::from_upload(&vec![b'x'; client_cert::MAX_UPLOAD_BYTES + 1], ""),
        Err(ClientCertError::TooLarge)
    ));
    assert!(matches!(
        StoredIdentity::from_upload(b"not pkcs12", ""),
        Err(ClientCertError::Pkcs12(_))
    ));
}

#[tokio::test]
async fn a_stapled_ocsp_response_that_verifies_and_says_revoked_refuses_the_site() {
    use x509_ocsp::CertStatus;
    let pki = Pki::new("ocsp");
    let name = "origin.example";
    let upstream = UpstreamTls::new(
        std::slice::from_ref(&pki.root),
        Vec::new(),
        None,
        Arc::default(),
    )
    .unwrap();
    let current = (Duration::hours(-1), Duration::days(1));
    let revoked = || {
        CertStatus::revoked(x509_ocsp::RevokedInfo {
            revocation_time: std::time::SystemTime::from(
                OffsetDateTime::now_utc() - Duration::hours(2),
            )
            .try_into()
            .unwrap(),
            revocation_reason: None,
        })
    };
    let verdict_with = async |staple: &dyn Fn(&CertificateDer<'static>) -> Vec<u8>| {
        verdict(&upstream, pki.server_stapling(name, staple), name).await
    };

    let good = |leaf: &CertificateDer<'static>| pki.ocsp(leaf, CertStatus::good(), current, None);
    assert_eq!(verdict_with(&good).await, None, "good");
    let said_revoked = |leaf: &CertificateDer<'static>| pki.ocsp(leaf, revoked(), current, None);
    assert_eq!(
        verdict_with(&said_revoked).await,
        Some(CertReason::Revoked),
        "revoked, signed by the issuer"
    );

    // Staples that do not verify are ignored, as if absent: the site passes as without one.
    let stranger = KeyPair::generate().unwrap().serialize_der();
    let forged =
        |leaf: &CertificateDer<'static>| pki.ocsp(leaf, revoked(), current, Some(&stranger));
    assert_eq!(verdict_with(&forged).await, None, "signed by another key");
    let stale = |leaf: &CertificateDer<'static>| {
        pki.ocsp(
            leaf,
            revoked(),
            (Duration::days(-3), Duration::days(-2)),
            None,
        )
    };
    assert_eq!(verdict_with(&stale).await, None, "nextUpdate passed");
    let garbage = |_: &CertificateDer<'static>| b"not ocsp".to_vec();
    assert_eq!(verdict_with(&garbage).await, None, "not OCSP at all");
}

#[test]
fn a_staple_for_another_certificate_is_ignored() {
    use x509_ocsp::CertStatus;
    let pki = Pki::new("ocsp");
    let key = KeyPair::generate().unwrap();
    let leaf = |serial: u8| {
        let mut params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        params
            .signed_by(&key, &pki.intermediate_issuer)
            .unwrap()
            .der()
            .clone()
    };
    let (first, second) = (leaf(1), leaf(2));
    let current = (Duration::hours(-1), Duration::days(1));
    let staple = pki.ocsp(&first, CertStatus::good(), current, None);
    let now = rustls::pki_types::UnixTime::now();
    let chain = [pki.intermediate.clone()];
    assert_eq!(
        ocsp::check(&first, &chain, &staple, now),
        ocsp::Staple::Good
    );
    assert!(matches!(
        ocsp::check(&second, &chain, &staple, now),
        ocsp::Staple::Ignored(_)
    ));
    assert!(
        matches!(
            ocsp::check(&first, &[], &staple, now),
            ocsp::Staple::Ignored(_)
        ),
        "no issuer certificate to check the signature with"
    );
}
