//! The read-only JSON status the appliance's status page reads: which rules run, the
//! counters, and the last decisions. Served on the card's inside address, to the appliance's
//! card-link address only (`appliance_address`). The document is [`proto::CardStatus`], the
//! type the appliance reads it with.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::accept;
use crate::firewall::{Firewall, canonical};

/// The status document (its fields are described in [`proto::CardStatus`]).
pub async fn render(firewall: &Firewall, started: Instant) -> proto::CardStatus {
    let vpns = firewall.vpns.load_full().statuses().await;
    let loaded = firewall.rules();
    proto::CardStatus {
        firmware: concat!("cardfw ", env!("CARGO_PKG_VERSION")).to_owned(),
        rules_version: loaded.version.clone(),
        tls_fingerprint: firewall.tls_fingerprint.get().cloned(),
        rules_loaded_at: loaded.loaded_at,
        rules: loaded.rules.stats().rules,
        uptime_secs: started.elapsed().as_secs(),
        connections_open: firewall.slots.in_use(),
        counters: firewall.events.counters.snapshot(),
        accept_backoffs: accept::backoffs(),
        refused_at_listener_cap: accept::refused_at_cap(),
        recent: firewall.events.recent().iter().map(Into::into).collect(),
        vpns,
    }
}

/// Connections the status endpoint serves at once (it is read by the appliance's probe and
/// by a person now and then), and per client address: a client holding connections open
/// leaves room for the appliance's probe.
pub const CAP: accept::Cap = accept::Cap {
    total: 16,
    per_client: 4,
};

/// Serves `GET /status` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    firewall: Arc<Firewall>,
    started: Instant,
) -> std::io::Result<()> {
    match accept::serve(listener, "status", Some(CAP), move |stream, peer| {
        // The recent decisions name other clients and what they asked for: only the
        // appliance (its card-link address) may read them.
        let appliance = canonical(firewall.config.appliance_address);
        let refused = canonical(peer.ip()) != appliance;
        let firewall = firewall.clone();
        async move {
            if refused {
                tracing::info!(client = %peer, "status refused: only the appliance may read it");
                let _ = stream.set_zero_linger();
                return;
            }
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let firewall = firewall.clone();
                async move { Ok::<_, Infallible>(respond(&request, &firewall, started).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await {}
}

async fn respond(
    request: &Request<Incoming>,
    firewall: &Firewall,
    started: Instant,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&render(firewall, started).await)
                .expect("status serialises"),
        ),
        (_, "/status") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "the card's status is at /status\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
