//! Sessions and CSRF tokens of the card's web page.
//!
//! A session is a random 32-byte id in a cookie, mapped to its last use in a table of at most
//! [`MAX_SESSIONS`] entries (the oldest is dropped for a new login: making one needs the PIN,
//! so nobody without it can push the owner out). A session ends after the idle timeout or at
//! logout.
//!
//! CSRF tokens are not stored: a token is SHA-256 of a per-start random secret, a purpose and
//! the cookie it belongs to, so a token is only good with its own cookie, and every token dies
//! with its session or when the card restarts. Before login, the login and setup forms use a
//! short-lived pre-session cookie holding its issue time and a random part.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::firewall::unix_now;
use crate::store::tls::sha256;

/// Sessions the card keeps at once.
pub const MAX_SESSIONS: usize = 16;
/// How long a login form (its pre-session cookie) stays good.
pub const PRE_SESSION_LIFETIME: Duration = Duration::from_secs(10 * 60);

pub const SESSION_COOKIE: &str = "cardwall_session";
pub const PRE_SESSION_COOKIE: &str = "cardwall_login";

/// The session table and the token secret.
pub(crate) struct Sessions {
    secret: Zeroizing<[u8; 32]>,
    idle_timeout: Duration,
    table: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the ids: they are the sessions.
        f.debug_struct("Sessions")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(idle_timeout: Duration) -> Sessions {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut secret[..]).expect("the system has randomness");
        Sessions {
            secret,
            idle_timeout,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session after a correct PIN: its id, for the cookie.
    pub fn create(&self) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, last| now.duration_since(*last) < self.idle_timeout);
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(id, _)| id.clone())
        {
            table.remove(&oldest);
        }
        table.insert(id.clone(), now);
        id
    }

    /// Whether `id` is a live session; if so, its idle clock starts again.
    pub fn touch(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut table = self.table();
        match table.get_mut(id) {
            Some(last) if now.duration_since(*last) < self.idle_timeout => {
                *last = now;
                true
            }
            Some(_) => {
                table.remove(id);
                false
            }
            None => false,
        }
    }

    pub fn remove(&self, id: &str) {
        self.table().remove(id);
    }

    /// The CSRF token for forms posted with session `id`.
    pub fn session_token(&self, id: &str) -> String {
        self.token("session", id)
    }

    /// A new pre-session cookie value: `<issued unix time>.<random>`.
    pub fn new_pre_session(&self) -> String {
        format!("{}.{}", unix_now(), random_hex())
    }

    /// The CSRF token for the login and setup forms posted with pre-session cookie `value`.
    pub fn pre_session_token(&self, value: &str) -> String {
        self.token("login", value)
    }

    /// Whether the pre-session cookie is still young enough.
    pub fn pre_session_fresh(&self, value: &str) -> bool {
        value
            .split_once('.')
            .and_then(|(issued, _)| issued.parse::<u64>().ok())
            .is_some_and(|issued| {
                let now = unix_now();
                issued <= now && now - issued < PRE_SESSION_LIFETIME.as_secs()
            })
    }

    fn token(&self, purpose: &str, bound_to: &str) -> String {
        let mut input = Zeroizing::new(Vec::with_capacity(96));
        input.extend_from_slice(&self.secret[..]);
        input.extend_from_slice(purpose.as_bytes());
        input.push(0);
        input.extend_from_slice(bound_to.as_bytes());
        hex(&sha256(&input))
    }
}

/// Constant-time comparison of a token sent with one expected.
pub fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value with every protection: not readable by script, HTTPS only, never sent
/// from another site, for the whole page.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        max_age.as_secs()
    )
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
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
