//! What policyd does, apart from speaking HTTP: the fleet's state ([`AppState`]) and its
//! operations, shared by the HTTPS service's two faces (the card and admin calls in
//! `server`, the admin page in `page`), neither of which imports the other.
//!
//! - Cards: which card a client certificate belongs to, and whether it is revoked; a card's
//!   poll and report recorded in batches (group commit).
//! - Bundles: publish (check, version, sign, store) and upload (verify, store); each group's
//!   newest bundle held in a `watch` channel the long polls wait on.
//! - Enrolment tokens and revocation.
//!
//! Revocation is checked after the handshake: the SHA-256 of the presented certificate is
//! looked up (in the card table, then in memory: a certificate's card and group never change)
//! on every card request and again before a held poll is answered. The revoked set is kept in
//! memory, updated at once by a revocation here and every second from the database
//! ([`AppState::sync`]), so a revocation on another instance sharing a PostgreSQL database
//! holds here within a second. The hot path of a publish (thousands of woken polls) touches no
//! database.
//!
//! Long poll: each group has a `watch` channel holding its newest bundle. A poll waits on it
//! (up to the hold time) for a version above `after`; a publish replaces the value and every
//! waiting card of the group wakes at once, served from memory. The server's background task
//! looks for versions another instance published (same database) and loads them into the
//! channel ([`AppState::sync`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::policy::ErrorBody;
use proto::policy_admin::PublishRequest;
use rules::bundle::{self, Bundle, Trust};
use tokio::sync::watch;

use crate::db::{CardUpdate, Db, DbError, Decision, Received, StoredBundle};
use crate::fleet::Fleet;
use crate::{sha256_hex, unix_now};
use proto::policy::{
    AccessRequest, AccessRequestList, AccessRequestStatus, MAX_MANAGED_VPNS, MAX_MESSAGE_CHARS,
    MAX_OPEN_REQUESTS_PER_CARD, ManagedVpn, ManagedVpns, OVERLAY_RULES_NAME, VpnKeys,
    overlay_group, overlay_rule_name,
};

/// Card updates written in one transaction at most.
const MAX_BATCH: usize = 2000;

/// What the service is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a long poll is held before it is answered `204` (the card polls again).
    pub hold: Duration,
    /// How long an enrolment token stays valid when the request does not say.
    pub token_ttl: Duration,
    /// Open access requests the whole server keeps at most (each card: at most
    /// [`proto::policy::MAX_OPEN_REQUESTS_PER_CARD`]).
    pub max_open_requests: usize,
}

/// A group's newest bundle, held in memory for the waiting cards.
#[derive(Debug)]
pub struct Latest {
    pub version: u64,
    pub(crate) body: Bytes,
}

/// What a bundle carries besides its version, group and dates.
struct Content {
    rules: (String, String),
    list_files: Vec<(String, String)>,
    trusted_cas: Option<String>,
    vpns: Option<String>,
}

/// One `Arc<AppState>` for every handler.
pub struct AppState {
    pub(crate) fleet: Fleet,
    pub(crate) db: Db,
    pub(crate) settings: Settings,
    groups: Mutex<HashMap<String, watch::Sender<Option<Arc<Latest>>>>>,
    /// Certificate fingerprint → card, filled on first use.
    known: Mutex<HashMap<String, Arc<Known>>>,
    /// Ids of revoked cards.
    revoked: Mutex<HashSet<String>>,
    /// To the task that writes card updates in batches (group commit).
    updates: tokio::sync::mpsc::Sender<(CardUpdate, tokio::sync::oneshot::Sender<bool>)>,
    /// The admin page's sessions.
    pub(crate) page_sessions: serve::session::Sessions,
    /// Access requests refused (malformed, oversized, over a limit), since the start; shown
    /// on the fleet page.
    pub(crate) refused_requests: std::sync::atomic::AtomicU64,
}

/// What a certificate says about its card; fixed at enrolment.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) id: String,
    pub(crate) group: String,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The fingerprint of the client certificate of this connection, if one was presented.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub(crate) Option<String>);

