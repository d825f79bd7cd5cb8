//! The whole system, as `./x lab` builds it: a protected computer that gets its address
//! by DHCP, the appliance daemon, the card, and an outside world with its own DHCP/DNS server
//! and origin servers. What a user does from the protected computer must work through the
//! card; when the card or its link goes away nothing may pass; the outside reaches nothing
//! inside.

use std::time::{Duration, Instant};

use e2e::pc_curl as curl;
use lab::SystemLab;
use lab::topology::Netns;

fn start(tag: &str) -> Option<SystemLab> {
    start_with(tag, lab::DEMO_RULES)
}

fn start_with(tag: &str, rules: &str) -> Option<SystemLab> {
    e2e::start_system_lab(tag, rules)
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
        status.contains("store v1"),
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

    // The card process dies (as a crash would): within a second the route is gone, and a
    // capture in the outside world sees none of the protected computer's tries.
    let capture = e2e::packets::start_capture(&lab.world, "w0").unwrap();
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
    e2e::assert_nothing_passes(&lab);
    let to_origin: Vec<String> = capture
        .stop()
        .iter()
        .filter(|f| f.ip_destination() == Some(lab::ALLOWED.into()))
        .map(|f| f.summary())
        .collect();
    assert!(
        to_origin.is_empty(),
        "reached the outside without the card:\n{}",
        to_origin.join("\n")
    );

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
    e2e::assert_nothing_passes(&lab);
}

/// The bypass suite: crafted frames of every kind from the protected computer, and a capture
/// in the outside world. None of them may arrive, and nothing may arrive from any source but
/// the appliance's outside address (behind which the card's own connections are masqueraded).
///
/// Every kind is sent twice over: as crafted, and with its source forged to a world address
/// (its own marker). The reflection kinds forge the source and aim at what answers (the card's
/// outside address, the appliance's inside address, a TTL that expires at the appliance):
/// nothing at all may be sent to a forged address (DESIGN.md, rule 6, "No reflection").
#[test]
fn crafted_packets_never_reach_the_outside() {
    use e2e::packets::{self, ALL_KINDS, FOREIGN_SOURCE, FOREIGN_SOURCE6, Target};
    // The card allows one web site and nothing else, no DNS either: whatever the crafted
    // frames carry, the card has no reason to send any of it on (with `allow dns` it would
    // rightly resolve a crafted query's name, and that name would travel out as a question).
    let Some(lab) = start_with(
        "bypass",
        "web: allow http host allowed.test\ndefault deny\n",
    ) else {
        return;
    };
    let pc_mac = packets::interface_mac_in(&lab.pc, "eth0").expect("pc MAC");
    let gateway_mac = packets::interface_mac_in(&lab.appliance, "lan0").expect("appliance MAC");
    let wan = lab
        .appliance
        .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "wan0"])
        .unwrap();
    let wan_address: std::net::Ipv4Addr = wan
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("outside address");
    let marker = packets::random_marker();
    let target = Target {
        src_ip: lab.pc_address().expect("pc address"),
        victim_ip: lab::ALLOWED,
        appliance_outside_ip: wan_address,
        card_outside_ip: lab::CARD_OUTSIDE,
        dhcp_server_ip: lab::WORLD,
        ..Target::new(pc_mac, gateway_mac, marker)
    };
    let forged_marker = packets::random_marker();
    let forged = target.forged_source(forged_marker);
    let frames: Vec<Vec<u8>> = ALL_KINDS
        .iter()
        .flat_map(|k| packets::craft(*k, &target))
        .chain(ALL_KINDS.iter().flat_map(|k| packets::craft(*k, &forged)))
        .collect();
    assert!(ALL_KINDS.len() >= 15);
    assert!(ALL_KINDS.contains(&packets::Kind::ReflectEchoViaCardOutside));

    let capture = packets::start_capture(&lab.world, "w0").expect("capture in the outside world");
    let sent = frames.clone();
    lab.pc
        .enter(move || packets::send_frames("eth0", &sent))
        .join()
        .unwrap()
        .expect("frames sent");
    // Twice, with a pause: a leak that needs a warm path (ARP, conntrack) shows the second time.
    std::thread::sleep(Duration::from_millis(300));
    lab.pc
        .enter(move || packets::send_frames("eth0", &frames))
        .join()
        .unwrap()
        .expect("frames sent");
    std::thread::sleep(Duration::from_millis(700));
    let seen = capture.stop();

    let mut leaked = packets::leaks(&seen, marker);
    leaked.extend(packets::leaks(&seen, forged_marker));
    assert!(
        leaked.is_empty(),
        "crafted frames reached the outside:\n{}",
        leaked.join("\n")
    );
    // An answer to a forged source carries no marker when it is a bare SYN-ACK or an ICMP
    // error that quotes little: any frame to a forged address is a reflection.
    let reflected: Vec<String> = seen
        .iter()
        .filter(|f| !f.outgoing)
        .filter(|f| {
            f.ip_destination() == Some(FOREIGN_SOURCE.into())
                || f.ip_destination() == Some(FOREIGN_SOURCE6.into())
        })
        .map(|f| f.summary())
        .collect();
    assert!(
        reflected.is_empty(),
        "answers to forged sources went out of the outside port:\n{}",
        reflected.join("\n")
    );
    let foreign: Vec<String> = seen
        .iter()
        .filter(|f| !f.outgoing && !f.is_arp())
        .filter(|f| match f.ip_source() {
            Some(std::net::IpAddr::V4(a)) => a != wan_address && !a.is_unspecified(),
            // The appliance's own link-local IPv6 chatter (router solicitation, MLD) is not
            // forwarded traffic; anything else IPv6 is.
            Some(std::net::IpAddr::V6(a)) => {
                (a.segments()[0] & 0xffc0) != 0xfe80 && !a.is_unspecified()
            }
            None => false,
        })
        .map(|f| f.summary())
        .collect();
    assert!(
        foreign.is_empty(),
        "frames from sources other than the appliance's outside address:\n{}",
        foreign.join("\n")
    );
    // The lab still works for real traffic afterwards: the suite did not just break the path.
    assert_eq!(
        curl(
            &lab,
            &[
                "--resolve",
                "allowed.test:80:203.0.113.10",
                "http://allowed.test/"
            ]
        )
        .0,
        0
    );
}

