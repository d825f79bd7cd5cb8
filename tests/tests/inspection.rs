//! TLS inspection end to end (issue 14), in the whole lab (`SystemLab`): the protected computer
//! trusts the card's own CA (as `cardfw inspection-ca` prints it from the sealed store), the
//! card trusts the lab's CA for the sites it checks, and curl asks through the card.
//!
//! - `allowed.test` is inspected: `/` loads over HTTP/2 and HTTP/1.1 with a leaf the card's CA
//!   signed; `/admin` gets the card's block page (rule `no-admin`, a plain `http` rule) inside
//!   HTTPS; a `video/*` response and a too-large one are blocked by their `http` rules too.
//! - `blocked.test` is allowed without `inspect`: spliced, the client sees the origin's own
//!   certificate.
//! - Origins on `203.0.113.12`–`.14` serve a certificate that expired, one for another name,
//!   one from a CA nobody trusts: inspected, each gets the card's 502 page naming
//!   `cert-expired`, `cert-wrong-name`, `cert-unknown-issuer`, recorded as that refusal; once
//!   the owner adds the unknown CA on the card page, that origin loads.
//! - Chromium and Firefox, trusting only the card's CA (as a user would, in their NSS
//!   database), load the inspected site over HTTP/2 and get the block page inside it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;

