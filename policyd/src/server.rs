//! policyd's HTTPS service. Every connection is TLS; a client certificate is asked for and,
//! when given, must chain to the fleet CA (rustls checks it in the handshake). Then each route
//! says who may call it:
//!
//! | route | caller |
//! |---|---|
//! | `POST /v1/enrol` | anyone holding a one-time token |
//! | `GET /v1/bundle?after=N`, `POST /v1/report`, `GET`/`POST /v1/access-requests`, `POST /v1/vpn-keys` | an enrolled, unrevoked card (its certificate) |
//! | `/v1/admin/…` (also `access-requests`, `…/approve`, `…/decline`) | the administrator: `Authorization: Bearer <admin.token>` only (never the page's cookie), and every POST as `Content-Type: application/json` (an upload as `application/vnd.cardwall.bundle`): a cross-site form or `fetch` can send neither |
//! | `/admin` | the administrator's page: a server-side session opened with the admin token, a CSRF token on every form (see [`crate::page`]) |
//!
//! Which card a certificate is, whether it is revoked (a revoked or unknown one gets 403; no
//! CRL is needed), and the long poll's wait are the fleet service's: [`crate::service`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::policy::{
    self, BUNDLE_MEDIA_TYPE, BundleKind, EnrolRequest, EnrolResponse, JSON_MEDIA_TYPE, Report,
};
use proto::policy_admin::{
    self, FleetStatus, PublishRequest, PublishResponse, TokensRequest, TokensResponse,
};
use rules::bundle;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::db::CardUpdate;
use crate::service::{ApiError, AppState, Peer, bad_request};
use crate::{sha256_hex, unix_now};

/// How often the database is checked for versions published through another instance.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The largest rule upload accepted on the admin API.
const MAX_ADMIN_BODY: usize = policy::MAX_BUNDLE_BODY;

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("not a valid request: {e}")))
}

/// The JSON request of an admin API call ([`require_admin_post`] first: the token, then the
/// media type, before a byte of the body is read).
fn admin_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    require_admin_post(state, headers, JSON_MEDIA_TYPE)?;
    parse_json(body)
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(policy::ENROL_PATH, post(enrol))
        .route(policy::BUNDLE_PATH, get(poll))
        .route(policy::REPORT_PATH, post(report))
        .route(
            policy::ACCESS_REQUESTS_PATH,
            post(access_request).get(access_request_states),
        )
        .route(policy::VPN_KEYS_PATH, post(vpn_keys))
        .route(policy_admin::TOKENS_PATH, post(admin_tokens))
        .route(policy_admin::PUBLISH_PATH, post(admin_publish))
        .route(policy_admin::UPLOAD_PATH, post(admin_upload))
        .route(policy_admin::CARDS_PATH, get(admin_cards))
        .route("/v1/admin/cards/{id}/revoke", post(admin_revoke))
        .route(policy_admin::ACCESS_REQUESTS_PATH, get(admin_requests))
        .route(policy_admin::APPROVE_PATH, post(admin_approve))
        .route(policy_admin::DECLINE_PATH, post(admin_decline))
        .route(policy_admin::VPN_SET_PATH, post(admin_vpn_set))
        .route(policy_admin::VPN_REMOVE_PATH, post(admin_vpn_remove))
        .merge(crate::page::routes())
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .with_state(state)
}

/// Serves for ever (an error only when the TLS identity cannot be loaded). Also runs the
/// database sync.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let tls = state
        .fleet
        .server_tls()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let app = router(state.clone());
    let syncing = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            tick.tick().await;
            if let Err(error) = syncing.sync().await {
                tracing::warn!(%error, "cannot check the database for new versions");
            }
            // Approvals that ran out: a new overlay for each card concerned.
            if let Err(error) = syncing.expire_approvals().await {
                tracing::warn!(%error, "cannot renew the overlays of expired approvals");
            }
        }
    });
    // No cap: every enrolled card holds a connection in its long poll.
    let how = serve::accept::Listener::new("policy server");
    match serve::http::https(listener, how, tls, app).await {}
}

