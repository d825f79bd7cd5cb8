//! The policy server's admin page (served by `policyd` over HTTPS): every card, its group, the
//! version it runs, when it was last seen and its last error; revoking a card.

use askama::Template;
#[cfg(feature = "axum")]
use askama_web::WebTemplate;

/// `GET /admin` without the admin cookie.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "policy/login.html")]
pub struct AdminLoginPage {
    /// The login form's CSRF token (the value of its own cookie).
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

/// `GET /admin`: the fleet.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "policy/fleet.html")]
pub struct FleetPage {
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub groups: Vec<GroupView>,
    pub cards: Vec<FleetCardView>,
    /// Open access requests, oldest first.
    pub requests: Vec<AccessRequestView>,
    /// Access requests refused (malformed, over a limit) since the server started.
    pub refused_requests: u64,
    /// The VPNs pushed to cards, by card then name.
    pub vpns: Vec<FleetVpnView>,
}

/// One VPN pushed to one card, with the card's public key for the corporate peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetVpnView {
    pub card: String,
    pub name: String,
    pub endpoint: String,
    /// The card's tunnel address.
    pub address: String,
    pub networks: String,
    /// `None` until the card reports it.
    pub card_public_key: Option<String>,
}

/// One open access request on the fleet page, with the approve and decline forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequestView {
    pub card: String,
    pub id: String,
    /// What was blocked: `http blocked.test:80/x`.
    pub what: String,
    /// The card's rule that blocked it.
    pub rule: String,
    pub reason: Option<String>,
    /// When it was blocked (UTC).
    pub at: String,
    /// The approve form's rule, to edit: one that allows just what was blocked.
    pub suggested_rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub version: u64,
    pub cards: usize,
    /// Cards of the group that report running the newest version.
    pub current: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCardView {
    pub id: String,
    pub group: String,
    pub running_version: u64,
    /// Runs an older version than its group's newest.
    pub behind: bool,
    pub last_seen: String,
    pub outcome: String,
    pub error: String,
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VPN table gives the administrator each card's public key for the corporate peer
    /// (or says it is not reported yet), and what a card or an operator typed stays text.
    #[test]
    fn the_fleet_page_lists_pushed_vpns_with_the_cards_keys() {
        let vpn = |card: &str, key: Option<&str>| FleetVpnView {
            card: card.into(),
            name: "corp".into(),
            endpoint: "198.51.100.7:51820".into(),
            address: "10.20.255.2".into(),
            networks: "10.20.0.0/16".into(),
            card_public_key: key.map(str::to_owned),
        };
        let page = FleetPage {
            csrf: "c".into(),
            notice: None,
            error: None,
            groups: Vec::new(),
            cards: Vec::new(),
            requests: Vec::new(),
            refused_requests: 0,
            vpns: vec![
                vpn(
                    "card-1",
                    Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
                ),
                vpn("<b>card-2</b>", None),
            ],
        };
        let html = page.render().unwrap();
        assert!(
            html.contains(
                "<code id=\"vpn-card-1-corp-key\">BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=</code>"
            ),
            "{html}"
        );
        assert!(html.contains("not reported yet"), "{html}");
        assert!(html.contains("&#60;b&#62;card-2&#60;/b&#62;"), "{html}");
        assert!(!html.contains("<b>card-2"), "{html}");
        let empty = FleetPage {
            vpns: Vec::new(),
            ..page
        };
        assert!(!empty.render().unwrap().contains("VPNs</h2>"));
    }
}
