//! Plain TCP on the other intercepted ports: decided on destination address and port, then
//! spliced from the card's outside address, or closed at once.

use std::net::SocketAddr;
use std::sync::Arc;

use rules::{Action, LocalTime, Protocol};
use tokio::net::{TcpListener, TcpStream};

use super::{splice, upstream};
use crate::card::{Card, Counters};

/// Serves intercepted TCP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, card: Arc<Card>) -> std::io::Result<()> {
    super::accept_each(listener, card, connection).await
}

async fn connection(client: TcpStream, peer: SocketAddr, card: Arc<Card>) {
    Counters::bump(&card.events.counters.connections);
    let Ok(_slot) = card.slots.acquire(peer.ip()) else {
        Counters::bump(&card.events.counters.refused_at_capacity);
        tracing::info!(client = %peer, "connection refused: at capacity");
        refuse(client);
        return;
    };
    let Ok(dst) = client.local_addr() else { return };
    let dst = SocketAddr::new(super::destination::canonical(dst.ip()), dst.port());
    if let Some(why) = super::destination::never_connect(&card.config, dst.ip()) {
        super::destination::log_refusal(
            &card,
            peer,
            Protocol::Tcp,
            &dst.to_string(),
            dst.ip(),
            why,
        );
        refuse(client);
        return;
    }
    let ask = rules::Request::new(Protocol::Tcp, LocalTime::now())
        .dst(dst.ip())
        .port(dst.port());
    let loaded = card.policy.current();
    let decision = loaded.rules.decide(&ask);
    card.events
        .decision(peer.ip(), Protocol::Tcp, &dst.to_string(), &decision);
    if decision.action == Action::Deny {
        refuse(client);
        return;
    }
    let upstream = match upstream::connect(&card, dst).await {
        Ok(stream) => stream,
        Err(e) => {
            Counters::bump(&card.events.counters.upstream_failures);
            tracing::info!(client = %peer, target = %dst, error = %e, kind = e.kind(), "upstream failed");
            refuse(client);
            return;
        }
    };
    splice::splice(&client, &upstream, card.config.limits.idle_timeout()).await;
}

/// Closes with a reset, so the client's connect or first read fails at once instead of
/// seeing a clean end of stream it might take for an empty answer.
fn refuse(client: TcpStream) {
    let _ = client.set_zero_linger();
}
