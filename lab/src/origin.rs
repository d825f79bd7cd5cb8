//! The "outside world" of end-to-end tests: real servers running inside a namespace.
//!
//! Each start function binds its sockets inside the namespace (on a thread started with
//! [`Netns::enter`], running its own tokio runtime), returns once the server accepts
//! connections, and gives back a [`Server`] handle with the bound address and a counter. The
//! server stops when the handle is dropped, or soon after its namespace is removed (the lab
//! ended first).
//!
//! - [`http_origin`] / [`https_origin`]: hyper HTTP/1.1 with keep-alive; the routes are listed
//!   on [`http_origin`]. The counter counts requests.
//! - [`dns_server`]: A records from a map over UDP and TCP, NXDOMAIN otherwise. Counts queries.
//! - [`tcp_echo`]: echoes bytes back. Counts connections.
//! - [`test_ca`]: a throwaway CA issuing server certificates, for the HTTPS origin and for
//!   clients that must verify it (`curl --cacert`).
//!
//! [`query_a`] is the matching DNS client, for use inside [`Netns::enter`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream as AsyncTcpStream, UdpSocket as AsyncUdpSocket};
use tokio::sync::oneshot;

use crate::topology::{Netns, panic_message};

/// The body of `GET /` on the HTTP and HTTPS origins.
pub const HELLO: &str = "hello from origin\n";
/// Chunk size and pace of `/slow/N`.
pub const SLOW_CHUNK: usize = 1024;
/// Pause between two chunks of `/slow/N`.
pub const SLOW_INTERVAL: Duration = Duration::from_millis(50);
/// TTL of the DNS server's answers.
pub const DNS_TTL: u32 = 60;

/// A running server. Dropping it stops the server (its thread is joined).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the server is bound to (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How much it has served so far: requests (HTTP, HTTPS), queries (DNS) or connections
    /// (TCP echo).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// The counter behind [`Server::served`], to keep watching it after moving the handle.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.served)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a server on a new thread inside `ns`. `setup` runs there, inside a current-thread
/// tokio runtime's context: it binds the sockets and returns the bound address and the future
/// that serves. Errors from `setup` (address not available, port taken) are returned here.
fn start<S, F>(ns: &Netns, what: &str, setup: S) -> Result<Server>
where
    S: FnOnce(Arc<AtomicU64>) -> Result<(SocketAddr, F)> + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let served = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let counter = Arc::clone(&served);
    let netns = ns.clone();
    let thread = ns.enter(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow!(e).context("building a tokio runtime")));
                return;
            }
        };
        let setup = {
            let _context = runtime.enter();
            setup(counter)
        };
        let serve = match setup {
            Ok((addr, serve)) => {
                let _ = ready_tx.send(Ok(addr));
                serve
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            tokio::select! {
                _ = stop_rx => {}
                () = serve => {}
                () = namespace_removed(&netns) => {}
            }
        });
        // Dropping the runtime here cancels every connection task and closes the sockets.
    });
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok(Server {
            addr,
            served,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e.context(format!("starting {what} in namespace {ns}")))
        }
        Err(_) => {
            let reason = match thread.join() {
                Err(panic) => panic_message(&*panic),
                Ok(()) => "its thread ended before it was ready".to_owned(),
            };
            Err(anyhow!("starting {what} in namespace {ns}: {reason}"))
        }
    }
}

/// Resolves once the namespace is gone (its lab was dropped before the server handle).
async fn namespace_removed(netns: &Netns) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !netns.exists() {
            return;
        }
    }
}

