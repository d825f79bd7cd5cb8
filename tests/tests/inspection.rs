//! TLS inspection end to end (issue 14), in the whole lab (`SystemLab`): the protected computer
//! trusts the card's own CA (as `cardfw inspection-ca` prints it from the sealed store), the
//! card trusts the lab's CA for the sites it checks, and curl asks through the card.
//!
//! - `allowed.test` is inspected: `/` loads over HTTP/2 and HTTP/1.1 with a leaf the card's CA
//!   signed; `/admin` gets the card's block page (rule `no-admin`, a plain `http` rule) inside
//!   HTTPS; a `video/*` response and a too-large one are blocked by their `http` rules too.
//! - `blocked.test` is allowed without `inspect`: spliced, the client sees the origin's own
//!   certificate.
//! - `203.0.113.12` serves a certificate that expired years ago: inspected, it gets the card's
//!   502 page naming `cert-expired`, recorded as that refusal.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;

use lab::SystemLab;

const EXPIRED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);

const RULES: &str = "\
no-admin:   deny http path /admin
no-video:   deny http content-type video/*
too-big:    deny http max-body 4K
dns:        allow dns
web:        allow http
inspected:  allow https host allowed.test inspect
expired:    allow https dst 203.0.113.12 inspect
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

#[test]
fn inspected_https_is_decided_like_http_and_upstream_certificates_are_checked_on_the_card() {
    let Some(lab) = e2e::start_system_lab("insp", RULES) else {
        return;
    };
    let card_ca = lab
        .card_inspection_ca()
        .expect("cardfw inspection-ca prints the card's CA");
    assert!(
        card_ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "{card_ca}"
    );
    let card_ca_file = lab.dir.join("card-ca.pem");
    std::fs::write(&card_ca_file, &card_ca).unwrap();
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
    let fetch = |path: &str| {
        let out = curl(
            &lab,
            &[
                "--cacert",
                card_ca_file,
                "-w",
                "\n%{http_code}",
                &format!("https://allowed.test{path}"),
            ],
        );
        (out.status.code(), text(&out.stdout))
    };
    let (code, admin) = fetch("/admin");
    assert_eq!(code, Some(0));
    assert!(
        admin.contains("Blocked by the card")
            && admin.contains("no-admin")
            && admin.ends_with("403"),
        "{admin}"
    );
    let (_, video) = fetch("/video");
    assert!(
        video.contains("no-video") && video.ends_with("403"),
        "{video}"
    );
    let (_, big) = fetch("/bytes/10000");
    assert!(big.contains("too-big") && big.ends_with("403"), "{big}");
    let (small_code, small) = fetch("/bytes/1000");
    assert_eq!(small_code, Some(0), "{small}");
    assert!(small.ends_with("200"), "{small}");
    let (chunked_code, _) = fetch("/chunked/10000");
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

    // An upstream certificate that expired: the card's own page says so, never a forged pass.
    lab.world
        .run_ok(
            "ip",
            &["addr", "add", &format!("{EXPIRED}/32"), "dev", "w0"],
        )
        .unwrap();
    let _expired = lab::origin::https_origin_expired(
        &lab.world,
        SocketAddr::new(EXPIRED.into(), 443),
        &lab.ca,
        &[&EXPIRED.to_string()],
    )
    .unwrap();
    let out = curl(
        &lab,
        &[
            "--cacert",
            card_ca_file,
            "-w",
            "\n%{http_code}",
            &format!("https://{EXPIRED}/"),
        ],
    );
    let page = text(&out.stdout);
    assert!(
        page.contains("cert-expired") && page.contains("expired") && page.ends_with("502"),
        "{page}\n{}",
        text(&out.stderr)
    );

    let recent = lab.card_recent().unwrap();
    let recorded = |target: &str, rule: &str| recent.iter().any(|(t, r)| t == target && r == rule);
    assert!(
        recorded("https://allowed.test:443/admin", "no-admin"),
        "{recent:?}"
    );
    assert!(
        recorded(&format!("{EXPIRED}:443"), "cert-expired"),
        "{recent:?}"
    );
}
