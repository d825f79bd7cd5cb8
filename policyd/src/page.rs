//! The admin page: `/admin` (the fleet view), `/admin/login` (admin token → session),
//! `/admin/logout`, `/admin/revoke`, `/admin/requests/approve` and `/admin/requests/decline`
//! (the open access requests of the fleet's users, issue 16).
//!
//! Sessions are the serving layer's ([`serve::session`]): a random id in a cookie
//! (`HttpOnly; Secure; SameSite=Strict; Path=/admin`), kept only in the server's memory
//! ([`crate::sessions`]); it ends at logout, after `SESSION_IDLE` without a request, or
//! `SESSION_LIFETIME` after login (and when the server restarts). The cookie opens only these pages: the `/v1/admin`
//! API takes the bearer token alone. Every form carries a CSRF token, checked by the
//! extractors before a handler runs: the login form one bound to its own short-lived cookie
//! (so no other site can log a browser in), the others the session's.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serve::http::{SecurityHeaders, static_file};
use serve::session::{LoginForm, Page, Refusal, Session, SessionForm, Sessions};
use web::policy::{
    AccessRequestView, AdminLoginPage, FleetCardView, FleetPage, FleetVpnView, GroupView,
};

use crate::service::AppState;

impl Page for AppState {
    fn sessions(&self) -> &Sessions {
        &self.page_sessions
    }

    fn refuse(&self, why: Refusal) -> Response {
        let words = match why {
            Refusal::NoSession | Refusal::WrongToken => "not logged in, or a stale form",
            Refusal::LoginFormMissing | Refusal::LoginFormStale => {
                "a stale or forged login form: reload the page"
            }
        };
        (StatusCode::FORBIDDEN, words).into_response()
    }
}

/// Every answer of the page: never cached, never framed, only its own stylesheet.
const HEADERS: SecurityHeaders = SecurityHeaders {
    content_security_policy: web::card::CONTENT_SECURITY_POLICY,
    https: true,
};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    HEADERS.on(Router::new()
        .route("/admin", get(fleet))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/revoke", post(revoke))
        .route("/admin/requests/approve", post(approve))
        .route("/admin/requests/decline", post(decline))
        .route("/static/style.css", get(|| css(web::STYLE_CSS)))
        .route("/static/card.css", get(|| css(web::card::CARD_CSS))))
}

async fn css(text: &'static str) -> Response {
    static_file("text/css; charset=utf-8", text)
}

/// The login form with a fresh login cookie.
fn login_page(state: &AppState, status: StatusCode, error: Option<String>) -> Response {
    let (csrf, cookie) = state.page_sessions.login_form();
    (
        status,
        [(header::SET_COOKIE, cookie)],
        AdminLoginPage {
            csrf,
            notice: None,
            error,
        },
    )
        .into_response()
}

async fn fleet(State(state): State<Arc<AppState>>, session: Option<Session>) -> Response {
    match session {
        Some(session) => fleet_page(&state, session.csrf(), None, None).await,
        None => login_page(&state, StatusCode::OK, None),
    }
}

