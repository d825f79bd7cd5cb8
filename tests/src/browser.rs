//! A real browser for tests: Debian's headless `chromium`, driven over WebDriver by
//! `chromedriver` (fantoccini as the client).
//!
//! Nothing is downloaded: both come from apt (`chromium`, `chromium-driver`). A test starts
//! with [`require_browser`], the same policy as [`crate::require_program`]: under `CI=true` a
//! missing browser fails the test, elsewhere the test prints `skipping: …` and passes.
//!
//! Each [`Browser`] runs its own chromedriver on a free loopback port with a fresh profile
//! directory; dropping it kills chromedriver and the chromium it started (their own process
//! group), even when the test panics.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
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

/// Flags for a quiet, reproducible headless chromium that may run as root: no sandbox (root
/// cannot use it), no GPU, and nothing that talks to the network on its own.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
];

/// How long chromedriver may take to listen, and chromium to start.
const STARTUP: Duration = Duration::from_secs(30);

/// Checks that [`CHROMIUM`] and [`CHROMEDRIVER`] run. Returns true if so; otherwise panics under
/// CI and prints `skipping: <reason>` elsewhere (see [`crate::require_program`]).
pub fn require_browser() -> bool {
    crate::require_program(CHROMIUM, "chromium")
        && crate::require_program(CHROMEDRIVER, "chromium-driver")
}

/// A headless chromium showing one page.
pub struct Browser {
    client: Client,
    driver: Child,
    /// The chromium profile and the chromedriver log; removed after both are gone.
    profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver", &self.driver.id())
            .field("profile", &self.profile.path())
            .finish()
    }
}

impl Browser {
    /// Starts chromedriver and chromium, and opens `url`.
    pub async fn open(url: &str) -> Result<Browser> {
        Browser::start(url, false).await
    }

    /// Like [`Browser::open`], accepting a self-signed certificate (the card's own page). The
    /// tests that use it check the certificate's fingerprint with their own TLS client.
    pub async fn open_self_signed(url: &str) -> Result<Browser> {
        Browser::start(url, true).await
    }

    async fn start(url: &str, accept_self_signed: bool) -> Result<Browser> {
        let profile = tempfile::Builder::new()
            .prefix("cardwall-chromium-")
            .tempdir()?;
        let log = profile.path().join("chromedriver.log");
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Drop can end chromium with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        // From here on, Drop cleans up whatever happens.
        let mut starting = Starting {
            driver: Some(driver),
        };
        wait_for_port(port, starting.driver.as_mut().expect("just set"), &log).await?;

        let user_data_dir = profile.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data_dir.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": accept_self_signed,
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        // Plain HTTP: chromedriver listens on loopback only.
        let client = tokio::time::timeout(
            STARTUP,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .context("chromium did not start in time")?
        .with_context(|| {
            format!(
                "starting chromium through chromedriver; its log:\n{}",
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
    pub async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
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

    /// Ends the session (chromium quits) and stops chromedriver.
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

/// chromedriver until the browser is up: killed if starting fails half-way.
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
                "{CHROMEDRIVER} exited ({status}) before listening; its log:\n{}",
                log_tail(log)
            );
        }
        if Instant::now() >= deadline {
            bail!("{CHROMEDRIVER} did not listen on port {port} within {STARTUP:?}");
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
