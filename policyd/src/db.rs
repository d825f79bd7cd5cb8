//! Cards, enrolment tokens and bundles, in SQLite (a file, nothing to set up) or PostgreSQL
//! (several policyd instances serving one fleet). One set of queries for both, checked at run
//! time (`sqlx::Any`), and one migration (`migrations/`), so what the SQLite tests prove holds
//! for PostgreSQL too, and the PostgreSQL tests run the very same code.

use std::borrow::Cow;

use proto::policy_admin::CardRecord;
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
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("fleet"),
        MigrationType::Simple,
        include_str!("../migrations/0001_fleet.sql").into_sql_str(),
        false,
    )])
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

#[cfg(test)]
mod tests;
