//! The card's own web page (served by `cardfw::admin` over HTTPS on the card's inside address):
//! a new card's setup, the PIN login, and once logged in the rules, a decision tester, the
//! recent decisions, the counters, the PIN and PUK change and the audit log.
//!
//! The page has no script at all; every form posts to the card itself and carries a CSRF token.

use askama::Template;
#[cfg(feature = "axum")]
use askama_web::WebTemplate;

/// The `Content-Security-Policy` of the card's page: like [`crate::CONTENT_SECURITY_POLICY`],
/// but forms may post to the card itself, and no script runs at all.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The card page's few extra rules (forms), for `/static/card.css`, after the shared stylesheet.
pub const CARD_CSS: &str = include_str!("../templates/card/card.css");

/// `GET /` without a session: the setup form of a new card, the PIN form, or what to do when
/// the PIN is blocked (unblocking needs the card's reader, not this page).
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "card/login.html")]
pub struct LoginPage {
    /// The pre-session CSRF token for the login and setup forms.
    pub csrf: String,
    /// A new card: the setup form (setup code and first PIN) instead of the login.
    pub needs_setup: bool,
    pub setup_tries_left: u8,
    /// Right after setup: the PUK, shown this once (grouped `1234-5678-9012`).
    pub new_puk: Option<String>,
    pub tries_left: u8,
    pub blocked: bool,
    pub puk_tries_left: u8,
    pub puk_blocked: bool,
    /// What went wrong with the last attempt, in words.
    pub error: Option<String>,
    pub notice: Option<String>,
    /// SHA-256 of the card's certificate, for the owner to compare with the browser's.
    pub fingerprint: String,
}

/// `GET /` with a session.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "card/dashboard.html")]
pub struct DashboardPage {
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// The stored rules' version and when it was saved (UTC).
    pub rules_version: u64,
    pub rules_saved_at: String,
    /// What the firewall runs right now (it reloads the store's version shortly after a save).
    pub running_version: String,
    /// The editor's text: the stored rules, or the text just submitted when it was refused.
    pub rules_text: String,
    pub rule_errors: Vec<RuleError>,
    pub previous_version: Option<u64>,
    /// The policy server that manages the rules (`server, group …`): the editor is read-only.
    pub managed_by: Option<String>,
    /// A managed card's overlay: its version and the rules approved for this card alone,
    /// in force before the rules in the editor (each named `overlay-…`).
    pub overlay: Option<(u64, String)>,
    pub counters: Vec<CounterView>,
    /// Newest first.
    pub recent: Vec<DecisionView>,
    pub explain_target: String,
    pub explanation: Option<ExplanationView>,
    /// Newest first.
    pub audit: Vec<AuditView>,
    pub fingerprint: String,
}

/// `GET /access-requests` (no login: the user asking is not the card's owner) and the
/// answer to the block page's "ask for access" form: a managed card's requests to the policy
/// server's administrator and what became of each.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "card/access_requests.html")]
pub struct AccessRequestsPage {
    pub notice: Option<String>,
    pub error: Option<String>,
    /// Newest first.
    pub requests: Vec<AccessRequestView>,
    /// Whether the card is managed (else nobody can grant a request).
    pub managed: bool,
    /// What the rules recently denied this computer, newest first, each with its form: a
    /// blocked HTTPS, DNS or TCP connection has no block page to ask from.
    pub recent: Vec<BlockedView>,
}

/// A recent denial on [`AccessRequestsPage`], with its "ask for access" form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedView {
    pub what: String,
    pub rule: String,
    pub at: String,
    pub form: crate::proxy::AskForm,
}

/// One request on [`AccessRequestsPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequestView {
    /// What was blocked: `http blocked.test:80/x`.
    pub what: String,
    /// The rule that blocked it.
    pub rule: String,
    /// When it was blocked (UTC).
    pub at: String,
    pub reason: Option<String>,
    /// `waiting`, `sending`, `approved`, `declined`: the state's class for the style.
    pub state: &'static str,
    /// The state in words: "approved until 2026-12-01 10:40 UTC", "declined: use the mirror".
    pub state_text: String,
}

