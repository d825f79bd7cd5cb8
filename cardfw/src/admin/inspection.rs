//! TLS inspection on the card page, for the logged-in owner: the inspection CA's fingerprint
//! and its re-key, the CAs the owner trusts for inspected sites (list, upload, remove), and the
//! user's client certificate (upload, unlock, lock, remove). Every change carries the PIN like
//! the rest of the page (locking needs none: it only takes the key out of use), and takes
//! effect at once in the running [`Inspection`]: the next handshake uses the new CA, trust or
//! lock state.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serve::session::{Session, SessionForm, SessionUpload};
use web::card::{ClientCertView, InspectionPage, TrustedCaView};

use super::{AdminState, ClientAddr, PinForm, Refusal, Secret, session_ended, with_pin};
use crate::inspect::client_cert::{self, ClientCertSummary};
use crate::inspect::{
    IdentityState, Inspection, InspectionError, OwnerCas, StoredIdentity, owner_cas,
};
use crate::store::AdminSession;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UploadForm {
    pem: String,
    pin: Secret,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RemoveForm {
    fingerprint: String,
    pin: Secret,
}

/// What one rendering says beyond the current state.
#[derive(Default)]
struct View {
    notice: Option<String>,
    error: Option<String>,
    upload_text: String,
}

/// `GET /inspection`; without a session, back to the login.
pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    session: Option<Session>,
) -> Response {
    match session {
        Some(session) => render(&state, &session, View::default()),
        None => Redirect::to("/").into_response(),
    }
}

/// `POST /inspection/rekey`.
pub(super) async fn rekey(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<PinForm>,
) -> Response {
    let pin = form.pin.0.clone();
    with_pin_on(
        &state,
        &session,
        client,
        pin,
        String::new(),
        |inspection, admin| {
            let ca = inspection.rekey(admin)?;
            tracing::info!(fingerprint = %ca.fingerprint(), "admin page: inspection CA re-keyed");
            Ok(
                "The inspection CA is re-keyed: install the new certificate in every browser that \
            inspects through the card, and remove the old one."
                    .to_owned(),
            )
        },
    )
    .await
}

/// `POST /inspection/cas`: the upload is checked before the PIN is, so a bad file costs no try.
pub(super) async fn add_cas(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<UploadForm>,
) -> Response {
    let added = match OwnerCas::parse_upload(&form.pem) {
        Ok(added) => added,
        Err(error) => {
            let view = View {
                error: Some(format!("Nothing was changed: {error}.")),
                upload_text: keep_upload(&form.pem),
                ..View::default()
            };
            return render(&state, &session, view);
        }
    };
    let pin = form.pin.0.clone();
    let kept = keep_upload(&form.pem);
    with_pin_on(&state, &session, client, pin, kept, |inspection, admin| {
        let count = inspection.add_owner_cas(admin, added)?;
        tracing::info!(count, "admin page: trusted CA added");
        Ok(format!("Trusted from now on ({count} added CAs)."))
    })
    .await
}

/// `POST /inspection/cas/remove`.
pub(super) async fn remove_ca(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<RemoveForm>,
) -> Response {
    let fingerprint = form.fingerprint.trim().to_owned();
    let pin = form.pin.0.clone();
    with_pin_on(
        &state,
        &session,
        client,
        pin,
        String::new(),
        move |inspection, admin| {
            let count = inspection.remove_owner_ca(admin, &fingerprint)?;
            tracing::info!(count, "admin page: trusted CA removed");
            Ok(format!("No longer trusted ({count} added CAs left)."))
        },
    )
    .await
}

/// `POST /inspection/client-cert` (multipart: `file`, `password`, `pin`): the file is checked
/// (and a PKCS#12 opened with its password) before the PIN is, so a bad file costs no try.
pub(super) async fn upload_client_cert(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    upload: SessionUpload,
) -> Response {
    let session = &upload.session;
    let file = StoredIdentity::from_upload(upload.field("file"), &upload.text("password"));
    let identity = match file {
        Ok(identity) => identity,
        Err(error) => {
            let view = error_view(format!("Nothing was changed: {error}."));
            return render(&state, session, view);
        }
    };
    let pin = upload.text("pin").to_string();
    with_pin_on(&state, session, client, pin, String::new(), move |inspection, admin| {
        inspection.client_identity.replace(admin, &identity)?;
        let subject = &identity.summary().subject;
        tracing::info!(%subject, "admin page: client certificate stored");
        Ok(format!(
            "The client certificate of {subject} is stored on the card, locked: unlock it to use it."
        ))
    })
    .await
}

/// `POST /inspection/client-cert/unlock`.
pub(super) async fn unlock_client_cert(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<PinForm>,
) -> Response {
    let pin = form.pin.0.clone();
    with_pin_on(
        &state,
        &session,
        client,
        pin,
        String::new(),
        |inspection, admin| {
            inspection.client_identity.unlock(admin)?;
            tracing::info!("admin page: client certificate unlocked");
            Ok(UNLOCKED.to_owned())
        },
    )
    .await
}

