//! Plain HTTP, both ways it reaches the card: transparently (a request sent to any address on
//! port 80, delivered by TPROXY, in origin-form) and explicitly (absolute-form and CONNECT to
//! the proxy port). Every request is decided on host, port, method and path; responses are
//! decided again on content type and size when a rule asks about them.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use rules::{Action, LocalTime, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::upstream::{self, UpstreamError};
use super::{BoxError, ProxyBody, pages, splice, tls};
use crate::card::{Card, Counters};

/// How requests reach this listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Intercepted: origin-form requests; the port comes from the original destination.
    Transparent,
    /// The client knows it talks to a proxy: absolute-form requests and CONNECT.
    Explicit,
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, card: Arc<Card>, mode: Mode) -> std::io::Result<()> {
    super::accept_each(listener, card, move |stream, peer, card| {
        connection(stream, peer, card, mode)
    })
    .await
}

/// What one client connection keeps between its requests.
struct Client {
    card: Arc<Card>,
    peer: SocketAddr,
    mode: Mode,
    /// Where the client sent its packets (for transparent mode, the foreign address).
    original_dst: SocketAddr,
    /// The upstream connection of the previous request, reused while the client keeps asking
    /// the same host: keep-alive on both sides without a global pool.
    upstream: Mutex<Option<(String, u16, SendRequest<Incoming>)>>,
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, card: Arc<Card>, mode: Mode) {
    Counters::bump(&card.events.counters.connections);
    let Ok(slot) = card.slots.acquire(peer.ip()) else {
        Counters::bump(&card.events.counters.refused_at_capacity);
        tracing::info!(client = %peer, "connection refused: at capacity");
        let _ = stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let original_dst = stream.local_addr().unwrap_or(peer);
    let limits = &card.config.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let client = Arc::new(Client {
        card: card.clone(),
        peer,
        mode,
        original_dst,
        upstream: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |request| {
        let client = client.clone();
        async move { Ok::<_, Infallible>(client.handle(request).await) }
    });
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        if e.is_timeout() {
            Counters::bump(&card.events.counters.header_timeouts);
            tracing::info!(client = %peer, "closed: request head not received in time");
        } else if e.is_parse() || e.is_parse_too_large() {
            Counters::bump(&card.events.counters.malformed);
            tracing::info!(client = %peer, error = %e, "closed: malformed request");
        } else {
            tracing::debug!(client = %peer, error = %e, "connection ended");
        }
    }
    drop(slot);
}

/// Where a request goes, as the rules see it.
struct Target {
    host: String,
    port: u16,
    /// `/path?query`, sent upstream in origin-form.
    path_and_query: String,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path_and_query)
    }
}