/// An error answer: a status and words, as `{"error": …}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        let status = match error {
            DbError::UnknownToken | DbError::TokenUsed | DbError::TokenExpired => {
                StatusCode::FORBIDDEN
            }
            DbError::VersionTaken { .. } => StatusCode::CONFLICT,
            DbError::NoSuchCard(_)
            | DbError::NoSuchOpenRequest { .. }
            | DbError::NoSuchVpn { .. } => StatusCode::NOT_FOUND,
            DbError::CardRequestsFull(_) | DbError::ServerRequestsFull(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            DbError::Sql(_) | DbError::Migrate(_) | DbError::BadRow(_) => {
                tracing::error!(%error, "database");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError(status, error.to_string())
    }
}

pub(crate) fn bad_request(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.to_string())
}

impl AppState {
    /// Loads every group's newest bundle into memory.
    pub async fn new(fleet: Fleet, db: Db, settings: Settings) -> Result<Arc<AppState>, DbError> {
        let (updates, queue) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_updates(db.clone(), queue));
        let state = Arc::new(AppState {
            page_sessions: crate::sessions::page_sessions(),
            updates,
            fleet,
            db,
            settings,
            groups: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashSet::new()),
            refused_requests: std::sync::atomic::AtomicU64::new(0),
        });
        state.sync().await?;
        Ok(state)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn channel(&self, group: &str) -> watch::Sender<Option<Arc<Latest>>> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Makes `bundle` the group's newest unless a newer one is there already, waking every
    /// card waiting on the group.
    fn announce(&self, group: &str, version: u64, body: String) {
        self.channel(group).send_if_modified(|latest| {
            if latest.as_ref().is_some_and(|l| l.version >= version) {
                return false;
            }
            *latest = Some(Arc::new(Latest {
                version,
                body: Bytes::from(body),
            }));
            true
        });
    }

    /// Loads versions published elsewhere (another instance, or before this start).
    pub(crate) async fn sync(&self) -> Result<(), DbError> {
        let revoked = self.db.revoked_ids().await?;
        *self.revoked.lock().unwrap_or_else(|p| p.into_inner()) = revoked;
        for (group, version) in self.db.latest_versions().await? {
            let known = self
                .channel(&group)
                .borrow()
                .as_ref()
                .map_or(0, |l| l.version);
            if version > known
                && let Some(stored) = self.db.bundle(&group, version).await?
            {
                self.announce(&group, version, stored.body);
            }
        }
        Ok(())
    }

    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Only the bearer token: a browser sends cookies by itself, even with a request another
        // site made, but never an Authorization header it was not told to send.
        // Compared as hashes: the time taken says nothing about how much of the token matched.
        bearer.is_some_and(|t| {
            sha256_hex(t.as_bytes()) == sha256_hex(self.fleet.admin_token.as_bytes())
        })
    }

    pub(crate) fn admin_token_matches(&self, token: &str) -> bool {
        sha256_hex(token.trim().as_bytes()) == sha256_hex(self.fleet.admin_token.as_bytes())
    }

    /// The card this connection's certificate belongs to, if it may be served.
    pub(crate) async fn card(&self, peer: &Peer) -> Result<Arc<Known>, ApiError> {
        let Some(fingerprint) = &peer.0 else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "a card certificate is needed: enrol first".into(),
            ));
        };
        let cached = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fingerprint)
            .cloned();
        let known = match cached {
            Some(known) => known,
            None => {
                let card = self
                    .db
                    .card_by_fingerprint(fingerprint)
                    .await?
                    .ok_or_else(|| {
                        ApiError(StatusCode::FORBIDDEN, "unknown card certificate".into())
                    })?;
                if card.revoked_at.is_some() {
                    self.revoked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(card.id.clone());
                }
                let known = Arc::new(Known {
                    id: card.id,
                    group: card.group,
                });
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fingerprint.clone(), known.clone());
                known
            }
        };
        self.check_not_revoked(&known)?;
        Ok(known)
    }

    pub(crate) fn check_not_revoked(&self, card: &Known) -> Result<(), ApiError> {
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&card.id);
        if revoked {
            tracing::warn!(card = %card.id, "a revoked card tried to connect");
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this card was revoked".into(),
            ));
        }
        Ok(())
    }

    /// Records a card update; returns once it is in the database (written together with
    /// whatever else arrived meanwhile).
    pub(crate) async fn record(&self, update: CardUpdate) -> Result<(), ApiError> {
        let (done, written) = tokio::sync::oneshot::channel();
        let unavailable = || {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not writable now".into(),
            )
        };
        self.updates
            .send((update, done))
            .await
            .map_err(|_| unavailable())?;
        match written.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }

    pub(crate) async fn revoke(&self, card_id: &str) -> Result<(), ApiError> {
        self.db.revoke(card_id, unix_now()).await?;
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(card_id.to_string());
        tracing::info!(card = %card_id, "card revoked");
        Ok(())
    }

    pub(crate) fn latest_versions(&self) -> Vec<(String, u64)> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        // Overlays are per card, not groups: the fleet page shows them with their card.
        let mut versions: Vec<_> = groups
            .iter()
            .filter(|(g, _)| !g.starts_with("card:"))
            .map(|(g, tx)| (g.clone(), tx.borrow().as_ref().map_or(0, |l| l.version)))
            .collect();
        versions.sort();
        versions
    }

    /// The policy key, when it is on this server.
    fn signing_key(&self) -> Result<&bundle::SigningKey, ApiError> {
        self.fleet.policy_key.as_ref().ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                "the signing key is offline (no policy.key): sign with `policyd sign` and upload"
                    .into(),
            )
        })
    }

    /// Validates, versions, signs and stores rules for a group; returns the version.
    pub async fn publish(&self, request: &PublishRequest) -> Result<u64, ApiError> {
        self.signing_key()?;
        check_group(&request.group)?;
        let lists: HashMap<String, String> = request.lists.iter().cloned().collect();
        if let Err(diagnostics) =
            rules::RuleSet::from_text(&request.rules_name, &request.rules_text, &lists)
        {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                diagnostics.to_string(),
            ));
        }
        // Checked before signing, by the check every card runs: a key pasted by mistake is
        // refused here, never signed and sent to the fleet.
        if let Some(cas) = &request.trusted_cas {
            bundle::check_trusted_cas(cas)
                .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        }
        let expires_in = request.expires_in_secs.clamp(60, 10 * 365 * 86_400);
        self.sign_and_store(
            &request.group,
            expires_in,
            &Content {
                rules: (request.rules_name.clone(), request.rules_text.clone()),
                list_files: request.lists.clone(),
                trusted_cas: request.trusted_cas.clone(),
                vpns: None,
            },
        )
        .await
    }

    /// Signs the next version of `group` (a group, or a card's overlay) with `content`,
    /// stores it and wakes the cards waiting on it. Two publishers (or instances) may race for
    /// a number: the loser takes the next.
    async fn sign_and_store(
        &self,
        group: &str,
        expires_in_secs: u64,
        content: &Content,
    ) -> Result<u64, ApiError> {
        let key = self.signing_key()?;
        for _ in 0..5 {
            let now = chrono::Utc::now();
            let version = self.db.latest_version(group).await? + 1;
            let bundle = Bundle {
                version,
                group: group.to_string(),
                issued_at: now,
                expires_at: now + chrono::Duration::seconds(expires_in_secs as i64),
                rules: content.rules.clone(),
                list_files: content.list_files.clone(),
                trusted_cas: content.trusted_cas.clone(),
                vpns: content.vpns.clone(),
            };
            let body = String::from_utf8(bundle.sign(key)).expect("bundles are text");
            match self.store(&bundle, body).await {
                Err(ApiError(StatusCode::CONFLICT, _)) => continue,
                other => return other.map(|()| version),
            }
        }
        Err(ApiError(
            StatusCode::CONFLICT,
            "other publishers kept taking the next version; try again".into(),
        ))
    }

    /// Accepts a bundle signed elsewhere for `group`, if it verifies under the policy key
    /// and is newer than the group's newest.
    pub async fn upload(&self, group: &str, body: &[u8]) -> Result<u64, ApiError> {
        check_group(group)?;
        let installed = self.db.latest_version(group).await?;
        let verified = bundle::verify(
            body,
            &Trust {
                key: &self.fleet.policy_public,
                installed_version: installed,
                group,
                now: chrono::Utc::now(),
            },
        )
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| bad_request("the bundle is not UTF-8 text"))?;
        self.store(&verified.bundle, text).await?;
        Ok(verified.bundle.version)
    }

    async fn store(&self, bundle: &Bundle, body: String) -> Result<(), ApiError> {
        self.db
            .insert_bundle(&StoredBundle {
                group: bundle.group.clone(),
                version: bundle.version,
                body: body.clone(),
                published_at: unix_now(),
                expires_at: bundle.expires_at.timestamp(),
            })
            .await?;
        tracing::info!(group = %bundle.group, version = bundle.version, "bundle published");
        self.announce(&bundle.group, bundle.version, body);
        Ok(())
    }

    /// Makes `count` one-time tokens for `group`. Only their hashes are stored.
    pub async fn new_tokens(
        &self,
        group: &str,
        count: usize,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, ApiError> {
        check_group(group)?;
        if count == 0 || count > 100_000 {
            return Err(bad_request("ask for 1 to 100000 tokens"));
        }
        let expires_at = unix_now() + ttl.unwrap_or(self.settings.token_ttl).as_secs() as i64;
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            let token = crate::fleet::random_hex(16)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            self.db
                .add_token(&sha256_hex(token.as_bytes()), group, expires_at)
                .await?;
            tokens.push(token);
        }
        Ok(tokens)
    }
}

