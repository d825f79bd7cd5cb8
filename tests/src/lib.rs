//! cardwall end-to-end tests: real network namespaces, real servers, real clients.
//!
//! Topologies come from [`lab::topology`] (the one namespace library, shared with
//! `./x lab`); [`origin`] provides the "outside world": HTTP and HTTPS origins, a DNS
//! server and a TCP echo server, each running inside a namespace, plus a test CA.
//!
//! These tests need root (namespaces, veth links) and some programs (`ip` from iproute2,
//! `curl`). Every test starts with [`require_root`] (and [`require_program`] for what it runs):
//!
//! - under `CI=true` a missing requirement **fails** the test loudly: CI must never pass by
//!   skipping;
//! - elsewhere the test prints `skipping: <reason>` and passes, so `cargo test` works for a
//!   developer without root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use lab::SystemLab;
use lab::topology::Lab;

pub use lab::topology;

pub use lab::origin;
pub mod browser;
pub mod card_page;
pub mod corp;
pub mod packets;
pub mod pcsc;

/// Whether this run is CI (`CI=true`, or `CI=1`), where missing requirements are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Checks that the tests can build topologies: running as root, and `ip netns` actually
/// creating a namespace (checked once per test binary). Returns true if so. Otherwise: under CI
/// it panics with the reason; elsewhere it prints `skipping: <reason>` and returns false.
pub fn require_root() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("end-to-end tests need root (network namespaces, veth links)".to_owned());
        }
        probe_namespaces()
    });
    requirement(probe)
}

/// Checks that `program` can be run (it is on PATH and answers `--version`). Same policy as
/// [`require_root`]: panics under CI, prints `skipping: <reason>` and returns false elsewhere.
pub fn require_program(program: &str, apt_package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let result = if found {
        Ok(())
    } else {
        Err(format!(
            "`{program}` is not installed (Debian package `{apt_package}`)"
        ))
    };
    requirement(&result)
}

fn requirement(result: &Result<(), String>) -> bool {
    match result {
        Ok(()) => true,
        Err(reason) if in_ci() => panic!("CI=true and a test requirement is missing: {reason}"),
        Err(reason) => {
            eprintln!("skipping: {reason}");
            false
        }
    }
}

/// Creates (and removes) one namespace: proves `ip` exists and the kernel lets us.
fn probe_namespaces() -> Result<(), String> {
    let mut lab = Lab::new("probe").map_err(|e| e.to_string())?;
    lab.namespace("probe")
        .map(drop)
        .map_err(|e| format!("`ip netns` does not work here: {e}"))
}

