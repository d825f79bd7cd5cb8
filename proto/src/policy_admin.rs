//! What the fleet's administrator and the policy server (`policyd`) say to each other, as JSON
//! over HTTPS. The server's certificate is checked against the fleet CA; the caller proves
//! itself with `Authorization: Bearer <admin.token>` (never a cookie), and every `POST` body is
//! `application/json` (an upload: [`crate::policy::BUNDLE_MEDIA_TYPE`]), which a form or a
//! cross-site `fetch` cannot send.
//!
//! - **Caller:** `policyd`'s admin commands (`policyd token|publish|upload|status|revoke`,
//!   through `policyd::admin::AdminClient`) and the load generator.
//! - **Server:** `policyd`'s HTTPS service.
//!
//! | call | body → answer |
//! |---|---|
//! | `POST` [`TOKENS_PATH`] | [`TokensRequest`] → [`TokensResponse`] |
//! | `POST` [`PUBLISH_PATH`] | [`PublishRequest`] → [`PublishResponse`] |
//! | `POST` [`UPLOAD_PATH`]`?group=G` | a signed bundle → [`PublishResponse`] |
//! | `GET` [`CARDS_PATH`] | → [`FleetStatus`] |
//! | `POST` `/v1/admin/cards/<id>/revoke` ([`revoke_path`]) | `{}` → `204` |
//! | `GET` [`ACCESS_REQUESTS_PATH`] | → [`OpenRequests`] |
//! | `POST` [`APPROVE_PATH`] | [`ApproveRequest`] → [`ApproveResponse`] |
//! | `POST` [`DECLINE_PATH`] | [`DeclineRequest`] → `204` |
//! | `POST` [`VPN_SET_PATH`] | [`SetVpnRequest`] → [`VpnResponse`] |
//! | `POST` [`VPN_REMOVE_PATH`] | [`RemoveVpnRequest`] → [`VpnResponse`] |
//!
//! Refusals carry a [`crate::policy::ErrorBody`], as on the card calls.

use serde::{Deserialize, Serialize};

/// Where enrolment tokens are made.
pub const TOKENS_PATH: &str = "/v1/admin/tokens";
/// Where rules are published (the server signs them).
pub const PUBLISH_PATH: &str = "/v1/admin/publish";
/// Where a bundle signed elsewhere is uploaded.
pub const UPLOAD_PATH: &str = "/v1/admin/upload";
/// The fleet: every group's newest version and every card.
pub const CARDS_PATH: &str = "/v1/admin/cards";

/// The fleet's open access requests (what users of managed cards asked for).
pub const ACCESS_REQUESTS_PATH: &str = "/v1/admin/access-requests";
/// Where an access request is approved: its rule goes into the card's overlay.
pub const APPROVE_PATH: &str = "/v1/admin/access-requests/approve";
/// Where an access request is declined, with a message for the user.
pub const DECLINE_PATH: &str = "/v1/admin/access-requests/decline";

/// Where a VPN is pushed to a card (added, or its settings changed).
pub const VPN_SET_PATH: &str = "/v1/admin/vpns/set";
/// Where a pushed VPN is taken off a card.
pub const VPN_REMOVE_PATH: &str = "/v1/admin/vpns/remove";

/// Where card `card_id` is revoked.
pub fn revoke_path(card_id: &str) -> String {
    format!("{CARDS_PATH}/{card_id}/revoke")
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
    /// PEM text of CA certificates the cards trust for inspected sites (see
    /// `rules::bundle`: certificates only, never a private key). Absent in JSON from callers
    /// that predate it, and left out when `None`, so older servers still take the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_cas: Option<String>,
}

/// `POST /v1/admin/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensRequest {
    pub group: String,
    pub count: usize,
    pub ttl_secs: Option<u64>,
}

/// The one-time enrolment tokens made; the server keeps only their hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensResponse {
    pub tokens: Vec<String>,
}

/// The version a publish or an upload became.
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
    /// Every VPN pushed to a card. Absent from servers that predate managed VPNs, and left
    /// out when there is none, so the document reads as it did before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpns: Vec<CardVpn>,
}

/// One VPN pushed to one card, and the card's public key for it once the card reported it:
/// what the corporate peer is configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardVpn {
    pub card_id: String,
    pub vpn: crate::policy::ManagedVpn,
    /// Base64, as `wg` prints it; `None` until the card reports it.
    pub card_public_key: Option<String>,
    /// When the card reported it, Unix seconds.
    pub key_reported_at: Option<i64>,
}

/// `POST /v1/admin/vpns/set`: the card's overlay carries `vpn` from its next version on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVpnRequest {
    pub card_id: String,
    pub vpn: crate::policy::ManagedVpn,
}

/// `POST /v1/admin/vpns/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveVpnRequest {
    pub card_id: String,
    pub name: String,
}

/// The overlay version that carries the card's VPNs after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnResponse {
    pub overlay_version: u64,
}

