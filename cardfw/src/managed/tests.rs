//! Every way a bundle can be refused, against a real store: the refusal names the reason,
//! and neither the rules in force nor the installed version move.

use chrono::{DateTime, Duration, Utc};
use rules::bundle::{Bundle, SigningKey};

use super::*;
use crate::config::Config;
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
        trusted_cas: None,
        vpns: None,
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

/// Issue: a managed bundle carries extra trusted CAs. Installed, they are kept sealed and
/// trusted by inspection at once and after a restart; the next bundle without CAs removes
/// them; the owner's own CAs are not touched by either.
#[tokio::test]
async fn a_bundles_cas_are_kept_sealed_trusted_at_once_and_removed_by_the_next() {
    use crate::inspect::tests::{Pki, VALID, pem_of, verdict};
    use crate::inspect::{CertReason, Inspection};

    let idle = std::time::Duration::from_secs(600);
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let inspection = Inspection::start(&store, None, idle).unwrap();
    let company = Pki::new("company");
    let name = "intranet.example";
    let (server, _) = company.server(name, VALID, true);
    assert_eq!(
        verdict(&inspection.upstream(), server.clone(), name).await,
        Some(CertReason::UnknownIssuer)
    );
    // The owner's CA for another site stays through every bundle.
    let home = Pki::new("home");
    let (home_server, _) = home.server("nas.example", VALID, true);
    let session = store.login(PIN).unwrap();
    inspection
        .add_owner_cas(
            &session,
            OwnerCas::parse_upload(&pem_of(&home.root)).unwrap(),
        )
        .unwrap();

    let with_ca = Bundle {
        trusted_cas: Some(pem_of(&company.root)),
        ..bundle(1)
    };
    let enrolment = apply(&store, &enrolment, &with_ca.sign(&policy_key()), now()).unwrap();
    assert_eq!(inspection.reload_managed_cas(&store).unwrap(), 1);
    assert_eq!(
        inspection.managed_cas().iter().next().unwrap().subject,
        "CN=company root"
    );
    assert_eq!(
        verdict(&inspection.upstream(), server.clone(), name).await,
        None
    );
    assert_eq!(
        verdict(&inspection.upstream(), home_server.clone(), "nas.example").await,
        None
    );
    // Sealed: the certificate's bytes are nowhere in clear in the store.
    let file = dir.path().join("managed-cas.sealed");
    let sealed = std::fs::read(&file).unwrap();
    assert!(!sealed.windows(16).any(|w| w == &company.root[..16]));
    // A restart trusts them from the store.
    let restarted = Inspection::start(&store, None, idle).unwrap();
    assert_eq!(restarted.managed_cas(), inspection.managed_cas());
    assert_eq!(
        verdict(&restarted.upstream(), server.clone(), name).await,
        None
    );

    // The next bundle carries none: the file goes, and so does the trust, at once.
    apply(&store, &enrolment, &bundle(2).sign(&policy_key()), now()).unwrap();
    assert!(store.managed_cas_record().unwrap().is_none());
    assert!(!file.exists());
    assert_eq!(inspection.reload_managed_cas(&store).unwrap(), 0);
    assert_eq!(
        verdict(&inspection.upstream(), server, name).await,
        Some(CertReason::UnknownIssuer)
    );
    assert_eq!(
        verdict(&inspection.upstream(), home_server, "nas.example").await,
        None
    );
    assert_eq!(inspection.owner_cas().len(), 1);
}

/// A bundle whose CAs the card would not trust (not a CA, or not X.509) is refused whole,
/// and so is one carrying a private key: nothing of it is installed.
#[test]
fn a_bundle_with_cas_the_card_would_not_trust_is_refused_whole() {
    let leaf = rcgen::generate_simple_self_signed(vec!["leaf.example".into()]).unwrap();
    let mut not_ca = bundle(6);
    not_ca.trusted_cas = Some(leaf.cert.pem());
    refused(not_ca.sign(&policy_key()), |e| {
        matches!(
            e,
            ManagedError::TrustedCa(OwnerCaError::NotCa { index: 1, .. })
        )
    });
    let mut not_x509 = bundle(6);
    not_x509.trusted_cas = Some(pem::encode(&pem::Pem::new("CERTIFICATE", b"junk".to_vec())));
    refused(not_x509.sign(&policy_key()), |e| {
        matches!(
            e,
            ManagedError::TrustedCa(OwnerCaError::NotX509 { index: 1 })
        )
    });
    let mut with_key = bundle(6);
    with_key.trusted_cas = Some(format!(
        "{}{}",
        leaf.cert.pem(),
        leaf.signing_key.serialize_pem()
    ));
    refused(with_key.sign(&policy_key()), |e| {
        matches!(e, ManagedError::Bundle(BundleError::PrivateKey { .. }))
    });
}

