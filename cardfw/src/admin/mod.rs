//! The card's own web page: HTTPS only, on the card's inside address, with the card's own key
//! ([`crate::store::tls`]). Log in with the PIN, then see the rules, counters, recent
//! decisions and the audit log, edit and test the rules, roll back, change the PIN.
//!
//! | route | what | needs |
//! |---|---|---|
//! | `GET /` | the setup form (a new card), the login form, or the dashboard | — |
//! | `POST /setup` | a new card's setup code and first PIN → the PUK, shown this once | pre-session CSRF token |
//! | `POST /login` | PIN → session cookie, then back to `/` | pre-session CSRF token |
//! | `POST /logout` | ends the session | session, CSRF token |
//! | `POST /explain` | the decision tester, on the text in the editor (nothing saved) | session, CSRF token |
//! | `POST /rules` | validates, then saves the rules as the next version | session, CSRF token, PIN |
//! | `POST /rules/rollback` | the previous version becomes current again | session, CSRF token, PIN |
//! | `POST /pin` | changes the PIN | session, CSRF token, PIN |
//! | `POST /puk` | changes the PUK | session, CSRF token, PIN, PUK |
//! | `GET /inspection` | the inspection CA's fingerprint and the owner's trusted CAs | session |
//! | `POST /inspection/rekey` | a new inspection CA, used at once | session, CSRF token, PIN |
//! | `POST /inspection/cas`, `/inspection/cas/remove` | trusts an uploaded CA, or stops trusting one | session, CSRF token, PIN |
//! | `POST /inspection/client-cert` | stores the user's client certificate (multipart: PKCS#12 or PEM file, its password), locked | session, CSRF token, PIN |
//! | `POST /inspection/client-cert/unlock`, `/remove` | unlocks the client certificate (until idle), or removes it | session, CSRF token, PIN |
//! | `POST /inspection/client-cert/lock` | locks the client certificate | session, CSRF token |
//! | `GET /vpn` | the card's VPNs: where each comes from, state, handshake age, bytes, endpoint, the card's public key; the "Add a VPN" form | session |
//! | `POST /vpn/unlock` | unlocks a VPN and brings its tunnel up (until idle) | session, CSRF token, PIN |
//! | `POST /vpn/lock` | stops a VPN's tunnel and locks it | session, CSRF token |
//! | `POST /vpn/add` | checks a VPN as a `[vpn.NAME]` of the file, keeps it sealed, starts it locked | session, CSRF token, PIN |
//! | `POST /vpn/remove` | removes a VPN added on the page: locked, taken down, forgotten (its key kept) | session, CSRF token, PIN |
//! | `GET /inspection-ca`, `.pem`, `.crt` | the inspection CA: fingerprint and install steps, the certificate | — |
//! | `GET /access-requests` | a managed card's access requests and their states (see [`access`]) | — |
//! | `POST /access-requests` | the block page's "ask for access" form | the block page's MAC over what was blocked |
//! | `GET /static/style.css`, `/static/card.css` | the look, from the `web` crate | — |
//!
//! # A PIN with every change
//!
//! The store's [`AdminSession`](crate::store::AdminSession) borrows the store and exists only
//! after a correct PIN; keeping one alive between requests would mean keeping the PIN (or a
//! PIN-equivalent) in memory. Instead, the session cookie only opens the page (and the CSRF
//! token); every request that changes something carries the PIN, and the handler opens an
//! `AdminSession` for that one change with [`Store::login`]. A stolen cookie therefore shows the
//! rules but changes nothing, each change is audited with its own login, and a wrong PIN on any
//! form costs a try like at the login, so guessing through the forms blocks the PIN too.
//!
//! # What the page does not do
//!
//! Unblocking the PIN with the PUK and the factory reset are not on the page: any computer on
//! the inside reaches it, and ten wrong PUKs from one of them would leave the owner only a
//! factory reset. They need physical presence: the card's reader (`cardctl unblock`,
//! `cardctl reset`) or its console. A new card is set up only with its setup code, which the
//! page never shows. Every wrong PIN or setup code makes the sender wait, doubling per failure
//! ([`session::LoginDelays`]): an inside computer guessing is slowed without slowing the owner's.
//!
//! # Cookies and CSRF
//!
//! See [`session`] and [`serve::session`]: session and login cookies are
//! `HttpOnly; Secure; SameSite=Strict; Path=/`, and every POST carries a token bound to its
//! cookie, checked by the [`SessionForm`] and [`LoginForm`] extractors before a handler runs; a
//! missing or wrong token is a 403. PINs, PUKs and session ids are never logged.

