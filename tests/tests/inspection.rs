//! TLS inspection end to end (issue 14), in the whole lab (`SystemLab`): the protected computer
//! trusts the card's own CA (as `cardfw inspection-ca` prints it from the sealed store), the
//! card trusts the lab's CA for the sites it checks, and curl asks through the card.
//!
//! - `allowed.test` is inspected: `/` loads over HTTP/2 and HTTP/1.1 with a leaf the card's CA
//!   signed; `/admin` gets the card's block page (rule `no-admin`, a plain `http` rule) inside
//!   HTTPS; a `video/*` response and a too-large one are blocked by their `http` rules too.
//! - `blocked.test` is allowed without `inspect`: spliced, the client sees the origin's own
//!   certificate. Through the explicit proxy (CONNECT), `allowed.test` is inspected the same.
//! - Origins on `203.0.113.12`–`.15` serve a certificate that expired, one for another name,
//!   one from a CA nobody trusts, one without its intermediate: inspected, each gets the card's
//!   502 page naming `cert-expired`, `cert-wrong-name`, `cert-unknown-issuer`,
//!   `cert-incomplete-chain`, recorded as that refusal; once the owner adds the unknown CA on
//!   the card page, that origin loads.
//! - Origins on `.17` and `.19` send no intermediate but name its URL (AIA) on `.18`: the
//!   card fetches it where the rules allow the URL, and the site loads; where a rule denies
//!   the URL, the page says the intermediate was not fetched, and why.
//! - Origins on `.20` and `.21` staple OCSP answers made by `openssl ocsp`: `good` loads,
//!   `revoked` gets the card's page naming `cert-revoked`.
//! - A portal on `203.0.113.16` requires a client certificate: the card says none is stored,
//!   then (after a PKCS#12 from `openssl pkcs12 -export` is uploaded on the card page) that it
//!   is locked; unlocked with the PIN the portal loads, locked again it is refused again. The
//!   key is nowhere in the card's store directory in clear.
//! - Chromium and Firefox, trusting only the card's CA (as a user would, in their NSS
//!   database), load the inspected site over HTTP/2, echo through a WebSocket on it, and get
//!   the block page inside it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;

use anyhow::{Result, ensure};
use e2e::browser::{Browser, Engine, Launch, Loaded, require_browser, require_firefox, session_in};
use e2e::card_page::{CardPage, PIN, csrf_of};
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
portal:     allow https dst 203.0.113.16/32 inspect client-cert
aia-sites:  allow https dst 203.0.113.17/32,203.0.113.19/32 inspect
stapling:   allow https dst 203.0.113.20/31 inspect
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