fn overlay(version: u64, text: &str) -> Bundle {
    Bundle {
        version,
        group: "card:c1".into(),
        rules: ("overlay".into(), text.into()),
        list_files: Vec::new(),
        ..bundle(version)
    }
}

/// Issue 16: an overlay signed for this card is installed apart from the group's bundle and
/// its rules decide first, under their `overlay-…` names; another card's, a group bundle, an
/// older version, or one that is more than named rules is refused and changes nothing; a new
/// enrolment starts without it.
#[test]
fn an_overlay_decides_before_the_groups_rules_and_only_this_cards() {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    apply(&store, &enrolment, &bundle(3).sign(&policy_key()), now()).unwrap();
    let enrolment = Enrolment::load(&store).unwrap().unwrap();
    let decide = |store: &Store, host: &str| {
        let loaded = crate::firewall::LoadedRules::from_store(store).unwrap();
        let request = rules::Request::new(rules::Protocol::Http, rules::LocalTime::now())
            .host(host)
            .port(80)
            .path("/x");
        let decision = loaded.rules.decide(&request);
        (decision.action, decision.rule.id.clone(), loaded.version)
    };
    assert_eq!(decide(&store, "ads.example").1, "no-ads");

    let text = "overlay-0a1b2c3d: allow http host ads.example path /x\n";
    assert_eq!(
        apply_overlay(
            &store,
            &enrolment,
            &Config::default(),
            &overlay(1, text).sign(&policy_key()),
            now()
        )
        .unwrap(),
        1
    );
    let (action, id, version) = decide(&store, "ads.example");
    assert_eq!(
        (action, id.as_str()),
        (rules::Action::Allow, "overlay-0a1b2c3d")
    );
    assert!(version.ends_with("+ overlay v1"), "{version}");
    assert!(store.audit().unwrap().iter().any(|e| matches!(
        e.event,
        crate::store::AuditEvent::OverlayInstalled { version: 1 }
    )));
    // The group's unnamed rules keep their ids: the default still reads `default`.
    assert_eq!(decide(&store, "other.example").1, "default");

    let refused = |bundle: Bundle| {
        apply_overlay(
            &store,
            &enrolment,
            &Config::default(),
            &bundle.sign(&policy_key()),
            now(),
        )
        .unwrap_err()
        .to_string()
    };
    assert!(refused(overlay(1, "")).contains("version"), "anti-rollback");
    assert!(refused(bundle(9)).contains("group"), "a group bundle");
    assert!(
        refused(Bundle {
            group: "card:c2".into(),
            ..overlay(2, "")
        })
        .contains("group"),
        "another card's"
    );
    assert!(refused(overlay(2, "default allow\n")).contains("only rules"));
    assert!(refused(overlay(2, "allow any\n")).contains("not named"));
    assert!(refused(overlay(2, "web: allow any\n")).contains("not named"));
    assert!(
        refused(overlay(2, "overlay-1: allow any host @nosuchlist\n")).contains("no list named"),
        "a list the card does not have"
    );
    assert!(
        refused(Bundle {
            list_files: vec![("a.txt".into(), "x\n".into())],
            ..overlay(2, "")
        })
        .contains("nothing but its rules")
    );
    assert_eq!(store.overlay().unwrap().unwrap().version, 1);

    // An empty overlay (every approval ran out) takes the rule away.
    apply_overlay(
        &store,
        &enrolment,
        &Config::default(),
        &overlay(2, "").sign(&policy_key()),
        now(),
    )
    .unwrap();
    assert_eq!(decide(&store, "ads.example").1, "no-ads");

    store
        .login(PIN)
        .unwrap()
        .set_managed(Some(&enrolment.emit()))
        .unwrap();
    assert_eq!(
        store.overlay().unwrap(),
        None,
        "a new enrolment starts without it"
    );
}

