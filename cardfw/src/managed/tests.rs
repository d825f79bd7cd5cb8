//! Every way a bundle can be refused, against a real store: the refusal names the reason,
//! and neither the rules in force nor the installed version move.

use chrono::{DateTime, Duration, Utc};
use rules::bundle::{Bundle, SigningKey};

use super::*;
use crate::store::{PinCost, StoreError};

const FIRST_RULES: &str = "dns: allow dns\ndefault deny\n";
const PIN: &str = "5678";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn policy_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn bundle(version: u64) -> Bundle {
    Bundle {
        version,
        group: "laptops".into(),
        issued_at: now() - Duration::minutes(1),
        expires_at: now() + Duration::days(30),
        rules: (
            "rules.txt".into(),
            format!(
                "v{version}: allow http host allowed.test\nno-ads: deny any host @ads\nlist ads file ads.txt\ndefault deny\n"
            ),
        ),
        list_files: vec![("ads.txt".into(), "ads.example\n".into())],
    }
}

/// An enrolled card: PIN changed, enrolment pinned at `installed` with the test policy key.
fn enrolled_card(dir: &std::path::Path, installed: u64) -> (Store, Enrolment) {
    let store = Store::open_or_create(dir, FIRST_RULES, PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let code = store.setup_code().unwrap().unwrap();
    store.setup(&code, PIN).unwrap();
    let enrolment = Enrolment {
        server: "https://policy.test:8443".into(),
        card_id: "c1".into(),
        group: "laptops".into(),
        ca_pem: String::new(),
        policy_key_pem: rules::bundle::public_key_to_pem(&policy_key().verifying_key()),
        certificate_pem: String::new(),
        key_pem: String::new(),
        installed_version: installed,
    };
    store
        .login(PIN)
        .unwrap()
        .set_managed(Some(&enrolment.emit()))
        .unwrap();
    (store, enrolment)
}

#[test]
fn a_good_bundle_is_installed_and_local_edits_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let before = store.version().unwrap();
    let updated = apply(&store, &enrolment, &bundle(3).sign(&policy_key()), now()).unwrap();
    assert_eq!(updated.installed_version, 3);
    assert_eq!(Enrolment::load(&store).unwrap().unwrap(), updated);
    let rules = store.rules().unwrap();
    assert_eq!(rules.version, before + 1);
    assert!(rules.text.starts_with("v3: allow http"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("lists").join("ads.txt")).unwrap(),
        "ads.example\n"
    );
    // The firewall's loader compiles what was installed, list file included.
    crate::firewall::LoadedRules::from_store(&store).unwrap();
    assert!(store.audit().unwrap().iter().any(|e| matches!(
        e.event,
        crate::store::AuditEvent::BundleInstalled { version: 3 }
    )));

    let session = store.login(PIN).unwrap();
    assert!(matches!(
        session.save_rules("default allow\n"),
        Err(StoreError::Managed { .. })
    ));
    assert!(matches!(
        session.rollback(),
        Err(StoreError::Managed { .. })
    ));
}

