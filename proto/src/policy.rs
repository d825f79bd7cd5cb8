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
//! | `POST` [`ACCESS_REQUESTS_PATH`] | an enrolled card | [`AccessRequest`] → `204` (also when the server has it already: the card's id makes a resend harmless) |
//! | `GET` [`ACCESS_REQUESTS_PATH`] | an enrolled card | → [`AccessRequestList`]: the state of each of its requests |
//! | `POST` [`VPN_KEYS_PATH`] | an enrolled card | [`VpnKeys`] → `204`: the public keys of the VPNs the server pushed to it |
//! | `/v1/admin/…` | the administrator (bearer token) | see [`crate::policy_admin`] |
//!
//! Every refusal is a 4xx/5xx status with an [`ErrorBody`].

use std::net::{Ipv4Addr, SocketAddr};

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

/// Where a card sends its users' requests for access, and reads what became of them.
pub const ACCESS_REQUESTS_PATH: &str = "/v1/access-requests";

/// The header on a bundle answer that says which stream it belongs to: [`BundleKind`]. A
/// server that predates overlays sends none, which means [`BundleKind::Group`].
pub const BUNDLE_KIND_HEADER: &str = "x-cardwall-bundle-kind";

/// The query parameter by which a card names its installed overlay version, next to
/// `after=N` (a card that predates overlays leaves it out and is never sent one).
pub const OVERLAY_AFTER_PARAM: &str = "overlay_after";

/// A poll's answer is the card's group bundle or its own overlay (the rules an administrator
/// approved for this one card, in force before the group's). Both are signed by the policy key;
/// each has its own version sequence.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BundleKind {
    Group,
    Overlay,
}

impl BundleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Group => "group",
            BundleKind::Overlay => "overlay",
        }
    }

    /// The header's value; anything unknown is refused (a card must not guess which stream
    /// a signed bundle belongs to: the bundle's group is checked against the answer).
    pub fn parse(value: &str) -> Option<BundleKind> {
        match value {
            "group" => Some(BundleKind::Group),
            "overlay" => Some(BundleKind::Overlay),
            _ => None,
        }
    }
}

/// The group an overlay bundle is signed for: `card:<card id>`. A group name never holds a
/// `:` (policyd refuses it), so no group bundle can pass for an overlay or the other way round.
pub fn overlay_group(card_id: &str) -> String {
    format!("card:{card_id}")
}

/// The name of an overlay bundle's rule file.
pub const OVERLAY_RULES_NAME: &str = "overlay";

/// Every rule of an overlay is named `overlay-<first 8 digits of the request's id>`, so the
/// card's explain, status and block pages show which rules come from the overlay and which
/// from the group. An overlay has nothing but such rules: no `default`, no `list`.
pub const OVERLAY_RULE_PREFIX: &str = "overlay-";

/// The name of the overlay rule an approval of request `request_id` becomes.
pub fn overlay_rule_name(request_id: &str) -> String {
    let short = request_id.get(..8).unwrap_or(request_id);
    format!("{OVERLAY_RULE_PREFIX}{short}")
}

/// The longest reason a user may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The most requests a card keeps open (on the card, and on the server per card).
pub const MAX_OPEN_REQUESTS_PER_CARD: usize = 20;
/// The longest host, path or rule id a request may name, in bytes.
pub const MAX_TARGET_LEN: usize = 2048;
/// The longest administrator's message sent back, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// What kind of traffic was blocked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AccessProtocol {
    Http,
    Https,
    Dns,
    Tcp,
}

impl AccessProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessProtocol::Http => "http",
            AccessProtocol::Https => "https",
            AccessProtocol::Dns => "dns",
            AccessProtocol::Tcp => "tcp",
        }
    }

    pub fn parse(value: &str) -> Option<AccessProtocol> {
        match value {
            "http" => Some(AccessProtocol::Http),
            "https" => Some(AccessProtocol::Https),
            "dns" => Some(AccessProtocol::Dns),
            "tcp" => Some(AccessProtocol::Tcp),
            _ => None,
        }
    }
}

/// What the card blocked, as its block page named it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    pub protocol: AccessProtocol,
    /// The host name or address asked for.
    pub host: String,
    pub port: u16,
    /// The path, for HTTP.
    pub path: Option<String>,
    /// The id of the rule that denied it (`file:line`, or `default`).
    pub rule: String,
    /// When, Unix seconds.
    pub at: i64,
}