/// Access requests (issue 16): what a card's users ask for, and the administrator's answer.
impl AppState {
    /// Counts a refused request and says why in the log; returns the error to answer with.
    pub(crate) fn refuse_request(&self, card: &str, error: ApiError) -> ApiError {
        self.refused_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%card, status = %error.0, "access request refused: {}", error.1);
        error
    }

    /// Checks and stores a card's request (idempotent by its id), within the limits.
    pub(crate) async fn receive_request(
        &self,
        card: &Known,
        request: &AccessRequest,
    ) -> Result<Received, ApiError> {
        let received = async {
            request.check().map_err(bad_request)?;
            Ok::<_, ApiError>(
                self.db
                    .receive_request(
                        &card.id,
                        request,
                        unix_now(),
                        MAX_OPEN_REQUESTS_PER_CARD,
                        self.settings.max_open_requests,
                    )
                    .await?,
            )
        }
        .await
        .map_err(|e| self.refuse_request(&card.id, e))?;
        if received == Received::New {
            tracing::info!(card = %card.id, id = %request.id, target = %request.blocked.host, "access request received");
        }
        Ok(received)
    }

    /// What became of each of a card's requests.
    pub(crate) async fn request_states(&self, card: &Known) -> Result<AccessRequestList, ApiError> {
        let requests = self
            .db
            .card_requests(&card.id)
            .await?
            .into_iter()
            .map(|stored| AccessRequestStatus {
                id: stored.request.id,
                state: stored.state,
            })
            .collect();
        Ok(AccessRequestList { requests })
    }
}

