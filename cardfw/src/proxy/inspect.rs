//! Inspected HTTPS: a TLS connection an `inspect` rule allowed is terminated on the card with
//! a leaf from the card's CA ([`crate::inspect`]), the card opens its own TLS connection to
//! the site and checks the site's certificate, and HTTP is relayed in between: HTTP/2 or
//! HTTP/1.1 on each side, whatever each side's ALPN chose. Every request inside is decided by
//! the core as a plain `http` request for the hello's name on the connection's port, so path,
//! method, content-type and `max-body` rules hold inside HTTPS with the same block page.
//!
//! ```text
//! client ──TLS (leaf for the SNI)──► hyper server ─ each request: Firewall::decide ─►
//!        hyper client ──TLS (webpki: Mozilla's roots + the owner's CAs)──► site
//! ```
//!
//! A site whose certificate is refused gets no forged certificate: the inside session is
//! completed (the client trusts the card's CA) only to answer every request on it with a 502
//! page naming the [`CertReason`], recorded once as [`Refusal::UpstreamCertificate`].
//!
//! WebSockets (the HTTP/1.1 upgrade, decided like any request for its path) get a TLS
//! connection of their own to the site, HTTP/1.1 only, and are relayed until either side
//! closes, within the inspected connection's slot. Other upgrades, and HTTP/2's extended
//! CONNECT (which the card does not offer, so browsers do not use it), are answered 501.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rules::{Action, Protocol};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::client::TlsStream;

use super::aia;
use super::http::{ambiguous_path, rules_request};
use super::pages::{self, Page};
use super::upstream::{self as connect, UpstreamError};
use crate::firewall::{Ask, Counters, Firewall, Refusal, Verdict};
use crate::inspect::{ALPN, Alpn, CertReason, IdentityState, Inspection, Refused, Unlock};

/// Bodies both ways: the site's (possibly cut at `max-body`) or one of the card's pages.
type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One inspected connection, from the client's already-read hello to its end.
pub(super) struct Inspected<'a> {
    pub firewall: Arc<Firewall>,
    pub inspection: &'a Inspection,
    pub peer: SocketAddr,
    /// The hello's name (SNI); `None` for a hello sent to an address.
    pub server_name: Option<String>,
    /// The original destination's port, and the address the card connected to.
    pub port: u16,
    pub upstream_addr: SocketAddr,
    /// The rule says `client-cert`: present the user's certificate to the site.
    pub client_cert: bool,
}

