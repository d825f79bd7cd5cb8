//! The DNS forwarder: answers the protected side's questions over UDP and TCP.
//!
//! Every question is decided by the rules before anything else happens, the cache included, so
//! a rule change applies at once even to names already cached. A denied name gets NXDOMAIN
//! ("no such name"); an allowed one is asked of the upstream resolver from the card's outside
//! address, and the answer is cached for its TTL. The cache, the queries in flight and the TCP
//! connections are all bounded: at capacity the forwarder evicts or refuses, it never grows.
//!
//! The upstream is sent a query the card built itself (a fresh random id, the one question
//! that was decided, a clean EDNS record), not the client's bytes: the upstream then answers
//! exactly the question the rules saw, and a client cannot steer it with anything else.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use rules::{LocalTime, Protocol, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ech;
use crate::firewall::{Ask, Counters, Firewall, Refusal, Resolver, Verdict};

/// UDP queries answered at once; a datagram beyond this is dropped (the client asks again).
const MAX_UDP_IN_FLIGHT: usize = 256;
/// Longest UDP query read; anything longer arrives cut and is answered FORMERR.
const MAX_UDP_QUERY: usize = 4096;
/// The UDP payload the card advertises in EDNS, to clients and to the upstream: the DNS Flag
/// Day 2020 value, small enough to avoid IP fragmentation.
const EDNS_PAYLOAD: u16 = 1232;
/// Receive buffer for upstream UDP answers: room for an upstream that overshoots the payload
/// it was told.
const UPSTREAM_UDP_BUFFER: usize = 4096;
/// What a client without EDNS can receive over UDP (RFC 1035).
const CLASSIC_UDP_PAYLOAD: usize = 512;
/// Cached answers expire after an hour at most, whatever their TTL says.
const MAX_CACHE_TTL: u32 = 3600;
/// How long a negative answer without an SOA record is cached.
const NEGATIVE_TTL_WITHOUT_SOA: u32 = 60;
/// Larger answers are relayed but not cached, so the cache is bounded in bytes as well as in
/// entries.
const MAX_CACHED_ANSWER: usize = 4096;

#[doc(hidden)]
pub mod fuzzing;

/// How the client reached the card. It sets how large the answer may be, and how the upstream
/// is asked: a query that came over TCP usually did so because its answer is too large for
/// UDP, so the upstream is asked over TCP directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Answers DNS over UDP on `socket` until the task is dropped, from `cache` (one cache for
/// both transports: a name asked over UDP is answered from it over TCP too).
pub async fn serve_udp(
    socket: UdpSocket,
    firewall: Arc<Firewall>,
    cache: Arc<Cache>,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    // Dropping the set aborts the queries in flight: nothing outlives the server.
    let mut queries = JoinSet::new();
    let mut buffer = vec![0u8; MAX_UDP_QUERY];
    loop {
        reap(&mut queries);
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "DNS over UDP: receive failed");
                continue;
            }
            // Out of memory or buffers: the socket is still good. Pause rather than end the
            // firewall or spin.
            Err(e) => {
                tracing::warn!(error = %e, "DNS over UDP: receive failed; pausing");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            Counters::bump(&firewall.events.counters.refused_at_capacity);
            tracing::debug!(client = %peer, "DNS query dropped: {MAX_UDP_IN_FLIGHT} in flight");
            continue;
        };
        let query = buffer[..len].to_vec();
        let (socket, firewall, cache) = (
            Arc::clone(&socket),
            Arc::clone(&firewall),
            Arc::clone(&cache),
        );
        queries.spawn(async move {
            let _permit = permit;
            if let Some(reply) = answer(&query, peer.ip(), &firewall, &cache).await
                && let Err(e) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(client = %peer, error = %e, "DNS over UDP: cannot send the answer");
            }
        });
    }
}

/// Answers DNS over TCP (2-byte length-prefixed messages, several per connection) on
/// `listener` until the task is dropped, from `cache` (see [`serve_udp`]).
pub async fn serve_tcp(
    listener: TcpListener,
    firewall: Arc<Firewall>,
    cache: Arc<Cache>,
) -> io::Result<()> {
    match crate::accept::serve(listener, "DNS over TCP", None, move |stream, peer| {
        let (firewall, cache) = (Arc::clone(&firewall), Arc::clone(&cache));
        async move {
            let _slot = match firewall.slots.acquire(peer.ip()) {
                Ok(slot) => slot,
                Err(refused) => {
                    Counters::bump(&firewall.events.counters.refused_at_capacity);
                    tracing::debug!(client = %peer, ?refused, "DNS over TCP: connection refused");
                    return;
                }
            };
            Counters::bump(&firewall.events.counters.connections);
            serve_connection(stream, peer.ip(), &firewall, &cache).await;
        }
    })
    .await {}
}

/// Forgets the tasks that have finished, so the set holds only live ones.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        if let Err(e) = done {
            tracing::error!(error = %e, "DNS task failed");
        }
    }
}

