//! The fleet's secrets, in policyd's data directory, made once by `policyd ca init`:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the fleet CA: issues card certificates and the server's own |
//! | `server.pem`, `server.key` | the server's TLS certificate (names given to `ca init`) |
//! | `policy.key`, `policy.pub` | the Ed25519 bundle signing key (the private half may be moved offline: see `policyd sign`) |
//! | `admin.token` | the administrator's credential for `/v1/admin/…` and the admin page |
//!
//! Private files are 0600, the directory 0700.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rules::bundle::{self, SigningKey, VerifyingKey};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const POLICY_KEY: &str = "policy.key";
pub const POLICY_PUBLIC: &str = "policy.pub";
pub const ADMIN_TOKEN: &str = "admin.token";

/// How long card and server certificates are valid. Revocation, not expiry, is how a card
/// is taken out of the fleet.
const CERT_YEARS: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0} already holds a fleet CA; refusing to overwrite it")]
    Exists(String),
    #[error("{path}: {error}")]
    Bad { path: String, error: String },
    #[error("the certificate request is refused: {0}")]
    Csr(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The loaded data directory.
pub struct Fleet {
    dir: PathBuf,
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_pem: String,
    server_key_pem: String,
    /// `None` when the signing key was moved offline: then only uploads of bundles signed
    /// elsewhere are accepted.
    pub policy_key: Option<SigningKey>,
    pub policy_public: VerifyingKey,
    pub admin_token: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FleetError + '_ {
    move |error| FleetError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<(), FleetError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn validity(params: &mut CertificateParams) {
    let today = chrono::Utc::now().date_naive();
    let (year, month, day) = (today.year(), today.month() as u8, today.day().min(28) as u8);
    // From yesterday's month start, so a card whose clock runs a little behind accepts it.
    params.not_before =
        rcgen::date_time_ymd(year, month, 1) - std::time::Duration::from_secs(86_400);
    params.not_after = rcgen::date_time_ymd(year + CERT_YEARS, month, day);
}

fn random_serial() -> Result<SerialNumber, FleetError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| FleetError::Issue(e.to_string()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

/// 32 random bytes as hex: enrolment tokens, the admin token, card ids (16 bytes).
pub fn random_hex(len: usize) -> Result<String, FleetError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| FleetError::Issue(e.to_string()))?;
    Ok(hex::encode(bytes))
}

impl Fleet {
    /// `policyd ca init`: a new CA, server certificate for `names` (DNS names or IP
    /// addresses), policy key and admin token in `dir`. Refuses to touch an existing CA.
    pub fn init(dir: &Path, names: &[String]) -> Result<(), FleetError> {
        if dir.join(CA_CERT).exists() {
            return Err(FleetError::Exists(dir.display().to_string()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let issue = |e: rcgen::Error| FleetError::Issue(e.to_string());
        let ca_key = KeyPair::generate().map_err(issue)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(issue)?;
        ca.distinguished_name
            .push(DnType::CommonName, "cardwall fleet CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.serial_number = Some(random_serial()?);
        validity(&mut ca);
        ca.not_after = rcgen::date_time_ymd(chrono::Utc::now().year() + 20, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).map_err(issue)?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate().map_err(issue)?;
        let mut server = CertificateParams::new(names.to_vec()).map_err(issue)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "cardwall policy server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.serial_number = Some(random_serial()?);
        validity(&mut server);
        let server_cert = server.signed_by(&server_key, &issuer).map_err(issue)?;

        let policy = bundle::generate_key().map_err(|e| FleetError::Issue(e.to_string()))?;
        write_file(&dir.join(CA_KEY), &ca_key.serialize_pem(), true)?;
        write_file(&dir.join(SERVER_KEY), &server_key.serialize_pem(), true)?;
        write_file(&dir.join(SERVER_CERT), &server_cert.pem(), false)?;
        write_file(
            &dir.join(POLICY_KEY),
            &bundle::signing_key_to_pem(&policy),
            true,
        )?;
        write_file(
            &dir.join(POLICY_PUBLIC),
            &bundle::public_key_to_pem(&policy.verifying_key()),
            false,
        )?;
        write_file(&dir.join(ADMIN_TOKEN), &(random_hex(32)? + "\n"), true)?;
        // Last: a directory with ca.pem is a finished one.
        write_file(&dir.join(CA_CERT), &ca_cert.pem(), false)
    }

    pub fn load(dir: &Path) -> Result<Fleet, FleetError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(io(&path))
        };
        let bad = |name: &str, error: String| FleetError::Bad {
            path: dir.join(name).display().to_string(),
            error,
        };
        let ca_pem = read(CA_CERT)?;
        let ca_key = KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| bad(CA_KEY, e.to_string()))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| bad(CA_CERT, e.to_string()))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| bad(CA_CERT, e.to_string()))?;
        let policy_key = match fs::read_to_string(dir.join(POLICY_KEY)) {
            Ok(pem) => Some(
                bundle::signing_key_from_pem(&pem).map_err(|e| bad(POLICY_KEY, e.to_string()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&dir.join(POLICY_KEY))(e)),
        };
        let policy_public = bundle::public_key_from_pem(&read(POLICY_PUBLIC)?)
            .map_err(|e| bad(POLICY_PUBLIC, e.to_string()))?;
        if let Some(key) = &policy_key
            && key.verifying_key() != policy_public
        {
            return Err(bad(
                POLICY_PUBLIC,
                "is not the public half of policy.key".into(),
            ));
        }
        let admin_token = read(ADMIN_TOKEN)?.trim().to_string();
        if admin_token.len() < 32 {
            return Err(bad(ADMIN_TOKEN, "shorter than 32 characters".into()));
        }
        Ok(Fleet {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_der,
            issuer,
            server_pem: read(SERVER_CERT)?,
            server_key_pem: read(SERVER_KEY)?,
            policy_key,
            policy_public,
            admin_token,
        })
    }

    /// Signs a card's certificate request. Only the request's public key is used: the name,
    /// the usage and the validity come from here, whatever the request asked for. Returns
    /// (certificate PEM, SHA-256 of its DER in hex).
    pub fn issue_card_certificate(
        &self,
        csr_pem: &str,
        card_id: &str,
    ) -> Result<(String, String), FleetError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| FleetError::Csr(e.to_string()))?;
        let issue = |e: rcgen::Error| FleetError::Issue(e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue)?;
        params.distinguished_name.push(DnType::CommonName, card_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial()?);
        validity(&mut params);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(issue)?;
        Ok((cert.pem(), crate::sha256_hex(cert.der())))
    }

    /// The server side of mutual TLS: the server's certificate; client certificates are
    /// checked against the fleet CA when offered, and may be absent (enrolment, admin calls):
    /// each route says what it needs.
    pub fn server_tls(&self) -> Result<Arc<rustls::ServerConfig>, FleetError> {
        let tls = |e: &dyn std::fmt::Display| FleetError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(|e| tls(&e))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls(&e))?;
        let chain = CertificateDer::pem_slice_iter(self.server_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(&e))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|e| tls(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))?;
        // Cards make one request per connection; resumption tickets would only cost memory.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}
