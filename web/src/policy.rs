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
