//! The admin page's sessions: kept only in the server's memory, never written anywhere.
//! Below both the service state that holds them and the page that opens and checks them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session ends after this long without a request…
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// …and this long after login in any case.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at once; the oldest goes for a new login (which needs the admin token).
const MAX_SESSIONS: usize = 32;

/// The admin page's sessions: id → its CSRF token and times. Never written anywhere.
#[derive(Default)]
pub(crate) struct PageSessions {
    table: Mutex<HashMap<String, Session>>,
}

struct Session {
    csrf: String,
    created: Instant,
    last: Instant,
}

impl PageSessions {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session: its id for the cookie.
    pub(crate) fn create(&self) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, s| live(s, now));
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
        {
            table.remove(&oldest);
        }
        table.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                created: now,
                last: now,
            },
        );
        id
    }

    /// The CSRF token of live session `id` (its idle clock restarted), if it is one.
    pub(crate) fn touch(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut table = self.table();
        match table.get_mut(id) {
            Some(session) if live(session, now) => {
                session.last = now;
                Some(session.csrf.clone())
            }
            Some(_) => {
                table.remove(id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.table().remove(id);
    }
}

fn live(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last) < SESSION_IDLE
        && now.duration_since(session.created) < SESSION_LIFETIME
}

pub(crate) fn random_token() -> String {
    crate::fleet::random_hex(32).expect("the system has randomness")
}
