//! Issue 13, items 1 to 4: attacks on the card's proxies, each end to end through the real
//! `cardfw` binary. Every test here succeeded as an attack before the fix it goes with.
//!
//! ```text
//!  client 172.31.77.1 (+ .4) ──usb0── card 172.31.77.2 | 10.99.0.2 ──out0── origin 10.99.0.1 (DNS)
//!                                                                   203.0.113.10 allowed.test (strict origin, SMTP on 25)
//!                                                                   203.0.113.12 refuses every connection
//!                                                                   203.0.113.20 lenient.test (lenient origin)
//!                                                                   10.1.2.3     a private origin
//! ```
//!
//! The DNS server here answers several A records for one name (`two.test` is
//! `[203.0.113.12, 10.1.2.3]`); the lenient origin reads heads the way some real servers do
//! (a bare LF ends a line, the last `Host` wins, `%2F` and `\` are separators).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use e2e::origin::{self, Server};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use lab::topology::{Lab, Netns};

const CARD_INSIDE: &str = "172.31.77.2";
const ALLOWED: &str = "203.0.113.10";
const CLOSED: &str = "203.0.113.12";
const LENIENT: &str = "203.0.113.20";
const PRIVATE: &str = "10.1.2.3";
/// A second client address on the card link: not the appliance.
const OTHER_CLIENT: &str = "172.31.77.4";

const RULES: &str = "\
no-blocked: deny any host blocked.test
no-admin:   deny http path /admin
private:    deny any dst 10.0.0.0/8
dns:        allow dns
web:        allow http
tls:        allow https host allowed.test,two.test
smtp-tls:   allow https host allowed.test port 25
default deny
";