impl Blocked {
    /// What was blocked, for pages and logs: `http blocked.test:80/x`, `https a.test:443`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}:{}{}",
            self.protocol.as_str(),
            self.host,
            self.port,
            self.path.as_deref().unwrap_or("")
        )
    }

    /// A rule that would allow what was blocked, for the administrator to start from:
    /// `allow http host blocked.test path /x`. Only the characters [`AccessRequest::check`]
    /// lets through can be here, so the text is one line of the rule language.
    pub fn suggested_rule(&self) -> String {
        // Plain TCP carries no name: its rules match the address.
        let condition = match self.protocol {
            AccessProtocol::Tcp => "dst",
            _ => "host",
        };
        let mut rule = format!("allow {} {condition} {}", self.protocol.as_str(), self.host);
        if !matches!(
            (self.protocol, self.port),
            (AccessProtocol::Http, 80) | (AccessProtocol::Https, 443) | (AccessProtocol::Dns, _)
        ) {
            rule.push_str(&format!(" port {}", self.port));
        }
        if let (AccessProtocol::Http, Some(path)) = (self.protocol, &self.path) {
            rule.push_str(&format!(" path {path}"));
        }
        rule
    }
}

/// `POST /v1/access-requests`: a user of the card asks for access to what it blocked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The card's id for the request: 32 lower-case hex digits. Sending it again is harmless.
    pub id: String,
    pub blocked: Blocked,
    /// Why the user needs it, in their words (at most [`MAX_REASON_CHARS`] characters).
    pub reason: Option<String>,
}

/// Why an [`AccessRequest`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRequestError {
    #[error("the request id must be 32 lower-case hex digits")]
    BadId,
    #[error("the host must be 1 to 253 letters, digits, `-`, `.`, `_` or `:`")]
    BadHost,
    #[error("the port must not be 0")]
    BadPort,
    #[error(
        "the path must start with `/`, hold no space or control character and be at most {MAX_TARGET_LEN} bytes"
    )]
    BadPath,
    #[error("only an HTTP request has a path")]
    PathWithoutHttp,
    #[error("the rule id must be 1 to 200 printable characters without spaces")]
    BadRule,
    #[error("the reason is longer than {MAX_REASON_CHARS} characters or holds control characters")]
    BadReason,
}

/// Whether `c` may stand in a host (a name, an IPv4 or IPv6 address).
fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')
}

impl AccessRequest {
    /// The checks both sides make: the card before it queues a request, the server before it
    /// stores one. What passes can be shown on a page (escaped) and written into a rule.
    pub fn check(&self) -> Result<(), AccessRequestError> {
        let hex = |s: &str| {
            s.len() == 32
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(&self.id) {
            return Err(AccessRequestError::BadId);
        }
        let blocked = &self.blocked;
        if blocked.host.is_empty()
            || blocked.host.len() > 253
            || !blocked.host.chars().all(host_char)
        {
            return Err(AccessRequestError::BadHost);
        }
        if blocked.port == 0 {
            return Err(AccessRequestError::BadPort);
        }
        if let Some(path) = &blocked.path {
            if blocked.protocol != AccessProtocol::Http {
                return Err(AccessRequestError::PathWithoutHttp);
            }
            let ok = path.starts_with('/')
                && path.len() <= MAX_TARGET_LEN
                && !path.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(AccessRequestError::BadPath);
            }
        }
        let rule = &blocked.rule;
        if rule.is_empty()
            || rule.len() > 200
            || rule.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(AccessRequestError::BadRule);
        }
        if let Some(reason) = &self.reason
            && (reason.chars().count() > MAX_REASON_CHARS
                || reason.chars().any(|c| c.is_control() && c != '\n'))
        {
            return Err(AccessRequestError::BadReason);
        }
        Ok(())
    }
}

/// What became of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AccessState {
    /// Waiting for the administrator.
    Open,
    /// Granted: `rule` is in the card's overlay, until `until` (Unix seconds) if set.
    Approved { rule: String, until: Option<i64> },
    /// Refused, with the administrator's words.
    Declined { message: String },
}

/// One request's state, as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestStatus {
    pub id: String,
    pub state: AccessState,
}

/// `GET /v1/access-requests`: every request of the calling card the server holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestList {
    pub requests: Vec<AccessRequestStatus>,
}

/// Where a card reports the public keys of the VPNs the server pushed to it.
pub const VPN_KEYS_PATH: &str = "/v1/vpn-keys";

/// The most VPNs the server pushes to one card.
pub const MAX_MANAGED_VPNS: usize = 8;

