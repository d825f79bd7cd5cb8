//! Cards, enrolment tokens and bundles, in SQLite (a file, nothing to set up) or PostgreSQL
//! (several policyd instances serving one fleet). One set of queries for both, checked at run
//! time (`sqlx::Any`), and one migration (`migrations/`), so what the SQLite tests prove holds
//! for PostgreSQL too, and the PostgreSQL tests run the very same code.

use std::borrow::Cow;

use proto::policy::{AccessProtocol, AccessRequest, AccessState, Blocked};
use proto::policy::{ManagedVpn, VpnKey};
use proto::policy_admin::{CardRecord, CardVpn};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unknown enrolment token")]
    UnknownToken,
    #[error("this enrolment token was already used")]
    TokenUsed,
    #[error("this enrolment token expired")]
    TokenExpired,
    #[error("group `{group}` already has version {version}")]
    VersionTaken { group: String, version: u64 },
    #[error("no card `{0}`")]
    NoSuchCard(String),
    #[error("this card has {0} requests open already: wait for the administrator")]
    CardRequestsFull(usize),
    #[error("the server holds {0} open requests already: try again later")]
    ServerRequestsFull(usize),
    #[error("no open request `{id}` of card `{card_id}`")]
    NoSuchOpenRequest { card_id: String, id: String },
    #[error("a stored request does not read back: {0}")]
    BadRow(String),
    #[error("card `{card_id}` has no VPN `{name}`")]
    NoSuchVpn { card_id: String, name: String },
}

/// One request as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub card_id: String,
    pub request: AccessRequest,
    pub received_at: i64,
    pub state: AccessState,
    pub decided_at: Option<i64>,
}

/// What happened to a request the card sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    New,
    /// The server had it already (a resend after a lost answer): nothing changed.
    Again,
}

/// The administrator's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve { rule: String, until: Option<i64> },
    Decline { message: String },
}

/// An approved rule in force for a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub request_id: String,
    pub rule: String,
    pub until: Option<i64>,
}

/// What a card's request changes in its row. Many are written in one transaction
/// ([`Db::record`]): after a publish thousands of cards report within a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardUpdate {
    /// A poll arrived.
    Seen { card_id: String, at: i64 },
    /// A report arrived.
    Report {
        card_id: String,
        at: i64,
        running_version: u64,
        outcome: String,
        error: Option<String>,
    },
}

/// One signed bundle as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    pub group: String,
    pub version: u64,
    pub body: String,
    pub published_at: i64,
    pub expires_at: i64,
}

/// The store. Cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("fleet"),
            MigrationType::Simple,
            include_str!("../migrations/0001_fleet.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("access requests"),
            MigrationType::Simple,
            include_str!("../migrations/0002_access_requests.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("card vpns"),
            MigrationType::Simple,
            include_str!("../migrations/0003_card_vpns.sql").into_sql_str(),
            false,
        ),
    ])
}

const REQUEST_COLUMNS: &str = "card_id, id, protocol, host, port, path, rule, blocked_at, \
     reason, received_at, state, decided_at, approved_rule, approved_until, message";

fn request_from_row(row: &AnyRow) -> Result<StoredRequest, DbError> {
    let protocol: String = row.try_get("protocol")?;
    let state: String = row.try_get("state")?;
    let bad = |what: &str| DbError::BadRow(what.to_string());
    let state = match state.as_str() {
        "open" => AccessState::Open,
        "approved" => AccessState::Approved {
            rule: row
                .try_get::<Option<String>, _>("approved_rule")?
                .ok_or_else(|| bad("an approval without its rule"))?,
            until: row.try_get("approved_until")?,
        },
        "declined" => AccessState::Declined {
            message: row
                .try_get::<Option<String>, _>("message")?
                .unwrap_or_default(),
        },
        other => return Err(bad(&format!("state `{other}`"))),
    };
    Ok(StoredRequest {
        card_id: row.try_get("card_id")?,
        request: AccessRequest {
            id: row.try_get("id")?,
            blocked: Blocked {
                protocol: AccessProtocol::parse(&protocol)
                    .ok_or_else(|| bad(&format!("protocol `{protocol}`")))?,
                host: row.try_get("host")?,
                port: u16::try_from(row.try_get::<i64, _>("port")?).map_err(|_| bad("port"))?,
                path: row.try_get("path")?,
                rule: row.try_get("rule")?,
                at: row.try_get("blocked_at")?,
            },
            reason: row.try_get("reason")?,
        },
        received_at: row.try_get("received_at")?,
        state,
        decided_at: row.try_get("decided_at")?,
    })
}

