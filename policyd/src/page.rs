//! The admin page: `/admin` (the fleet view), `/admin/login` (admin token → cookie),
//! `/admin/revoke`. The cookie is `HttpOnly; Secure; SameSite=Strict` and holds a hash of the
//! admin token; the revoke form also carries a CSRF token derived from it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use web::policy::{AdminLoginPage, FleetCardView, FleetPage, GroupView};

use crate::server::AppState;

const COOKIE: &str = "policyd_admin";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(fleet))
        .route("/admin/login", post(login))
        .route("/admin/revoke", post(revoke))
        .route("/static/style.css", get(|| css(web::STYLE_CSS)))
        .route("/static/card.css", get(|| css(web::card::CARD_CSS)))
}

async fn css(text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], text).into_response()
}

/// The admin cookie's value, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
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

fn is_logged_in(state: &AppState, headers: &HeaderMap) -> bool {
    session_cookie(headers).is_some_and(|c| c == state.session_value())
}

async fn fleet(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !is_logged_in(&state, &headers) {
        return protect(
            AdminLoginPage {
                notice: None,
                error: None,
            }
            .into_response(),
        );
    }
    protect(fleet_page(&state, None, None).await)
}

async fn fleet_page(state: &AppState, notice: Option<String>, error: Option<String>) -> Response {
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
        csrf: state.csrf_value(),
        notice,
        error,
        groups,
        cards,
    }
    .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<Arc<AppState>>, Form(form): Form<LoginForm>) -> Response {
    if !state.admin_token_matches(&form.token) {
        tracing::warn!("admin page: wrong admin token");
        return protect(
            (
                StatusCode::UNAUTHORIZED,
                AdminLoginPage {
                    notice: None,
                    error: Some("That is not the admin token.".into()),
                },
            )
                .into_response(),
        );
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/",
        state.session_value()
    );
    let mut response = Redirect::to("/admin").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    protect(response)
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
    card: String,
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    if !is_logged_in(&state, &headers) || form.csrf != state.csrf_value() {
        return protect((StatusCode::FORBIDDEN, "not logged in, or a stale form").into_response());
    }
    let (notice, error) = match state.revoke(&form.card).await {
        Ok(()) => (Some(format!("Card {} is revoked.", form.card)), None),
        Err(e) => (None, Some(e.1)),
    };
    protect(fleet_page(&state, notice, error).await)
}
