//! The card's web page over real HTTPS in network namespaces: served by `cardfw::admin::serve`
//! inside the card namespace on the inside address only, fetched from the client namespace by a
//! TLS client that pins the card's own certificate.
//!
//! ```text
//!  client 172.31.77.1 ──── card 172.31.77.2:443 (admin page) | 10.99.0.2 ──── outside 10.99.0.1
//! ```

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use cardfw::admin::{self, AdminState};
use cardfw::config::Config;
use cardfw::firewall::{Firewall, LoadedRules};
use cardfw::store::tls::tls_identity;
use cardfw::store::{PinCost, Store};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CARD_INSIDE: &str = "172.31.77.2";
const CARD_OUTSIDE: &str = "10.99.0.2";

/// Accepts exactly one certificate, byte for byte: the card's, read from its store.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the pinned card certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `GET /` over TLS pinned to `cert`: the whole response as text.
async fn fetch(addr: SocketAddr, cert: Vec<u8>) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("card.cardwall").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: card.cardwall\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .map_err(|_| "read timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn card_page_is_served_over_pinned_https_on_the_inside_address_only() {
    let Some(e2e::CardNamespaces {
        client,
        card,
        world: outside,
        lab,
    }) = e2e::card_namespaces("cardweb", &[])
    else {
        return;
    };

    let inside: IpAddr = CARD_INSIDE.parse().unwrap();
    let store = Store::open_or_create(
        &lab.dir().join("store"),
        "deny any\n",
        PinCost::INSECURE_FAST_FOR_TESTS,
    )
    .expect("store");
    let setup_code = store.setup_code().unwrap().expect("a new card");
    let identity = tls_identity(&store, inside).expect("TLS identity");
    let cert = identity.cert_der.clone();
    let tls = identity.server_config();
    let rules_file = lab.dir().join("rules.txt");
    std::fs::write(&rules_file, "deny any\n").unwrap();
    let firewall = Firewall::new(
        Config::default(),
        LoadedRules::from_file(&rules_file).expect("rules"),
        Some(store),
    );
    let state = AdminState::new(firewall).expect("a firewall with a store");

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = card.enter(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(inside, 443))
                .await
                .expect("bind the inside address");
            ready_tx.send(()).unwrap();
            tokio::select! {
                result = admin::serve(listener, tls, state) => result.expect("serve"),
                _ = stop_rx => {}
            }
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the page listens");

    // From the client: the login page, with the pinned certificate.
    let addr = SocketAddr::new(inside, 443);
    let pinned = cert.clone();
    let page = client
        .enter(move || runtime().block_on(fetch(addr, pinned)))
        .join()
        .unwrap()
        .expect("the page over HTTPS");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Log in"), "{page}");
    assert!(page.contains("tries left"), "{page}");
    // Issue 13.9: a new card asks for its setup code and never shows it.
    assert!(page.contains("Set up this card"), "{page}");
    assert!(!page.contains(setup_code.as_str()), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy:"), "{page}");
    assert!(
        lower.contains("set-cookie:") && page.contains("HttpOnly; Secure; SameSite=Strict"),
        "{page}"
    );

    // Another certificate is refused by the pinning client: the pin is what is checked.
    let other = rcgen::generate_simple_self_signed(vec!["card.cardwall".to_owned()])
        .unwrap()
        .cert
        .der()
        .to_vec();
    let refused = client
        .enter(move || runtime().block_on(fetch(addr, other)))
        .join()
        .unwrap();
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("TLS")),
        "{refused:?}"
    );

    // From outside, the card's other address has nothing listening on 443.
    let outside_addr: SocketAddr = format!("{CARD_OUTSIDE}:443").parse().unwrap();
    let connected = outside
        .enter(move || TcpStream::connect_timeout(&outside_addr, Duration::from_secs(3)))
        .join()
        .unwrap();
    assert!(
        connected.is_err(),
        "the page must not answer on the outside address"
    );

    let _ = stop_tx.send(());
    server.join().unwrap();
}
