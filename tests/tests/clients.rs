//! Real clients through the card: the browsers people use (Chromium, Firefox ESR) and the
//! command-line clients and libraries a computer runs on its own (curl, wget, git, Python,
//! dig), from the protected computer of the whole lab (`SystemLab`, what `./x lab` runs).
//!
//! The browsers run as shipped: their GREASE ECH, post-quantum key shares and HTTP/2 by ALPN
//! are on, and the lab's CA is trusted the way a user would trust it (NSS database), with no
//! certificate check turned off. A curl-only suite once let every HTTPS site break in Chrome.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::browser::{
    Browser, Engine, Launch, Loaded, WEBSOCKET_ECHO, require_browser, require_firefox, session_in,
};
use e2e::pc_curl as curl;
use lab::{ECH_COVER_NAME, SystemLab};

fn start(tag: &str) -> Option<SystemLab> {
    e2e::start_system_lab(tag, lab::DEMO_RULES)
}

/// What every browser must do through the card.
///
/// Both browsers first try `https://` for a typed `http://` address (Chromium's HTTPS-Upgrades,
/// Firefox's HTTPS-First) and fall back to `http://` when that fails. `allowed.test` has an
/// allowed HTTPS site, so its plain HTTP is never seen; `other.test` is allowed in plain HTTP
/// only: its HTTPS is refused by the card, and the browser falls back, as it would for a
/// site without HTTPS.
async fn browse(b: &Browser) -> Result<()> {
    // An allowed plain HTTP page, after the browser's own HTTPS attempt was refused.
    ensure!(b.load("http://other.test/").await? == Loaded::Page);
    ensure!(b.text("body").await?.contains(lab::origin::HELLO.trim()));
    let scheme = b.eval("return location.protocol;").await?;
    ensure!(scheme == "http:", "other.test loaded over {scheme}");
    // WebSocket through the card's HTTP relay (ws://).
    let echo = b.eval_async(WEBSOCKET_ECHO).await?;
    ensure!(echo == "echo: through the card", "ws:// echo: {echo}");

    // An allowed HTTPS page: the card decides the browser's hello (with its GREASE ECH) on
    // its name, then splices; the browser and the origin agree TLS 1.3 and HTTP/2.
    let https = b.load("https://allowed.test/").await?;
    ensure!(https == Loaded::Page, "https://allowed.test/: {https:?}");
    ensure!(b.text("body").await?.contains(lab::origin::HELLO.trim()));
    let negotiated = b.negotiated().await?;
    ensure!(negotiated == "TLSv1.3 h2", "negotiated: {negotiated}");
    let echo = b.eval_async(WEBSOCKET_ECHO).await?;
    ensure!(echo == "echo: through the card", "wss:// echo: {echo}");

    // A plain HTTP page a rule denies: the card's block page, readable.
    ensure!(b.load("http://other.test/admin").await? == Loaded::Page);
    let page = b.text("body").await?;
    ensure!(
        page.contains("Blocked by the card's rules") && page.contains("no-admin"),
        "block page: {page}"
    );

    // HTTPS to a name the rules do not allow for https: the browser shows its error page.
    let denied = b.load("https://other.test/").await?;
    ensure!(
        matches!(denied, Loaded::Failed(_)),
        "https://other.test/ must fail: {denied:?}"
    );

    // A name the card's DNS refuses.
    let unresolved = b.load("http://blocked.test/").await?;
    ensure!(
        matches!(&unresolved, Loaded::Failed(why) if why.contains("NAME_NOT_RESOLVED") || why.contains("dnsNotFound")),
        "http://blocked.test/ must not resolve: {unresolved:?}"
    );
    Ok(())
}

fn browser_through_the_card(engine: Engine, tag: &str) {
    let available = match engine {
        Engine::Chromium => require_browser() && e2e::browser::require_certutil(),
        Engine::Firefox => require_firefox(),
    };
    if !available {
        return;
    }
    let Some(lab) = start(tag) else { return };
    let launch = Launch::new(engine)
        .trusting(&lab.ca_file)
        .in_netns(lab.pc.name());
    let outcome = session_in(&lab.pc, launch, browse);
    if let Err(e) = outcome {
        panic!(
            "{} through the card: {e:#}\ncard log (end):\n{}",
            engine.name(),
            tail(&lab.card_log(), 40)
        );
    }
    // The browser's hellos carried its (GREASE) ECH extension, and passed on their name.
    let status = lab.card_status().unwrap();
    let ech_hellos = status["counters"]["ech_hellos"].as_u64().unwrap_or(0);
    assert!(ech_hellos > 0, "no hello with ECH seen: {status}");
    // Every refusal the browser met is on the card's record, where the status page reads it.
    let recent = lab.card_recent().unwrap();
    for (target, rule) in [
        ("other.test:443", "default"),
        ("blocked.test", "no-blocked"),
    ] {
        assert!(
            recent.iter().any(|(t, r)| t.contains(target) && r == rule),
            "{target} denied by {rule} in {recent:?}"
        );
    }
}