/// Binds a TCP listener (std sets SO_REUSEADDR) and hands it to the current runtime.
fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding TCP {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// Accepts connections for ever, each handled on its own task: the serving layer's one accept
/// loop, which backs off while descriptors run out.
async fn accept_loop<H, F>(listener: TcpListener, handle: H)
where
    H: Fn(AsyncTcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let how = serve::accept::Listener::new("lab origin");
    match serve::accept::serve(listener, how, move |stream, _client| handle(stream)).await {}
}

// ---------------------------------------------------------------------------------------------
// Test CA

/// A throwaway certificate authority for one test run.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// Creates a new CA (fresh key, self-signed, "cardwall test CA").
pub fn test_ca() -> TestCa {
    test_ca_named("cardwall test CA")
}

/// A new CA by another name than [`test_ca`]'s: one nobody trusts (a verifier that finds a
/// trusted CA of the same name would report a bad signature, not an unknown issuer).
pub fn test_ca_named(common_name: &str) -> TestCa {
    let params = ca_params(common_name);
    let key = KeyPair::generate().expect("generating a CA key");
    let certificate = params.self_signed(&key).expect("self-signing the test CA");
    TestCa {
        issuer: Issuer::new(params, key),
        ca_pem: certificate.pem(),
    }
}

/// The DER of an Authority Information Access extension with one "CA Issuers" `url`.
fn aia_ca_issuers(url: &str) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            len @ 0..=127 => out.push(len as u8),
            len @ 128..=255 => out.extend_from_slice(&[0x81, len as u8]),
            len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }
    // id-ad-caIssuers, 1.3.6.1.5.5.7.48.2
    let mut description = der(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02]);
    // uniformResourceIdentifier [6] IA5String
    description.extend(der(0x86, url.as_bytes()));
    der(0x30, &der(0x30, &description))
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .expect("no subject alternative names cannot be invalid");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl TestCa {
    /// Issues a certificate for `names` (DNS names or IP addresses) with a fresh key, usable
    /// by servers and clients. Returns (certificate chain PEM: leaf then CA, private key PEM).
    ///
    /// Panics if a name is not a valid DNS name or IP address (a bug in the test).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_with(names, |_| {})
    }

    /// Like [`TestCa::issue`], the certificate naming `url` as where its issuer's certificate
    /// is (AIA "CA Issuers", RFC 5280 4.2.2.1), as public CAs' certificates do.
    pub fn issue_with_aia(&self, names: &[&str], url: &str) -> (String, String) {
        self.issue_with(names, |params| {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    aia_ca_issuers(url),
                ));
        })
    }

    /// Like [`TestCa::issue`], but the certificate expired years ago (valid only in 2020): for
    /// an origin whose certificate a client must refuse as expired.
    pub fn issue_expired(&self, names: &[&str]) -> (String, String) {
        self.issue_with(names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        adjust(&mut params);
        let key = KeyPair::generate().expect("generating a key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("signing with the test CA");
        (
            format!("{}{}", certificate.pem(), self.ca_pem),
            key.serialize_pem(),
        )
    }

    /// A CA named `common_name` that this one signed: certificates it issues chain to this
    /// CA through it, for an origin that sends (or forgets) its intermediate.
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let params = ca_params(common_name);
        let key = KeyPair::generate().expect("generating a CA key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("signing the intermediate");
        TestCa {
            issuer: Issuer::new(ca_params(common_name), key),
            ca_pem: certificate.pem(),
        }
    }

    /// The CA's private key, PEM: for tools that sign as the CA (`openssl ocsp`).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate (PEM) to `path`, e.g. for `curl --cacert <path>`.
    pub fn write_ca_pem(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, &self.ca_pem)
            .with_context(|| format!("writing the test CA to {}", path.display()))
    }

    /// A rustls server configuration (ring provider, ALPN `h2`, `http/1.1`) with a fresh
    /// certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> Result<Arc<rustls::ServerConfig>> {
        server_config_of(self.issue(names))
    }
}

/// How an origin's TLS differs from a well-run site's.
#[derive(Debug, Default)]
enum Quirk {
    #[default]
    None,
    /// Sends its own certificate without the intermediate that issued it.
    LeafOnly,
    /// Requires a client certificate issued by this CA (PEM).
    ClientCertFrom(String),
    /// Staples this OCSP response (DER).
    Staple(Vec<u8>),
}

