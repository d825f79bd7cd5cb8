//! TLS on port 443 (and other configured TLS ports): reads the ClientHello, decides on the
//! name it carries and the destination, then passes the bytes through unchanged, answers with
//! a TLS alert, or, when the allowing rule says `inspect`, terminates it ([`super::inspect`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rules::{LocalTime, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::inspect::Inspected;
use super::splice::{self, Direction, FirstBytes};
use super::upstream;
use crate::firewall::{Ask, Counters, Firewall, Hello, Refusal};
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
pub fn count_hello_failure(firewall: &Firewall, client: SocketAddr, failure: &HelloFailure) {
    let counters = &firewall.events.counters;
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

/// Serves intercepted TLS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, firewall: Arc<Firewall>) -> std::io::Result<()> {
    super::accept_each(listener, firewall, connection).await
}

async fn connection(mut client: TcpStream, peer: SocketAddr, firewall: Arc<Firewall>) {
    let Some(_slot) = firewall.admit(peer) else {
        return;
    };
    // TPROXY keeps the address the client dialled as our local address.
    let Ok(dst) = client.local_addr() else { return };
    let (buffered, hello) = match read_hello(
        &mut client,
        Vec::new(),
        firewall.config.limits.header_timeout(),
        &firewall.events.counters,
    )
    .await
    {
        Ok(read) => read,
        Err(failure) => {
            count_hello_failure(&firewall, peer, &failure);
            if matches!(failure, HelloFailure::Invalid(_)) {
                let _ = client
                    .write_all(&client_hello::fatal_alert(AlertDescription::DecodeError))
                    .await;
            }
            return;
        }
    };
    let rules = firewall.rules();
    let name = hello.server_name.as_deref();
    let target = format!("{}:{}", name.unwrap_or(&dst.ip().to_string()), dst.port());
    // With a name, the card connects where the name points, not where the packet was going,
    // and decides each address the name has: a hello naming an allowed site cannot carry the
    // connection to some other address, nor to one a rule denies.
    let addresses = match name {
        Some(name) => match upstream::resolve(&firewall, name).await {
            Ok(addresses) => addresses,
            Err(e) => return upstream_failed(&firewall, peer, &target, &e, &mut client).await,
        },
        None => vec![dst.ip()],
    };
    let mut request = rules::Request::new(Protocol::Https, LocalTime::now()).port(dst.port());
    if let Some(name) = name {
        request = request.host(name);
    }
    let ask = Ask {
        client: peer.ip(),
        target: &target,
        request,
        hello: Some(Hello {
            server_name: name,
            connect_host: None,
        }),
    };
    let Ok(candidates) = firewall.decide_addresses(&rules, &ask, &addresses) else {
        return access_denied(&mut client).await;
    };
    let inspection = firewall.inspection.get();
    // Refused rather than spliced: the owner asked for path and type rules on this site, and
    // passing it unexamined would quietly drop them.
    if inspection.is_none() && candidates.allowed.iter().any(|(_, d)| d.rule.inspect) {
        tracing::warn!(client = %peer, target, "an inspect rule matched, but this card has no store and so no CA");
        firewall.refuse(
            peer.ip(),
            Protocol::Https,
            &target,
            Refusal::InspectWithoutCa,
        );
        return access_denied(&mut client).await;
    }
    let (mut upstream, used) =
        match upstream::connect_first(&firewall, &candidates.addresses(), dst.port()).await {
            Ok(connected) => connected,
            Err(e) => return upstream_failed(&firewall, peer, &target, &e, &mut client).await,
        };
    firewall.record_connected(&ask, &candidates, used.ip());
    if let Some(inspection) = inspection
        && let Some(decision) = candidates
            .decision_for(used.ip())
            .filter(|d| d.rule.inspect)
    {
        let inspected = Inspected {
            firewall: firewall.clone(),
            inspection,
            peer,
            server_name: name.map(str::to_string),
            port: dst.port(),
            upstream_addr: used,
            client_cert: decision.rule.client_cert,
        };
        return inspected.run(client, buffered, upstream).await;
    }
    if upstream.write_all(&buffered).await.is_err() {
        return;
    }
    pass_tls(&firewall, peer, &target, &client, &upstream, &buffered).await;
}

/// Passes an allowed TLS connection on, once its hello (in `sent`, already written upstream)
/// went through: from here both directions must be TLS records. The client's next record
/// must be one (content types 20 to 23), and the server's first bytes too, or the tunnel is
/// cut and counted as malformed: a made-up hello must not open a plain TCP pipe to a port
/// that an `https` rule allowed.
pub async fn pass_tls(
    firewall: &Firewall,
    peer: SocketAddr,
    target: &str,
    client: &TcpStream,
    upstream: &TcpStream,
    sent: &[u8],
) {
    let idle = firewall.config.limits.idle_timeout();
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
                return not_tls_after_hello(firewall, peer, target, Direction::ClientToUpstream);
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
        not_tls_after_hello(firewall, peer, target, direction);
    }
}

fn not_tls_after_hello(firewall: &Firewall, peer: SocketAddr, target: &str, direction: Direction) {
    Counters::bump(&firewall.events.counters.malformed);
    let from = match direction {
        Direction::ClientToUpstream => "the client's bytes after its TLS hello",
        Direction::UpstreamToClient => "the server's first bytes",
    };
    tracing::info!(client = %peer, target, from, "closed: not TLS after an allowed TLS hello");
}

async fn access_denied(client: &mut TcpStream) {
    let _ = client
        .write_all(&client_hello::fatal_alert(AlertDescription::AccessDenied))
        .await;
}

async fn upstream_failed(
    firewall: &Firewall,
    peer: SocketAddr,
    target: &str,
    error: &upstream::UpstreamError,
    client: &mut TcpStream,
) {
    upstream::count_failure(firewall, peer, target, error);
    let _ = client
        .write_all(&client_hello::fatal_alert(
            AlertDescription::HandshakeFailure,
        ))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_handshake_records_look_like_tls() {
        assert!(looks_like_tls(&[0x16, 3, 1]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
        assert!(!looks_like_tls(&[]));
    }
}