/// How long an overlay bundle is valid for a card that installs it late. Approvals end by a
/// new overlay version (see [`AppState::expire_approvals`]), not by the bundle's expiry.
const OVERLAY_VALIDITY_SECS: u64 = 365 * 86_400;

/// The administrator's decisions, and the per-card overlays approvals become.
impl AppState {
    /// Approves request `id` of `card_id`: `rule` (one rule line, no name: the overlay names
    /// it) goes into the card's overlay, until `minutes` from now if given. Returns the
    /// overlay version that carries it.
    pub async fn approve(
        &self,
        card_id: &str,
        id: &str,
        rule: Option<&str>,
        minutes: Option<u64>,
    ) -> Result<u64, ApiError> {
        // Before anything is decided: an approval that cannot be signed must not show as
        // approved.
        self.signing_key()?;
        let rule = match rule {
            Some(rule) => check_approved_rule(rule)?,
            None => {
                let stored = self.db.card_requests(card_id).await?;
                let request = stored.iter().find(|r| r.request.id == id).ok_or_else(|| {
                    ApiError(
                        StatusCode::NOT_FOUND,
                        format!("no request `{id}` of card `{card_id}`"),
                    )
                })?;
                check_approved_rule(&request.request.blocked.suggested_rule())?
            }
        };
        let until = match minutes {
            None => None,
            Some(0) => {
                return Err(bad_request(
                    "approve for at least one minute, or without a limit",
                ));
            }
            Some(m) => Some(unix_now().saturating_add(m.min(10 * 365 * 24 * 60) as i64 * 60)),
        };
        self.db
            .decide(card_id, id, &Decision::Approve { rule, until }, unix_now())
            .await?;
        tracing::info!(card = %card_id, %id, ?until, "access request approved");
        self.publish_overlay(card_id).await
    }