/// `GET /v1/admin/access-requests`: the open requests, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequests {
    pub requests: Vec<OpenRequest>,
    /// Requests refused (malformed, over a limit) since the server started.
    pub refused: u64,
}

/// One open request and the card it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    pub card_id: String,
    pub request: crate::policy::AccessRequest,
    /// When the server received it, Unix seconds.
    pub received_at: i64,
}

/// `POST /v1/admin/access-requests/approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub card_id: String,
    pub id: String,
    /// One unnamed rule; `None`: the rule that allows just what was blocked
    /// ([`crate::policy::Blocked::suggested_rule`]).
    pub rule: Option<String>,
    /// For how long; `None`: no limit.
    pub minutes: Option<u64>,
}

/// The overlay version that carries an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveResponse {
    pub overlay_version: u64,
}

/// `POST /v1/admin/access-requests/decline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineRequest {
    pub card_id: String,
    pub id: String,
    pub message: String,
}

/// One card as the fleet view shows it (and as the server stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    pub id: String,
    pub group: String,
    /// SHA-256 of the card's certificate (DER), hex: how a connection is matched to a card.
    pub fingerprint: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub running_version: u64,
    pub last_seen: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names and shapes are the contract between `policyd` binaries of different
    /// versions (an admin's CLI and a running server): pinned here as text.
    #[test]
    fn the_json_shapes_stay_as_they_are() {
        let publish = PublishRequest {
            group: "laptops".into(),
            rules_name: "rules.txt".into(),
            rules_text: "default deny\n".into(),
            lists: vec![("ads.list".into(), "ads.example\n".into())],
            expires_in_secs: 3600,
            trusted_cas: None,
        };
        let old_json = r#"{"group":"laptops","rules_name":"rules.txt","rules_text":"default deny\n","lists":[["ads.list","ads.example\n"]],"expires_in_secs":3600}"#;
        assert_eq!(serde_json::to_string(&publish).unwrap(), old_json);
        // JSON from a caller that predates `trusted_cas` still parses, to none.
        assert_eq!(
            serde_json::from_str::<PublishRequest>(old_json)
                .unwrap()
                .trusted_cas,
            None
        );
        let with_cas = PublishRequest {
            trusted_cas: Some("-----BEGIN CERTIFICATE-----\n".into()),
            ..publish
        };
        let text = serde_json::to_string(&with_cas).unwrap();
        assert_eq!(
            text,
            r#"{"group":"laptops","rules_name":"rules.txt","rules_text":"default deny\n","lists":[["ads.list","ads.example\n"]],"expires_in_secs":3600,"trusted_cas":"-----BEGIN CERTIFICATE-----\n"}"#
        );
        assert_eq!(
            serde_json::from_str::<PublishRequest>(&text)
                .unwrap()
                .trusted_cas,
            with_cas.trusted_cas
        );
        let tokens = TokensRequest {
            group: "laptops".into(),
            count: 2,
            ttl_secs: None,
        };
        assert_eq!(
            serde_json::to_string(&tokens).unwrap(),
            r#"{"group":"laptops","count":2,"ttl_secs":null}"#
        );
        // No `ttl_secs` means the server's default.
        assert!(serde_json::from_str::<TokensRequest>(r#"{"group":"g","count":1}"#).is_ok());
        assert!(
            serde_json::from_str::<TokensRequest>(r#"{"group":"g","count":1,"admin":1}"#).is_err()
        );

        let status = FleetStatus {
            groups: vec![("laptops".into(), 4)],
            cards: vec![CardRecord {
                id: "0a1b".into(),
                group: "laptops".into(),
                fingerprint: "ff".into(),
                enrolled_at: 1,
                revoked_at: None,
                running_version: 4,
                last_seen: Some(2),
                last_outcome: Some("applied".into()),
                last_error: None,
            }],
            vpns: Vec::new(),
        };
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(
            text,
            r#"{"groups":[["laptops",4]],"cards":[{"id":"0a1b","group":"laptops","fingerprint":"ff","enrolled_at":1,"revoked_at":null,"running_version":4,"last_seen":2,"last_outcome":"applied","last_error":null}]}"#
        );
        let back: FleetStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back.cards, status.cards);
        assert_eq!(back.groups, status.groups);
        assert_eq!(revoke_path("0a1b"), "/v1/admin/cards/0a1b/revoke");

        let approve = ApproveRequest {
            card_id: "0a1b".into(),
            id: "ff".into(),
            rule: None,
            minutes: Some(10),
        };
        assert_eq!(
            serde_json::to_string(&approve).unwrap(),
            r#"{"card_id":"0a1b","id":"ff","rule":null,"minutes":10}"#
        );
        let decline = DeclineRequest {
            card_id: "0a1b".into(),
            id: "ff".into(),
            message: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&decline).unwrap(),
            r#"{"card_id":"0a1b","id":"ff","message":"no"}"#
        );
        assert_eq!(
            serde_json::to_string(&ApproveResponse { overlay_version: 2 }).unwrap(),
            r#"{"overlay_version":2}"#
        );
    }
}