/// A rustls server configuration (ring provider, ALPN `h2`, `http/1.1`) for an issued
/// (chain, key) pair.
fn server_config_of(issued: (String, String)) -> Result<Arc<rustls::ServerConfig>> {
    server_config_with(issued, Quirk::None)
}

fn server_config_with(
    (chain, key): (String, String),
    quirk: Quirk,
) -> Result<Arc<rustls::ServerConfig>> {
    let mut chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the issued certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("reading the issued key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut staple = Vec::new();
    let builder = match quirk {
        Quirk::None => builder.with_no_client_auth(),
        Quirk::Staple(ocsp) => {
            staple = ocsp;
            builder.with_no_client_auth()
        }
        Quirk::LeafOnly => {
            chain.truncate(1);
            builder.with_no_client_auth()
        }
        Quirk::ClientCertFrom(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(ca.context("reading the client CA")?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert_with_ocsp(chain, key, staple)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// HTTP and HTTPS origins

type OriginBody = UnsyncBoxBody<Bytes, Infallible>;

/// Starts an HTTP/1.1 and HTTP/2 origin (keep-alive, upgrades) on `addr` inside `ns`. Routes:
///
/// | path | response |
/// |---|---|
/// | `/` | 200 `text/plain` [`HELLO`] |
/// | `/bytes/N` | N bytes of `x`, `application/octet-stream`, with Content-Length |
/// | `/chunked/N` | N bytes of `x`, chunked transfer encoding (no Content-Length) |
/// | `/video` | 200 `video/mp4`, a small body |
/// | `/slow/N` | N bytes of `x` with Content-Length, 1 KiB every 50 ms |
/// | `/echo` | `text/plain` lines `method M`, `path P` (with query), `host H`, `body N bytes` |
/// | `/ws` | with `Connection: Upgrade` and `Upgrade: websocket`: 101, then raw bytes echoed; 426 otherwise |
/// | `/websocket` | a real WebSocket echo (RFC 6455), for browsers |
/// | `/h3` | [`HELLO`] with `Alt-Svc: h3=":443"` |
/// | `/files/…` | with [`https_origin_with_files`] or [`http_origin_with_files`]: the files of a directory |
/// | other | 404 |
///
/// `/ws` is WebSocket-*style*: the upgrade handshake, but no `Sec-WebSocket-Accept` and no
/// framing, enough to prove a proxy passes upgrades through.
pub fn http_origin(ns: &Netns, addr: SocketAddr) -> Result<Server> {
    http_origin_serving(ns, addr, None)
}

/// [`http_origin`] that also serves the files under `files` at `/files/…`, in clear (where
/// CAs publish their certificates for AIA).
pub fn http_origin_with_files(ns: &Netns, addr: SocketAddr, files: &Path) -> Result<Server> {
    http_origin_serving(ns, addr, Some(files))
}

fn http_origin_serving(ns: &Netns, addr: SocketAddr, files: Option<&Path>) -> Result<Server> {
    let site = Site {
        files: files.map(Arc::from),
        ..Site::default()
    };
    start(ns, "HTTP origin", move |served| {
        let listener = bind_tcp(addr)?;
        let bound = listener.local_addr()?;
        let serve = accept_loop(listener, move |stream| {
            serve_http(stream, Arc::clone(&served), site.clone())
        });
        Ok((bound, serve))
    })
}

/// Starts the same origin as [`http_origin`] over TLS (rustls, ring), with a certificate for
/// `names` issued by `ca`.
pub fn https_origin(ns: &Netns, addr: SocketAddr, ca: &TestCa, names: &[&str]) -> Result<Server> {
    https_origin_with_files(ns, addr, ca, names, None)
}

/// [`https_origin`] that also serves the files under `files` at `/files/…` (read-only, no
/// `..`): a git repository there can be cloned over git's "dumb" HTTP protocol.
pub fn https_origin_with_files(
    ns: &Netns,
    addr: SocketAddr,
    ca: &TestCa,
    names: &[&str],
    files: Option<&Path>,
) -> Result<Server> {
    https_origin_with_config(ns, addr, ca.server_config(names)?, files)
}

/// [`https_origin`] whose certificate for `names` expired years ago ([`TestCa::issue_expired`]).
pub fn https_origin_expired(
    ns: &Netns,
    addr: SocketAddr,
    ca: &TestCa,
    names: &[&str],
) -> Result<Server> {
    https_origin_with_config(ns, addr, server_config_of(ca.issue_expired(names))?, None)
}

/// [`https_origin`] that sends its certificate for `names` without the intermediate that
/// issued it (`ca` is then an intermediate, [`TestCa::intermediate`]): a misconfigured server.
/// With `aia`, the certificate names that URL as where the intermediate is.
pub fn https_origin_leaf_only(
    ns: &Netns,
    addr: SocketAddr,
    ca: &TestCa,
    names: &[&str],
    aia: Option<&str>,
) -> Result<Server> {
    let issued = match aia {
        Some(url) => ca.issue_with_aia(names, url),
        None => ca.issue(names),
    };
    let config = server_config_with(issued, Quirk::LeafOnly)?;
    https_origin_with_config(ns, addr, config, None)
}

/// [`https_origin`] serving `issued` (a chain and key from [`TestCa::issue`]) and stapling the
/// OCSP response `staple` (DER) in every handshake.
pub fn https_origin_stapling(
    ns: &Netns,
    addr: SocketAddr,
    issued: (String, String),
    staple: Vec<u8>,
) -> Result<Server> {
    let config = server_config_with(issued, Quirk::Staple(staple))?;
    https_origin_with_config(ns, addr, config, None)
}

/// [`https_origin`] that completes a handshake only with a client certificate issued by
/// `clients`: a company portal.
pub fn https_origin_requiring_client_cert(
    ns: &Netns,
    addr: SocketAddr,
    ca: &TestCa,
    names: &[&str],
    clients: &TestCa,
) -> Result<Server> {
    let quirk = Quirk::ClientCertFrom(clients.ca_pem().to_owned());
    let config = server_config_with(ca.issue(names), quirk)?;
    https_origin_with_config(ns, addr, config, None)
}

fn https_origin_with_config(
    ns: &Netns,
    addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    files: Option<&Path>,
) -> Result<Server> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let files: Option<Arc<Path>> = files.map(Arc::from);
    start(ns, "HTTPS origin", move |served| {
        let listener = bind_tcp(addr)?;
        let bound = listener.local_addr()?;
        let serve = accept_loop(listener, move |stream| {
            let acceptor = acceptor.clone();
            let served = Arc::clone(&served);
            let files = files.clone();
            async move {
                // A failed handshake is the client's business (e.g. it rejected our certificate).
                if let Ok(tls) = acceptor.accept(stream).await {
                    let version = match tls.get_ref().1.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                        _ => "other",
                    };
                    let site = Site {
                        tls_version: Some(version),
                        files,
                    };
                    serve_http(tls, served, site).await;
                }
            }
        });
        Ok((bound, serve))
    })
}

/// What one origin serves beyond its fixed routes.
#[derive(Debug, Clone, Default)]
struct Site {
    /// Over TLS, the negotiated version: every answer says it in `tls-version`, so a browser
    /// test can read it (`fetch` sees headers, pages do not).
    tls_version: Option<&'static str>,
    /// Served at `/files/…`.
    files: Option<Arc<Path>>,
}

async fn serve_http<I>(io: I, served: Arc<AtomicU64>, site: Site)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        served.fetch_add(1, Ordering::SeqCst);
        let site = site.clone();
        async move {
            let file = request
                .uri()
                .path()
                .strip_prefix("/files/")
                .map(str::to_string);
            let mut response = match (file, &site.files) {
                (Some(file), Some(root)) => serve_file(root, &file),
                _ => route(request).await?,
            };
            if let Some(version) = site.tls_version {
                response
                    .headers_mut()
                    .insert("tls-version", HeaderValue::from_static(version));
            }
            Ok::<_, Infallible>(response)
        }
    });
    // HTTP/1.1 or HTTP/2 (by ALPN over TLS, by prior knowledge in clear), as real sites serve.
    // Errors here are the peer going away mid-request: nothing to report.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

async fn route(request: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let response = match path.as_str() {
        "/" => text(StatusCode::OK, HELLO.to_owned()),
        "/video" => video(),
        "/echo" => echo(request).await,
        "/ws" => websocket(request),
        "/websocket" => real_websocket(request),
        "/h3" => {
            // Tells browsers the site also speaks HTTP/3 (QUIC) on UDP 443: the next load
            // tries it, and the card must make that fail fast.
            let mut hello = text(StatusCode::OK, HELLO.to_owned());
            hello.headers_mut().insert(
                header::ALT_SVC,
                HeaderValue::from_static("h3=\":443\"; ma=86400"),
            );
            hello
        }
        _ => {
            if let Some(count) = path.strip_prefix("/bytes/") {
                xs(count, Pace::Full)
            } else if let Some(count) = path.strip_prefix("/chunked/") {
                xs(count, Pace::Chunked)
            } else if let Some(count) = path.strip_prefix("/slow/") {
                xs(count, Pace::Slow)
            } else {
                text(StatusCode::NOT_FOUND, format!("no route for {path}\n"))
            }
        }
    };
    Ok(response)
}

/// A file under `root`, or 404. Paths with `..` or empty parts are 404 too.
fn serve_file(root: &Path, relative: &str) -> Response<OriginBody> {
    if relative
        .split('/')
        .any(|part| part.is_empty() || part == "..")
    {
        return text(StatusCode::NOT_FOUND, "no such file\n".to_owned());
    }
    match std::fs::read(root.join(relative)) {
        Ok(bytes) => response(
            StatusCode::OK,
            "application/octet-stream",
            Full::new(Bytes::from(bytes)).boxed_unsync(),
        ),
        Err(_) => text(StatusCode::NOT_FOUND, "no such file\n".to_owned()),
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: OriginBody,
) -> Response<OriginBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: String) -> Response<OriginBody> {
    response(
        status,
        "text/plain; charset=utf-8",
        Full::new(Bytes::from(body)).boxed_unsync(),
    )
}

fn video() -> Response<OriginBody> {
    // The start of an MP4 file: an `ftyp` box, then padding. Enough for type filters.
    let mut body = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41".to_vec();
    body.resize(1024, 0);
    response(
        StatusCode::OK,
        "video/mp4",
        Full::new(Bytes::from(body)).boxed_unsync(),
    )
}

async fn echo(request: Request<Incoming>) -> Response<OriginBody> {
    // HTTP/2 carries the host as the `:authority` pseudo-header, which hyper puts in the URI.
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let head = format!("method {}\npath {path}\nhost {host}\n", request.method());
    let body = match request.into_body().collect().await {
        Ok(body) => format!("body {} bytes\n", body.to_bytes().len()),
        Err(e) => format!("body unreadable: {e}\n"),
    };
    text(StatusCode::OK, head + &body)
}

fn websocket(mut request: Request<Incoming>) -> Response<OriginBody> {
    let headers = request.headers();
    let wants_upgrade = has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket");
    if !wants_upgrade {
        let mut refusal = text(
            StatusCode::UPGRADE_REQUIRED,
            "expected Connection: Upgrade and Upgrade: websocket\n".to_owned(),
        );
        refusal
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return refusal;
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buffer = vec![0; 16 * 1024];
        loop {
            match io.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut switching = Response::new(Empty::new().boxed_unsync());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = switching.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    switching
}

/// A WebSocket echo as browsers speak it (RFC 6455 handshake and framing, by tungstenite):
/// every text or binary message comes back unchanged.
fn real_websocket(mut request: Request<Incoming>) -> Response<OriginBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let wants_upgrade = has_token(request.headers(), header::UPGRADE, "websocket");
    let (Some(key), true) = (key, wants_upgrade) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket handshake\n".to_owned(),
        );
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = socket.next().await {
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut switching = Response::new(Empty::new().boxed_unsync());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = switching.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    switching
}

/// Whether a comma-separated header (`Connection`, `Upgrade`) holds `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as possible, with Content-Length.
    Full,
    /// As fast as possible, chunked transfer encoding.
    Chunked,
    /// [`SLOW_CHUNK`] every [`SLOW_INTERVAL`], with Content-Length.
    Slow,
}

fn xs(count: &str, pace: Pace) -> Response<OriginBody> {
    let Ok(remaining) = count.parse::<u64>() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("expected a byte count, got {count:?}\n"),
        );
    };
    let (chunk, interval, known_length) = match pace {
        Pace::Full => (XS.len(), None, true),
        Pace::Chunked => (4096, None, false),
        Pace::Slow => (SLOW_CHUNK, Some(SLOW_INTERVAL), true),
    };
    let body = Xs {
        remaining,
        chunk,
        interval,
        timer: None,
        known_length,
    };
    response(
        StatusCode::OK,
        "application/octet-stream",
        body.boxed_unsync(),
    )
}