    /// Declines request `id` of `card_id` with a message the card's page shows.
    pub async fn decline(&self, card_id: &str, id: &str, message: &str) -> Result<(), ApiError> {
        let message = message.replace("\r\n", "\n").trim().to_string();
        if message.chars().count() > MAX_MESSAGE_CHARS
            || message.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(bad_request(format!(
                "the message is at most {MAX_MESSAGE_CHARS} characters, without control characters"
            )));
        }
        self.db
            .decide(card_id, id, &Decision::Decline { message }, unix_now())
            .await?;
        tracing::info!(card = %card_id, %id, "access request declined");
        Ok(())
    }

    /// Signs and stores the next overlay of `card_id`: every approval in force now, each rule
    /// named after its request, and wakes the card's long poll.
    pub async fn publish_overlay(&self, card_id: &str) -> Result<u64, ApiError> {
        self.publish_overlay_at(card_id, unix_now()).await
    }

    /// [`AppState::publish_overlay`] with the approvals in force at `now`.
    async fn publish_overlay_at(&self, card_id: &str, now: i64) -> Result<u64, ApiError> {
        let approvals = self.db.approvals(card_id, now).await?;
        let text: String = approvals
            .iter()
            .map(|a| format!("{}: {}\n", overlay_rule_name(&a.request_id), a.rule))
            .collect();
        let vpns = self.db.card_vpns(card_id).await?;
        let vpn_count = vpns.len();
        // Every overlay carries the whole set: a VPN left out is taken off the card.
        let vpns = (!vpns.is_empty())
            .then(|| serde_json::to_string(&ManagedVpns { vpns }).expect("plain data serialises"));
        let content = Content {
            rules: (OVERLAY_RULES_NAME.to_string(), text),
            list_files: Vec::new(),
            trusted_cas: None,
            vpns,
        };
        let version = self
            .sign_and_store(&overlay_group(card_id), OVERLAY_VALIDITY_SECS, &content)
            .await?;
        tracing::info!(card = %card_id, version, rules = approvals.len(), vpns = vpn_count, "overlay published");
        Ok(version)
    }

    /// Publishes a new overlay for every card one of whose approvals has run out since its
    /// overlay was published. Run every second by the server.
    pub async fn expire_approvals(&self) -> Result<(), ApiError> {
        self.expire_approvals_at(unix_now()).await.map(|_| ())
    }

    /// [`AppState::expire_approvals`] as at `now`; returns the cards given a new overlay.
    pub(crate) async fn expire_approvals_at(&self, now: i64) -> Result<Vec<String>, ApiError> {
        let cards = self.db.cards_with_expired_approvals(now).await?;
        for card_id in &cards {
            self.publish_overlay_at(card_id, now).await?;
        }
        Ok(cards)
    }
}

/// The VPNs pushed to cards (issue 15): they travel in each card's overlay, signed like its
/// rules, and the card reports its public key for each.
impl AppState {
    /// Pushes `vpn` to `card_id` (or changes it); returns the overlay version that carries it.
    pub async fn set_vpn(&self, card_id: &str, vpn: &ManagedVpn) -> Result<u64, ApiError> {
        // Before anything is stored: a VPN that cannot be signed must not show as pushed.
        self.signing_key()?;
        check_vpn(vpn)?;
        let pushed = self.db.card_vpns(card_id).await?;
        if pushed.len() >= MAX_MANAGED_VPNS && !pushed.iter().any(|v| v.name == vpn.name) {
            return Err(bad_request(format!(
                "a card takes at most {MAX_MANAGED_VPNS} VPNs"
            )));
        }
        self.db.set_vpn(card_id, vpn).await?;
        tracing::info!(card = %card_id, vpn = %vpn.name, "VPN pushed");
        self.publish_overlay(card_id).await
    }

    /// Takes VPN `name` off `card_id`; returns the overlay version without it.
    pub async fn remove_vpn(&self, card_id: &str, name: &str) -> Result<u64, ApiError> {
        self.signing_key()?;
        self.db.remove_vpn(card_id, name).await?;
        tracing::info!(card = %card_id, vpn = %name, "VPN removed");
        self.publish_overlay(card_id).await
    }