impl Inspected<'_> {
    /// Terminates `client` (whose hello is in `hello`), connects TLS over `upstream`, and
    /// relays HTTP until either side ends.
    pub async fn run(self, client: TcpStream, hello: Vec<u8>, upstream: TcpStream) {
        let leaves = &self.inspection.leaves;
        let alpn = ALPN.iter().map(|p| p.to_vec()).collect();
        let server_config = match leaves.server_config(Some(self.upstream_addr.ip()), alpn) {
            Ok(config) => config,
            Err(error) => {
                return tracing::error!(%error, "no TLS configuration for inspection");
            }
        };
        let replayed = Replayed {
            hello: io::Cursor::new(hello),
            stream: client,
        };
        let inside = match tokio_rustls::TlsAcceptor::from(server_config)
            .accept(replayed)
            .await
        {
            Ok(inside) => inside,
            // Most often the client does not trust the card's CA: it says so with an alert.
            Err(error) => {
                return tracing::info!(client = %self.peer, target = %self.target(), %error,
                    "inspected TLS: the client's handshake failed");
            }
        };
        let upstream = self.connect_upstream(upstream).await;
        let this = Arc::new(self.owned());
        let connection = this.clone();
        let service = hyper::service::service_fn(move |request| {
            let this = this.clone();
            let upstream = upstream.clone();
            async move { Ok::<_, io::Error>(this.exchange(request, &upstream).await) }
        });
        let limits = &self.firewall.config.limits;
        let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // As on plain HTTP: a request head must arrive whole within the header timeout.
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout())
            .max_buf_size(limits.max_header_bytes.max(8192));
        let served = server
            .serve_connection_with_upgrades(TokioIo::new(inside), service)
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "inspected connection ended");
        }
        let relays = std::mem::take(&mut *connection.upgraded.lock().await);
        for relay in relays {
            let _ = relay.await;
        }
    }

    fn target(&self) -> String {
        let host = self.host();
        format!("{host}:{}", self.port)
    }

    fn host(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.upstream_addr.ip().to_string())
    }

    fn owned(&self) -> Connection {
        Connection {
            firewall: self.firewall.clone(),
            upgraded: Mutex::default(),
            peer: self.peer,
            host: self.host().to_ascii_lowercase(),
            port: self.port,
            upstream_addr: self.upstream_addr,
        }
    }

    /// The card's own TLS session to the site and an HTTP client over it, or why there is
    /// none (then every request is answered with the page saying so).
    async fn connect_upstream(&self, tcp: TcpStream) -> Arc<Upstream> {
        let target = self.target();
        let host = self.host();
        let name = match ServerName::try_from(host.clone()) {
            Ok(name) => name,
            Err(error) => {
                let error = UpstreamError::Other(self.upstream_addr, io::Error::other(error));
                return Arc::new(Upstream::Failed(pages::upstream_failed(&target, &error)));
            }
        };
        let (configs, presented) = match self.client_configs() {
            Ok(chosen) => chosen,
            Err(refusal) => {
                self.firewall
                    .refuse(self.peer.ip(), Protocol::Https, &target, refusal);
                tracing::info!(client = %self.peer, target, code = refusal.code(),
                    "inspected site refused: it needs the client certificate");
                let why = format!("{} ({})", refusal.reason(), refusal.code());
                let page = pages::refused(StatusCode::FORBIDDEN, &why);
                return Arc::new(Upstream::Failed(page));
            }
        };
        let tls = match self
            .handshake(&target, configs.shared.clone(), name.clone(), tcp)
            .await
        {
            Ok(tls) => tls,
            Err(failed) => return Arc::new(failed),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map(|(sender, connection)| {
                    tokio::spawn(connection);
                    Sender::Http2(sender)
                })
        } else {
            hyper::client::conn::http1::handshake(io)
                .await
                .map(|(sender, connection)| {
                    tokio::spawn(connection);
                    Sender::Http1(Mutex::new(sender))
                })
        };
        Arc::new(match sender {
            Ok(sender) => Upstream::Open(Open {
                sender,
                presented,
                upgrades: configs.upgrades,
                name,
            }),
            Err(error) => {
                let error = UpstreamError::Other(self.upstream_addr, io::Error::other(error));
                connect::count_failure(&self.firewall, self.peer, &target, &error);
                Upstream::Failed(pages::upstream_failed(&target, &error))
            }
        })
    }

    /// The card's TLS client for this site, for the shared connection and for upgrades: with
    /// the user's certificate when the rule says `client-cert`, which must then be unlocked
    /// (the unlock is returned: the connection lasts only as long as it). Checked before the
    /// handshake so the page names the lock, rather than the server's alert.
    fn client_configs(&self) -> Result<(Configs, Option<Unlock>), Refusal> {
        let upstream = self.inspection.upstream();
        if !self.client_cert {
            let configs = Configs {
                shared: upstream.client_config(Alpn::Any),
                upgrades: upstream.client_config(Alpn::Http1),
            };
            return Ok((configs, None));
        }
        let identity = &self.inspection.client_identity;
        let unlock = match identity.current_unlock() {
            Some(unlock) => unlock,
            None if identity.state() == IdentityState::Missing => {
                return Err(Refusal::ClientCertMissing);
            }
            None => return Err(Refusal::ClientCertLocked),
        };
        let presenting = |alpn| {
            upstream
                .presenting_config(alpn)
                .ok_or(Refusal::ClientCertMissing)
        };
        let configs = Configs {
            shared: presenting(Alpn::Any)?,
            upgrades: presenting(Alpn::Http1)?,
        };
        Ok((configs, Some(unlock)))
    }

    /// The card's TLS handshake with the site over `tcp`. A chain refused as incomplete whose
    /// leaf names where its issuer is gets one more try, once the card has fetched the issuer
    /// ([`aia`]) and if the rules allow fetching it.
    async fn handshake(
        &self,
        target: &str,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Upstream> {
        let connector = tokio_rustls::TlsConnector::from(config);
        let error = match connector.connect(name.clone(), tcp).await {
            Ok(tls) => return Ok(tls),
            Err(error) => error,
        };
        let refused = Refused::of_io(&error).filter(|r| r.reason == CertReason::IncompleteChain);
        let Some(refused) = refused else {
            return Err(self.refused_upstream(target, error, None));
        };
        let Some(url) = refused.ca_issuers.clone() else {
            let note = "the certificate names no URL to fetch its issuer from".to_owned();
            return Err(self.refused_upstream(target, error, Some(note)));
        };
        let fetched = aia::fetch(&self.firewall, self.peer.ip(), &url)
            .await
            .map_err(|e| e.to_string())
            .and_then(|issuer| {
                self.inspection
                    .intermediates
                    .insert(issuer)
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = fetched {
            tracing::info!(client = %self.peer, target, url, why, "missing intermediate not fetched");
            let note = format!("the card did not fetch the missing intermediate: {why}");
            return Err(self.refused_upstream(target, error, Some(note)));
        }
        tracing::info!(client = %self.peer, target, url, "missing intermediate fetched");
        let tcp = connect::connect(&self.firewall, self.upstream_addr)
            .await
            .map_err(|error| Upstream::Failed(pages::upstream_failed(target, &error)))?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|error| self.refused_upstream(target, error, None))
    }

    /// The page for a failed upstream handshake: a refused certificate is a refusal, recorded
    /// with its reason's code (and `note` said after it); anything else is an unreachable site.
    fn refused_upstream(&self, target: &str, error: io::Error, note: Option<String>) -> Upstream {
        match CertReason::of_io(&error) {
            Some(reason) => {
                let refusal = Refusal::UpstreamCertificate(reason.code());
                self.firewall
                    .refuse(self.peer.ip(), Protocol::Https, target, refusal);
                tracing::info!(client = %self.peer, target, code = reason.code(), %reason,
                    "inspected site refused: its certificate");
                let why = match note {
                    Some(note) => format!("{reason} ({}); {note}", reason.code()),
                    None => format!("{reason} ({})", reason.code()),
                };
                Upstream::Failed(pages::refused(StatusCode::BAD_GATEWAY, &why))
            }
            None => {
                let error = UpstreamError::Other(self.upstream_addr, error);
                connect::count_failure(&self.firewall, self.peer, target, &error);
                Upstream::Failed(pages::upstream_failed(target, &error))
            }
        }
    }
}

/// What each request of an inspected connection needs, shared by its requests.
struct Connection {
    firewall: Arc<Firewall>,
    /// The relays of WebSockets opened on this connection: awaited before the connection
    /// counts as closed, so they stay within the card's connection limits.
    upgraded: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    peer: SocketAddr,
    /// The hello's name, lower case (or the address connected to).
    host: String,
    port: u16,
    upstream_addr: SocketAddr,
}

/// The card's HTTP client to the site: HTTP/2 multiplexes, HTTP/1.1 takes one request at a
/// time (an HTTP/2 client's concurrent requests wait their turn).
enum Sender {
    Http1(Mutex<hyper::client::conn::http1::SendRequest<Incoming>>),
    Http2(hyper::client::conn::http2::SendRequest<Incoming>),
}

enum Upstream {
    Open(Open),
    /// No session to the site; every request gets this page.
    Failed(Page),
}

/// The card's session with the site, and what another one for an upgrade needs.
struct Open {
    sender: Sender,
    /// The unlock of the client certificate it presented, if it did.
    presented: Option<Unlock>,
    /// The TLS client for a WebSocket's own connection (HTTP/1.1 only, the same certificate).
    upgrades: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// The TLS clients one inspected connection uses.
struct Configs {
    shared: Arc<rustls::ClientConfig>,
    upgrades: Arc<rustls::ClientConfig>,
}

impl Connection {
    /// Whether the client certificate this connection presented is still unlocked under the
    /// same unlock (see [`Unlock`]).
    fn still_unlocked(&self, unlock: Unlock) -> bool {
        self.firewall
            .inspection
            .get()
            .is_some_and(|inspection| inspection.client_identity.still_unlocked(unlock))
    }

    /// The card's page for a refusal found in the traffic, recorded.
    fn refused(&self, url: &str, refusal: Refusal, status: StatusCode) -> Response<Body> {
        self.firewall
            .refuse(self.peer.ip(), Protocol::Http, url, refusal);
        let why = format!("{} ({})", refusal.reason(), refusal.code());
        page_response(&pages::refused(status, &why))
    }

    /// One request: decided, then relayed or answered with the card's page.
    async fn exchange(&self, request: Request<Incoming>, upstream: &Upstream) -> Response<Body> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = request
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .or_else(|| {
                let host = request.headers().get(header::HOST)?.to_str().ok()?;
                Some(
                    host.parse::<http::uri::Authority>()
                        .ok()?
                        .host()
                        .to_string(),
                )
            });
        let url = format!("https://{}:{}{}", self.host, self.port, path_and_query);
        // The site is the one the hello named: a request naming another would reach another
        // site on the same server, past the rules (fronting).
        if authority.is_some_and(|a| !same_host(&a, &self.host)) {
            let refusal = Refusal::DomainFronting;
            self.firewall
                .refuse(self.peer.ip(), Protocol::Http, &url, refusal);
            return page_response(&pages::refused(
                StatusCode::MISDIRECTED_REQUEST,
                refusal.reason(),
            ));
        }
        if let Some(why) = ambiguous_path(&path_and_query) {
            Counters::bump(&self.firewall.events.counters.malformed);
            let why = format!("the path has {why}, which sites read in different ways");
            return page_response(&pages::refused(StatusCode::BAD_REQUEST, &why));
        }
        let websocket = is_websocket(&request);
        if !websocket
            && (request.headers().contains_key(header::UPGRADE)
                || request.method() == http::Method::CONNECT)
        {
            let why = "protocol upgrades other than WebSocket over HTTP/1.1 are not relayed on \
                inspected sites";
            return page_response(&pages::refused(StatusCode::NOT_IMPLEMENTED, why));
        }
        let open = match upstream {
            Upstream::Open(open) => {
                if let Some(unlock) = open.presented
                    && !self.still_unlocked(unlock)
                {
                    return self.refused(&url, Refusal::ClientCertLocked, StatusCode::FORBIDDEN);
                }
                open
            }
            Upstream::Failed(page) => return page_response(page),
        };
        let upstream = &open.sender;
        let rules = self.firewall.rules();
        let method = request.method().as_str().to_string();
        let ask = Ask {
            client: self.peer.ip(),
            target: &url,
            request: rules_request(Protocol::Http, &self.host, self.port)
                .method(&method)
                .path(&path_and_query)
                .dst(self.upstream_addr.ip()),
            hello: None,
        };
        let decision = match self.firewall.decide(&rules, &ask) {
            Verdict::Allow(decision) => decision,
            verdict => return page_response(&pages::not_allowed(&url, &verdict)),
        };
        if websocket {
            return self.websocket(request, open, &url).await;
        }
        let http2 = matches!(upstream, Sender::Http2(_));
        let response = match upstream.send(self.outgoing(request, http2)).await {
            Ok(response) => response,
            Err(error) => {
                let error = UpstreamError::Other(self.upstream_addr, io::Error::other(error));
                connect::count_failure(&self.firewall, self.peer, &url, &error);
                return page_response(&pages::upstream_failed(&url, &error));
            }
        };
        let mut limit = None;
        if decision.response_check {
            let facts = response_facts(&response);
            let decision = self.firewall.check_response(&rules, &ask, &facts);
            if decision.action == Action::Deny {
                return page_response(&pages::blocked(&url, decision.rule));
            }
            limit = decision
                .body_limit
                .map(|(bytes, rule)| (bytes, rule.id.clone()));
        }
        self.incoming(response, limit, url)
    }

    /// A WebSocket upgrade the rules allowed: on a connection of its own to the site (HTTP/1.1
    /// with the same trust and certificate), the upgrade passed on, and once the site
    /// switches protocols, the bytes both ways until either side closes.
    async fn websocket(
        &self,
        mut request: Request<Incoming>,
        open: &Open,
        url: &str,
    ) -> Response<Body> {
        let failed = |error: UpstreamError| {
            connect::count_failure(&self.firewall, self.peer, url, &error);
            page_response(&pages::upstream_failed(url, &error))
        };
        let other = |error: &dyn std::fmt::Display| {
            UpstreamError::Other(self.upstream_addr, io::Error::other(error.to_string()))
        };
        let tcp = match connect::connect(&self.firewall, self.upstream_addr).await {
            Ok(tcp) => tcp,
            Err(error) => return failed(error),
        };
        let connected = tokio_rustls::TlsConnector::from(open.upgrades.clone())
            .connect(open.name.clone(), tcp)
            .await;
        let tls = match connected {
            Ok(tls) => tls,
            Err(error) => return failed(other(&error)),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok(handshake) => handshake,
                Err(error) => return failed(other(&error)),
            };
        tokio::spawn(connection.with_upgrades());
        let inside = hyper::upgrade::on(&mut request);
        let upgrade = request.headers().get(header::UPGRADE).cloned();
        let mut outgoing = self.outgoing(request, false);
        if let Some(upgrade) = upgrade {
            outgoing.headers_mut().insert(header::UPGRADE, upgrade);
            outgoing
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let mut response = match sender.send_request(outgoing).await {
            Ok(response) => response,
            Err(error) => return failed(other(&error)),
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.incoming(response, None, url.to_owned());
        }
        let site = hyper::upgrade::on(&mut response);
        let relay = tokio::spawn(async move {
            let (Ok(inside), Ok(site)) = tokio::join!(inside, site) else {
                return;
            };
            let (mut inside, mut site) = (TokioIo::new(inside), TokioIo::new(site));
            let _ = tokio::io::copy_bidirectional(&mut inside, &mut site).await;
        });
        self.upgraded.lock().await.push(relay);
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, empty_body())
    }

    /// The client's request as it goes to the site: the version of the site's connection,
    /// its authority, no hop-by-hop fields.
    fn outgoing(&self, request: Request<Incoming>, http2: bool) -> Request<Incoming> {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let authority = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if !http2 {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
            if let Ok(host) = HeaderValue::try_from(authority) {
                parts.headers.insert(header::HOST, host);
            }
        } else {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            parts.uri = Uri::builder()
                .scheme("https")
                .authority(authority)
                .path_and_query(path)
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
        }
        Request::from_parts(parts, body)
    }

    /// The site's response as it goes to the client, its body cut at `limit` (`max-body`:
    /// bytes, and the rule that says so), a cut recorded as [`Refusal::BodyOverLimit`].
    fn incoming(
        &self,
        response: Response<Incoming>,
        limit: Option<(u64, String)>,
        url: String,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = match limit {
            None => body.map_err(Into::into).boxed(),
            Some((max, rule)) => {
                let firewall = self.firewall.clone();
                let peer = self.peer;
                let max_bytes = usize::try_from(max).unwrap_or(usize::MAX);
                Limited::new(body, max_bytes)
                    .map_err(move |error| {
                        if error.is::<LengthLimitError>() {
                            Counters::bump(&firewall.events.counters.bodies_cut);
                            tracing::info!(client = %peer, url, rule, limit = max,
                                "body cut at its size limit");
                            firewall.refuse(
                                peer.ip(),
                                Protocol::Http,
                                &url,
                                Refusal::BodyOverLimit,
                            );
                        }
                        error
                    })
                    .boxed()
            }
        };
        Response::from_parts(parts, body)
    }
}

impl Sender {
    async fn send(&self, request: Request<Incoming>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(sender) => {
                let sent = {
                    let mut sender = sender.lock().await;
                    sender.ready().await?;
                    sender.send_request(request)
                };
                sent.await
            }
            Sender::Http2(sender) => sender.clone().send_request(request).await,
        }
    }
}