impl Client {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        if request.method() == Method::CONNECT {
            return match self.mode {
                Mode::Explicit => self.connect_tunnel(request).await,
                Mode::Transparent => pages::refused(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT is only for the explicit proxy port",
                ),
            };
        }
        let target = match self.target(&request) {
            Ok(target) => target,
            Err(why) => {
                Counters::bump(&self.card.events.counters.malformed);
                return pages::refused(StatusCode::BAD_REQUEST, why);
            }
        };
        self.forward(request, target).await
    }

    /// Reads host, port and path from an absolute-form URI or the Host header.
    fn target(&self, request: &Request<Incoming>) -> Result<Target, &'static str> {
        let uri = request.uri();
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        if let Some(authority) = uri.authority() {
            if uri.scheme_str() != Some("http") {
                return Err("only http:// URLs go through this port; HTTPS goes through CONNECT");
            }
            let port = authority.port_u16().unwrap_or(80);
            return Ok(Target {
                host: authority
                    .host()
                    .trim_matches(['[', ']'])
                    .to_ascii_lowercase(),
                port,
                path_and_query,
            });
        }
        if self.mode == Mode::Explicit {
            return Err("this is a proxy: send the full URL (absolute-form), or CONNECT");
        }
        let host = match request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            Some(value) => {
                let authority: http::uri::Authority = value
                    .parse()
                    .map_err(|_| "the Host header is not a host name")?;
                authority
                    .host()
                    .trim_matches(['[', ']'])
                    .to_ascii_lowercase()
            }
            // HTTP/1.0 without Host: the address the client connected to is all there is.
            None => self.original_dst.ip().to_string(),
        };
        Ok(Target {
            host,
            port: self.original_dst.port(),
            path_and_query,
        })
    }

    fn rules_request<'a>(
        &self,
        protocol: Protocol,
        host: &'a str,
        port: u16,
        dst: Option<IpAddr>,
    ) -> rules::Request<'a> {
        let mut request = rules::Request::new(protocol, LocalTime::now()).port(port);
        match host.parse::<IpAddr>() {
            Ok(ip) => request = request.dst(ip),
            Err(_) => request.host = Some(host),
        }
        if let Some(ip) = dst {
            request = request.dst(ip);
        }
        request
    }

    async fn forward(&self, mut request: Request<Incoming>, target: Target) -> Response<ProxyBody> {
        let loaded = self.card.policy.current();
        let rules = &loaded.rules;
        let method = request.method().as_str().to_string();
        let url = target.url();
        let path = target.path_and_query.clone();
        let ask = self
            .rules_request(Protocol::Http, &target.host, target.port, None)
            .method(&method)
            .path(&path);
        let decision = rules.decide(&ask);
        if decision.action == Action::Deny {
            self.card
                .events
                .decision(self.peer.ip(), Protocol::Http, &url, &decision);
            return pages::blocked(&url, decision.rule);
        }
        // Allowed by name: now find where the name points, and decide again with the address,
        // so a rule on addresses (say, no private ranges) holds for names that resolve there.
        let addresses = match upstream::resolve(&self.card, &target.host).await {
            Ok(addresses) => addresses,
            Err(e) => return self.upstream_failed(&url, &e),
        };
        let ask = ask.dst(addresses[0]);
        let decision = rules.decide(&ask);
        self.card
            .events
            .decision(self.peer.ip(), Protocol::Http, &url, &decision);
        if decision.action == Action::Deny {
            return pages::blocked(&url, decision.rule);
        }

        let wants_upgrade = is_upgrade(request.headers());
        let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut request));
        let mut sender = match self.upstream_for(&target, &addresses).await {
            Ok(sender) => sender,
            Err(e) => return self.upstream_failed(&url, &e),
        };
        let upstream_request = match upstream_request(request, &target, wants_upgrade) {
            Ok(r) => r,
            Err(why) => return pages::refused(StatusCode::BAD_REQUEST, why),
        };
        let mut response = match sender.send_request(upstream_request).await {
            Ok(response) => response,
            Err(e) => {
                Counters::bump(&self.card.events.counters.upstream_failures);
                let error = UpstreamError::Other(
                    SocketAddr::new(addresses[0], target.port),
                    std::io::Error::other(e),
                );
                return pages::upstream_failed(&url, &error);
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                let idle = self.card.config.limits.idle_timeout();
                tokio::spawn(async move {
                    if let (Ok(client), Ok(upstream)) =
                        tokio::join!(client_upgrade, upstream_upgrade)
                    {
                        splice::splice(TokioIo::new(client), TokioIo::new(upstream), idle).await;
                    }
                });
            }
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, boxed(body));
        }
        // The upstream connection serves the next request if this one ends cleanly.
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((target.host.clone(), target.port, sender));

        let mut limit = None;
        if decision.response_check {
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let body_len = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let answer = rules::Response {
                content_type,
                body_len,
            };
            let decision = rules.decide_response(&ask, &answer);
            if decision.action == Action::Deny {
                self.card
                    .events
                    .decision(self.peer.ip(), Protocol::Http, &url, &decision);
                // The unread body makes the upstream connection useless for the next request.
                self.upstream
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                return pages::blocked(&url, decision.rule);
            }
            limit = decision
                .body_limit
                .map(|(bytes, rule)| (bytes, rule.id.clone()));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = match limit {
            None => boxed(body),
            Some((max, rule)) => CappedBody {
                inner: body,
                seen: 0,
                max,
                on_cut: Some(CutReport {
                    card: self.card.clone(),
                    client: self.peer.ip(),
                    url,
                    rule,
                }),
            }
            .boxed_unsync(),
        };
        Response::from_parts(parts, body)
    }

    fn upstream_failed(&self, url: &str, error: &UpstreamError) -> Response<ProxyBody> {
        Counters::bump(&self.card.events.counters.upstream_failures);
        tracing::info!(client = %self.peer, url, error = %error, kind = error.kind(), "upstream failed");
        pages::upstream_failed(url, error)
    }

    /// The kept upstream connection if it goes to the same place and is free, else a new one.
    async fn upstream_for(
        &self,
        target: &Target,
        addresses: &[IpAddr],
    ) -> Result<SendRequest<Incoming>, UpstreamError> {
        let kept = self
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((host, port, mut sender)) = kept
            && host == target.host
            && port == target.port
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        let mut last = None;
        for ip in addresses {
            let addr = SocketAddr::new(*ip, target.port);
            match upstream::connect(&self.card, addr).await {
                Ok(stream) => {
                    let (sender, connection) = hyper::client::conn::http1::Builder::new()
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| UpstreamError::Other(addr, std::io::Error::other(e)))?;
                    tokio::spawn(async move {
                        let _ = connection.with_upgrades().await;
                    });
                    return Ok(sender);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    }

    /// CONNECT host:port: decided on the name and port, then on what the tunnel carries. A TLS
    /// hello in it must name the same host (no domain fronting); anything else is decided as
    /// plain TCP to that address and port.
    async fn connect_tunnel(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let Some(authority) = request.uri().authority().cloned() else {
            Counters::bump(&self.card.events.counters.malformed);
            return pages::refused(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let Some(port) = authority.port_u16() else {
            Counters::bump(&self.card.events.counters.malformed);
            return pages::refused(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let target = format!("{host}:{port}");
        let loaded = self.card.policy.current();
        let decision = loaded
            .rules
            .decide(&self.rules_request(Protocol::Https, &host, port, None));
        if decision.action == Action::Deny {
            self.card
                .events
                .decision(self.peer.ip(), Protocol::Https, &target, &decision);
            return pages::blocked(&target, decision.rule);
        }
        let addresses = match upstream::resolve(&self.card, &host).await {
            Ok(a) => a,
            Err(e) => return self.upstream_failed(&target, &e),
        };
        let decision = loaded.rules.decide(&self.rules_request(
            Protocol::Https,
            &host,
            port,
            Some(addresses[0]),
        ));
        self.card
            .events
            .decision(self.peer.ip(), Protocol::Https, &target, &decision);
        if decision.action == Action::Deny {
            return pages::blocked(&target, decision.rule);
        }
        let upstream = match upstream::connect_first(&self.card, &addresses, port).await {
            Ok(stream) => stream,
            Err(e) => return self.upstream_failed(&target, &e),
        };
        let card = self.card.clone();
        let peer = self.peer;
        let dst = SocketAddr::new(addresses[0], port);
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(tunnel) => {
                    tunnel_after_connect(card, peer, host, dst, TokioIo::new(tunnel), upstream)
                        .await
                }
                Err(e) => tracing::debug!(client = %peer, error = %e, "CONNECT upgrade failed"),
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("static response")
    }
}

/// Inside an accepted CONNECT tunnel: look at the first bytes before passing anything on.
async fn tunnel_after_connect(
    card: Arc<Card>,
    peer: SocketAddr,
    connect_host: String,
    dst: SocketAddr,
    mut tunnel: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
) {
    let limits = &card.config.limits;
    let mut first = vec![0u8; 4096];
    let peeked = match tokio::time::timeout(limits.header_timeout(), tunnel.read(&mut first)).await
    {
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => return,
        Err(_) => {
            Counters::bump(&card.events.counters.header_timeouts);
            return;
        }
    };
    first.truncate(peeked);
    let loaded = card.policy.current();
    let target = format!("{connect_host}:{}", dst.port());
    let buffered = if tls::looks_like_tls(&first) {
        let (buffered, hello) =
            match tls::read_hello(&mut tunnel, first, limits.header_timeout()).await {
                Ok(read) => read,
                Err(why) => {
                    tls::count_hello_failure(&card, peer, &why);
                    return;
                }
            };
        let ask = rules::Request::new(Protocol::Https, LocalTime::now())
            .host(&connect_host)
            .dst(dst.ip())
            .port(dst.port());
        let decision = loaded.rules.decide(&ask);
        if let Some(refusal) = tls::refusal(&hello, Some(&connect_host), &decision) {
            Counters::bump(&card.events.counters.denied);
            tracing::info!(client = %peer, target, reason = refusal, rule = %decision.rule.id, verdict = "deny", "decision");
            let _ = tunnel
                .write_all(&crate::wire::client_hello::fatal_alert(
                    crate::wire::client_hello::AlertDescription::AccessDenied,
                ))
                .await;
            return;
        }
        buffered
    } else {
        // Not TLS: the tunnel carries something else, so decide it as TCP to that address.
        let ask = rules::Request::new(Protocol::Tcp, LocalTime::now())
            .dst(dst.ip())
            .port(dst.port());
        let decision = loaded.rules.decide(&ask);
        card.events
            .decision(peer.ip(), Protocol::Tcp, &target, &decision);
        if decision.action == Action::Deny {
            return;
        }
        first
    };
    if upstream.write_all(&buffered).await.is_err() {
        return;
    }
    splice::splice(tunnel, upstream, limits.idle_timeout()).await;
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers that describe one hop, not the message (RFC 9110 7.6.1); never passed on. For an
/// upgrade, `Connection: upgrade` and `Upgrade` are kept so the next hop sees the request.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !(keep_upgrade && t == "upgrade"))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// The client's request rewritten for the origin: origin-form URI, Host set, hop-by-hop
/// headers gone.
fn upstream_request(
    request: Request<Incoming>,
    target: &Target,
    upgrade: bool,
) -> Result<Request<Incoming>, &'static str> {
    let (mut parts, body) = request.into_parts();
    // An absolute-form target names the host; a Host header that says otherwise would reach
    // another site on the same server (fronting), so the proxy replaces it (RFC 9112 3.2.2).
    let absolute_form = parts.uri.authority().is_some();
    parts.uri = Uri::try_from(target.path_and_query.as_str())
        .map_err(|_| "the request path is not valid")?;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if absolute_form || !parts.headers.contains_key(header::HOST) {
        let host = if target.port == 80 {
            target.host.clone()
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let value =
            HeaderValue::from_str(&host).map_err(|_| "the host is not a valid header value")?;
        parts.headers.insert(header::HOST, value);
    }
    Ok(Request::from_parts(parts, body))
}

/// Logged once when a body is cut at its size limit.
struct CutReport {
    card: Arc<Card>,
    client: IpAddr,
    url: String,
    rule: String,
}

/// A response body that fails once it grows past `max` bytes: hyper then closes the client
/// connection mid-body, so the client sees a cut transfer rather than a complete file.
struct CappedBody {
    inner: Incoming,
    seen: u64,
    max: u64,
    on_cut: Option<CutReport>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        if let Some(report) = this.on_cut.take() {
                            Counters::bump(&report.card.events.counters.bodies_cut);
                            tracing::info!(
                                client = %report.client,
                                url = report.url,
                                rule = report.rule,
                                limit = this.max,
                                verdict = "deny",
                                "decision: body cut at its size limit"
                            );
                        }
                        return Poll::Ready(Some(Err(format!(
                            "body larger than {} bytes",
                            this.max
                        )
                        .into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

fn boxed(body: Incoming) -> ProxyBody {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
}
