-- Issue 16: users of a managed card ask for access to what it blocked; the administrator
-- approves (the rule goes into the card's overlay, possibly until a time) or declines.
-- Same dialect rules as 0001: TEXT, BIGINT, Unix seconds, no autoincrement.
CREATE TABLE access_requests (
    card_id TEXT NOT NULL,
    -- The card's id for the request: a resend finds it and changes nothing.
    id TEXT NOT NULL,
    protocol TEXT NOT NULL,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    path TEXT,
    rule TEXT NOT NULL,
    blocked_at BIGINT NOT NULL,
    reason TEXT,
    received_at BIGINT NOT NULL,
    -- open, approved or declined.
    state TEXT NOT NULL,
    decided_at BIGINT,
    approved_rule TEXT,
    approved_until BIGINT,
    message TEXT,
    PRIMARY KEY (card_id, id)
);

CREATE INDEX access_requests_state ON access_requests (state, card_id);
