//! The card firewall end to end, in network namespaces: a client whose default route is the
//! card, the card running the real `cardfw` binary with its TPROXY ruleset, and an origin
//! namespace with real HTTP, HTTPS, DNS and TCP echo servers. Clients are real too: curl, dig,
//! and raw sockets where a behaviour needs bytes no client tool sends.
//!
//! ```text
//!  client 172.31.77.1 ──usb0── card 172.31.77.2 | 10.99.0.2 ──out0── origin 10.99.0.1
//!  (default via the card)      cardfw, ip_forward=0                   203.0.113.10 allowed.test
//!                                                                     203.0.113.11 blocked.test
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::origin::{self, Server};
use lab::topology::{Lab, Netns};

const CARD_INSIDE: &str = "172.31.77.2";
const ALLOWED: &str = "203.0.113.10";
const BLOCKED: &str = "203.0.113.11";

const RULES: &str = "\
no-blocked: deny any host blocked.test
no-admin:   deny http path /admin
no-delete:  deny http method DELETE
no-video:   deny http content-type video/*
too-big:    deny http max-body 100K
dns:        allow dns
web:        allow http
tls:        allow https host allowed.test
echo:       allow tcp dst 203.0.113.10 port 2222
default deny
";

/// One card between one client and the origin world, torn down on drop.
struct CardLab {
    // Field order is drop order: the card and the servers stop before the namespaces go.
    card_pid: u32,
    _servers: Vec<Server>,
    client: Netns,
    card: Netns,
    dir: PathBuf,
    ca_file: PathBuf,
    ca: origin::TestCa,
    lab: Lab,
}

impl CardLab {
    /// Builds the topology, starts the origin servers and the card with `RULES` and
    /// `extra_config` appended to the base config. `None` when the tests cannot run here.
    fn start(tag: &str, extra_config: &str) -> Option<CardLab> {
        CardLab::start_with(tag, "", extra_config)
    }

    /// Like [`CardLab::start`], with top-level config keys too (`{dir}` stands for the lab's
    /// directory).
    fn start_with(tag: &str, top_level: &str, extra_config: &str) -> Option<CardLab> {
        // 203.0.113.12 exists but serves nothing: connections to it are refused.
        let e2e::CardNamespaces {
            client,
            card,
            world: origin_ns,
            mut lab,
        } = e2e::card_namespaces(
            tag,
            &["203.0.113.10/32", "203.0.113.11/32", "203.0.113.12/32"],
        )?;

        let ca = origin::test_ca();
        let dir = lab.dir().to_path_buf();
        let ca_file = dir.join("ca.pem");
        ca.write_ca_pem(&ca_file).expect("ca file");
        let names = HashMap::from([
            ("allowed.test".to_string(), ALLOWED.parse().unwrap()),
            ("fronted.test".to_string(), ALLOWED.parse().unwrap()),
            ("blocked.test".to_string(), BLOCKED.parse().unwrap()),
        ]);
        let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        let servers = vec![
            origin::dns_server(&origin_ns, addr("10.99.0.1", 53), names).expect("dns"),
            origin::http_origin(&origin_ns, addr(ALLOWED, 80)).expect("http"),
            origin::http_origin(&origin_ns, addr(BLOCKED, 80)).expect("http blocked"),
            origin::https_origin(
                &origin_ns,
                addr(ALLOWED, 443),
                &ca,
                &["allowed.test", "fronted.test"],
            )
            .expect("https"),
            origin::https_origin(&origin_ns, addr(BLOCKED, 443), &ca, &["blocked.test"])
                .expect("https blocked"),
            origin::tcp_echo(&origin_ns, addr(ALLOWED, 2222)).expect("echo"),
            origin::tcp_echo(&origin_ns, addr(ALLOWED, 2223)).expect("echo 2223"),
        ];

        let top = top_level.replace("{dir}", &dir.display().to_string());
        let sections = format!("[ports]\ntcp = [2222, 2223]\n{extra_config}");
        let config = e2e::write_card_config(&dir, RULES, &top, &sections);
        let card_pid = lab
            .spawn(
                &card,
                e2e::built_binary("cardfw"),
                &["--config", config.to_str().unwrap()],
            )
            .expect("cardfw starts");
        let mut this = CardLab {
            card_pid,
            _servers: servers,
            client,
            card,
            dir,
            ca_file,
            ca,
            lab,
        };
        this.wait_ready();
        Some(this)
    }

    /// Waits for the status endpoint and the interception ruleset.
    fn wait_ready(&mut self) {
        e2e::wait_for_card(&self.client, &self.card, Duration::from_secs(10), || {
            self.log()
        });
    }

    fn log(&self) -> String {
        self.lab.log_of(self.card_pid)
    }

    /// curl from the client; returns (exit code, stdout).
    fn curl(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["-sS", "--max-time", "10"];
        all.extend_from_slice(args);
        let out: Output = self.client.run("curl", &all).expect("curl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// GET over plain HTTP to a name, intercepted transparently. Returns (status, body).
    fn http(&self, name: &str, path: &str, extra: &[&str]) -> (String, String) {
        let resolve = format!(
            "{name}:80:{}",
            if name == "blocked.test" {
                BLOCKED
            } else {
                ALLOWED
            }
        );
        let url = format!("http://{name}{path}");
        let mut args = vec![
            "--resolve",
            resolve.as_str(),
            "-w",
            "\n%{http_code}",
            url.as_str(),
        ];
        args.extend_from_slice(extra);
        let (_, out) = self.curl(&args);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (code.to_string(), body.to_string())
    }

    fn status(&self) -> String {
        self.curl(&[&format!("http://{CARD_INSIDE}:8081/status")]).1
    }

    fn counter(&self, name: &str) -> u64 {
        let status = self.status();
        let needle = format!("\"{name}\": ");
        let at = status
            .find(&needle)
            .unwrap_or_else(|| panic!("no counter {name} in {status}"))
            + needle.len();
        status[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

#[test]
fn http_is_decided_on_host_path_method_and_response() {
    let Some(lab) = CardLab::start("http", "") else {
        return;
    };
    assert_eq!(
        lab.http("allowed.test", "/", &[]),
        ("200".into(), "hello from origin\n".into())
    );

    let (code, body) = lab.http("blocked.test", "/", &[]);
    assert_eq!(code, "403");
    assert!(body.contains("Rule <strong>no-blocked</strong>"), "{body}");

    let (code, body) = lab.http("allowed.test", "/admin/x", &[]);
    assert_eq!(code, "403");
    assert!(body.contains("no-admin"), "{body}");
    let (code, body) = lab.http("allowed.test", "/echo", &["-X", "DELETE"]);
    assert_eq!(code, "403");
    assert!(body.contains("no-delete"), "{body}");
    let (code, body) = lab.http("allowed.test", "/echo", &["-X", "POST", "-d", "x"]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("POST"), "the origin saw the request: {body}");

    let (code, body) = lab.http("allowed.test", "/video", &[]);
    assert_eq!(code, "403", "content type decided on the response");
    assert!(body.contains("no-video"), "{body}");

    let (code, _) = lab.http("allowed.test", "/bytes/1000", &[]);
    assert_eq!(code, "200");
    let (code, body) = lab.http("allowed.test", "/bytes/200000", &[]);
    assert_eq!(code, "403", "announced size over max-body");
    assert!(body.contains("too-big"), "{body}");

    // Size not announced: the body is cut at the limit and the connection closed.
    let (exit, out) = lab.curl(&[
        "--resolve",
        &format!("allowed.test:80:{ALLOWED}"),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "http://allowed.test/chunked/400000",
    ]);
    assert_ne!(exit, 0, "a cut transfer is an error for the client");
    let got: u64 = out.trim().parse().unwrap();
    assert!(got <= 110 * 1024 + 32 * 1024, "cut near 100 KiB, got {got}");
    assert!(
        lab.log().contains("body cut at its size limit"),
        "{}",
        lab.log()
    );

    // Keep-alive: two requests, one connection, both answered.
    let (_, out) = lab.curl(&[
        "--resolve",
        &format!("allowed.test:80:{ALLOWED}"),
        "http://allowed.test/",
        "http://allowed.test/",
    ]);
    assert_eq!(out, "hello from origin\nhello from origin\n");
    assert!(lab.counter("denied") >= 5);
}

/// Sends `request` as raw bytes from the client to the allowed origin's address (intercepted
/// on port 80) and returns everything the card answers until it closes.
fn raw_http(lab: &CardLab, request: &[u8]) -> String {
    let to = SocketAddr::new(ALLOWED.parse().unwrap(), 80);
    e2e::raw_exchange(&lab.client, to, request, Duration::from_secs(10))
}

#[test]
fn http_bodies_and_framing_pass_intact_and_ambiguous_ones_are_refused() {
    let Some(lab) = CardLab::start("frame", "") else {
        return;
    };
    let upload = lab.dir.join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 300_000]).unwrap();
    let data = format!("@{}", upload.display());
    let resolve = format!("allowed.test:80:{ALLOWED}");
    let post = |extra: &[&str]| {
        let mut args = vec!["--resolve", &resolve, "--data-binary", &data];
        args.extend_from_slice(extra);
        args.push("http://allowed.test/echo");
        lab.curl(&args)
    };
    // A body of known length (moved by splice), and a chunked one (followed chunk by chunk).
    let (exit, out) = post(&[]);
    assert_eq!(exit, 0, "{out}");
    assert!(out.contains("body 300000 bytes"), "{out}");
    let (exit, out) = post(&["-H", "Transfer-Encoding: chunked"]);
    assert_eq!(exit, 0, "{out}");
    assert!(out.contains("body 300000 bytes"), "{out}");
    // The card answers "100 Continue" itself once the request is allowed; without it curl
    // would wait out its 5 s and the 3 s limit would fail the transfer.
    let (exit, out) = post(&[
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",
        "--max-time",
        "3",
    ]);
    assert_eq!(exit, 0, "{out}");
    assert!(out.contains("body 300000 bytes"), "{out}");

    // An HTTP/1.0 client gets a body it can read (no chunked framing) and all of it.
    let (exit, out) = lab.curl(&[
        "--http1.0",
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "http://allowed.test/chunked/5000",
    ]);
    assert_eq!((exit, out.as_str()), (0, "5000"));

    // Two requests in one write (pipelining): both answered, in order.
    let answer = raw_http(
        &lab,
        b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n\
          GET /echo?second HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    );
    let first = answer.find("hello from origin").expect(&answer);
    let second = answer.find("path /echo?second").expect(&answer);
    assert!(first < second, "{answer}");

    // Content-Length and Transfer-Encoding together could be read two ways (smuggling).
    let malformed_before = lab.counter("malformed");
    let answer = raw_http(
        &lab,
        b"POST /echo HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    // A head over the configured size gets 431 and the connection closes.
    let big = format!("X-Big: {}", "b".repeat(20_000));
    let (code, _) = lab.http("allowed.test", "/", &["-H", &big]);
    assert_eq!(code, "431");
    assert!(lab.counter("malformed") >= malformed_before + 2);
}

#[test]
fn explicit_proxy_and_connect() {
    let Some(lab) = CardLab::start("conn", "") else {
        return;
    };
    let proxy = format!("http://{CARD_INSIDE}:3128");
    let ca = lab.ca_file.to_str().unwrap();
    let (exit, body) = lab.curl(&["-x", &proxy, "http://allowed.test/"]);
    assert_eq!(
        (exit, body.as_str()),
        (0, "hello from origin\n"),
        "absolute-form, resolved by the card"
    );
    // A Host header naming another site than the URL is refused (no fronting, one meaning).
    let (_, code) = lab.curl(&[
        "-x",
        &proxy,
        "-H",
        "Host: blocked.test",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://allowed.test/echo",
    ]);
    assert_eq!(code, "400");
    let (exit, body) = lab.curl(&["-x", &proxy, "--cacert", ca, "https://allowed.test/"]);
    assert_eq!(
        (exit, body.as_str()),
        (0, "hello from origin\n"),
        "CONNECT to an allowed host"
    );
    let (exit, _) = lab.curl(&["-x", &proxy, "--cacert", ca, "https://blocked.test/"]);
    assert_eq!(
        exit, 56,
        "CONNECT refused with 403 (curl: CONNECT tunnel failed)"
    );
    // CONNECT allowed.test, but the TLS hello inside names another host: domain fronting.
    let (exit, _) = lab.curl(&[
        "-x",
        &proxy,
        "--cacert",
        ca,
        "--connect-to",
        "fronted.test:443:allowed.test:443",
        "https://fronted.test/",
    ]);
    assert_ne!(exit, 0);
    assert!(
        lab.log().contains("TLS name differs from the CONNECT host"),
        "{}",
        lab.log()
    );
}

#[test]
fn https_is_decided_on_the_client_hello() {
    let Some(lab) = CardLab::start("tls", "") else {
        return;
    };
    let ca = lab.ca_file.to_str().unwrap();
    let allowed = format!("allowed.test:443:{ALLOWED}");
    let (exit, body) = lab.curl(&[
        "--cacert",
        ca,
        "--resolve",
        &allowed,
        "https://allowed.test/",
    ]);
    assert_eq!((exit, body.as_str()), (0, "hello from origin\n"));
    let (exit, _) = lab.curl(&[
        "--cacert",
        ca,
        "--resolve",
        &format!("blocked.test:443:{BLOCKED}"),
        "https://blocked.test/",
    ]);
    assert_eq!(exit, 35, "denied by a TLS alert during the handshake");
    // No SNI (an address): only address rules could allow it, and none does.
    let (exit, _) = lab.curl(&["-k", &format!("https://{ALLOWED}/")]);
    assert_eq!(exit, 35);

    // The same hello, sent in three TCP segments with pauses between them.
    let ca_pem = lab.ca.ca_pem().to_string();
    let reply = lab
        .client
        .enter(move || split_hello_request(&ca_pem))
        .join()
        .expect("client thread");
    assert!(reply.contains("hello from origin"), "{reply}");
}

/// Does a TLS request whose ClientHello is written in three separate segments.
fn split_hello_request(ca_pem: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), "allowed.test".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect((ALLOWED, 443)).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let third = hello.len() / 3;
    for part in [
        &hello[..third],
        &hello[third..2 * third],
        &hello[2 * third..],
    ] {
        tcp.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn dns_answers_allowed_names_and_nxdomain_for_denied_ones() {
    let Some(lab) = CardLab::start("dns", "") else {
        return;
    };
    if !e2e::require_program("dig", "dnsutils") {
        return;
    }
    let dig = |server: &str, name: &str, extra: &[&str]| {
        let at = format!("@{server}");
        let mut args = vec!["+time=2", "+tries=1", at.as_str(), name];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&lab.client.run("dig", &args).unwrap().stdout).into_owned()
    };
    let answer = dig(CARD_INSIDE, "allowed.test", &[]);
    assert!(
        answer.contains("status: NOERROR") && answer.contains(ALLOWED),
        "{answer}"
    );
    let answer = dig(CARD_INSIDE, "blocked.test", &[]);
    assert!(answer.contains("status: NXDOMAIN"), "{answer}");
    let answer = dig(CARD_INSIDE, "use-application-dns.net", &[]);
    assert!(
        answer.contains("status: NXDOMAIN"),
        "the DoH canary: {answer}"
    );
    let answer = dig(CARD_INSIDE, "allowed.test", &["+tcp"]);
    assert!(answer.contains(ALLOWED), "over TCP: {answer}");
    // DNS sent to any other address is answered by the card's forwarder all the same.
    let answer = dig("10.99.0.1", "blocked.test", &[]);
    assert!(
        answer.contains("status: NXDOMAIN"),
        "redirected to the card: {answer}"
    );
    let answer = dig("198.51.100.53", "allowed.test", &[]);
    assert!(answer.contains(ALLOWED), "redirected to the card: {answer}");
}

#[test]
fn tcp_is_spliced_when_allowed_and_everything_else_is_rejected() {
    let Some(lab) = CardLab::start("tcp", "") else {
        return;
    };
    let results = lab
        .client
        .enter(|| {
            let echo = |port: u16| -> std::io::Result<Vec<u8>> {
                let mut s = TcpStream::connect_timeout(
                    &SocketAddr::new(ALLOWED.parse().unwrap(), port),
                    Duration::from_secs(2),
                )?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"ping")?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf)?;
                Ok(buf.to_vec())
            };
            let allowed = echo(2222);
            let denied = echo(2223);
            // A port nobody intercepts: rejected with ICMP admin-prohibited, at once.
            let started = Instant::now();
            let unproxied = TcpStream::connect_timeout(
                &SocketAddr::new(ALLOWED.parse().unwrap(), 2224),
                Duration::from_secs(3),
            );
            let tcp_reject = (unproxied.map(drop), started.elapsed());
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.connect((ALLOWED, 9999)).unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            udp.send(b"x").unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 16];
            let udp_reject = (udp.recv(&mut buf).map(drop), started.elapsed());
            (allowed, denied, tcp_reject, udp_reject)
        })
        .join()
        .unwrap();
    let (allowed, denied, (tcp, tcp_took), (udp, udp_took)) = results;
    assert_eq!(allowed.unwrap(), b"ping");
    assert!(denied.is_err(), "no echo through a denied port");
    let tcp = tcp.unwrap_err();
    assert_eq!(
        tcp.raw_os_error(),
        Some(113),
        "EHOSTUNREACH from ICMP admin-prohibited: {tcp}"
    );
    assert!(
        tcp_took < Duration::from_secs(1),
        "refused at once, took {tcp_took:?}"
    );
    let udp = udp.unwrap_err();
    assert_eq!(udp.raw_os_error(), Some(113), "{udp}");
    assert!(udp_took < Duration::from_secs(1), "took {udp_took:?}");
}

#[test]
fn websocket_upgrade_passes_through() {
    let Some(lab) = CardLab::start("ws", "") else {
        return;
    };
    let reply = lab
        .client
        .enter(|| {
            let mut s = TcpStream::connect((ALLOWED, 80)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            s.write_all(b"over the upgraded connection").unwrap();
            let mut echoed = [0u8; 28];
            s.read_exact(&mut echoed).unwrap();
            (String::from_utf8_lossy(&head).into_owned(), echoed.to_vec())
        })
        .join()
        .unwrap();
    assert!(reply.0.starts_with("HTTP/1.1 101"), "{}", reply.0);
    assert_eq!(reply.1, b"over the upgraded connection");
}

/// Starts a slow download of `bytes` from the origin (1 KiB every 50 ms) on its own thread;
/// joins to (curl's exit code, bytes received).
fn slow_download(client: &Netns, bytes: usize) -> std::thread::JoinHandle<(Option<i32>, String)> {
    let client = client.clone();
    std::thread::spawn(move || {
        let resolve = format!("allowed.test:80:{ALLOWED}");
        let url = format!("http://allowed.test/slow/{bytes}");
        let args = [
            "-sS",
            "--max-time",
            "20",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ];
        let out = client.run("curl", &args).unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
}

#[test]
fn reload_keeps_open_downloads_and_applies_new_rules() {
    let Some(lab) = CardLab::start("reload", "") else {
        return;
    };
    let download = slow_download(&lab.client, 61440);
    std::thread::sleep(Duration::from_millis(700));
    let rules = lab.dir.join("rules.txt");
    std::fs::write(&rules, format!("late: deny http path /late\n{RULES}")).unwrap();
    assert!(
        lab.card
            .run("kill", &["-HUP", &lab.card_pid.to_string()])
            .unwrap()
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.counter("reloads") == 0 {
        assert!(Instant::now() < deadline, "no reload:\n{}", lab.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = lab.http("allowed.test", "/late", &[]);
    assert_eq!(code, "403", "the new rule is in force");
    assert!(body.contains("late"), "{body}");
    let (exit, size) = download.join().unwrap();
    assert_eq!(
        (exit, size.as_str()),
        (Some(0), "61440"),
        "the open download finished whole"
    );

    // A broken rule file is refused; the rules in force stay.
    std::fs::write(&rules, "allow htp\n").unwrap();
    lab.card
        .run("kill", &["-HUP", &lab.card_pid.to_string()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.counter("reload_failures") == 0 {
        assert!(
            Instant::now() < deadline,
            "no failed reload:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.http("allowed.test", "/", &[]).0, "200");
    assert_eq!(lab.http("allowed.test", "/late", &[]).0, "403");
}

#[test]
fn connection_cap_refuses_the_next_while_existing_ones_finish() {
    let Some(lab) = CardLab::start("cap", "[limits]\nmax_connections = 3\nmax_per_client = 3\n")
    else {
        return;
    };
    let downloads: Vec<_> = (0..3).map(|_| slow_download(&lab.client, 40960)).collect();
    std::thread::sleep(Duration::from_millis(600));
    let (code, _) = lab.http("allowed.test", "/", &[]);
    assert_eq!(code, "503", "the fourth connection is refused");
    for download in downloads {
        assert_eq!(
            download.join().unwrap(),
            (Some(0), "40960".to_string()),
            "the three in progress finish"
        );
    }
    assert!(lab.counter("refused_at_capacity") >= 1);
    assert_eq!(
        lab.http("allowed.test", "/", &[]).0,
        "200",
        "slots come back"
    );
}

#[test]
fn slow_loris_is_cut_at_the_header_timeout_while_others_are_served() {
    let Some(lab) = CardLab::start("loris", "[limits]\nheader_timeout_ms = 1000\n") else {
        return;
    };
    let loris = lab.client.enter(|| {
        let mut s = TcpStream::connect((ALLOWED, 80)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        while started.elapsed() < Duration::from_secs(5) {
            // A header line every 200 ms: never finishing the request head.
            if s.write_all(b"X-Slow: 1\r\n").is_err() {
                return started.elapsed();
            }
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lab.http("allowed.test", "/", &[]).0,
        "200",
        "others are served meanwhile"
    );
    let cut_after = loris.join().unwrap();
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(3),
        "cut after {cut_after:?}"
    );
    assert!(lab.counter("header_timeouts") >= 1);
}

#[test]
fn upstream_failures_say_why() {
    let Some(lab) = CardLab::start("fail", "[limits]\nconnect_timeout_ms = 1000\n") else {
        return;
    };
    let proxy = format!("http://{CARD_INSIDE}:3128");
    let fetch = |url: &str| {
        let (_, out) = lab.curl(&["-x", &proxy, "-w", "\n%{http_code}", url]);
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    for (url, code, why) in [
        ("http://nosuch.test/", "502", "does not exist"),
        ("http://203.0.113.12/", "502", "refused the connection"),
        // The card has no route to this network at all.
        ("http://192.0.2.1/", "502", "unreachable"),
        // Routed to the origin side, where nothing answers for it.
        ("http://203.0.113.99/", "504", "did not answer"),
    ] {
        let (got, body) = fetch(url);
        assert_eq!(got, code, "{url}: {body}");
        assert!(body.contains(why), "{url}: {body}");
    }
    assert!(lab.counter("upstream_failures") >= 4);
}

#[test]
fn rules_saved_in_the_store_apply_at_once_and_roll_back() {
    use cardfw::store::{PinCost, Store};
    let Some(lab) = CardLab::start_with("store", "store = \"{dir}/store\"\n", "") else {
        return;
    };
    assert_eq!(
        lab.http("allowed.test", "/", &[]).0,
        "200",
        "a new store starts with the rule file"
    );
    assert!(lab.status().contains("store v1"), "{}", lab.status());
    // With a store the card serves its web page, over HTTPS with its own certificate, whose
    // fingerprint the status reports (for the appliance to show).
    let (exit, page) = lab.curl(&["-k", &format!("https://{CARD_INSIDE}/")]);
    assert_eq!(exit, 0);
    assert!(page.contains("PIN"), "the login page: {page}");
    let status = lab.status();
    let reported = status
        .split("\"tls_fingerprint\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("");
    assert_eq!(reported.len(), 95, "SHA-256 as 32 hex pairs: {status}");
    let config = lab.dir.join("cardfw.toml");
    let printed = lab
        .card
        .run_ok(
            e2e::built_binary("cardfw").to_str().unwrap(),
            &["--config", config.to_str().unwrap(), "fingerprint"],
        )
        .unwrap();
    assert_eq!(
        printed.trim(),
        reported,
        "`cardfw fingerprint` prints what the status reports"
    );

    // What the card's web page does for an admin: set the new card up with its setup code
    // (which the card printed on its console), log in with the PIN, save new rules.
    let code = Store::read_setup_code(&lab.dir.join("store"))
        .unwrap()
        .expect("a new card has a setup code");
    assert!(
        lab.log().contains(&format!(
            "{}{}",
            cardfw::store::SETUP_CODE_LOG,
            cardfw::store::format_setup_code(&code).as_str()
        )),
        "the console shows the setup code:\n{}",
        lab.log()
    );
    let store = Store::open_or_create(&lab.dir.join("store"), "", PinCost::PRODUCTION).unwrap();
    store.setup(&code, "2580").unwrap();
    let admin = store.login("2580").unwrap();
    admin
        .save_rules(&format!("late: deny http host allowed.test\n{RULES}"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.http("allowed.test", "/", &[]).0 != "403" {
        assert!(
            Instant::now() < deadline,
            "the saved rules did not apply:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lab.status().contains("store v2"), "{}", lab.status());

    admin.rollback().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.http("allowed.test", "/", &[]).0 != "200" {
        assert!(
            Instant::now() < deadline,
            "the rollback did not apply:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The card's web page in a real browser on the protected side: the new card is set up with
/// its setup code (the PUK shown once), a wrong PIN shows the tries left, then the admin blocks a name in the rule editor and
/// the protected computer's next request for it is blocked.
#[test]
fn the_card_web_page_in_a_browser_changes_what_is_blocked() {
    use e2e::browser::{Browser, require_browser};
    if !require_browser() {
        return;
    }
    let Some(lab) = CardLab::start_with("cweb", "store = \"{dir}/store\"\n", "") else {
        return;
    };
    assert_eq!(lab.http("allowed.test", "/", &[]).0, "200");
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let new_rules = format!("no-allowed: deny any host allowed.test\n{RULES}");
    // On real hardware the label; here the card's console (and `cardfw setup-code`).
    let code = cardfw::store::Store::read_setup_code(&lab.dir.join("store"))
        .unwrap()
        .expect("a new card has a setup code")
        .to_string();
    let outcome = lab
        .client
        .enter(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let b = Browser::open_self_signed(&format!("https://{CARD_INSIDE}/")).await?;
                // A new card: the setup code and the first PIN; the PUK is shown once.
                b.type_into("setup-code", &code).await?;
                b.type_into("setup-pin", "2580").await?;
                b.type_into("setup-confirm", "2580").await?;
                b.submit("/setup").await?;
                b.wait_for_text("main", "Your PUK", Duration::from_secs(10))
                    .await?;
                b.screenshot(&shots.join("card-setup-puk.png")).await?;
                // A wrong PIN costs a try, and the page says how many are left.
                b.type_into("pin", "9999").await?;
                b.submit("/login").await?;
                b.wait_for_text("main", "2 tries left", Duration::from_secs(10))
                    .await?;
                let tries = b.text("main").await?;
                b.screenshot(&shots.join("card-wrong-pin.png")).await?;
                // A wrong PIN makes this computer wait a second before the next try; a try
                // too soon (a slow machine) is refused without spending one, and says so:
                // then wait and try again.
                let mut logged_in = false;
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    b.goto(&format!("https://{CARD_INSIDE}/")).await?;
                    b.type_into("pin", "2580").await?;
                    b.submit("/login").await?;
                    b.wait_until(Duration::from_secs(10), async |b: &Browser| {
                        let body = b.text("body").await?;
                        Ok(body.contains("Log out") || body.contains("too many wrong tries"))
                    })
                    .await?;
                    if b.text("body").await?.contains("Log out") {
                        logged_in = true;
                        break;
                    }
                }
                anyhow::ensure!(logged_in, "not logged in: {}", b.text("body").await?);
                // The rule editor: block allowed.test, confirm with the PIN.
                b.type_into("rules", &new_rules).await?;
                b.type_into("rules-pin", "2580").await?;
                b.screenshot(&shots.join("card-editor.png")).await?;
                b.submit("/rules").await?;
                b.wait_for_text("main", "Saved as version", Duration::from_secs(10))
                    .await?;
                let after = b.text("main").await?;
                b.screenshot(&shots.join("card-saved.png")).await?;
                b.close().await?;
                anyhow::Ok((tries, after))
            })
        })
        .join()
        .unwrap()
        .unwrap();
    assert!(outcome.0.contains("2 tries left"), "{}", outcome.0);
    assert!(
        outcome.1.contains("no-allowed"),
        "the saved rules are shown: {}",
        outcome.1
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.http("allowed.test", "/", &[]).0 != "403" {
        assert!(
            Instant::now() < deadline,
            "the rules saved in the browser did not apply:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, page) = lab.http("allowed.test", "/", &[]);
    assert!(page.contains("no-allowed"), "{page}");
}
