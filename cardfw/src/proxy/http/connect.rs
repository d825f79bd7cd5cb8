//! CONNECT on the explicit proxy port: a tunnel decided on the host and port CONNECT names,
//! then again on what it carries. A TLS hello in it must name the same host (no domain
//! fronting) and is decided like one on port 443, and inspected when its rule says `inspect`
//! (as on the transparent path); anything else is decided as plain TCP to the address the
//! tunnel reached.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use rules::{LocalTime, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::target::{bare_host, rules_request};
use super::{Client, Next};
use crate::firewall::{Ask, Counters, Firewall, Hello, Refusal, Verdict};
use crate::proxy::inspect::Inspected;
use crate::proxy::{pages, splice, tls, upstream};
use crate::wire::client_hello;
use crate::wire::http1::RequestHead;

impl Client {
    /// CONNECT host:port: decided on the name and port, then each address the name has; the
    /// tunnel opens to the first allowed one that answers.
    pub(super) async fn connect_tunnel(&mut self, request: &RequestHead) -> Next {
        let authority = request.target.parse::<http::uri::Authority>().ok();
        let Some((authority, port)) = authority.and_then(|a| Some((a.clone(), a.port_u16()?)))
        else {
            Counters::bump(&self.firewall.events.counters.malformed);
            let page = pages::refused(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
            return self.answer(page, request, true).await;
        };
        let host = bare_host(&authority);
        let target = format!("{host}:{port}");
        let rules = self.firewall.rules();
        let ask = Ask {
            client: self.peer.ip(),
            target: &target,
            request: rules_request(Protocol::Https, &host, port),
            hello: None,
        };
        let verdict = self.firewall.check(&rules, &ask);
        if !verdict.allows() {
            let page = pages::not_allowed(&target, &verdict);
            return self.answer(page, request, true).await;
        }
        let addresses = match upstream::resolve(&self.firewall, &host).await {
            Ok(a) => a,
            Err(e) => {
                let page = self.upstream_failed(&target, &e);
                return self.answer(page, request, true).await;
            }
        };
        let candidates = match self.firewall.decide_addresses(&rules, &ask, &addresses) {
            Ok(candidates) => candidates,
            Err(verdict) => {
                let page = pages::not_allowed(&target, &verdict);
                return self.answer(page, request, true).await;
            }
        };
        let (upstream, dst) =
            match upstream::connect_first(&self.firewall, &candidates.addresses(), port).await {
                Ok(connected) => connected,
                Err(e) => {
                    let page = self.upstream_failed(&target, &e);
                    return self.answer(page, request, true).await;
                }
            };
        self.firewall.record_connected(&ask, &candidates, dst.ip());
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
        // The tunnel goes on with the client's connection itself (inspection takes it over),
        // so it runs once this client is done: see `serve`.
        self.tunnel = Some(Tunnel {
            connect_host: host,
            dst,
            first: self.conn.buf.split().to_vec(),
            upstream,
        });
        Next::Close
    }
}

/// An accepted CONNECT tunnel, to be looked into once the client's connection is free.
pub(super) struct Tunnel {
    connect_host: String,
    /// The address the tunnel reached.
    dst: SocketAddr,
    /// What the client sent after the CONNECT head, already read.
    first: Vec<u8>,
    upstream: TcpStream,
}

/// Inside an accepted CONNECT tunnel over the client's connection `tunnel`: look at the first
/// bytes before passing anything on.
pub(super) async fn run_tunnel(
    firewall: Arc<Firewall>,
    peer: SocketAddr,
    opened: Tunnel,
    mut tunnel: TcpStream,
) {
    let Tunnel {
        connect_host,
        dst,
        mut first,
        mut upstream,
    } = opened;
    let connect_host = connect_host.as_str();
    let limits = &firewall.config.limits;
    if first.is_empty() {
        first = vec![0u8; 4096];
        let peeked =
            match tokio::time::timeout(limits.header_timeout(), tunnel.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) => return,
                Err(_) => {
                    Counters::bump(&firewall.events.counters.header_timeouts);
                    return;
                }
            };
        first.truncate(peeked);
    }
    let rules = firewall.rules();
    let target = format!("{connect_host}:{}", dst.port());
    if tls::looks_like_tls(&first) {
        let (buffered, hello) = match tls::read_hello(
            &mut tunnel,
            first,
            limits.header_timeout(),
            &firewall.events.counters,
        )
        .await
        {
            Ok(read) => read,
            Err(why) => {
                tls::count_hello_failure(&firewall, peer, &why);
                return;
            }
        };
        // The CONNECT's allow is recorded already: only a refusal is news.
        let ask = Ask {
            client: peer.ip(),
            target: &target,
            request: rules::Request::new(Protocol::Https, LocalTime::now())
                .host(connect_host)
                .dst(dst.ip())
                .port(dst.port()),
            hello: Some(Hello {
                server_name: hello.server_name.as_deref(),
                connect_host: Some(connect_host),
            }),
        };
        let verdict = firewall.check(&rules, &ask);
        let inspect = match verdict {
            Verdict::Allow(decision) if decision.rule.inspect => Some(decision.rule.client_cert),
            _ => None,
        };
        // As on the transparent path (proxy/tls.rs): an inspect rule on a card without a CA
        // is refused, not spliced past the site's rules.
        let inspection = firewall.inspection.get().cloned();
        if inspect.is_some() && inspection.is_none() {
            firewall.refuse(
                peer.ip(),
                Protocol::Https,
                &target,
                Refusal::InspectWithoutCa,
            );
        }
        if !verdict.allows() || (inspect.is_some() && inspection.is_none()) {
            let _ = tunnel
                .write_all(&client_hello::fatal_alert(
                    client_hello::AlertDescription::AccessDenied,
                ))
                .await;
            return;
        }
        drop(rules);
        if let (Some(client_cert), Some(inspection)) = (inspect, inspection) {
            let inspected = Inspected {
                firewall: firewall.clone(),
                inspection: &inspection,
                peer,
                server_name: hello.server_name.clone(),
                port: dst.port(),
                upstream_addr: dst,
                client_cert,
            };
            return inspected.run(tunnel, buffered, upstream).await;
        }
        if upstream.write_all(&buffered).await.is_ok() {
            tls::pass_tls(&firewall, peer, &target, &tunnel, &upstream, &buffered).await;
        }
        return;
    }
    // Not TLS: the tunnel carries something else, so decide it as TCP to that address.
    let ask = Ask::tcp(peer.ip(), &target, dst);
    if !firewall.decide(&rules, &ask).allows() {
        return;
    }
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    splice::splice(&tunnel, &upstream, limits.idle_timeout()).await;
}
