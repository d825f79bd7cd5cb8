//! The appliance's status page in a real browser (Debian's headless chromium): the card state
//! reads right, the graphs and the blocked table are there, nothing scrolls sideways on a
//! 360 px phone, the page follows the state without a reload, and card-reported names stay
//! text. Screenshots land in `target/screenshots/` for a person to look at.
//!
//! Needs `chromium` and `chromium-driver` (apt); not root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use appliance::state::{
    ApplianceState, Block, CardState, LinkSample, LinkState, Role, Snapshot, TrafficSample,
};
use e2e::browser::{Browser, require_browser};
use tokio::net::TcpListener;

const START: u64 = 1_764_079_200;
const HOSTILE_TARGET: &str = "<img src=x onerror=\"document.title='owned'\">.example";

/// A busy appliance: three links up, the card present for an hour, ten samples of traffic
/// 5 s apart, three recent blocks (one with a very long name, one hostile).
fn snapshot() -> Snapshot {
    let link = |role, name: &str, addresses: &[&str]| LinkState {
        role,
        name: name.into(),
        up: true,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        rx_bytes: 0,
        tx_bytes: 0,
    };
    let mut links = vec![
        link(Role::Inside, "lan0", &["192.168.77.1/24", "fd77::1/64"]),
        link(
            Role::Outside,
            "wan0",
            &["203.0.113.7/24", "2001:db8:77::7/64"],
        ),
        link(Role::Card, "usb0", &["10.77.0.1/30"]),
    ];
    // Counters that grow unevenly: downloads on the inside, mirrored through card and outside.
    let mut totals = [(4_812_000_000u64, 512_000_000u64); 3];
    let history = (0..10u64)
        .map(|i| {
            let burst = [120_000, 900_000, 2_400_000, 1_800_000, 300_000][i as usize % 5];
            for (l, (rx, tx)) in totals.iter_mut().enumerate() {
                let scale = [1, 1, 2][l];
                *rx += burst * 5 * scale / 2 + 40_000 * i;
                *tx += burst / 8 * 5 + 15_000 * i;
            }
            TrafficSample {
                at: START + 5 * i,
                links: totals
                    .iter()
                    .map(|&(rx_bytes, tx_bytes)| LinkSample { rx_bytes, tx_bytes })
                    .collect(),
            }
        })
        .collect();
    for (link, (rx, tx)) in links.iter_mut().zip(totals) {
        link.rx_bytes = rx;
        link.tx_bytes = tx;
    }
    let block = |at, client: &str, protocol: &str, target: &str, rule: &str| Block {
        at,
        client: client.into(),
        protocol: protocol.into(),
        target: target.into(),
        rule: rule.into(),
    };
    Snapshot {
        hostname: "cardwall-office".into(),
        uptime_secs: 3 * 86_400 + 4 * 3600 + 17 * 60,
        links,
        card: CardState {
            present: true,
            since: START - 3600,
            absent_reason: None,
            rules_version: Some("2026-11-25.3".into()),
            firmware: Some("cardfw 0.1.0".into()),
            tls_fingerprint: Some("AB:CD:EF".into()),
            allowed: 18_234,
            denied: 412,
            recent_blocks: vec![
                block(
                    START + 44,
                    "192.168.77.20",
                    "https",
                    "telemetry.very-long-subdomain-name-for-tracking.ads.example.com",
                    "deny *.ads.example.com",
                ),
                block(
                    START + 31,
                    "192.168.77.20",
                    "dns",
                    "doh.example.net",
                    "deny doh",
                ),
                block(
                    START + 12,
                    "fd77::20",
                    "http",
                    HOSTILE_TARGET,
                    "default deny",
                ),
            ],
            vpns: Vec::new(),
        },
        history,
    }
}

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium() -> Result<()> {
    if !require_browser() {
        return Ok(());
    }
    let state = Arc::new(ApplianceState::new(snapshot()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let server = tokio::spawn(appliance::status::serve(listener, state.clone()));
    let browser = Browser::open(&url).await?;

    // Desktop.
    browser.set_viewport(1280, 900).await?;
    let status = browser.text("#card-status").await?;
    ensure!(
        status.contains("CARD PRESENT"),
        "status box says {status:?}"
    );
    ensure!(browser.is_displayed(".status.present").await?);
    ensure!(browser.client().title().await?.starts_with("Card present"));
    ensure!(browser.count("svg.graph").await? == 3, "one graph per link");
    let lines = browser.count("svg.graph polyline").await?;
    ensure!(
        lines == 6,
        "3 links × received and sent, found {lines} polylines"
    );
    let rows = browser.texts("#blocks tbody tr").await?;
    ensure!(rows.len() == 3, "blocked table rows: {rows:?}");
    // Escaped: the hostile name is shown as text and did nothing.
    ensure!(rows[2].contains(HOSTILE_TARGET), "{rows:?}");
    ensure!(browser.count("#blocks img").await? == 0);
    ensure!(browser.count("th[scope=col]").await? == 4);
    browser
        .screenshot(&screenshot("status-desktop.png"))
        .await?;

    // Phone: 360 × 740, nothing wider than the screen.
    browser.set_viewport(360, 740).await?;
    let scroll_width = browser
        .eval("return document.documentElement.scrollWidth;")
        .await?;
    ensure!(
        scroll_width.as_u64().is_some_and(|w| w <= 360),
        "the page scrolls sideways at 360 px: scrollWidth {scroll_width}"
    );
    ensure!(browser.is_displayed(".status.present").await?);
    browser.screenshot(&screenshot("status-phone.png")).await?;
    browser
        .eval("document.getElementById('blocks-heading').scrollIntoView(); return null;")
        .await?;
    browser
        .screenshot(&screenshot("status-phone-blocked.png"))
        .await?;
    // The whole page, for a person to look at.
    let height = browser
        .eval("return document.documentElement.scrollHeight;")
        .await?
        .as_u64()
        .unwrap_or(740);
    browser.set_viewport(360, height.min(4000) as u32).await?;
    browser
        .screenshot(&screenshot("status-phone-full.png"))
        .await?;
    browser.set_viewport(360, 740).await?;

    // The card is pulled: the page follows within a refresh period, without a reload…
    state.update(|s| {
        s.card.present = false;
        s.card.since = START + 60;
        s.card.absent_reason = Some("card link usb0 went down".into());
        s.links[2].up = false;
    });
    let followed = browser
        .wait_until(Duration::from_secs(12), async |b| {
            Ok(b.text("#card-status").await?.contains("CARD ABSENT"))
        })
        .await?;
    ensure!(followed, "the page did not update itself within 12 s");
    ensure!(browser.client().title().await?.starts_with("CARD ABSENT"));
    // …and after one.
    browser.reload().await?;
    let status = browser.text("#card-status").await?;
    ensure!(
        status.contains("CARD ABSENT") && status.contains("card link usb0 went down"),
        "{status:?}"
    );
    ensure!(browser.is_displayed(".status.absent").await?);
    ensure!(!browser.is_displayed(".status.present").await?);
    ensure!(browser.text("#links").await?.contains("DOWN"));
    let scroll_width = browser
        .eval("return document.documentElement.scrollWidth;")
        .await?;
    ensure!(scroll_width.as_u64().is_some_and(|w| w <= 360));
    browser
        .screenshot(&screenshot("status-phone-absent.png"))
        .await?;

    // The graph alone, as a standalone SVG document.
    browser.goto(&format!("{url}graph.svg")).await?;
    ensure!(browser.count("polyline").await? == 6);
    let title = browser.client().title().await?;
    ensure!(
        title.starts_with("Traffic per link"),
        "graph title {title:?}"
    );
    browser.screenshot(&screenshot("graph.png")).await?;

    browser.close().await?;
    server.abort();
    Ok(())
}
