//! The admin page's sessions: kept only in the server's memory, never written anywhere.
//! Below both the service state that holds them and the page that opens and checks them.
//! The sessions themselves, their CSRF tokens and cookies are the serving layer's
//! ([`serve::session`]); this module says how long the page's last.

use std::time::Duration;

use serve::session::{Sessions, Settings};

/// A session ends after this long without a request…
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// …and this long after login in any case.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The admin page's sessions.
pub(crate) fn page_sessions() -> Sessions {
    Sessions::new(Settings {
        cookie: "policyd_admin",
        login_cookie: "policyd_login",
        path: "/admin",
        idle_timeout: SESSION_IDLE,
        lifetime: Some(SESSION_LIFETIME),
        cookie_max_age: SESSION_LIFETIME,
        // The least recently used goes for a new login (which needs the admin token).
        max_sessions: 32,
        login_form_lifetime: Duration::from_secs(600),
    })
}