/// A real browser on the protected computer opens the appliance's status page: the card is
/// present and the traffic graphs render; pull the card and the page says so.
#[test]
fn the_status_page_in_a_browser_follows_the_card() {
    use e2e::browser::{Browser, require_browser};
    if !require_browser() {
        return;
    }
    let Some(mut lab) = start("web") else { return };
    // Some traffic for the graphs, and a block for the table.
    for _ in 0..3 {
        curl(&lab, &["http://allowed.test/"]);
    }
    curl(
        &lab,
        &[
            "--resolve",
            "blocked.test:80:203.0.113.11",
            "http://blocked.test/",
        ],
    );
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let url = format!("http://{}/", lab::APPLIANCE_INSIDE);

    let present_shot = shots.join("lab-status-present.png");
    let (present, blocked) = browse(&lab.pc, url.clone(), async move |browser| {
        let present = browser
            .wait_until(Duration::from_secs(10), async |b: &Browser| {
                Ok(b.text("#card-status").await?.contains("CARD PRESENT")
                    && b.count("#links svg polyline").await? > 0)
            })
            .await?;
        browser.screenshot(&present_shot).await?;
        let blocked = browser.text("#blocks").await?;
        browser.close().await?;
        Ok((present, blocked))
    });
    assert!(present, "the page shows the card present with graphs");
    assert!(
        blocked.contains("blocked.test"),
        "the card's blocks are listed: {blocked}"
    );

    lab.stop_card(true).unwrap();
    let absent_shot = shots.join("lab-status-absent.png");
    let absent = browse(&lab.pc, url, async move |browser| {
        let absent = browser
            .wait_until(Duration::from_secs(10), async |b: &Browser| {
                Ok(b.text("#card-status").await?.contains("CARD ABSENT"))
            })
            .await?;
        browser.screenshot(&absent_shot).await?;
        browser.close().await?;
        Ok(absent)
    });
    assert!(absent, "the page shows the card absent");
}

