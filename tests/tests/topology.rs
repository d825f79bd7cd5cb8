//! The namespace topology library and the origin servers, proven with real clients.
//!
//! Every test builds its own lab (names never clash, so they run in parallel) and starts with
//! `e2e::require_root()`: without root they skip, except under CI=true where they fail.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use e2e::origin::{self, DnsTransport};
use e2e::topology::{Lab, Netns};
use hickory_proto::op::ResponseCode;

const CLIENT_IP: &str = "10.1.0.1";
const SERVER_IP: &str = "10.1.0.2";

/// A lab with two namespaces, `client` (10.1.0.1) and `server` (10.1.0.2), on one veth link.
fn client_and_server(tag: &str) -> Result<(Lab, Netns, Netns)> {
    let mut lab = Lab::new(tag)?;
    let client = lab.namespace("client")?;
    let server = lab.namespace("server")?;
    lab.link(
        &client,
        "eth0",
        &[&format!("{CLIENT_IP}/24")],
        &server,
        "eth0",
        &[&format!("{SERVER_IP}/24")],
    )?;
    Ok((lab, client, server))
}

fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER_IP.parse().expect("valid address"), port)
}

/// Sends `payload` to an echo server from inside `ns`, closes the write side, returns the reply.
fn echo_exchange(ns: &Netns, addr: SocketAddr, payload: &'static [u8]) -> Result<Vec<u8>> {
    ns.enter(move || -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(payload)?;
        stream.shutdown(Shutdown::Write)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(reply)
    })
    .join()
    .map_err(|panic| anyhow!("client thread: {}", e2e::topology::panic_message(&*panic)))?
}

/// Runs curl in `ns`; a failure is an error with curl's stderr.
fn curl(ns: &Netns, args: &[&str]) -> Result<String> {
    let mut all = vec!["--silent", "--show-error", "--max-time", "10"];
    all.extend_from_slice(args);
    Ok(ns.run_ok("curl", &all)?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn netns_list() -> String {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    stdout(&output)
}

#[test]
fn veth_link_carries_tcp_between_namespaces() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, client, server) = client_and_server("echo")?;
    let echo = origin::tcp_echo(&server, server_addr(7))?;
    assert_eq!(echo.addr(), server_addr(7));

    let reply = echo_exchange(&client, echo.addr(), b"hello through a veth")?;
    assert_eq!(reply, b"hello through a veth");
    assert_eq!(echo.served(), 1);

    // Addresses landed where asked, and the namespaces see different worlds.
    let client_addrs = client.run_ok("ip", &["-brief", "addr", "show", "eth0"])?;
    assert!(client_addrs.contains("10.1.0.1/24"), "{client_addrs}");
    let server_addrs = server.run_ok("ip", &["-brief", "addr", "show", "eth0"])?;
    assert!(server_addrs.contains("10.1.0.2/24"), "{server_addrs}");
    Ok(())
}

#[test]
fn routes_and_sysctl_make_a_router_namespace() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let root_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
    let mut lab = Lab::new("router")?;
    let left = lab.namespace("left")?;
    let router = lab.namespace("router")?;
    let right = lab.namespace("right")?;
    lab.link(
        &left,
        "eth0",
        &["10.10.0.2/24"],
        &router,
        "left",
        &["10.10.0.1/24"],
    )?;
    lab.link(
        &router,
        "right",
        &["10.20.0.1/24"],
        &right,
        "eth0",
        &["10.20.0.2/24"],
    )?;
    left.route("default via 10.10.0.1")?;
    right.route("default via 10.20.0.1")?;

    let echo = origin::tcp_echo(&right, "10.20.0.2:9000".parse()?)?;
    // Without forwarding the router drops the packets.
    router.sysctl("net.ipv4.ip_forward", "0")?;
    assert!(echo_exchange(&left, echo.addr(), b"blocked").is_err());

    router.sysctl("net.ipv4.ip_forward", "1")?;
    let seen = router.run_ok("cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    assert_eq!(seen.trim(), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
        root_forwarding,
        "a namespace sysctl leaked into the root namespace"
    );
    assert_eq!(echo_exchange(&left, echo.addr(), b"routed")?, b"routed");

    // A failing command is an error naming the command and quoting ip's complaint.
    let error = left.route("10.99.0.0/24 via 10.77.0.1").unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("route add 10.99.0.0/24 via 10.77.0.1"),
        "{message}"
    );
    assert!(message.contains(left.name()), "{message}");

    // Interface names over the kernel's 15 bytes are refused before anything is created.
    let error = lab
        .link(&left, "a234567890123456", &[], &right, "b", &[])
        .unwrap_err();
    assert!(error.to_string().contains("1 to 15 bytes"), "{error}");
    Ok(())
}

