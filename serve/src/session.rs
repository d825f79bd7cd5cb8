//! Page sessions and CSRF tokens, and the axum extractors that check them before a handler
//! runs: [`Session`] (a live session, for pages), [`SessionForm`] (a form posted from a
//! logged-in page), [`SessionUpload`] (the same with a file: multipart) and [`LoginForm`] (the
//! login form, before there is a session). A page
//! (the card's, the fleet page) implements [`Page`]: where its [`Sessions`] are and how it
//! words a refusal.
//!
//! A session is a random 32-byte id in a cookie, mapped to its first and last use in a table of
//! at most [`Settings::max_sessions`] entries (the least recently used is dropped for a new
//! login: making one needs the page's secret, so nobody without it can push the owner out). A
//! session ends at logout, after the idle timeout, or after its lifetime when the page has one.
//!
//! CSRF tokens are not stored: a token is SHA-256 of a per-start random secret, a purpose and
//! the cookie it belongs to, so a token is only good with its own cookie, and every token dies
//! with its session or when the process restarts. Before login, the login form uses a
//! short-lived login cookie holding its issue time and a random part. Cookies are
//! `HttpOnly; Secure; SameSite=Strict` on the page's path; tokens are compared in constant time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{
    Form, FromRequest, FromRequestParts, Multipart, OptionalFromRequestParts, Request,
};
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How a page's sessions behave.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The session cookie's name.
    pub cookie: &'static str,
    /// The login form's cookie's name.
    pub login_cookie: &'static str,
    /// The cookies' `Path`.
    pub path: &'static str,
    /// A session ends after this long without a request…
    pub idle_timeout: Duration,
    /// …and this long after login, if set.
    pub lifetime: Option<Duration>,
    /// The session cookie's `Max-Age`.
    pub cookie_max_age: Duration,
    /// Sessions kept at once.
    pub max_sessions: usize,
    /// How long a login form stays good.
    pub login_form_lifetime: Duration,
}

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live session: never logged in, logged out, or timed out.
    NoSession,
    /// The session is live but the form's token is missing or not its own.
    WrongToken,
    /// A login form posted without its cookie (it expired in the browser, or was forged).
    LoginFormMissing,
    /// A login form whose token is missing, wrong or too old.
    LoginFormStale,
}

/// What a page tells the extractors. The router's state is `Arc<P>`.
pub trait Page: Send + Sync + 'static {
    fn sessions(&self) -> &Sessions;
    /// The answer to a refused request (a 403 in the page's words).
    fn refuse(&self, why: Refusal) -> Response;
}

/// A live session of the request. Its id is the session: never logged.
#[derive(Clone)]
pub struct Session {
    id: String,
    csrf: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// The CSRF token the session's forms carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }
}

struct Times {
    created: Instant,
    last: Instant,
}

/// The session table and the token secret.
pub struct Sessions {
    settings: Settings,
    secret: Zeroizing<[u8; 32]>,
    table: Mutex<HashMap<String, Times>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the ids: they are the sessions.
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    hex::encode(bytes)
}

/// Constant-time comparison of a token sent with one expected.
pub fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .and_then(|cookie| cookie.value_raw())
}

impl Sessions {
    pub fn new(settings: Settings) -> Sessions {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut secret[..]).expect("the system has randomness");
        Sessions {
            settings,
            secret,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Times>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, times: &Times, now: Instant) -> bool {
        now.duration_since(times.last) < self.settings.idle_timeout
            && self
                .settings
                .lifetime
                .is_none_or(|lifetime| now.duration_since(times.created) < lifetime)
    }