/// One VPN the policy server pushes to a card (a managed card, issue 15): the peer settings of
/// a `[vpn.NAME]` section of `cardfw.toml`, field for field, and never a private key. The card
/// makes its own key for the name when it first sees it and reports only the public one
/// ([`VpnKeys`]); the administrator gives that to the corporate peer. The card checks a
/// pushed VPN exactly as one from its file, and refuses the whole push for one that fails or
/// whose name is one of its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManagedVpn {
    /// 1 to 12 of `a-z`, `0-9`, `-`: it names the card's interface and rules' `via`.
    pub name: String,
    /// The corporate peer's WireGuard public key, base64 (as `wg` prints it).
    pub peer_public_key: String,
    /// Where the peer listens (UDP).
    pub endpoint: SocketAddr,
    /// The card's address inside the tunnel (what the peer's `AllowedIPs` names).
    pub address: Ipv4Addr,
    /// The networks reached only through the tunnel, e.g. `10.20.0.0/16`.
    pub networks: Vec<String>,
    /// The names that belong to the VPN (`intranet.corp.example`, `*.corp.example`).
    pub names: Vec<String>,
    /// The corporate resolver, inside `networks`; needed when `names` are given.
    pub resolver: Option<SocketAddr>,
    /// The unlocked VPN locks again after this many seconds without a connection.
    pub idle_lock_secs: u64,
    /// WireGuard persistent keepalive, seconds (0: none).
    pub keepalive_secs: u16,
}

/// Whether `name` may name a VPN: 1 to 12 of `a-z`, `0-9` and `-`. It becomes the card's
/// interface name (`cw-NAME`, at most 15 bytes) and rules' `via NAME`; the card checks its
/// file's `[vpn.NAME]` and pushed VPNs with it, the server what it is asked to push.
pub fn valid_vpn_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 12
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The VPNs of a card's overlay bundle: the bytes of its `vpns` section (see
/// `rules::bundle`), signed with the rest. Every push carries the whole set: a VPN not in it
/// is taken off the card.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManagedVpns {
    pub vpns: Vec<ManagedVpn>,
}

/// One pushed VPN's public key on the card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VpnKey {
    pub name: String,
    /// The card's WireGuard public key for it, base64 (as `wg` prints it).
    pub public_key: String,
}

/// `POST /v1/vpn-keys`: the public key of every VPN the server pushed and the card runs. Sent
/// on the card's first check-in after it starts (so right after enrolment) and whenever the
/// pushed set changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VpnKeys {
    pub keys: Vec<VpnKey>,
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

#[cfg(test)]
mod access_tests {
    use super::*;