/// Threads serving in the origin namespace until the lab is dropped.
struct Stop(Arc<AtomicBool>, Vec<JoinHandle<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the lenient origin and the SMTP server saw.
#[derive(Default)]
struct Seen {
    /// `host path` of each request the lenient origin read.
    requests: Mutex<Vec<String>>,
    /// Lines the SMTP server read.
    smtp: Mutex<Vec<String>>,
}

struct HardLab {
    card_pid: u32,
    _threads: Stop,
    _servers: Vec<Server>,
    private_origin: Vec<Server>,
    seen: Arc<Seen>,
    client: Netns,
    card: Netns,
    ca_file: std::path::PathBuf,
    lab: Lab,
}

impl HardLab {
    fn start(tag: &str) -> Option<HardLab> {
        let e2e::CardNamespaces {
            client,
            card,
            world,
            mut lab,
        } = e2e::card_namespaces(
            tag,
            &[
                "203.0.113.10/32",
                "203.0.113.12/32",
                "203.0.113.20/32",
                "10.1.2.3/32",
            ],
        )?;
        card.route("10.1.2.0/24 via 10.99.0.1").expect("card route");
        client
            .run_ok(
                "ip",
                &["addr", "add", &format!("{OTHER_CLIENT}/29"), "dev", "eem0"],
            )
            .expect("second client address");
        let ca = origin::test_ca();
        let dir = lab.dir().to_path_buf();
        let ca_file = dir.join("ca.pem");
        ca.write_ca_pem(&ca_file).unwrap();
        let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        let servers = vec![
            origin::http_origin(&world, addr(ALLOWED, 80)).unwrap(),
            origin::https_origin(&world, addr(ALLOWED, 443), &ca, &["allowed.test"]).unwrap(),
        ];
        let private_origin = vec![
            origin::http_origin(&world, addr(PRIVATE, 80)).unwrap(),
            origin::https_origin(&world, addr(PRIVATE, 443), &ca, &["two.test"]).unwrap(),
        ];
        let names: HashMap<&'static str, Vec<Ipv4Addr>> = HashMap::from([
            ("allowed.test", vec![ALLOWED.parse().unwrap()]),
            ("lenient.test", vec![LENIENT.parse().unwrap()]),
            (
                "two.test",
                vec![CLOSED.parse().unwrap(), PRIVATE.parse().unwrap()],
            ),
            ("loop.test", vec![Ipv4Addr::LOCALHOST]),
            ("card.test", vec![CARD_INSIDE.parse().unwrap()]),
        ]);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let threads = vec![
            dns_server(&world, names, stop.clone()),
            lenient_origin(&world, stop.clone(), seen.clone()),
            smtp_server(&world, stop.clone(), seen.clone()),
        ];
        let threads = Stop(stop, threads);

        let config = e2e::write_card_config(
            &dir,
            RULES,
            "",
            "[limits]\nconnect_timeout_ms = 1000\nheader_timeout_ms = 2000",
        );
        let card_pid = lab
            .spawn(
                &card,
                e2e::built_binary("cardfw"),
                &["--config", config.to_str().unwrap()],
            )
            .expect("cardfw starts");
        let this = HardLab {
            card_pid,
            _threads: threads,
            _servers: servers,
            private_origin,
            seen,
            client,
            card,
            ca_file,
            lab,
        };
        e2e::wait_for_card(&this.client, &this.card, Duration::from_secs(10), || {
            this.log()
        });
        Some(this)
    }

    fn log(&self) -> String {
        self.lab.log_of(self.card_pid)
    }

    fn curl(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["-sS", "--max-time", "8"];
        all.extend_from_slice(args);
        let out = self.client.run("curl", &all).expect("curl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Through the explicit proxy: (HTTP status, body).
    fn via_proxy(&self, url: &str) -> (String, String) {
        let proxy = format!("http://{CARD_INSIDE}:3128");
        let (_, out) = self.curl(&["-x", &proxy, "-w", "\n%{http_code}", url]);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (code.to_string(), body.to_string())
    }

    /// Raw bytes from the client to `to`, everything answered until the card closes.
    fn raw(&self, to: SocketAddr, request: &[u8]) -> String {
        e2e::raw_exchange(&self.client, to, request, Duration::from_secs(6))
    }

    fn counter(&self, name: &str) -> u64 {
        let (_, status) = self.curl(&[&format!("http://{CARD_INSIDE}:8081/status")]);
        let needle = format!("\"{name}\": ");
        let at = status.find(&needle).expect(&status) + needle.len();
        status[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn private_served(&self) -> u64 {
        self.private_origin.iter().map(Server::served).sum()
    }

    fn lenient_saw(&self, needle: &str) -> bool {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains(needle))
    }
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Item 1: every address is decided, not the first.

#[test]
fn every_address_of_a_name_is_decided_not_only_the_first() {
    let Some(lab) = HardLab::start("hpaddrs") else {
        return;
    };
    // two.test is [an address that refuses, 10.1.2.3]; the rules deny 10.0.0.0/8.
    let (code, body) = lab.via_proxy("http://two.test/");
    assert_eq!(code, "502", "only the allowed address is tried: {body}");
    assert!(body.contains("refused the connection"), "{body}");

    // TLS by SNI, intercepted on 443: the hello names two.test.
    let ca = lab.ca_file.to_str().unwrap();
    let (exit, _) = lab.curl(&[
        "--cacert",
        ca,
        "--resolve",
        &format!("two.test:443:{ALLOWED}"),
        "https://two.test/",
    ]);
    assert_ne!(exit, 0);
    // CONNECT two.test:443.
    let proxy = format!("http://{CARD_INSIDE}:3128");
    let (exit, _) = lab.curl(&["-x", &proxy, "--cacert", ca, "https://two.test/"]);
    assert_ne!(exit, 0);
    assert_eq!(
        lab.private_served(),
        0,
        "the card never reached the denied address:\n{}",
        lab.log()
    );
    // Still served where every address is allowed, and a CONNECT logs the address it used.
    let (exit, body) = lab.curl(&["-x", &proxy, "--cacert", ca, "https://allowed.test/"]);
    assert_eq!((exit, body.as_str()), (0, "hello from origin\n"));
    assert!(
        lab.log().contains(&format!("{ALLOWED}:443")),
        "{}",
        lab.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Item 2: the card never connects to itself or to local nets.

#[test]
fn the_card_never_connects_to_itself_or_local_nets() {
    let Some(lab) = HardLab::start("hpself") else {
        return;
    };
    let intercepted: SocketAddr = format!("{ALLOWED}:80").parse().unwrap();
    let proxy: SocketAddr = format!("{CARD_INSIDE}:3128").parse().unwrap();
    let refused = |answer: &str, what: &str| {
        assert!(
            status_line(answer).starts_with("HTTP/1.1 403"),
            "{what}: {answer}"
        );
        assert!(answer.contains("does not connect to"), "{what}: {answer}");
    };
    for target in [
        "http://127.0.0.1:10080/",
        "http://[::ffff:127.0.0.1]:10080/",
        "http://172.31.77.2:8081/status",
        "http://10.99.0.2:8081/status",
        "http://172.31.77.1/",
        "http://169.254.169.254/",
        "http://0.0.0.0:10080/",
        "http://loop.test:10080/",
        "http://card.test:8081/status",
    ] {
        for (via, to) in [("transparent", intercepted), ("explicit", proxy)] {
            let request = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n");
            refused(&lab.raw(to, request.as_bytes()), &format!("{via} {target}"));
        }
    }
    // The Host header of an intercepted request.
    for host in ["127.0.0.1", "172.31.77.2", "[::1]", "card.test"] {
        let request = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        refused(&lab.raw(intercepted, request.as_bytes()), host);
    }
    // CONNECT.
    for target in [
        "127.0.0.1:10443",
        "172.31.77.2:8081",
        "[::ffff:172.31.77.2]:443",
    ] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        refused(&lab.raw(proxy, request.as_bytes()), target);
    }
    assert!(
        lab.log().contains("the card does not connect there"),
        "{}",
        lab.log()
    );
    assert_eq!(lab.counter("refused_at_capacity"), 0, "no loop into itself");

    // The status endpoint answers the appliance's address only.
    let status = format!("http://{CARD_INSIDE}:8081/status");
    let (exit, body) = lab.curl(&[&status]);
    assert_eq!(exit, 0);
    assert!(body.contains("rules_version"), "{body}");
    let (exit, body) = lab.curl(&["--interface", OTHER_CLIENT, &status]);
    assert_ne!(exit, 0, "another client read the status: {body}");
    let from_card = lab
        .card
        .run("curl", &["-sS", "--max-time", "3", &status])
        .unwrap();
    assert!(
        !from_card.status.success(),
        "the card itself read the status"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 3: `https` means TLS.

#[test]
fn https_means_tls_on_its_port_and_tls_after_the_hello() {
    let Some(lab) = HardLab::start("hptls") else {
        return;
    };
    let proxy: SocketAddr = format!("{CARD_INSIDE}:3128").parse().unwrap();
    // Port 25 is allowed for TLS by `smtp-tls`; a made-up hello, then SMTP in clear.
    let malformed_before = lab.counter("malformed");
    let hello = client_hello("allowed.test");
    let (answer, seen_by_client) = lab
        .client
        .enter(move || {
            let mut s = TcpStream::connect(proxy).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
            s.write_all(b"CONNECT allowed.test:25 HTTP/1.1\r\nHost: allowed.test:25\r\n\r\n")
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = s.write_all(&hello);
            std::thread::sleep(Duration::from_millis(300));
            let _ = s.write_all(b"EHLO attacker.test\r\nMAIL FROM:<spam@attacker.test>\r\n");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            (
                String::from_utf8_lossy(&head).into_owned(),
                String::from_utf8_lossy(&rest).into_owned(),
            )
        })
        .join()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !seen_by_client.contains("220"),
        "the SMTP greeting is not TLS and must not reach the client: {seen_by_client:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let smtp = lab.seen.smtp.lock().unwrap().clone();
    assert!(
        !smtp.iter().any(|l| l.contains("MAIL FROM")),
        "SMTP passed through a TLS tunnel: {smtp:?}"
    );
    assert!(lab.counter("malformed") > malformed_before);
    assert!(
        lab.log().contains("not TLS after an allowed TLS hello"),
        "{}",
        lab.log()
    );

    // `tls: allow https host allowed.test` names no port: not 8443.
    let answer = lab.raw(
        proxy,
        b"CONNECT allowed.test:8443 HTTP/1.1\r\nHost: allowed.test:8443\r\n\r\n",
    );
    assert!(status_line(&answer).starts_with("HTTP/1.1 403"), "{answer}");

    // Real TLS still passes, transparently and through CONNECT.
    let ca = lab.ca_file.to_str().unwrap();
    let (exit, body) = lab.curl(&[
        "--cacert",
        ca,
        "--resolve",
        &format!("allowed.test:443:{ALLOWED}"),
        "https://allowed.test/",
    ]);
    assert_eq!((exit, body.as_str()), (0, "hello from origin\n"));
    let (exit, body) = lab.curl(&[
        "-x",
        &format!("http://{CARD_INSIDE}:3128"),
        "--cacert",
        ca,
        "https://allowed.test/",
    ]);
    assert_eq!((exit, body.as_str()), (0, "hello from origin\n"));
}

/// The first flight of a real TLS client (rustls) naming `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), name.to_string().try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello
}

// ---------------------------------------------------------------------------------------------
// Item 4: HTTP heads mean one thing.

#[test]
fn http_heads_that_servers_read_two_ways_are_refused() {
    let Some(lab) = HardLab::start("hpheads") else {
        return;
    };
    let strict: SocketAddr = format!("{ALLOWED}:80").parse().unwrap();
    let lenient: SocketAddr = format!("{LENIENT}:80").parse().unwrap();
    let malformed_before = lab.counter("malformed");
    // The lenient origin works through the card for an ordinary request.
    let answer = lab.raw(
        lenient,
        b"GET /fine HTTP/1.1\r\nHost: lenient.test\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.contains("host lenient.test path /fine"), "{answer}");

    // A chunk extension ended by a bare LF: the card reads one body, a lenient origin reads
    // a body and then a second request for /admin, which the rules deny.
    let smuggled = "GET /admin HTTP/1.1\r\nHost: lenient.test\r\nX-Pad: ";
    let tail = "\r\n\r\n";
    let mut data = format!("0\r\n\r\n{smuggled}");
    let n = data.len() + tail.len() + 40;
    data.push_str(&"p".repeat(n - data.len() - tail.len()));
    data.push_str(tail);
    assert_eq!(data.len(), n);
    let chunked = |host: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             {n:x};\n{junk}\r\n{data}\r\n0\r\n\r\n",
            junk = "j".repeat(n)
        )
    };

    let heads: Vec<(&str, Vec<u8>)> = vec![
        (
            "bare LF in the head",
            b"GET /lf HTTP/1.1\nHost: HOST\n\n".to_vec(),
        ),
        (
            "bare LF in a header line",
            b"GET /lf2 HTTP/1.1\r\nHost: HOST\nX-A: 1\r\n\r\n".to_vec(),
        ),
        ("bare LF in a chunk line", chunked("HOST").into_bytes()),
        (
            "two Host fields",
            b"GET /two HTTP/1.1\r\nHost: HOST\r\nHost: blocked.test\r\n\r\n".to_vec(),
        ),
        (
            "a Host that is not ASCII",
            b"GET /utf HTTP/1.1\r\nHost: HOST\xff\r\n\r\n".to_vec(),
        ),
        (
            "a control byte in a value",
            b"GET /ctl HTTP/1.1\r\nHost: HOST\r\nX-A: a\x01b\r\n\r\n".to_vec(),
        ),
        (
            "absolute-form naming another host than Host",
            b"GET http://HOST/abs HTTP/1.1\r\nHost: blocked.test\r\n\r\n".to_vec(),
        ),
        (
            "an encoded slash",
            b"GET /x/..%2Fadmin HTTP/1.1\r\nHost: HOST\r\n\r\n".to_vec(),
        ),
        (
            "a backslash",
            b"GET /x\\..\\admin HTTP/1.1\r\nHost: HOST\r\n\r\n".to_vec(),
        ),
        (
            "an encoded dot segment",
            b"GET /x/%2e%2e/admin HTTP/1.1\r\nHost: HOST\r\n\r\n".to_vec(),
        ),
        (
            "a dot segment",
            b"GET /x/../public HTTP/1.1\r\nHost: HOST\r\n\r\n".to_vec(),
        ),
        (
            "an empty segment",
            b"GET //public HTTP/1.1\r\nHost: HOST\r\n\r\n".to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (origin, host, to) in [
        ("strict", "allowed.test", strict),
        ("lenient", "lenient.test", lenient),
    ] {
        for (what, request) in &heads {
            let request = String::from_utf8_lossy(request).replace("HOST", host);
            // Keep the raw bytes that are not UTF-8 (the non-ASCII Host).
            let bytes: Vec<u8> = if what.contains("not ASCII") {
                format!("GET /utf HTTP/1.1\r\nHost: {host}")
                    .into_bytes()
                    .into_iter()
                    .chain(*b"\xff\r\n\r\n")
                    .collect()
            } else {
                request.into_bytes()
            };
            let answer = lab.raw(to, &bytes);
            if !status_line(&answer).starts_with("HTTP/1.1 400") {
                failures.push(format!("{origin}: {what}: {}", status_line(&answer)));
            }
        }
    }
    let seen = lab.seen.requests.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "not refused:\n{}\nthe lenient origin saw {seen:?}",
        failures.join("\n")
    );
    assert!(
        !lab.lenient_saw("/admin"),
        "smuggled past no-admin: {seen:?}"
    );
    assert!(
        !lab.lenient_saw("blocked.test"),
        "smuggled past no-blocked: {seen:?}"
    );
    assert!(lab.counter("malformed") >= malformed_before + 20);
    assert!(lab.log().contains("malformed request"), "{}", lab.log());
    // Escapes every server decodes alike still pass, and mean the same on both sides.
    let answer = lab.raw(
        lenient,
        b"GET /%70ublic/a%20b/ HTTP/1.1\r\nHost: lenient.test\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.contains("path /public/a b/"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// Servers in the origin namespace.

/// A DNS server on 10.99.0.1:53 (UDP) that answers every A record of a name.
fn dns_server(
    world: &Netns,
    names: HashMap<&'static str, Vec<Ipv4Addr>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (ready, wait) = std::sync::mpsc::channel();
    let thread = world.enter(move || {
        let socket = UdpSocket::bind("10.99.0.1:53").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.message_type = MessageType::Response;
            reply.metadata.recursion_available = true;
            let Some(question) = query.queries.first() else {
                continue;
            };
            reply.add_query(question.clone());
            let name = question
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            match names.get(name.as_str()) {
                Some(addresses) if question.query_type() == RecordType::A => {
                    for address in addresses {
                        reply.add_answer(Record::from_rdata(
                            question.name().clone(),
                            60,
                            RData::A(A(*address)),
                        ));
                    }
                }
                Some(_) => {}
                None => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer);
            }
        }
    });
    wait.recv().expect("DNS server ready");
    thread
}

/// Accepts connections on `addr` in `world` until `stop`, each served by `serve` on a thread.
fn serve_tcp(
    world: &Netns,
    addr: &str,
    stop: Arc<AtomicBool>,
    serve: impl Fn(TcpStream) + Send + Sync + 'static,
) -> JoinHandle<()> {
    let (ready, wait) = std::sync::mpsc::channel();
    let addr = addr.to_string();
    let serve = Arc::new(serve);
    let thread = world.enter(move || {
        let listener = TcpListener::bind(&addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    wait.recv().expect("server ready");
    thread
}

/// An origin that reads heads the lenient way: a bare LF ends a line (in heads and chunk
/// lines), the last `Host` wins, and the path is decoded whole (`%2F` too), `\` taken for
/// `/`, dot segments resolved. It answers `host H path P` and keeps that line.
fn lenient_origin(world: &Netns, stop: Arc<AtomicBool>, seen: Arc<Seen>) -> JoinHandle<()> {
    serve_tcp(world, &format!("{LENIENT}:80"), stop, move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        let line = |reader: &mut BufReader<TcpStream>| -> Option<String> {
            let mut bytes = Vec::new();
            reader.read_until(b'\n', &mut bytes).ok()?;
            if bytes.is_empty() {
                return None;
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Some(
                text.trim_end_matches('\n')
                    .trim_end_matches('\r')
                    .to_string(),
            )
        };
        loop {
            let Some(request_line) = line(&mut reader) else {
                return;
            };
            if request_line.is_empty() {
                continue;
            }
            let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
            let (mut host, mut chunked, mut length) = (String::new(), false, 0usize);
            loop {
                let Some(field) = line(&mut reader) else {
                    return;
                };
                if field.is_empty() {
                    break;
                }
                let (name, value) = field.split_once(':').unwrap_or((&field, ""));
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "host" => host = value.to_string(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    "content-length" => length = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
            if chunked {
                loop {
                    let Some(size_line) = line(&mut reader) else {
                        return;
                    };
                    let size =
                        usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    if size == 0 {
                        while line(&mut reader).is_some_and(|l| !l.is_empty()) {}
                        break;
                    }
                    let mut data = vec![0u8; size];
                    if reader.read_exact(&mut data).is_err() {
                        return;
                    }
                    let _ = line(&mut reader);
                }
            } else {
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
            }
            let path = lenient_path(&target);
            let text = format!("host {host} path {path}\n");
            seen.requests.lock().unwrap().push(text.clone());
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if out.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn lenient_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let path = path
        .strip_prefix("http://")
        .map_or(path, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            decoded.push(b);
            i += 3;
            continue;
        }
        decoded.push(if bytes[i] == b'\\' { b'/' } else { bytes[i] });
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if decoded.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// An SMTP server on allowed.test:25: greets, then keeps every line it reads.
fn smtp_server(world: &Netns, stop: Arc<AtomicBool>, seen: Arc<Seen>) -> JoinHandle<()> {
    serve_tcp(world, &format!("{ALLOWED}:25"), stop, move |mut stream| {
        if stream
            .write_all(b"220 smtp.allowed.test ESMTP\r\n")
            .is_err()
        {
            return;
        }
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut bytes = Vec::new();
        while reader.read_until(b'\n', &mut bytes).is_ok_and(|n| n > 0) {
            seen.smtp
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes).into_owned());
            bytes.clear();
            if stream.write_all(b"250 ok\r\n").is_err() {
                return;
            }
        }
    })
}