    /// Records the public keys a card reported for its pushed VPNs.
    pub(crate) async fn receive_vpn_keys(
        &self,
        card: &Known,
        keys: &VpnKeys,
    ) -> Result<(), ApiError> {
        let plain = |text: &str, longest: usize| {
            !text.is_empty()
                && text.len() <= longest
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '/' | '='))
        };
        // Shown on the fleet page and in `policyd status`: names and base64 keys only.
        if keys.keys.len() > MAX_MANAGED_VPNS
            || !keys
                .keys
                .iter()
                .all(|k| plain(&k.name, 12) && plain(&k.public_key, 44))
        {
            return Err(bad_request(format!(
                "at most {MAX_MANAGED_VPNS} keys, each a VPN name and a base64 public key"
            )));
        }
        self.db
            .record_vpn_keys(&card.id, &keys.keys, unix_now())
            .await?;
        tracing::info!(card = %card.id, count = keys.keys.len(), "VPN public keys reported");
        Ok(())
    }
}

/// What the server can tell of a VPN before signing it: its name and networks as the card
/// reads them. Everything else (a resolver outside the networks, an endpoint inside them, the
/// card's own addresses) is the card's check, which knows its addresses and refuses the push
/// whole; its log says why.
fn check_vpn(vpn: &ManagedVpn) -> Result<(), ApiError> {
    if !proto::policy::valid_vpn_name(&vpn.name) {
        return Err(bad_request(format!(
            "VPN `{}`: a VPN's name is 1 to 12 of a-z, 0-9 and `-`",
            vpn.name
        )));
    }
    if vpn.networks.is_empty() {
        return Err(bad_request("name at least one network the VPN reaches"));
    }
    for network in &vpn.networks {
        let cidr = rules::Cidr::parse(network)
            .map_err(|e| bad_request(format!("`{network}` is not a network: {}", e.message)))?;
        if !cidr.addr().is_ipv4() {
            return Err(bad_request(format!(
                "`{network}`: only IPv4 networks are carried through the VPN for now"
            )));
        }
    }
    Ok(())
}

/// An approved rule: one rule line of the language, without a name (the overlay names it), a
/// `default` or a `list`. Returned trimmed.
fn check_approved_rule(rule: &str) -> Result<String, ApiError> {
    let rule = rule.trim();
    if rule.is_empty() || rule.contains(['\n', '\r']) || rule.len() > 4096 {
        return Err(bad_request("the rule is one line of the rule language"));
    }
    let policy = rules::parse("approved rule", rule)
        .map_err(|d| ApiError(StatusCode::UNPROCESSABLE_ENTITY, d.to_string()))?;
    if policy.default.is_some() || !policy.lists.is_empty() || policy.rules.len() != 1 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "an approval is one rule (`allow …` or `deny …`), not a `default` or a `list`".into(),
        ));
    }
    if policy.rules[0].name.is_some() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "leave the rule without a name: the card's overlay names it after the request".into(),
        ));
    }
    // Compiled as the card will: a rule naming a list (`@ads`) must compile on its own.
    rules::RuleSet::from_text("approved rule", rule, &rules::NoFiles)
        .map_err(|d| ApiError(StatusCode::UNPROCESSABLE_ENTITY, d.to_string()))?;
    Ok(rule.to_string())
}

