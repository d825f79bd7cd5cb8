//! Real browsers for tests: Debian's headless `chromium` driven over WebDriver by
//! `chromedriver`, and Debian's `firefox-esr` driven by `geckodriver` (fantoccini as the
//! client).
//!
//! Nothing is downloaded at test time: chromium, its driver and firefox-esr come from apt;
//! geckodriver is built from crates.io by `./x test` (`cargo install geckodriver`, kept in
//! `~/.cargo/bin` so a second run does not build it again). A test starts with
//! [`require_browser`] or [`require_firefox`], the same policy as [`crate::require_program`]:
//! under `CI=true` a missing browser fails the test, elsewhere the test prints `skipping: …`
//! and passes.
//!
//! Each [`Browser`] runs its own driver on a free loopback port with a fresh profile (and a
//! fresh `HOME`, where chromium keeps its NSS certificate database); dropping it kills the
//! driver and the browser it started (their own process group), even when the test panics.
//! A CA is trusted the way a user would trust it ([`Launch::trust_ca`]): `certutil` into the
//! NSS database each browser reads (`$HOME/.pki/nssdb` for chromium, the profile's own for
//! firefox), never by turning certificate checks off.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The browser (Debian package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its WebDriver server (Debian package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Firefox ESR (Debian package `firefox-esr`).
pub const FIREFOX: &str = "/usr/bin/firefox-esr";

/// Which browser a [`Browser`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }
}

/// How to start a browser.
#[derive(Debug, Clone)]
pub struct Launch {
    pub engine: Engine,
    /// Accept any certificate (the card's own self-signed page, checked by fingerprint
    /// elsewhere). Off for everything that stands for a user browsing.
    pub accept_self_signed: bool,
    /// A CA certificate (PEM) to trust as a user would, in the browser's NSS database.
    pub trust_ca: Option<PathBuf>,
    /// Let chromium use QUIC (HTTP/3) as it does by default; off keeps test runs quiet.
    pub quic: bool,
    /// Run the browser in this network namespace, with its resolv.conf (`ip netns exec`).
    pub netns: Option<String>,
}

impl Launch {
    pub fn new(engine: Engine) -> Launch {
        Launch {
            engine,
            accept_self_signed: false,
            trust_ca: None,
            quic: false,
            netns: None,
        }
    }

    pub fn trusting(mut self, ca: &Path) -> Launch {
        self.trust_ca = Some(ca.to_path_buf());
        self
    }

    pub fn in_netns(mut self, netns: &str) -> Launch {
        self.netns = Some(netns.to_string());
        self
    }
}

/// A script for [`Browser::eval_async`]: opens a WebSocket to the page's own origin at
/// `/websocket` (the lab origin's echo), sends a line and answers `echo: <what came back>`,
/// `error` or `timeout`.
pub const WEBSOCKET_ECHO: &str = "
    const done = arguments[arguments.length - 1];
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/websocket');
    ws.onopen = () => ws.send('through the card');
    ws.onmessage = (e) => { done('echo: ' + e.data); ws.close(); };
    ws.onerror = () => done('error');
    setTimeout(() => done('timeout'), 5000);
";

/// geckodriver: on `PATH`, or where `cargo install` puts it.
pub fn geckodriver() -> PathBuf {
    let installed = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/geckodriver"))
        .filter(|path| path.exists());
    installed.unwrap_or_else(|| PathBuf::from("geckodriver"))
}

/// Flags for a quiet, reproducible headless chromium that may run as root: no sandbox (root
/// cannot use it), no GPU, and nothing that talks to the network on its own. Its TLS is left
/// as shipped: GREASE ECH, post-quantum key shares, HTTP/2 by ALPN.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
];

/// Firefox preferences that keep it from talking to the network on its own (updates,
/// telemetry, captive-portal probes, prefetching) without touching how it browses: its TLS,
/// its GREASE ECH and its HTTP/2 stay as shipped.
const FIREFOX_PREFS: &[(&str, bool)] = &[
    ("app.update.auto", false),
    ("browser.shell.checkDefaultBrowser", false),
    ("browser.safebrowsing.malware.enabled", false),
    ("browser.safebrowsing.phishing.enabled", false),
    ("browser.safebrowsing.downloads.enabled", false),
    ("datareporting.policy.dataSubmissionEnabled", false),
    ("extensions.update.enabled", false),
    ("network.captive-portal-service.enabled", false),
    ("network.connectivity-service.enabled", false),
    ("network.prefetch-next", false),
    ("network.dns.disablePrefetch", true),
    ("toolkit.telemetry.reportingpolicy.firstRun", false),
];