/// `GET /inspection` with a session: the card's inspection CA (fingerprint, re-key) and the CAs
/// the owner added for upstream servers (list, upload, remove).
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "card/inspection.html")]
pub struct InspectionPage {
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// SHA-256 of the inspection CA; `None` on a card that does not inspect.
    pub ca_fingerprint: Option<String>,
    pub owner_cas: Vec<TrustedCaView>,
    /// How many CAs the config file adds (not changed here).
    pub file_ca_count: usize,
    /// How many CAs the installed policy bundle adds (read-only here: they change with the
    /// next bundle).
    pub managed_ca_count: usize,
    pub max_owner_cas: usize,
    pub max_upload_kib: usize,
    /// The upload's text, kept when it was refused.
    pub upload_text: String,
    /// The user's client certificate; `None` when none is stored.
    pub client_cert: Option<ClientCertView>,
    pub client_cert_unlocked: bool,
    /// It locks after this long without use…
    pub client_cert_idle_minutes: u64,
    /// …which, while unlocked, is this far away.
    pub client_cert_idle_left_minutes: u64,
    pub max_client_cert_kib: usize,
}

/// The user's client certificate, as stored (all public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertView {
    pub subject: String,
    pub issuer: String,
    pub fingerprint: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS UTC`.
    pub expires: String,
}

/// `GET /vpn`: the card's VPNs, their state, and unlock/lock.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "card/vpn.html")]
pub struct VpnPage {
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub vpns: Vec<VpnView>,
    /// The "Add a VPN" form's values, kept when it was refused (never the PIN).
    pub add: VpnAddView,
}

/// The "Add a VPN" form as the owner last filled it (empty at first); every field came from
/// the form and is shown only through the template's escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnAddView {
    pub name: String,
    pub peer_public_key: String,
    pub endpoint: String,
    pub address: String,
    pub networks: String,
    pub names: String,
    pub resolver: String,
    pub idle_lock_minutes: String,
    pub keepalive_secs: String,
}

impl Default for VpnAddView {
    fn default() -> Self {
        VpnAddView {
            name: String::new(),
            peer_public_key: String::new(),
            endpoint: String::new(),
            address: String::new(),
            networks: String::new(),
            names: String::new(),
            resolver: String::new(),
            idle_lock_minutes: "30".into(),
            keepalive_secs: "25".into(),
        }
    }
}

/// One VPN as its page shows it: all public (the card's key shows only its public half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnView {
    pub name: String,
    /// Where it comes from: "from the configuration file", "pushed by the policy server" or
    /// "added on this page".
    pub origin: String,
    /// Added on this page: it can be removed here (with the PIN).
    pub removable: bool,
    /// Which WireGuard carries it (userspace or kernel), chosen at start.
    pub backend: String,
    pub unlocked: bool,
    /// While unlocked: minutes left before the idle lock.
    pub idle_left_minutes: u64,
    pub idle_minutes: u64,
    /// The card's public key, base64, for the peer's configuration.
    pub public_key: String,
    pub endpoint: String,
    pub networks: String,
    pub names: String,
    /// `never` before the first handshake, else `N s ago`; empty while locked.
    pub handshake: String,
    pub received: String,
    pub sent: String,
}

/// One CA the owner added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCaView {
    pub subject: String,
    pub fingerprint: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS UTC`.
    pub expires: String,
}

/// One parse error of the edited rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub line: u32,
    pub col: u32,
    pub message: String,
    pub source_line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterView {
    pub label: &'static str,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionView {
    /// UTC, `HH:MM:SS`.
    pub clock: String,
    pub client: String,
    pub protocol: String,
    pub target: String,
    /// `allow` or `deny`.
    pub action: String,
    pub rule: String,
}

/// The decision tester's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplanationView {
    /// What was asked, as understood: `https example.com:443`.
    pub asked: String,
    pub verdict: String,
    pub allowed: bool,
    pub rule_text: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditView {
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub at: String,
    pub event: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_page_labels_every_input_and_escapes() {
        let page = LoginPage {
            csrf: "t\"<x>".into(),
            needs_setup: false,
            setup_tries_left: 0,
            new_puk: None,
            tries_left: 2,
            blocked: false,
            puk_tries_left: 10,
            puk_blocked: false,
            error: Some("<b>".into()),
            notice: None,
            fingerprint: "AB:CD".into(),
        };
        let html = page.render().unwrap();
        assert!(html.contains("2 tries left"));
        assert!(html.contains("&#60;b&#62;"));
        assert!(!html.contains("<x>"));
        assert_eq!(
            html.matches("<label").count(),
            html.matches("<input").count() - html.matches("type=\"hidden\"").count()
        );
    }
}