mod access;
mod inspection;
mod inspection_ca;
pub mod session;
#[cfg(test)]
mod tests;
mod vpn;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use rules::{Action, LocalTime, Protocol, Request, RuleSet};
use serde::Deserialize;
use serve::http::{SecurityHeaders, static_file};
use serve::session::{LoginForm, Page, Refusal as SessionRefusal, Session, SessionForm, Sessions};
use tokio::net::TcpListener;
use web::card::{
    AuditView, CounterView, DashboardPage, DecisionView, ExplanationView, LoginPage, RuleError,
};
use zeroize::Zeroize;

use crate::firewall::Firewall;
use crate::inspect::InspectionError;
use crate::store::{Store, StoreError, pin};
use session::LoginDelays;

/// How long a session lasts without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The wait after a client's first wrong PIN or setup code; it doubles with every further one.
pub const LOGIN_DELAY: Duration = Duration::from_secs(1);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// The largest form accepted: a rule text is a few kilobytes.
const MAX_BODY: usize = 256 * 1024;
/// The name the rule text has in error messages.
const RULES_NAME: &str = "rules";

/// What the page works on: the firewall core and its store, the sessions.
#[derive(Debug)]
pub struct AdminState {
    store: Arc<Store>,
    firewall: Arc<Firewall>,
    sessions: Sessions,
    delays: LoginDelays,
}

impl AdminState {
    /// The page over `firewall`'s store; `None` when it has none (rules from a file): there
    /// is nothing to log in to.
    pub fn new(firewall: Arc<Firewall>) -> Option<Arc<AdminState>> {
        AdminState::with_timing(firewall, IDLE_TIMEOUT, LOGIN_DELAY)
    }

    /// Like [`AdminState::new`] with another idle timeout and first wait after a wrong PIN
    /// (tests use short ones).
    pub fn with_timing(
        firewall: Arc<Firewall>,
        idle: Duration,
        login_delay: Duration,
    ) -> Option<Arc<AdminState>> {
        Some(Arc::new(AdminState {
            store: firewall.store()?.clone(),
            firewall,
            sessions: Sessions::new(session::settings(idle)),
            delays: LoginDelays::new(login_delay),
        }))
    }

    /// The store the page works on.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl Page for AdminState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn refuse(&self, why: SessionRefusal) -> Response {
        forbidden(match why {
            SessionRefusal::NoSession => "Your session has ended: log in again.",
            SessionRefusal::WrongToken => "The form's security token is missing or wrong.",
            SessionRefusal::LoginFormMissing => "The login form has expired.",
            SessionRefusal::LoginFormStale => {
                "The form's security token is missing, wrong or expired."
            }
        })
    }
}

/// Every answer: never cached (it shows the rules and the audit log), no framing, no script,
/// forms post only to the card.
const HEADERS: SecurityHeaders = SecurityHeaders {
    content_security_policy: web::card::CONTENT_SECURITY_POLICY,
    https: true,
};