    /// A new session after a correct secret, and the `Set-Cookie` values that start it (and
    /// end the login form's cookie).
    pub fn create(&self) -> [HeaderValue; 2] {
        let id = random_hex();
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, times| self.live(times, now));
        if table.len() >= self.settings.max_sessions
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, times)| times.last)
                .map(|(id, _)| id.clone())
        {
            table.remove(&oldest);
        }
        table.insert(
            id.clone(),
            Times {
                created: now,
                last: now,
            },
        );
        [
            self.set_cookie(self.settings.cookie, &id, self.settings.cookie_max_age),
            self.set_cookie(self.settings.login_cookie, "", Duration::ZERO),
        ]
    }

    /// The live session whose cookie `headers` carry, its idle clock started again.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, self.settings.cookie)?;
        let now = Instant::now();
        let mut table = self.table();
        let times = table.get_mut(id)?;
        if !self.live(times, now) {
            table.remove(id);
            return None;
        }
        times.last = now;
        Some(Session {
            id: id.to_owned(),
            csrf: self.token("session", id),
        })
    }

    /// Ends `session`; the answer's `Set-Cookie` value that deletes its cookie.
    pub fn end(&self, session: &Session) -> HeaderValue {
        self.table().remove(&session.id);
        self.set_cookie(self.settings.cookie, "", Duration::ZERO)
    }

    /// A new login form: the token it carries, and the `Set-Cookie` value it needs.
    pub fn login_form(&self) -> (String, HeaderValue) {
        let cookie = format!("{}.{}", crate::unix_now(), random_hex());
        let set = self.set_cookie(
            self.settings.login_cookie,
            &cookie,
            self.settings.login_form_lifetime,
        );
        (self.token("login", &cookie), set)
    }

    /// Whether a posted login form is its cookie's and still young enough.
    fn check_login_form(&self, headers: &HeaderMap, sent: &str) -> Result<(), Refusal> {
        let value = cookie(headers, self.settings.login_cookie).ok_or(Refusal::LoginFormMissing)?;
        let fresh = value
            .split_once('.')
            .and_then(|(issued, _)| issued.parse::<u64>().ok())
            .is_some_and(|issued| {
                let now = crate::unix_now();
                issued <= now && now - issued < self.settings.login_form_lifetime.as_secs()
            });
        if fresh && tokens_match(sent, &self.token("login", value)) {
            Ok(())
        } else {
            Err(Refusal::LoginFormStale)
        }
    }

    /// A `Set-Cookie` value with every protection: not readable by script, HTTPS only, never
    /// sent from another site, for the page's path. An empty value with no age deletes it.
    fn set_cookie(&self, name: &'static str, value: &str, max_age: Duration) -> HeaderValue {
        // Written out rather than with `cookie::Cookie`'s builder: its attributes come in
        // another order, and the pages' tests and documents name them in this one.
        let cookie = format!(
            "{name}={value}; HttpOnly; Secure; SameSite=Strict; Path={}; Max-Age={}",
            self.settings.path,
            max_age.as_secs()
        );
        HeaderValue::from_str(&cookie).expect("cookie names and values are ASCII")
    }

    fn token(&self, purpose: &str, bound_to: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.secret[..]);
        hash.update(purpose.as_bytes());
        hash.update([0]);
        hash.update(bound_to.as_bytes());
        hex::encode(hash.finalize())
    }
}

impl<P: Page> FromRequestParts<Arc<P>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, page: &Arc<P>) -> Result<Session, Response> {
        page.sessions()
            .session(&parts.headers)
            .ok_or_else(|| page.refuse(Refusal::NoSession))
    }
}

impl<P: Page> OptionalFromRequestParts<Arc<P>> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        page: &Arc<P>,
    ) -> Result<Option<Session>, Self::Rejection> {
        Ok(page.sessions().session(&parts.headers))
    }
}

/// A form with its CSRF token beside the fields the handler reads.
#[derive(Deserialize)]
struct WithToken<F> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: F,
}

/// Form `F` posted from a logged-in page: the session is live and the form's `csrf` field is
/// its token.
#[derive(Debug)]
pub struct SessionForm<F> {
    pub session: Session,
    pub form: F,
}

impl<P: Page, F: DeserializeOwned + Send> FromRequest<Arc<P>> for SessionForm<F> {
    type Rejection = Response;

    async fn from_request(request: Request, page: &Arc<P>) -> Result<Self, Response> {
        let session = page.sessions().session(request.headers());
        let Form(WithToken { csrf, form }) = Form::<WithToken<F>>::from_request(request, page)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = session.ok_or_else(|| page.refuse(Refusal::NoSession))?;
        if !tokens_match(&csrf, session.csrf()) {
            return Err(page.refuse(Refusal::WrongToken));
        }
        Ok(SessionForm { session, form })
    }
}

/// A multipart form (one with a file) posted from a logged-in page: the session is live and
/// the `csrf` field is its token. Every field is read whole; the fields together may hold at
/// most [`SessionUpload::MAX_BYTES`], more is refused (413) before the handler runs.
#[derive(Debug)]
pub struct SessionUpload {
    pub session: Session,
    fields: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl SessionUpload {
    /// Room for a certificate file and its key with some fields beside it.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// The first field named `name`, as sent; empty when there is none.
    pub fn field(&self, name: &str) -> &[u8] {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map_or(&[], |(_, value)| value.as_slice())
    }

    /// The field `name` as text (invalid UTF-8 replaced); empty when there is none.
    pub fn text(&self, name: &str) -> Zeroizing<String> {
        Zeroizing::new(String::from_utf8_lossy(self.field(name)).into_owned())
    }
}

impl<P: Page> FromRequest<Arc<P>> for SessionUpload {
    type Rejection = Response;

