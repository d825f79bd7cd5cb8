//! The page driven through the router, as a browser would: cookies, CSRF tokens, forms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rules::{NoFiles, RuleSet};
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::firewall::{Firewall, LoadedRules};
use crate::store::PinCost;

const PIN: &str = "98765432101";
const GOOD_RULES: &str = "web: allow https host example.com\ndefault deny\n";

struct Page {
    status: StatusCode,
    cookies: Vec<String>,
    body: String,
}

struct Browser {
    app: Router,
    state: Arc<AdminState>,
    /// name=value pairs sent back.
    jar: Vec<(String, String)>,
    bodies: Vec<String>,
    /// The PUK the card showed at setup, when the test set it up.
    puk: Option<String>,
    _dir: tempfile::TempDir,
}

fn firewall(store: Store) -> Arc<Firewall> {
    Firewall::new(
        Config::default(),
        LoadedRules {
            rules: RuleSet::from_text("rules", "deny any\n", &NoFiles).unwrap(),
            version: "test".into(),
            loaded_at: 0,
        },
        Some(store),
    )
}

/// A card already set up with [`PIN`] (or new), with no wait after wrong PINs.
fn browser(set_up: bool, idle: Duration) -> Browser {
    browser_with_delay(set_up, idle, Duration::ZERO)
}

fn browser_with_delay(set_up: bool, idle: Duration, login_delay: Duration) -> Browser {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_or_create(dir.path(), "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let puk = set_up.then(|| {
        let code = store.setup_code().unwrap().unwrap();
        store.setup(&code, PIN).unwrap().to_string()
    });
    let state = AdminState::with_timing(firewall(store), idle, login_delay).unwrap();
    Browser {
        app: router(state.clone()),
        state,
        jar: Vec::new(),
        bodies: Vec::new(),
        puk,
        _dir: dir,
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first `name="csrf"` hidden field.
fn csrf_of(body: &str) -> String {
    let start = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

impl Browser {
    async fn send(&mut self, request: Request<Body>) -> Page {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        assert!(
            response
                .headers()
                .get(header::CONTENT_SECURITY_POLICY)
                .is_some()
        );
        let cookies: Vec<String> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for cookie in &cookies {
            let (pair, _) = cookie.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.jar.push((name.to_owned(), value.to_owned()));
            }
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        self.bodies.push(body.clone());
        Page {
            status,
            cookies,
            body,
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = Request::get(path)
            .header(header::COOKIE, self.cookie_header())
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = Request::post(path)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(form)))
            .unwrap();
        self.send(request).await
    }

    /// Loads the login page and posts `pin` with its token.
    async fn login(&mut self, pin: &str) -> Page {
        let page = self.get("/").await;
        let csrf = csrf_of(&page.body);
        self.post("/login", &[("csrf", &csrf), ("pin", pin)]).await
    }

    /// Logs in and returns the dashboard's CSRF token.
    async fn logged_in(&mut self, pin: &str) -> String {
        let page = self.login(pin).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        let page = self.get("/").await;
        assert!(page.body.contains("Log out"), "{}", page.body);
        csrf_of(&page.body)
    }

    fn version(&self) -> u64 {
        self.state.store().version().unwrap()
    }
}

#[tokio::test]
async fn admin_wrong_pin_shows_the_tries_left_counting_down() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let page = browser.get("/").await;
    assert!(page.body.contains("3 tries left"), "{}", page.body);
    let page = browser.login("0000").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.body.contains("wrong PIN, 2 tries left"),
        "{}",
        page.body
    );
    let page = browser.login("0000").await;
    assert!(
        page.body.contains("wrong PIN, 1 tries left"),
        "{}",
        page.body
    );
    let page = browser.login("0000").await;
    assert!(page.body.contains("PUK"), "{}", page.body);
    assert!(browser.state.store().pin_state().unwrap().blocked);
}