/// Receive errors that concern one datagram, not the socket.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// One TCP connection: queries one after the other until the client closes, goes quiet, or
/// breaks the framing.
async fn serve_connection(
    mut stream: TcpStream,
    client: IpAddr,
    firewall: &Firewall,
    cache: &Cache,
) {
    let limits = &firewall.config.limits;
    let counters = &firewall.events.counters;
    let mut first = true;
    loop {
        // A new connection must bring its first query within the header timeout (slow clients
        // hold a slot); between queries the client may stay quiet for the idle timeout.
        let waited = if first {
            limits.header_timeout()
        } else {
            limits.idle_timeout()
        };
        let start_deadline = tokio::time::Instant::now() + waited;
        let mut length = [0u8; 2];
        match tokio::time::timeout_at(start_deadline, stream.read(&mut length[..1])).await {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(client = %client, error = %e, "DNS over TCP: read failed");
                return;
            }
            Err(_) => {
                if first {
                    Counters::bump(&counters.header_timeouts);
                }
                return;
            }
        }
        // Once a query has begun, all of it must arrive within the header timeout.
        let rest_deadline = if first {
            start_deadline
        } else {
            tokio::time::Instant::now() + limits.header_timeout()
        };
        first = false;
        let rest = async {
            stream.read_exact(&mut length[1..]).await?;
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut query).await?;
            Ok::<_, io::Error>(query)
        };
        let query = match tokio::time::timeout_at(rest_deadline, rest).await {
            Ok(Ok(query)) if query.is_empty() => {
                Counters::bump(&counters.malformed);
                tracing::debug!(client = %client, "DNS over TCP: zero-length message");
                return;
            }
            Ok(Ok(query)) => query,
            Ok(Err(e)) => {
                tracing::debug!(client = %client, error = %e, "DNS over TCP: read failed");
                return;
            }
            Err(_) => {
                Counters::bump(&counters.header_timeouts);
                tracing::debug!(client = %client, "DNS over TCP: query not received in time");
                return;
            }
        };
        // A message without even a header cannot be answered; the stream is not trusted past it.
        let Some(reply) = answer_over(Transport::Tcp, &query, client, firewall, cache).await else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(limits.idle_timeout(), stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(client = %client, error = %e, "DNS over TCP: write failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %client, "DNS over TCP: client does not read its answers");
                return;
            }
        }
    }
}

/// The shared core both call: bytes of one query in, bytes of the answer out (None = send
/// nothing). The answer fits what `client` can receive over UDP; a larger one is sent
/// truncated, which makes the client ask again over TCP.
pub async fn answer(
    query: &[u8],
    client: IpAddr,
    firewall: &Firewall,
    cache: &Cache,
) -> Option<Vec<u8>> {
    answer_over(Transport::Udp, query, client, firewall, cache).await
}

async fn answer_over(
    transport: Transport,
    bytes: &[u8],
    client: IpAddr,
    firewall: &Firewall,
    cache: &Cache,
) -> Option<Vec<u8>> {
    let counters = &firewall.events.counters;
    Counters::bump(&counters.dns_queries);
    let query = match parse_query(bytes) {
        Ok(query) => query,
        Err(malformed) => {
            Counters::bump(&counters.malformed);
            tracing::debug!(client = %client, reason = %malformed, "malformed DNS message");
            return malformed
                .reply()
                .and_then(|reply| encode(&reply, usize::MAX));
        }
    };
    let limit = match transport {
        Transport::Udp => query.edns.as_ref().map_or(CLASSIC_UDP_PAYLOAD, |edns| {
            usize::from(edns.max_payload()).max(CLASSIC_UDP_PAYLOAD)
        }),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let reply = decide_and_resolve(transport, &query, client, firewall, cache).await;
    encode(&reply, limit)
}

/// Everything after parsing: canary, rules, cache, upstream, in that order.
async fn decide_and_resolve(
    transport: Transport,
    query: &Message,
    client: IpAddr,
    firewall: &Firewall,
    cache: &Cache,
) -> Message {
    let counters = &firewall.events.counters;
    if query.op_code != OpCode::Query {
        tracing::debug!(client = %client, op_code = ?query.op_code, "DNS: not a query");
        return reply_to(query, ResponseCode::NotImp);
    }
    // `parse_query` let through only messages with exactly one question.
    let question = &query.queries[0];
    let name = question_name(question.name());
    if matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR) {
        tracing::debug!(client = %client, name = %name, "DNS: zone transfer refused");
        return reply_to(query, ResponseCode::Refused);
    }
    // A denied name, and the DoH canary ([`crate::firewall::DOH_CANARY`]), get NXDOMAIN.
    let allow_private = {
        let rules = firewall.rules();
        let ask = Ask {
            client,
            target: &name,
            request: Request::new(Protocol::Dns, LocalTime::now()).host(&name),
            hello: None,
        };
        match firewall.decide(&rules, &ask) {
            Verdict::Allow(decision) => decision.rule.allow_private,
            Verdict::Refuse(Refusal::VpnLocked) => return locked_vpn_answer(query, firewall),
            _ => return reply_to(query, ResponseCode::NXDomain),
        }
    };
    // A VPN's name goes to its resolver through the tunnel (split DNS; the decision above
    // refused it while the VPN is locked), and its private answers are the point, not
    // rebinding: they come from the corporate resolver, not from the outside.
    let resolver = firewall.resolver_for(&name);
    let allow_private = allow_private || resolver.vpn;

    let key = CacheKey::of(query, name);
    let (answer, age) = match cache.get(&key, Instant::now()) {
        Some((stored, age)) => {
            Counters::bump(&counters.dns_cache_hits);
            (stored, age)
        }
        None => match forward(transport, query, resolver, firewall.config.dns.timeout_ms).await {
            Ok((mut upstream, wire_len)) => {
                // Before the cache: what is cached is what the inside may see.
                let stripped = ech::strip(&mut upstream, &firewall.ech_covers);
                if stripped > 0 {
                    tracing::debug!(client = %client, name = %key.name, stripped, "DNS: ECH configs removed");
                }
                cache.insert(key.clone(), &upstream, wire_len, Instant::now());
                (upstream, 0)
            }
            Err(e) => {
                Counters::bump(&counters.upstream_failures);
                tracing::debug!(client = %client, name = %key.name, error = %e, "DNS upstream failed");
                return reply_to(query, ResponseCode::ServFail);
            }
        },
    };
    // After the cache as well as before it: the rule that allows private answers may have
    // changed since the answer was cached.
    if !allow_private && let Some(address) = private_address(&answer) {
        tracing::info!(client = %client, name = %key.name, %address, "DNS: a private address in an outside answer");
        firewall.refuse(client, Protocol::Dns, &key.name, Refusal::DnsRebinding);
        return reply_to(query, ResponseCode::Refused);
    }
    relay(&answer, query, age)
}