/// The card a request comes from is named by the certificate it presented in the handshake.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Peer, Self::Rejection> {
        let certificate = parts.extensions.get::<serve::http::ClientCertificate>();
        Ok(Peer(certificate.map(|c| sha256_hex(&c.0))))
    }
}

async fn enrol(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: EnrolRequest = parse_json(&body)?;
    let card_id = crate::fleet::random_hex(8)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let issued = state
        .db
        .enrol(
            &sha256_hex(request.token.trim().as_bytes()),
            &card_id,
            unix_now(),
            |_group| {
                state
                    .fleet
                    .issue_card_certificate(&request.csr_pem, &card_id)
            },
        )
        .await?;
    let (certificate_pem, group) = issued.map_err(bad_request)?;
    tracing::info!(card = %card_id, %group, "card enrolled");
    Ok(axum::Json(EnrolResponse {
        card_id,
        group,
        certificate_pem,
        ca_pem: state.fleet.ca_pem.clone(),
        policy_key_pem: bundle::public_key_to_pem(&state.fleet.policy_public),
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct PollQuery {
    after: u64,
    /// The card's installed overlay version; absent from cards that predate overlays, which
    /// are then never sent one.
    overlay_after: Option<u64>,
}

/// Waits until `latest` holds a version above `after`.
async fn newer(
    latest: &mut tokio::sync::watch::Receiver<Option<Arc<crate::service::Latest>>>,
    after: u64,
) -> Option<Arc<crate::service::Latest>> {
    // The watch guard (not Send) is a temporary of the tail expression: edition 2024 drops
    // it there, before the future ends.
    latest
        .wait_for(|l| l.as_ref().is_some_and(|l| l.version > after))
        .await
        .ok()?
        .clone()
}

async fn poll(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(PollQuery {
        after,
        overlay_after,
    }) = query.map_err(|_| {
        bad_request("write /v1/bundle?after=<installed version>[&overlay_after=<overlay version>]")
    })?;
    let card = state.card(&peer).await?;
    state
        .record(CardUpdate::Seen {
            card_id: card.id.clone(),
            at: unix_now(),
        })
        .await?;
    let mut group = state.channel(&card.group).subscribe();
    let mut overlay = overlay_after.map(|after| {
        (
            state.channel(&policy::overlay_group(&card.id)).subscribe(),
            after,
        )
    });
    // Whichever stream has something newer first; the group's when both do (biased), so a
    // card takes a new group bundle before an overlay made for the old one.
    let found = tokio::time::timeout(state.settings.hold, async {
        tokio::select! {
            biased;
            Some(bundle) = newer(&mut group, after) => Some((BundleKind::Group, bundle)),
            Some(bundle) = async {
                match &mut overlay {
                    Some((latest, after)) => newer(latest, *after).await,
                    None => std::future::pending().await,
                }
            } => Some((BundleKind::Overlay, bundle)),
            else => None,
        }
    })
    .await
    .ok()
    .flatten();
    let Some((kind, bundle)) = found else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // The card may have been revoked while its poll was held.
    state.check_not_revoked(&card)?;
    Ok((
        [
            (header::CONTENT_TYPE, BUNDLE_MEDIA_TYPE.to_string()),
            (
                header::HeaderName::from_static(policy::VERSION_HEADER),
                bundle.version.to_string(),
            ),
            (
                header::HeaderName::from_static(policy::BUNDLE_KIND_HEADER),
                kind.as_str().to_string(),
            ),
        ],
        bundle.body.clone(),
    )
        .into_response())
}

async fn report(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    body: Bytes,
) -> Result<Response, ApiError> {
    let card = state.card(&peer).await?;
    let report: Report = parse_json(&body)?;
    let error = report.error.as_deref().map(|e| {
        // Kept short: it is shown on the fleet page.
        let mut e = e.to_string();
        e.truncate(e.floor_char_boundary(2000));
        e
    });
    if report.outcome == policy::Outcome::Refused {
        tracing::warn!(card = %card.id, offered = ?report.offered_version, error = ?error, "card refused a bundle");
    }
    state
        .record(CardUpdate::Report {
            card_id: card.id.clone(),
            at: unix_now(),
            running_version: report.running_version,
            outcome: report.outcome.as_str().to_string(),
            error,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A card forwards what one of its users asked for. The body is bounded before it is read
/// ([`policy::MAX_JSON_BODY`]); every refusal is counted ([`AppState::refuse_request`]).
async fn access_request(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    body: Bytes,
) -> Result<Response, ApiError> {
    let card = state.card(&peer).await?;
    if body.len() > policy::MAX_JSON_BODY {
        return Err(state.refuse_request(
            &card.id,
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "an access request is at most {} bytes",
                    policy::MAX_JSON_BODY
                ),
            ),
        ));
    }
    let request: policy::AccessRequest =
        parse_json(&body).map_err(|e| state.refuse_request(&card.id, e))?;
    state.receive_request(&card, &request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn access_request_states(
    State(state): State<Arc<AppState>>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let card = state.card(&peer).await?;
    Ok(axum::Json(state.request_states(&card).await?).into_response())
}

/// A card reports the public keys of the VPNs pushed to it.
async fn vpn_keys(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    body: Bytes,
) -> Result<Response, ApiError> {
    let card = state.card(&peer).await?;
    if body.len() > policy::MAX_JSON_BODY {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large for VPN keys".into(),
        ));
    }
    let keys: policy::VpnKeys = parse_json(&body)?;
    state.receive_vpn_keys(&card, &keys).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.is_admin(headers) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin calls need `Authorization: Bearer <admin.token>`".into(),
        ))
    }
}

/// An admin POST: the bearer token, and a body of media type `expected`. The types a page of
/// another site can post without asking first (`text/plain`, forms) are never accepted.
fn require_admin_post(
    state: &AppState,
    headers: &HeaderMap,
    expected: &str,
) -> Result<(), ApiError> {
    require_admin(state, headers)?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media_type.as_deref() == Some(expected) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("this admin call takes `Content-Type: {expected}`"),
        ))
    }
}