/// Waits until a `cardfw` just started in `card` is ready: its status endpoint accepts from
/// `client`, and its interception ruleset is in place. Panics with `log()` otherwise.
pub fn wait_for_card(
    client: &lab::topology::Netns,
    card: &lab::topology::Netns,
    timeout: std::time::Duration,
    log: impl Fn() -> String,
) {
    let status = std::net::SocketAddr::from((lab::CARD_INSIDE, 8081));
    if client.wait_for_tcp(status, timeout).is_err() {
        panic!("cardfw did not come up:\n{}", log());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !card
        .run("nft", &["list", "table", "inet", "cardfw"])
        .is_ok_and(|out| out.status.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no interception ruleset:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `request` as raw bytes from inside `netns` to `to` and returns everything answered
/// until the peer closes (or `read_timeout` passes without a byte).
pub fn raw_exchange(
    netns: &lab::topology::Netns,
    to: std::net::SocketAddr,
    request: &[u8],
    read_timeout: std::time::Duration,
) -> String {
    use std::io::{Read, Write};
    let request = request.to_vec();
    netns
        .enter(move || {
            let mut stream =
                std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(3))
                    .unwrap();
            stream.set_read_timeout(Some(read_timeout)).unwrap();
            stream.write_all(&request).unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        })
        .join()
        .unwrap()
}

/// Starts the whole system (`SystemLab`, what `./x lab` runs) with `rules` on the card, after
/// checking what it needs (see [`require_program`]); `None` means skip.
pub fn start_system_lab(tag: &str, rules: &str) -> Option<SystemLab> {
    if !require_root()
        || !require_program("curl", "curl")
        || !require_program("nft", "nftables")
        || !require_program("dnsmasq", "dnsmasq-base")
        || !require_program("busybox", "busybox")
        || !require_program("dig", "dnsutils")
    {
        return None;
    }
    let options = lab::Options {
        bin_dir: lab::sibling_binaries(),
        tag: tag.into(),
        rules: rules.into(),
        peer_io: false,
    };
    Some(SystemLab::start(&options).unwrap_or_else(|e| panic!("the lab did not start: {e:#}")))
}

/// curl from the protected computer of a [`SystemLab`] (3 s at most): (exit code, stdout).
pub fn pc_curl(lab: &SystemLab, args: &[&str]) -> (i32, String) {
    let mut all = vec!["-sS", "--max-time", "3"];
    all.extend_from_slice(args);
    let out = lab.pc.run("curl", &all).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Asserts that the protected computer gets nothing out: not by name, not straight to the
/// origin's address.
pub fn assert_nothing_passes(lab: &SystemLab) {
    assert_ne!(
        pc_curl(lab, &["http://allowed.test/"]).0,
        0,
        "nothing passes without the card"
    );
    let direct = lab
        .pc
        .run("curl", &["-sS", "--max-time", "2", "http://203.0.113.10/"])
        .unwrap();
    assert!(!direct.status.success(), "not even straight to the address");
}

/// A binary of this workspace built beside the running test (`target/<profile>/<name>`);
/// `./x test` builds every binary before the tests. Panics with the command to run if missing.
pub fn built_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`; `./x test` does)",
        binary.display()
    );
    binary
}

/// Writes `rules` (as `rules.txt`) and a `cardfw.toml` into `dir` for a card in
/// [`CardNamespaces`]: `top` (top-level keys), the card's addresses and link, the world's
/// resolver, then `sections` (more TOML tables). Returns the configuration's path.
pub fn write_card_config(dir: &Path, rules: &str, top: &str, sections: &str) -> PathBuf {
    let rules_file = dir.join("rules.txt");
    std::fs::write(&rules_file, rules).expect("writing the rules");
    let config = dir.join("cardfw.toml");
    let text = format!(
        "rules = \"{}\"\n{top}\ninside_address = \"{}\"\noutside_address = \"10.99.0.2\"\n\
         link = \"usb0\"\n[dns]\nupstream = \"10.99.0.1:53\"\ntimeout_ms = 1000\n{sections}\n",
        rules_file.display(),
        lab::CARD_INSIDE,
    );
    std::fs::write(&config, text).expect("writing cardfw.toml");
    config
}

/// The three namespaces of a card test: a client whose default route is the card (link
/// `eem0` 172.31.77.1 ↔ `usb0` 172.31.77.2, like the appliance's card link), the card with
/// forwarding off, and the outside world (`o0` 10.99.0.1 ↔ `out0` 10.99.0.2) holding
/// `world_addresses` too, routed from the card as 203.0.113.0/24.
#[derive(Debug)]
pub struct CardNamespaces {
    pub client: topology::Netns,
    pub card: topology::Netns,
    pub world: topology::Netns,
    pub lab: Lab,
}

/// Builds [`CardNamespaces`]; `None` (with the reason printed) when the tests cannot run here.
pub fn card_namespaces(tag: &str, world_addresses: &[&str]) -> Option<CardNamespaces> {
    if !require_root() || !require_program("curl", "curl") || !require_program("nft", "nftables") {
        return None;
    }
    let mut lab = Lab::new(tag).expect("lab");
    let client = lab.namespace("client").expect("client ns");
    let card = lab.namespace("card").expect("card ns");
    let world = lab.namespace("origin").expect("origin ns");
    lab.link(
        &client,
        "eem0",
        &["172.31.77.1/29"],
        &card,
        "usb0",
        &["172.31.77.2/29"],
    )
    .expect("card link");
    let mut outside = vec!["10.99.0.1/24"];
    outside.extend_from_slice(world_addresses);
    lab.link(&card, "out0", &["10.99.0.2/24"], &world, "o0", &outside)
        .expect("outside link");
    client
        .route("default via 172.31.77.2")
        .expect("client route");
    card.route("203.0.113.0/24 via 10.99.0.1")
        .expect("card route");
    card.sysctl("net.ipv4.ip_forward", "0")
        .expect("no forwarding on the card");
    Some(CardNamespaces {
        client,
        card,
        world,
        lab,
    })
}
