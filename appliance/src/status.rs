//! The status web UI on the inside address: is the card there, the links and their traffic,
//! what the card runs and what it blocked lately.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the status page (HTML, refreshes its live parts every 5 s) |
//! | `GET /api/status` | the [`Snapshot`] as JSON |
//! | `GET /graph.svg` | the traffic graph alone: one panel per link |
//! | `GET /static/style.css`, `GET /static/live.js` | the look, from the `web` crate |
//!
//! Anything else is a 404. A request whose `Host` is not the address the page is served on
//! (with or without the port) is refused with 421 before any route: a web page the protected
//! computer visits cannot rebind a name of its own to the appliance and read the status
//! (DNS rebinding). The look (templates, CSS, graph layout) lives in the `web` crate; this
//! module only maps a [`Snapshot`] into `web`'s page structs and serves them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serve::http::{SecurityHeaders, static_file};
use web::appliance::{BlockView, CardView, LinkView, StatusPage, VpnView};
use web::askama::Template;
use web::graph::{Panel, Step, TrafficGraph};

use crate::state::{ApplianceState, LinkState, Snapshot};

/// The status UI's routes over the shared state, answering only requests whose `Host` is
/// `address` (its IP, with or without the port).
pub fn router(state: Arc<ApplianceState>, address: SocketAddr) -> Router {
    let routes = Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/graph.svg", get(graph))
        .route("/static/style.css", get(style))
        .route("/static/live.js", get(script))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            only_own_host(address, request, next)
        }));
    HEADERS.on(routes)
}

/// Every answer: not cached unless static (it is live status), and the page may load only its
/// own stylesheet and script (card-reported names end up in it).
const HEADERS: SecurityHeaders = SecurityHeaders {
    content_security_policy: web::CONTENT_SECURITY_POLICY,
    https: false,
};

/// Serves the status UI on `listener` until the task is dropped. The listener's own address
/// is the one `Host` it answers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApplianceState>,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let how = serve::accept::Listener::new("status page");
    match serve::http::http(listener, how, router(state, address)).await {}
}

/// Whether a request's `Host` header names `address`: its IP (IPv6 in brackets), alone or with
/// the port. A missing or repeated header does not.
fn host_is(headers: &HeaderMap, address: SocketAddr) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    host.eq_ignore_ascii_case(&ip) || host.eq_ignore_ascii_case(&format!("{ip}:{}", address.port()))
}

/// Refuses a request for any other host with 421 and a line saying where the page is.
async fn only_own_host(address: SocketAddr, request: Request, next: Next) -> Response {
    if host_is(request.headers(), address) {
        return next.run(request).await;
    }
    let url = if address.port() == 80 {
        format!("http://{}/", address.ip())
    } else {
        format!("http://{address}/")
    };
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("This is the appliance's status page; it answers only at {url}\n"),
    )
        .into_response()
}

async fn page(State(state): State<Arc<ApplianceState>>) -> impl IntoResponse {
    status_page(&state.snapshot())
}

async fn api_status(State(state): State<Arc<ApplianceState>>) -> impl IntoResponse {
    axum::Json(state.snapshot())
}