#[test]
fn http_origin_answers_curl_in_another_namespace() -> Result<()> {
    if !e2e::require_root() || !e2e::require_program("curl", "curl") {
        return Ok(());
    }
    let (_lab, client, server) = client_and_server("http")?;
    let http = origin::http_origin(&server, server_addr(80))?;
    let base = format!("http://{SERVER_IP}");

    assert_eq!(curl(&client, &[&format!("{base}/")])?, origin::HELLO);

    let measure = "%{http_code} %{size_download} %{content_type}";
    let bytes = curl(
        &client,
        &[
            "-o",
            "/dev/null",
            "-w",
            measure,
            &format!("{base}/bytes/100000"),
        ],
    )?;
    assert_eq!(bytes, "200 100000 application/octet-stream");

    let headers = curl(
        &client,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{base}/chunked/10000"),
        ],
    )?
    .to_ascii_lowercase();
    assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
    assert!(!headers.contains("content-length"), "{headers}");
    let chunked = curl(&client, &[&format!("{base}/chunked/10000")])?;
    assert_eq!(chunked, "x".repeat(10000));

    let video = curl(
        &client,
        &["-o", "/dev/null", "-w", measure, &format!("{base}/video")],
    )?;
    assert!(
        video.starts_with("200 ") && video.ends_with(" video/mp4"),
        "{video}"
    );

    let echo = curl(
        &client,
        &["-H", "Host: example.test", &format!("{base}/echo?x=1")],
    )?;
    assert_eq!(
        echo,
        "method GET\npath /echo?x=1\nhost example.test\nbody 0 bytes\n"
    );

    // 4 KiB at 1 KiB per 50 ms: three pauses at least.
    let started = Instant::now();
    let slow = curl(
        &client,
        &[
            "-o",
            "/dev/null",
            "-w",
            measure,
            &format!("{base}/slow/4096"),
        ],
    )?;
    assert_eq!(slow, "200 4096 application/octet-stream");
    assert!(
        started.elapsed() >= 3 * origin::SLOW_INTERVAL,
        "{:?}",
        started.elapsed()
    );

    let missing = curl(
        &client,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/nothing"),
        ],
    )?;
    assert_eq!(missing, "404");

    // Keep-alive: two URLs in one curl run share the connection.
    let output = client.run(
        "curl",
        &[
            "-sS",
            "-v",
            "-o",
            "/dev/null",
            &format!("{base}/"),
            &format!("{base}/"),
        ],
    )?;
    let verbose = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{verbose}");
    assert!(
        verbose.contains("Re-using existing"),
        "no connection reuse:\n{verbose}"
    );

    // Upgrade, then raw bytes echoed on the upgraded connection.
    let addr = http.addr();
    let upgraded = client
        .enter(move || -> Result<(String, Vec<u8>)> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(
                b"GET /ws HTTP/1.1\r\nHost: origin.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            )?;
            let mut head = Vec::new();
            let mut byte = [0];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte)?;
                head.push(byte[0]);
            }
            stream.write_all(b"raw bytes after the upgrade")?;
            let mut echoed = vec![0; b"raw bytes after the upgrade".len()];
            stream.read_exact(&mut echoed)?;
            Ok((String::from_utf8_lossy(&head).into_owned(), echoed))
        })
        .join()
        .map_err(|_| anyhow!("websocket client panicked"))??;
    assert!(upgraded.0.starts_with("HTTP/1.1 101"), "{}", upgraded.0);
    assert_eq!(upgraded.1, b"raw bytes after the upgrade");
    let refused = curl(
        &client,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/ws"),
        ],
    )?;
    assert_eq!(refused, "426");

    // 1 + 1 + 2 (headers, body) + 1 + 1 + 1 + 1 + 2 (keep-alive) + 1 (ws) + 1 (refused ws)
    assert_eq!(http.served(), 12);
    Ok(())
}

#[test]
fn https_origin_is_verified_by_curl_with_the_test_ca() -> Result<()> {
    if !e2e::require_root() || !e2e::require_program("curl", "curl") {
        return Ok(());
    }
    let (lab, client, server) = client_and_server("https")?;
    let ca = origin::test_ca();
    let ca_file: PathBuf = lab.dir().join("ca.pem");
    ca.write_ca_pem(&ca_file)?;
    let ca_file = ca_file.to_str().context("temp dir path is not UTF-8")?;
    let https = origin::https_origin(&server, server_addr(443), &ca, &["origin.test"])?;
    let resolve = format!("origin.test:443:{SERVER_IP}");

    let hello = curl(
        &client,
        &[
            "--cacert",
            ca_file,
            "--resolve",
            &resolve,
            "https://origin.test/",
        ],
    )?;
    assert_eq!(hello, origin::HELLO);
    let echo = curl(
        &client,
        &[
            "--cacert",
            ca_file,
            "--resolve",
            &resolve,
            "https://origin.test/echo",
        ],
    )?;
    assert!(echo.contains("host origin.test"), "{echo}");

    // Verification is real: without the CA, or for another name, curl refuses (exit 60).
    let untrusted = client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "https://origin.test/",
        ],
    )?;
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    let other = format!("other.test:443:{SERVER_IP}");
    let wrong_name = client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca_file,
            "--resolve",
            &other,
            "https://other.test/",
        ],
    )?;
    assert_eq!(wrong_name.status.code(), Some(60), "{wrong_name:?}");

    assert_eq!(https.served(), 2);
    Ok(())
}

