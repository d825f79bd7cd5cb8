//! Plain HTTP, both ways it reaches the card: transparently (a request sent to any address on
//! port 80, delivered by TPROXY, in origin-form) and explicitly (absolute-form and CONNECT to
//! the proxy port). Every request is decided on host, port, method and path; responses are
//! decided again on content type and size when a rule asks about them.
//!
//! One client connection is one task running [`Client::serve`]: read a request head, decide,
//! pass the request on, read the response head, decide again if a rule asks, pass the response
//! on. Bodies are passed on as they came (framing included, see [`crate::wire::http1`]); a body
//! of known length moves socket to socket in the kernel ([`Pipe::relay`]). A connection holds
//! two small buffers, and none while it waits for its next request.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use rules::{Action, Decision, LocalTime, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::destination::{self, Candidates};
use super::pages::{self, Page};
use super::splice::{self, Pipe};
use super::tls;
use super::upstream::{self, UpstreamError};
use crate::card::{Card, Counters, Refusal};
use crate::wire::http1::{
    self, ChunkedTracker, Framing, HeadError, Headers, ParseHead, RequestHead, ResponseHead,
};
use crate::wire::{client_hello, http2};

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
    let mut client = Client {
        card: card.clone(),
        peer,
        mode,
        original_dst,
        conn: Conn::new(stream),
        upstream: None,
        pipe: None,
    };
    client.serve().await;
    drop(slot);
}

/// Bytes first read from a buffer that was empty; a head larger than this grows it.
const READ_CHUNK: usize = 4096;

/// A socket and the bytes read from it that are not used yet.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Why no head was read.
enum HeadRead {
    /// The peer closed (or reset) before sending a byte of it: the normal end of keep-alive.
    Closed,
    /// The head did not arrive in time; `partial` if some of it did.
    TimedOut {
        partial: bool,
    },
    TooLarge,
    Malformed(HeadError),
    /// The peer closed in the middle of the head.
    Cut,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads one message head of at most `max` bytes. Its first byte may take up to `idle`
    /// (a kept-alive connection waiting for its next request); from then on the whole head
    /// must arrive within `header_timeout`, however slowly it trickles in.
    async fn read_head<T>(
        &mut self,
        parse: ParseHead<T>,
        max: usize,
        idle: Duration,
        header_timeout: Duration,
    ) -> Result<T, HeadRead> {
        if self.buf.is_empty() {
            match tokio::time::timeout(idle, self.stream.readable()).await {
                Err(_) => return Err(HeadRead::TimedOut { partial: false }),
                Ok(Err(_)) => return Err(HeadRead::Closed),
                Ok(Ok(())) => {}
            }
        }
        let deadline = Instant::now() + header_timeout;
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(Some((head, len))) => {
                        self.buf.advance(len);
                        return Ok(head);
                    }
                    Ok(None) if self.buf.len() >= max => return Err(HeadRead::TooLarge),
                    Ok(None) => {}
                    Err(e) => return Err(HeadRead::Malformed(e)),
                }
            }
            let partial = !self.buf.is_empty();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err(HeadRead::TimedOut { partial }),
                Ok(Ok(0)) | Ok(Err(_)) if !partial => return Err(HeadRead::Closed),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadRead::Cut),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Gives the buffer's memory back while the connection waits for its next message.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// The upstream connection of the previous request, reused while the client keeps asking the
/// same host: keep-alive on both sides without a global pool.
struct Upstream {
    host: String,
    port: u16,
    conn: Conn,
}

impl Upstream {
    /// The address this connection reached.
    fn address(&self) -> Option<IpAddr> {
        let peer = self.conn.stream.peer_addr().ok()?;
        Some(destination::canonical(peer.ip()))
    }