/// What the rules ask of a response head: its content type and announced length.
fn response_facts(response: &Response<Incoming>) -> rules::Response<'_> {
    let headers = response.headers();
    rules::Response {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body_len: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()),
    }
}

fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .trim_matches(['[', ']'])
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Fields that describe one connection, not the message (RFC 9110 7.6.1); HTTP/2 forbids
/// them, and each side of the relay has its own connection.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A WebSocket opening handshake (RFC 6455 4.1) over HTTP/1.1: `GET` with `Upgrade:
/// websocket` and `Connection: upgrade`. Browsers open WebSockets this way on their own
/// HTTP/1.1 connection when the server offers no extended CONNECT on HTTP/2, as the card does.
fn is_websocket<B>(request: &Request<B>) -> bool {
    let has = |name, token: &str| {
        request.headers().get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    request.method() == http::Method::GET
        && request.version() == Version::HTTP_11
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// One of the card's pages as a response on the inspected connection.
fn page_response(page: &Page) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(page.html.clone()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = page.status;
    let headers = response.headers_mut();
    for (name, value) in pages::HEADERS {
        // Written in title case for HTTP/1 on the wire; a HeaderName is lower case.
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a valid field name");
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The client's socket with the hello the card already read put back in front, so rustls
/// reads the handshake from its first byte.
struct Replayed {
    hello: io::Cursor<Vec<u8>>,
    stream: TcpStream,
}

impl AsyncRead for Replayed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let position = this.hello.position() as usize;
        let rest = &this.hello.get_ref()[position..];
        if rest.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.hello.set_position((position + n) as u64);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn connection_fields_go_and_message_fields_stay() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/plain"),
            ("cookie", "a=b"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "cookie"]);
    }

    #[test]
    fn the_hello_name_is_compared_without_case_dot_or_brackets() {
        assert!(same_host("Allowed.Test.", "allowed.test"));
        assert!(same_host("[2001:db8::1]", "2001:db8::1"));
        assert!(!same_host("other.test", "allowed.test"));
        assert!(!same_host("allowed.test.evil", "allowed.test"));
    }

    #[test]
    fn pages_keep_their_status_and_headers() {
        let response = page_response(&pages::refused(StatusCode::BAD_GATEWAY, "why"));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            HeaderValue::from_static("no-store")
        );
        assert!(
            response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    #[tokio::test]
    async fn the_hello_is_read_again_before_the_socket_and_writes_go_to_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut replayed = Replayed {
            hello: io::Cursor::new(b"hello ".to_vec()),
            stream,
        };
        peer.write_all(b"world").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut read = Vec::new();
        replayed.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"hello world");
        replayed.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        peer.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