/// Opens `url` in headless chromium inside `ns` (the protected computer's namespace, where a
/// user's browser would be) and runs `visit` with it; `visit` closes the browser.
fn browse<T, F, Fut>(ns: &Netns, url: String, visit: F) -> T
where
    T: Send + 'static,
    F: FnOnce(e2e::browser::Browser) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    ns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move { visit(e2e::browser::Browser::open(&url).await?).await })
    })
    .join()
    .unwrap()
    .unwrap()
}

/// The card link is unplugged and a card plugged in again later: the appliance notices both
/// from link events, configures the new link, and traffic flows once the card answers. Also:
/// dnsmasq is restarted when it dies.
#[test]
fn a_card_plugged_in_later_is_configured_and_services_are_supervised() {
    let Some(mut lab) = start("plug") else { return };
    lab.stop_card(false).unwrap();
    lab.appliance
        .run_ok("ip", &["link", "del", "card0"])
        .unwrap();
    lab.wait_for("the card to count as absent", Duration::from_secs(1), |l| {
        !l.card_present() && table_routes(l).is_empty()
    })
    .unwrap();
    assert_ne!(curl(&lab, &["http://allowed.test/"]).0, 0);

    // Plug it back: a new link, as a USB card re-enumerating would give.
    let card_ns = lab.card.name().to_string();
    lab.appliance
        .run_ok(
            "ip",
            &[
                "link", "add", "card0", "type", "veth", "peer", "name", "usb0", "netns", &card_ns,
            ],
        )
        .unwrap();
    lab.card
        .sh("ip addr add 172.31.77.2/29 dev usb0 && ip addr add 172.31.77.3/29 dev usb0 && ip link set usb0 up && ip route replace default via 172.31.77.1")
        .unwrap();
    lab.appliance
        .run_ok("ip", &["link", "set", "card0", "up"])
        .unwrap();
    let configured = lab
        .wait_for(
            "the appliance to configure the new card link",
            Duration::from_secs(1),
            |l| {
                l.appliance
                    .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "card0"])
                    .is_ok_and(|a| a.contains("172.31.77.1/29"))
            },
        )
        .unwrap();
    eprintln!("new card link configured in {configured:?}");
    lab.start_card().unwrap();
    lab.wait_for("the card to be present", Duration::from_secs(3), |l| {
        l.card_present()
    })
    .unwrap();
    assert_eq!(curl(&lab, &["http://allowed.test/"]).0, 0);

    // dnsmasq dies: the appliance starts it again, and the next DHCP request is answered.
    let dnsmasq = pids_named(&lab.appliance, "dnsmasq");
    assert_eq!(dnsmasq.len(), 1, "one dnsmasq in the appliance");
    lab.appliance
        .run_ok("kill", &["-9", &dnsmasq[0].to_string()])
        .unwrap();
    lab.wait_for("dnsmasq to be restarted", Duration::from_secs(3), |l| {
        let now = pids_named(&l.appliance, "dnsmasq");
        now.len() == 1 && now[0] != dnsmasq[0]
    })
    .unwrap();
}

/// The pids of processes called `name` running in `ns`.
fn pids_named(ns: &Netns, name: &str) -> Vec<u32> {
    let pids = ns
        .run_ok("ip", &["netns", "pids", ns.name()])
        .unwrap_or_default();
    pids.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// An invalid configuration is an error naming the problem, and leaves the fail-closed base
/// ruleset in place.
#[test]
fn an_invalid_configuration_closes_everything() {
    if !e2e::require_root() || !e2e::require_program("nft", "nftables") {
        return;
    }
    let mut topology = lab::topology::Lab::new("badcfg").unwrap();
    let ns = topology.namespace("appl").unwrap();
    let config = topology.dir().join("appliance.toml");
    std::fs::write(&config, "[inside]\ninterfce = \"lan0\"\n").unwrap();
    let binary = lab::sibling_binaries().join("appliance");
    let out = ns
        .run(
            binary.to_str().unwrap(),
            &["run", "--config", config.to_str().unwrap()],
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `interfce`"), "{stderr}");
    let ruleset = ns
        .run_ok("nft", &["list", "table", "inet", "cardwall"])
        .unwrap();
    assert!(
        ruleset.contains("hook forward priority filter; policy drop;"),
        "{ruleset}"
    );
}