/// `POST /inspection/client-cert/lock`: no PIN, locking only takes the key out of use.
pub(super) async fn lock_client_cert(
    State(state): State<Arc<AdminState>>,
    SessionForm { session, .. }: SessionForm<NoFields>,
) -> Response {
    let Some(inspection) = inspection(&state) else {
        return render(&state, &session, error_view(NOT_INSPECTING.into()));
    };
    let notice = if inspection.client_identity.lock() {
        tracing::info!("admin page: client certificate locked");
        "Locked: the card presents your certificate to no site until you unlock it again."
    } else {
        "The client certificate was already locked."
    };
    render(&state, &session, notice_view(notice.to_owned()))
}

/// `POST /inspection/client-cert/remove`.
pub(super) async fn remove_client_cert(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<PinForm>,
) -> Response {
    let pin = form.pin.0.clone();
    with_pin_on(
        &state,
        &session,
        client,
        pin,
        String::new(),
        |inspection, admin| {
            inspection.client_identity.remove(admin)?;
            tracing::info!("admin page: client certificate removed");
            Ok("The client certificate and its key are removed from the card.".to_owned())
        },
    )
    .await
}

/// Every change on this page: `change` runs on the running inspection once the PIN is right
/// (off the async threads, like every store write), and the page shows the notice it returns
/// or why nothing changed (with `upload_text` kept in the form).
async fn with_pin_on(
    state: &Arc<AdminState>,
    session: &Session,
    client: ClientAddr,
    pin: String,
    upload_text: String,
    change: impl FnOnce(&Inspection, &AdminSession<'_>) -> Result<String, InspectionError>
    + Send
    + 'static,
) -> Response {
    let Some(inspection) = inspection(state) else {
        return render(state, session, error_view(NOT_INSPECTING.into()));
    };
    let result = with_pin(state, client, pin, move |admin| change(&inspection, admin)).await;
    match result {
        Ok(notice) => render(state, session, notice_view(notice)),
        Err(error) => failed(state, session, error, upload_text),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct NoFields {}

const UNLOCKED: &str =
    "Unlocked: the card presents your certificate to the sites a `client-cert` rule names.";

const NOT_INSPECTING: &str = "This card does not inspect TLS: nothing was changed.";

/// The running inspection, shared with the blocking store work.
fn inspection(state: &AdminState) -> Option<Arc<Inspection>> {
    state.firewall.inspection.get().cloned()
}

/// An upload too large to be one is not echoed back into the page.
fn keep_upload(text: &str) -> String {
    if text.len() <= owner_cas::MAX_UPLOAD_BYTES {
        text.to_owned()
    } else {
        String::new()
    }
}

fn failed(state: &AdminState, session: &Session, error: Refusal, upload_text: String) -> Response {
    if let Some(response) = session_ended(state, session, &error) {
        return response;
    }
    let view = View {
        error: Some(format!("Nothing was changed: {error}.")),
        upload_text,
        ..View::default()
    };
    render(state, session, view)
}

fn notice_view(notice: String) -> View {
    View {
        notice: Some(notice),
        ..View::default()
    }
}

fn error_view(error: String) -> View {
    View {
        error: Some(error),
        ..View::default()
    }
}

fn render(state: &AdminState, session: &Session, view: View) -> Response {
    let inspection = state.firewall.inspection.get();
    let owner_cas = inspection.map(|i| i.owner_cas()).unwrap_or_default();
    let client_cert = inspection.map(|i| i.client_identity.state());
    let client_cert_idle = inspection.map_or(Duration::ZERO, |i| i.client_identity.idle());
    InspectionPage {
        csrf: session.csrf().to_owned(),
        client_cert: client_cert.as_ref().and_then(client_cert_view),
        client_cert_unlocked: matches!(client_cert, Some(IdentityState::Unlocked { .. })),
        client_cert_idle_minutes: client_cert_idle.as_secs().div_ceil(60),
        client_cert_idle_left_minutes: match client_cert {
            Some(IdentityState::Unlocked { idle_left, .. }) => idle_left.as_secs().div_ceil(60),
            _ => 0,
        },
        max_client_cert_kib: client_cert::MAX_UPLOAD_BYTES / 1024,
        notice: view.notice,
        error: view.error,
        ca_fingerprint: inspection.map(|i| i.ca().fingerprint()),
        owner_cas: owner_cas
            .iter()
            .map(|ca| TrustedCaView {
                subject: ca.subject.clone(),
                fingerprint: ca.fingerprint.clone(),
                expires: web::format::date_time(ca.not_after),
            })
            .collect(),
        file_ca_count: inspection.map_or(0, |i| i.file_ca_count()),
        managed_ca_count: inspection.map_or(0, |i| i.managed_cas().len()),
        max_owner_cas: owner_cas::MAX_COUNT,
        max_upload_kib: owner_cas::MAX_UPLOAD_BYTES / 1024,
        upload_text: view.upload_text,
    }
    .into_response()
}

fn client_cert_view(state: &IdentityState) -> Option<ClientCertView> {
    let summary: &ClientCertSummary = match state {
        IdentityState::Missing => return None,
        IdentityState::Locked(summary) | IdentityState::Unlocked { summary, .. } => summary,
    };
    Some(ClientCertView {
        subject: summary.subject.clone(),
        issuer: summary.issuer.clone(),
        fingerprint: summary.fingerprint.clone(),
        expires: web::format::date_time(summary.not_after),
    })
}
