//! The read-only JSON status the appliance's status page reads: which rules run, the
//! counters, and the last decisions. Served on the card's inside address, to the appliance's
//! card-link address only (`appliance_address`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::card::{Card, Counters, DecisionRecord};

#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub firmware: &'static str,
    pub rules_version: &'a str,
    /// The card web page's certificate fingerprint, when the card has a store and so a page.
    pub tls_fingerprint: Option<&'a str>,
    pub rules_loaded_at: u64,
    pub rules: usize,
    pub uptime_secs: u64,
    pub connections_open: usize,
    pub counters: &'a Counters,
    pub recent: Vec<DecisionRecord>,
}

/// The status document, as JSON.
pub fn render(card: &Card, started: Instant) -> String {
    let loaded = card.policy.current();
    let status = Status {
        firmware: concat!("cardfw ", env!("CARGO_PKG_VERSION")),
        rules_version: &loaded.version,
        tls_fingerprint: card.tls_fingerprint.get().map(String::as_str),
        rules_loaded_at: loaded.loaded_at,
        rules: loaded.rules.stats().rules,
        uptime_secs: started.elapsed().as_secs(),
        connections_open: card.slots.in_use(),
        counters: &card.events.counters,
        recent: card.events.recent(),
    };
    serde_json::to_string_pretty(&status).expect("status serialises")
}

/// Serves `GET /status` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    card: Arc<Card>,
    started: Instant,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        // The recent decisions name other clients and what they asked for: only the
        // appliance (its card-link address) may read them.
        let appliance = crate::proxy::destination::canonical(card.config.appliance_address);
        if crate::proxy::destination::canonical(peer.ip()) != appliance {
            tracing::info!(client = %peer, "status refused: only the appliance may read it");
            let _ = stream.set_zero_linger();
            continue;
        }
        let card = card.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let card = card.clone();
                async move { Ok::<_, Infallible>(respond(&request, &card, started)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, card: &Card, started: Instant) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => (StatusCode::OK, "application/json", render(card, started)),
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