const CARD_COLUMNS: &str = "id, grp, fingerprint, enrolled_at, revoked_at, running_version, \
     last_seen, last_outcome, last_error";

fn card_from_row(row: &AnyRow) -> Result<CardRecord, sqlx::Error> {
    Ok(CardRecord {
        id: row.try_get("id")?,
        group: row.try_get("grp")?,
        fingerprint: row.try_get("fingerprint")?,
        enrolled_at: row.try_get("enrolled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        running_version: row.try_get::<i64, _>("running_version")?.max(0) as u64,
        last_seen: row.try_get("last_seen")?,
        last_outcome: row.try_get("last_outcome")?,
        last_error: row.try_get("last_error")?,
    })
}

fn bundle_from_row(row: &AnyRow) -> Result<StoredBundle, sqlx::Error> {
    Ok(StoredBundle {
        group: row.try_get("grp")?,
        version: row.try_get::<i64, _>("version")?.max(0) as u64,
        body: row.try_get("body")?,
        published_at: row.try_get("published_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// Whether an insert failed on a primary key or unique constraint.
fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

impl Db {
    /// `sqlite:///path/policyd.db` (created if missing) or `postgres://…`. Applies the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Readers never wait for the writer; a crash loses at most the last
                        // transactions, never consistency.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        migrator().run(&pool).await?;
        Ok(Db { pool })
    }

    pub async fn add_token(
        &self,
        token_hash: &str,
        group: &str,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query("INSERT INTO enrol_tokens (token_hash, grp, expires_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(group)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Spends a token and records the card in the token's group, in one transaction: the
    /// token is used once, even with several policyd instances racing. `issue` makes the
    /// card's certificate for the group and returns its fingerprint (and whatever else the
    /// caller needs); if it fails, nothing is spent.
    pub async fn enrol<T, E>(
        &self,
        token_hash: &str,
        card_id: &str,
        now: i64,
        issue: impl FnOnce(&str) -> Result<(T, String), E>,
    ) -> Result<Result<(T, String), E>, DbError> {
        let mut tx = self.pool.begin().await?;
        // The claim is the transaction's first statement, a write: SQLite takes its write
        // lock here (a read first would fail to upgrade when another enrolment committed
        // meanwhile), PostgreSQL locks the row, so racing enrolments queue and one wins.
        let claimed = sqlx::query(
            "UPDATE enrol_tokens SET used_at = $1, card_id = $2 \
             WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $4",
        )
        .bind(now)
        .bind(card_id)
        .bind(token_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT grp, expires_at, used_at, card_id FROM enrol_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DbError::UnknownToken)?;
        if claimed.rows_affected() != 1 {
            return Err(if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
                DbError::TokenUsed
            } else {
                DbError::TokenExpired
            });
        }
        let group: String = row.try_get("grp")?;
        let (issued, fingerprint) = match issue(&group) {
            Ok(issued) => issued,
            Err(e) => return Ok(Err(e)),
        };
        sqlx::query(
            "INSERT INTO cards (id, grp, fingerprint, enrolled_at, running_version) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(card_id)
        .bind(&group)
        .bind(&fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok((issued, group)))
    }

    pub async fn card_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<CardRecord>, DbError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM cards WHERE fingerprint = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(card_from_row).transpose()?)
    }

    /// Every card, by group then id.
    pub async fn cards(&self) -> Result<Vec<CardRecord>, DbError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM cards ORDER BY grp, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(card_from_row).collect::<Result<_, _>>()?)
    }

    /// Marks a card revoked; its certificate is refused from then on. Revoking twice keeps
    /// the first time.
    pub async fn revoke(&self, card_id: &str, now: i64) -> Result<(), DbError> {
        let exists = sqlx::query("SELECT id FROM cards WHERE id = $1")
            .bind(card_id)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(DbError::NoSuchCard(card_id.to_string()));
        }
        sqlx::query("UPDATE cards SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(card_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ids of every revoked card.
    pub async fn revoked_ids(&self) -> Result<std::collections::HashSet<String>, DbError> {
        let rows = sqlx::query("SELECT id FROM cards WHERE revoked_at IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// Writes card updates, in order, in one transaction.
    pub async fn record(&self, updates: &[CardUpdate]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for update in updates {
            match update {
                CardUpdate::Seen { card_id, at } => {
                    sqlx::query("UPDATE cards SET last_seen = $1 WHERE id = $2")
                        .bind(*at)
                        .bind(card_id)
                        .execute(&mut *tx)
                        .await?;
                }
                CardUpdate::Report {
                    card_id,
                    at,
                    running_version,
                    outcome,
                    error,
                } => {
                    sqlx::query(
                        "UPDATE cards SET last_seen = $1, running_version = $2, \
                         last_outcome = $3, last_error = $4 WHERE id = $5",
                    )
                    .bind(*at)
                    .bind((*running_version).min(i64::MAX as u64) as i64)
                    .bind(outcome)
                    .bind(error.as_deref())
                    .bind(card_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest version of a group, 0 when it has none.
    pub async fn latest_version(&self, group: &str) -> Result<u64, DbError> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM bundles WHERE grp = $1")
            .bind(group)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0).max(0) as u64)
    }

    /// Stores a signed bundle. A version the group already has is refused (two publishers
    /// racing: the loser tries the next number).
    pub async fn insert_bundle(&self, bundle: &StoredBundle) -> Result<(), DbError> {
        let result = sqlx::query(
            "INSERT INTO bundles (grp, version, body, published_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&bundle.group)
        .bind(bundle.version as i64)
        .bind(&bundle.body)
        .bind(bundle.published_at)
        .bind(bundle.expires_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(DbError::VersionTaken {
                group: bundle.group.clone(),
                version: bundle.version,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest version of every group: what another instance may have published.
    pub async fn latest_versions(&self) -> Result<Vec<(String, u64)>, DbError> {
        let rows = sqlx::query("SELECT grp, MAX(version) AS v FROM bundles GROUP BY grp")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("grp")?,
                    row.try_get::<i64, _>("v")?.max(0) as u64,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub async fn bundle(&self, group: &str, version: u64) -> Result<Option<StoredBundle>, DbError> {
        let row = sqlx::query(
            "SELECT grp, version, body, published_at, expires_at FROM bundles \
             WHERE grp = $1 AND version = $2",
        )
        .bind(group)
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(bundle_from_row).transpose()?)
    }
}

/// Access requests (issue 16) and the approvals that make each card's overlay.
impl Db {
    /// Stores a card's request unless it is there already (same card, same id). Refused when
    /// the card has `per_card` requests open or the server `per_server`: a card (or a fleet)
    /// cannot fill the administrator's page or the disk.
    pub async fn receive_request(
        &self,
        card_id: &str,
        request: &AccessRequest,
        now: i64,
        per_card: usize,
        per_server: usize,
    ) -> Result<Received, DbError> {
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query("SELECT id FROM access_requests WHERE card_id = $1 AND id = $2")
            .bind(card_id)
            .bind(&request.id)
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Ok(Received::Again);
        }
        let card_open: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM access_requests WHERE state = 'open' AND card_id = $1",
        )
        .bind(card_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if card_open.max(0) as usize >= per_card {
            return Err(DbError::CardRequestsFull(per_card));
        }
        let server_open: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM access_requests WHERE state = 'open'")
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if server_open.max(0) as usize >= per_server {
            return Err(DbError::ServerRequestsFull(per_server));
        }
        let blocked = &request.blocked;
        let inserted = sqlx::query(
            "INSERT INTO access_requests (card_id, id, protocol, host, port, path, rule, \
             blocked_at, reason, received_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open')",
        )
        .bind(card_id)
        .bind(&request.id)
        .bind(blocked.protocol.as_str())
        .bind(&blocked.host)
        .bind(i64::from(blocked.port))
        .bind(blocked.path.as_deref())
        .bind(&blocked.rule)
        .bind(blocked.at)
        .bind(request.reason.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Another instance stored the same resend a moment ago.
            Err(e) if is_conflict(&e) => return Ok(Received::Again),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Received::New)
    }

    /// Every request of one card, newest first.
    pub async fn card_requests(&self, card_id: &str) -> Result<Vec<StoredRequest>, DbError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM access_requests WHERE card_id = $1 \
             ORDER BY received_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(card_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(request_from_row).collect()
    }

    /// Every open request of the fleet, oldest first (the administrator's queue), at most
    /// `limit`.
    pub async fn open_requests(&self, limit: usize) -> Result<Vec<StoredRequest>, DbError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM access_requests WHERE state = 'open' \
             ORDER BY received_at, card_id, id LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(request_from_row).collect()
    }

    /// Records the administrator's decision on an open request. A request decided already
    /// (by another administrator, or another instance) is not decided twice.
    pub async fn decide(
        &self,
        card_id: &str,
        id: &str,
        decision: &Decision,
        now: i64,
    ) -> Result<(), DbError> {
        let (state, rule, until, message) = match decision {
            Decision::Approve { rule, until } => ("approved", Some(rule.as_str()), *until, None),
            Decision::Decline { message } => ("declined", None, None, Some(message.as_str())),
        };
        let changed = sqlx::query(
            "UPDATE access_requests SET state = $1, decided_at = $2, approved_rule = $3, \
             approved_until = $4, message = $5 \
             WHERE card_id = $6 AND id = $7 AND state = 'open'",
        )
        .bind(state)
        .bind(now)
        .bind(rule)
        .bind(until)
        .bind(message)
        .bind(card_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if changed.rows_affected() == 1 {
            Ok(())
        } else {
            Err(DbError::NoSuchOpenRequest {
                card_id: card_id.to_string(),
                id: id.to_string(),
            })
        }
    }

    /// A card's approvals in force at `now`, oldest decision first: its overlay's rules.
    pub async fn approvals(&self, card_id: &str, now: i64) -> Result<Vec<Approval>, DbError> {
        let rows = sqlx::query(
            "SELECT id, approved_rule, approved_until FROM access_requests \
             WHERE card_id = $1 AND state = 'approved' \
             AND (approved_until IS NULL OR approved_until > $2) \
             ORDER BY decided_at, id",
        )
        .bind(card_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Approval {
                    request_id: row.try_get("id")?,
                    rule: row
                        .try_get::<Option<String>, _>("approved_rule")?
                        .unwrap_or_default(),
                    until: row.try_get("approved_until")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Cards whose newest overlay still holds an approval that has run out by `now`: each
    /// needs a new overlay without it. Decided from the database alone (the approval's end
    /// against the overlay's publication), so it holds across restarts and instances.
    pub async fn cards_with_expired_approvals(&self, now: i64) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.card_id FROM access_requests a WHERE a.state = 'approved' \
             AND a.approved_until IS NOT NULL AND a.approved_until <= $1 \
             AND a.approved_until > COALESCE((SELECT MAX(b.published_at) FROM bundles b \
             WHERE b.grp = 'card:' || a.card_id), 0)",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get("card_id"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}

/// The VPNs pushed to cards (issue 15).
impl Db {
    /// Pushes `vpn` to `card_id`, or changes its settings; a key the card reported for the
    /// name stays (the card keeps its key for the name).
    pub async fn set_vpn(&self, card_id: &str, vpn: &ManagedVpn) -> Result<(), DbError> {
        let exists = sqlx::query("SELECT id FROM cards WHERE id = $1")
            .bind(card_id)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(DbError::NoSuchCard(card_id.to_string()));
        }
        let settings = serde_json::to_string(vpn).expect("plain data serialises");
        sqlx::query(
            "INSERT INTO card_vpns (card_id, name, settings) VALUES ($1, $2, $3) \
             ON CONFLICT (card_id, name) DO UPDATE SET settings = excluded.settings",
        )
        .bind(card_id)
        .bind(&vpn.name)
        .bind(&settings)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_vpn(&self, card_id: &str, name: &str) -> Result<(), DbError> {
        let removed = sqlx::query("DELETE FROM card_vpns WHERE card_id = $1 AND name = $2")
            .bind(card_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(DbError::NoSuchVpn {
                card_id: card_id.to_string(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// The VPNs pushed to `card_id`, by name: what its next overlay carries.
    pub async fn card_vpns(&self, card_id: &str) -> Result<Vec<ManagedVpn>, DbError> {
        let rows = sqlx::query("SELECT settings FROM card_vpns WHERE card_id = $1 ORDER BY name")
            .bind(card_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vpn_from_row).collect()
    }

    /// Every pushed VPN with the card's reported key, by card then name.
    pub async fn all_vpns(&self) -> Result<Vec<CardVpn>, DbError> {
        let rows = sqlx::query(
            "SELECT card_id, settings, card_public_key, key_reported_at FROM card_vpns \
             ORDER BY card_id, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| -> Result<CardVpn, DbError> {
                Ok(CardVpn {
                    card_id: row.try_get("card_id")?,
                    vpn: vpn_from_row(row)?,
                    card_public_key: row.try_get("card_public_key")?,
                    key_reported_at: row.try_get("key_reported_at")?,
                })
            })
            .collect()
    }

    /// Records the public keys `card_id` reported, for the VPNs pushed to it (a key for a
    /// name not pushed to it is not kept).
    pub async fn record_vpn_keys(
        &self,
        card_id: &str,
        keys: &[VpnKey],
        now: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "UPDATE card_vpns SET card_public_key = $1, key_reported_at = $2 \
                 WHERE card_id = $3 AND name = $4",
            )
            .bind(&key.public_key)
            .bind(now)
            .bind(card_id)
            .bind(&key.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn vpn_from_row(row: &AnyRow) -> Result<ManagedVpn, DbError> {
    let settings: String = row.try_get("settings")?;
    serde_json::from_str(&settings).map_err(|e| DbError::BadRow(format!("a VPN's settings: {e}")))
}

#[cfg(test)]
mod tests;
