//! The card's side of the long poll. One loop: while enrolled, ask for a bundle newer than the
//! installed one and wait; install what comes, report, reload the rules at once. When the
//! server cannot be reached (no network yet, server restarting) or sends something refused,
//! wait and try again, the wait doubling with jitter up to `policy.retry_max_ms`. The rules in
//! force never change on a failure. A change of the network's state ([`super::network`]) ends
//! the wait and any poll in flight at once: when the network comes up the card asks straight
//! away, on a new connection, instead of sitting out the back-off.
//!
//! Before each poll the card reports the public keys of the VPNs the server pushed
//! ([`super::vpns::public_keys`]) when they differ from the last it reported: so on its first
//! check-in after it starts (and after enrolment), and after each overlay that changed them.

use std::sync::Arc;
use std::time::Duration;

use policy_client::Client;
use proto::policy::{self, BundleKind, Outcome, Report, VpnKeys};
use tokio::sync::watch;

use super::{apply, apply_overlay, client_for};
use crate::config::Policy;
use crate::firewall::Firewall;
use crate::store::Enrolment;

/// How often a card that is not enrolled looks again (`cardfw enroll` may run meanwhile).
const NOT_ENROLLED_CHECK: Duration = Duration::from_secs(2);
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A wait between `base / 2` and `base`, so cards that lost the server together do not all
/// come back in the same instant.
fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let spread = match getrandom::fill(&mut byte) {
        Ok(()) => u16::from_le_bytes(byte) as u32,
        Err(_) => u16::MAX as u32 / 2,
    };
    base / 2 + (base / 2) * spread / u16::MAX as u32
}

/// Runs for as long as the card runs, over `firewall`'s store (a firewall without one has
/// nothing to poll for, and only waits). `network` says whether the card's network is up.
pub async fn poll_forever(
    firewall: Arc<Firewall>,
    config: Policy,
    mut network: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(store) = firewall.store() else {
        return std::future::pending().await;
    };
    let retry_min = Duration::from_millis(config.retry_min_ms);
    let retry_max = Duration::from_millis(config.retry_max_ms);
    let poll_timeout = Duration::from_secs(config.poll_timeout_secs);
    let mut retry = retry_min;
    // The newest version refused: not asked for again, so a bad bundle is not fetched in a loop.
    let mut refused_through = 0;
    // Likewise for the card's overlay.
    let mut overlay_refused_through = 0;
    let mut kept: Option<(String, Client)> = None;
    // The VPN keys the server has from this card, with the certificate they were sent with.
    let mut keys_reported: Option<(String, VpnKeys)> = None;
    let backoff = async |why: String, retry: &mut Duration, network: &mut watch::Receiver<bool>| {
        let wait = jittered(*retry);
        tracing::warn!(wait_ms = wait.as_millis() as u64, "policy server: {why}");
        let network_changed = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            Ok(()) = network.changed() => true,
        };
        // A network that just came up is a new situation: start over from the shortest wait.
        *retry = if network_changed && *network.borrow() {
            retry_min
        } else {
            (*retry * 2).min(retry_max)
        };
    };
    loop {
        let enrolment = match Enrolment::load(store) {
            Ok(Some(enrolment)) => enrolment,
            Ok(None) => {
                tokio::time::sleep(NOT_ENROLLED_CHECK).await;
                continue;
            }
            Err(e) => {
                backoff(
                    format!("cannot read the enrolment: {e}"),
                    &mut retry,
                    &mut network,
                )
                .await;
                continue;
            }
        };
        // One client (and so one kept connection) per enrolment.
        let client = match &kept {
            Some((certificate, client)) if *certificate == enrolment.certificate_pem => {
                client.clone()
            }
            _ => match client_for(&enrolment) {
                Ok(client) => {
                    kept = Some((enrolment.certificate_pem.clone(), client.clone()));
                    client
                }
                Err(e) => {
                    backoff(e.to_string(), &mut retry, &mut network).await;
                    continue;
                }
            },
        };
        let keys = super::vpns::public_keys(&firewall);
        let unreported = keys_reported
            .as_ref()
            .is_none_or(|(certificate, reported)| {
                *certificate != enrolment.certificate_pem || *reported != keys
            });
        if unreported && report_vpn_keys(&client, &keys).await {
            keys_reported = Some((enrolment.certificate_pem.clone(), keys));
        }
        let after = enrolment.installed_version.max(refused_through);
        let overlay_installed = match store.overlay() {
            Ok(overlay) => overlay.map_or(0, |o| o.version),
            Err(e) => {
                backoff(
                    format!("cannot read the overlay: {e}"),
                    &mut retry,
                    &mut network,
                )
                .await;
                continue;
            }
        };
        let overlay_after = overlay_installed.max(overlay_refused_through);
        let path = format!(
            "{}?after={after}&{}={overlay_after}",
            policy::BUNDLE_PATH,
            policy::OVERLAY_AFTER_PARAM
        );
        let poll = client.request(
            http::Method::GET,
            &path,
            &[],
            None,
            poll_timeout,
            policy::MAX_BUNDLE_BODY,
        );
        let answer = tokio::select! {
            answer = poll => answer,
            Ok(()) = network.changed() => {
                // The held connection may not have lived through the change: a new one.
                kept = None;
                continue;
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                backoff(e.to_string(), &mut retry, &mut network).await;
                continue;
            }
        };
        match answer.status.as_u16() {
            204 => retry = retry_min,
            200 => {
                let offered = answer
                    .headers
                    .get(policy::VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                // No header: a server that predates overlays, so a group bundle.
                let kind = match answer.headers.get(policy::BUNDLE_KIND_HEADER) {
                    None => Some(BundleKind::Group),
                    Some(value) => value.to_str().ok().and_then(BundleKind::parse),
                };
                let Some(kind) = kind else {
                    backoff(
                        "answered a bundle of an unknown kind".into(),
                        &mut retry,
                        &mut network,
                    )
                    .await;
                    continue;
                };
                if kind == BundleKind::Overlay {
                    let applied = apply_overlay(
                        store,
                        &enrolment,
                        &firewall.config,
                        &answer.body,
                        chrono::Utc::now(),
                    );
                    match applied {
                        Ok(version) => {
                            retry = retry_min;
                            tracing::info!(version, "policy overlay installed");
                            firewall.reload();
                            if let Err(error) = firewall.start_added_vpns().await {
                                tracing::error!(%error, "the pushed VPNs did not all start");
                            }
                        }
                        Err(e) => {
                            tracing::error!(offered = ?offered, "policy overlay refused, the rules in force stay: {e}");
                            if let Some(offered) = offered
                                && offered > overlay_after
                            {
                                overlay_refused_through = offered;
                            }
                            backoff(format!("overlay refused: {e}"), &mut retry, &mut network)
                                .await;
                        }
                    }
                    continue;
                }
                match apply(store, &enrolment, &answer.body, chrono::Utc::now()) {
                    Ok(updated) => {
                        retry = retry_min;
                        tracing::info!(
                            version = updated.installed_version,
                            group = %updated.group,
                            "policy bundle installed"
                        );
                        firewall.reload();
                        trust_installed_cas(&firewall, store);
                        report(
                            &client,
                            updated.installed_version,
                            offered,
                            Outcome::Applied,
                            None,
                        )
                        .await;
                    }
                    Err(e) => {
                        let error = e.to_string();
                        tracing::error!(offered = ?offered, "policy bundle refused, the rules in force stay: {error}");
                        if let Some(offered) = offered
                            && offered > after
                        {
                            refused_through = offered;
                        }
                        report(
                            &client,
                            enrolment.installed_version,
                            offered,
                            Outcome::Refused,
                            Some(error.clone()),
                        )
                        .await;
                        let why = format!("bundle refused: {error}");
                        backoff(why, &mut retry, &mut network).await;
                    }
                }
            }
            status => {
                backoff(
                    format!("answered {status}: {}", answer.error_text()),
                    &mut retry,
                    &mut network,
                )
                .await;
            }
        }
    }
}

