//! `cardwall-rules` end to end: exit codes, and a signing key, a bundle and its verification
//! made by the tool itself.

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardwall-rules"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[test]
fn check_exit_codes() {
    let dir = Path::new(EXAMPLES);
    let ok = run(dir, &["check", "family.rules"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("12 rules"), "{}", text(&ok));
    let bad = run(dir, &["check", "broken.rules"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).ends_with("7 errors\n"), "{}", text(&bad));
    let missing = run(dir, &["check", "no-such.rules"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("cannot read no-such.rules"),
        "{}",
        text(&missing)
    );
}

#[test]
fn keygen_sign_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(format!("{EXAMPLES}/family.rules"), d.join("family.rules")).unwrap();
    std::fs::copy(format!("{EXAMPLES}/ads.txt"), d.join("ads.txt")).unwrap();

    let out = run(d, &["keygen", "--out", "policy"]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("policy.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private key is readable by its owner only"
    );
    let again = run(d, &["keygen", "--out", "policy"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing key is never overwritten"
    );
    assert!(run(d, &["keygen", "--out", "other"]).status.success());

    let out = run(
        d,
        &[
            "sign",
            "family.rules",
            "--key",
            "policy.key",
            "--version",
            "3",
            "--group",
            "home",
            "--out",
            "b",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("version 3 for group `home`"),
        "{}",
        text(&out)
    );

    let verify = |args: &[&str]| {
        let mut all = vec!["verify", "b", "--group", "home"];
        all.extend_from_slice(args);
        run(d, &all)
    };
    let ok = verify(&["--key", "policy.pub", "--installed", "2"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("(1 list file)"), "{}", text(&ok));
    let replay = verify(&["--key", "policy.pub", "--installed", "3"]);
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        text(&replay).contains("not newer than installed version 3"),
        "{}",
        text(&replay)
    );
    let wrong = verify(&["--key", "other.pub"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong).contains("trusts only"), "{}", text(&wrong));
    let group = run(
        d,
        &["verify", "b", "--group", "office", "--key", "policy.pub"],
    );
    assert!(
        text(&group).contains("this card is in group `office`"),
        "{}",
        text(&group)
    );

    let mut bytes = std::fs::read(d.join("b")).unwrap();
    let at = bytes.len() - 5;
    bytes[at] = b'X';
    std::fs::write(d.join("b"), bytes).unwrap();
    let tampered = verify(&["--key", "policy.pub"]);
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        text(&tampered).contains("signature does not verify"),
        "{}",
        text(&tampered)
    );

    std::fs::write(d.join("bad.rules"), "allow htp\n").unwrap();
    let refused = run(
        d,
        &[
            "sign",
            "bad.rules",
            "--key",
            "policy.key",
            "--version",
            "4",
            "--group",
            "home",
            "--out",
            "c",
        ],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a rule file that does not parse is not signed"
    );
    assert!(!d.join("c").exists());
}