    fn request() -> AccessRequest {
        AccessRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            blocked: Blocked {
                protocol: AccessProtocol::Http,
                host: "blocked.test".into(),
                port: 80,
                path: Some("/x".into()),
                rule: "rules.txt:4".into(),
                at: 1_800_000_000,
            },
            reason: Some("for the report\ndue today".into()),
        }
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        assert_eq!(request().check(), Ok(()));
        let with = |change: fn(&mut AccessRequest)| {
            let mut r = request();
            change(&mut r);
            r.check()
        };
        assert_eq!(
            with(|r| r.id = "ABC".into()),
            Err(AccessRequestError::BadId)
        );
        assert_eq!(
            with(|r| r.blocked.host = "a b".into()),
            Err(AccessRequestError::BadHost)
        );
        assert_eq!(
            with(|r| r.blocked.host = "x\"><script>".into()),
            Err(AccessRequestError::BadHost)
        );
        assert_eq!(
            with(|r| r.blocked.port = 0),
            Err(AccessRequestError::BadPort)
        );
        assert_eq!(
            with(|r| r.blocked.path = Some("/a b".into())),
            Err(AccessRequestError::BadPath)
        );
        assert_eq!(
            with(|r| r.blocked.path = Some("x".into())),
            Err(AccessRequestError::BadPath)
        );
        assert_eq!(
            with(|r| r.blocked.protocol = AccessProtocol::Tcp),
            Err(AccessRequestError::PathWithoutHttp)
        );
        assert_eq!(
            with(|r| r.blocked.rule = "a\nb".into()),
            Err(AccessRequestError::BadRule)
        );
        assert_eq!(
            with(|r| r.reason = Some("é".repeat(MAX_REASON_CHARS + 1))),
            Err(AccessRequestError::BadReason)
        );
        assert_eq!(
            with(|r| r.reason = Some("é".repeat(MAX_REASON_CHARS))),
            Ok(())
        );
        assert_eq!(
            with(|r| r.reason = Some("\u{1b}[2J".into())),
            Err(AccessRequestError::BadReason)
        );
    }

    #[test]
    fn the_suggested_rule_allows_what_was_blocked() {
        assert_eq!(request().blocked.describe(), "http blocked.test:80/x");
        assert_eq!(
            request().blocked.suggested_rule(),
            "allow http host blocked.test path /x"
        );
        let mut tcp = request().blocked;
        tcp.protocol = AccessProtocol::Tcp;
        tcp.path = None;
        tcp.port = 5432;
        tcp.host = "192.0.2.7".into();
        assert_eq!(tcp.suggested_rule(), "allow tcp dst 192.0.2.7 port 5432");
    }

    /// Pinned as text, like the other card calls: cards and servers are updated apart.
    #[test]
    fn the_access_json_shapes_stay_as_they_are() {
        assert_eq!(
            serde_json::to_string(&request()).unwrap(),
            r#"{"id":"0123456789abcdef0123456789abcdef","blocked":{"protocol":"http","host":"blocked.test","port":80,"path":"/x","rule":"rules.txt:4","at":1800000000},"reason":"for the report\ndue today"}"#
        );
        let list = AccessRequestList {
            requests: vec![
                AccessRequestStatus {
                    id: "a".into(),
                    state: AccessState::Open,
                },
                AccessRequestStatus {
                    id: "b".into(),
                    state: AccessState::Approved {
                        rule: "allow http host x".into(),
                        until: Some(5),
                    },
                },
                AccessRequestStatus {
                    id: "c".into(),
                    state: AccessState::Declined {
                        message: "no".into(),
                    },
                },
            ],
        };
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(
            text,
            r#"{"requests":[{"id":"a","state":{"kind":"open"}},{"id":"b","state":{"kind":"approved","rule":"allow http host x","until":5}},{"id":"c","state":{"kind":"declined","message":"no"}}]}"#
        );
        assert_eq!(
            serde_json::from_str::<AccessRequestList>(&text).unwrap(),
            list
        );
        assert!(
            serde_json::from_str::<AccessRequest>(
                r#"{"id":"0123456789abcdef0123456789abcdef","blocked":{"protocol":"gopher","host":"x","port":70,"path":null,"rule":"r","at":0},"reason":null}"#
            )
            .is_err()
        );
        assert_eq!(BundleKind::parse("overlay"), Some(BundleKind::Overlay));
        assert_eq!(BundleKind::parse("Overlay"), None);
        assert_eq!(overlay_group("0a1b"), "card:0a1b");
    }

    /// Pinned as text: the card reads what the server signed, and they are updated apart.
    #[test]
    fn the_vpn_json_shapes_stay_as_they_are() {
        let vpns = ManagedVpns {
            vpns: vec![ManagedVpn {
                name: "corp".into(),
                peer_public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
                endpoint: "198.51.100.7:51820".parse().unwrap(),
                address: "10.20.255.2".parse().unwrap(),
                networks: vec!["10.20.0.0/16".into()],
                names: vec!["*.corp.example".into()],
                resolver: Some("10.20.0.53:53".parse().unwrap()),
                idle_lock_secs: 1800,
                keepalive_secs: 25,
            }],
        };
        let text = serde_json::to_string(&vpns).unwrap();
        assert_eq!(
            text,
            r#"{"vpns":[{"name":"corp","peer_public_key":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","endpoint":"198.51.100.7:51820","address":"10.20.255.2","networks":["10.20.0.0/16"],"names":["*.corp.example"],"resolver":"10.20.0.53:53","idle_lock_secs":1800,"keepalive_secs":25}]}"#
        );
        assert_eq!(serde_json::from_str::<ManagedVpns>(&text).unwrap(), vpns);
        // A private key has no field to travel in: an unknown field is refused, not dropped.
        let with_key = text.replace(
            r#""keepalive_secs":25"#,
            r#""keepalive_secs":25,"private_key":"x""#,
        );
        assert!(serde_json::from_str::<ManagedVpns>(&with_key).is_err());
        let bad_endpoint = text.replace("198.51.100.7:51820", "not an address");
        assert!(serde_json::from_str::<ManagedVpns>(&bad_endpoint).is_err());
        let keys = VpnKeys {
            keys: vec![VpnKey {
                name: "corp".into(),
                public_key: "AQ==".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&keys).unwrap(),
            r#"{"keys":[{"name":"corp","public_key":"AQ=="}]}"#
        );
    }
}