async fn admin_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: TokensRequest = admin_json(&state, &headers, &body)?;
    let tokens = state
        .new_tokens(
            &request.group,
            request.count,
            request.ttl_secs.map(Duration::from_secs),
        )
        .await?;
    Ok(axum::Json(TokensResponse { tokens }).into_response())
}

async fn admin_publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: PublishRequest = admin_json(&state, &headers, &body)?;
    let version = state.publish(&request).await?;
    Ok(axum::Json(PublishResponse {
        group: request.group,
        version,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    group: String,
}

async fn admin_upload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(UploadQuery { group }): Query<UploadQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin_post(&state, &headers, BUNDLE_MEDIA_TYPE)?;
    let version = state.upload(&group, &body).await?;
    Ok(axum::Json(PublishResponse { group, version }).into_response())
}

async fn admin_cards(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    Ok(axum::Json(FleetStatus {
        groups: state.latest_versions(),
        cards: state.db.cards().await?,
        vpns: state.db.all_vpns().await?,
    })
    .into_response())
}

async fn admin_revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin_post(&state, &headers, JSON_MEDIA_TYPE)?;
    state.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The open requests shown at most by one call (the per-server limit bounds them anyway).
const MAX_LISTED_REQUESTS: usize = 10_000;

async fn admin_requests(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let requests = state
        .db
        .open_requests(MAX_LISTED_REQUESTS)
        .await?
        .into_iter()
        .map(|stored| policy_admin::OpenRequest {
            card_id: stored.card_id,
            request: stored.request,
            received_at: stored.received_at,
        })
        .collect();
    Ok(axum::Json(policy_admin::OpenRequests {
        requests,
        refused: state
            .refused_requests
            .load(std::sync::atomic::Ordering::Relaxed),
    })
    .into_response())
}

async fn admin_approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: policy_admin::ApproveRequest = admin_json(&state, &headers, &body)?;
    let overlay_version = state
        .approve(
            &request.card_id,
            &request.id,
            request.rule.as_deref(),
            request.minutes,
        )
        .await?;
    Ok(axum::Json(policy_admin::ApproveResponse { overlay_version }).into_response())
}

