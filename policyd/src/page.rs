//! The admin page: `/admin` (the fleet view), `/admin/login` (admin token → session),
//! `/admin/logout`, `/admin/revoke`.
//!
//! A session is a random id in a cookie (`HttpOnly; Secure; SameSite=Strict`), kept only in
//! the server's memory ([`crate::sessions`]) with its own random CSRF token; it ends at
//! logout, after `SESSION_IDLE` without a request, or `SESSION_LIFETIME` after login (and
//! when the server restarts). The cookie opens only these pages: the `/v1/admin` API takes
//! the bearer token alone. Every form carries a CSRF token: the login form a random one that
//! must match its own short-lived cookie (so no other site can log a browser in), the others
//! the session's.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use web::policy::{AdminLoginPage, FleetCardView, FleetPage, GroupView};

use crate::service::AppState;
use crate::sessions::{SESSION_LIFETIME, random_token};

const COOKIE: &str = "policyd_admin";
/// The login form's own cookie: its CSRF token is this value.
const LOGIN_COOKIE: &str = "policyd_login";

/// Constant-time comparison of a sent token with the expected one.
fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(fleet))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/revoke", post(revoke))
        .route("/static/style.css", get(|| css(web::STYLE_CSS)))
        .route("/static/card.css", get(|| css(web::card::CARD_CSS)))
}

async fn css(text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], text).into_response()
}

/// The value of cookie `name`, if the request has one.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: Duration) {
    let cookie = format!(
        "{name}={value}; HttpOnly; Secure; SameSite=Strict; Path=/admin; Max-Age={}",
        max_age.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(web::card::CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The session of the request (id, CSRF token), if it has a live one.
fn session(state: &AppState, headers: &HeaderMap) -> Option<(String, String)> {
    let id = cookie(headers, COOKIE)?;
    let csrf = state.page_sessions.touch(&id)?;
    Some((id, csrf))
}

/// The login form with a fresh login cookie, whose value is the form's CSRF token.
fn login_page(status: StatusCode, error: Option<String>) -> Response {
    let token = random_token();
    let mut response = (
        status,
        AdminLoginPage {
            csrf: token.clone(),
            notice: None,
            error,
        },
    )
        .into_response();
    set_cookie(
        &mut response,
        LOGIN_COOKIE,
        &token,
        Duration::from_secs(600),
    );
    protect(response)
}

async fn fleet(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match session(&state, &headers) {
        Some((_, csrf)) => protect(fleet_page(&state, &csrf, None, None).await),
        None => login_page(StatusCode::OK, None),
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
    FleetPage {
        csrf: csrf.to_owned(),
        notice,
        error,
        groups,
        cards,
    }
    .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    token: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !tokens_match(&form.csrf, &expected) {
        return protect(
            (
                StatusCode::FORBIDDEN,
                "a stale or forged login form: reload the page",
            )
                .into_response(),
        );
    }
    if !state.admin_token_matches(&form.token) {
        tracing::warn!("admin page: wrong admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token.".into()),
        );
    }
    let id = state.page_sessions.create();
    let mut response = Redirect::to("/admin").into_response();
    set_cookie(&mut response, COOKIE, &id, SESSION_LIFETIME);
    set_cookie(&mut response, LOGIN_COOKIE, "", Duration::ZERO);
    protect(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    match session(&state, &headers) {
        Some((id, csrf)) if tokens_match(&form.csrf, &csrf) => {
            state.page_sessions.remove(&id);
            let mut response = Redirect::to("/admin").into_response();
            set_cookie(&mut response, COOKIE, "", Duration::ZERO);
            protect(response)
        }
        _ => protect((StatusCode::FORBIDDEN, "not logged in, or a stale form").into_response()),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    card: String,
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    let Some((_, csrf)) =
        session(&state, &headers).filter(|(_, csrf)| tokens_match(&form.csrf, csrf))
    else {
        return protect((StatusCode::FORBIDDEN, "not logged in, or a stale form").into_response());
    };
    let (notice, error) = match state.revoke(&form.card).await {
        Ok(()) => (Some(format!("Card {} is revoked.", form.card)), None),
        Err(e) => (None, Some(e.1)),
    };
    protect(fleet_page(&state, &csrf, notice, error).await)
}
