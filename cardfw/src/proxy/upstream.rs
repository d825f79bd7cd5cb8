//! Opening the card's own connection to a destination: name resolution through the card's
//! resolver, connecting from the card's outside address, and saying precisely why it failed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::firewall::{Counters, Firewall, Resolver, canonical};

/// Why the card could not reach a destination. Each has its own error page.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the name {0} does not exist (DNS: no such name)")]
    NameNotFound(String),
    #[error("the name {name} could not be looked up: {why}")]
    NameLookupFailed { name: String, why: String },
    #[error("{0} refused the connection")]
    Refused(SocketAddr),
    #[error("{0} is unreachable (no route, or an ICMP unreachable came back)")]
    Unreachable(SocketAddr),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("connecting to {0} failed: {1}")]
    Other(SocketAddr, io::Error),
}

impl UpstreamError {
    /// Timeouts are 504 Gateway Timeout; everything else is 502 Bad Gateway.
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(..))
            || matches!(self, UpstreamError::NameLookupFailed { why, .. } if why.contains("timed out"))
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NameNotFound(_) => "name-not-found",
            UpstreamError::NameLookupFailed { .. } => "name-lookup-failed",
            UpstreamError::Refused(_) => "refused",
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout(..) => "timeout",
            UpstreamError::Other(..) => "error",
        }
    }
}

/// Counts and logs a destination the card could not reach: no refusal, so nothing is
/// recorded as a decision.
pub fn count_failure(firewall: &Firewall, client: SocketAddr, target: &str, error: &UpstreamError) {
    Counters::bump(&firewall.events.counters.upstream_failures);
    tracing::info!(client = %client, target, error = %error, kind = error.kind(), "upstream failed");
}

/// Looks `host` up through the card's configured resolver (queries leave from the outside
/// address like all card traffic), or, for a name of one of the card's VPNs, through the
/// VPN's resolver from the tunnel address (split DNS: the outside never sees the name). An address literal is returned as it is (a v4-mapped
/// IPv6 literal as its IPv4 address, which is what a connection to it reaches).
pub async fn resolve(firewall: &Firewall, host: &str) -> Result<Vec<IpAddr>, UpstreamError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![canonical(ip)]);
    }
    let failed = |why: String| UpstreamError::NameLookupFailed {
        name: host.to_string(),
        why,
    };
    let name = Name::from_ascii(host).map_err(|e| failed(format!("not a valid name: {e}")))?;
    let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let bytes = query.to_vec().map_err(|e| failed(e.to_string()))?;
    let Resolver { from, server, .. } = firewall.resolver_for(host);
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))
        .await
        .map_err(|e| failed(format!("no socket: {e}")))?;
    socket
        .connect(server)
        .await
        .map_err(|e| failed(e.to_string()))?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let timeout = Duration::from_millis(firewall.config.dns.timeout_ms);
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
            .await
            .map_err(|_| failed(format!("the resolver timed out after {timeout:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        match Message::from_vec(&buf[..n]) {
            // A late answer to someone else's query cannot arrive on this connected socket,
            // but a forged one with the wrong id can: skip it.
            Ok(m) if m.metadata.id == query.metadata.id => break m,
            _ => continue,
        }
    };
    match answer.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Err(UpstreamError::NameNotFound(host.to_string())),
        code => return Err(failed(format!("the resolver answered {code}"))),
    }
    let addresses: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    if addresses.is_empty() {
        return Err(UpstreamError::NameNotFound(host.to_string()));
    }
    Ok(addresses)
}

fn rand_id() -> u16 {
    // Not secret, only unpredictable enough that a stray packet does not match; the socket
    // is connected to the resolver, which already filters senders.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

/// Connects to `addr` from the card's outside address within the configured time.
pub async fn connect(firewall: &Firewall, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| UpstreamError::Other(addr, e))?;
    // A VPN's networks: from the tunnel address, which the route takes into the tunnel.
    let from = firewall
        .vpns
        .load()
        .source_for(addr.ip())
        .unwrap_or(firewall.config.outside_address);
    if from.is_ipv4() == addr.is_ipv4() {
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| UpstreamError::Other(addr, e))?;
    }
    let timeout = firewall.config.limits.connect_timeout();
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Err(_) => Err(UpstreamError::Timeout(addr, timeout)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(classify(addr, e)),
    }
}

/// Connects to the first of `addresses` that answers on `port`; returns the connection and
/// the address it reached. Callers pass only addresses that were decided and allowed
/// ([`crate::firewall::Firewall::decide_addresses`]).
pub async fn connect_first(
    firewall: &Firewall,
    addresses: &[IpAddr],
    port: u16,
) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let mut last = None;
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        match connect(firewall, addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("callers pass at least one address"))
}

fn classify(addr: SocketAddr, e: io::Error) -> UpstreamError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => UpstreamError::Refused(addr),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            UpstreamError::Unreachable(addr)
        }
        io::ErrorKind::TimedOut => UpstreamError::Timeout(addr, Duration::ZERO),
        _ => match e.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH, EACCES (an ICMP admin-prohibited answer)
            Some(113) | Some(101) | Some(13) => UpstreamError::Unreachable(addr),
            _ => UpstreamError::Other(addr, e),
        },
    }
}