/// Group names appear in bundles, URLs and pages: keep them plain.
fn check_group(group: &str) -> Result<(), ApiError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "group `{group}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// Group commit: takes what is queued (up to [`MAX_BATCH`]), writes it in one transaction,
/// tells each sender. SQLite has one writer; one transaction per report would make a fleet's
/// reports after a publish queue for seconds.
async fn write_updates(
    db: Db,
    mut queue: tokio::sync::mpsc::Receiver<(CardUpdate, tokio::sync::oneshot::Sender<bool>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let updates: Vec<CardUpdate> = batch.iter().map(|(u, _)| u.clone()).collect();
        let written = match db.record(&updates).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, updates = updates.len(), "card updates not written");
                false
            }
        };
        for (_, done) in batch.drain(..) {
            let _ = done.send(written);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    pub(crate) async fn instance(dir: &std::path::Path, db: &Db) -> Arc<AppState> {
        AppState::new(
            Fleet::load(dir).unwrap(),
            db.clone(),
            Settings {
                hold: Duration::from_secs(1),
                token_ttl: Duration::from_secs(60),
                max_open_requests: 100,
            },
        )
        .await
        .unwrap()
    }

    /// A new fleet in `dir` and an instance of it on a new SQLite database there.
    pub(crate) async fn fresh_instance(dir: &std::path::Path) -> (Arc<AppState>, Db) {
        Fleet::init(&dir.join("fleet"), &["127.0.0.1".into()]).unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.join("p.db").display()))
            .await
            .unwrap();
        (instance(&dir.join("fleet"), &db).await, db)
    }

    fn request(rules: &str) -> PublishRequest {
        PublishRequest {
            group: "laptops".into(),
            rules_name: "rules.txt".into(),
            rules_text: rules.into(),
            lists: Vec::new(),
            expires_in_secs: 3600,
            trusted_cas: None,
        }
    }

    /// Trusted CAs in a publish are signed into the bundle; a private key is refused before
    /// anything is signed or stored.
    #[tokio::test]
    async fn a_publish_signs_trusted_cas_and_refuses_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet");
        Fleet::init(&fleet, &["127.0.0.1".into()]).unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await
            .unwrap();
        let state = instance(&fleet, &db).await;
        let waiting = state.channel("laptops").subscribe();
        // The fleet CA's certificate stands in for a company CA: any certificate will do here.
        let ca = std::fs::read_to_string(fleet.join("ca.pem")).unwrap();
        let with_key = PublishRequest {
            trusted_cas: Some(format!(
                "{ca}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )),
            ..request("default deny\n")
        };
        let error = state.publish(&with_key).await.unwrap_err();
        assert_eq!(error.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            error.1.contains("never carries private keys"),
            "{}",
            error.1
        );
        assert!(waiting.borrow().is_none(), "nothing was published");

        let with_ca = PublishRequest {
            trusted_cas: Some(ca.clone()),
            ..request("default deny\n")
        };
        assert_eq!(state.publish(&with_ca).await.unwrap(), 1);
        let body = waiting.borrow().as_ref().unwrap().body.clone();
        let verified = bundle::verify(
            &body,
            &Trust {
                key: &state.fleet.policy_public,
                installed_version: 0,
                group: "laptops",
                now: chrono::Utc::now(),
            },
        )
        .unwrap();
        assert_eq!(verified.bundle.trusted_cas, Some(ca));
    }

    /// Two instances on one database: what one publishes or revokes, the other serves
    /// after its next sync.
    #[tokio::test]
    async fn instances_sharing_a_database_agree() {
        let dir = tempfile::tempdir().unwrap();
        Fleet::init(&dir.path().join("fleet"), &["127.0.0.1".into()]).unwrap();
        let fleet = dir.path().join("fleet");
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await
            .unwrap();
        let a = instance(&fleet, &db).await;
        let b = instance(&fleet, &db).await;
        let waiting = b.channel("laptops").subscribe();

        let error = a.publish(&request("allow htp\n")).await.unwrap_err();
        assert_eq!(error.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.1.starts_with("rules.txt:1:7:"), "{}", error.1);
        assert_eq!(a.publish(&request("default deny\n")).await.unwrap(), 1);
        assert_eq!(a.publish(&request("default allow\n")).await.unwrap(), 2);
        assert!(waiting.borrow().is_none(), "b has not looked yet");
        b.sync().await.unwrap();
        assert_eq!(waiting.borrow().as_ref().unwrap().version, 2);
        assert_eq!(b.latest_versions(), vec![("laptops".to_string(), 2)]);

        // A card enrolled through a, revoked through b, is refused by a after its sync.
        let token = a.new_tokens("laptops", 1, None).await.unwrap().remove(0);
        let (_, csr) = policy_client::new_key_and_csr().unwrap();
        let (issued, _group) = db
            .enrol(&sha256_hex(token.as_bytes()), "card-1", unix_now(), |_| {
                a.fleet.issue_card_certificate(&csr, "card-1")
            })
            .await
            .unwrap()
            .unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.as_bytes()).unwrap();
        let peer = Peer(Some(sha256_hex(&der)));
        assert_eq!(a.card(&peer).await.unwrap().id, "card-1");
        b.revoke("card-1").await.unwrap();
        a.sync().await.unwrap();
        assert_eq!(a.card(&peer).await.unwrap_err().0, StatusCode::FORBIDDEN);
        assert_eq!(
            a.card(&Peer(None)).await.unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.card(&Peer(Some("00".repeat(32)))).await.unwrap_err().0,
            StatusCode::FORBIDDEN
        );
    }

    /// Issue 15: a VPN set for a card rides in its next overlay, signed for `card:<id>` and
    /// verifying under the policy key; the card's reported key shows beside it; a removal is
    /// an overlay without it. What the server can tell is wrong is refused before signing.
    #[tokio::test]
    async fn a_vpn_travels_in_the_cards_signed_overlay_and_its_key_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (state, db) = fresh_instance(dir.path()).await;
        let token = state
            .new_tokens("laptops", 1, None)
            .await
            .unwrap()
            .remove(0);
        db.enrol(&sha256_hex(token.as_bytes()), "card-1", unix_now(), |_| {
            Ok::<_, String>(((), "fp-1".to_string()))
        })
        .await
        .unwrap()
        .unwrap();
        let vpn = ManagedVpn {
            name: "corp".into(),
            peer_public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
            endpoint: "198.51.100.7:51820".parse().unwrap(),
            address: "10.20.255.2".parse().unwrap(),
            networks: vec!["10.20.0.0/16".into()],
            names: vec!["*.corp.example".into()],
            resolver: Some("10.20.0.53:53".parse().unwrap()),
            idle_lock_secs: 1800,
            keepalive_secs: 25,
        };
        let refused = |change: fn(&mut ManagedVpn)| {
            let mut vpn = vpn.clone();
            change(&mut vpn);
            vpn
        };
        for bad in [
            refused(|v| v.name = "Corp".into()),
            refused(|v| v.networks = vec!["10.20.0.0/99".into()]),
            refused(|v| v.networks = vec!["fd00::/8".into()]),
            refused(|v| v.networks.clear()),
        ] {
            let error = state.set_vpn("card-1", &bad).await.unwrap_err();
            assert_eq!(error.0, StatusCode::BAD_REQUEST, "{}", error.1);
        }
        assert_eq!(
            state.set_vpn("card-9", &vpn).await.unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(db.latest_version("card:card-1").await.unwrap(), 0);

        let overlay = |version: u64| {
            let db = db.clone();
            let key = state.fleet.policy_public;
            async move {
                let stored = db.bundle("card:card-1", version).await.unwrap().unwrap();
                bundle::verify(
                    stored.body.as_bytes(),
                    &Trust {
                        key: &key,
                        installed_version: version - 1,
                        group: "card:card-1",
                        now: chrono::Utc::now(),
                    },
                )
                .unwrap()
                .bundle
            }
        };
        assert_eq!(state.set_vpn("card-1", &vpn).await.unwrap(), 1);
        let pushed: ManagedVpns =
            serde_json::from_str(overlay(1).await.vpns.as_deref().unwrap()).unwrap();
        assert_eq!(pushed.vpns, vec![vpn.clone()]);

        let card = Known {
            id: "card-1".into(),
            group: "laptops".into(),
        };
        let key = |name: &str, public_key: &str| proto::policy::VpnKey {
            name: name.into(),
            public_key: public_key.into(),
        };
        let reported = VpnKeys {
            keys: vec![key("corp", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")],
        };
        state.receive_vpn_keys(&card, &reported).await.unwrap();
        let listed = db.all_vpns().await.unwrap();
        assert_eq!(
            listed[0].card_public_key.as_deref(),
            Some("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
        );
        // Only names and base64 keys are taken: they are shown on pages.
        for bad in [
            key("<b>", "AQ=="),
            key("corp", "<script>"),
            key("corp", &"A".repeat(45)),
        ] {
            let keys = VpnKeys { keys: vec![bad] };
            assert!(state.receive_vpn_keys(&card, &keys).await.is_err());
        }

        assert_eq!(state.remove_vpn("card-1", "corp").await.unwrap(), 2);
        assert_eq!(overlay(2).await.vpns, None, "the next overlay has none");
        assert_eq!(
            state.remove_vpn("card-1", "corp").await.unwrap_err().0,
            StatusCode::NOT_FOUND
        );
    }
}