/// The first address in `answer` that an outside name should never point to: private
/// (RFC 1918, unique local), loopback, link-local, unspecified, shared (RFC 6598) or
/// broadcast, v4-mapped ones included. Such an answer lets a page on an outside site reach
/// the inside, the card or the appliance under its own name: DNS rebinding (as dnsmasq's
/// `--stop-dns-rebind` refuses it).
fn private_address(answer: &Message) -> Option<IpAddr> {
    answer.answers.iter().find_map(|record| {
        let address = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => return None,
        };
        is_private(address).then_some(address)
    })
}

fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || shared
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

/// Why a message was not taken as a query.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("shorter than a DNS header")]
    NoHeader,
    #[error("a response, not a query")]
    Response,
    #[error("{count} questions where a query asks exactly one")]
    QuestionCount { header: Metadata, count: u16 },
    #[error("cannot be decoded: {error}")]
    Undecodable {
        header: Metadata,
        error: DecodeError,
    },
}

impl Malformed {
    /// FORMERR when the header could be read, so the client stops waiting. A response is not
    /// answered at all: answering responses is how two servers end up bouncing errors at each
    /// other forever.
    fn reply(&self) -> Option<Message> {
        match self {
            Malformed::NoHeader | Malformed::Response => None,
            Malformed::QuestionCount { header, .. } | Malformed::Undecodable { header, .. } => {
                let mut reply = Message::response(header.id, header.op_code);
                reply.metadata.recursion_desired = header.recursion_desired;
                reply.metadata.checking_disabled = header.checking_disabled;
                reply.metadata.recursion_available = true;
                reply.metadata.response_code = ResponseCode::FormErr;
                Some(reply)
            }
        }
    }
}

/// Reads a query: the header first, so the question count is checked before anything is
/// allocated for the questions.
fn parse_query(bytes: &[u8]) -> Result<Message, Malformed> {
    let header = Header::read(&mut BinDecoder::new(bytes)).map_err(|_| Malformed::NoHeader)?;
    if header.message_type == MessageType::Response {
        return Err(Malformed::Response);
    }
    if header.counts.queries != 1 {
        return Err(Malformed::QuestionCount {
            header: header.metadata,
            count: header.counts.queries,
        });
    }
    Message::from_vec(bytes).map_err(|error| Malformed::Undecodable {
        header: header.metadata,
        error,
    })
}

/// Reads an upstream answer, or `None` if it is not a one-question response.
fn parse_reply(bytes: &[u8]) -> Option<Message> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.message_type != MessageType::Response || header.counts.queries != 1 {
        return None;
    }
    Message::from_vec(bytes).ok()
}

/// The name as the rules and the cache see it: lowercase, without the trailing dot (the root
/// stays `.`).
fn question_name(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text.make_ascii_lowercase();
    text
}

/// The EDNS record the card sends: its own payload size and the client's DNSSEC OK bit. The
/// client's options (cookies, client subnet) concern one hop and are not passed on.
fn edns_like(client: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_dnssec_ok(client.flags().dnssec_ok);
    edns
}

/// An answer the card writes itself, without records: same id, opcode and question, RD and CD
/// copied, RA set (the card does recurse, through its upstream).
/// A question for a VPN's name while the VPN is locked. An A question is answered with an
/// address inside the VPN's networks (its resolver's, TTL 0), so the computer connects, the
/// card intercepts the connection and refuses it by its name with the page saying the VPN is
/// locked; the card decides on the name it is asked for and resolves it itself once
/// unlocked, never trusting this placeholder, and nothing for it leaves in clear (the route
/// takes it into the tunnel's interface). Any other question: NXDOMAIN.
fn locked_vpn_answer(query: &Message, firewall: &Firewall) -> Message {
    let question = &query.queries[0];
    let name = question_name(question.name());
    let placeholder = firewall
        .vpns
        .load()
        .owning(&name)
        .and_then(|vpn| vpn.config.resolver)
        .and_then(|resolver| match resolver.ip() {
            IpAddr::V4(address) => Some(address),
            IpAddr::V6(_) => None,
        });
    match placeholder {
        Some(address) if question.query_type() == RecordType::A => {
            let mut reply = reply_to(query, ResponseCode::NoError);
            reply.answers.push(Record::from_rdata(
                question.name().clone(),
                0,
                RData::A(A(address)),
            ));
            reply
        }
        _ => reply_to(query, ResponseCode::NXDomain),
    }
}

fn reply_to(query: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(query.id, query.op_code);
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.metadata.checking_disabled = query.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.queries = query.queries.clone();
    reply.edns = query.edns.as_ref().map(edns_like);
    reply
}

/// An upstream (or cached) answer readdressed to this query: its id, its question as it was
/// spelt, its flags, and TTLs less the `age` in seconds the answer spent in the cache.
fn relay(upstream: &Message, query: &Message, age: u32) -> Message {
    let mut reply = upstream.clone();
    reply.metadata.id = query.id;
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.metadata.checking_disabled = query.checking_disabled;
    reply.metadata.truncation = false;
    reply.queries = query.queries.clone();
    reply.edns = query.edns.as_ref().map(edns_like);
    reply.signature = None;
    for record in reply
        .answers
        .iter_mut()
        .chain(&mut reply.authorities)
        .chain(&mut reply.additionals)
    {
        record.ttl = record.ttl.saturating_sub(age);
    }
    reply
}

/// Encodes `reply`; one longer than `limit` goes out truncated (TC set, records dropped). One
/// that cannot be encoded becomes SERVFAIL.
fn encode(reply: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = match reply.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(error = %e, "DNS answer cannot be encoded");
            let mut failure = reply.clone();
            failure.answers.clear();
            failure.authorities.clear();
            failure.additionals.clear();
            failure.metadata.response_code = ResponseCode::ServFail;
            return failure.to_vec().ok();
        }
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut truncated = reply.clone();
    truncated.answers.clear();
    truncated.authorities.clear();
    truncated.additionals.clear();
    truncated.metadata.truncation = true;
    truncated.to_vec().ok()
}

/// Why the upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot encode the query: {0}")]
    Encode(#[from] ProtoError),
    #[error("the answer over TCP is not a response to the question asked")]
    Mismatch,
}

