//! policyd's HTTPS service. Every connection is TLS; a client certificate is asked for and,
//! when given, must chain to the fleet CA (rustls checks it in the handshake). Then each route
//! says who may call it:
//!
//! | route | caller |
//! |---|---|
//! | `POST /v1/enrol` | anyone holding a one-time token |
//! | `GET /v1/bundle?after=N`, `POST /v1/report` | an enrolled, unrevoked card (its certificate) |
//! | `/v1/admin/…` | the administrator: `Authorization: Bearer <admin.token>` only (never the page's cookie), and every POST as `Content-Type: application/json` (an upload as `application/vnd.cardwall.bundle`): a cross-site form or `fetch` can send neither |
//! | `/admin` | the administrator's page: a server-side session opened with the admin token, a CSRF token on every form (see [`crate::page`]) |
//!
//! Revocation is checked at the application layer after the handshake: the SHA-256 of the
//! presented certificate is looked up (in the card table, then in memory: a certificate's card
//! and group never change) on every card request and again before a held poll is answered,
//! and a revoked (or unknown) certificate gets 403. No CRL is needed. The revoked set is kept
//! in memory, updated at once by a revocation here and every second from the database, so a
//! revocation on another instance sharing a PostgreSQL database holds here within a second.
//! The hot path of a publish (thousands of woken polls) touches no database.
//!
//! Long poll: each group has a `watch` channel holding its newest bundle. A poll waits on it
//! (up to the hold time) for a version above `after`; a publish replaces the value and every
//! waiting card of the group wakes at once, served from memory. A background task looks for
//! versions another instance published (same database) and loads them into the channel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rules::bundle::{self, Bundle, Trust};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::db::{CardRecord, CardUpdate, Db, DbError, StoredBundle};
use crate::fleet::Fleet;
use crate::wire::{self, EnrolRequest, EnrolResponse, ErrorBody, Report};
use crate::{sha256_hex, unix_now};

/// How often the database is checked for versions published through another instance.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Card updates written in one transaction at most.
const MAX_BATCH: usize = 2000;

/// The largest rule upload accepted on the admin API.
const MAX_ADMIN_BODY: usize = wire::MAX_BUNDLE_BODY;

/// What the service is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a long poll is held before it is answered `204` (the card polls again).
    pub hold: Duration,
    /// How long an enrolment token stays valid when the request does not say.
    pub token_ttl: Duration,
}

/// A group's newest bundle, held in memory for the waiting cards.
#[derive(Debug)]
struct Latest {
    version: u64,
    body: Bytes,
}

/// One `Arc<AppState>` for every handler.
pub struct AppState {
    fleet: Fleet,
    db: Db,
    settings: Settings,
    groups: Mutex<HashMap<String, watch::Sender<Option<Arc<Latest>>>>>,
    /// Certificate fingerprint → card, filled on first use.
    known: Mutex<HashMap<String, Arc<Known>>>,
    /// Ids of revoked cards.
    revoked: Mutex<HashSet<String>>,
    /// To the task that writes card updates in batches (group commit).
    updates: tokio::sync::mpsc::Sender<(CardUpdate, tokio::sync::oneshot::Sender<bool>)>,
    /// The admin page's sessions.
    pub(crate) page_sessions: serve::session::Sessions,
}

/// What a certificate says about its card; fixed at enrolment.
#[derive(Debug)]
struct Known {
    id: String,
    group: String,
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
struct Peer(Option<String>);

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
            DbError::NoSuchCard(_) => StatusCode::NOT_FOUND,
            DbError::Sql(_) | DbError::Migrate(_) => {
                tracing::error!(%error, "database");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError(status, error.to_string())
    }
}

fn bad_request(what: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what.to_string())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("not a valid request: {e}")))
}