/// The page's routes over the shared state.
pub fn router(state: Arc<AdminState>) -> Router {
    let routes = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/setup", post(setup))
        .route("/logout", post(logout))
        .route("/explain", post(explain))
        .route("/rules", post(save_rules))
        .route("/rules/rollback", post(rollback))
        .route("/pin", post(change_pin))
        .route("/puk", post(change_puk))
        .route("/inspection", get(inspection::page))
        .route("/inspection/rekey", post(inspection::rekey))
        .route("/inspection/cas", post(inspection::add_cas))
        .route("/inspection/cas/remove", post(inspection::remove_ca))
        .route(
            "/inspection/client-cert",
            post(inspection::upload_client_cert),
        )
        .route(
            "/inspection/client-cert/unlock",
            post(inspection::unlock_client_cert),
        )
        .route(
            "/inspection/client-cert/lock",
            post(inspection::lock_client_cert),
        )
        .route(
            "/inspection/client-cert/remove",
            post(inspection::remove_client_cert),
        )
        .route("/vpn", get(vpn::page))
        .route("/vpn/unlock", post(vpn::unlock))
        .route("/vpn/lock", post(vpn::lock))
        .route("/vpn/add", post(vpn::add))
        .route("/vpn/remove", post(vpn::remove))
        .route(
            web::proxy::ACCESS_REQUESTS_PATH,
            get(access::list).post(access::ask),
        )
        .route("/inspection-ca", get(inspection_ca::page))
        .route("/inspection-ca.pem", get(inspection_ca::pem))
        .route("/inspection-ca.crt", get(inspection_ca::der))
        .route("/static/style.css", get(|| css(web::STYLE_CSS)))
        .route("/static/card.css", get(|| css(web::card::CARD_CSS)))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    HEADERS.on(routes).with_state(state)
}

/// Serves the page over TLS on `listener` until the task is dropped. Bind the listener to the
/// card's inside address only.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AdminState>,
) -> std::io::Result<()> {
    let cap = crate::accept::Cap {
        total: MAX_CONNECTIONS,
        per_client: MAX_CONNECTIONS,
    };
    let how = crate::accept::counted("card page", Some(cap));
    match serve::http::https(listener, how, tls, router(state)).await {}
}

async fn css(body: &'static str) -> Response {
    static_file("text/css; charset=utf-8", body)
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        web::NotFoundPage {
            path: uri.path().to_owned(),
        },
    )
}

fn forbidden(why: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\nReload the card's page and try again.\n"),
    )
        .into_response()
}

/// Runs store work (Argon2, fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    state: &Arc<AdminState>,
    work: impl FnOnce(&AdminState) -> T + Send + 'static,
) -> T {
    let state = state.clone();
    match tokio::task::spawn_blocking(move || work(&state)).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// The address a request came from (what login waits are counted by). Requests that did not
/// come through [`serve`] (tests) are from the unspecified address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<ClientAddr, Infallible> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |info| {
                    info.0.ip()
                }),
        ))
    }
}

/// Why a PIN-guarded action did not happen.
enum Refusal {
    Store(StoreError),
    /// The inspection change itself was refused (a bad upload, …) after a correct PIN.
    Inspection(InspectionError),
    /// The client must wait this long after its last wrong secret; nothing was tried.
    Wait(Duration),
    /// A VPN did not unlock after a correct PIN (no key, the tunnel did not start).
    Vpn(crate::vpn::VpnError),
}

impl From<crate::vpn::VpnError> for Refusal {
    fn from(error: crate::vpn::VpnError) -> Refusal {
        Refusal::Vpn(error)
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Refusal {
        Refusal::Store(error)
    }
}

impl From<InspectionError> for Refusal {
    fn from(error: InspectionError) -> Refusal {
        Refusal::Inspection(error)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Store(error) => error.fmt(f),
            Refusal::Inspection(error) => error.fmt(f),
            Refusal::Vpn(error) => error.fmt(f),
            Refusal::Wait(left) => write!(
                f,
                "too many wrong tries from this computer: wait {} s before the next (no try was spent)",
                left.as_secs().max(1)
            ),
        }
    }
}

/// Whether a refusal counts as a wrong secret for the client's wait.
fn wrong_secret(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::WrongPin { .. }
            | StoreError::Blocked
            | StoreError::WrongSetupCode { .. }
            | StoreError::SetupBlocked
    )
}

