-- One schema for SQLite and PostgreSQL: only types and statements both read the same way
-- (TEXT, BIGINT, no autoincrement; times are Unix seconds).
CREATE TABLE bundles (
    grp TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (grp, version)
);

CREATE TABLE enrol_tokens (
    token_hash TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    card_id TEXT
);

CREATE TABLE cards (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT,
    running_version BIGINT NOT NULL,
    last_seen BIGINT,
    last_outcome TEXT,
    last_error TEXT
);