impl AppState {
    /// Loads every group's newest bundle into memory.
    pub async fn new(fleet: Fleet, db: Db, settings: Settings) -> Result<Arc<AppState>, DbError> {
        let (updates, queue) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_updates(db.clone(), queue));
        let state = Arc::new(AppState {
            page_sessions: crate::page::sessions(),
            updates,
            fleet,
            db,
            settings,
            groups: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashSet::new()),
        });
        state.sync().await?;
        Ok(state)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn channel(&self, group: &str) -> watch::Sender<Option<Arc<Latest>>> {
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
    async fn sync(&self) -> Result<(), DbError> {
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

    fn is_admin(&self, headers: &HeaderMap) -> bool {
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
    async fn card(&self, peer: &Peer) -> Result<Arc<Known>, ApiError> {
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

    fn check_not_revoked(&self, card: &Known) -> Result<(), ApiError> {
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
    async fn record(&self, update: CardUpdate) -> Result<(), ApiError> {
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
        let mut versions: Vec<_> = groups
            .iter()
            .map(|(g, tx)| (g.clone(), tx.borrow().as_ref().map_or(0, |l| l.version)))
            .collect();
        versions.sort();
        versions
    }

    /// Validates, versions, signs and stores rules for a group; returns the version.
    pub async fn publish(&self, request: &PublishRequest) -> Result<u64, ApiError> {
        let Some(key) = &self.fleet.policy_key else {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "the signing key is offline (no policy.key): sign with `policyd sign` and upload"
                    .into(),
            ));
        };
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
        let expires_in = request.expires_in_secs.clamp(60, 10 * 365 * 86_400);
        // Two publishers (or instances) may race for a number: the loser takes the next.
        for _ in 0..5 {
            let now = chrono::Utc::now();
            let version = self.db.latest_version(&request.group).await? + 1;
            let bundle = Bundle {
                version,
                group: request.group.clone(),
                issued_at: now,
                expires_at: now + chrono::Duration::seconds(expires_in as i64),
                rules: (request.rules_name.clone(), request.rules_text.clone()),
                list_files: request.lists.clone(),
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

/// `POST /v1/admin/publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub group: String,
    pub rules_name: String,
    pub rules_text: String,
    /// The list files the rules name: (name, text).
    pub lists: Vec<(String, String)>,
    pub expires_in_secs: u64,
}

/// `POST /v1/admin/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensRequest {
    pub group: String,
    pub count: usize,
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensResponse {
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    pub group: String,
    pub version: u64,
}

/// `GET /v1/admin/cards`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Each group's newest version.
    pub groups: Vec<(String, u64)>,
    pub cards: Vec<CardRecord>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/enrol", post(enrol))
        .route("/v1/bundle", get(poll))
        .route("/v1/report", post(report))
        .route("/v1/admin/tokens", post(admin_tokens))
        .route("/v1/admin/publish", post(admin_publish))
        .route("/v1/admin/upload", post(admin_upload))
        .route("/v1/admin/cards", get(admin_cards))
        .route("/v1/admin/cards/{id}/revoke", post(admin_revoke))
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
        }
    });
    // No cap: every enrolled card holds a connection in its long poll.
    let how = serve::accept::Listener::new("policy server");
    match serve::http::https(listener, how, tls, app).await {}
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
}

async fn poll(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(PollQuery { after }) =
        query.map_err(|_| bad_request("write /v1/bundle?after=<installed version>"))?;
    let card = state.card(&peer).await?;
    state
        .record(CardUpdate::Seen {
            card_id: card.id.clone(),
            at: unix_now(),
        })
        .await?;
    let mut latest = state.channel(&card.group).subscribe();
    // A block, so the watch guard (not Send) is gone before the next await.
    let bundle = {
        let newer = tokio::time::timeout(
            state.settings.hold,
            latest.wait_for(|l| l.as_ref().is_some_and(|l| l.version > after)),
        )
        .await;
        match newer {
            Ok(Ok(found)) => found.clone(),
            _ => None,
        }
    };
    let Some(bundle) = bundle else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // The card may have been revoked while its poll was held.
    state.check_not_revoked(&card)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.cardwall.bundle".to_string(),
            ),
            (
                header::HeaderName::from_static(wire::VERSION_HEADER),
                bundle.version.to_string(),
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
    if report.outcome == wire::Outcome::Refused {
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

const JSON: &str = "application/json";
/// What `policyd upload` sends: a signed bundle's bytes.
const BUNDLE: &str = "application/vnd.cardwall.bundle";

async fn admin_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin_post(&state, &headers, JSON)?;
    let request: TokensRequest = parse_json(&body)?;
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
    require_admin_post(&state, &headers, JSON)?;
    let request: PublishRequest = parse_json(&body)?;
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
    require_admin_post(&state, &headers, BUNDLE)?;
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
    })
    .into_response())
}

async fn admin_revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin_post(&state, &headers, JSON)?;
    state.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    async fn instance(dir: &std::path::Path, db: &Db) -> Arc<AppState> {
        AppState::new(
            Fleet::load(dir).unwrap(),
            db.clone(),
            Settings {
                hold: Duration::from_secs(1),
                token_ttl: Duration::from_secs(60),
            },
        )
        .await
        .unwrap()
    }

    fn request(rules: &str) -> PublishRequest {
        PublishRequest {
            group: "laptops".into(),
            rules_name: "rules.txt".into(),
            rules_text: rules.into(),
            lists: Vec::new(),
            expires_in_secs: 3600,
        }
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
        let (_, csr) = crate::client::new_key_and_csr().unwrap();
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

    /// Issue 13.12: the page's cookie never opens the admin API, and the API takes JSON only:
    /// a cross-site `fetch` (the browser adds the cookie; the body is `text/plain`, which needs
    /// no preflight) is refused. Page sessions are random, server-side, and end at logout.
    #[tokio::test]
    async fn the_admin_api_takes_the_bearer_token_and_json_only() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let dir = tempfile::tempdir().unwrap();
        Fleet::init(&dir.path().join("fleet"), &["127.0.0.1".into()]).unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await
            .unwrap();
        let state = instance(&dir.path().join("fleet"), &db).await;
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
        let (status, _, _) = send(post("/v1/admin/tokens", &session, JSON, body.clone())).await;
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
        let (status, _, _) = send(post("/admin/revoke", &session, form, "card=x".into())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(post(
            "/admin/logout",
            &session,
            form,
            format!("csrf={csrf}"),
        ))
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, page) = send(get("/admin", &session)).await;
        assert!(page.contains("Admin token"), "logged out: {page}");
        let (status, _, _) = send(post(
            "/admin/revoke",
            &session,
            form,
            format!("csrf={csrf}&card=x"),
        ))
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