use anyhow::{Result, ensure};
use e2e::browser::{Browser, Engine, Launch, Loaded, require_browser, require_firefox, session_in};
use lab::SystemLab;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const RULES: &str = "\
no-admin:   deny http path /admin
no-video:   deny http content-type video/*
too-big:    deny http max-body 4K
dns:        allow dns
web:        allow http
inspected:  allow https host allowed.test inspect
bad-certs:  allow https dst 203.0.113.12/30 inspect
spliced:    allow https host blocked.test
default deny
";

/// curl from the protected computer with `args`: its output, `-v` included on stderr.
fn curl(lab: &SystemLab, args: &[&str]) -> Output {
    let mut all = vec!["-sS", "-v", "--max-time", "5"];
    all.extend_from_slice(args);
    lab.pc.run("curl", &all).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes the card's inspection CA (from `cardfw inspection-ca`) where the browsers and curl
/// on the protected computer read it.
fn card_ca_file(lab: &SystemLab) -> std::path::PathBuf {
    let card_ca = lab
        .card_inspection_ca()
        .expect("cardfw inspection-ca prints the card's CA");
    assert!(
        card_ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "{card_ca}"
    );
    let file = lab.dir.join("card-ca.pem");
    std::fs::write(&file, &card_ca).unwrap();
    file
}

#[test]
fn inspected_https_is_decided_like_http_and_upstream_certificates_are_checked_on_the_card() {
    let Some(lab) = e2e::start_system_lab("insp", RULES) else {
        return;
    };
    let card_ca_file = card_ca_file(&lab);
    // The card page offers the same certificate, and its fingerprint (the page's own
    // certificate is checked by fingerprint in card_web.rs, so -k here).
    let card_page = |path: &str| {
        let url = format!("https://{}{path}", lab::CARD_INSIDE);
        text(&curl(&lab, &["-k", &url]).stdout)
    };
    let card_ca = std::fs::read_to_string(&card_ca_file).unwrap();
    assert_eq!(card_page("/inspection-ca.pem").trim(), card_ca.trim());
    let der = CertificateDer::from_pem_slice(card_ca.as_bytes()).unwrap();
    let fingerprint = cardfw::store::tls::fingerprint(&der);
    let steps = card_page("/inspection-ca");
    assert!(
        steps.contains(&fingerprint) && steps.contains("Firefox"),
        "{steps}"
    );
    let card_ca_file = card_ca_file.to_str().unwrap();

    // Inspected: the page over both HTTP versions, from a leaf the card's CA signed.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(
            &lab,
            &[
                flag,
                "--cacert",
                card_ca_file,
                "-w",
                "\n%{http_code} %{http_version}",
                "https://allowed.test/",
            ],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{flag}: {stderr}");
        assert!(
            stdout.contains(lab::origin::HELLO.trim())
                && stdout.ends_with(&format!("200 {version}")),
            "{flag}: {stdout}"
        );
        assert!(
            stderr.contains("CN=cardwall card CA"),
            "{flag}: the leaf is the card's: {stderr}"
        );
    }

    // Path, content-type and size rules inside HTTPS, with the card's block page.
    let fetch = |url: &str| {
        let out = curl(
            &lab,
            &["--cacert", card_ca_file, "-w", "\n%{http_code}", url],
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, admin, _) = fetch("https://allowed.test/admin");
    assert_eq!(code, Some(0));
    assert!(
        admin.contains("Blocked by the card")
            && admin.contains("no-admin")
            && admin.ends_with("403"),
        "{admin}"
    );
    let (_, video, _) = fetch("https://allowed.test/video");
    assert!(
        video.contains("no-video") && video.ends_with("403"),
        "{video}"
    );
    let (_, big, _) = fetch("https://allowed.test/bytes/10000");
    assert!(big.contains("too-big") && big.ends_with("403"), "{big}");
    let (small_code, small, _) = fetch("https://allowed.test/bytes/1000");
    assert_eq!(small_code, Some(0), "{small}");
    assert!(small.ends_with("200"), "{small}");
    let (chunked_code, _, _) = fetch("https://allowed.test/chunked/10000");
    assert_ne!(
        chunked_code,
        Some(0),
        "a body without length is cut at max-body"
    );

    // Not inspected: spliced, the origin's own certificate (the lab CA's) reaches the client.
    let ca_file = lab.ca_file.to_str().unwrap();
    let spliced = curl(&lab, &["--cacert", ca_file, "https://blocked.test/"]);
    let stderr = text(&spliced.stderr);
    assert!(spliced.status.success(), "{stderr}");
    assert!(stderr.contains("issuer: CN=cardwall test CA"), "{stderr}");

    // Through the explicit proxy's CONNECT the inspected site is refused, not spliced past
    // its rules.
    let proxy = format!("http://{}:3128", lab::CARD_INSIDE);
    let tunnelled = curl(
        &lab,
        &[
            "-x",
            &proxy,
            "--cacert",
            card_ca_file,
            "https://allowed.test/",
        ],
    );
    assert!(!tunnelled.status.success(), "{}", text(&tunnelled.stderr));

    // Upstream certificates the card refuses: its own page names the reason, never a forged
    // pass. Each origin on an address of its own (no name: the card checks the address).
    let origin_at = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let other_ca = lab::origin::test_ca_named("an untrusted CA");
    let mut refused = Vec::new();
    for (last, code) in [
        (12, "cert-expired"),
        (13, "cert-wrong-name"),
        (14, "cert-unknown-issuer"),
    ] {
        let ip = origin_at(last);
        lab.world
            .run_ok("ip", &["addr", "add", &format!("{ip}/32"), "dev", "w0"])
            .unwrap();
        let at = SocketAddr::new(ip.into(), 443);
        let name = ip.to_string();
        let origin = match code {
            "cert-expired" => lab::origin::https_origin_expired(&lab.world, at, &lab.ca, &[&name]),
            "cert-wrong-name" => {
                lab::origin::https_origin(&lab.world, at, &lab.ca, &["elsewhere.test"])
            }
            _ => lab::origin::https_origin(&lab.world, at, &other_ca, &[&name]),
        };
        refused.push(origin.unwrap());
        let (_, page, stderr) = fetch(&format!("https://{ip}/"));
        assert!(
            page.contains(code) && page.ends_with("502"),
            "{code}: {page}\n{stderr}"
        );
    }

    // The owner trusts that CA on the card page: the same origin loads at once.
    trust_on_the_card_page(&lab, other_ca.ca_pem());
    let (code, page, stderr) = fetch(&format!("https://{}/", origin_at(14)));
    assert_eq!(code, Some(0), "{page}\n{stderr}");
    assert!(
        page.contains(lab::origin::HELLO.trim()) && page.ends_with("200"),
        "{page}"
    );

    let recent = lab.card_recent().unwrap();
    let recorded = |target: &str, rule: &str| recent.iter().any(|(t, r)| t == target && r == rule);
    assert!(
        recorded("https://allowed.test:443/admin", "no-admin"),
        "{recent:?}"
    );
    assert!(
        recorded("allowed.test:443", "inspect-in-connect"),
        "{recent:?}"
    );
    for (last, code) in [
        (12, "cert-expired"),
        (13, "cert-wrong-name"),
        (14, "cert-unknown-issuer"),
    ] {
        let target = format!("{}:443", origin_at(last));
        assert!(recorded(&target, code), "{target} {code} in {recent:?}");
    }
}

/// The value of the first `name="csrf"` hidden field of a card page.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// As the owner would from the protected computer: sets the new card up with its setup code,
/// logs in, and adds `ca_pem` to the CAs the card trusts for inspected sites.
fn trust_on_the_card_page(lab: &SystemLab, ca_pem: &str) {
    const PIN: &str = "25802580";
    let jar = lab.dir.join("card-cookies.txt");
    let jar = jar.to_str().unwrap();
    let upload = lab.dir.join("owner-ca.pem");
    std::fs::write(&upload, ca_pem).unwrap();
    let page = |path: &str, form: &[&str]| {
        let url = format!("https://{}{path}", lab::CARD_INSIDE);
        let mut args = vec!["-k", "-L", "-b", jar, "-c", jar];
        for field in form {
            args.extend_from_slice(&["--data-urlencode", field]);
        }
        args.push(&url);
        text(&curl(lab, &args).stdout)
    };
    let setup_code = lab.card_setup_code().expect("a new card");
    let login = page("/", &[]);
    let set_up = page(
        "/setup",
        &[
            &format!("csrf={}", csrf_of(&login)),
            &format!("setup_code={setup_code}"),
            &format!("new_pin={PIN}"),
            &format!("confirm_pin={PIN}"),
        ],
    );
    assert!(set_up.contains("The card is set up"), "{set_up}");
    let dashboard = page(
        "/login",
        &[&format!("csrf={}", csrf_of(&set_up)), &format!("pin={PIN}")],
    );
    assert!(dashboard.contains("Log out"), "{dashboard}");
    let inspection = page("/inspection", &[]);
    let upload = format!("pem@{}", upload.display());
    let added = page(
        "/inspection/cas",
        &[
            &format!("csrf={}", csrf_of(&inspection)),
            &upload,
            &format!("pin={PIN}"),
        ],
    );
    assert!(
        added.contains("Trusted from now on") && added.contains("an untrusted CA"),
        "{added}"
    );
}

/// What a browser trusting the card's CA sees of the inspected site.
async fn browse_inspected(b: &Browser) -> Result<()> {
    let page = b.load("https://allowed.test/").await?;
    ensure!(page == Loaded::Page, "https://allowed.test/: {page:?}");
    ensure!(b.text("body").await?.contains(lab::origin::HELLO.trim()));
    // The browser speaks HTTP/2 to the card, the card TLS 1.3 to the origin.
    let negotiated = b.negotiated().await?;
    ensure!(negotiated == "TLSv1.3 h2", "negotiated: {negotiated}");
    ensure!(b.load("https://allowed.test/admin").await? == Loaded::Page);
    let blocked = b.text("body").await?;
    ensure!(
        blocked.contains("Blocked by the card") && blocked.contains("no-admin"),
        "block page: {blocked}"
    );
    Ok(())
}

fn browser_on_an_inspected_site(engine: Engine, tag: &str) {
    let available = match engine {
        Engine::Chromium => require_browser() && e2e::browser::require_certutil(),
        Engine::Firefox => require_firefox(),
    };
    if !available {
        return;
    }
    let Some(lab) = e2e::start_system_lab(tag, RULES) else {
        return;
    };
    let launch = Launch::new(engine)
        .trusting(&card_ca_file(&lab))
        .in_netns(lab.pc.name());
    if let Err(e) = session_in(&lab.pc, launch, browse_inspected) {
        panic!(
            "{} on an inspected site: {e:#}\ncard log:\n{}",
            engine.name(),
            lab.card_log()
        );
    }
}

#[test]
fn chromium_loads_an_inspected_site() {
    browser_on_an_inspected_site(Engine::Chromium, "ichr");
}

#[test]
fn firefox_loads_an_inspected_site() {
    browser_on_an_inspected_site(Engine::Firefox, "iffx");
}