async fn fleet_page(
    state: &AppState,
    csrf: &str,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let cards = match state.db().cards().await {
        Ok(cards) => cards,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let versions = state.latest_versions();
    let newest = |group: &str| {
        versions
            .iter()
            .find(|(g, _)| g == group)
            .map_or(0, |(_, v)| *v)
    };
    let groups = versions
        .iter()
        .map(|(name, version)| {
            let members = cards
                .iter()
                .filter(|c| &c.group == name && c.revoked_at.is_none());
            GroupView {
                name: name.clone(),
                version: *version,
                cards: members.clone().count(),
                current: members.filter(|c| c.running_version >= *version).count(),
            }
        })
        .collect();
    let cards = cards
        .into_iter()
        .map(|card| FleetCardView {
            behind: card.running_version < newest(&card.group),
            running_version: card.running_version,
            last_seen: card
                .last_seen
                .map_or("never".into(), |t| web::format::date_time(t.max(0) as u64)),
            outcome: card.last_outcome.unwrap_or_default(),
            error: card.last_error.unwrap_or_default(),
            revoked: card.revoked_at.is_some(),
            group: card.group,
            id: card.id,
        })
        .collect();
    let requests = match state.db().open_requests(MAX_SHOWN_REQUESTS).await {
        Ok(requests) => requests,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let requests = requests
        .into_iter()
        .map(|stored| {
            let request = stored.request;
            let blocked = &request.blocked;
            AccessRequestView {
                what: blocked.describe(),
                rule: blocked.rule.clone(),
                at: web::format::date_time(blocked.at.max(0) as u64),
                suggested_rule: blocked.suggested_rule(),
                reason: request.reason,
                card: stored.card_id,
                id: request.id,
            }
        })
        .collect();
    let vpns = match state.db().all_vpns().await {
        Ok(vpns) => vpns,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let vpns = vpns
        .into_iter()
        .map(|pushed| FleetVpnView {
            card: pushed.card_id,
            endpoint: pushed.vpn.endpoint.to_string(),
            address: pushed.vpn.address.to_string(),
            networks: pushed.vpn.networks.join(", "),
            name: pushed.vpn.name,
            card_public_key: pushed.card_public_key,
        })
        .collect();
    FleetPage {
        vpns,
        csrf: csrf.to_owned(),
        notice,
        error,
        groups,
        cards,
        requests,
        refused_requests: state
            .refused_requests
            .load(std::sync::atomic::Ordering::Relaxed),
    }
    .into_response()
}

/// Open requests shown at most (the oldest first); the per-server limit bounds them anyway.
const MAX_SHOWN_REQUESTS: usize = 500;

#[derive(Deserialize)]
struct TokenForm {
    token: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    LoginForm(form): LoginForm<TokenForm>,
) -> Response {
    if !state.admin_token_matches(&form.token) {
        tracing::warn!("admin page: wrong admin token");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token.".into()),
        );
    }
    let mut response = Redirect::to("/admin").into_response();
    for cookie in state.page_sessions.create() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A form with no field but its CSRF token (which [`SessionForm`] reads).
#[derive(Deserialize)]
struct NoFields {}

async fn logout(
    State(state): State<Arc<AppState>>,
    SessionForm { session, .. }: SessionForm<NoFields>,
) -> Response {
    let cookie = state.page_sessions.end(&session);
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

#[derive(Deserialize)]
struct RevokeForm {
    card: String,
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    SessionForm { session, form }: SessionForm<RevokeForm>,
) -> Response {
    let (notice, error) = match state.revoke(&form.card).await {
        Ok(()) => (Some(format!("Card {} is revoked.", form.card)), None),
        Err(e) => (None, Some(e.1)),
    };
    fleet_page(&state, session.csrf(), notice, error).await
}

#[derive(Deserialize)]
struct ApproveForm {
    card: String,
    id: String,
    rule: String,
    /// Empty: no time limit.
    minutes: String,
}

async fn approve(
    State(state): State<Arc<AppState>>,
    SessionForm { session, form }: SessionForm<ApproveForm>,
) -> Response {
    let minutes = match form.minutes.trim() {
        "" => Ok(None),
        text => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| "the minutes are a whole number, or empty for no limit".to_string()),
    };
    let outcome = match minutes {
        Ok(minutes) => state
            .approve(&form.card, &form.id, Some(&form.rule), minutes)
            .await
            .map_err(|e| e.1),
        Err(e) => Err(e),
    };
    let (notice, error) = match outcome {
        Ok(version) => (
            Some(format!(
                "Approved: card {} gets overlay version {version}.",
                form.card
            )),
            None,
        ),
        Err(e) => (None, Some(format!("Not approved: {e}"))),
    };
    fleet_page(&state, session.csrf(), notice, error).await
}

#[derive(Deserialize)]
struct DeclineForm {
    card: String,
    id: String,
    message: String,
}

async fn decline(
    State(state): State<Arc<AppState>>,
    SessionForm { session, form }: SessionForm<DeclineForm>,
) -> Response {
    let (notice, error) = match state.decline(&form.card, &form.id, &form.message).await {
        Ok(()) => (
            Some(format!("Declined the request of card {}.", form.card)),
            None,
        ),
        Err(e) => (None, Some(format!("Not declined: {}", e.1))),
    };
    fleet_page(&state, session.csrf(), notice, error).await
}