async fn admin_decline(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: policy_admin::DeclineRequest = admin_json(&state, &headers, &body)?;
    state
        .decline(&request.card_id, &request.id, &request.message)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_vpn_set(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: policy_admin::SetVpnRequest = admin_json(&state, &headers, &body)?;
    let overlay_version = state.set_vpn(&request.card_id, &request.vpn).await?;
    Ok(axum::Json(policy_admin::VpnResponse { overlay_version }).into_response())
}

async fn admin_vpn_remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: policy_admin::RemoveVpnRequest = admin_json(&state, &headers, &body)?;
    let overlay_version = state.remove_vpn(&request.card_id, &request.name).await?;
    Ok(axum::Json(policy_admin::VpnResponse { overlay_version }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::fresh_instance;
    use tower::ServiceExt;

    /// Issue 13.12: the page's cookie never opens the admin API, and the API takes JSON only:
    /// a cross-site `fetch` (the browser adds the cookie; the body is `text/plain`, which needs
    /// no preflight) is refused. Page sessions are random, server-side, and end at logout.
    #[tokio::test]
    async fn the_admin_api_takes_the_bearer_token_and_json_only() {
        use http_body_util::BodyExt;

        let dir = tempfile::tempdir().unwrap();
        let (state, _db) = fresh_instance(dir.path()).await;
        let token = state.fleet.admin_token.clone();
        let app = router(state.clone());
        let send = |request: axum::http::Request<axum::body::Body>| {
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let cookies: Vec<String> = response
                    .headers()
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                    .collect();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, cookies, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let get = |path: &str, cookie: &str| {
            axum::http::Request::get(path)
                .header(header::COOKIE, cookie)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let post = |path: &str, cookie: &str, content_type: &str, body: String| {
            axum::http::Request::post(path)
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, content_type)
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let csrf_of = |body: &str| {
            let marker = "name=\"csrf\" value=\"";
            let at = body.find(marker).expect("a CSRF field") + marker.len();
            body[at..at + body[at..].find('"').unwrap()].to_owned()
        };
        let form = "application/x-www-form-urlencoded";

        // Log in on the page: the login form has its own CSRF token.
        let (_, cookies, page) = send(get("/admin", "")).await;
        let login_cookie = cookies[0].clone();
        let forged = send(post("/admin/login", "", form, format!("token={token}"))).await;
        assert_eq!(
            forged.0,
            StatusCode::FORBIDDEN,
            "a login form from elsewhere"
        );
        let (status, cookies, _) = send(post(
            "/admin/login",
            &login_cookie,
            form,
            format!("csrf={}&token={token}", csrf_of(&page)),
        ))
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let session = cookies
            .iter()
            .find(|c| c.starts_with("policyd_admin="))
            .unwrap()
            .clone();
        let id = session.split_once('=').unwrap().1;
        assert_eq!(id.len(), 64);
        assert_ne!(id, sha256_hex(format!("session:{token}").as_bytes()));

        // The attack: a page of another site posts with the browser's cookie, as text/plain.
        let body = r#"{"group":"laptops","count":1}"#.to_owned();
        let (status, _, _) = send(post(
            "/v1/admin/tokens",
            &session,
            "text/plain",
            body.clone(),
        ))
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the cookie opens no API call"
        );
        let (status, _, _) = send(post(
            "/v1/admin/tokens",
            &session,
            JSON_MEDIA_TYPE,
            body.clone(),
        ))
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "not even as JSON");
        let bearer = |content_type: &str| {
            let mut request = post("/v1/admin/tokens", "", content_type, body.clone());
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            request
        };
        for content_type in ["text/plain", form, "multipart/form-data; boundary=x"] {
            let (status, _, _) = send(bearer(content_type)).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        }
        let (status, _, answer) = send(bearer("application/json; charset=utf-8")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");

        // The page: its forms carry the session's token; logout ends the session.
        let (status, _, fleet) = send(get("/admin", &session)).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = csrf_of(&fleet);
        let session_form = |path: &str, body: String| post(path, &session, form, body);
        let (status, _, _) = send(session_form("/admin/revoke", "card=x".into())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(session_form("/admin/logout", format!("csrf={csrf}"))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, page) = send(get("/admin", &session)).await;
        assert!(page.contains("Admin token"), "logged out: {page}");
        let (status, _, _) =
            send(session_form("/admin/revoke", format!("csrf={csrf}&card=x"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    /// Issue 16: a card's access requests over its certificate: stored once however often
    /// they are sent, read back with their state, bounded per card, and every malformed,
    /// oversized or surplus one refused with a clear error and counted.
    #[tokio::test]
    async fn a_card_sends_access_requests_and_reads_their_state() {
        use http_body_util::BodyExt;
        use proto::policy::{
            AccessProtocol, AccessRequest, AccessRequestList, AccessState, Blocked,
            MAX_OPEN_REQUESTS_PER_CARD,
        };
        use rustls_pki_types::pem::PemObject;
        use std::sync::atomic::Ordering;

        let dir = tempfile::tempdir().unwrap();
        let (state, db) = fresh_instance(dir.path()).await;
        let token = state
            .new_tokens("laptops", 1, None)
            .await
            .unwrap()
            .remove(0);
        let (_, csr) = policy_client::new_key_and_csr().unwrap();
        let (issued, _) = db
            .enrol(&sha256_hex(token.as_bytes()), "card-1", unix_now(), |_| {
                state.fleet.issue_card_certificate(&csr, "card-1")
            })
            .await
            .unwrap()
            .unwrap();
        let certificate =
            rustls_pki_types::CertificateDer::from_pem_slice(issued.as_bytes()).unwrap();
        let app = router(state.clone());
        let send = |method: &str, body: Vec<u8>, with_certificate: bool| {
            let mut request = axum::http::Request::builder()
                .method(method)
                .uri(policy::ACCESS_REQUESTS_PATH)
                .header(header::CONTENT_TYPE, JSON_MEDIA_TYPE)
                .body(axum::body::Body::from(body))
                .unwrap();
            if with_certificate {
                request
                    .extensions_mut()
                    .insert(serve::http::ClientCertificate(certificate.clone()));
            }
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let request = |n: usize| AccessRequest {
            id: format!("{n:032x}"),
            blocked: Blocked {
                protocol: AccessProtocol::Http,
                host: "blocked.test".into(),
                port: 80,
                path: Some("/x".into()),
                rule: "rules.txt:2".into(),
                at: unix_now(),
            },
            reason: Some("the supplier's price list".into()),
        };
        let json = |n| serde_json::to_vec(&request(n)).unwrap();

        assert_eq!(
            send("POST", json(1), false).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(send("POST", json(1), true).await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            send("POST", json(1), true).await.0,
            StatusCode::NO_CONTENT,
            "a resend is harmless"
        );
        let (status, body) = send("GET", Vec::new(), true).await;
        assert_eq!(status, StatusCode::OK);
        let list: AccessRequestList = serde_json::from_str(&body).unwrap();
        assert_eq!(list.requests.len(), 1);
        assert_eq!(list.requests[0].state, AccessState::Open);
        assert_eq!(state.refused_requests.load(Ordering::Relaxed), 0);

        let mut bad = request(2);
        bad.blocked.host = "<script>".into();
        let (status, body) = send("POST", serde_json::to_vec(&bad).unwrap(), true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("the host must be"), "{body}");
        let (status, body) = send("POST", b"{\"id\":".to_vec(), true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let huge = vec![b' '; policy::MAX_JSON_BODY + 1];
        assert_eq!(
            send("POST", huge, true).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(state.refused_requests.load(Ordering::Relaxed), 3);

        for n in 2..=MAX_OPEN_REQUESTS_PER_CARD {
            assert_eq!(send("POST", json(n), true).await.0, StatusCode::NO_CONTENT);
        }
        let (status, body) = send("POST", json(99), true).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("20 requests open"), "{body}");
        assert_eq!(state.refused_requests.load(Ordering::Relaxed), 4);
    }

    /// Issue 16: an approval becomes the card's overlay, signed for `card:<id>`, sent to a
    /// poll that names `overlay_after` (and never to an old card's poll); it leaves the overlay
    /// by a new version when it runs out; a decline carries its message to the card.
    #[tokio::test]
    async fn an_approval_reaches_the_card_as_its_overlay_and_runs_out() {
        use http_body_util::BodyExt;
        use proto::policy::{AccessProtocol, AccessRequest, AccessState, Blocked, overlay_group};
        use rustls_pki_types::pem::PemObject;

        let dir = tempfile::tempdir().unwrap();
        let (state, db) = fresh_instance(dir.path()).await;
        let token = state
            .new_tokens("laptops", 1, None)
            .await
            .unwrap()
            .remove(0);
        let (_, csr) = policy_client::new_key_and_csr().unwrap();
        let (issued, _) = db
            .enrol(&sha256_hex(token.as_bytes()), "card-1", unix_now(), |_| {
                state.fleet.issue_card_certificate(&csr, "card-1")
            })
            .await
            .unwrap()
            .unwrap();
        let certificate =
            rustls_pki_types::CertificateDer::from_pem_slice(issued.as_bytes()).unwrap();
        let card = state
            .card(&Peer(Some(sha256_hex(&certificate))))
            .await
            .unwrap();
        let app = router(state.clone());
        let poll = |query: &str| {
            let mut request = axum::http::Request::get(format!("{}?{query}", policy::BUNDLE_PATH))
                .body(axum::body::Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(serve::http::ClientCertificate(certificate.clone()));
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let kind = response
                    .headers()
                    .get(policy::BUNDLE_KIND_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, kind, body)
            }
        };
        let request = |n: u32| AccessRequest {
            id: format!("{n:08x}{}", "0".repeat(24)),
            blocked: Blocked {
                protocol: AccessProtocol::Http,
                host: "blocked.test".into(),
                port: 80,
                path: Some("/x".into()),
                rule: "rules:2".into(),
                at: unix_now(),
            },
            reason: None,
        };
        for n in 1..=3 {
            state.receive_request(&card, &request(n)).await.unwrap();
        }

        // Refused rules: nothing is decided.
        for (rule, why) in [
            ("allow htp host x", "approved rule:1"),
            ("default allow", "not a `default`"),
            ("mine: allow http host x", "without a name"),
            ("allow http host a\nallow any", "one line"),
        ] {
            let error = state
                .approve("card-1", &request(1).id, Some(rule), Some(10))
                .await
                .unwrap_err();
            assert!(error.1.contains(why), "{rule}: {}", error.1);
        }
        assert_eq!(
            state.request_states(&card).await.unwrap().requests[0].state,
            AccessState::Open
        );

        let version = state
            .approve("card-1", &request(1).id, None, Some(10))
            .await
            .unwrap();
        assert_eq!(version, 1);
        // An old card (no overlay_after) is not sent the overlay.
        let (status, _, _) = poll("after=0").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, kind, body) = poll("after=0&overlay_after=0").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kind.as_deref(), Some("overlay"));
        let verified = bundle::verify(
            &body,
            &bundle::Trust {
                key: &state.fleet.policy_public,
                installed_version: 0,
                group: &overlay_group("card-1"),
                now: chrono::Utc::now(),
            },
        )
        .unwrap();
        assert_eq!(
            verified.bundle.rules.1,
            "overlay-00000001: allow http host blocked.test path /x\n"
        );
        let (status, _, _) = poll("after=0&overlay_after=1").await;
        assert_eq!(status, StatusCode::NO_CONTENT, "nothing newer");
        // A group bundle published meanwhile comes first, marked as such.
        state
            .publish(&PublishRequest {
                group: "laptops".into(),
                rules_name: "rules".into(),
                rules_text: "default deny\n".into(),
                lists: Vec::new(),
                expires_in_secs: 3600,
                trusted_cas: None,
            })
            .await
            .unwrap();
        let (_, kind, _) = poll("after=0&overlay_after=0").await;
        assert_eq!(kind.as_deref(), Some("group"));

        // A second approval without a limit, a decline with a message.
        assert_eq!(
            state
                .approve(
                    "card-1",
                    &request(2).id,
                    Some("allow tcp dst 192.0.2.7 port 5432"),
                    None
                )
                .await
                .unwrap(),
            2
        );
        state
            .decline("card-1", &request(3).id, "use the mirror")
            .await
            .unwrap();
        let states = state.request_states(&card).await.unwrap();
        let of = |n: u32| {
            states
                .requests
                .iter()
                .find(|s| s.id == request(n).id)
                .unwrap()
                .state
                .clone()
        };
        assert!(matches!(
            of(1),
            AccessState::Approved { until: Some(_), .. }
        ));
        assert_eq!(
            of(3),
            AccessState::Declined {
                message: "use the mirror".into()
            }
        );
        assert_eq!(
            state
                .decline("card-1", &request(3).id, "again")
                .await
                .unwrap_err()
                .0,
            StatusCode::NOT_FOUND,
            "decided once"
        );

        // Ten minutes on: the first approval runs out, a new overlay holds only the second.
        let later = unix_now() + 11 * 60;
        assert_eq!(
            state.expire_approvals_at(later).await.unwrap(),
            vec!["card-1".to_string()]
        );
        // (That an overlay published after the end stops the renewals is the database's
        // test: here the clock is only pretended forward.)
        let (_, kind, body) = poll("after=1&overlay_after=2").await;
        assert_eq!(kind.as_deref(), Some("overlay"));
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(text.contains("version: 3"), "{text}");
        assert!(!text.contains("blocked.test"), "{text}");
        assert!(text.contains("192.0.2.7"), "{text}");
    }

    /// Issue 16 on the fleet page: an open request is listed with what was blocked, the rule
    /// and the reason (escaped); the approve form (CSRF token, the rule prefilled) makes the
    /// overlay; the decline form's message reaches the card's list.
    #[tokio::test]
    async fn the_fleet_page_lists_requests_and_approves_or_declines_them() {
        use http_body_util::BodyExt;
        use proto::policy::{AccessProtocol, AccessRequest, AccessState, Blocked};

        let dir = tempfile::tempdir().unwrap();
        let (state, _db) = fresh_instance(dir.path()).await;
        let card = crate::service::Known {
            id: "card-1".into(),
            group: "laptops".into(),
        };
        let request = |n: u32, reason: &str| AccessRequest {
            id: format!("{n:032x}"),
            blocked: Blocked {
                protocol: AccessProtocol::Http,
                host: "blocked.test".into(),
                port: 80,
                path: Some(format!("/{n}")),
                rule: "rules:2".into(),
                at: unix_now(),
            },
            reason: Some(reason.into()),
        };
        state
            .receive_request(&card, &request(1, "<b>price list</b>"))
            .await
            .unwrap();
        state
            .receive_request(&card, &request(2, "x"))
            .await
            .unwrap();

        let app = router(state.clone());
        let form = "application/x-www-form-urlencoded";
        let send = |request: axum::http::Request<axum::body::Body>| {
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let cookies: Vec<String> = response
                    .headers()
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                    .collect();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, cookies, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let post = |path: &str, cookie: &str, body: String| {
            axum::http::Request::post(path)
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, form)
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let csrf_of = |body: &str| {
            let marker = "name=\"csrf\" value=\"";
            let at = body.find(marker).expect("a CSRF field") + marker.len();
            body[at..at + body[at..].find('"').unwrap()].to_owned()
        };
        let (_, cookies, page) = send(
            axum::http::Request::get("/admin")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
        let token = state.fleet.admin_token.clone();
        let (_, cookies, _) = send(post(
            "/admin/login",
            &cookies[0],
            format!("csrf={}&token={token}", csrf_of(&page)),
        ))
        .await;
        let session = cookies
            .iter()
            .find(|c| c.starts_with("policyd_admin="))
            .unwrap()
            .clone();
        let (status, _, page) = send(
            axum::http::Request::get("/admin")
                .header(header::COOKIE, &session)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("asks for <code>http blocked.test:80/1</code>"),
            "{page}"
        );
        assert!(page.contains("&#60;b&#62;price list"), "{page}");
        assert!(
            page.contains(r#"value="allow http host blocked.test path /1""#),
            "{page}"
        );
        let csrf = csrf_of(&page);
        let id = |n: u32| format!("{n:032x}");

        // Without the session's token: refused.
        let (status, _, _) = send(post(
            "/admin/requests/approve",
            &session,
            format!("card=card-1&id={}&rule=allow+any&minutes=10", id(1)),
        ))
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, _, page) = send(post(
            "/admin/requests/approve",
            &session,
            format!(
                "csrf={csrf}&card=card-1&id={}&rule=allow+http+host+blocked.test+path+%2F1&minutes=10",
                id(1)
            ),
        ))
        .await;
        assert!(page.contains("gets overlay version 1"), "{page}");
        assert!(
            !page.contains("blocked.test:80/1"),
            "no longer open: {page}"
        );
        let (_, _, page) = send(post(
            "/admin/requests/decline",
            &session,
            format!(
                "csrf={csrf}&card=card-1&id={}&message=use+the+mirror",
                id(2)
            ),
        ))
        .await;
        assert!(
            page.contains("Declined the request of card card-1"),
            "{page}"
        );
        let states = state.request_states(&card).await.unwrap().requests;
        assert!(states.iter().any(|s| s.state
            == AccessState::Declined {
                message: "use the mirror".into()
            }));
        assert!(
            states
                .iter()
                .any(|s| matches!(s.state, AccessState::Approved { until: Some(_), .. }))
        );
    }

    /// Issue 16 on the admin API (`policyd requests|approve|decline`): the bearer token and
    /// JSON only, like every admin call; approve without a rule takes the one that allows just
    /// what was blocked.
    #[tokio::test]
    async fn the_admin_api_lists_approves_and_declines_requests() {
        use http_body_util::BodyExt;
        use proto::policy::{AccessProtocol, AccessRequest, AccessState, Blocked};

        let dir = tempfile::tempdir().unwrap();
        let (state, _db) = fresh_instance(dir.path()).await;
        let card = crate::service::Known {
            id: "card-1".into(),
            group: "laptops".into(),
        };
        let request = |n: u32| AccessRequest {
            id: format!("{n:032x}"),
            blocked: Blocked {
                protocol: AccessProtocol::Https,
                host: "blocked.test".into(),
                port: 443,
                path: None,
                rule: "rules:2".into(),
                at: unix_now(),
            },
            reason: None,
        };
        for n in 1..=2 {
            state.receive_request(&card, &request(n)).await.unwrap();
        }
        let app = router(state.clone());
        let token = state.fleet.admin_token.clone();
        let call = |method: &str, path: &str, bearer: bool, body: String| {
            let mut request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, JSON_MEDIA_TYPE);
            if bearer {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request.body(axum::body::Body::from(body)).unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, _) = call(
            "GET",
            policy_admin::ACCESS_REQUESTS_PATH,
            false,
            String::new(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call(
            "GET",
            policy_admin::ACCESS_REQUESTS_PATH,
            true,
            String::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let open: policy_admin::OpenRequests = serde_json::from_str(&body).unwrap();
        assert_eq!(open.requests.len(), 2);
        assert_eq!(open.requests[0].card_id, "card-1");

        let approve = serde_json::to_string(&policy_admin::ApproveRequest {
            card_id: "card-1".into(),
            id: request(1).id,
            rule: None,
            minutes: None,
        })
        .unwrap();
        let (status, _) = call("POST", policy_admin::APPROVE_PATH, false, approve.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call("POST", policy_admin::APPROVE_PATH, true, approve).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, r#"{"overlay_version":1}"#);
        let decline = serde_json::to_string(&policy_admin::DeclineRequest {
            card_id: "card-1".into(),
            id: request(2).id,
            message: "no".into(),
        })
        .unwrap();
        let (status, body) = call("POST", policy_admin::DECLINE_PATH, true, decline).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let states = state.request_states(&card).await.unwrap().requests;
        assert!(states.iter().any(|s| s.state
            == AccessState::Approved {
                rule: "allow https host blocked.test".into(),
                until: None
            }));
        assert!(states.iter().any(|s| s.state
            == AccessState::Declined {
                message: "no".into()
            }));
        let (_, body) = call(
            "GET",
            policy_admin::ACCESS_REQUESTS_PATH,
            true,
            String::new(),
        )
        .await;
        assert!(body.starts_with(r#"{"requests":[]"#), "{body}");
    }
}
