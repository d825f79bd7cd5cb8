//! Sessions of the card's web page, and the waits after wrong secrets.
//!
//! Sessions and CSRF tokens are the serving layer's ([`serve::session`]): a random id in a
//! cookie, idle timeout, tokens bound to their cookie, login forms with a short-lived cookie of
//! their own. This module says how the card's page uses them ([`settings`]): at most
//! [`MAX_SESSIONS`] at once, cookies on `/`, login forms good for [`PRE_SESSION_LIFETIME`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sessions the card keeps at once.
pub const MAX_SESSIONS: usize = 16;
/// How long a login form (its pre-session cookie) stays good.
pub const PRE_SESSION_LIFETIME: Duration = Duration::from_secs(10 * 60);

pub const SESSION_COOKIE: &str = "cardwall_session";
pub const PRE_SESSION_COOKIE: &str = "cardwall_login";

/// How the card page's sessions behave, ending after `idle_timeout` without a request.
pub fn settings(idle_timeout: Duration) -> serve::session::Settings {
    serve::session::Settings {
        cookie: SESSION_COOKIE,
        login_cookie: PRE_SESSION_COOKIE,
        path: "/",
        idle_timeout,
        lifetime: None,
        // The table ends a session; the cookie only has to outlive it.
        cookie_max_age: idle_timeout.max(super::IDLE_TIMEOUT),
        max_sessions: MAX_SESSIONS,
        login_form_lifetime: PRE_SESSION_LIFETIME,
    }
}

/// The longest wait [`LoginDelays`] imposes.
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at once; the one whose wait ends first makes room.
const MAX_DELAYED_CLIENTS: usize = 256;

/// Exponential waits after wrong PINs and setup codes, per client address: after the n-th
/// failure in a row, a client's next try is refused unspent for `base · 2^(n-1)` (at most
/// [`MAX_LOGIN_DELAY`]). The retry counters still block after three wrong PINs; the waits make
/// guessing slow for each computer on the inside without locking out the owner's, and a
/// correct PIN clears them.
#[derive(Debug)]
pub(crate) struct LoginDelays {
    base: Duration,
    table: Mutex<HashMap<std::net::IpAddr, (u32, Instant)>>,
}

impl LoginDelays {
    pub fn new(base: Duration) -> LoginDelays {
        LoginDelays {
            base,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, (u32, Instant)>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `client` must still wait before its next try, if at all.
    pub fn wait_left(&self, client: std::net::IpAddr) -> Option<Duration> {
        let now = Instant::now();
        self.table()
            .get(&client)
            .and_then(|(_, until)| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// A wrong secret from `client`: its wait doubles.
    pub fn failed(&self, client: std::net::IpAddr) {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_DELAYED_CLIENTS
            && !table.contains_key(&client)
            && let Some(first) = table
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(address, _)| *address)
        {
            table.remove(&first);
        }
        let entry = table.entry(client).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let factor = 1u32 << (entry.0 - 1).min(20);
        entry.1 = now + self.base.saturating_mul(factor).min(MAX_LOGIN_DELAY);
    }

    /// A right secret from `client`: no more wait.
    pub fn succeeded(&self, client: std::net::IpAddr) {
        self.table().remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_per_client_and_end_on_success() {
        let delays = LoginDelays::new(Duration::from_secs(1));
        let (a, b) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!(delays.wait_left(a), None);
        delays.failed(a);
        let first = delays.wait_left(a).unwrap();
        assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(900));
        delays.failed(a);
        delays.failed(a);
        let third = delays.wait_left(a).unwrap();
        assert!(third > Duration::from_millis(3900), "{third:?}");
        assert_eq!(delays.wait_left(b), None, "another client is not slowed");
        for _ in 0..40 {
            delays.failed(a);
        }
        assert!(delays.wait_left(a).unwrap() <= MAX_LOGIN_DELAY);
        delays.succeeded(a);
        assert_eq!(delays.wait_left(a), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let delays = LoginDelays::new(Duration::from_secs(1));
        for i in 0..1000u32 {
            delays.failed(std::net::IpAddr::from(i.to_be_bytes()));
        }
        assert!(delays.table().len() <= MAX_DELAYED_CLIENTS);
    }
}