#[test]
fn chromium_browses_through_the_card() {
    browser_through_the_card(Engine::Chromium, "chr");
}

#[test]
fn firefox_browses_through_the_card() {
    browser_through_the_card(Engine::Firefox, "ffx");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn dig(lab: &SystemLab, args: &[&str]) -> String {
    let mut all = vec!["+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = lab.pc.run("dig", &all).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ECH config a site publishes in DNS never reaches the inside; its cover name is then
/// refused, although the rules allow that name; the real name still loads. An outside name
/// pointing at an inside address (DNS rebinding) is refused.
#[test]
fn ech_configs_are_stripped_and_rebinding_answers_refused_by_the_cards_dns() {
    let Some(lab) = start("ech") else { return };
    // The world's own DNS serves the record with `ech`...
    let outside = lab
        .world
        .run_ok("dig", &["+short", "@10.200.0.1", "allowed.test", "TYPE65"])
        .unwrap();
    assert!(outside.contains("ech="), "the world serves ECH: {outside}");
    // ...the protected computer sees it without, the rest kept.
    let inside = dig(&lab, &["+short", "allowed.test", "TYPE65"]);
    assert!(
        inside.contains("alpn=\"h2\"") && !inside.contains("ech="),
        "inside: {inside}"
    );
    // The cover name is now known: a hello naming it is refused (TLS alert, curl exit 35),
    // with `ech-cover-name` on the card's record; the rule `tls` allows *.allowed.test.
    let cover = format!("https://{ECH_COVER_NAME}/");
    let resolve = format!("{ECH_COVER_NAME}:443:{}", lab::ALLOWED);
    let ca = lab.ca_file.to_str().unwrap().to_string();
    let (code, _) = curl(&lab, &["--cacert", &ca, "--resolve", &resolve, &cover]);
    assert_eq!(code, 35, "the cover name is refused with an alert");
    let recent = lab.card_recent().unwrap();
    assert!(
        recent
            .iter()
            .any(|(t, r)| t.contains(ECH_COVER_NAME) && r == "ech-cover-name"),
        "{recent:?}"
    );
    // DNS rebinding: an outside name that answers with an inside address (here the
    // appliance's) is refused, and recorded.
    let rebind = dig(&lab, &["rebind.test"]);
    assert!(rebind.contains("status: REFUSED"), "{rebind}");
    let recent = lab.card_recent().unwrap();
    assert!(
        recent
            .iter()
            .any(|(t, r)| t == "rebind.test" && r == "dns-rebinding"),
        "{recent:?}"
    );
    // The real name loads as before.
    assert_eq!(
        curl(&lab, &["--cacert", &ca, "https://allowed.test/"]),
        (0, lab::origin::HELLO.into())
    );
}

/// The clients a computer runs without a person: curl (HTTP/1.1, HTTP/2 over TLS; cleartext
/// HTTP/2 refused), wget, git over HTTPS, Python's urllib, and dig (TCP, DNSSEC's DO bit, an
/// answer too large for UDP).
#[test]
fn command_line_clients_work_through_the_card() {
    let Some(lab) = start("cli") else { return };
    let ca = lab.ca_file.to_str().unwrap().to_string();
    let hello = lab::origin::HELLO.to_string();

    // curl: HTTP/1.1, then HTTP/2 over TLS by ALPN.
    assert_eq!(
        curl(&lab, &["--http1.1", "http://allowed.test/"]),
        (0, hello.clone())
    );
    let (code, version) = curl(
        &lab,
        &[
            "--cacert",
            &ca,
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "https://allowed.test/",
        ],
    );
    assert_eq!((code, version.as_str()), (0, "2"));
    // Cleartext HTTP/2 would hide later requests from path rules: refused both ways.
    let (code, _) = curl(&lab, &["--http2-prior-knowledge", "http://allowed.test/"]);
    assert_ne!(code, 0, "h2c by prior knowledge is refused");
    let (code, page) = curl(
        &lab,
        &[
            "-H",
            "Connection: Upgrade, HTTP2-Settings",
            "-H",
            "Upgrade: h2c",
            "-H",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "http://allowed.test/",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        page.contains("h2c"),
        "Upgrade: h2c gets a refusal page: {page}"
    );
    let recent = lab.card_recent().unwrap();
    assert_eq!(
        recent.iter().filter(|(_, rule)| rule == "h2c").count(),
        2,
        "{recent:?}"
    );

    // wget, over HTTP and over HTTPS with the lab CA.
    for url in ["http://allowed.test/", "https://allowed.test/"] {
        let out = lab
            .pc
            .run_ok("wget", &["-q", "-O", "-", "--ca-certificate", &ca, url])
            .unwrap_or_else(|e| panic!("wget {url}: {e:#}"));
        assert_eq!(out, hello, "wget {url}");
    }

    // Python's urllib, HTTPS with the lab CA.
    let python = format!(
        "import ssl, urllib.request\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         print(urllib.request.urlopen('https://allowed.test/', context=ctx, timeout=5).read().decode(), end='')"
    );
    assert_eq!(lab.pc.run_ok("python3", &["-c", &python]).unwrap(), hello);

    // git clone over HTTPS (git's "dumb" HTTP protocol, files served by the origin).
    let clone = lab.dir.join("clone");
    let out = lab
        .pc
        .run(
            "env",
            &[
                &format!("GIT_SSL_CAINFO={ca}"),
                "git",
                "clone",
                "-q",
                "https://allowed.test/files/repo.git",
                clone.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        lab::GIT_README
    );

    // dig: over TCP, with the DO bit, and an answer too large for UDP (TC, then TCP).
    assert!(dig(&lab, &["+tcp", "+short", "allowed.test"]).contains("203.0.113.10"));
    let dnssec = dig(&lab, &["+dnssec", "allowed.test"]);
    assert!(
        dnssec.contains("status: NOERROR") && dnssec.contains("; EDNS: version: 0, flags: do;"),
        "{dnssec}"
    );
    let big = dig(&lab, &["+noedns", "big.allowed.test", "TXT"]);
    assert!(
        big.contains("Truncated, retrying in TCP mode") && big.contains(&"c".repeat(250)),
        "{big}"
    );
}

/// A site that advertises HTTP/3 (`Alt-Svc: h3`): the browser's QUIC attempt on UDP 443 is
/// refused at once (ICMP admin-prohibited), so the next load falls back to TCP without
/// waiting. Measured: the second load is not slower than the first by more than 100 ms.
#[test]
fn quic_is_refused_fast_so_browsers_fall_back_at_once() {
    if !require_browser() || !e2e::browser::require_certutil() {
        return;
    }
    let Some(lab) = start("h3") else { return };
    // Counts the protected computer's QUIC packets, to know the browser did try HTTP/3.
    for command in [
        "add table inet quic",
        "add chain inet quic out { type filter hook output priority 0 ; }",
        "add rule inet quic out udp dport 443 counter",
    ] {
        let args: Vec<&str> = command.split(' ').collect();
        lab.pc.run_ok("nft", &args).unwrap();
    }
    let launch = Launch {
        quic: true,
        ..Launch::new(Engine::Chromium)
    }
    .trusting(&lab.ca_file)
    .in_netns(lab.pc.name());
    let timings = session_in(&lab.pc, launch, async |b: &Browser| -> Result<Vec<f64>> {
        let mut timings = Vec::new();
        for _ in 0..3 {
            ensure!(b.load("https://allowed.test/h3").await? == Loaded::Page);
            let ms = b
                .eval("const n = performance.getEntriesByType('navigation')[0]; return n.responseEnd - n.startTime;")
                .await?
                .as_f64()
                .context("navigation timing")?;
            timings.push(ms);
            ensure!(b.load("about:blank").await? == Loaded::Page);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(timings)
    })
    .unwrap();
    let counted = lab
        .pc
        .run_ok("nft", &["list", "table", "inet", "quic"])
        .unwrap();
    let quic_packets: u64 = counted
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let first = timings[0];
    let worst_later = timings[1..].iter().copied().fold(0.0, f64::max);
    eprintln!("Alt-Svc h3 advertised; load times {timings:?} ms; QUIC packets sent {quic_packets}");
    assert!(
        quic_packets > 0,
        "chromium never tried QUIC: the test would prove nothing"
    );
    assert!(
        worst_later <= first + 100.0,
        "a load after Alt-Svc h3 took {worst_later} ms, the first {first} ms: {timings:?}"
    );
}