/// A card with `[vpn.corp]` in its file (the tests' `CORP`).
fn config_with_corp() -> Config {
    <Config as crate::config::ConfigFile>::parse("c.toml", crate::vpn::tests::CORP).unwrap()
}

/// A VPN `name` the server might push (a `lab` network beside the file's `corp`).
fn pushed(name: &str) -> proto::policy::ManagedVpn {
    proto::policy::ManagedVpn {
        name: name.into(),
        peer_public_key: "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=".into(),
        endpoint: "198.51.100.8:51820".parse().unwrap(),
        address: "10.30.255.2".parse().unwrap(),
        networks: vec!["10.30.0.0/16".into()],
        names: vec!["*.lab.example".into()],
        resolver: Some("10.30.0.53:53".parse().unwrap()),
        idle_lock_secs: 600,
        keepalive_secs: 0,
    }
}

fn overlay_with_vpns(version: u64, vpns: &[proto::policy::ManagedVpn]) -> Bundle {
    let section = proto::policy::ManagedVpns {
        vpns: vpns.to_vec(),
    };
    Bundle {
        vpns: Some(serde_json::to_string(&section).unwrap()),
        ..overlay(version, "")
    }
}

/// Issue 15, the attacker's side first: a push is installed only when signed by the pinned
/// key for this card, and only when every VPN in it passes the file's checks and takes no
/// name of the file's; anything else refuses the whole overlay and keeps the last good one.
#[test]
fn pushed_vpns_are_refused_unless_signed_for_this_card_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let config = config_with_corp();
    let apply = |bytes: &[u8]| apply_overlay(&store, &enrolment, &config, bytes, now());
    apply(&overlay_with_vpns(1, &[pushed("lab")]).sign(&policy_key())).unwrap();
    let installed = store.overlay().unwrap().unwrap();
    assert_eq!((installed.version, installed.vpns.len()), (1, 1));

    let refused = |bytes: Vec<u8>| apply(&bytes).unwrap_err();
    let next = |vpns: &[proto::policy::ManagedVpn]| overlay_with_vpns(2, vpns);
    // Not the policy key, or changed after signing.
    assert!(matches!(
        refused(next(&[pushed("evil")]).sign(&SigningKey::from_bytes(&[9; 32]))),
        ManagedError::Bundle(BundleError::WrongKey { .. })
    ));
    let tampered = String::from_utf8(next(&[pushed("lab")]).sign(&policy_key()))
        .unwrap()
        .replace("198.51.100.8", "198.51.100.9");
    assert!(matches!(
        refused(tampered.into_bytes()),
        ManagedError::Bundle(BundleError::BadSignature)
    ));
    // Another card's overlay, or a group's bundle carrying VPNs.
    assert!(matches!(
        refused(
            Bundle {
                group: "card:c2".into(),
                ..next(&[pushed("lab")])
            }
            .sign(&policy_key())
        ),
        ManagedError::Bundle(BundleError::WrongGroup { .. })
    ));
    let group_with_vpns = Bundle {
        vpns: next(&[]).vpns,
        ..bundle(3)
    };
    assert!(matches!(
        apply_group(&store, &enrolment, &group_with_vpns),
        Err(ManagedError::VpnsInGroupBundle)
    ));
    // Signed, but not a VPN this card may run.
    let message =
        |vpns: &[proto::policy::ManagedVpn]| refused(next(vpns).sign(&policy_key())).to_string();
    let with = |change: fn(&mut proto::policy::ManagedVpn)| {
        let mut vpn = pushed("lab");
        change(&mut vpn);
        message(&[vpn])
    };
    let clash = message(&[pushed("corp")]);
    assert!(clash.contains("`corp` is one of the card's own"), "{clash}");
    assert!(message(&[pushed("lab"), pushed("lab")]).contains("pushed twice"));
    let many: Vec<_> = (0..=proto::policy::MAX_MANAGED_VPNS)
        .map(|i| pushed(&format!("lab{i}")))
        .collect();
    assert!(message(&many).contains("more than"));
    assert!(with(|v| v.name = "Lab_1".into()).contains("a VPN's name"));
    assert!(with(|v| v.name = "cw-eth0; reboot".into()).contains("a VPN's name"));
    assert!(with(|v| v.peer_public_key = "short".into()).contains("peer_public_key"));
    assert!(with(|v| v.networks = vec!["10.30.0.0/33".into()]).contains("networks"));
    assert!(with(|v| v.networks = vec!["::/0".into()]).contains("IPv4"));
    assert!(with(|v| v.networks = Vec::new()).contains("networks is empty"));
    assert!(with(|v| v.resolver = Some("8.8.8.8:53".parse().unwrap())).contains("resolver"));
    assert!(with(|v| v.endpoint = "10.30.0.1:51820".parse().unwrap()).contains("endpoint"));
    assert!(with(|v| v.idle_lock_secs = 0).contains("idle_lock_secs"));
    // The card's own addresses can never be taken into a tunnel.
    assert!(
        with(|v| v.networks = vec!["10.30.0.0/16".into(), "172.31.77.0/24".into()])
            .contains("the card's own address")
    );
    // Not the contract's shape: a field more (a private key), or garbage.
    let with_key = Bundle {
        vpns: Some(
            serde_json::to_string(&proto::policy::ManagedVpns {
                vpns: vec![pushed("lab")],
            })
            .unwrap()
            .replace(
                "\"keepalive_secs\"",
                "\"private_key\":\"AAAA\",\"keepalive_secs\"",
            ),
        ),
        ..next(&[])
    };
    assert!(matches!(
        refused(with_key.sign(&policy_key())),
        ManagedError::Vpns(vpns::PushedVpnError::Unreadable(_))
    ));
    let garbage = Bundle {
        vpns: Some("{\"vpns\": [".into()),
        ..next(&[])
    };
    assert!(
        refused(garbage.sign(&policy_key()))
            .to_string()
            .contains("do not read")
    );

    // Nothing moved: the last good overlay and its VPN stay.
    assert_eq!(store.overlay().unwrap().unwrap(), installed);
    // A push without the VPN takes it away.
    apply(&next(&[]).sign(&policy_key())).unwrap();
    assert!(store.overlay().unwrap().unwrap().vpns.is_empty());
}

