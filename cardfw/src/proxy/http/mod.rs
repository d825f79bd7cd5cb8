//! Plain HTTP, both ways it reaches the card: transparently (a request sent to any address on
//! port 80, delivered by TPROXY, in origin-form) and explicitly (absolute-form and CONNECT to
//! the proxy port). Every request is decided on host, port, method and path; responses are
//! decided again on content type and size when a rule asks about them.
//!
//! One client connection is one task running [`Client::serve`]: read a request head, decide,
//! pass the request on, read the response head, decide again if a rule asks, pass the response
//! on, every decision asked of the [`Firewall`] core. Where a request goes is read by
//! [`target`]; bodies are passed on as they came ([`relay`]); CONNECT tunnels are
//! [`connect`]'s. A connection holds two small buffers, and none while it waits for its
//! next request.

pub mod connect;
mod relay;
mod target;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use rules::{Action, Decision, Protocol};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::pages::{self, Page};
use super::splice::{self, Pipe};
use super::upstream::{self, UpstreamError};
use crate::firewall::{Ask, Counters, Firewall, Refusal, canonical};
use crate::wire::http1::{self, Framing, Headers, RequestHead, ResponseHead};
use crate::wire::http2;
use relay::{Conn, HeadRead, RelayError, relay_body};
use target::Target;
pub(super) use target::{ambiguous_path, rules_request};

/// How requests reach this listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Intercepted: origin-form requests; the port comes from the original destination.
    Transparent,
    /// The client knows it talks to a proxy: absolute-form requests and CONNECT.
    Explicit,
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    firewall: Arc<Firewall>,
    mode: Mode,
) -> std::io::Result<()> {
    super::accept_each(listener, firewall, move |stream, peer, firewall| {
        connection(stream, peer, firewall, mode)
    })
    .await
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, firewall: Arc<Firewall>, mode: Mode) {
    let Some(slot) = firewall.admit(peer) else {
        let _ = stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let original_dst = stream.local_addr().unwrap_or(peer);
    let mut client = Client {
        firewall: firewall.clone(),
        peer,
        mode,
        original_dst,
        conn: Conn::new(stream),
        upstream: None,
        pipe: None,
        tunnel: None,
    };
    client.serve().await;
    if let Some(tunnel) = client.tunnel.take() {
        connect::run_tunnel(firewall.clone(), peer, tunnel, client.conn.stream).await;
    }
    drop(slot);
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
        Some(canonical(peer.ip()))
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
    firewall: Arc<Firewall>,
    peer: SocketAddr,
    mode: Mode,
    /// Where the client sent its packets (for transparent mode, the foreign address).
    original_dst: SocketAddr,
    conn: Conn,
    upstream: Option<Upstream>,
    /// For bodies moved by `splice(2)`; made when the first one needs it.
    pipe: Option<Pipe>,
    /// A CONNECT tunnel opened by the last request, which carries on over the connection
    /// once the HTTP exchanges are over.
    tunnel: Option<connect::Tunnel>,
}

/// Whether the client connection goes on after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
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
        let limits = &self.firewall.config.limits;
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
                        Counters::bump(&self.firewall.events.counters.header_timeouts);
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
        self.firewall.refuse(
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
        Counters::bump(&self.firewall.events.counters.malformed);
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

    /// The block page's "ask for access" form for `target`, denied by `rule` (a managed card
    /// only). The query is left out: it may hold what the user would not send anyone, and
    /// the rules' `path` does not look at it.
    fn ask_form(&self, target: &Target, rule: &str) -> Option<web::proxy::AskForm> {
        let path = target.path_and_query.split('?').next().unwrap_or("/");
        self.firewall.ask_form(proto::policy::Blocked {
            protocol: proto::policy::AccessProtocol::Http,
            host: target.host.clone(),
            port: target.port,
            path: Some(path.to_string()),
            rule: rule.to_string(),
            at: serve::unix_now() as i64,
        })
    }

    fn upstream_failed(&self, url: &str, error: &UpstreamError) -> Page {
        upstream::count_failure(&self.firewall, self.peer, url, error);
        pages::upstream_failed(url, error)
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
        let target = match Target::of(&request, self.mode, self.original_dst) {
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
            self.firewall.refuse(
                self.peer.ip(),
                Protocol::Http,
                &url,
                Refusal::CleartextHttp2,
            );
            let page = pages::refused(StatusCode::FORBIDDEN, Refusal::CleartextHttp2.reason());
            return self.answer(page, &request, body_unread).await;
        }
        let rules = self.firewall.rules();
        let method = request.method.clone();
        let ask = Ask {
            client: self.peer.ip(),
            target: &url,
            request: rules_request(Protocol::Http, &target.host, target.port)
                .method(&method)
                .path(&target.path_and_query),
            hello: None,
        };
        let verdict = self.firewall.check(&rules, &ask);
        if !verdict.allows() {
            let page =
                pages::not_allowed_asking(&url, &verdict, |rule| self.ask_form(&target, rule));
            return self.answer(page, &request, body_unread).await;
        }
        // Allowed by name: now find where the name points, and decide again with each
        // address, so a rule on addresses (say, no private ranges) holds for names that
        // resolve there; only allowed addresses are connected to.
        let addresses = match upstream::resolve(&self.firewall, &target.host).await {
            Ok(addresses) => addresses,
            Err(e) => {
                let page = self.upstream_failed(&url, &e);
                return self.answer(page, &request, body_unread).await;
            }
        };
        let candidates = match self.firewall.decide_addresses(&rules, &ask, &addresses) {
            Ok(candidates) => candidates,
            Err(verdict) => {
                let page =
                    pages::not_allowed_asking(&url, &verdict, |rule| self.ask_form(&target, rule));
                return self.answer(page, &request, body_unread).await;
            }
        };
        let (first, decision) = candidates.allowed[0];
        self.firewall.record_connected(&ask, &candidates, first);
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
        let ask = Ask {
            request: ask.request.dst(used),
            ..ask
        };
        let decision = candidates.decision_for(used).unwrap_or(decision);
        let answer = match self.check_response(response, &method, &ask, &decision) {
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
        let idle = self.firewall.config.limits.idle_timeout();
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
                Counters::bump(&self.firewall.events.counters.bodies_cut);
                tracing::info!(client = %self.peer, url, rule, limit = max, "body cut at its size limit");
                self.firewall
                    .refuse(self.peer.ip(), Protocol::Http, &url, Refusal::BodyOverLimit);
                Next::Close
            }
            Err(RelayError::Malformed(e)) => {
                Counters::bump(&self.firewall.events.counters.upstream_failures);
                tracing::info!(client = %self.peer, url, error = %e, "upstream sent a malformed body");
                Next::Close
            }
            Err(RelayError::Io(_)) => Next::Close,
        }
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
                None => match upstream::connect_first(&self.firewall, addresses, target.port).await
                {
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
            let idle = self.firewall.config.limits.idle_timeout();
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
        let limits = &self.firewall.config.limits;
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
        ask: &Ask<'_>,
        decision: &Decision<'_>,
    ) -> Result<Answer, Page> {
        let url = ask.target;
        let framing = match head.framing(method) {
            Ok(framing) => framing,
            Err(e) => {
                Counters::bump(&self.firewall.events.counters.upstream_failures);
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
            let rules = self.firewall.rules();
            let decision = self.firewall.check_response(&rules, ask, &answer);
            if decision.action == Action::Deny {
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
        let idle = self.firewall.config.limits.idle_timeout();
        splice::splice(&self.conn.stream, &upstream.conn.stream, idle).await;
        Next::Close
    }
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