/// The installed bundle's CAs, trusted by inspection at once. They were checked before the
/// install, so a failure here is a store file that no longer opens: logged, and the trust
/// before the install stays until the card restarts, which then trusts none of them.
fn trust_installed_cas(firewall: &Firewall, store: &crate::store::Store) {
    let Some(inspection) = firewall.inspection.get() else {
        return;
    };
    match inspection.reload_managed_cas(store) {
        Ok(count) => tracing::info!(count, "policy server's CAs trusted for inspected sites"),
        Err(error) => tracing::error!(%error, "the policy server's CAs cannot be trusted"),
    }
}

/// Sends the pushed VPNs' public keys; whether the server took them.
async fn report_vpn_keys(client: &Client, keys: &VpnKeys) -> bool {
    let sent = client
        .post_json(
            policy::VPN_KEYS_PATH,
            &[],
            keys,
            REPORT_TIMEOUT,
            policy::MAX_JSON_BODY,
        )
        .await;
    match sent {
        Ok(answer) if answer.status.is_success() => {
            tracing::info!(count = keys.keys.len(), "VPN public keys reported");
            true
        }
        Ok(answer) => {
            tracing::warn!(status = %answer.status, "VPN keys refused: {}", answer.error_text());
            false
        }
        Err(e) => {
            tracing::warn!("VPN keys not sent: {e}");
            false
        }
    }
}

async fn report(
    client: &Client,
    running_version: u64,
    offered_version: Option<u64>,
    outcome: Outcome,
    error: Option<String>,
) {
    let report = Report {
        running_version,
        offered_version,
        outcome,
        error,
    };
    let sent = client
        .post_json(
            policy::REPORT_PATH,
            &[],
            &report,
            REPORT_TIMEOUT,
            policy::MAX_JSON_BODY,
        )
        .await;
    match sent {
        Ok(answer) if answer.status.is_success() => {}
        Ok(answer) => {
            tracing::warn!(status = %answer.status, "report refused: {}", answer.error_text())
        }
        Err(e) => tracing::warn!("report not sent: {e}"),
    }
}