/// Issue 13.10: an inside computer that reaches the page cannot lock the owner out. Three
/// wrong PINs block the PIN, but the page takes no PUK (ten wrong ones would block it for
/// good): the owner unblocks over the card's reader.
#[tokio::test]
async fn admin_bad_pins_and_puks_from_the_page_leave_the_card_recoverable() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let puk = browser.puk.clone().unwrap();
    for _ in 0..3 {
        browser.login("0000").await;
    }
    let page = browser.get("/").await;
    assert!(page.body.contains("The PIN is blocked"), "{}", page.body);
    assert!(page.body.contains("cardctl unblock"), "{}", page.body);
    assert!(
        !page.body.contains("name=\"puk\""),
        "no PUK form: {}",
        page.body
    );
    for _ in 0..10 {
        // The blocked page has no form at all; the forged request uses the login's token.
        browser.get("/").await;
        let csrf = "forged";
        let page = browser
            .post(
                "/unblock",
                &[
                    ("csrf", csrf),
                    ("puk", "000000000000"),
                    ("new_pin", "24681357"),
                ],
            )
            .await;
        assert!(
            matches!(
                page.status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{}",
            page.status
        );
    }
    let state = browser.state.store().pin_state().unwrap();
    assert_eq!((state.blocked, state.puk_tries_left), (true, 10));
    // What `cardctl unblock` does over the reader.
    browser.state.store().unblock(&puk, "24681357").unwrap();
    browser.logged_in("24681357").await;
}

/// Issue 13.10: wrong PINs make the sender wait, doubling; a try refused for waiting costs
/// nothing.
#[tokio::test]
async fn admin_wrong_pins_make_the_client_wait() {
    let mut browser = browser_with_delay(true, IDLE_TIMEOUT, Duration::from_secs(30));
    let page = browser.login("0000").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = browser.login(PIN).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.body.contains("wait"), "{}", page.body);
    assert_eq!(browser.state.store().pin_state().unwrap().tries_left, 2);
}

/// Issue 13.7: the decision tester compiles with the store's list files, but a list file can
/// only be a plain name in the list folder, and its lines are never shown.
#[tokio::test]
async fn admin_explain_shows_no_store_file_and_no_list_line() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let dir = browser.state.store().dir().to_path_buf();
    std::fs::write(
        dir.join("lists").join("ads.txt"),
        "ads.example\nsecret-word here\n",
    )
    .unwrap();
    std::fs::write(dir.join("puk.txt"), "cardwall card PUK: 998877665544\n").unwrap();
    let csrf = browser.logged_in(PIN).await;
    for name in [
        "puk.txt",
        "../puk.txt",
        "device.key",
        "pin.sealed",
        "ads.txt",
    ] {
        let rules = format!("list p file {name}\ndeny any host @p\ndefault allow\n");
        let page = browser
            .post(
                "/explain",
                &[("csrf", &csrf), ("rules", &rules), ("target", "x.org")],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        for secret in ["998877665544", "secret-word", "cardwall card PUK"] {
            assert!(!page.body.contains(secret), "{name}: {secret} on the page");
        }
    }
}

/// Issue 13.9: a new card's page asks for the setup code, never takes a default PIN, and
/// shows the PUK once, right after setup.
#[tokio::test]
async fn admin_a_new_card_is_set_up_with_its_setup_code() {
    let mut browser = browser(false, IDLE_TIMEOUT);
    let page = browser.get("/").await;
    assert!(page.body.contains("Set up this card"), "{}", page.body);
    assert!(!page.body.contains("action=\"/login\""), "{}", page.body);
    let page = browser.login("1234").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("not set up"), "{}", page.body);
    let code = browser
        .state
        .store()
        .setup_code()
        .unwrap()
        .unwrap()
        .to_string();
    assert!(!page.body.contains(&code), "the page never shows the code");
    let setup = |code: &str| {
        [
            ("setup_code", code.to_owned()),
            ("new_pin", PIN.to_owned()),
            ("confirm_pin", PIN.to_owned()),
        ]
    };
    let csrf = csrf_of(&page.body);
    let mut form = vec![("csrf", csrf)];
    form.extend(setup("000000000000"));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = browser.post("/setup", &form).await;
    assert!(
        page.body.contains("wrong setup code, 9 tries left"),
        "{}",
        page.body
    );
    let csrf = csrf_of(&page.body);
    let mut form = vec![("csrf", csrf)];
    form.extend(setup(&crate::store::format_setup_code(&code)));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = browser.post("/setup", &form).await;
    assert_eq!(page.status, StatusCode::OK);
    let start = page.body.find("id=\"new-puk\">").expect("the PUK") + 13;
    let shown = &page.body[start..start + 14];
    assert_eq!(shown.len(), 14, "{shown}");
    let page = browser.get("/").await;
    assert!(!page.body.contains(shown), "shown once");
    assert!(!page.body.contains("Set up this card"));
    browser.logged_in(PIN).await;
    // The PUK shown is the card's: it unblocks (what `cardctl unblock` does).
    browser.state.store().unblock(shown, "24681357").unwrap();
}