/// Runs `attempt` unless `client` must still wait; counts its outcome for the next wait.
async fn throttled<T: Send + 'static, E: Send + 'static>(
    state: &Arc<AdminState>,
    client: ClientAddr,
    attempt: impl FnOnce(&AdminState) -> Result<T, E> + Send + 'static,
) -> Result<T, Refusal>
where
    Refusal: From<E>,
{
    if let Some(left) = state.delays.wait_left(client.0) {
        return Err(Refusal::Wait(left));
    }
    let result = blocking(state, |state| attempt(state).map_err(Refusal::from)).await;
    match &result {
        Ok(_) => state.delays.succeeded(client.0),
        Err(Refusal::Store(error)) if wrong_secret(error) => state.delays.failed(client.0),
        Err(_) => {}
    }
    result
}

// ---- forms. Secrets are wiped when the form is dropped; none derives Debug. ----

/// A PIN or PUK from a form, wiped when dropped.
#[derive(Deserialize, Default)]
#[serde(transparent)]
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A form with no field but its CSRF token (which [`SessionForm`] reads).
#[derive(Deserialize)]
struct NoFields {}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PinForm {
    pin: Secret,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SetupForm {
    setup_code: Secret,
    new_pin: Secret,
    confirm_pin: Secret,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChangePukForm {
    pin: Secret,
    puk: Secret,
    new_puk: Secret,
    confirm_puk: Secret,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RulesForm {
    rules: String,
    target: String,
    pin: Secret,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChangePinForm {
    pin: Secret,
    new_pin: Secret,
    confirm_pin: Secret,
}

// ---- pages ----

async fn index(State(state): State<Arc<AdminState>>, session: Option<Session>) -> Response {
    match session {
        Some(session) => dashboard(&state, &session, View::default()),
        None => login_page(&state, StatusCode::OK, None, None, None),
    }
}

/// The login page, with a new pre-session cookie and its token. `new_puk` is shown once,
/// right after setup.
fn login_page(
    state: &AdminState,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
    new_puk: Option<zeroize::Zeroizing<String>>,
) -> Response {
    let (csrf, cookie) = state.sessions.login_form();
    let pin = state.store.pin_state();
    let page = LoginPage {
        csrf,
        needs_setup: pin.as_ref().is_ok_and(|p| p.needs_setup),
        setup_tries_left: pin.as_ref().map_or(0, |p| p.setup_tries_left),
        new_puk: new_puk.map(|puk| pin::group_digits(&puk).to_string()),
        tries_left: pin.as_ref().map_or(0, |p| p.tries_left),
        blocked: pin.as_ref().is_ok_and(|p| p.blocked),
        puk_tries_left: pin.as_ref().map_or(0, |p| p.puk_tries_left),
        puk_blocked: pin.as_ref().is_ok_and(|p| p.puk_blocked),
        error: error.or_else(|| pin.err().map(|e| e.to_string())),
        notice,
        fingerprint: crate::store::tls::stored_fingerprint(&state.store).unwrap_or_default(),
    };
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

/// What one dashboard rendering shows beyond the stored state.
#[derive(Default)]
struct View {
    notice: Option<String>,
    error: Option<String>,
    /// The editor's text when it is not the stored one (refused, or being tested).
    rules_text: Option<String>,
    rule_errors: Vec<RuleError>,
    explain_target: String,
    explanation: Option<ExplanationView>,
}

fn dashboard(state: &AdminState, session: &Session, view: View) -> Response {
    let store = &state.store;
    let mut error = view.error;
    let mut note = |e: StoreError| {
        error.get_or_insert_with(|| e.to_string());
    };
    let (rules_version, rules_saved_at, stored_text) = match store.rules() {
        Ok(rules) => (
            rules.version,
            web::format::date_time(
                rules
                    .saved_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            rules.text,
        ),
        Err(e) => {
            note(e);
            (0, "?".to_owned(), String::new())
        }
    };
    let previous_version = store.previous_rules().ok().flatten().map(|r| r.version);
    let audit = store
        .audit()
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|entry| AuditView {
            at: web::format::date_time(
                entry
                    .at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            event: entry.event.to_string(),
        })
        .collect();
    let counters = &state.firewall.events.counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let page = DashboardPage {
        csrf: session.csrf().to_owned(),
        notice: view.notice,
        error,
        rules_version,
        rules_saved_at,
        running_version: state.firewall.rules().version.clone(),
        rules_text: view.rules_text.unwrap_or(stored_text),
        rule_errors: view.rule_errors,
        previous_version,
        managed_by: crate::store::Enrolment::load(&state.store)
            .ok()
            .flatten()
            .map(|e| e.describe()),
        overlay: state
            .store
            .overlay()
            .ok()
            .flatten()
            .map(|o| (o.version, o.text)),
        counters: [
            ("Connections", &counters.connections),
            ("Allowed", &counters.allowed),
            ("Denied", &counters.denied),
            ("DNS questions", &counters.dns_queries),
            ("Refused at capacity", &counters.refused_at_capacity),
            ("Rule reloads", &counters.reloads),
        ]
        .into_iter()
        .map(|(label, counter)| CounterView {
            label,
            value: load(counter),
        })
        .collect(),
        recent: state
            .firewall
            .events
            .recent()
            .into_iter()
            .rev()
            .map(|d| DecisionView {
                clock: web::format::clock(d.at),
                client: d.client.to_string(),
                protocol: d.protocol.to_owned(),
                target: d.target.to_string(),
                action: d.action.as_str().to_owned(),
                rule: d.rule.to_string(),
            })
            .collect(),
        explain_target: view.explain_target,
        explanation: view.explanation,
        audit,
        fingerprint: crate::store::tls::stored_fingerprint(store).unwrap_or_default(),
    };
    page.into_response()
}

// ---- actions ----

async fn login(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    LoginForm(form): LoginForm<PinForm>,
) -> Response {
    let pin = form.pin.0.clone();
    let result = throttled(&state, client, move |state| {
        let pin = zeroizing(pin);
        state.store.login(&pin).map(|_| ())
    })
    .await;
    match result {
        Ok(()) => {
            tracing::info!("admin page: login");
            let mut response = Redirect::to("/").into_response();
            for cookie in state.sessions.create() {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => login_refused(&state, "login", error),
    }
}

/// The login page again after a refused login or setup: 429 while the client must wait, 401
/// for a wrong secret.
fn login_refused(state: &AdminState, what: &str, error: Refusal) -> Response {
    tracing::info!("admin page: {what} refused: {error}");
    let status = match error {
        Refusal::Wait(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Store(_) | Refusal::Inspection(_) | Refusal::Vpn(_) => StatusCode::UNAUTHORIZED,
    };
    login_page(state, status, Some(error.to_string()), None, None)
}

/// First setup: the setup code and the first PIN; the answer shows the new PUK, once.
async fn setup(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    LoginForm(form): LoginForm<SetupForm>,
) -> Response {
    if form.new_pin.0 != form.confirm_pin.0 {
        let error = "The two PINs differ: nothing was changed.".to_owned();
        return login_page(&state, StatusCode::OK, Some(error), None, None);
    }
    let (code, new_pin) = (form.setup_code.0.clone(), form.new_pin.0.clone());
    let result = throttled(&state, client, move |state| {
        let (code, new_pin) = (zeroizing(code), zeroizing(new_pin));
        state.store.setup(&code, &new_pin)
    })
    .await;
    match result {
        Ok(puk) => {
            tracing::info!("admin page: the card is set up");
            let notice = "The card is set up. Note the PUK below now: it is shown only this once, \
                and it is what unblocks the PIN (over the card's reader, with cardctl unblock)."
                .to_owned();
            let mut response = login_page(&state, StatusCode::OK, None, Some(notice), Some(puk));
            // The page holds the PUK: no copy in any cache, and none kept by the back button.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => login_refused(&state, "setup", error),
    }
}

async fn logout(
    State(state): State<Arc<AdminState>>,
    SessionForm { session, .. }: SessionForm<NoFields>,
) -> Response {
    let cookie = state.sessions.end(&session);
    tracing::info!("admin page: logout");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

async fn explain(
    State(state): State<Arc<AdminState>>,
    SessionForm { session, form }: SessionForm<RulesForm>,
) -> Response {
    let mut view = View {
        rules_text: Some(form.rules.clone()),
        explain_target: form.target.clone(),
        ..View::default()
    };
    match compile(&state, &form.rules) {
        Err(errors) => view.rule_errors = errors,
        Ok(rules) => match ask(&rules, form.target.trim()) {
            Ok(explanation) => view.explanation = Some(explanation),
            Err(why) => view.error = Some(why),
        },
    }
    dashboard(&state, &session, view)
}

async fn save_rules(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<RulesForm>,
) -> Response {
    if let Err(errors) = compile(&state, &form.rules) {
        return dashboard(
            &state,
            &session,
            View {
                rules_text: Some(form.rules.clone()),
                rule_errors: errors,
                explain_target: form.target.clone(),
                ..View::default()
            },
        );
    }
    let (pin, text) = (form.pin.0.clone(), form.rules.clone());
    let result = with_pin(&state, client, pin, move |session| {
        session.save_rules(&text)
    })
    .await;
    match result {
        Ok(version) => {
            tracing::info!(version, "admin page: rules saved");
            let notice =
                format!("Saved as version {version}. The firewall loads it within a few seconds.");
            dashboard(&state, &session, notice_view(notice))
        }
        Err(error) => action_failed(&state, &session, error, Some(form.rules.clone())),
    }
}

async fn rollback(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<PinForm>,
) -> Response {
    let result = with_pin(&state, client, form.pin.0.clone(), |session| {
        session.rollback()
    })
    .await;
    match result {
        Ok(version) => {
            tracing::info!(version, "admin page: rules rolled back");
            let notice = format!("Rolled back: the previous rules are now version {version}.");
            dashboard(&state, &session, notice_view(notice))
        }
        Err(error) => action_failed(&state, &session, error, None),
    }
}

async fn change_pin(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<ChangePinForm>,
) -> Response {
    if form.new_pin.0 != form.confirm_pin.0 {
        let view = View {
            error: Some("The two new PINs differ: nothing was changed.".into()),
            ..View::default()
        };
        return dashboard(&state, &session, view);
    }
    let new_pin = form.new_pin.0.clone();
    let result = with_pin(&state, client, form.pin.0.clone(), move |session| {
        let new_pin = zeroizing(new_pin);
        session.change_pin(&new_pin)
    })
    .await;
    match result {
        Ok(()) => {
            tracing::info!("admin page: PIN changed");
            dashboard(&state, &session, notice_view("The PIN is changed.".into()))
        }
        Err(error) => action_failed(&state, &session, error, None),
    }
}

/// The PIN opens the form like every change; the current PUK is checked with its own counter.
async fn change_puk(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<ChangePukForm>,
) -> Response {
    if form.new_puk.0 != form.confirm_puk.0 {
        let view = View {
            error: Some("The two new PUKs differ: nothing was changed.".into()),
            ..View::default()
        };
        return dashboard(&state, &session, view);
    }
    let (puk, new_puk) = (form.puk.0.clone(), form.new_puk.0.clone());
    let result = with_pin(&state, client, form.pin.0.clone(), move |session| {
        let (puk, new_puk) = (zeroizing(puk), zeroizing(new_puk));
        session.change_puk(&puk, &new_puk)
    })
    .await;
    match result {
        Ok(()) => {
            tracing::info!("admin page: PUK changed");
            dashboard(&state, &session, notice_view("The PUK is changed.".into()))
        }
        Err(error) => action_failed(&state, &session, error, None),
    }
}

fn notice_view(notice: String) -> View {
    View {
        notice: Some(notice),
        ..View::default()
    }
}

fn zeroizing(secret: String) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(secret)
}

/// Opens an admin session with `pin` for one change (see the module documentation).
async fn with_pin<T: Send + 'static, E: Send + 'static>(
    state: &Arc<AdminState>,
    client: ClientAddr,
    pin: String,
    change: impl FnOnce(&crate::store::AdminSession<'_>) -> Result<T, E> + Send + 'static,
) -> Result<T, Refusal>
where
    Refusal: From<E>,
{
    throttled::<T, Refusal>(state, client, move |state| {
        let pin = zeroizing(pin);
        let session = state.store.login(&pin)?;
        Ok(change(&session)?)
    })
    .await
}

/// A refused change: a blocked PIN ends the session (the page shows the PUK form); anything
/// else is said on the dashboard, with the edited text kept.
fn action_failed(
    state: &AdminState,
    session: &Session,
    error: Refusal,
    rules_text: Option<String>,
) -> Response {
    if let Some(response) = session_ended(state, session, &error) {
        return response;
    }
    let view = View {
        error: Some(format!("Nothing was changed: {error}.")),
        rules_text,
        ..View::default()
    };
    dashboard(state, session, view)
}

/// The login page, with the session ended, when `error` blocked the PIN (or the PUK); `None`
/// when the page the change came from should say what went wrong.
fn session_ended(state: &AdminState, session: &Session, error: &Refusal) -> Option<Response> {
    tracing::info!("admin page: change refused: {error}");
    if !matches!(
        error,
        Refusal::Store(StoreError::Blocked | StoreError::PukBlocked)
    ) {
        return None;
    }
    let cookie = state.sessions.end(session);
    let mut response = login_page(state, StatusCode::OK, Some(error.to_string()), None, None);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Some(response)
}

/// Compiles the edited text as the firewall would (list files beside the store), or says
/// where it is wrong.
fn compile(state: &AdminState, text: &str) -> Result<RuleSet, Vec<RuleError>> {
    state
        .store
        .compile(RULES_NAME, text)
        .map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(|d| RuleError {
                    line: d.line,
                    col: d.col,
                    message: if d.file == RULES_NAME {
                        d.message.clone()
                    } else {
                        format!("in {}: {}", d.file, d.message)
                    },
                    source_line: d.source_line.clone(),
                })
                .collect()
        })
}

/// The decision tester: a URL (`http://…`, `https://…`) or a bare name (asked as HTTPS).
fn ask(rules: &RuleSet, target: &str) -> Result<ExplanationView, String> {
    if target.is_empty() {
        return Err("Enter a URL or a name to test.".into());
    }
    let (protocol, host, port, path) = if target.contains("://") {
        let uri: Uri = target
            .parse()
            .map_err(|_| format!("{target} is not a URL."))?;
        let (protocol, default_port) = match uri.scheme_str() {
            Some("http") => (Protocol::Http, 80),
            Some("https") => (Protocol::Https, 443),
            _ => return Err("Only http:// and https:// URLs can be tested.".into()),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{target} has no host."))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = (protocol == Protocol::Http).then(|| uri.path().to_owned());
        (protocol, host, uri.port_u16().unwrap_or(default_port), path)
    } else {
        (Protocol::Https, target.to_owned(), 443, None)
    };
    let mut request = Request::new(protocol, LocalTime::now()).port(port);
    let address = host.parse::<IpAddr>().ok();
    match address {
        Some(address) => request = request.dst(address),
        None => request = request.host(&host),
    }
    if let Some(path) = &path {
        request = request.method("GET").path(path);
    }
    let explanation = rules.explain(&request, None);
    let decision = explanation.decision;
    Ok(ExplanationView {
        asked: format!(
            "{} {host}:{port}{}",
            protocol.name(),
            path.as_deref().unwrap_or("")
        ),
        verdict: decision.to_string(),
        allowed: decision.action == Action::Allow,
        rule_text: decision.rule.text.clone(),
        reasons: explanation.reasons,
    })
}