    /// Whether an idle kept connection can take another request: nothing unread, not closed.
    fn still_open(&mut self) -> bool {
        self.conn.buf.is_empty()
            && matches!(self.conn.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// What one client connection keeps between its requests.
struct Client {
    card: Arc<Card>,
    peer: SocketAddr,
    mode: Mode,
    /// Where the client sent its packets (for transparent mode, the foreign address).
    original_dst: SocketAddr,
    conn: Conn,
    upstream: Option<Upstream>,
    /// For bodies moved by `splice(2)`; made when the first one needs it.
    pipe: Option<Pipe>,
}

/// Whether the client connection goes on after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// Why moving a body stopped early.
enum RelayError {
    Io(io::Error),
    Malformed(http1::ChunkError),
    /// More payload than a `max-body` rule allows.
    OverLimit,
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

    /// The Host header for the origin: the port only when it is not the default.
    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A response head to pass on, and how its body is limited.
struct Answer {
    head: ResponseHead,
    framing: Framing,
    /// `max-body`: payload bytes allowed, and the rule that says so.
    limit: Option<(u64, String)>,
}

impl Client {
    async fn serve(&mut self) {
        let limits = &self.card.config.limits;
        let (max_head, idle, header_timeout) = (
            limits.max_header_bytes,
            limits.idle_timeout(),
            limits.header_timeout(),
        );
        loop {
            self.conn.release_if_empty();
            let head = match self
                .conn
                .read_head(http1::parse_request, max_head, idle, header_timeout)
                .await
            {
                Ok(head) => head,
                Err(HeadRead::Closed | HeadRead::Cut) => return,
                Err(HeadRead::TimedOut { partial }) => {
                    if partial {
                        Counters::bump(&self.card.events.counters.header_timeouts);
                        tracing::info!(client = %self.peer, "closed: request head not received in time");
                    }
                    return;
                }
                Err(HeadRead::TooLarge) => {
                    let page = pages::refused(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is larger than this proxy accepts",
                    );
                    return self.malformed(page, "request head too large").await;
                }
                Err(HeadRead::Malformed(_)) if self.conn.buf.starts_with(http2::PREFACE_START) => {
                    return self.refuse_h2c_prior_knowledge().await;
                }
                Err(HeadRead::Malformed(e)) => {
                    let page = pages::refused(StatusCode::BAD_REQUEST, &e.to_string());
                    return self.malformed(page, &e.to_string()).await;
                }
            };
            if self.exchange(head).await == Next::Close {
                return;
            }
        }
    }

    /// A client that speaks HTTP/2 in clear from its first byte: refused in HTTP/2's own terms
    /// (GOAWAY, HTTP_1_1_REQUIRED), recorded like a rule's denial.
    async fn refuse_h2c_prior_knowledge(&mut self) {
        let target = self.original_dst.to_string();
        self.card.events.refusal(
            self.peer.ip(),
            Protocol::Http,
            &target,
            Refusal::CleartextHttp2,
        );
        let why = format!("cardwall: {}", Refusal::CleartextHttp2.reason());
        let _ = self.conn.stream.write_all(&http2::refusal(&why)).await;
    }

    /// Answers a request that cannot be understood, counts it, and ends the connection.
    async fn malformed(&mut self, page: Page, why: &str) {
        Counters::bump(&self.card.events.counters.malformed);
        tracing::info!(client = %self.peer, error = why, "closed: malformed request");
        let _ = self.conn.stream.write_all(&page.to_http(true, true)).await;
    }

    /// Writes one of the proxy's own pages. The connection survives it only if the client
    /// wants that and no unread request body is in the way.
    async fn answer(&mut self, page: Page, request: &RequestHead, body_unread: bool) -> Next {
        self.reply(page, request.closes() || body_unread, &request.method)
            .await
    }

    /// Writes a page; `close` ends the connection after it. An answer to HEAD has no body.
    async fn reply(&mut self, page: Page, close: bool, method: &str) -> Next {
        let bytes = page.to_http(close, method != "HEAD");
        if self.conn.stream.write_all(&bytes).await.is_err() || close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    fn upstream_failed(&self, url: &str, error: &UpstreamError) -> Page {
        Counters::bump(&self.card.events.counters.upstream_failures);
        tracing::info!(client = %self.peer, url, error = %error, kind = error.kind(), "upstream failed");
        pages::upstream_failed(url, error)
    }

    /// The refusal page for a host that is an address the card never connects to (itself,
    /// the appliance, loopback and other local nets), decided before any rule.
    fn never_connect(&self, host: &str, target: &str) -> Option<Page> {
        let ip = destination::canonical(host.parse::<IpAddr>().ok()?);
        let why = destination::never_connect(&self.card.config, ip)?;
        destination::log_refusal(&self.card, self.peer, Protocol::Http, target, ip, why);
        Some(pages::refused(
            StatusCode::FORBIDDEN,
            &format!("the card does not connect to {ip}: {why}"),
        ))
    }

    /// The answer when no address of a name may be connected to: the block page of the rule
    /// that denied one, else the refusal of the card's own and local addresses.
    fn no_candidate(&self, candidates: &Candidates<'_>, target: &str) -> Page {
        if let Some((_, decision)) = &candidates.denied {
            self.record(target, decision);
            return pages::blocked(target, decision.rule);
        }
        let (ip, why) = candidates
            .refused
            .expect("a name with addresses has each allowed, denied or refused");
        destination::log_refusal(&self.card, self.peer, Protocol::Http, target, ip, why);
        pages::refused(
            StatusCode::FORBIDDEN,
            &format!("the card does not connect to {ip}: {why}"),
        )
    }

    async fn exchange(&mut self, mut request: RequestHead) -> Next {
        let framing = match request.framing() {
            Ok(framing) => framing,
            Err(e) => {
                let page = pages::refused(StatusCode::BAD_REQUEST, &e.to_string());
                self.malformed(page, &e.to_string()).await;
                return Next::Close;
            }
        };
        let body_unread = framing != Framing::Empty;
        if request.method == "CONNECT" {
            return match self.mode {
                Mode::Explicit => self.connect_tunnel(&request).await,
                Mode::Transparent => {
                    let page = pages::refused(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "CONNECT is only for the explicit proxy port",
                    );
                    self.answer(page, &request, body_unread).await
                }
            };
        }
        let target = match self.target(&request) {
            Ok(target) => target,
            // A request the card could read one way and a site another: answered, counted,
            // and the connection ends (what follows it cannot be trusted either).
            Err(why) => {
                let page = pages::refused(StatusCode::BAD_REQUEST, &why);
                self.malformed(page, &why).await;
                return Next::Close;
            }
        };

        let url = target.url();
        if request.headers.has_token("upgrade", "h2c") {
            self.card.events.refusal(
                self.peer.ip(),
                Protocol::Http,
                &url,
                Refusal::CleartextHttp2,
            );
            let page = pages::refused(StatusCode::FORBIDDEN, Refusal::CleartextHttp2.reason());
            return self.answer(page, &request, body_unread).await;
        }
        let loaded = self.card.policy.current();
        let rules = &loaded.rules;
        let method = request.method.clone();
        if let Some(page) = self.never_connect(&target.host, &url) {
            return self.answer(page, &request, body_unread).await;
        }
        let ask = rules_request(Protocol::Http, &target.host, target.port)
            .method(&method)
            .path(&target.path_and_query);
        let decision = rules.decide(&ask);
        if decision.action == Action::Deny {
            self.record(&url, &decision);
            let page = pages::blocked(&url, decision.rule);
            return self.answer(page, &request, body_unread).await;
        }
        // Allowed by name: now find where the name points, and decide again with each
        // address, so a rule on addresses (say, no private ranges) holds for names that
        // resolve there; only allowed addresses are connected to.
        let addresses = match upstream::resolve(&self.card, &target.host).await {
            Ok(addresses) => addresses,
            Err(e) => {
                let page = self.upstream_failed(&url, &e);
                return self.answer(page, &request, body_unread).await;
            }
        };
        let candidates = Candidates::decide(&self.card.config, rules, &ask, &addresses);
        let Some(&(first, decision)) = candidates.allowed.first() else {
            let page = self.no_candidate(&candidates, &url);
            return self.answer(page, &request, body_unread).await;
        };
        self.record(&url, &decision);
        let allowed = candidates.addresses();

        // The proxy has decided, so it answers the client's "may I send the body?" itself.
        if request.headers.has_token("expect", "100-continue") {
            request.headers.remove("expect");
            if self
                .conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Next::Close;
            }
        }
        let client_closes = request.closes();
        let wants_upgrade = is_upgrade(&request.headers);
        let head = upstream_head(request, &target, wants_upgrade);
        let (mut upstream, response) =
            match self.send(&target, &allowed, &head, framing, &url).await {
                Ok(sent) => sent,
                Err(Some(page)) => return self.reply(page, client_closes, &method).await,
                Err(None) => return Next::Close,
            };

        if response.status == 101 && wants_upgrade {
            return self.upgrade(upstream, response).await;
        }
        // The response is decided with the address the request went to.
        let used = upstream.address().unwrap_or(first);
        let ask = ask.dst(used);
        let decision = candidates.decision_for(used).unwrap_or(decision);
        let answer = match self.check_response(response, &method, &ask, &decision, &url) {
            Ok(answer) => answer,
            Err(page) => return self.reply(page, client_closes, &method).await,
        };
        let closes = client_closes || answer.framing == Framing::UntilClose;
        let upstream_reusable = !answer.head.closes() && answer.framing != Framing::UntilClose;
        let mut head = answer.head;
        head.headers.strip_hop_by_hop(false);
        if closes {
            head.headers.set("Connection", "close");
        }
        let mut out = Vec::with_capacity(512);
        head.write_to(&mut out);
        let idle = self.card.config.limits.idle_timeout();
        let relayed = relay_body(
            &mut upstream.conn,
            &self.conn.stream,
            &mut self.pipe,
            answer.framing,
            answer.limit.as_ref().map(|(max, _)| *max),
            out,
            idle,
        )
        .await;
        match relayed {
            Ok(_) => {
                if upstream_reusable && upstream.conn.buf.is_empty() {
                    upstream.conn.release_if_empty();
                    self.upstream = Some(upstream);
                }
                if closes { Next::Close } else { Next::KeepAlive }
            }
            Err(RelayError::OverLimit) => {
                let (max, rule) = answer.limit.expect("only a limit cuts a body");
                Counters::bump(&self.card.events.counters.bodies_cut);
                tracing::info!(client = %self.peer, url, rule, limit = max, "body cut at its size limit");
                self.card.events.refusal(
                    self.peer.ip(),
                    Protocol::Http,
                    &url,
                    Refusal::BodyOverLimit,
                );
                Next::Close
            }
            Err(RelayError::Malformed(e)) => {
                Counters::bump(&self.card.events.counters.upstream_failures);
                tracing::info!(client = %self.peer, url, error = %e, "upstream sent a malformed body");
                Next::Close
            }
            Err(RelayError::Io(_)) => Next::Close,
        }
    }

    fn record(&self, target: &str, decision: &Decision<'_>) {
        self.card
            .events
            .decision(self.peer.ip(), Protocol::Http, target, decision);
    }

    /// Sends the request head and body upstream, on the kept connection when it fits, and
    /// reads the response head (passing interim 1xx responses on). A kept connection the
    /// origin closed in the meantime is replaced once, when no body has been sent. `Err(None)`
    /// means the client connection is beyond answering.
    async fn send(
        &mut self,
        target: &Target,
        addresses: &[IpAddr],
        head: &[u8],
        framing: Framing,
        url: &str,
    ) -> Result<(Upstream, ResponseHead), Option<Page>> {
        let mut kept = self
            .upstream
            .take()
            .filter(|u| u.host == target.host && u.port == target.port)
            // Kept only while its address is still one the rules allow for this request.
            .filter(|u| u.address().is_some_and(|ip| addresses.contains(&ip)))
            .and_then(|mut u| u.still_open().then_some(u));
        loop {
            let reused = kept.is_some();
            let mut upstream = match kept.take() {
                Some(upstream) => upstream,
                None => match upstream::connect_first(&self.card, addresses, target.port).await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        Upstream {
                            host: target.host.clone(),
                            port: target.port,
                            conn: Conn::new(stream),
                        }
                    }
                    Err(e) => return Err(Some(self.upstream_failed(url, &e))),
                },
            };
            let idle = self.card.config.limits.idle_timeout();
            let sent = relay_body(
                &mut self.conn,
                &upstream.conn.stream,
                &mut self.pipe,
                framing,
                None,
                head.to_vec(),
                idle,
            )
            .await;
            if let Err(e) = sent {
                if reused && framing == Framing::Empty {
                    continue;
                }
                return Err(match e {
                    // The client's chunked body cannot be read one way only: what follows the
                    // bad line never goes upstream, and the client is told why.
                    RelayError::Malformed(e) => {
                        let page = pages::refused(StatusCode::BAD_REQUEST, &e.to_string());
                        self.malformed(page, &e.to_string()).await;
                        None
                    }
                    // The client's own body failed: nobody is left to answer.
                    RelayError::OverLimit => None,
                    RelayError::Io(e) => Some(self.upstream_failed(
                        url,
                        &UpstreamError::Other(upstream_addr(&upstream, target), e),
                    )),
                });
            }
            match self.read_response_head(&mut upstream).await {
                Ok(response) => return Ok((upstream, response)),
                Err(HeadRead::Closed) if reused && framing == Framing::Empty => continue,
                Err(why) => {
                    let addr = upstream_addr(&upstream, target);
                    let error = match why {
                        HeadRead::TimedOut { .. } => UpstreamError::Timeout(addr, idle),
                        HeadRead::Malformed(e) => UpstreamError::Other(addr, io::Error::other(e)),
                        HeadRead::TooLarge => UpstreamError::Other(
                            addr,
                            io::Error::other("response head larger than the proxy accepts"),
                        ),
                        HeadRead::Closed | HeadRead::Cut => UpstreamError::Other(
                            addr,
                            io::Error::other("closed the connection without a full response"),
                        ),
                    };
                    return Err(Some(self.upstream_failed(url, &error)));
                }
            }
        }
    }

    /// The final response head; interim 1xx heads (other than 101) go to the client as they are.
    async fn read_response_head(
        &mut self,
        upstream: &mut Upstream,
    ) -> Result<ResponseHead, HeadRead> {
        let limits = &self.card.config.limits;
        loop {
            let head = upstream
                .conn
                .read_head(
                    http1::parse_response,
                    limits.max_header_bytes,
                    limits.idle_timeout(),
                    limits.header_timeout(),
                )
                .await?;
            if !(100..200).contains(&head.status) || head.status == 101 {
                return Ok(head);
            }
            let mut out = Vec::new();
            head.write_to(&mut out);
            if self.conn.stream.write_all(&out).await.is_err() {
                return Err(HeadRead::Cut);
            }
        }
    }

    /// The response decided on what the rules ask of it (content type, announced size).
    fn check_response(
        &self,
        head: ResponseHead,
        method: &str,
        ask: &rules::Request<'_>,
        decision: &Decision<'_>,
        url: &str,
    ) -> Result<Answer, Page> {
        let framing = match head.framing(method) {
            Ok(framing) => framing,
            Err(e) => {
                Counters::bump(&self.card.events.counters.upstream_failures);
                tracing::info!(client = %self.peer, url, error = %e, "upstream sent a malformed head");
                return Err(pages::refused(
                    StatusCode::BAD_GATEWAY,
                    &format!("the site's response is malformed: {e}"),
                ));
            }
        };
        let mut limit = None;
        if decision.response_check {
            let answer = rules::Response {
                content_type: head.headers.get_str("content-type"),
                body_len: match framing {
                    Framing::Length(n) => Some(n),
                    Framing::Empty => Some(0),
                    Framing::Chunked | Framing::UntilClose => None,
                },
            };
            let loaded = self.card.policy.current();
            let decision = loaded.rules.decide_response(ask, &answer);
            if decision.action == Action::Deny {
                self.record(url, &decision);
                return Err(pages::blocked(url, decision.rule));
            }
            limit = decision
                .body_limit
                .map(|(bytes, rule)| (bytes, rule.id.clone()));
        }
        Ok(Answer {
            head,
            framing,
            limit,
        })
    }

    /// 101 Switching Protocols: from here on the connection carries another protocol, passed
    /// both ways as bytes.
    async fn upgrade(&mut self, mut upstream: Upstream, mut head: ResponseHead) -> Next {
        head.headers.strip_hop_by_hop(true);
        let mut out = Vec::new();
        head.write_to(&mut out);
        out.extend_from_slice(&upstream.conn.buf);
        if self.conn.stream.write_all(&out).await.is_err()
            || upstream
                .conn
                .stream
                .write_all(&self.conn.buf)
                .await
                .is_err()
        {
            return Next::Close;
        }
        let idle = self.card.config.limits.idle_timeout();
        splice::splice(&self.conn.stream, &upstream.conn.stream, idle).await;
        Next::Close
    }

    /// Reads host, port and path from an absolute-form target or the Host header. Refuses a
    /// Host that could be read two ways, an absolute-form URL that names another host than
    /// the Host field, and a path an origin could read otherwise than the rules do.
    fn target(&self, request: &RequestHead) -> Result<Target, String> {
        let uri: http::Uri = request
            .target
            .parse()
            .map_err(|_| "the request target is not a valid URL or path".to_string())?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let host_field = request.host().map_err(|e| e.to_string())?;
        let host_field = match host_field {
            Some(value) => Some(
                value
                    .parse::<http::uri::Authority>()
                    .map_err(|_| "the Host header is not a host name".to_string())?,
            ),
            None => None,
        };
        if let Some(why) = ambiguous_path(&path_and_query) {
            return Err(format!(
                "the path holds {why}, which sites read in different ways; ask for the path \
                 it stands for"
            ));
        }
        if let Some(authority) = uri.authority() {
            if uri.scheme_str() != Some("http") {
                return Err(
                    "only http:// URLs go through this port; HTTPS goes through CONNECT".into(),
                );
            }
            let (host, port) = (bare_host(authority), authority.port_u16().unwrap_or(80));
            // The card sends the URL's host upstream (RFC 9112 3.2.2); a Host field naming
            // another is a request meant to be read two ways.
            if let Some(field) = &host_field
                && (bare_host(field) != host || field.port_u16().unwrap_or(80) != port)
            {
                return Err("the Host header names another host than the URL".into());
            }
            return Ok(Target {
                host,
                port,
                path_and_query,
            });
        }
        if !path_and_query.starts_with('/') {
            return Err("the request target must be a path starting with /".into());
        }
        if self.mode == Mode::Explicit {
            return Err("this is a proxy: send the full URL (absolute-form), or CONNECT".into());
        }
        let host = match host_field {
            Some(authority) => bare_host(&authority),
            // HTTP/1.0 without Host: the address the client connected to is all there is.
            None => self.original_dst.ip().to_string(),
        };
        Ok(Target {
            host,
            port: self.original_dst.port(),
            path_and_query,
        })
    }

    /// CONNECT host:port: decided on the name and port, then on what the tunnel carries. A TLS
    /// hello in it must name the same host (no domain fronting); anything else is decided as
    /// plain TCP to that address and port.
    async fn connect_tunnel(&mut self, request: &RequestHead) -> Next {
        let authority = request.target.parse::<http::uri::Authority>().ok();
        let Some((authority, port)) = authority.and_then(|a| Some((a.clone(), a.port_u16()?)))
        else {
            Counters::bump(&self.card.events.counters.malformed);
            let page = pages::refused(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
            return self.answer(page, request, true).await;
        };
        let host = bare_host(&authority);
        let target = format!("{host}:{port}");
        if let Some(page) = self.never_connect(&host, &target) {
            return self.answer(page, request, true).await;
        }
        let loaded = self.card.policy.current();
        let ask = rules_request(Protocol::Https, &host, port);
        let decision = loaded.rules.decide(&ask);
        if decision.action == Action::Deny {
            self.card
                .events
                .decision(self.peer.ip(), Protocol::Https, &target, &decision);
            return self
                .answer(pages::blocked(&target, decision.rule), request, true)
                .await;
        }
        let addresses = match upstream::resolve(&self.card, &host).await {
            Ok(a) => a,
            Err(e) => {
                let page = self.upstream_failed(&target, &e);
                return self.answer(page, request, true).await;
            }
        };
        let candidates = Candidates::decide(&self.card.config, &loaded.rules, &ask, &addresses);
        if candidates.allowed.is_empty() {
            let page = self.no_candidate(&candidates, &target);
            return self.answer(page, request, true).await;
        }
        let (upstream, dst) =
            match upstream::connect_first(&self.card, &candidates.addresses(), port).await {
                Ok(connected) => connected,
                Err(e) => {
                    let page = self.upstream_failed(&target, &e);
                    return self.answer(page, request, true).await;
                }
            };
        if let Some(decision) = candidates.decision_for(dst.ip()) {
            self.card
                .events
                .decision(self.peer.ip(), Protocol::Https, &target, &decision);
        }
        tracing::info!(client = %self.peer, target, address = %dst, "CONNECT tunnel open");
        if self
            .conn
            .stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return Next::Close;
        }
        let first = self.conn.buf.split().to_vec();
        tunnel_after_connect(
            &self.card,
            self.peer,
            &host,
            dst,
            &mut self.conn.stream,
            first,
            upstream,
        )
        .await;
        Next::Close
    }
}

fn rules_request(protocol: Protocol, host: &str, port: u16) -> rules::Request<'_> {
    let request = rules::Request::new(protocol, LocalTime::now()).port(port);
    match host.parse::<IpAddr>() {
        Ok(ip) => request.dst(destination::canonical(ip)),
        Err(_) => request.host(host),
    }
}

/// What in a request path an origin could read otherwise than the rules do, if anything.
///
/// The rules compare a cleaned path ([`rules::normalize_path`]: escapes of unreserved
/// characters decoded, `//` collapsed, `.` and `..` resolved). Origins differ on exactly those
/// steps and on a few more (`%2F` decoded to a separator or not, `\` taken for `/` or not), so
/// `/x/..%2Fadmin` passes a rule on `/admin` and reaches `/admin` on a server that decodes
/// first. Such a path is refused, not rewritten: the card never sends a request the client
/// did not write, and browsers do not send these forms (they resolve dot segments
/// themselves). What is left differs from its cleaned form only by escapes every server
/// decodes the same way, so the origin sees the path the rules saw.
fn ambiguous_path(path_and_query: &str) -> Option<&'static str> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%5c") {
        return Some("a backslash");
    }
    if lower.contains("%2f") {
        return Some("an encoded slash (%2F)");
    }
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        // Only a trailing slash may leave an empty segment (`/dir/`), and only at the end.
        if segment.is_empty() && i + 1 < segments.len() {
            return Some("an empty segment (//)");
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Some("a dot segment (. or ..)");
        }
    }
    None
}

