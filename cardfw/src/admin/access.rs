//! Access requests on the card page (issue 16): the block page's "ask for access" form posts
//! here, and `GET /access-requests` shows what became of each request, and offers the same
//! form for what the rules recently denied the asking computer (a blocked HTTPS, DNS or TCP
//! connection has no block page). Neither needs a login:
//! the user asking is not the card's owner. What may be asked is only what the card blocked,
//! proved by the MAC the block page put in the form ([`crate::firewall::asking`]); the card
//! page adds nothing but the user's reason. Every refused form is counted
//! (`access_requests_refused`) and answered with a page that says why.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use proto::policy::{AccessProtocol, AccessState, Blocked, MAX_REASON_CHARS};
use serde::Deserialize;
use web::card::{AccessRequestView, AccessRequestsPage, BlockedView};

use super::{AdminState, ClientAddr, blocking};
use crate::firewall::Counters;
use crate::firewall::asking::blocked_from_record;
use crate::store::requests::{AskError, Asked, Queued};

/// The block page's form, as posted.
#[derive(Debug, Deserialize)]
pub(super) struct AskFields {
    protocol: String,
    host: String,
    port: String,
    path: Option<String>,
    rule: String,
    at: String,
    mac: String,
    reason: Option<String>,
}

impl AskFields {
    /// What the form says was blocked; `None` when a field is not even of its type.
    fn blocked(&self) -> Option<Blocked> {
        Some(Blocked {
            protocol: AccessProtocol::parse(&self.protocol)?,
            host: self.host.clone(),
            port: self.port.parse().ok()?,
            path: self.path.clone(),
            rule: self.rule.clone(),
            at: self.at.parse().ok()?,
        })
    }
}

/// `POST /access-requests`.
pub(super) async fn ask(
    State(state): State<Arc<AdminState>>,
    form: Result<Form<AskFields>, FormRejection>,
) -> Response {
    let refuse = |status: StatusCode, why: String| {
        Counters::bump(&state.firewall.events.counters.access_requests_refused);
        tracing::warn!(%status, "access request refused: {why}");
        (status, page(&state, None, Some(why))).into_response()
    };
    let Ok(Form(fields)) = form else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This is not the block page's form: ask from the block page.".into(),
        );
    };
    let Some(blocked) = fields.blocked() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This is not the block page's form: ask from the block page.".into(),
        );
    };
    let now = serve::unix_now() as i64;
    if let Err(error) = state.firewall.asking.check(&blocked, &fields.mac, now) {
        return refuse(StatusCode::FORBIDDEN, format!("Not sent: {error}."));
    }
    if fields
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("Not sent: the reason is longer than {MAX_REASON_CHARS} characters."),
        );
    }
    let reason = fields.reason;
    let asked = blocking(&state, move |state| {
        state.store().ask_access(blocked, reason)
    })
    .await;
    match asked {
        Ok(Asked::New(id)) => {
            tracing::info!(%id, "access request queued");
            state.firewall.asking.queued.notify_one();
            page(
                &state,
                Some("Your request is on its way to the administrator of the card's rules.".into()),
                None,
            )
            .into_response()
        }
        Ok(Asked::Already(_)) => page(
            &state,
            Some("You asked for this already: the request is waiting for an answer.".into()),
            None,
        )
        .into_response(),
        Err(error @ AskError::Full) => refuse(StatusCode::TOO_MANY_REQUESTS, error.to_string()),
        Err(error @ (AskError::NotManaged | AskError::Invalid(_))) => {
            refuse(StatusCode::BAD_REQUEST, error.to_string())
        }
        Err(AskError::Store(error)) => {
            tracing::error!(%error, "cannot queue an access request");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                page(
                    &state,
                    None,
                    Some(format!("The card cannot keep the request: {error}")),
                ),
            )
                .into_response()
        }
    }
}

/// Recent denials offered on the page at most.
const MAX_RECENT: usize = 10;

/// `GET /access-requests`: the requests, and the asking computer's own recent denials.
pub(super) async fn list(State(state): State<Arc<AdminState>>, client: ClientAddr) -> Response {
    let mut page = page(&state, None, None);
    if page.managed {
        page.recent = recent_denials(&state, client);
    }
    page.into_response()
}

/// What the rules recently denied `client` (only its own: the page needs no login, and
/// another computer's traffic is not its business), newest first, each once.
fn recent_denials(state: &AdminState, client: ClientAddr) -> Vec<BlockedView> {
    let mut seen = Vec::new();
    let mut views = Vec::new();
    for record in state.firewall.events.recent().iter().rev() {
        if record.client != client.0 || views.len() == MAX_RECENT {
            continue;
        }
        let Some(blocked) = blocked_from_record(record) else {
            continue;
        };
        let key = (
            blocked.protocol,
            blocked.host.clone(),
            blocked.port,
            blocked.path.clone(),
        );
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let what = blocked.describe();
        let rule = blocked.rule.clone();
        let at = web::format::date_time(u64::try_from(blocked.at).unwrap_or(0));
        if let Some(form) = state.firewall.ask_form(blocked) {
            views.push(BlockedView {
                what,
                rule,
                at,
                form,
            });
        }
    }
    views
}

fn page(state: &AdminState, notice: Option<String>, error: Option<String>) -> AccessRequestsPage {
    let (requests, error) = match state.store().access_requests() {
        Ok(requests) => (requests, error),
        Err(e) => (
            Vec::new(),
            Some(format!("The requests cannot be read: {e}")),
        ),
    };
    AccessRequestsPage {
        notice,
        error,
        requests: requests.iter().rev().map(view).collect(),
        managed: state.store().is_managed(),
        recent: Vec::new(),
    }
}

fn view(queued: &Queued) -> AccessRequestView {
    let blocked = &queued.request.blocked;
    let (state, state_text) = match &queued.state {
        AccessState::Open if !queued.sent => ("sending", "waiting to be sent".to_string()),
        AccessState::Open => ("waiting", "waiting for the administrator".to_string()),
        AccessState::Approved { until: None, .. } => ("approved", "approved".to_string()),
        AccessState::Approved {
            until: Some(until), ..
        } => (
            "approved",
            format!(
                "approved until {}",
                web::format::date_time(u64::try_from(*until).unwrap_or(0))
            ),
        ),
        AccessState::Declined { message } if message.is_empty() => {
            ("declined", "declined".to_string())
        }
        AccessState::Declined { message } => ("declined", format!("declined: {message}")),
    };
    AccessRequestView {
        what: blocked.describe(),
        rule: blocked.rule.clone(),
        at: web::format::date_time(u64::try_from(blocked.at).unwrap_or(0)),
        reason: queued.request.reason.clone(),
        state,
        state_text,
    }
}
