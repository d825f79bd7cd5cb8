//! The whole system, as `appliance lab` builds it: a protected computer that gets its address
//! by DHCP, the appliance daemon, the card, and an outside world with its own DHCP/DNS server
//! and origin servers. What a user does from the protected computer must work through the
//! card; when the card or its link goes away nothing may pass; the outside reaches nothing
//! inside.

use std::time::{Duration, Instant};

use appliance::lab::{self, Options, SystemLab};

fn start(tag: &str) -> Option<SystemLab> {
    if !e2e::require_root()
        || !e2e::require_program("curl", "curl")
        || !e2e::require_program("nft", "nftables")
        || !e2e::require_program("dnsmasq", "dnsmasq-base")
        || !e2e::require_program("busybox", "busybox")
        || !e2e::require_program("dig", "dnsutils")
    {
        return None;
    }
    let options = Options {
        bin_dir: lab::sibling_binaries(),
        tag: tag.into(),
        rules: lab::DEMO_RULES.into(),
    };
    Some(SystemLab::start(&options).unwrap_or_else(|e| panic!("the lab did not start: {e:#}")))
}

/// curl from the protected computer: (exit code, stdout).
fn curl(lab: &SystemLab, args: &[&str]) -> (i32, String) {
    let mut all = vec!["-sS", "--max-time", "3"];
    all.extend_from_slice(args);
    let out = lab.pc.run("curl", &all).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn dig(lab: &SystemLab, name: &str) -> String {
    let out = lab.pc.run("dig", &["+time=2", "+tries=1", name]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn table_routes(lab: &SystemLab) -> String {
    lab.appliance
        .run_ok(
            "ip",
            &[
                "route",
                "show",
                "table",
                &appliance::daemon::CARD_TABLE.to_string(),
            ],
        )
        .unwrap_or_default()
}

#[test]
fn the_protected_computer_uses_the_net_through_the_card() {
    let Some(lab) = start("e2e") else { return };
    let address = lab.pc_address().expect("an address by DHCP");
    assert!(
        (100..=200).contains(&address.octets()[3]) && address.octets()[..3] == [192, 168, 77],
        "DHCP from the appliance's range: {address}"
    );
    assert_eq!(
        curl(&lab, &["http://allowed.test/"]),
        (0, "hello from origin\n".into())
    );
    // The card refuses to resolve the blocked name; a client that knows its address anyway
    // gets the block page.
    assert_eq!(
        curl(&lab, &["http://blocked.test/"]).0,
        6,
        "curl: could not resolve host"
    );
    let (_, page) = curl(
        &lab,
        &[
            "--resolve",
            "blocked.test:80:203.0.113.11",
            "http://blocked.test/",
        ],
    );
    assert!(page.contains("no-blocked"), "the card's block page: {page}");
    let ca = lab.ca_file.to_str().unwrap();
    assert_eq!(
        curl(&lab, &["--cacert", ca, "https://allowed.test/"]),
        (0, "hello from origin\n".into())
    );
    let blocked_tls = [
        "--cacert",
        ca,
        "--resolve",
        "blocked.test:443:203.0.113.11",
        "https://blocked.test/",
    ];
    assert_eq!(curl(&lab, &blocked_tls).0, 35, "TLS alert from the card");
    assert!(dig(&lab, "blocked.test").contains("NXDOMAIN"));
    assert!(dig(&lab, "allowed.test").contains("203.0.113.10"));

    // The appliance learns the card's decisions by probing its status: give it a few probes.
    lab.wait_for(
        "the card's blocks on the status page",
        std::time::Duration::from_secs(3),
        |l| l.api_status().is_some_and(|s| s.contains("blocked.test")),
    )
    .unwrap();
    let status = lab.api_status().unwrap();
    assert!(status.contains("\"present\":true"), "{status}");
    assert!(
        status.contains("rules.txt"),
        "the card's rules version is shown: {status}"
    );
    assert!(
        status.contains("blocked.test"),
        "recent blocks come from the card: {status}"
    );

    // The outside world tries to reach in: a route to the inside via the appliance, then
    // connections to the protected computer and the card. Nothing may arrive.
    let world = &lab.world;
    let wan = lab
        .appliance
        .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "wan0"])
        .unwrap();
    let wan_address = wan
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    world.sh(&format!("ip route replace 192.168.77.0/24 via {wan_address}; ip route replace 172.31.77.0/29 via {wan_address}")).unwrap();
    for target in [
        format!("{address}"),
        "172.31.77.2".into(),
        "172.31.77.3".into(),
    ] {
        let out = world
            .run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "2",
                    &format!("http://{target}:8081/status"),
                ],
            )
            .unwrap();
        assert!(!out.status.success(), "the outside reached {target}");
        let ping = world.run("ping", &["-c", "1", "-W", "1", &target]).unwrap();
        assert!(!ping.status.success(), "the outside pinged {target}");
    }
}

#[test]
fn nothing_passes_without_the_card_and_it_comes_back() {
    let Some(mut lab) = start("fail") else { return };
    assert_eq!(curl(&lab, &["http://allowed.test/"]).0, 0);
    assert!(
        !table_routes(&lab).is_empty(),
        "a route to the card while it is present"
    );

    // The card process dies (as a crash would): within a second the route is gone.
    lab.stop_card(true).unwrap();
    let took = lab
        .wait_for("the card route to go", Duration::from_secs(1), |l| {
            table_routes(l).is_empty()
        })
        .unwrap();
    eprintln!("card death noticed in {took:?}");
    assert!(
        !lab.card_present(),
        "the status page says the card is absent"
    );
    assert_ne!(
        curl(&lab, &["http://allowed.test/"]).0,
        0,
        "nothing passes without the card"
    );
    let direct = lab
        .pc
        .run("curl", &["-sS", "--max-time", "2", "http://203.0.113.10/"])
        .unwrap();
    assert!(!direct.status.success(), "not even straight to the address");

    lab.start_card().unwrap();
    let took = lab
        .wait_for("the card to be back", Duration::from_secs(2), |l| {
            l.card_present()
        })
        .unwrap();
    eprintln!("card return noticed in {took:?}");
    assert_eq!(
        curl(&lab, &["http://allowed.test/"]).0,
        0,
        "traffic resumes"
    );

    // The card link goes down (the card pulled): same.
    lab.card
        .run_ok("ip", &["link", "set", "usb0", "down"])
        .unwrap();
    lab.wait_for("the card route to go", Duration::from_secs(1), |l| {
        table_routes(l).is_empty()
    })
    .unwrap();
    assert_ne!(curl(&lab, &["http://allowed.test/"]).0, 0);
    lab.card
        .run_ok("ip", &["link", "set", "usb0", "up"])
        .unwrap();
    lab.card
        .sh("ip route replace default via 172.31.77.1")
        .unwrap();
    lab.wait_for("the card to be back", Duration::from_secs(3), |l| {
        l.card_present()
    })
    .unwrap();
    let started = Instant::now();
    while curl(&lab, &["http://allowed.test/"]).0 != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "traffic resumes within 2 s"
        );
    }

    // Both die: the kernel state left behind still lets nothing through.
    lab.stop_card(true).unwrap();
    lab.stop_appliance(true).unwrap();
    assert_ne!(curl(&lab, &["http://allowed.test/"]).0, 0);
    let direct = lab
        .pc
        .run("curl", &["-sS", "--max-time", "2", "http://203.0.113.10/"])
        .unwrap();
    assert!(!direct.status.success());
}
