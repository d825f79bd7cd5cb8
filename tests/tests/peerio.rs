//! Peer I/O through the real stack: the appliance's Peer I/O server (`appliance peer-io`,
//! PC/SC) and the card's client (`cardfw` on vpcd), each bridged to a TAP device in its own
//! namespace. Ping and HTTP cross between the namespaces only as APDUs of class 12.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::pcsc;
use lab::origin;
use lab::topology::Lab;

const HOST_ADDRESS: &str = "10.77.0.1/30";
const CARD_ADDRESS: &str = "10.77.0.2";

#[test]
fn ping_and_http_cross_the_apdu_link() {
    if !pcsc::require_pcsc()
        || !e2e::require_program("curl", "curl")
        || !e2e::require_program("busybox", "busybox")
    {
        return;
    }
    let mut lab = Lab::new("peerio").expect("lab");
    let card_ns = lab.namespace("card").expect("card namespace");
    let host_ns = lab.namespace("host").expect("host namespace");
    let reader = pcsc::start_with(
        &mut lab,
        &card_ns,
        "deny any\n",
        // The status endpoint answers the appliance's card-link address only: here, the host
        // end of the Peer I/O link.
        "0.0.0.0\"\nappliance_address = \"10.77.0.1",
        "peer_io_tap = \"pio0\"\n",
    )
    .expect("pcscd and the card");
    card_ns
        .run_ok(
            "ip",
            &["addr", "add", &format!("{CARD_ADDRESS}/30"), "dev", "pio0"],
        )
        .expect("card TAP address");

    let appliance = lab::sibling_binaries().join("appliance");
    let server = lab
        .spawn(
            &host_ns,
            "env",
            &[
                &format!("PCSCLITE_CSOCK_NAME={}", reader.socket().display()),
                &appliance.to_string_lossy(),
                "peer-io",
                "--reader",
                pcsc::READER,
                "--tap",
                "pio1",
            ],
        )
        .expect("appliance peer-io");
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_ns.run_ok("ip", &["link", "show", "pio1"]).is_err() {
        assert!(Instant::now() < deadline, "no TAP: {}", lab.log_of(server));
        std::thread::sleep(Duration::from_millis(100));
    }
    host_ns
        .run_ok("ip", &["addr", "add", HOST_ADDRESS, "dev", "pio1"])
        .expect("host TAP address");

    let ping = host_ns
        .run("busybox", &["ping", "-c", "3", "-W", "5", CARD_ADDRESS])
        .expect("ping runs");
    assert!(
        ping.status.success(),
        "ping over Peer I/O: {}{}\n{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr),
        lab.log_of(server),
        lab.log_of(reader.card)
    );

    let summary = String::from_utf8_lossy(&ping.stdout);
    if let Some(rtt) = summary.lines().find(|line| line.contains("round-trip")) {
        println!("peer I/O ping: {rtt}");
    }

    // The card's own status endpoint, then a download from a server on the card's side.
    let status = host_ns
        .run_ok(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                &format!("http://{CARD_ADDRESS}:8081/status"),
            ],
        )
        .expect("the card's status over Peer I/O");
    assert!(status.contains("rules_version"), "{status}");

    let origin_addr: SocketAddr = format!("{CARD_ADDRESS}:8000").parse().unwrap();
    let _origin = origin::http_origin(&card_ns, origin_addr).expect("origin on the card side");
    let size = 1_000_000;
    let speed = host_ns
        .run_ok(
            "curl",
            &[
                "-sS",
                "--max-time",
                "120",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{speed_download}",
                &format!("http://{origin_addr}/bytes/{size}"),
            ],
        )
        .expect("a download over Peer I/O");
    let mut fields = speed.split_whitespace();
    let downloaded: u64 = fields.next().unwrap().parse().unwrap();
    let bytes_per_second: f64 = fields.next().unwrap().parse().unwrap();
    assert_eq!(downloaded, size);
    println!(
        "peer I/O throughput: {size} bytes at {:.1} KiB/s",
        bytes_per_second / 1024.0
    );
}

/// The whole system with the card linked by Peer I/O instead of EEM: the appliance daemon
/// (`card.peer_io_reader`) makes the TAP card link and routes over it exactly as over EEM; the
/// protected computer's web traffic goes through the card, decided by its rules; with the card
/// gone, nothing passes.
#[test]
fn the_appliance_routes_through_a_peer_io_card_and_fails_closed_without_it() {
    use lab::{Options, SystemLab};
    if !pcsc::require_pcsc()
        || !e2e::require_program("curl", "curl")
        || !e2e::require_program("dnsmasq", "dnsmasq-base")
        || !e2e::require_program("busybox", "busybox")
    {
        return;
    }
    let options = Options {
        bin_dir: lab::sibling_binaries(),
        tag: "piosys".into(),
        rules: lab::DEMO_RULES.into(),
        peer_io: true,
    };
    let mut lab =
        SystemLab::start(&options).unwrap_or_else(|e| panic!("the lab did not start: {e:#}"));
    assert_eq!(
        e2e::pc_curl(&lab, &["http://allowed.test/"]),
        (0, "hello from origin\n".into()),
        "{}",
        lab.lab.log_of(lab.appliance_pid.unwrap())
    );
    let (_, page) = e2e::pc_curl(
        &lab,
        &[
            "--resolve",
            "blocked.test:80:203.0.113.11",
            "http://blocked.test/",
        ],
    );
    assert!(page.contains("no-blocked"), "the card's block page: {page}");

    lab.stop_card(true).unwrap();
    lab.wait_for("the card to count as absent", Duration::from_secs(5), |l| {
        !l.card_present()
    })
    .unwrap();
    e2e::assert_nothing_passes(&lab);
}
