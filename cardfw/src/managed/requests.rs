//! The card's side of access requests (issue 16): sends the queued requests
//! (`store::requests`) to the policy server over the card's mutual-TLS client, and reads
//! back what became of them for the card page.
//!
//! One loop, for as long as the card runs. A request queued on the card page wakes it at
//! once; while any request waits for an answer it asks the server every
//! [`STATE_POLL`]; with nothing open it sleeps. A server that cannot be reached is tried
//! again, the wait doubling up to `policy.retry_max_ms`: the queue is sealed in the store, so
//! a restart of the card or of the server loses nothing, and the request's id (chosen on the
//! card) makes a resend after a lost answer harmless: the server stores each request once.

use std::sync::Arc;
use std::time::Duration;

use policy_client::Client;
use proto::policy::{self, AccessRequestList, AccessRequestStatus, AccessState, MAX_JSON_BODY};

use super::client_for;
use crate::config::Policy;
use crate::firewall::Firewall;
use crate::store::{Enrolment, Store};

/// How often the states of open requests are asked for.
pub const STATE_POLL: Duration = Duration::from_secs(2);
/// How long the loop sleeps with nothing to send or wait for (a queued request wakes it).
const IDLE: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What one round did.
enum Round {
    /// Nothing is open: sleep until woken.
    Idle,
    /// Requests wait for an answer: look again after [`STATE_POLL`].
    Waiting,
    /// The server could not be reached or answered an error: back off.
    Failed(String),
}

/// Runs for as long as the card runs.
pub async fn send_forever(firewall: Arc<Firewall>, config: Policy) -> std::io::Result<()> {
    let Some(store) = firewall.store().cloned() else {
        return std::future::pending().await;
    };
    let retry_min = Duration::from_millis(config.retry_min_ms);
    let retry_max = Duration::from_millis(config.retry_max_ms);
    let mut retry = retry_min;
    let mut kept: Option<(String, Client)> = None;
    loop {
        let wait = match round(&store, &mut kept).await {
            Round::Idle => {
                retry = retry_min;
                IDLE
            }
            Round::Waiting => {
                retry = retry_min;
                STATE_POLL
            }
            Round::Failed(why) => {
                let wait = retry;
                tracing::warn!(wait_ms = wait.as_millis() as u64, "access requests: {why}");
                retry = (retry * 2).min(retry_max);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = firewall.asking.queued.notified() => {}
        }
    }
}

async fn round(store: &Store, kept: &mut Option<(String, Client)>) -> Round {
    let requests = match store.access_requests() {
        Ok(requests) => requests,
        Err(e) => return Round::Failed(format!("cannot read the queue: {e}")),
    };
    if !requests.iter().any(|q| q.state == AccessState::Open) {
        return Round::Idle;
    }
    let enrolment = match Enrolment::load(store) {
        Ok(Some(enrolment)) => enrolment,
        // Unenrolled meanwhile: nobody to send to; the requests stay as they are.
        Ok(None) => return Round::Idle,
        Err(e) => return Round::Failed(format!("cannot read the enrolment: {e}")),
    };
    let client = match kept {
        Some((certificate, client)) if *certificate == enrolment.certificate_pem => client.clone(),
        _ => match client_for(&enrolment) {
            Ok(client) => {
                *kept = Some((enrolment.certificate_pem.clone(), client.clone()));
                client
            }
            Err(e) => return Round::Failed(e.to_string()),
        },
    };
    for queued in requests
        .iter()
        .filter(|q| !q.sent && q.state == AccessState::Open)
    {
        let id = &queued.request.id;
        let answer = client
            .post_json(
                policy::ACCESS_REQUESTS_PATH,
                &[],
                &queued.request,
                CALL_TIMEOUT,
                MAX_JSON_BODY,
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return Round::Failed(e.to_string()),
        };
        let status = answer.status.as_u16();
        let outcome = match status {
            200..=299 => store.mark_request_sent(id),
            // The server refuses this request for good (it cannot be read, or names
            // something it will not store): the user sees why instead of a request that
            // waits for ever.
            400 | 413 | 422 => store
                .update_request_states(&AccessRequestList {
                    requests: vec![AccessRequestStatus {
                        id: id.clone(),
                        state: AccessState::Declined {
                            message: format!(
                                "the policy server refused the request: {}",
                                answer.error_text()
                            ),
                        },
                    }],
                })
                .map(|_| ()),
            // Full for now (429), or unavailable: the same request again later.
            _ => {
                return Round::Failed(format!(
                    "sending a request: answered {status}: {}",
                    answer.error_text()
                ));
            }
        };
        match outcome {
            Ok(()) => tracing::info!(%id, status, "access request sent"),
            Err(e) => return Round::Failed(format!("cannot record a sent request: {e}")),
        }
    }
    let answer = client
        .request(
            http::Method::GET,
            policy::ACCESS_REQUESTS_PATH,
            &[],
            None,
            CALL_TIMEOUT,
            MAX_JSON_BODY,
        )
        .await;
    let list: AccessRequestList = match answer.map(|a| a.success().and_then(|a| a.json())) {
        Ok(Ok(list)) => list,
        Ok(Err(e)) | Err(e) => return Round::Failed(format!("reading the states: {e}")),
    };
    match store.update_request_states(&list) {
        Ok(true) => tracing::info!("access request states updated"),
        Ok(false) => {}
        Err(e) => return Round::Failed(format!("cannot record the states: {e}")),
    }
    match store.access_requests() {
        Ok(requests) if requests.iter().any(|q| q.state == AccessState::Open) => Round::Waiting,
        Ok(_) => Round::Idle,
        Err(e) => Round::Failed(format!("cannot read the queue: {e}")),
    }
}