fn bare_host(authority: &http::uri::Authority) -> String {
    authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase()
}

fn upstream_addr(upstream: &Upstream, target: &Target) -> SocketAddr {
    upstream
        .conn
        .stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), target.port))
}

fn is_upgrade(headers: &Headers) -> bool {
    headers.contains("upgrade") && headers.has_token("connection", "upgrade")
}

/// The client's request rewritten for the origin: origin-form target, Host set, hop-by-hop
/// fields gone, the client's HTTP version kept (so an HTTP/1.0 client never gets a chunked
/// answer it cannot read).
fn upstream_head(mut request: RequestHead, target: &Target, upgrade: bool) -> Vec<u8> {
    // An absolute-form target names the host; a Host header that says otherwise would reach
    // another site on the same server (fronting), so the proxy replaces it (RFC 9112 3.2.2).
    let absolute_form = !request.target.starts_with('/');
    request.target.clone_from(&target.path_and_query);
    request.headers.strip_hop_by_hop(upgrade);
    if absolute_form || !request.headers.contains("host") {
        request.headers.set("Host", &target.host_header());
    }
    let mut out = Vec::with_capacity(512);
    request.write_to(&mut out);
    out
}

/// Writes `head`, then passes one body from `from` to `to` as `framing` says, framing bytes
/// included. The first body bytes already buffered go out with the head in one write; the
/// rest of a body of known length moves through `pipe` without being copied here. `limit`
/// caps the payload; past it the relay stops with [`RelayError::OverLimit`].
async fn relay_body(
    from: &mut Conn,
    to: &TcpStream,
    pipe: &mut Option<Pipe>,
    framing: Framing,
    limit: Option<u64>,
    mut head: Vec<u8>,
    idle: Duration,
) -> Result<u64, RelayError> {
    let limit = limit.unwrap_or(u64::MAX);
    let (total, buffered) = match framing {
        Framing::Empty => (0, 0),
        Framing::Length(n) => (n, n.min(from.buf.len() as u64)),
        Framing::UntilClose => (u64::MAX, from.buf.len() as u64),
        Framing::Chunked => return relay_chunked(from, to, limit, head, idle).await,
    };
    if buffered > limit {
        return Err(RelayError::OverLimit);
    }
    head.extend_from_slice(&from.buf[..buffered as usize]);
    from.buf.advance(buffered as usize);
    write_all(to, &head, idle).await?;
    let rest = total - buffered;
    if rest == 0 {
        return Ok(buffered);
    }
    let pipe = match pipe {
        Some(pipe) => pipe,
        None => pipe.insert(Pipe::new().map_err(RelayError::Io)?),
    };
    // One byte over the limit is enough to know the body is too large.
    let allowed = rest.min((limit - buffered).saturating_add(1));
    let moved = pipe
        .relay(&from.stream, to, allowed, idle)
        .await
        .map_err(RelayError::Io)?;
    if buffered + moved > limit {
        return Err(RelayError::OverLimit);
    }
    if framing != Framing::UntilClose && moved < rest {
        return Err(RelayError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buffered + moved)
}

/// A chunked body, passed on as it comes through a [`ChunkedTracker`] that finds its end.
async fn relay_chunked(
    from: &mut Conn,
    to: &TcpStream,
    limit: u64,
    mut pending: Vec<u8>,
    idle: Duration,
) -> Result<u64, RelayError> {
    let mut tracker = ChunkedTracker::default();
    let mut payload = 0u64;
    loop {
        if !from.buf.is_empty() {
            let advance = tracker.advance(&from.buf).map_err(RelayError::Malformed)?;
            payload += advance.payload;
            if payload > limit {
                return Err(RelayError::OverLimit);
            }
            pending.extend_from_slice(&from.buf[..advance.consumed]);
            from.buf.advance(advance.consumed);
        }
        if !pending.is_empty() {
            write_all(to, &pending, idle).await?;
            pending.clear();
        }
        if tracker.is_done() {
            return Ok(payload);
        }
        match tokio::time::timeout(idle, from.read_more()).await {
            Ok(Ok(0)) => return Err(RelayError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RelayError::Io(e)),
            Err(_) => return Err(RelayError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
}

/// `write_all` on a shared reference (the relay borrows both sockets), bounded by `idle`.
async fn write_all(to: &TcpStream, mut bytes: &[u8], idle: Duration) -> Result<(), RelayError> {
    while !bytes.is_empty() {
        let wait = async {
            loop {
                to.writable().await?;
                match to.try_write(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(idle, wait).await {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(RelayError::Io(e)),
            Err(_) => return Err(RelayError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
    Ok(())
}

/// Inside an accepted CONNECT tunnel: look at the first bytes before passing anything on.
async fn tunnel_after_connect(
    card: &Card,
    peer: SocketAddr,
    connect_host: &str,
    dst: SocketAddr,
    tunnel: &mut TcpStream,
    mut first: Vec<u8>,
    mut upstream: TcpStream,
) {
    let limits = &card.config.limits;
    if first.is_empty() {
        first = vec![0u8; 4096];
        let peeked =
            match tokio::time::timeout(limits.header_timeout(), tunnel.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) => return,
                Err(_) => {
                    Counters::bump(&card.events.counters.header_timeouts);
                    return;
                }
            };
        first.truncate(peeked);
    }
    let loaded = card.policy.current();
    let target = format!("{connect_host}:{}", dst.port());
    if tls::looks_like_tls(&first) {
        let (buffered, hello) = match tls::read_hello(
            &mut *tunnel,
            first,
            limits.header_timeout(),
            &card.events.counters,
        )
        .await
        {
            Ok(read) => read,
            Err(why) => {
                tls::count_hello_failure(card, peer, &why);
                return;
            }
        };
        let ask = rules::Request::new(Protocol::Https, LocalTime::now())
            .host(connect_host)
            .dst(dst.ip())
            .port(dst.port());
        let decision = loaded.rules.decide(&ask);
        let refused = match decision.action {
            Action::Deny => {
                card.events
                    .decision(peer.ip(), Protocol::Https, &target, &decision);
                true
            }
            Action::Allow => {
                match tls::refusal(&hello, Some(connect_host), decision.rule, &card.ech_covers) {
                    Some(why) => {
                        card.events
                            .refusal(peer.ip(), Protocol::Https, &target, why);
                        true
                    }
                    None => false,
                }
            }
        };
        if refused {
            let _ = tunnel
                .write_all(&client_hello::fatal_alert(
                    client_hello::AlertDescription::AccessDenied,
                ))
                .await;
            return;
        }
        if upstream.write_all(&buffered).await.is_ok() {
            tls::pass_tls(card, peer, &target, tunnel, &upstream, &buffered).await;
        }
        return;
    }
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
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    splice::splice(tunnel, &upstream, limits.idle_timeout()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sites_read_in_different_ways_are_named() {
        for (path, why) in [
            ("/x/..%2Fadmin", "an encoded slash (%2F)"),
            ("/x%2fadmin", "an encoded slash (%2F)"),
            ("/x\\..\\admin", "a backslash"),
            ("/x%5Cadmin", "a backslash"),
            ("/x/%2e%2e/admin", "a dot segment (. or ..)"),
            ("/x/%2E/admin", "a dot segment (. or ..)"),
            ("/x/../admin", "a dot segment (. or ..)"),
            ("/./admin", "a dot segment (. or ..)"),
            ("//admin", "an empty segment (//)"),
            ("/a//b?x", "an empty segment (//)"),
        ] {
            assert_eq!(ambiguous_path(path), Some(why), "{path}");
        }
        for path in [
            "/",
            "/a/b/",
            "/%61dmin",
            "/a%20b",
            "/a.b/..c",
            "/x?next=/../a//b",
            "/a/...",
            "*",
        ] {
            assert_eq!(ambiguous_path(path), None, "{path}");
            // What is left means the same to the rules and to a site that decodes it.
            if path.starts_with('/') {
                let cleaned = rules::normalize_path(path);
                assert!(
                    !cleaned.contains("/../") && !cleaned.contains("//"),
                    "{path}"
                );
            }
        }
    }
}