/// Issue 13.8: the PUK is changed on the page (PIN and current PUK needed).
#[tokio::test]
async fn admin_puk_is_changed_with_the_pin_and_the_puk() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let puk = browser.puk.clone().unwrap();
    let csrf = browser.logged_in(PIN).await;
    let change = |pin: &'static str, puk: String| {
        move |csrf: String| {
            vec![
                ("csrf", csrf),
                ("pin", pin.to_owned()),
                ("puk", puk.clone()),
                ("new_puk", "1357913579".to_owned()),
                ("confirm_puk", "1357913579".to_owned()),
            ]
        }
    };
    for (form, expected) in [
        (change("0000", puk.clone())(csrf.clone()), "wrong PIN"),
        (
            change(PIN, "000000000000".into())(csrf.clone()),
            "wrong PUK, 9 tries left",
        ),
        (change(PIN, puk.clone())(csrf.clone()), "The PUK is changed"),
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = browser.post("/puk", &form).await;
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    browser.state.store().unblock("1357913579", "2468").unwrap();
}

#[tokio::test]
async fn admin_right_pin_sets_a_protected_session_cookie() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let page = browser.login(PIN).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let session = page
        .cookies
        .iter()
        .find(|c| c.starts_with(&format!("{}=", session::SESSION_COOKIE)))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    // 32 random bytes, hex.
    let value = session
        .split_once('=')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap();
    assert_eq!(value.len(), 64);
    let page = browser.get("/").await;
    assert!(page.body.contains("Rule text"), "{}", page.body);
}