/// A card at bundle version 5 is offered `bytes`: the refusal must match `expected`, and
/// neither the rules nor the installed version may move; a good version 6 still goes in after.
fn refused(bytes: Vec<u8>, expected: fn(&ManagedError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let enrolment = apply(&store, &enrolment, &bundle(5).sign(&policy_key()), now()).unwrap();
    let rules_before = store.rules().unwrap();
    let error = apply(&store, &enrolment, &bytes, now()).unwrap_err();
    assert!(expected(&error), "unexpected refusal: {error}");
    assert_eq!(store.rules().unwrap(), rules_before, "rules moved");
    assert_eq!(
        Enrolment::load(&store).unwrap().unwrap().installed_version,
        5,
        "installed version moved"
    );
    let good = bundle(6).sign(&policy_key());
    assert_eq!(
        apply(&store, &enrolment, &good, now())
            .unwrap()
            .installed_version,
        6
    );
}

#[test]
fn a_bad_signature_is_refused() {
    let mut tampered = bundle(6).sign(&policy_key());
    let at = tampered.len() - 5;
    tampered[at] ^= 0x01;
    refused(tampered, |e| {
        matches!(e, ManagedError::Bundle(BundleError::BadSignature))
    });
}

#[test]
fn a_bundle_signed_by_another_key_is_refused() {
    refused(bundle(6).sign(&SigningKey::from_bytes(&[9; 32])), |e| {
        matches!(e, ManagedError::Bundle(BundleError::WrongKey { .. }))
    });
}

#[test]
fn an_expired_bundle_is_refused() {
    let mut expired = bundle(6);
    expired.expires_at = now() - Duration::seconds(1);
    refused(expired.sign(&policy_key()), |e| {
        matches!(e, ManagedError::Bundle(BundleError::Expired { .. }))
    });
}

#[test]
fn a_replayed_version_is_refused() {
    refused(bundle(5).sign(&policy_key()), |e| {
        matches!(
            e,
            ManagedError::Bundle(BundleError::NotNewer {
                offered: 5,
                installed: 5
            })
        )
    });
}

#[test]
fn a_rollback_to_an_older_version_is_refused() {
    refused(bundle(2).sign(&policy_key()), |e| {
        matches!(
            e,
            ManagedError::Bundle(BundleError::NotNewer {
                offered: 2,
                installed: 5
            })
        )
    });
}

#[test]
fn a_bundle_for_another_group_is_refused() {
    let mut other_group = bundle(6);
    other_group.group = "servers".into();
    refused(other_group.sign(&policy_key()), |e| {
        matches!(e, ManagedError::Bundle(BundleError::WrongGroup { .. }))
    });
}

#[test]
fn garbage_is_refused() {
    refused(b"\x00\xffHTTP/1.1 200 OK\r\n\r\nhello".to_vec(), |e| {
        matches!(e, ManagedError::Bundle(BundleError::Malformed(_)))
    });
    refused(Vec::new(), |e| {
        matches!(e, ManagedError::Bundle(BundleError::Malformed(_)))
    });
}

#[test]
fn a_truncated_bundle_is_refused() {
    let good = bundle(6).sign(&policy_key());
    refused(good[..good.len() / 2].to_vec(), |e| {
        matches!(e, ManagedError::Bundle(_))
    });
    refused(good[..good.len() - 1].to_vec(), |e| {
        matches!(e, ManagedError::Bundle(BundleError::BadSignature))
    });
}

#[test]
fn a_list_file_named_outside_the_store_is_refused() {
    let mut escaping = bundle(6);
    escaping.list_files = vec![("../ads.txt".into(), "x\n".into())];
    escaping.rules.1 = "deny any host @ads\nlist ads file ../ads.txt\ndefault allow\n".into();
    refused(escaping.sign(&policy_key()), |e| {
        matches!(
            e,
            ManagedError::Store(StoreError::Bundle(_)) | ManagedError::Bundle(_)
        )
    });
}

#[test]
fn unenrolling_needs_the_pin_and_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    apply(&store, &enrolment, &bundle(1).sign(&policy_key()), now()).unwrap();
    let rules = store.rules().unwrap();
    assert!(matches!(
        unenroll(&store, "0000"),
        Err(ManagedError::Store(StoreError::WrongPin { .. }))
    ));
    assert!(Enrolment::load(&store).unwrap().is_some());
    assert_eq!(unenroll(&store, PIN).unwrap().card_id, "c1");
    assert!(Enrolment::load(&store).unwrap().is_none());
    assert_eq!(store.rules().unwrap(), rules);
    assert!(matches!(
        unenroll(&store, PIN),
        Err(ManagedError::NotEnrolled)
    ));
    // Editable again.
    store
        .login(PIN)
        .unwrap()
        .save_rules("default deny\n")
        .unwrap();
}

#[test]
fn the_network_is_up_only_with_the_link_and_the_outside_address_running() {
    use std::net::{IpAddr, Ipv4Addr};

    use super::network::is_up;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(is_up("lo", loopback));
    assert!(!is_up("lo", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
    assert!(!is_up("no-such-link0", loopback));
}

/// Issue 13.11: a bundle's list file cannot be named after a store file (here the card's
/// certificate): the bundle is refused whole, and nothing is written.
#[test]
fn a_list_file_named_like_a_store_file_is_refused() {
    for name in [
        "tls.crt",
        "device.key",
        "pin.sealed",
        "tls.key.sealed",
        "lists",
    ] {
        let mut colliding = bundle(6);
        colliding.list_files = vec![
            ("ads.txt".into(), "ads.example\n".into()),
            (name.into(), "x.example\n".into()),
        ];
        refused(colliding.sign(&policy_key()), |e| {
            matches!(
                e,
                ManagedError::Store(StoreError::Bundle(_)) | ManagedError::Bundle(_)
            )
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let certificate = crate::store::tls::tls_identity(&store, [172, 31, 77, 2].into())
        .unwrap()
        .cert_der;
    let mut colliding = bundle(3);
    colliding.list_files = vec![("tls.crt".into(), "x.example\n".into())];
    assert!(apply(&store, &enrolment, &colliding.sign(&policy_key()), now()).is_err());
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        certificate
    );
}