/// Puts `ca` into the NSS database in `dir` as a trusted issuer of server certificates.
fn trust_ca(dir: &Path, ca: &Path) -> Result<()> {
    let db = format!("sql:{}", dir.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-n",
            "cardwall test CA",
            "-t",
            "C,,",
            "-i",
            ca.to_str().context("CA path")?,
        ],
    ] {
        let output = Command::new("certutil").args(&args).output()?;
        if !output.status.success() {
            bail!(
                "certutil {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// How long a driver may take to listen, and its browser to start.
const STARTUP: Duration = Duration::from_secs(30);

/// Runs `session` with a browser started as `launch` says, on a thread inside `netns` (the
/// driver listens on that namespace's loopback), and closes the browser afterwards, whatever
/// `session` returned.
pub fn session_in<T: Send + 'static>(
    netns: &lab::topology::Netns,
    launch: Launch,
    session: impl AsyncFnOnce(&Browser) -> Result<T> + Send + 'static,
) -> Result<T> {
    netns
        .enter(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let browser = Browser::launch("about:blank", &launch).await?;
                let result = session(&browser).await;
                let _ = browser.close().await;
                result
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the browser's thread panicked"))?
}

/// Checks that [`FIREFOX`], geckodriver and `certutil` run; like [`require_browser`].
pub fn require_firefox() -> bool {
    crate::require_program(FIREFOX, "firefox-esr")
        && crate::require_program(
            geckodriver().to_str().unwrap_or("geckodriver"),
            "geckodriver (cargo install geckodriver)",
        )
        && require_certutil()
}

/// `certutil`, which puts a CA into a browser's NSS database.
pub fn require_certutil() -> bool {
    // certutil has no --version; `-H` prints its help and exits 1, which is enough to know it runs.
    let found = Command::new("certutil")
        .arg("-H")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    found || crate::require_program("certutil", "libnss3-tools")
}

/// Checks that [`CHROMIUM`] and [`CHROMEDRIVER`] run. Returns true if so; otherwise panics under
/// CI and prints `skipping: <reason>` elsewhere (see [`crate::require_program`]).
pub fn require_browser() -> bool {
    crate::require_program(CHROMIUM, "chromium")
        && crate::require_program(CHROMEDRIVER, "chromium-driver")
}

/// How a navigation ended: the page loaded, or the browser showed its error page (with what
/// the browser says went wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Page,
    Failed(String),
}

/// Reads what a page's origin and the browser agreed on: the TLS version the origin saw (its
/// `tls-version` header, see `lab::origin`) and the navigation's `nextHopProtocol`, e.g.
/// `TLSv1.3 h2`.
const TLS_AND_PROTOCOL: &str = "
    const done = arguments[arguments.length - 1];
    const nav = performance.getEntriesByType('navigation')[0];
    fetch('/', { cache: 'no-store' })
        .then((r) => done(r.headers.get('tls-version') + ' ' + nav.nextHopProtocol))
        .catch((e) => done('error ' + e));
";

/// A headless chromium showing one page.
pub struct Browser {
    client: Client,
    driver: Child,
    /// The browser's profile, its HOME and the driver's log; removed after both are gone.
    profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver.id())
            .field("profile", &self.profile.path())
            .finish()
    }
}

impl Browser {
    /// Starts chromedriver and chromium, and opens `url`.
    pub async fn open(url: &str) -> Result<Browser> {
        Browser::launch(url, &Launch::new(Engine::Chromium)).await
    }

    /// Like [`Browser::open`], accepting a self-signed certificate (the card's own page). The
    /// tests that use it check the certificate's fingerprint with their own TLS client.
    pub async fn open_self_signed(url: &str) -> Result<Browser> {
        let launch = Launch {
            accept_self_signed: true,
            ..Launch::new(Engine::Chromium)
        };
        Browser::launch(url, &launch).await
    }