#[tokio::test]
async fn admin_posts_without_the_right_csrf_token_are_forbidden() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    // Login without a token, and with a token from another cookie.
    let page = browser.post("/login", &[("pin", PIN)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let csrf = browser.logged_in(PIN).await;
    let before = browser.version();
    let page = browser
        .post("/rules", &[("rules", GOOD_RULES), ("pin", PIN)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let wrong = csrf.replace(|c: char| c != '0', "0");
    let page = browser
        .post(
            "/rules",
            &[("csrf", &wrong), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser.post("/logout", &[("csrf", "")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.version(), before);
    // The right token works.
    let page = browser
        .post(
            "/rules",
            &[("csrf", &csrf), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(browser.version(), before + 1);
}

#[tokio::test]
async fn admin_invalid_rules_are_shown_with_line_and_column_and_not_saved() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let csrf = browser.logged_in(PIN).await;
    let bad = "deny any\nallow https hots example.com\n";
    let page = browser
        .post("/rules", &[("csrf", &csrf), ("rules", bad), ("pin", PIN)])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("line 2:13"), "{}", page.body);
    assert!(page.body.contains("Not saved"), "{}", page.body);
    // The refused text stays in the editor; the store is unchanged.
    assert!(page.body.contains("hots example.com"));
    let stored = browser.state.store().rules().unwrap();
    assert_eq!((stored.version, stored.text.as_str()), (1, "deny any\n"));
}

#[tokio::test]
async fn admin_valid_rules_are_saved_and_rolled_back() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let csrf = browser.logged_in(PIN).await;
    let page = browser
        .post(
            "/rules",
            &[("csrf", &csrf), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    assert!(page.body.contains("Saved as version 2"), "{}", page.body);
    assert_eq!(browser.state.store().rules().unwrap().text, GOOD_RULES);
    // A wrong PIN on the form changes nothing and costs a try.
    let page = browser
        .post("/rules/rollback", &[("csrf", &csrf), ("pin", "0000")])
        .await;
    assert!(
        page.body.contains("wrong PIN, 2 tries left"),
        "{}",
        page.body
    );
    assert_eq!(browser.version(), 2);
    let page = browser
        .post("/rules/rollback", &[("csrf", &csrf), ("pin", PIN)])
        .await;
    assert!(page.body.contains("Rolled back"), "{}", page.body);
    assert_eq!(browser.version(), 3);
    assert_eq!(browser.state.store().rules().unwrap().text, "deny any\n");
}

#[tokio::test]
async fn admin_decision_tester_explains_the_edited_text_without_saving() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let csrf = browser.logged_in(PIN).await;
    let page = browser
        .post(
            "/explain",
            &[
                ("csrf", &csrf),
                ("rules", GOOD_RULES),
                ("target", "https://example.com/page"),
            ],
        )
        .await;
    assert!(page.body.contains("allow by web"), "{}", page.body);
    let page = browser
        .post(
            "/explain",
            &[
                ("csrf", &csrf),
                ("rules", GOOD_RULES),
                ("target", "other.org"),
            ],
        )
        .await;
    assert!(page.body.contains("deny by default"), "{}", page.body);
    assert_eq!(browser.version(), 1);
}

#[tokio::test]
async fn admin_logout_ends_the_session() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let csrf = browser.logged_in(PIN).await;
    let old = browser.jar.clone();
    let page = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // Even with the old cookie sent again, the session is gone.
    browser.jar = old;
    let page = browser.get("/").await;
    assert!(page.body.contains("Log in"), "{}", page.body);
    let page = browser
        .post(
            "/rules",
            &[("csrf", &csrf), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admin_idle_session_expires() {
    let mut browser = browser(true, Duration::from_millis(200));
    browser.logged_in(PIN).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = browser.get("/").await;
    assert!(page.body.contains("Log in"), "{}", page.body);
}

#[tokio::test]
async fn admin_rule_text_is_escaped() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let csrf = browser.logged_in(PIN).await;
    let rules = "# <script>alert(1)</script>\ndeny any\n";
    browser
        .post("/rules", &[("csrf", &csrf), ("rules", rules), ("pin", PIN)])
        .await;
    assert_eq!(browser.version(), 2);
    let page = browser.get("/").await;
    assert!(
        page.body.contains("&#60;script&#62;alert(1)"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"));
}

/// A writer for the test's log lines.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn admin_no_pin_or_session_id_in_any_page_or_log() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut browser = browser(false, IDLE_TIMEOUT);
    let code = browser
        .state
        .store()
        .setup_code()
        .unwrap()
        .unwrap()
        .to_string();
    let page = browser.get("/").await;
    let csrf = csrf_of(&page.body);
    browser
        .post(
            "/setup",
            &[
                ("csrf", &csrf),
                ("setup_code", &code),
                ("new_pin", "11223344"),
                ("confirm_pin", "11223344"),
            ],
        )
        .await;
    browser.login("24242424").await;
    let csrf = browser.logged_in("11223344").await;
    browser
        .post(
            "/pin",
            &[
                ("csrf", &csrf),
                ("pin", "11223344"),
                ("new_pin", PIN),
                ("confirm_pin", PIN),
            ],
        )
        .await;
    browser
        .post(
            "/rules",
            &[("csrf", &csrf), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    browser
        .post("/rules/rollback", &[("csrf", &csrf), ("pin", "13579135")])
        .await;
    browser.post("/logout", &[("csrf", &csrf)]).await;
    let session = browser
        .jar
        .iter()
        .find(|(n, _)| n == session::SESSION_COOKIE)
        .map(|(_, v)| v.clone());
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    // Any line of the page shows the capture works. (Not one chosen line: tracing caches a
    // call site's interest globally, and another test thread may hit it first.)
    assert!(log.contains("admin page:"), "the log is captured: {log}");
    assert_eq!(browser.version(), 2, "the rules were saved");
    for secret in [PIN, "24242424", "13579135", "11223344", code.as_str()] {
        assert!(!log.contains(secret), "{secret} in the log");
        for body in &browser.bodies {
            assert!(!body.contains(secret), "{secret} in a page");
        }
    }
    if let Some(session) = session {
        assert!(!log.contains(&session));
    }
}

#[tokio::test]
async fn admin_managed_card_shows_the_rules_read_only_and_refuses_edits() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    make_managed(&browser);
    let csrf = browser.logged_in(PIN).await;
    let page = browser.get("/").await;
    assert!(
        page.body
            .contains("managed by the policy server https://policy.example:8443 (group laptops"),
        "{}",
        page.body
    );
    assert!(page.body.contains(" readonly"), "{}", page.body);
    assert!(!page.body.contains("Save as version"), "{}", page.body);
    assert!(!page.body.contains("/rules/rollback"), "{}", page.body);
    // A forged form is refused by the store, not only hidden by the page.
    let page = browser
        .post(
            "/rules",
            &[("csrf", &csrf), ("rules", GOOD_RULES), ("pin", PIN)],
        )
        .await;
    assert!(
        page.body.contains("managed by the policy server"),
        "{}",
        page.body
    );
    assert_eq!(browser.version(), 1);
    // The PIN still guards everything else.
    let page = browser
        .post(
            "/pin",
            &[
                ("csrf", &csrf),
                ("pin", PIN),
                ("new_pin", "24681357"),
                ("confirm_pin", "24681357"),
            ],
        )
        .await;
    assert_ne!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    browser.state.store().login("24681357").unwrap();
}

/// A set-up card that inspects: its CA made in the store, as `run.rs` does at start.
fn inspecting_browser() -> Browser {
    let browser = browser(true, IDLE_TIMEOUT);
    let inspection = crate::inspect::Inspection::start(
        browser.state.store(),
        None,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    browser
        .state
        .firewall
        .inspection
        .set(Arc::new(inspection))
        .unwrap();
    browser
}

fn inspection(browser: &Browser) -> &crate::inspect::Inspection {
    browser.state.firewall.inspection.get().unwrap()
}

/// A self-signed CA (or, with `is_ca` false, a self-signed leaf) as PEM.
fn self_signed_pem(name: &str, is_ca: bool) -> String {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn admin_rekey_needs_a_session_the_token_and_the_pin_and_shows_the_new_fingerprint() {
    let mut browser = inspecting_browser();
    let old = inspection(&browser).ca().fingerprint();
    // No session: the page sends to the login, a post is refused.
    let page = browser.get("/inspection").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = browser.post("/inspection/rekey", &[("pin", PIN)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let csrf = browser.logged_in(PIN).await;
    let page = browser.get("/inspection").await;
    assert!(page.body.contains(&old), "{}", page.body);
    let page = browser.post("/inspection/rekey", &[("pin", PIN)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser
        .post("/inspection/rekey", &[("csrf", &csrf), ("pin", "0000")])
        .await;
    assert!(
        page.body.contains("wrong PIN, 2 tries left"),
        "{}",
        page.body
    );
    assert_eq!(inspection(&browser).ca().fingerprint(), old);

    let page = browser
        .post("/inspection/rekey", &[("csrf", &csrf), ("pin", PIN)])
        .await;
    assert!(page.body.contains("re-keyed"), "{}", page.body);
    let new = inspection(&browser).ca().fingerprint();
    assert_ne!(new, old);
    assert!(page.body.contains(&new), "{}", page.body);
    assert!(!page.body.contains(&old), "{}", page.body);
    let download = browser.get("/inspection-ca.pem").await;
    assert_eq!(download.body, inspection(&browser).ca().cert_pem());
    let text = browser.get("/inspection-ca").await;
    assert!(text.body.contains(&new), "{}", text.body);
    // Kept: a restart finds the new CA.
    let reopened = crate::inspect::Inspection::start(
        browser.state.store(),
        None,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    assert_eq!(reopened.ca().fingerprint(), new);
}

#[tokio::test]
async fn admin_owner_cas_are_checked_listed_removed_and_kept() {
    let mut browser = inspecting_browser();
    let csrf = browser.logged_in(PIN).await;
    let leaf = self_signed_pem("leaf.example", false);
    let oversize = "x".repeat(crate::inspect::owner_cas::MAX_UPLOAD_BYTES + 1);
    for (upload, message) in [
        ("not a certificate", "the upload has no CERTIFICATE block"),
        (leaf.as_str(), "is not a CA certificate"),
        (oversize.as_str(), "the upload is larger than 64 KiB"),
    ] {
        let page = browser
            .post(
                "/inspection/cas",
                &[("csrf", &csrf), ("pem", upload), ("pin", PIN)],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("Nothing was changed"), "{}", page.body);
        assert!(page.body.contains(message), "{message}: {}", page.body);
        assert!(inspection(&browser).owner_cas().is_empty());
        assert!(browser.state.store().owner_cas_record().unwrap().is_none());
    }
    // The token guards the upload like every change.
    let ca = self_signed_pem("Home Lab CA", true);
    let page = browser
        .post("/inspection/cas", &[("pem", &ca), ("pin", PIN)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let page = browser
        .post(
            "/inspection/cas",
            &[("csrf", &csrf), ("pem", &ca), ("pin", PIN)],
        )
        .await;
    assert!(page.body.contains("Trusted from now on"), "{}", page.body);
    assert!(page.body.contains("CN=Home Lab CA"), "{}", page.body);
    let held = inspection(&browser).owner_cas();
    let fingerprint = held.iter().next().unwrap().fingerprint.clone();
    assert!(page.body.contains(&fingerprint), "{}", page.body);
    let reopened = crate::inspect::Inspection::start(
        browser.state.store(),
        None,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    assert_eq!(reopened.owner_cas(), held);

    let page = browser
        .post(
            "/inspection/cas/remove",
            &[("csrf", &csrf), ("fingerprint", &fingerprint), ("pin", PIN)],
        )
        .await;
    assert!(page.body.contains("No longer trusted"), "{}", page.body);
    assert!(!page.body.contains("CN=Home Lab CA"), "{}", page.body);
    assert!(inspection(&browser).owner_cas().is_empty());
    let reopened = crate::inspect::Inspection::start(
        browser.state.store(),
        None,
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    assert!(reopened.owner_cas().is_empty());
}

/// The CAs the installed policy bundle carries are counted on `/inspection`, read-only: no
/// form removes them, and the owner's list stays empty.
#[tokio::test]
async fn admin_inspection_page_counts_the_policy_servers_cas() {
    use rules::bundle::{self, Bundle, SigningKey, Trust};

    let mut browser = inspecting_browser();
    browser.logged_in(PIN).await;
    let page = browser.get("/inspection").await;
    assert!(
        !page.body.contains("The policy server adds"),
        "{}",
        page.body
    );

    let key = SigningKey::from_bytes(&[3; 32]);
    let now = chrono::Utc::now();
    let cas = format!(
        "{}{}",
        self_signed_pem("Company CA", true),
        self_signed_pem("Company Proxy CA", true)
    );
    let signed = Bundle {
        version: 1,
        group: "laptops".into(),
        issued_at: now,
        expires_at: now + chrono::Duration::days(1),
        rules: ("rules.txt".into(), "default deny\n".into()),
        list_files: Vec::new(),
        trusted_cas: Some(cas),
        vpns: None,
    }
    .sign(&key);
    let verified = bundle::verify(
        &signed,
        &Trust {
            key: &key.verifying_key(),
            installed_version: 0,
            group: "laptops",
            now,
        },
    )
    .unwrap();
    let store = browser.state.store();
    store
        .install_bundle(&verified, b"enrolment record")
        .unwrap();
    assert_eq!(inspection(&browser).reload_managed_cas(store).unwrap(), 2);

    let page = browser.get("/inspection").await;
    assert!(
        page.body
            .contains("The policy server adds 2 CAs for inspected sites. They are read-only here"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("CN=Company CA"), "{}", page.body);
    assert!(page.body.contains("No CA added."), "{}", page.body);
}

/// The VPN page with a configured `corp` VPN that has no interface (no root in unit tests):
/// it shows the state and the card's public key, refuses an unknown name and a wrong PIN,
/// and says why an unlock with the right PIN did not bring a tunnel up.
#[tokio::test]
async fn admin_vpn_page_shows_the_public_key_and_refuses_what_it_must() {
    let mut browser = browser(true, IDLE_TIMEOUT);
    let config =
        <Config as crate::config::ConfigFile>::parse("c.toml", crate::vpn::tests::CORP).unwrap();
    browser
        .state
        .firewall
        .vpns
        .store(Arc::new(crate::vpn::Vpns::unrouted_for_tests(&config, &[])));
    assert_eq!(
        browser.get("/vpn").await.status,
        StatusCode::SEE_OTHER,
        "login first"
    );
    browser.logged_in(PIN).await;
    let page = browser.get("/vpn").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"vpn-corp-state\">Locked"),
        "{}",
        page.body
    );
    assert!(page.body.contains("198.51.100.7:51820"), "{}", page.body);
    assert!(page.body.contains("10.20.0.0/16"), "{}", page.body);
    let csrf = csrf_of(&page.body);
    let unknown = browser
        .post(
            "/vpn/unlock",
            &[("csrf", &csrf), ("name", "<b>x"), ("pin", PIN)],
        )
        .await;
    assert!(unknown.body.contains("no VPN called"), "{}", unknown.body);
    assert!(!unknown.body.contains("<b>x"), "escaped: {}", unknown.body);
    let wrong = browser
        .post(
            "/vpn/unlock",
            &[("csrf", &csrf), ("name", "corp"), ("pin", "1111")],
        )
        .await;
    assert!(wrong.body.contains("stays locked"), "{}", wrong.body);
    // The test VPN's key was never made in the store: a clear refusal, not a fake success.
    let right = browser
        .post(
            "/vpn/unlock",
            &[("csrf", &csrf), ("name", "corp"), ("pin", PIN)],
        )
        .await;
    assert!(
        right.body.contains("no key for the VPN corp"),
        "{}",
        right.body
    );
    let lock = browser
        .post("/vpn/lock", &[("csrf", &csrf), ("name", "corp")])
        .await;
    assert!(lock.body.contains("was already locked"), "{}", lock.body);
    let forged = browser
        .post("/vpn/lock", &[("csrf", "forged"), ("name", "corp")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

/// A card managed by a policy server (a fake record: nothing here talks to it).
fn make_managed(browser: &Browser) {
    let enrolment = crate::store::Enrolment {
        server: "https://policy.example:8443".into(),
        card_id: "c0ffee".into(),
        group: "laptops".into(),
        ca_pem: String::new(),
        policy_key_pem: String::new(),
        certificate_pem: String::new(),
        key_pem: String::new(),
        installed_version: 4,
    };
    browser
        .state
        .store()
        .login(PIN)
        .unwrap()
        .set_managed(Some(&enrolment.emit()))
        .unwrap();
}

/// Issue 16: the block page's form (made by the core, as the proxy makes it) is taken without
/// a login, queued once however often it is posted, and shown with its state; a form the card
/// did not make, a changed one or an unmanaged card's is refused and counted.
#[tokio::test]
async fn admin_access_requests_take_only_what_the_card_blocked() {
    use proto::policy::{AccessProtocol, AccessState, Blocked};
    let mut browser = browser(true, IDLE_TIMEOUT);
    let blocked = Blocked {
        protocol: AccessProtocol::Http,
        host: "blocked.test".into(),
        port: 80,
        path: Some("/x".into()),
        rule: "rules:1".into(),
        at: serve::unix_now() as i64,
    };
    let firewall = browser.state.firewall.clone();
    let refused = || {
        firewall
            .events
            .counters
            .access_requests_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        firewall.ask_form(blocked.clone()).is_none(),
        "an unmanaged card offers no form"
    );
    make_managed(&browser);
    let form = firewall.ask_form(blocked.clone()).unwrap();
    assert_eq!(form.action, "https://172.31.77.2/access-requests");
    let mut fields: Vec<(&str, &str)> = form.fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    fields.push(("reason", "the supplier's price list"));

    let page = browser.post("/access-requests", &fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("on its way"), "{}", page.body);
    assert!(
        page.body.contains("http blocked.test:80/x"),
        "{}",
        page.body
    );
    assert!(page.body.contains("waiting to be sent"), "{}", page.body);
    let page = browser.post("/access-requests", &fields).await;
    assert!(
        page.body.contains("You asked for this already"),
        "{}",
        page.body
    );
    let queued = browser.state.store().access_requests().unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].request.blocked, blocked);
    assert_eq!(
        queued[0].request.reason.as_deref(),
        Some("the supplier's price list")
    );
    assert_eq!(queued[0].state, AccessState::Open);
    assert_eq!(refused(), 0);

    // Another host under the same MAC, a missing field, a reason too long: refused, counted.
    let forged: Vec<(&str, &str)> = fields
        .iter()
        .map(|&(n, v)| {
            if n == "host" {
                (n, "allowed.test")
            } else {
                (n, v)
            }
        })
        .collect();
    let page = browser.post("/access-requests", &forged).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("not made by the card"), "{}", page.body);
    let page = browser.post("/access-requests", &fields[1..]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let long = "x".repeat(501);
    let mut too_long = fields.clone();
    too_long.pop();
    too_long.push(("reason", &long));
    let page = browser.post("/access-requests", &too_long).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused(), 3);
    assert_eq!(browser.state.store().access_requests().unwrap().len(), 1);

    let page = browser.get("/access-requests").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("the supplier&#39;s price list"),
        "{}",
        page.body
    );

    // A blocked HTTPS connection has no block page: the card page offers the form for it,
    // to the computer it was denied (only).
    let rules = firewall.rules();
    let ask = crate::firewall::Ask {
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        target: "secure.test:443",
        request: rules::Request::new(rules::Protocol::Https, rules::LocalTime::now())
            .host("secure.test")
            .port(443),
        hello: None,
    };
    assert!(!firewall.check(&rules, &ask).allows());
    let other = crate::firewall::Ask {
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::new(172, 31, 77, 9)),
        target: "other.test:443",
        request: rules::Request::new(rules::Protocol::Https, rules::LocalTime::now())
            .host("other.test")
            .port(443),
        hello: None,
    };
    assert!(!firewall.check(&rules, &other).allows());
    let page = browser.get("/access-requests").await;
    assert!(page.body.contains("https secure.test:443"), "{}", page.body);
    assert!(!page.body.contains("other.test"), "{}", page.body);
    assert!(page.body.contains(r#"name="mac""#), "{}", page.body);

    // The owner's dashboard links the requests and shows the overlay apart from the rules.
    browser
        .state
        .store()
        .install_overlay(&crate::store::overlay::Overlay {
            version: 3,
            text: "overlay-0123abcd: allow http host blocked.test path /x\n".into(),
            vpns: Vec::new(),
        })
        .unwrap();
    browser.logged_in(PIN).await;
    let page = browser.get("/").await;
    assert!(
        page.body.contains(r#"href="/access-requests""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("overlay version 3"), "{}", page.body);
    assert!(
        page.body
            .contains("overlay-0123abcd: allow http host blocked.test path /x"),
        "{}",
        page.body
    );
}