async fn graph(State(state): State<Arc<ApplianceState>>) -> Response {
    let snapshot = state.snapshot();
    let panels: Vec<Panel> = snapshot
        .links
        .iter()
        .enumerate()
        .map(|(index, link)| traffic(&snapshot, index, link))
        .collect();
    let graph = TrafficGraph::new("traffic", "Traffic per link", &panels, true);
    match graph.render() {
        Ok(svg) => (
            [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
            svg,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering the traffic graph");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn style() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", web::STYLE_CSS)
}

async fn script() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", web::LIVE_JS)
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    let page = web::NotFoundPage {
        path: uri.path().to_owned(),
    };
    (StatusCode::NOT_FOUND, page)
}

/// The page's view of a snapshot.
fn status_page(snapshot: &Snapshot) -> StatusPage {
    let card = &snapshot.card;
    StatusPage {
        hostname: snapshot.hostname.clone(),
        uptime_secs: snapshot.uptime_secs,
        card: CardView {
            present: card.present,
            // 0 is "never changed since boot was recorded", not 1970.
            since: (card.since != 0).then_some(card.since),
            absent_reason: card.absent_reason.clone(),
            rules_version: card.rules_version.clone(),
            firmware: card.firmware.clone(),
            tls_fingerprint: card.tls_fingerprint.clone(),
            allowed: card.allowed,
            denied: card.denied,
            vpns: card
                .vpns
                .iter()
                .map(|vpn| VpnView {
                    name: vpn.name.clone(),
                    backend: vpn.backend.clone(),
                    unlocked: vpn.unlocked,
                    endpoint: vpn.endpoint.clone(),
                    handshake_age_secs: vpn.handshake_age_secs,
                    rx_bytes: vpn.rx_bytes,
                    tx_bytes: vpn.tx_bytes,
                })
                .collect(),
        },
        links: snapshot
            .links
            .iter()
            .enumerate()
            .map(|(index, link)| LinkView {
                role: link.role.label().to_owned(),
                name: link.name.clone(),
                up: link.up,
                addresses: link.addresses.clone(),
                rx_bytes: link.rx_bytes,
                tx_bytes: link.tx_bytes,
                graph: TrafficGraph::new(
                    &format!("graph-{index}"),
                    &format!("Traffic on {}", display_name(link)),
                    &[traffic(snapshot, index, link)],
                    false,
                ),
            })
            .collect(),
        blocks: card
            .recent_blocks
            .iter()
            .map(|block| BlockView {
                at: block.at,
                client: block.client.clone(),
                protocol: block.protocol.clone(),
                target: block.target.clone(),
                rule: block.rule.clone(),
            })
            .collect(),
    }
}

fn display_name(link: &LinkState) -> String {
    let name = if link.name.is_empty() {
        "not found yet"
    } else {
        &link.name
    };
    format!("{} link ({name})", link.role.label())
}

/// The rates of link `index` between consecutive samples of the history. An interval where a
/// counter went down (the link was re-created, the card re-plugged) counts as 0, not as a huge
/// jump; samples without this link (it was found later) are skipped.
fn traffic(snapshot: &Snapshot, index: usize, link: &LinkState) -> Panel {
    let mut panel = Panel {
        title: format!(
            "{}: {}",
            link.role.label(),
            if link.name.is_empty() {
                "not found yet"
            } else {
                &link.name
            }
        ),
        ..Panel::default()
    };
    for pair in snapshot.history.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let (Some(old), Some(new)) = (before.links.get(index), after.links.get(index)) else {
            continue;
        };
        if after.at <= before.at {
            continue;
        }
        let seconds = (after.at - before.at) as f64;
        let step = |old: u64, new: u64| Step {
            start: before.at,
            end: after.at,
            bytes_per_second: new.saturating_sub(old) as f64 / seconds,
        };
        panel.received.push(step(old.rx_bytes, new.rx_bytes));
        panel.sent.push(step(old.tx_bytes, new.tx_bytes));
    }
    panel
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::state::{Block, CardState, LinkSample, Role, TrafficSample};

    fn link(role: Role, name: &str, address: &str) -> LinkState {
        LinkState {
            role,
            name: name.into(),
            up: true,
            addresses: vec![address.into()],
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// Three links, the card present, `samples` history samples 5 s apart.
    fn snapshot(samples: u64) -> Snapshot {
        let history = (0..samples)
            .map(|i| TrafficSample {
                at: 1_764_079_000 + 5 * i,
                links: (0..3u64)
                    .map(|l| LinkSample {
                        rx_bytes: i * i * 10_000 * (l + 1),
                        tx_bytes: i * 3_000 * (l + 1),
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            hostname: "cardwall-test".into(),
            uptime_secs: 4000,
            links: vec![
                link(Role::Inside, "lan0", "192.168.77.1/24"),
                link(Role::Outside, "wan0", "203.0.113.7/24"),
                link(Role::Card, "usb0", "10.77.0.1/30"),
            ],
            card: CardState {
                present: true,
                since: 1_764_078_000,
                absent_reason: None,
                rules_version: Some("2026-11-25.3".into()),
                firmware: Some("cardfw 0.1.0".into()),
                tls_fingerprint: Some("12:34:AB".into()),
                allowed: 1200,
                denied: 34,
                recent_blocks: vec![Block {
                    at: 1_764_079_010,
                    client: "192.168.77.20".into(),
                    protocol: "https".into(),
                    target: "tracker.example".into(),
                    rule: "deny *.tracker.example".into(),
                }],
                vpns: vec![proto::VpnStatus {
                    name: "corp".into(),
                    backend: "kernel".into(),
                    unlocked: false,
                    endpoint: "198.51.100.7:51820".into(),
                    handshake_age_secs: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                }],
            },
            history,
        }
    }

    fn absent(mut snapshot: Snapshot) -> Snapshot {
        snapshot.card.present = false;
        snapshot.card.absent_reason = Some("card link usb0 is down".into());
        snapshot.links[2].up = false;
        snapshot
    }

    /// Where the tests' router is served.
    const AT: &str = "192.168.77.1:80";

    /// Status, content type and body of `GET path`.
    async fn get(snapshot: Snapshot, path: &str) -> (StatusCode, String, String) {
        get_with_host(snapshot, path, Some("192.168.77.1")).await
    }

    /// [`get`] with this `Host` header (or none).
    async fn get_with_host(
        snapshot: Snapshot,
        path: &str,
        host: Option<&str>,
    ) -> (StatusCode, String, String) {
        let state = Arc::new(ApplianceState::new(snapshot));
        let mut request = Request::builder().uri(path);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = router(state, AT.parse().unwrap())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn page_says_whether_the_card_is_present() {
        let (status, content_type, html) = get(snapshot(3), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(
            html.contains("CARD PRESENT — traffic is filtered"),
            "{html}"
        );
        assert!(!html.contains("CARD ABSENT"), "{html}");
        for expected in [
            "lan0",
            "wan0",
            "usb0",
            "203.0.113.7/24",
            "2026-11-25.3",
            "1 h 6 min",
            "<dt>VPN corp</dt><dd>locked (kernel)",
        ] {
            assert!(html.contains(expected), "{expected} missing: {html}");
        }

        let (_, _, html) = get(absent(snapshot(3)), "/").await;
        assert!(html.contains("CARD ABSENT — nothing passes"), "{html}");
        assert!(html.contains("card link usb0 is down"), "{html}");
        assert!(!html.contains("CARD PRESENT"), "{html}");
    }

    #[tokio::test]
    async fn card_reported_names_are_escaped() {
        let mut hostile = snapshot(3);
        hostile.card.recent_blocks[0].target = "<script>alert(1)</script>".into();
        hostile.card.recent_blocks[0].client = "\"><img src=x onerror=alert(2)>".into();
        hostile.card.absent_reason = Some("<b>bold</b>".into());
        hostile.card.present = false;
        let (_, _, html) = get(hostile, "/").await;
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>bold"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
    }

    #[tokio::test]
    async fn api_status_is_the_snapshot_as_json() {
        let (status, content_type, json) = get(snapshot(3), "/api/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let parsed: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, snapshot(3));
    }

    #[tokio::test]
    async fn graph_is_well_formed_svg_with_a_line_per_link_and_direction() {
        let (status, content_type, svg) = get(snapshot(3), "/graph.svg").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("image/svg+xml"), "{content_type}");
        let document = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let title = root.children().find(|n| n.has_tag_name("title")).unwrap();
        assert!(
            title.text().unwrap().starts_with("Traffic per link"),
            "{svg}"
        );
        let lines: Vec<_> = root
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .collect();
        assert_eq!(lines.len(), 6, "3 links × received and sent: {svg}");
        for line in lines {
            // 2 intervals between 3 samples, each drawn as a step of 2 points.
            assert_eq!(
                line.attribute("points").unwrap().split(' ').count(),
                4,
                "{svg}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_history_is_a_graph_without_data() {
        for path in ["/graph.svg", "/"] {
            let (status, _, body) = get(snapshot(0), path).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.contains("no data yet"), "{body}");
            assert!(!body.contains("<polyline"), "{body}");
        }
    }

    #[tokio::test]
    async fn static_files_and_unknown_paths() {
        let (status, content_type, css) = get(snapshot(0), "/static/style.css").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/css; charset=utf-8");
        assert_eq!(css, web::STYLE_CSS);
        let (status, _, _) = get(snapshot(0), "/static/live.js").await;
        assert_eq!(status, StatusCode::OK);
        for path in ["/nope", "/static/other.css", "/api/status/x"] {
            let (status, _, body) = get(snapshot(0), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("Not found"), "{body}");
        }
    }

    #[tokio::test]
    async fn only_the_appliance_address_as_host_is_answered() {
        for host in ["192.168.77.1", "192.168.77.1:80"] {
            let (status, _, _) = get_with_host(snapshot(0), "/api/status", Some(host)).await;
            assert_eq!(status, StatusCode::OK, "{host}");
        }
        // A name rebound to the appliance by a web page's DNS, other ports, other addresses,
        // no Host at all: refused before any route, with a line saying where the page is.
        for host in [
            Some("evil.example"),
            Some("evil.example:80"),
            Some("192.168.77.1:8080"),
            Some("192.168.77.10"),
            Some("192.168.77.1.nip.io"),
            Some(""),
            None,
        ] {
            for path in ["/", "/api/status", "/nope"] {
                let (status, content_type, body) = get_with_host(snapshot(0), path, host).await;
                assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host:?} {path}");
                assert_eq!(content_type, "text/plain; charset=utf-8");
                assert_eq!(
                    body,
                    "This is the appliance's status page; it answers only at http://192.168.77.1/\n"
                );
            }
        }
        let mut two = HeaderMap::new();
        two.append(header::HOST, "192.168.77.1".parse().unwrap());
        two.append(header::HOST, "evil.example".parse().unwrap());
        assert!(!host_is(&two, AT.parse().unwrap()));
        let mut v6 = HeaderMap::new();
        v6.insert(header::HOST, "[fd77::1]:8080".parse().unwrap());
        assert!(host_is(&v6, "[fd77::1]:8080".parse().unwrap()));
    }

    #[test]
    fn rates_between_samples_survive_counter_resets_and_new_links() {
        let mut s = snapshot(3);
        // The card link appears only in the last sample; lan0's counter resets in the middle.
        s.history[0].links.truncate(2);
        s.history[1].links.truncate(2);
        s.history[1].links[0].rx_bytes = 0;
        s.history[0].links[0].rx_bytes = 50_000;
        let lan = traffic(&s, 0, &s.links[0]);
        let rates: Vec<f64> = lan.received.iter().map(|r| r.bytes_per_second).collect();
        assert_eq!(rates, [0.0, 8_000.0]);
        assert_eq!(lan.received[1].start, 1_764_079_005);
        assert!(traffic(&s, 2, &s.links[2]).received.is_empty());
    }
}