    /// Starts the driver and the browser `launch` describes, and opens `url`.
    pub async fn launch(url: &str, launch: &Launch) -> Result<Browser> {
        let profile = tempfile::Builder::new()
            .prefix(&format!("cardwall-{}-", launch.engine.name()))
            .tempdir()?;
        let home = profile.path().join("home");
        let user_data_dir = profile.path().join("profile");
        std::fs::create_dir_all(&user_data_dir)?;
        let nss_db = match launch.engine {
            Engine::Chromium => home.join(".pki/nssdb"),
            Engine::Firefox => user_data_dir.clone(),
        };
        std::fs::create_dir_all(&nss_db)?;
        if let Some(ca) = &launch.trust_ca {
            trust_ca(&nss_db, ca)?;
        }
        let log = profile.path().join("driver.log");
        let port = free_port()?;
        let (program, args, stdout) = match launch.engine {
            Engine::Chromium => (
                PathBuf::from(CHROMEDRIVER),
                vec![
                    format!("--port={port}"),
                    format!("--log-path={}", log.display()),
                ],
                Stdio::null(),
            ),
            Engine::Firefox => (
                geckodriver(),
                vec![
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                    "--log".into(),
                    "info".into(),
                ],
                Stdio::from(std::fs::File::create(&log)?),
            ),
        };
        // `ip netns exec` also shows the namespace its own /etc/netns/<name>/resolv.conf, so
        // the browser asks the DNS server that namespace's computer uses. The caller's thread
        // must be in that namespace too (Netns::enter), to reach the driver on its loopback.
        let mut driver = match &launch.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let driver = driver
            .args(&args)
            .stdout(stdout)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Drop can end the browser with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the {} driver", launch.engine.name()))?;
        // From here on, Drop cleans up whatever happens.
        let mut starting = Starting {
            driver: Some(driver),
        };
        wait_for_port(port, starting.driver.as_mut().expect("just set"), &log).await?;

        let capabilities = match launch.engine {
            Engine::Chromium => {
                let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
                if !launch.quic {
                    args.push("--disable-quic".into());
                }
                args.push(format!("--user-data-dir={}", user_data_dir.display()));
                json!({
                    "browserName": "chrome",
                    "acceptInsecureCerts": launch.accept_self_signed,
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                })
            }
            Engine::Firefox => json!({
                "browserName": "firefox",
                "acceptInsecureCerts": launch.accept_self_signed,
                "moz:firefoxOptions": {
                    "binary": FIREFOX,
                    "args": ["-headless", "-profile", user_data_dir],
                    "prefs": FIREFOX_PREFS
                        .iter()
                        .map(|(name, value)| (name.to_string(), Value::Bool(*value)))
                        .collect::<serde_json::Map<_, _>>(),
                },
            }),
        };
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        // Plain HTTP: the driver listens on loopback only.
        let client = tokio::time::timeout(
            STARTUP,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .with_context(|| format!("{} did not start in time", launch.engine.name()))?
        .with_context(|| {
            format!(
                "starting {} through its driver; its log:\n{}",
                launch.engine.name(),
                log_tail(&log)
            )
        })?;
        let browser = Browser {
            client,
            driver: starting.driver.take().expect("still set"),
            profile,
        };
        browser.goto(url).await?;
        Ok(browser)
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits for it (the `load` event).
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// Loads `url` like [`Browser::goto`], but a browser error page (Chromium's `net::ERR_…` or
    /// `chrome-error://`, Firefox's `about:neterror`, which the drivers may report as errors) is
    /// [`Loaded::Failed`], not an `Err`.
    pub async fn load(&self, url: &str) -> Result<Loaded> {
        if let Err(e) = self.goto(url).await {
            let text = format!("{e:#}");
            if text.contains("about:neterror")
                || text.contains("Reached error page")
                || text.contains("net::ERR_")
            {
                return Ok(Loaded::Failed(text));
            }
            return Err(e);
        }
        let uri = self.eval("return document.documentURI;").await?;
        let uri = uri.as_str().unwrap_or_default();
        if uri.starts_with("chrome-error:") || uri.starts_with("about:neterror") {
            let text = self.text("body").await.unwrap_or_default();
            return Ok(Loaded::Failed(format!("{uri}: {text}")));
        }
        Ok(Loaded::Page)
    }

    /// Reloads the page.
    pub async fn reload(&self) -> Result<()> {
        Ok(self.client.refresh().await?)
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element matches `{css}`"))?;
        Ok(element.text().await?)
    }

    /// The visible texts of all elements matching `css`.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await? {
            texts.push(element.text().await?);
        }
        Ok(texts)
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> Result<usize> {
        Ok(self.client.find_all(Locator::Css(css)).await?.len())
    }

    /// Whether the first element matching `css` is displayed (false if none matches).
    pub async fn is_displayed(&self, css: &str) -> Result<bool> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element.is_displayed().await?),
            Err(error) if error.is_no_such_element() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Runs `script` (a function body: `return …` gives the result) in the page.
    /// Types `text` into the field with id `id`, once it is there (a click returns before the
    /// next page has loaded), replacing what it held; for a file input, `text` is the path.
    pub async fn type_into(&self, id: &str, text: &str) -> Result<()> {
        let field = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await?;
        if field.prop("type").await?.as_deref() != Some("file") {
            field.clear().await?;
        }
        field.send_keys(text).await?;
        Ok(())
    }