    async fn from_request(request: Request, page: &Arc<P>) -> Result<Self, Response> {
        let session = page.sessions().session(request.headers());
        let mut multipart = Multipart::from_request(request, page)
            .await
            .map_err(IntoResponse::into_response)?;
        let too_large = || {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "the upload is too large",
            )
                .into_response()
        };
        let mut fields = Vec::new();
        let mut total = 0;
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(IntoResponse::into_response)?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let mut value = Zeroizing::new(Vec::new());
            while let Some(chunk) = field.chunk().await.map_err(IntoResponse::into_response)? {
                total += chunk.len();
                if total > SessionUpload::MAX_BYTES {
                    return Err(too_large());
                }
                value.extend_from_slice(&chunk);
            }
            fields.push((name, value));
        }
        let session = session.ok_or_else(|| page.refuse(Refusal::NoSession))?;
        let upload = SessionUpload { session, fields };
        if !tokens_match(&upload.text("csrf"), upload.session.csrf()) {
            return Err(page.refuse(Refusal::WrongToken));
        }
        Ok(upload)
    }
}

/// Form `F` posted from the login page: its `csrf` field is the token of its own, young login
/// cookie, so no other site can post it.
#[derive(Debug)]
pub struct LoginForm<F>(pub F);

impl<P: Page, F: DeserializeOwned + Send> FromRequest<Arc<P>> for LoginForm<F> {
    type Rejection = Response;

    async fn from_request(request: Request, page: &Arc<P>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let Form(WithToken { csrf, form }) = Form::<WithToken<F>>::from_request(request, page)
            .await
            .map_err(IntoResponse::into_response)?;
        page.sessions()
            .check_login_form(&headers, &csrf)
            .map_err(|why| page.refuse(why))?;
        Ok(LoginForm(form))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            cookie: "s",
            login_cookie: "l",
            path: "/",
            idle_timeout: Duration::from_secs(60),
            lifetime: None,
            cookie_max_age: Duration::from_secs(60),
            max_sessions: 2,
            login_form_lifetime: Duration::from_secs(600),
        }
    }

    fn headers(set_cookies: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = set_cookies
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, pairs.join("; ").parse().unwrap());
        headers
    }

    #[test]
    fn a_session_lives_in_its_cookie_and_ends() {
        let sessions = Sessions::new(settings());
        let set = sessions.create();
        let text = set[0].to_str().unwrap();
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(text.contains(attribute), "{text}");
        }
        assert!(set[1].to_str().unwrap().starts_with("l=;"));
        let request = headers(&set[..1]);
        let session = sessions.session(&request).unwrap();
        assert_eq!(session.csrf().len(), 64);
        assert!(!format!("{session:?}").contains(&session.id));
        sessions.end(&session);
        assert!(sessions.session(&request).is_none());
    }

    #[test]
    fn the_least_recently_used_session_makes_room() {
        let sessions = Sessions::new(settings());
        let first = headers(&sessions.create()[..1]);
        let second = headers(&sessions.create()[..1]);
        assert!(sessions.session(&first).is_some());
        let _third = sessions.create();
        assert!(sessions.session(&first).is_some());
        assert!(sessions.session(&second).is_none());
    }

    #[test]
    fn a_login_form_is_good_only_with_its_own_cookie() {
        let sessions = Sessions::new(settings());
        let (csrf, set) = sessions.login_form();
        let request = headers(&[set]);
        assert_eq!(sessions.check_login_form(&request, &csrf), Ok(()));
        let (other, _) = sessions.login_form();
        assert_eq!(
            sessions.check_login_form(&request, &other),
            Err(Refusal::LoginFormStale)
        );
        assert_eq!(
            sessions.check_login_form(&HeaderMap::new(), &csrf),
            Err(Refusal::LoginFormMissing)
        );
        let mut old = HeaderMap::new();
        let random = cookie(&request, "l").unwrap().split_once('.').unwrap().1;
        let stale = format!("l=1.{random}");
        old.insert(header::COOKIE, stale.parse().unwrap());
        assert_eq!(
            sessions.check_login_form(&old, &sessions.token("login", &stale[2..])),
            Err(Refusal::LoginFormStale)
        );
    }
}
