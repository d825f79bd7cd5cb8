//! The card's VPNs on the card page, for the logged-in owner (`crate::vpn`): each VPN's state,
//! its handshake age, bytes and endpoint, the card's public key (never the private one), and
//! unlock (with the PIN) or lock (none needed: it only takes the key out of use).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serve::session::{Session, SessionForm};
use web::card::{VpnPage, VpnView};

use super::{AdminState, ClientAddr, Secret, session_ended, with_pin};
use crate::vpn::Vpn;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct VpnForm {
    name: String,
    pin: Secret,
}

/// `GET /vpn`; without a session, back to the login.
pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    session: Option<Session>,
) -> Response {
    match session {
        Some(session) => render(&state, &session, None, None).await,
        None => Redirect::to("/").into_response(),
    }
}

/// `POST /vpn/unlock`: the key is read with the PIN (audited), then the tunnel comes up.
pub(super) async fn unlock(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<VpnForm>,
) -> Response {
    let Some(vpn) = named(&state, &form.name) else {
        return render(&state, &session, None, Some(unknown(&form.name))).await;
    };
    let name = vpn.name.clone();
    let reading = vpn.clone();
    let key = with_pin(&state, client, form.pin.0.clone(), move |admin| {
        reading.read_key(admin)
    })
    .await;
    let result = match key {
        Ok(key) => vpn.unlock(key).await.map_err(super::Refusal::from),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            tracing::info!(vpn = %name, "admin page: VPN unlocked");
            let notice = format!(
                "{name} is unlocked: connections to its networks and names go through its tunnel."
            );
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            if let Some(response) = session_ended(&state, &session, &error) {
                return response;
            }
            let error = format!("{name} stays locked: {error}.");
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// `POST /vpn/lock`: no PIN, locking only takes the key out of use.
pub(super) async fn lock(
    State(state): State<Arc<AdminState>>,
    SessionForm { session, form }: SessionForm<VpnForm>,
) -> Response {
    let Some(vpn) = named(&state, &form.name) else {
        return render(&state, &session, None, Some(unknown(&form.name))).await;
    };
    let name = &vpn.name;
    match vpn.lock("the owner locked it").await {
        Ok(true) => {
            tracing::info!(vpn = %name, "admin page: VPN locked");
            let notice = format!(
                "{name} is locked: its networks and names are refused until you unlock it."
            );
            render(&state, &session, Some(notice), None).await
        }
        Ok(false) => {
            let notice = format!("{name} was already locked.");
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            let error = format!(
                "{name} is locked for the firewall (its networks and names are refused), but its tunnel did not stop: {error}."
            );
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// The VPN the form names, when the card has one of that name.
fn named(state: &AdminState, name: &str) -> Option<Arc<Vpn>> {
    state.firewall.vpns.load().get(name).cloned()
}

fn unknown(name: &str) -> String {
    // The name came from the form: shown only through the template's escaping.
    format!("This card has no VPN called {name:?}: nothing was changed.")
}

async fn render(
    state: &AdminState,
    session: &Session,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let mut views = Vec::new();
    for vpn in state.firewall.vpns.load_full().iter() {
        views.push(view(vpn).await);
    }
    VpnPage {
        csrf: session.csrf().to_owned(),
        notice,
        error,
        vpns: views,
    }
    .into_response()
}

async fn view(vpn: &Vpn) -> VpnView {
    let stats = vpn.stats().await.unwrap_or_default();
    let config = &vpn.config;
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    VpnView {
        name: vpn.name.clone(),
        backend: vpn.backend().to_owned(),
        unlocked: vpn.is_unlocked(),
        idle_left_minutes: vpn
            .idle_left()
            .unwrap_or(Duration::ZERO)
            .as_secs()
            .div_ceil(60),
        idle_minutes: config.idle_lock_secs.div_ceil(60),
        public_key: vpn.public_key_base64(),
        endpoint: config.endpoint.to_string(),
        networks: list(
            config
                .networks
                .iter()
                .map(|n| format!("{}/{}", n.0.addr(), n.0.prefix()))
                .collect(),
        ),
        names: list(config.names.clone()),
        handshake: match stats.handshake_age {
            Some(age) => format!("{} s ago", age.as_secs()),
            None => "none yet".to_owned(),
        },
        received: bytes(stats.rx_bytes),
        sent: bytes(stats.tx_bytes),
    }
}

fn bytes(count: u64) -> String {
    match count {
        0..1024 => format!("{count} B"),
        1024..1_048_576 => format!("{:.1} KiB", count as f64 / 1024.0),
        _ => format!("{:.1} MiB", count as f64 / 1_048_576.0),
    }
}
