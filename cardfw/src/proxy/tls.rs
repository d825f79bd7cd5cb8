//! TLS without terminating it: port 443 (and other configured TLS ports) reads the
//! ClientHello, decides on the name it carries and the destination, then either passes the
//! bytes through unchanged or answers with a TLS alert.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rules::{LocalTime, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::destination::{self, Candidates};
use super::splice::{self, Direction, FirstBytes};
use super::upstream;
use crate::card::{Card, Counters, Refusal};
use crate::ech::CoverNames;
use crate::wire::client_hello::{
    self, AlertDescription, ClientHello, HelloError, MAX_BUFFER_BYTES,
};

/// Whether the first bytes can start a TLS handshake record.
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&0x16)
}

/// Why no hello could be read.
#[derive(Debug)]
pub enum HelloFailure {
    TimedOut,
    Closed,
    Invalid(HelloError),
}

/// Reads until `buffered` holds a whole ClientHello (which may span several TCP segments and
/// several TLS records). Returns the bytes read, to be passed on unchanged, and the hello.
/// Hellos with an ECH extension are counted in `counters` (browsers' GREASE ones included):
/// they are decided on their outer name like any other.
pub async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buffered: Vec<u8>,
    timeout: Duration,
    counters: &Counters,
) -> Result<(Vec<u8>, ClientHello), HelloFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = vec![0u8; 4096];
    loop {
        match client_hello::parse(&buffered) {
            Ok(hello) => {
                if hello.has_ech {
                    Counters::bump(&counters.ech_hellos);
                }
                return Ok((buffered, hello));
            }
            Err(HelloError::Incomplete { .. }) => {}
            Err(e) => return Err(HelloFailure::Invalid(e)),
        }
        // The parser decides TooLarge itself from the lengths it has seen; this only guards a
        // peer that keeps sending bytes the parser has not asked for.
        if buffered.len() > MAX_BUFFER_BYTES {
            return Err(HelloFailure::Invalid(HelloError::TooLarge));
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(HelloFailure::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HelloFailure::Closed),
            Ok(Ok(n)) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Counts and logs a connection that never produced a usable hello.
pub fn count_hello_failure(card: &Card, client: SocketAddr, failure: &HelloFailure) {
    let counters = &card.events.counters;
    match failure {
        HelloFailure::TimedOut => {
            Counters::bump(&counters.header_timeouts);
            tracing::info!(client = %client, "closed: no TLS ClientHello in time");
        }
        HelloFailure::Closed => tracing::debug!(client = %client, "closed before the ClientHello"),
        HelloFailure::Invalid(e) => {
            Counters::bump(&counters.malformed);
            tracing::info!(client = %client, error = ?e, "refused: not a valid TLS ClientHello");
        }
    }
}

/// Why a hello the rules allowed is still refused, if it is: it names the public name of an
/// ECH config the card stripped from DNS (a cover name) and the rule does not say
/// `allow-ech`; or (in a CONNECT tunnel) it names another host than the one CONNECT asked
/// for, which is domain fronting. The ECH extension itself decides nothing: browsers send a
/// GREASE one in every hello (see [`crate::ech`]).
pub fn refusal(
    hello: &ClientHello,
    connect_host: Option<&str>,
    allowed_by: &rules::RuleInfo,
    covers: &CoverNames,
) -> Option<Refusal> {
    let sni = hello.server_name.as_deref();
    if sni.is_some_and(|name| covers.contains(name)) && !allowed_by.allow_ech {
        return Some(Refusal::EchCoverName);
    }
    if let (Some(expected), Some(sni)) = (connect_host, sni)
        && !sni
            .trim_end_matches('.')
            .eq_ignore_ascii_case(expected.trim_end_matches('.'))
    {
        return Some(Refusal::DomainFronting);
    }
    None
}

/// Serves intercepted TLS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, card: Arc<Card>) -> std::io::Result<()> {
    super::accept_each(listener, card, connection).await
}

async fn connection(mut client: TcpStream, peer: SocketAddr, card: Arc<Card>) {
    Counters::bump(&card.events.counters.connections);
    let Ok(_slot) = card.slots.acquire(peer.ip()) else {
        Counters::bump(&card.events.counters.refused_at_capacity);
        tracing::info!(client = %peer, "connection refused: at capacity");
        return;
    };
    // TPROXY keeps the address the client dialled as our local address.
    let Ok(dst) = client.local_addr() else { return };
    let (buffered, hello) = match read_hello(
        &mut client,
        Vec::new(),
        card.config.limits.header_timeout(),
        &card.events.counters,
    )
    .await
    {
        Ok(read) => read,
        Err(failure) => {
            count_hello_failure(&card, peer, &failure);
            if matches!(failure, HelloFailure::Invalid(_)) {
                let _ = client
                    .write_all(&client_hello::fatal_alert(AlertDescription::DecodeError))
                    .await;
            }
            return;
        }
    };
    let loaded = card.policy.current();
    let name = hello.server_name.clone();
    let target = format!(
        "{}:{}",
        name.as_deref().unwrap_or(&dst.ip().to_string()),
        dst.port()
    );
    // With a name, the card connects where the name points, not where the packet was going,
    // and decides each address the name has: a hello naming an allowed site cannot carry the
    // connection to some other address, nor to one a rule denies.
    let addresses = match &name {
        Some(name) => match upstream::resolve(&card, name).await {
            Ok(addresses) => addresses,
            Err(e) => return upstream_failed(&card, peer, &target, &e, &mut client).await,
        },
        None => vec![dst.ip()],
    };
    let mut ask = rules::Request::new(Protocol::Https, LocalTime::now()).port(dst.port());
    if let Some(name) = &name {
        ask = ask.host(name);
    }
    let mut candidates = Candidates::decide(&card.config, &loaded.rules, &ask, &addresses);
    let mut refused = None;
    candidates.allowed.retain(|(_, decision)| {
        let reason = refusal(&hello, None, decision.rule, &card.ech_covers);
        if refused.is_none() {
            refused = reason;
        }
        reason.is_none()
    });
    if candidates.allowed.is_empty() {
        match (candidates.denied, refused, candidates.refused) {
            (Some((_, decision)), _, _) => {
                card.events
                    .decision(peer.ip(), Protocol::Https, &target, &decision);
            }
            (None, Some(why), _) => {
                card.events
                    .refusal(peer.ip(), Protocol::Https, &target, why);
            }
            (None, None, Some((ip, why))) => {
                destination::log_refusal(&card, peer, Protocol::Https, &target, ip, why);
            }
            (None, None, None) => {}
        }
        let _ = client
            .write_all(&client_hello::fatal_alert(AlertDescription::AccessDenied))
            .await;
        return;
    }
    let (mut upstream, used) =
        match upstream::connect_first(&card, &candidates.addresses(), dst.port()).await {
            Ok(connected) => connected,
            Err(e) => return upstream_failed(&card, peer, &target, &e, &mut client).await,
        };
    if let Some(decision) = candidates.decision_for(used.ip()) {
        card.events
            .decision(peer.ip(), Protocol::Https, &target, &decision);
    }
    if upstream.write_all(&buffered).await.is_err() {
        return;
    }
    pass_tls(&card, peer, &target, &client, &upstream, &buffered).await;
}

/// Passes an allowed TLS connection on, once its hello (in `sent`, already written upstream)
/// went through: from here both directions must be TLS records. The client's next record
/// must be one (content types 20 to 23), and the server's first bytes too, or the tunnel is
/// cut and counted as malformed: a made-up hello must not open a plain TCP pipe to a port
/// that an `https` rule allowed.
pub async fn pass_tls(
    card: &Card,
    peer: SocketAddr,
    target: &str,
    client: &TcpStream,
    upstream: &TcpStream,
    sent: &[u8],
) {
    let idle = card.config.limits.idle_timeout();
    let after_hello = client_hello::hello_records_len(sent).and_then(|end| sent.get(end..));
    let client_next = match after_hello {
        Some([]) | None => Some(FirstBytes {
            len: 3,
            ok: |bytes| client_hello::starts_record(bytes, &client_hello::CLIENT_RECORD_TYPES),
        }),
        // The client's next record came with its hello (and went upstream with it): judge it
        // here. Further bytes continue that record, so nothing more is checked that way.
        Some(next) => {
            if !client_hello::starts_record(next, &client_hello::CLIENT_RECORD_TYPES) {
                return not_tls_after_hello(card, peer, target, Direction::ClientToUpstream);
            }
            None
        }
    };
    let server_first = FirstBytes {
        len: 3,
        ok: |bytes| client_hello::starts_record(bytes, &client_hello::SERVER_FIRST_RECORD_TYPES),
    };
    if let Err((direction, _)) =
        splice::splice_checked(client, upstream, idle, client_next, Some(server_first)).await
    {
        not_tls_after_hello(card, peer, target, direction);
    }
}

fn not_tls_after_hello(card: &Card, peer: SocketAddr, target: &str, direction: Direction) {
    Counters::bump(&card.events.counters.malformed);
    let from = match direction {
        Direction::ClientToUpstream => "the client's bytes after its TLS hello",
        Direction::UpstreamToClient => "the server's first bytes",
    };
    tracing::info!(client = %peer, target, from, "closed: not TLS after an allowed TLS hello");
}

async fn upstream_failed(
    card: &Card,
    peer: SocketAddr,
    target: &str,
    error: &upstream::UpstreamError,
    client: &mut TcpStream,
) {
    Counters::bump(&card.events.counters.upstream_failures);
    tracing::info!(client = %peer, target, error = %error, kind = error.kind(), "upstream failed");
    let _ = client
        .write_all(&client_hello::fatal_alert(
            AlertDescription::HandshakeFailure,
        ))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::{NoFiles, RuleSet};

    fn hello(name: Option<&str>, has_ech: bool) -> ClientHello {
        ClientHello {
            server_name: name.map(str::to_string),
            has_ech,
            alpn: Vec::new(),
        }
    }

    #[test]
    fn refusals() {
        let rules = RuleSet::from_text(
            "t.rules",
            "ech-ok: allow https host cover.example allow-ech\nallow https\n",
            &NoFiles,
        )
        .unwrap();
        let allowed_by = |name: &str| {
            let at = LocalTime::new(0, 12, 0).unwrap();
            let request = rules::Request::new(Protocol::Https, at)
                .host(name)
                .port(443);
            rules.decide(&request).rule.clone()
        };
        let covers = CoverNames::default();
        covers.remember("cover.example");
        covers.remember("other-cover.example");
        let plain = allowed_by("plain.example");
        // A GREASE (or any) ECH extension with an ordinary outer name: decided on that name.
        for has_ech in [false, true] {
            let hello = hello(Some("plain.example"), has_ech);
            assert_eq!(refusal(&hello, None, &plain, &covers), None);
        }
        // A cover name: refused unless its rule says allow-ech.
        let cover = hello(Some("Other-Cover.example."), true);
        let other = allowed_by("other-cover.example");
        assert_eq!(
            refusal(&cover, None, &other, &covers),
            Some(Refusal::EchCoverName)
        );
        let cover = hello(Some("cover.example"), true);
        let allow_ech = allowed_by("cover.example");
        assert_eq!(refusal(&cover, None, &allow_ech, &covers), None);
        assert_eq!(
            refusal(
                &hello(Some("cloudflare-ech.com"), true),
                None,
                &plain,
                &covers
            ),
            Some(Refusal::EchCoverName),
            "known before any DNS answer"
        );
        assert_eq!(
            refusal(
                &hello(Some("evil.example"), false),
                Some("plain.example"),
                &plain,
                &covers
            ),
            Some(Refusal::DomainFronting)
        );
        assert_eq!(
            refusal(
                &hello(Some("PLAIN.example."), false),
                Some("plain.example"),
                &plain,
                &covers
            ),
            None
        );
        assert_eq!(
            refusal(&hello(None, false), Some("plain.example"), &plain, &covers),
            None
        );
    }

    #[test]
    fn only_handshake_records_look_like_tls() {
        assert!(looks_like_tls(&[0x16, 3, 1]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
        assert!(!looks_like_tls(&[]));
    }
}