/// Asks the upstream: over UDP then, if the answer is truncated, over TCP; or over TCP
/// directly. All of it within `dns.timeout_ms`. Returns the answer and its size on the wire.
async fn forward(
    transport: Transport,
    query: &Message,
    resolver: Resolver,
    timeout_ms: u64,
) -> Result<(Message, usize), UpstreamError> {
    let mut sent = Message::query(); // a fresh random id
    sent.metadata.recursion_desired = query.recursion_desired;
    sent.metadata.checking_disabled = query.checking_disabled;
    sent.metadata.authentic_data = query.authentic_data;
    sent.queries = query.queries.clone();
    sent.edns = query.edns.as_ref().map(edns_like);
    let bytes = sent.to_vec()?;
    let exchange = async {
        if transport == Transport::Udp {
            let (reply, wire_len) = exchange_udp(&bytes, &sent, resolver).await?;
            if !reply.truncation {
                return Ok((reply, wire_len));
            }
            tracing::debug!("DNS upstream answer truncated over UDP; asking again over TCP");
        }
        exchange_tcp(&bytes, &sent, resolver).await
    };
    let timeout = Duration::from_millis(timeout_ms);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout(timeout_ms))?
}

/// Whether `reply` answers `sent`: same id and same question.
fn is_answer_to(reply: &Message, sent: &Message) -> bool {
    reply.id == sent.id && reply.queries == sent.queries
}

async fn exchange_udp(
    bytes: &[u8],
    sent: &Message,
    resolver: Resolver,
) -> Result<(Message, usize), UpstreamError> {
    let socket = UdpSocket::bind(SocketAddr::new(resolver.from, 0)).await?;
    socket.connect(resolver.server).await?;
    socket.send(bytes).await?;
    let mut buffer = vec![0u8; UPSTREAM_UDP_BUFFER];
    loop {
        // The connected socket only hears from the upstream's address; a datagram that is not
        // the answer to this question (a late answer, a forgery) is ignored, and the wait goes
        // on until the deadline.
        let len = socket.recv(&mut buffer).await?;
        match parse_reply(&buffer[..len]) {
            Some(reply) if is_answer_to(&reply, sent) => return Ok((reply, len)),
            _ => tracing::debug!("DNS upstream: ignored a datagram that does not answer"),
        }
    }
}