/// The origins whose certificate the card refuses: the last byte of their address, and the
/// refusal's code.
const REFUSED_CERTS: [(u8, &str); 4] = [
    (12, "cert-expired"),
    (13, "cert-wrong-name"),
    (14, "cert-unknown-issuer"),
    (15, "cert-incomplete-chain"),
];

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

    // Through the explicit proxy's CONNECT the inspected site is inspected the same way: the
    // card's leaf, and its rules inside.
    let proxy = format!("http://{}:3128", lab::CARD_INSIDE);
    for (path, expect) in [("/", "200"), ("/admin", "403")] {
        let url = format!("https://allowed.test{path}");
        let tunnelled = curl(
            &lab,
            &[
                "-x",
                &proxy,
                "--cacert",
                card_ca_file,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        );
        let (stdout, stderr) = (text(&tunnelled.stdout), text(&tunnelled.stderr));
        assert!(tunnelled.status.success(), "{path}: {stderr}");
        assert!(stdout.ends_with(expect), "{path}: {stdout}");
        assert!(stderr.contains("CN=cardwall card CA"), "{path}: {stderr}");
    }

    // Upstream certificates the card refuses: its own page names the reason, never a forged
    // pass. Each origin on an address of its own (no name: the card checks the address).
    let origin_at = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let other_ca = lab::origin::test_ca_named("an untrusted CA");
    let mut refused = Vec::new();
    let intermediate = lab.ca.intermediate("cardwall test intermediate");
    for (last, code) in REFUSED_CERTS {
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
            "cert-incomplete-chain" => {
                lab::origin::https_origin_leaf_only(&lab.world, at, &intermediate, &[&name], None)
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

    // Without its intermediate but naming where it is (AIA): the card fetches it, as the
    // rules allow that URL, and the site loads; one whose URL a rule denies stays refused,
    // and its page says why nothing was fetched.
    let aia_files = lab.dir.join("aia");
    std::fs::create_dir_all(&aia_files).unwrap();
    let intermediate_der =
        CertificateDer::from_pem_slice(intermediate.ca_pem().as_bytes()).unwrap();
    std::fs::write(aia_files.join("intermediate.der"), &intermediate_der).unwrap();
    for last in [17, 18, 19] {
        let ip = origin_at(last);
        lab.world
            .run_ok("ip", &["addr", "add", &format!("{ip}/32"), "dev", "w0"])
            .unwrap();
    }
    let _aia_origin = lab::origin::http_origin_with_files(
        &lab.world,
        SocketAddr::new(origin_at(18).into(), 80),
        &aia_files,
    )
    .unwrap();
    let _fetching = lab::origin::https_origin_leaf_only(
        &lab.world,
        SocketAddr::new(origin_at(17).into(), 443),
        &intermediate,
        &["203.0.113.17"],
        Some("http://203.0.113.18/files/intermediate.der"),
    )
    .unwrap();
    let (code, page, stderr) = fetch("https://203.0.113.17/");
    assert_eq!(code, Some(0), "{page}\n{stderr}");
    assert!(
        page.contains(lab::origin::HELLO.trim()) && page.ends_with("200"),
        "AIA fetched: {page}"
    );
    let other_intermediate = lab.ca.intermediate("cardwall test intermediate 2");
    let _denied = lab::origin::https_origin_leaf_only(
        &lab.world,
        SocketAddr::new(origin_at(19).into(), 443),
        &other_intermediate,
        &["203.0.113.19"],
        Some("http://203.0.113.18/admin/intermediate.der"),
    )
    .unwrap();
    let (_, page, _) = fetch("https://203.0.113.19/");
    assert!(
        page.contains("cert-incomplete-chain")
            && page.contains("did not fetch")
            && page.contains("rules do not allow")
            && page.ends_with("502"),
        "AIA denied: {page}"
    );

    // Stapled OCSP answers made by `openssl ocsp` as the lab CA's responder: `good` loads,
    // `revoked` gets the card's page naming it.
    for (last, revoked) in [(20, false), (21, true)] {
        let ip = origin_at(last);
        lab.world
            .run_ok("ip", &["addr", "add", &format!("{ip}/32"), "dev", "w0"])
            .unwrap();
        let name = ip.to_string();
        let issued = lab.ca.issue(&[&name]);
        let staple = ocsp_from_openssl(&lab, &issued.0, revoked);
        let _origin = lab::origin::https_origin_stapling(
            &lab.world,
            SocketAddr::new(ip.into(), 443),
            issued,
            staple,
        )
        .unwrap();
        let (code, page, stderr) = fetch(&format!("https://{ip}/"));
        if revoked {
            assert!(
                page.contains("cert-revoked") && page.ends_with("502"),
                "revoked staple: {page}"
            );
        } else {
            assert_eq!(code, Some(0), "{page}\n{stderr}");
            assert!(page.ends_with("200"), "good staple: {page}");
        }
    }

    // The owner trusts that CA on the card page: the same origin loads at once.
    let card = CardPage::set_up(&lab);
    let upload = lab.dir.join("owner-ca.pem");
    std::fs::write(&upload, other_ca.ca_pem()).unwrap();
    let inspection = card.get("/inspection");
    let added = card.post(
        "/inspection/cas",
        &[
            &format!("csrf={}", csrf_of(&inspection)),
            &format!("pem@{}", upload.display()),
            &format!("pin={PIN}"),
        ],
    );
    assert!(
        added.contains("Trusted from now on") && added.contains("an untrusted CA"),
        "{added}"
    );
    let (code, page, stderr) = fetch(&format!("https://{}/", origin_at(14)));
    assert_eq!(code, Some(0), "{page}\n{stderr}");
    assert!(
        page.contains(lab::origin::HELLO.trim()) && page.ends_with("200"),
        "{page}"
    );

    client_certificate_is_presented_only_while_unlocked(&lab, &card, card_ca_file);

    let recent = lab.card_recent().unwrap();
    let recorded = |target: &str, rule: &str| recent.iter().any(|(t, r)| t == target && r == rule);
    assert!(
        recorded("http://203.0.113.18:80/files/intermediate.der", "web"),
        "the AIA fetch is decided like the user's request: {recent:?}"
    );
    assert!(
        recorded("http://203.0.113.18:80/admin/intermediate.der", "no-admin"),
        "{recent:?}"
    );
    assert!(
        recorded("https://allowed.test:443/admin", "no-admin"),
        "{recent:?}"
    );
    for (last, code) in REFUSED_CERTS {
        let target = format!("{}:443", origin_at(last));
        assert!(recorded(&target, code), "{target} {code} in {recent:?}");
    }
}

/// An OCSP response for the leaf of `chain` (leaf then the lab CA, PEM), `good` or `revoked`,
/// made by `openssl ocsp` answering as the lab CA from an index file, as a CA's responder
/// does.
fn ocsp_from_openssl(lab: &SystemLab, chain: &str, revoked: bool) -> Vec<u8> {
    let dir = tempfile::tempdir_in(&lab.dir).unwrap();
    let path = |name: &str| dir.path().join(name);
    let leaf_end = chain.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(path("leaf.pem"), &chain[..leaf_end]).unwrap();
    std::fs::write(path("ca.pem"), lab.ca.ca_pem()).unwrap();
    std::fs::write(path("ca.key"), lab.ca.key_pem()).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let serial = openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    // index.txt: status, expiry, revocation time, serial, file, subject.
    let line = if revoked {
        format!("R\t491231235959Z\t240101000000Z\t{serial}\tunknown\t/CN=leaf\n")
    } else {
        format!("V\t491231235959Z\t\t{serial}\tunknown\t/CN=leaf\n")
    };
    std::fs::write(path("index.txt"), line).unwrap();
    openssl(&[
        "ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "req.der",
    ]);
    openssl(&[
        "ocsp",
        "-index",
        "index.txt",
        "-rsigner",
        "ca.pem",
        "-rkey",
        "ca.key",
        "-CA",
        "ca.pem",
        "-reqin",
        "req.der",
        "-respout",
        "resp.der",
        "-ndays",
        "1",
    ]);
    std::fs::read(path("resp.der")).unwrap()
}

/// The portal on 203.0.113.16 that requires a client certificate, and the CA that issues them.
fn start_portal(lab: &SystemLab) -> (lab::origin::Server, lab::origin::TestCa) {
    let clients = lab::origin::test_ca_named("cardwall test client CA");
    lab.world
        .run_ok("ip", &["addr", "add", "203.0.113.16/32", "dev", "w0"])
        .unwrap();
    let portal = lab::origin::https_origin_requiring_client_cert(
        &lab.world,
        SocketAddr::new(Ipv4Addr::new(203, 0, 113, 16).into(), 443),
        &lab.ca,
        &["203.0.113.16"],
        &clients,
    )
    .unwrap();
    (portal, clients)
}

/// The portal that wants a client certificate, through the card: its status and the page.
fn portal(lab: &SystemLab, card_ca_file: &str) -> String {
    let out = curl(
        lab,
        &[
            "--cacert",
            card_ca_file,
            "-w",
            "\n%{http_code}",
            "https://203.0.113.16/",
        ],
    );
    text(&out.stdout)
}

/// A client certificate issued by `clients`, as a PKCS#12 file made by `openssl pkcs12
/// -export` (as users get theirs), with `password`.
fn pkcs12_from_openssl(
    lab: &SystemLab,
    clients: &lab::origin::TestCa,
    password: &str,
) -> std::path::PathBuf {
    let (chain, key) = clients.issue(&["alice.test"]);
    let pem = lab.dir.join("alice.pem");
    std::fs::write(&pem, format!("{chain}{key}")).unwrap();
    let p12 = lab.dir.join("alice.p12");
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&p12)
        .args(["-passout", &format!("pass:{password}")])
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    std::fs::remove_file(&pem).unwrap();
    p12
}

/// The client certificate's life on the card page, seen from the portal that requires it.
fn client_certificate_is_presented_only_while_unlocked(
    lab: &SystemLab,
    card: &CardPage<'_>,
    card_ca_file: &str,
) {
    let (_portal, clients) = start_portal(lab);

    let missing = portal(lab, card_ca_file);
    assert!(
        missing.contains("client-cert-missing") && missing.ends_with("403"),
        "{missing}"
    );

    let p12 = pkcs12_from_openssl(lab, &clients, "hunter2");
    let file = format!("file=@{}", p12.display());
    let inspection = card.get("/inspection");
    let csrf = format!("csrf={}", csrf_of(&inspection));
    let wrong = card.upload(
        "/inspection/client-cert",
        &[&csrf, &file, "password=wrong", &format!("pin={PIN}")],
    );
    assert!(
        wrong.contains("Nothing was changed") && wrong.contains("PKCS#12"),
        "{wrong}"
    );
    let stored = card.upload(
        "/inspection/client-cert",
        &[&csrf, &file, "password=hunter2", &format!("pin={PIN}")],
    );
    assert!(
        stored.contains("is stored on the card, locked") && stored.contains("alice.test"),
        "{stored}"
    );

    let locked = portal(lab, card_ca_file);
    assert!(
        locked.contains("client-cert-locked") && locked.ends_with("403"),
        "{locked}"
    );

    let unlocked = card.post(
        "/inspection/client-cert/unlock",
        &[&csrf, &format!("pin={PIN}")],
    );
    assert!(unlocked.contains("Unlocked"), "{unlocked}");
    let loaded = portal(lab, card_ca_file);
    assert!(
        loaded.contains(lab::origin::HELLO.trim()) && loaded.ends_with("200"),
        "{loaded}"
    );

    let relocked = card.post("/inspection/client-cert/lock", &[&csrf]);
    assert!(relocked.contains("Locked"), "{relocked}");
    let refused = portal(lab, card_ca_file);
    assert!(
        refused.contains("client-cert-locked") && refused.ends_with("403"),
        "{refused}"
    );

    // The key is in the store only sealed: no file of the card's state holds it in clear.
    for entry in std::fs::read_dir(lab.store_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "a clear private key in the card's store"
        );
    }
    let recent = lab.card_recent().unwrap();
    for code in ["client-cert-missing", "client-cert-locked"] {
        assert!(
            recent
                .iter()
                .any(|(t, r)| t == "203.0.113.16:443" && r == code),
            "{code} in {recent:?}"
        );
    }
}