/// The bytes every `x` body is cut from.
static XS: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A body of `remaining` bytes of `x`, produced in chunks, optionally paced. Without a known
/// length hyper sends it chunked; with one it sets Content-Length.
struct Xs {
    remaining: u64,
    chunk: usize,
    interval: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    known_length: bool,
}

impl Body for Xs {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(timer) = this.timer.as_mut() {
            ready!(timer.as_mut().poll(cx));
            this.timer = None;
        }
        let size = usize::try_from(this.remaining).map_or(this.chunk, |r| r.min(this.chunk));
        this.remaining -= size as u64;
        if let (Some(interval), true) = (this.interval, this.remaining > 0) {
            this.timer = Some(Box::pin(tokio::time::sleep(interval)));
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&XS[..size])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DNS

/// Starts a DNS server on `addr` (UDP and TCP on the same port; port 53 is the usual choice)
/// inside `ns`. It answers A queries for the names in `records` (case and a trailing dot do not
/// matter), an empty NOERROR for other types of a known name, NXDOMAIN for unknown names.
pub fn dns_server(
    ns: &Netns,
    addr: SocketAddr,
    records: HashMap<String, Ipv4Addr>,
) -> Result<Server> {
    let records: Arc<HashMap<String, Ipv4Addr>> = Arc::new(
        records
            .into_iter()
            .map(|(name, ip)| (normalize_name(&name), ip))
            .collect(),
    );
    start(ns, "DNS server", move |served| {
        let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
        let bound = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        let udp = AsyncUdpSocket::from_std(udp)?;
        // Same port for TCP, also when the caller let the system pick the UDP port.
        let tcp = bind_tcp(bound)?;
        let serve = {
            let records = Arc::clone(&records);
            let served = Arc::clone(&served);
            async move {
                tokio::join!(
                    serve_dns_udp(udp, Arc::clone(&records), Arc::clone(&served)),
                    accept_loop(tcp, move |stream| {
                        serve_dns_tcp(stream, Arc::clone(&records), Arc::clone(&served))
                    }),
                );
            }
        };
        Ok((bound, serve))
    })
}

async fn serve_dns_udp(
    socket: AsyncUdpSocket,
    records: Arc<HashMap<String, Ipv4Addr>>,
    served: Arc<AtomicU64>,
) {
    let mut buffer = vec![0; 4096];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        served.fetch_add(1, Ordering::SeqCst);
        if let Some(reply) = dns_answer(&records, &buffer[..length]) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_dns_tcp(
    mut stream: AsyncTcpStream,
    records: Arc<HashMap<String, Ipv4Addr>>,
    served: Arc<AtomicU64>,
) {
    // RFC 1035 4.2.2: each message is preceded by its length, two bytes big-endian; a client
    // may send several queries on one connection.
    loop {
        let Ok(length) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0; usize::from(length)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        served.fetch_add(1, Ordering::SeqCst);
        let Some(reply) = dns_answer(&records, &query) else {
            return;
        };
        let Ok(reply_length) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = reply_length.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The reply to one DNS message, or None if it is not a query we can even parse.
fn dns_answer(records: &HashMap<String, Ipv4Addr>, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let [question] = request.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    reply.add_query(question.clone());
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply.to_vec().ok();
    }
    match records.get(&normalize_name(&question.name().to_ascii())) {
        Some(address) if question.query_type() == RecordType::A => {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                DNS_TTL,
                RData::A(A(*address)),
            ));
        }
        Some(_) => {} // the name exists, without records of that type
        None => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// How [`query_a`] reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    /// One datagram each way.
    Udp,
    /// One length-prefixed message each way over a TCP connection.
    Tcp,
}

/// What a DNS server answered to [`query_a`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The response code (NoError, NXDomain, ...).
    pub code: ResponseCode,
    /// The A records in the answer section, in order.
    pub addresses: Vec<Ipv4Addr>,
}

/// Asks `server` for the A records of `name` (blocking, 2 s timeout). Sockets are created in the
/// calling thread's namespace: call it inside [`Netns::enter`].
pub fn query_a(server: SocketAddr, name: &str, transport: DnsTransport) -> Result<DnsAnswer> {
    let timeout = Duration::from_secs(2);
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    let name_parsed = Name::from_ascii(name).with_context(|| format!("invalid name {name:?}"))?;
    query.add_query(Query::query(name_parsed, RecordType::A));
    let bytes = query.to_vec()?;
    let reply = match transport {
        DnsTransport::Udp => {
            let local: SocketAddr = match server.ip() {
                IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local)?;
            socket.set_read_timeout(Some(timeout))?;
            socket.connect(server)?;
            socket.send(&bytes)?;
            let mut buffer = vec![0; 4096];
            let length = socket
                .recv(&mut buffer)
                .with_context(|| format!("no DNS answer from {server} over UDP"))?;
            buffer.truncate(length);
            buffer
        }
        DnsTransport::Tcp => {
            let mut stream = TcpStream::connect_timeout(&server, timeout)
                .with_context(|| format!("connecting to DNS server {server} over TCP"))?;
            stream.set_read_timeout(Some(timeout))?;
            let length = u16::try_from(bytes.len())?;
            let mut framed = length.to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed)?;
            let mut length = [0; 2];
            stream
                .read_exact(&mut length)
                .with_context(|| format!("no DNS answer from {server} over TCP"))?;
            let mut buffer = vec![0; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut buffer)?;
            buffer
        }
    };
    let reply = Message::from_vec(&reply).context("malformed DNS answer")?;
    if reply.metadata.id != query.metadata.id {
        bail!(
            "DNS answer id {} does not match query id {}",
            reply.metadata.id,
            query.metadata.id
        );
    }
    let addresses = reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(address) => Some(address.0),
            _ => None,
        })
        .collect();
    Ok(DnsAnswer {
        code: reply.metadata.response_code,
        addresses,
    })
}

// ---------------------------------------------------------------------------------------------
// TCP echo

/// Starts a TCP echo server on `addr` inside `ns`: every byte received is sent back, and the
/// write side is closed when the client closes its own. Counts connections.
pub fn tcp_echo(ns: &Netns, addr: SocketAddr) -> Result<Server> {
    start(ns, "TCP echo server", move |served| {
        let listener = bind_tcp(addr)?;
        let bound = listener.local_addr()?;
        let serve = accept_loop(listener, move |stream| {
            served.fetch_add(1, Ordering::SeqCst);
            async move {
                let (mut reader, mut writer) = stream.into_split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            }
        });
        Ok((bound, serve))
    })
}