fn apply_group(
    store: &Store,
    enrolment: &Enrolment,
    bundle: &Bundle,
) -> Result<Enrolment, ManagedError> {
    apply(store, enrolment, &bundle.sign(&policy_key()), now())
}

/// A VPN the owner added on the card page is the card's own as much as the file's: an overlay
/// pushing its name, or a network overlapping its networks, is refused whole.
#[test]
fn a_push_never_takes_a_page_vpn() {
    let dir = tempfile::tempdir().unwrap();
    let (store, enrolment) = enrolled_card(dir.path(), 0);
    let config = config_with_corp();
    let mut home = pushed("home");
    home.networks = vec!["10.40.0.0/16".into()];
    home.names = Vec::new();
    home.resolver = None;
    store.login(PIN).unwrap().add_page_vpn(home).unwrap();
    let message = |vpns: &[proto::policy::ManagedVpn]| {
        apply_overlay(
            &store,
            &enrolment,
            &config,
            &overlay_with_vpns(1, vpns).sign(&policy_key()),
            now(),
        )
        .unwrap_err()
        .to_string()
    };
    let mut named = pushed("home");
    named.networks = vec!["10.50.0.0/16".into()];
    named.names = Vec::new();
    named.resolver = None;
    let clash = message(&[named]);
    assert!(
        clash.contains("`home` was added on the card page"),
        "{clash}"
    );
    let mut overlapping = pushed("lab");
    overlapping.networks = vec!["10.0.0.0/8".into()];
    let overlap = message(&[overlapping]);
    assert!(overlap.contains("overlapping those of `home`"), "{overlap}");
    assert!(store.overlay().unwrap().is_none());
    // One that fits is installed beside it.
    apply_overlay(
        &store,
        &enrolment,
        &config,
        &overlay_with_vpns(1, &[pushed("lab")]).sign(&policy_key()),
        now(),
    )
    .unwrap();
}
