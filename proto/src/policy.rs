//! What a card and the policy server (`policyd`) say to each other, as JSON over HTTPS with
//! mutual TLS. The bundle itself travels as the signed bytes `rules::bundle` makes, never
//! re-encoded, so the card checks exactly what the signer signed.
//!
//! - **Card side:** `cardfw`'s managed mode (`cardfw enroll`, the poller) and the load
//!   generator `policyd-loadgen`, which plays thousands of cards.
//! - **Server side:** `policyd`'s HTTPS service.
//!
//! | call | who sends | body → answer |
//! |---|---|---|
//! | `POST` [`ENROL_PATH`] | a card without a certificate yet | [`EnrolRequest`] → [`EnrolResponse`] |
//! | `GET` [`BUNDLE_PATH`]`?after=N` | an enrolled card (client certificate) | → `200` signed bundle ([`BUNDLE_MEDIA_TYPE`], version in [`VERSION_HEADER`]) newer than N, or `204` when none came within the hold time |
//! | `POST` [`REPORT_PATH`] | an enrolled card | [`Report`] → `204` |
//! | `/v1/admin/…` | the administrator (bearer token) | see [`crate::policy_admin`] |
//!
//! Every refusal is a 4xx/5xx status with an [`ErrorBody`].

use serde::{Deserialize, Serialize};

/// Where a card enrols.
pub const ENROL_PATH: &str = "/v1/enrol";
/// Where a card long-polls for a newer bundle (`?after=<installed version>`).
pub const BUNDLE_PATH: &str = "/v1/bundle";
/// Where a card says what it did with a bundle.
pub const REPORT_PATH: &str = "/v1/report";

/// The media type of every JSON body (the admin calls refuse any other: see
/// [`crate::policy_admin`]).
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// The media type of a signed bundle: a poll's answer, and an upload of a bundle signed
/// elsewhere (`policyd upload`).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.cardwall.bundle";

/// The header on a bundle answer that names its version (the body is the signed bundle).
pub const VERSION_HEADER: &str = "x-cardwall-bundle-version";

/// The largest JSON body either side accepts. A CSR or a report is a few hundred bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// The largest bundle a card accepts: rule text and its list files.
pub const MAX_BUNDLE_BODY: usize = 8 * 1024 * 1024;

/// A card asks to join the fleet: its own key stays on the card, only the CSR travels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The one-time enrolment token the administrator handed out.
    pub token: String,
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
}

/// What an enrolled card pins in its sealed store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    /// The card's id in the fleet (also its certificate's common name).
    pub card_id: String,
    pub group: String,
    /// The card's client certificate, PEM, issued by the fleet CA.
    pub certificate_pem: String,
    /// The fleet CA: the only issuer the card accepts for the server from now on.
    pub ca_pem: String,
    /// The Ed25519 key every bundle must be signed with (SubjectPublicKeyInfo PEM).
    pub policy_key_pem: String,
}

/// What a card did with a bundle.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
        }
    }
}

/// `POST /v1/report`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The version the card runs now (after this bundle, or still the old one if refused).
    pub running_version: u64,
    /// The version offered, when the report is about a bundle.
    pub offered_version: Option<u64>,
    pub outcome: Outcome,
    /// Why it was refused, in words.
    pub error: Option<String>,
}

/// An error answer from policyd: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_garbage_are_refused() {
        assert!(serde_json::from_str::<EnrolRequest>(r#"{"token":"t","csr_pem":"x"}"#).is_ok());
        assert!(
            serde_json::from_str::<EnrolRequest>(r#"{"token":"t","csr_pem":"x","admin":true}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Report>(r#"{"running_version":1,"#).is_err());
        assert!(
            serde_json::from_str::<Report>(
                r#"{"running_version":1,"offered_version":2,"outcome":"maybe","error":null}"#
            )
            .is_err()
        );
        let report = Report {
            running_version: 3,
            offered_version: Some(4),
            outcome: Outcome::Refused,
            error: Some("expired".into()),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"refused\""));
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), report);
    }

    /// The card and the server are updated apart (a fleet is never all on one version): the
    /// field names are the contract, pinned here as text.
    #[test]
    fn the_json_shapes_stay_as_they_are() {
        let report = Report {
            running_version: 3,
            offered_version: None,
            outcome: Outcome::Applied,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"running_version":3,"offered_version":null,"outcome":"applied","error":null}"#
        );
        let enrolled = EnrolResponse {
            card_id: "0a1b".into(),
            group: "laptops".into(),
            certificate_pem: "C".into(),
            ca_pem: "A".into(),
            policy_key_pem: "K".into(),
        };
        let text = serde_json::to_string(&enrolled).unwrap();
        assert_eq!(
            text,
            r#"{"card_id":"0a1b","group":"laptops","certificate_pem":"C","ca_pem":"A","policy_key_pem":"K"}"#
        );
        assert_eq!(
            serde_json::from_str::<EnrolResponse>(&text).unwrap(),
            enrolled
        );
        assert_eq!(
            serde_json::to_string(&ErrorBody { error: "no".into() }).unwrap(),
            r#"{"error":"no"}"#
        );
    }
}