    /// Clicks the submit button of the form posting to `form_action`.
    pub async fn submit(&self, form_action: &str) -> Result<()> {
        let css = format!("form[action='{form_action}'] button:not([formaction])");
        self.client.find(Locator::Css(&css)).await?.click().await?;
        Ok(())
    }

    pub async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
    }

    /// Runs `script` as an async WebDriver script (its last argument is the callback) and
    /// returns the value it passes back, as text (a string as is, anything else as JSON).
    pub async fn eval_async(&self, script: &str) -> Result<String> {
        let value = self.client.execute_async(script, Vec::new()).await?;
        Ok(value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string))
    }

    /// The TLS version and HTTP protocol the current page was loaded with, as `TLSv1.3 h2`:
    /// fetches the page again and reads the `tls-version` header `lab::origin` adds over
    /// TLS, and the navigation's `nextHopProtocol`.
    pub async fn negotiated(&self) -> Result<String> {
        self.eval_async(TLS_AND_PROTOCOL).await
    }

    /// Polls `check` every 200 ms until it returns true or `timeout` passes. A check that
    /// fails counts as "not yet": while a page loads or updates itself, the element it just
    /// found can be replaced under it (a stale element). At the deadline the last failure, if
    /// the last try failed, is returned.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl AsyncFnMut(&Browser) -> Result<bool>,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let outcome = check(self).await;
            if matches!(outcome, Ok(true)) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `timeout` for the text of the first element matching `css` to contain
    /// `text`; an error that quotes what it says instead when it never does.
    pub async fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> Result<()> {
        let said = self
            .wait_until(timeout, async |b: &Browser| {
                Ok(b.text(css).await?.contains(text))
            })
            .await?;
        anyhow::ensure!(
            said,
            "{css} never said {text:?} within {timeout:?}; it says: {}",
            self.text(css).await?
        );
        Ok(())
    }

    /// Resizes the window so that the page's viewport is `width` × `height` CSS pixels (as on a
    /// phone of that size), and checks that it is.
    pub async fn set_viewport(&self, width: u32, height: u32) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        // A window may have chrome around the viewport: grow it by the difference.
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight];")
            .await?;
        let (inner_width, inner_height) = (
            inner[0].as_u64().unwrap_or(0) as u32,
            inner[1].as_u64().unwrap_or(0) as u32,
        );
        if (inner_width, inner_height) != (width, height) {
            self.client
                .set_window_size(
                    width + width.saturating_sub(inner_width),
                    height + height.saturating_sub(inner_height),
                )
                .await?;
        }
        let inner = self.eval("return window.innerWidth;").await?;
        if inner.as_u64() != Some(u64::from(width)) {
            bail!("asked for a {width} px wide viewport, got {inner}");
        }
        Ok(())
    }

    /// Saves a PNG of the viewport at `path`, creating its directory.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the session (the browser quits) and stops its driver.
    pub async fn close(self) -> Result<()> {
        // `Client` is shared inside; closing the session does not need ownership of self.
        self.client.clone().close().await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// The driver until the browser is up: killed if starting fails half-way.
struct Starting {
    driver: Option<Child>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(driver) = &mut self.driver {
            kill_group(driver);
        }
    }
}

/// Ends chromedriver and what it started (chromium, its helpers): the process group we made for
/// it, by its id.
fn kill_group(driver: &mut Child) {
    if let Ok(id) = i32::try_from(driver.id()) {
        let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
    }
    let _ = driver.wait();
}

fn free_port() -> Result<u16> {
    // Bound and released at once: chromedriver takes it a moment later. A race with another
    // process is possible but rare on a test machine; the startup error would say so.
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, driver: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Some(status) = driver.try_wait()? {
            bail!(
                "the WebDriver server exited ({status}) before listening; its log:\n{}",
                log_tail(log)
            );
        }
        if Instant::now() >= deadline {
            bail!("the WebDriver server did not listen on port {port} within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The end of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