/// What a browser trusting the card's CA sees of the inspected site.
async fn browse_inspected(b: &Browser) -> Result<()> {
    let page = b.load("https://allowed.test/").await?;
    ensure!(page == Loaded::Page, "https://allowed.test/: {page:?}");
    ensure!(b.text("body").await?.contains(lab::origin::HELLO.trim()));
    // The browser speaks HTTP/2 to the card, the card TLS 1.3 to the origin.
    let negotiated = b.negotiated().await?;
    ensure!(negotiated == "TLSv1.3 h2", "negotiated: {negotiated}");
    // A WebSocket on the inspected site: the browser opens it on an HTTP/1.1 connection of
    // its own, the card passes the upgrade on to the site and relays the frames.
    let echo = b.eval_async(e2e::browser::WEBSOCKET_ECHO).await?;
    ensure!(echo == "echo: through the card", "wss:// echo: {echo}");
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

/// The owner, in Chromium on the protected computer, uploads the PKCS#12 on the card page (a
/// real file input, multipart), unlocks it with the PIN, and the portal that requires it loads
/// in the same browser; locked on the page again, the portal gets the card's page saying so.
#[test]
fn chromium_unlocks_the_client_certificate_on_the_card_page() {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    if !(require_browser() && e2e::browser::require_certutil()) {
        return;
    }
    let Some(lab) = e2e::start_system_lab("icert", RULES) else {
        return;
    };
    CardPage::set_up(&lab);
    let (_portal, clients) = start_portal(&lab);
    let p12 = pkcs12_from_openssl(&lab, &clients, "hunter2");
    let launch = Launch {
        accept_self_signed: true,
        ..Launch::new(Engine::Chromium).in_netns(lab.pc.name())
    };
    let outcome = session_in(&lab.pc, launch, async move |b: &Browser| -> Result<()> {
        let card = format!("https://{}", lab::CARD_INSIDE);
        let main_says = async |text: &str| b.wait_for_text("main", text, WAIT).await;
        b.goto(&format!("{card}/")).await?;
        b.type_into("pin", PIN).await?;
        b.submit("/login").await?;
        b.wait_for_text("body", "Log out", WAIT).await?;
        b.goto(&format!("{card}/inspection")).await?;
        b.type_into("client-cert-file", p12.to_str().unwrap())
            .await?;
        b.type_into("client-cert-password", "hunter2").await?;
        b.type_into("upload-cert-pin", PIN).await?;
        b.submit("/inspection/client-cert").await?;
        main_says("is stored on the card, locked").await?;
        b.type_into("unlock-cert-pin", PIN).await?;
        b.submit("/inspection/client-cert/unlock").await?;
        main_says("Unlocked:").await?;

        b.goto("https://203.0.113.16/").await?;
        let body = b.text("body").await?;
        ensure!(body.contains(lab::origin::HELLO.trim()), "unlocked: {body}");

        b.goto(&format!("{card}/inspection")).await?;
        b.submit("/inspection/client-cert/lock").await?;
        main_says("Locked:").await?;
        b.goto("https://203.0.113.16/").await?;
        let body = b.text("body").await?;
        ensure!(body.contains("client-cert-locked"), "locked: {body}");
        Ok(())
    });
    if let Err(e) = outcome {
        panic!(
            "chromium and the client certificate: {e:#}\ncard log:\n{}",
            lab.card_log()
        );
    }
}
