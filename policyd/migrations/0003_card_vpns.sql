-- Issue 15: the VPNs pushed to each card in its overlay, and the card's public key for each
-- (the card makes its key and reports only the public one; the corporate peer is given it).
-- Same dialect rules as 0001: TEXT, BIGINT, Unix seconds.
CREATE TABLE card_vpns (
    card_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The peer settings as the card receives them: `proto::policy::ManagedVpn` as JSON.
    settings TEXT NOT NULL,
    -- Base64, as `wg` prints it; NULL until the card reports it.
    card_public_key TEXT,
    key_reported_at BIGINT,
    PRIMARY KEY (card_id, name)
);