async fn exchange_tcp(
    bytes: &[u8],
    sent: &Message,
    resolver: Resolver,
) -> Result<(Message, usize), UpstreamError> {
    let local = SocketAddr::new(resolver.from, 0);
    let socket = match local {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(local)?;
    let mut stream = socket.connect(resolver.server).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(2 + bytes.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let mut reply = vec![0u8; usize::from(stream.read_u16().await?)];
    stream.read_exact(&mut reply).await?;
    match parse_reply(&reply) {
        Some(message) if is_answer_to(&message, sent) => Ok((message, reply.len())),
        _ => Err(UpstreamError::Mismatch),
    }
}

/// What an answer is cached under. The DO and CD bits are part of it: an answer fetched
/// without DNSSEC records, or without validation, must not reach a client that asked for them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: String,
    record_type: RecordType,
    class: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    fn of(query: &Message, name: String) -> CacheKey {
        let question = &query.queries[0];
        CacheKey {
            name,
            record_type: question.query_type(),
            class: question.query_class(),
            dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: query.checking_disabled,
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    answer: Message,
    stored: Instant,
    expires: Instant,
    /// Insertion order, for evicting the oldest.
    sequence: u64,
}

#[derive(Debug, Default)]
struct CacheEntries {
    map: HashMap<CacheKey, CacheEntry>,
    next_sequence: u64,
}

/// Upstream answers, each kept for its TTL. Bounded: at most `capacity` answers; when full,
/// expired answers go first, else the oldest inserted.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: Mutex<CacheEntries>,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: Mutex::new(CacheEntries {
                map: HashMap::with_capacity(capacity),
                next_sequence: 0,
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Answers held, expired ones included until they are evicted.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live answer under `key` and its age in whole seconds.
    fn get(&self, key: &CacheKey, now: Instant) -> Option<(Message, u32)> {
        let mut entries = self.lock();
        let entry = entries.map.get(key)?;
        if now >= entry.expires {
            entries.map.remove(key);
            return None;
        }
        let age = now.saturating_duration_since(entry.stored).as_secs();
        Some((entry.answer.clone(), u32::try_from(age).unwrap_or(u32::MAX)))
    }

    /// Keeps `answer` if it is worth keeping (see [`cache_ttl`]) and small enough.
    fn insert(&self, key: CacheKey, answer: &Message, wire_len: usize, now: Instant) {
        let Some(ttl) = cache_ttl(answer) else {
            return;
        };
        if wire_len > MAX_CACHED_ANSWER || self.capacity == 0 {
            return;
        }
        let mut stored = answer.clone();
        // EDNS describes one hop; each reply gets its own (see `relay`).
        stored.edns = None;
        stored.signature = None;
        let mut entries = self.lock();
        if !entries.map.contains_key(&key) && entries.map.len() >= self.capacity {
            entries.map.retain(|_, entry| now < entry.expires);
            if entries.map.len() >= self.capacity {
                let oldest = entries
                    .map
                    .iter()
                    .min_by_key(|(_, entry)| entry.sequence)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.map.remove(&oldest);
                }
            }
        }
        let sequence = entries.next_sequence;
        entries.next_sequence += 1;
        entries.map.insert(
            key,
            CacheEntry {
                answer: stored,
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
                sequence,
            },
        );
    }
}

/// How long an upstream answer may be cached, or `None` for not at all: answers other than
/// NOERROR and NXDOMAIN, truncated ones, and TTL 0. Positive answers live for their smallest
/// TTL; negative ones for the SOA's negative TTL (RFC 2308: the smaller of its TTL and
/// MINIMUM), or a minute without SOA. Never more than an hour.
fn cache_ttl(answer: &Message) -> Option<u32> {
    let code = answer.response_code;
    if answer.truncation || !matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
        return None;
    }
    let positive = answer.answers.iter().map(|record| record.ttl).min();
    let negative = (code == ResponseCode::NXDomain || answer.answers.is_empty()).then(|| {
        answer
            .authorities
            .iter()
            .find_map(|record| match &record.data {
                RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(NEGATIVE_TTL_WITHOUT_SOA)
    });
    let ttl = positive
        .into_iter()
        .chain(negative)
        .min()?
        .min(MAX_CACHE_TTL);
    (ttl > 0).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA};
    use rules::RuleSet;

    use crate::firewall::LoadedRules;

    const RULES: &str = "deny dns host blocked.test,*.ads.test\nnas: allow dns host nas.test allow-private\nallow dns\n";
    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A small upstream resolver on 127.0.0.1, UDP and TCP on one port: A records for
    /// `allowed.test`, `n1.test`..`n9.test`, `big.test` (truncated over UDP whatever its size)
    /// and `huge.test` (40 records); NXDOMAIN otherwise. It notes every question it is asked.
    struct Upstream {
        address: SocketAddr,
        /// `udp name` or `tcp name`, one per question received.
        seen: Arc<Mutex<Vec<String>>>,
        /// Dropping the upstream stops it.
        _tasks: JoinSet<()>,
    }

    impl Upstream {
        async fn start() -> Upstream {
            let (udp, tcp) = loop {
                let udp = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
                if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                    break (udp, tcp);
                }
            };
            let address = udp.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = JoinSet::new();
            let udp_seen = Arc::clone(&seen);
            tasks.spawn(async move {
                let mut buffer = vec![0u8; 4096];
                loop {
                    let (len, peer) = udp.recv_from(&mut buffer).await.unwrap();
                    let query = Message::from_vec(&buffer[..len]).unwrap();
                    let reply = upstream_reply(&query, Transport::Udp, &udp_seen);
                    udp.send_to(&reply, peer).await.unwrap();
                }
            });
            let tcp_seen = Arc::clone(&seen);
            tasks.spawn(async move {
                loop {
                    let (mut stream, _) = tcp.accept().await.unwrap();
                    let seen = Arc::clone(&tcp_seen);
                    tokio::spawn(async move {
                        while let Ok(len) = stream.read_u16().await {
                            let mut query = vec![0u8; usize::from(len)];
                            stream.read_exact(&mut query).await.unwrap();
                            let query = Message::from_vec(&query).unwrap();
                            let reply = upstream_reply(&query, Transport::Tcp, &seen);
                            let len = u16::try_from(reply.len()).unwrap();
                            stream.write_all(&len.to_be_bytes()).await.unwrap();
                            stream.write_all(&reply).await.unwrap();
                        }
                    });
                }
            });
            Upstream {
                address,
                seen,
                _tasks: tasks,
            }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }

        fn asked_about(&self, name: &str) -> bool {
            self.seen()
                .iter()
                .any(|seen| seen.ends_with(&format!(" {name}")))
        }
    }

    fn upstream_reply(query: &Message, transport: Transport, seen: &Mutex<Vec<String>>) -> Vec<u8> {
        let question = &query.queries[0];
        let name = question_name(question.name());
        let over = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        seen.lock().unwrap().push(format!("{over} {name}"));
        let mut reply = Message::response(query.id, query.op_code);
        reply.metadata.recursion_desired = query.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.queries = query.queries.clone();
        reply.edns = query.edns.clone();
        if question.query_type() == RecordType::HTTPS {
            use hickory_proto::rr::rdata::HTTPS;
            use hickory_proto::rr::rdata::svcb::{
                Alpn, EchConfigList, SVCB, SvcParamKey, SvcParamValue,
            };
            let params = vec![
                (
                    SvcParamKey::Alpn,
                    SvcParamValue::Alpn(Alpn(vec!["h2".into()])),
                ),
                (
                    SvcParamKey::EchConfigList,
                    SvcParamValue::EchConfigList(EchConfigList(crate::ech::config_list(
                        "cover.test",
                    ))),
                ),
            ];
            let https = RData::HTTPS(HTTPS(SVCB::new(1, Name::root(), params)));
            reply.add_answer(Record::from_rdata(question.name().clone(), 300, https));
            return reply.to_vec().unwrap();
        }
        let addresses: Vec<Ipv4Addr> = match name.as_str() {
            "allowed.test" => vec![Ipv4Addr::new(192, 0, 2, 1)],
            "rebind.test" | "nas.test" => {
                vec![Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 168, 1, 5)]
            }
            "big.test" => (1..=3).map(|i| Ipv4Addr::new(192, 0, 2, 100 + i)).collect(),
            "huge.test" => (1..=40).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect(),
            _ => match name.strip_prefix('n').and_then(|n| n.strip_suffix(".test")) {
                Some(n) => vec![Ipv4Addr::new(192, 0, 2, 10 + n.parse::<u8>().unwrap())],
                None => Vec::new(),
            },
        };
        if addresses.is_empty() {
            reply.metadata.response_code = ResponseCode::NXDomain;
        }
        for address in addresses {
            let record = Record::from_rdata(question.name().clone(), 300, RData::A(A(address)));
            reply.add_answer(record);
        }
        let bytes = reply.to_vec().unwrap();
        let room = query
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload()));
        if transport == Transport::Udp && (name == "big.test" || bytes.len() > room) {
            return reply.truncate().to_vec().unwrap();
        }
        bytes
    }

    fn card_with(upstream: SocketAddr, configure: impl FnOnce(&mut Config)) -> Arc<Firewall> {
        let mut config = Config {
            outside_address: LOCALHOST,
            transparent: false,
            ..Config::default()
        };
        config.dns.upstream = upstream;
        config.dns.timeout_ms = 1000;
        configure(&mut config);
        let rules = RuleSet::from_text("t.rules", RULES, &rules::NoFiles).unwrap();
        Firewall::new(
            config,
            LoadedRules {
                rules,
                version: "t".into(),
                loaded_at: 0,
            },
            None,
        )
    }

    fn card(upstream: SocketAddr) -> Arc<Firewall> {
        card_with(upstream, |_| {})
    }

    fn cache_for(card: &Firewall) -> Cache {
        Cache::new(card.config.dns.cache_entries)
    }

    fn query_message(id: u16, name: &str) -> Message {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        // As on the wire: fully qualified.
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap();
        message.add_query(Query::query(name, RecordType::A));
        message
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        query_message(id, name).to_vec().unwrap()
    }

    fn query_with_edns(id: u16, name: &str, payload: u16) -> Vec<u8> {
        let mut message = query_message(id, name);
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
        message.to_vec().unwrap()
    }

    async fn ask(card: &Firewall, cache: &Cache, bytes: &[u8]) -> Message {
        let reply = answer(bytes, LOCALHOST, card, cache)
            .await
            .expect("an answer");
        Message::from_vec(&reply).unwrap()
    }

    fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
        reply
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_locked_vpns_names_get_a_placeholder_in_its_networks_and_never_go_out() {
        let upstream = Upstream::start().await;
        let vpn_config =
            <Config as crate::config::ConfigFile>::parse("c.toml", crate::vpn::tests::CORP)
                .unwrap();
        let card = card_with(upstream.address, |config| {
            config.vpn = vpn_config.vpn.clone()
        });
        card.vpns
            .store(Arc::new(crate::vpn::Vpns::unrouted_for_tests(
                &vpn_config,
                &[],
            )));
        let cache = cache_for(&card);
        let reply = ask(&card, &cache, &query(7, "intranet.corp.example")).await;
        assert_eq!(reply.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), [Ipv4Addr::new(10, 20, 0, 53)]);
        assert_eq!(reply.answers[0].ttl, 0, "not cached by the computer");
        let mut aaaa = query_message(8, "intranet.corp.example");
        aaaa.queries[0].set_query_type(RecordType::AAAA);
        let reply = ask(&card, &cache, &aaaa.to_vec().unwrap()).await;
        assert_eq!(reply.response_code, ResponseCode::NXDomain);
        assert!(
            !upstream.asked_about("intranet.corp.example"),
            "never outside"
        );
        // Other names go out as before.
        let reply = ask(&card, &cache, &query(9, "allowed.test")).await;
        assert_eq!(reply.response_code, ResponseCode::NoError);
    }

    #[tokio::test]
    async fn https_answers_reach_the_inside_without_ech_and_its_cover_name_is_remembered() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        let mut message = query_message(3, "allowed.test");
        message.queries[0].set_query_type(RecordType::HTTPS);
        for _ in 0..2 {
            // The second answer comes from the cache: stripped there too.
            let reply = ask(&card, &cache, &message.to_vec().unwrap()).await;
            let RData::HTTPS(https) = &reply.answers[0].data else {
                panic!("an HTTPS record: {reply:?}");
            };
            let keys: Vec<_> = https.0.svc_params.iter().map(|(key, _)| *key).collect();
            assert_eq!(keys, [hickory_proto::rr::rdata::svcb::SvcParamKey::Alpn]);
        }
        assert!(card.ech_covers.contains("cover.test"));
        assert_eq!(count(&card.events.counters.dns_cache_hits), 1);
    }

    #[tokio::test]
    async fn private_addresses_in_outside_answers_are_refused_unless_the_rule_allows_them() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        for _ in 0..2 {
            // Fresh, then from the cache: refused both times.
            let reply = ask(&card, &cache, &query(4, "rebind.test")).await;
            assert_eq!(reply.response_code, ResponseCode::Refused);
            assert!(reply.answers.is_empty());
        }
        let recent = card.events.recent();
        assert_eq!(recent.last().unwrap().rule.as_str(), "dns-rebinding");
        let reply = ask(&card, &cache, &query(5, "nas.test")).await;
        assert_eq!(
            addresses(&reply),
            [Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 168, 1, 5)]
        );
        for (address, private) in [
            ("10.1.2.3", true),
            ("172.31.77.2", true),
            ("127.0.0.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:192.168.0.1", true),
            ("203.0.113.10", false),
            ("100.128.0.1", false),
            ("2001:db8::1", false),
            ("::ffff:8.8.8.8", false),
        ] {
            assert_eq!(is_private(address.parse().unwrap()), private, "{address}");
        }
    }

    #[tokio::test]
    async fn allowed_name_gets_the_upstreams_answer() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        let reply = ask(&card, &cache, &query(7, "Allowed.Test.")).await;
        assert_eq!(reply.id, 7);
        assert_eq!(reply.message_type, MessageType::Response);
        assert_eq!(reply.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 0, 2, 1)]);
        // The question comes back as the client spelt it.
        assert_eq!(reply.queries[0].name().to_ascii(), "Allowed.Test.");
        assert_eq!(upstream.seen(), ["udp allowed.test"]);
        let counters = &card.events.counters;
        assert_eq!(count(&counters.dns_queries), 1);
        assert_eq!(count(&counters.allowed), 1);
        let recent = card.events.recent();
        assert_eq!(recent[0].target.as_str(), "allowed.test");
        assert_eq!(recent[0].action, proto::Action::Allow);
    }

    #[tokio::test]
    async fn blocked_names_get_nxdomain_and_never_reach_the_upstream() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        for (id, name) in [
            (1, "blocked.test"),
            (2, "BLOCKED.test."),
            (3, "x.y.ads.test"),
        ] {
            let reply = ask(&card, &cache, &query(id, name)).await;
            assert_eq!(reply.id, id);
            assert_eq!(reply.response_code, ResponseCode::NXDomain, "{name}");
            assert!(reply.answers.is_empty());
            assert!(reply.recursion_desired && reply.recursion_available);
            assert_eq!(reply.queries, query_message(id, name).queries);
        }
        assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
        assert_eq!(count(&card.events.counters.denied), 3);
        let recent = card.events.recent();
        assert_eq!(recent[2].target.as_str(), "x.y.ads.test");
        assert_eq!(recent[2].action, proto::Action::Deny);
        assert!(!recent[2].rule.is_empty());
    }

    #[tokio::test]
    async fn doh_canary_gets_nxdomain_before_the_rules() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        let reply = ask(&card, &cache, &query(9, "use-application-dns.net")).await;
        assert_eq!(reply.response_code, ResponseCode::NXDomain);
        assert!(upstream.seen().is_empty());
        // Not a rule's decision, but recorded like one: the status page shows it.
        let recent = card.events.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].rule.as_str(), "doh-canary");
        assert_eq!(recent[0].action, proto::Action::Deny);
        assert_eq!(count(&card.events.counters.denied), 1);

        let card = card_with(upstream.address, |config| {
            config.dns.block_doh_canary = false
        });
        ask(
            &card,
            &cache_for(&card),
            &query(9, "use-application-dns.net"),
        )
        .await;
        assert!(upstream.asked_about("use-application-dns.net"));
    }

    #[tokio::test]
    async fn second_query_comes_from_the_cache_but_rules_still_apply() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        ask(&card, &cache, &query(100, "allowed.test")).await;
        let reply = ask(&card, &cache, &query(200, "ALLOWED.test")).await;
        assert_eq!(reply.id, 200);
        assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(reply.answers[0].ttl <= 300);
        assert_eq!(upstream.seen().len(), 1);
        assert_eq!(count(&card.events.counters.dns_cache_hits), 1);

        card.replace_rules(LoadedRules {
            rules: RuleSet::from_text(
                "t2.rules",
                "deny dns host allowed.test\nallow dns\n",
                &rules::NoFiles,
            )
            .unwrap(),
            version: "t2".into(),
            loaded_at: 0,
        });
        let reply = ask(&card, &cache, &query(300, "allowed.test")).await;
        assert_eq!(reply.response_code, ResponseCode::NXDomain);
        assert_eq!(count(&card.events.counters.dns_cache_hits), 1);
    }

    #[tokio::test]
    async fn cache_never_exceeds_its_capacity() {
        let upstream = Upstream::start().await;
        let card = card_with(upstream.address, |config| config.dns.cache_entries = 2);
        let cache = cache_for(&card);
        for n in 1..=5 {
            let reply = ask(&card, &cache, &query(n, &format!("n{n}.test"))).await;
            assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 0, 2, 10 + n as u8)]);
            assert!(cache.len() <= 2, "{} entries", cache.len());
        }
        assert_eq!(cache.len(), 2);
        // The newest two stayed.
        ask(&card, &cache, &query(6, "n5.test")).await;
        ask(&card, &cache, &query(7, "n4.test")).await;
        assert_eq!(count(&card.events.counters.dns_cache_hits), 2);
        assert_eq!(upstream.seen().len(), 5);
    }

    #[tokio::test]
    async fn silent_upstream_means_servfail_within_the_timeout() {
        let silent = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let card = card_with(silent.local_addr().unwrap(), |config| {
            config.dns.timeout_ms = 200
        });
        let cache = cache_for(&card);
        let started = Instant::now();
        let reply = ask(&card, &cache, &query(5, "allowed.test")).await;
        let waited = started.elapsed();
        assert_eq!(reply.id, 5);
        assert_eq!(reply.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries, query_message(5, "allowed.test").queries);
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(800),
            "{waited:?}"
        );
        assert_eq!(count(&card.events.counters.upstream_failures), 1);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_asked_again_over_tcp() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        let reply = ask(&card, &cache, &query(11, "big.test")).await;
        assert!(!reply.truncation);
        assert_eq!(addresses(&reply).len(), 3);
        assert_eq!(upstream.seen(), ["udp big.test", "tcp big.test"]);
    }

    #[tokio::test]
    async fn answer_too_large_for_the_client_goes_out_truncated() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        // No EDNS: 512 bytes at most, so the client is told to ask over TCP.
        let reply = ask(&card, &cache, &query(12, "huge.test")).await;
        assert!(reply.truncation);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries, query_message(12, "huge.test").queries);
        // With EDNS the same answer fits, and comes from the cache.
        let reply = ask(&card, &cache, &query_with_edns(13, "huge.test", 4096)).await;
        assert!(!reply.truncation);
        assert_eq!(addresses(&reply).len(), 40);
        assert_eq!(
            reply.edns.as_ref().map(Edns::max_payload),
            Some(EDNS_PAYLOAD)
        );
    }

    #[tokio::test]
    async fn garbage_is_counted_and_answered_formerr_when_it_has_an_id() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);

        for bytes in [&b""[..], &[0xff; 3], &[0x12; 11]] {
            assert!(answer(bytes, LOCALHOST, &card, &cache).await.is_none());
        }
        // A response is never answered.
        let mut response = query_message(1, "allowed.test");
        response.metadata.message_type = MessageType::Response;
        assert!(
            answer(&response.to_vec().unwrap(), LOCALHOST, &card, &cache)
                .await
                .is_none()
        );

        let mut no_question = vec![0xab, 0xcd, 0x01, 0x00];
        no_question.extend_from_slice(&[0; 8]);
        let mut two_questions = query_message(0x1234, "allowed.test");
        two_questions.add_query(Query::query(
            Name::from_ascii("n1.test").unwrap(),
            RecordType::A,
        ));
        let mut cut = query(0x4321, "allowed.test");
        cut.truncate(cut.len() - 3);
        for (bytes, id) in [
            (no_question, 0xabcd),
            (two_questions.to_vec().unwrap(), 0x1234),
            (cut, 0x4321),
        ] {
            let reply = ask(&card, &cache, &bytes).await;
            assert_eq!(reply.id, id);
            assert_eq!(reply.response_code, ResponseCode::FormErr);
            assert!(reply.queries.is_empty());
        }
        assert_eq!(count(&card.events.counters.malformed), 7);

        // Noise never panics, and whatever is answered decodes. Everything is denied here, so
        // nothing reaches the upstream. A fixed LCG keeps the run repeatable.
        card.replace_rules(LoadedRules {
            rules: RuleSet::from_text("deny.rules", "deny dns\n", &rules::NoFiles).unwrap(),
            version: "deny".into(),
            loaded_at: 0,
        });
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as u8
        };
        for _ in 0..2000 {
            let len = usize::from(next()) % 64;
            let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            if bytes.len() > 5 {
                // Mostly one-question queries, so the decoder is reached.
                bytes[2] &= 0x7f;
                bytes[4] = 0;
                bytes[5] = 1;
            }
            if let Some(reply) = answer(&bytes, LOCALHOST, &card, &cache).await {
                Message::from_vec(&reply).unwrap();
            }
        }
        assert!(upstream.seen().is_empty());
    }

    #[tokio::test]
    async fn other_opcodes_and_zone_transfers_are_refused() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let cache = cache_for(&card);
        let mut notify = query_message(1, "allowed.test");
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(
            ask(&card, &cache, &notify.to_vec().unwrap())
                .await
                .response_code,
            ResponseCode::NotImp
        );
        let mut transfer = Message::new(2, MessageType::Query, OpCode::Query);
        transfer.add_query(Query::query(
            Name::from_ascii("allowed.test").unwrap(),
            RecordType::AXFR,
        ));
        assert_eq!(
            ask(&card, &cache, &transfer.to_vec().unwrap())
                .await
                .response_code,
            ResponseCode::Refused
        );
        assert!(upstream.seen().is_empty());
    }

    #[tokio::test]
    async fn serve_tcp_answers_two_queries_on_one_connection() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tcp(
            listener,
            Arc::clone(&card),
            Arc::new(cache_for(&card)),
        ));

        let mut stream = TcpStream::connect(address).await.unwrap();
        for (id, name, code) in [
            (21, "allowed.test", ResponseCode::NoError),
            (22, "blocked.test", ResponseCode::NXDomain),
        ] {
            let bytes = query(id, name);
            stream
                .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&bytes).await.unwrap();
            let mut reply = vec![0u8; usize::from(stream.read_u16().await.unwrap())];
            stream.read_exact(&mut reply).await.unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!((reply.id, reply.response_code), (id, code));
        }
        // Asked over TCP, the upstream is asked over TCP.
        assert_eq!(upstream.seen(), ["tcp allowed.test"]);
        assert_eq!(card.slots.in_use(), 1);

        // A zero length breaks the framing: the card closes the connection.
        stream.write_all(&[0, 0]).await.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        assert_eq!(count(&card.events.counters.malformed), 1);
        server.abort();
    }

    #[tokio::test]
    async fn serve_udp_end_to_end() {
        let upstream = Upstream::start().await;
        let card = card(upstream.address);
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let address = socket.local_addr().unwrap();
        let server = tokio::spawn(serve_udp(
            socket,
            Arc::clone(&card),
            Arc::new(cache_for(&card)),
        ));

        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        client.connect(address).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        for (id, name, code) in [
            (31, "allowed.test", ResponseCode::NoError),
            (32, "x.ads.test", ResponseCode::NXDomain),
        ] {
            client.send(&query(id, name)).await.unwrap();
            let len = tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            let reply = Message::from_vec(&buffer[..len]).unwrap();
            assert_eq!((reply.id, reply.response_code), (id, code));
        }
        assert_eq!(count(&card.events.counters.dns_queries), 2);
        server.abort();
    }

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: name.into(),
            record_type: RecordType::A,
            class: DNSClass::IN,
            dnssec_ok: false,
            checking_disabled: false,
        }
    }

    fn positive(ttl: u32) -> Message {
        let mut message = Message::response(1, OpCode::Query);
        let name = Name::from_ascii("a.test.").unwrap();
        message.add_answer(Record::from_rdata(
            name,
            ttl,
            RData::A(A(Ipv4Addr::LOCALHOST)),
        ));
        message
    }

    #[test]
    fn cache_expires_ages_and_evicts_the_expired_before_the_oldest() {
        let cache = Cache::new(2);
        let t0 = Instant::now();
        cache.insert(key("long"), &positive(1000), 50, t0);
        cache.insert(key("short"), &positive(10), 50, t0);
        let (_, age) = cache
            .get(&key("long"), t0 + Duration::from_secs(7))
            .unwrap();
        assert_eq!(age, 7);
        assert_eq!(
            relay(&positive(1000), &query_message(1, "a.test"), age).answers[0].ttl,
            993
        );
        // Full: the expired entry goes, though `long` was inserted before it.
        let later = t0 + Duration::from_secs(11);
        cache.insert(key("new"), &positive(1000), 50, later);
        assert!(cache.get(&key("long"), later).is_some());
        assert!(cache.get(&key("short"), later).is_none());
        // Full, nothing expired: the oldest inserted goes.
        cache.insert(key("newer"), &positive(1000), 50, later);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("long"), later).is_none());
        assert!(cache.get(&key("new"), later).is_some());
        // Too large to keep.
        cache.insert(key("big"), &positive(1000), MAX_CACHED_ANSWER + 1, later);
        assert!(cache.get(&key("big"), later).is_none());
    }

    #[test]
    fn cache_ttls_follow_the_answer() {
        assert_eq!(cache_ttl(&positive(300)), Some(300));
        assert_eq!(cache_ttl(&positive(86_400)), Some(MAX_CACHE_TTL));
        assert_eq!(cache_ttl(&positive(0)), None);
        let mut nxdomain = Message::response(1, OpCode::Query);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(cache_ttl(&nxdomain), Some(NEGATIVE_TTL_WITHOUT_SOA));
        let zone = Name::from_ascii("test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86_400, 30);
        nxdomain.add_authority(Record::from_rdata(zone, 900, RData::SOA(soa)));
        assert_eq!(cache_ttl(&nxdomain), Some(30));
        let mut servfail = positive(300);
        servfail.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&servfail), None);
        let mut truncated = positive(300);
        truncated.metadata.truncation = true;
        assert_eq!(cache_ttl(&truncated), None);
    }

    #[test]
    fn names_are_lowercased_without_the_trailing_dot() {
        assert_eq!(
            question_name(&Name::from_ascii("WWW.Example.COM.").unwrap()),
            "www.example.com"
        );
        assert_eq!(question_name(&Name::root()), ".");
    }
}