#[test]
fn dns_server_answers_over_udp_and_tcp() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, client, server) = client_and_server("dns")?;
    let records = HashMap::from([("origin.test".to_owned(), SERVER_IP.parse()?)]);
    let dns = origin::dns_server(&server, server_addr(53), records)?;
    let addr = dns.addr();
    assert_eq!(addr, server_addr(53));

    let answers = client
        .enter(move || -> Result<Vec<origin::DnsAnswer>> {
            Ok(vec![
                origin::query_a(addr, "origin.test", DnsTransport::Udp)?,
                origin::query_a(addr, "ORIGIN.Test.", DnsTransport::Udp)?,
                origin::query_a(addr, "missing.test", DnsTransport::Udp)?,
                origin::query_a(addr, "origin.test", DnsTransport::Tcp)?,
                origin::query_a(addr, "missing.test", DnsTransport::Tcp)?,
            ])
        })
        .join()
        .map_err(|_| anyhow!("DNS client panicked"))??;
    let found = origin::DnsAnswer {
        code: ResponseCode::NoError,
        addresses: vec![SERVER_IP.parse()?],
    };
    let missing = origin::DnsAnswer {
        code: ResponseCode::NXDomain,
        addresses: vec![],
    };
    assert_eq!(
        answers,
        vec![
            found.clone(),
            found.clone(),
            missing.clone(),
            found,
            missing
        ]
    );
    assert_eq!(dns.served(), 5);

    // dig is optional (package dnsutils): when present, it must agree.
    if Command::new("dig").arg("-v").output().is_ok() {
        let short = client.run_ok(
            "dig",
            &[
                "+short",
                "+time=2",
                "+tries=1",
                "@10.1.0.2",
                "origin.test",
                "A",
            ],
        )?;
        assert_eq!(short.trim(), SERVER_IP);
        let nx = client.run_ok(
            "dig",
            &["+time=2", "+tries=1", "@10.1.0.2", "missing.test", "A"],
        )?;
        assert!(nx.contains("NXDOMAIN"), "{nx}");
    }
    Ok(())
}

#[test]
fn spawned_processes_log_and_stop_with_the_lab() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (names, pid, dir) = {
        let (mut lab, client, server) = client_and_server("spawn")?;
        let pid = lab.spawn(
            &client,
            "sh",
            &[
                "-c",
                "echo \"addresses: $(ip -brief addr show eth0)\"; exec sleep 300",
            ],
        )?;
        // The address only appears in the output, not in the command line that heads the log.
        wait_for_log(&lab, pid, "10.1.0.1/24")?;
        let log = lab.log_of(pid);
        assert!(
            log.contains("sleep 300"),
            "the log names the command: {log}"
        );

        // wait_for_tcp sees a server once it listens.
        let echo = origin::tcp_echo(&server, server_addr(7))?;
        client.wait_for_tcp(echo.addr(), Duration::from_secs(2))?;

        // stop() ends one process on demand; its log stays.
        let short = lab.spawn(&server, "sleep", &["300"])?;
        let status = lab.stop(short)?;
        assert!(!status.success());
        assert!(lab.log_path(short).is_some_and(|p| p.exists()));

        let names = [client.name().to_owned(), server.name().to_owned()];
        (names, pid, lab.dir().to_owned())
    };
    let list = netns_list();
    for name in &names {
        assert!(
            !list.contains(name.as_str()),
            "{name} still listed:\n{list}"
        );
    }
    assert!(
        !process_alive(pid),
        "spawned process {pid} survived the lab"
    );
    assert!(!dir.exists(), "lab directory {} not removed", dir.display());
    Ok(())
}

#[test]
fn a_panicking_test_still_removes_its_lab() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let mut seen: Option<(Vec<String>, u32, PathBuf)> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let (mut lab, client, server) = client_and_server("panic").expect("building the lab");
        let pid = lab
            .spawn(&server, "sleep", &["300"])
            .expect("spawning sleep");
        let _echo = origin::tcp_echo(&server, server_addr(7)).expect("starting echo");
        let names = vec![client.name().to_owned(), server.name().to_owned()];
        assert!(netns_list().contains(&names[0]));
        seen = Some((names, pid, lab.dir().to_owned()));
        panic!("this test body fails on purpose, to prove the lab is removed anyway");
    }));
    assert!(outcome.is_err(), "the body was meant to panic");
    let (names, pid, dir) = seen.context("the body did not get far enough")?;
    let list = netns_list();
    for name in &names {
        assert!(
            !list.contains(name.as_str()),
            "{name} still listed:\n{list}"
        );
        assert!(!PathBuf::from("/run/netns").join(name).exists());
    }
    assert!(
        !process_alive(pid),
        "spawned process {pid} survived the panic"
    );
    // After a panic the logs are kept for the post-mortem; this test cleans them itself.
    ensure!(dir.exists(), "logs of a panicked lab should be kept");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn wait_for_log(lab: &Lab, pid: u32, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if lab.log_of(pid).contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!("{needle:?} never appeared in {}", lab.log_of(pid)))
}

fn process_alive(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, None).is_ok()
}
