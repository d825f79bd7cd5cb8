//! The control loop. In order: the fail-closed base ruleset; the inside and outside links; the
//! policy rules that send all inside traffic to the card table and *prohibit* it when that
//! table is empty; dnsmasq and the DHCP client; the status page. Then it watches: link events
//! and a probe of the card's status endpoint decide whether the card is present, and only
//! while it is does the card table hold a route.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use netconf::netlink::{self, LinkEvent, Netlink, PolicyRule};
use netconf::sysfs;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, OutsideMode};
use crate::services::{self, Lease};
use crate::state::{ApplianceState, Block, CardState, LinkState, RECENT_BLOCKS, Role, Snapshot};
use crate::{firewall, status};
use serve::unix_now;

/// The routing table that holds the one route to the card; empty means nothing passes.
pub const CARD_TABLE: u32 = 77;
/// Priorities of the two policy rules for inside traffic: look up the card table, else prohibit.
pub const RULE_PRIORITY: u32 = 1000;
/// The name the full ruleset uses for the card link before one is found: matches nothing.
const NO_CARD: &str = "no-card-link";
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Runs the appliance until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    // Before anything else: nothing forwarded.
    firewall::apply(&firewall::base_ruleset()).context("cannot apply the base ruleset")?;
    tracing::info!("base ruleset applied: nothing is forwarded");
    let started = Instant::now();
    let run_dir = config.paths.run_dir.clone();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let nl = Netlink::connect().await?;
    sysctl("net/ipv4/ip_forward", "1")?;
    sysctl("net/ipv6/conf/all/forwarding", "0")?;
    // Reverse-path filtering, per link (the kernel applies the larger of `all` and the link's
    // own value, so `all` is 0). The inside is strict: a source the appliance would not route
    // back out of the inside port is forged, and an answer to it would go to the world (no
    // reflection, DESIGN.md rule 6; the ruleset's prerouting chain says the same). The card
    // link is loose: the card's replies carry the outside addresses they answer for. Links
    // made later (a card plugged in) start loose.
    sysctl("net/ipv4/conf/all/rp_filter", "0")?;
    sysctl("net/ipv4/conf/default/rp_filter", "2")?;
    sysctl(&rp_filter_key(&config.inside.interface), "1")?;
    sysctl(&rp_filter_key(&config.outside.interface), "2")?;

    let inside = &config.inside;
    nl.link_up(&inside.interface).await?;
    nl.set_addresses(
        &inside.interface,
        &[(IpAddr::V4(inside.address), inside.prefix)],
    )
    .await?;
    nl.link_up(&config.outside.interface).await?;
    // Fail closed by routing: inside traffic looks up the card table; when it is empty the
    // next rule prohibits instead of falling through to the main table (and out).
    nl.flush_table(CARD_TABLE).await?;
    for rule in PolicyRule::fail_closed_pair(&inside.interface, CARD_TABLE, RULE_PRIORITY) {
        nl.ensure_rule(&rule).await?;
    }

    if !config.card.peer_io_reader.is_empty() {
        // The card link is a TAP fed by Peer I/O; from here on it is a card link like any.
        let link = apdu::tap::open(&config.card.interface)
            .with_context(|| format!("cannot create TAP {}", config.card.interface))?;
        let reader = config.card.peer_io_reader.clone();
        std::thread::Builder::new()
            .name("peer-io".into())
            .spawn(move || {
                if let Err(error) = crate::peerio::run(&reader, link) {
                    tracing::error!(%error, "peer I/O stopped: the card link stays down");
                }
            })
            .context("cannot start the Peer I/O thread")?;
    }
    let mut card_link = find_card_link(&config);
    firewall::apply(&firewall::full_ruleset(
        &config,
        card_link.as_deref().unwrap_or(NO_CARD),
    ))?;
    tracing::info!(card = ?card_link, "full ruleset applied");
    if let Some(name) = &card_link {
        configure_card_link(&nl, &config, name).await;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut services = tokio::task::JoinSet::new();
    let dnsmasq_conf = run_dir.join("dnsmasq.conf");
    services::write_atomically(
        &dnsmasq_conf,
        services::dnsmasq_config(&config, card_link.as_deref().unwrap_or(NO_CARD)).as_bytes(),
    )?;
    if !run_dir.join("resolv.conf").exists() {
        services::write_resolvers(&run_dir, &config.outside.dns)?;
    }
    services.spawn(services::supervise(
        "dnsmasq",
        config.paths.dnsmasq.clone(),
        vec![format!("--conf-file={}", dnsmasq_conf.display())],
        stop_rx.clone(),
    ));
    match config.outside.mode {
        OutsideMode::Dhcp => {
            let script = run_dir.join("udhcpc.script");
            services::write_atomically(&script, services::udhcpc_script(&run_dir).as_bytes())?;
            set_executable(&script)?;
            services.spawn(services::supervise(
                "udhcpc",
                config.paths.busybox.clone(),
                [
                    "udhcpc",
                    "-f",
                    "-R",
                    "-t",
                    "0",
                    "-T",
                    "1",
                    "-i",
                    &config.outside.interface,
                    "-s",
                    &script.display().to_string(),
                ]
                .map(String::from)
                .to_vec(),
                stop_rx.clone(),
            ));
        }
        OutsideMode::Static => {
            let (address, gateway) = (
                config.outside.address.expect("checked"),
                config.outside.gateway.expect("checked"),
            );
            apply_lease(
                &nl,
                &config,
                &Lease {
                    address,
                    prefix: config.outside.prefix,
                    router: Some(gateway),
                    dns: config.outside.dns.clone(),
                },
            )
            .await;
        }
    }

    let state = Arc::new(ApplianceState::new(Snapshot {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        uptime_secs: 0,
        links: Vec::new(),
        card: CardState {
            absent_reason: Some("not seen yet".into()),
            since: unix_now(),
            ..CardState::default()
        },
        history: Vec::new(),
    }));
    let status_addr = SocketAddr::new(IpAddr::V4(inside.address), config.status.port);
    let listener = tokio::net::TcpListener::bind(status_addr)
        .await
        .with_context(|| format!("cannot listen on {status_addr}"))?;
    services.spawn({
        let state = state.clone();
        async move {
            if let Err(e) = status::serve(listener, state).await {
                tracing::error!(error = %e, "status page stopped");
            }
        }
    });
    tracing::info!(status = %status_addr, "appliance running");

    let mut events = netlink::watch_links().await?;
    let mut probe = tokio::time::interval(Duration::from_millis(config.card.probe_interval_ms));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    let mut lease_poll = tokio::time::interval(LEASE_POLL);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut card = CardWatch::default();
    let mut lease: Option<Lease> = None;
    let lease_file = run_dir.join("outside.lease");
    loop {
        tokio::select! {
            Some(event) = events.next_event() => {
                match event {
                    LinkEvent::Changed { name, up, .. } => {
                        let is_card = card_link.as_deref() == Some(name.as_str()) || (card_link.is_none() && is_card_link(&config, &name));
                        if !is_card {
                            continue;
                        }
                        if card_link.as_deref() != Some(name.as_str()) {
                            tracing::info!(link = %name, "card link appeared");
                            card_link = Some(name.clone());
                            apply_or_log(&firewall::full_ruleset(&config, &name));
                            let _ = services::write_atomically(&dnsmasq_conf, services::dnsmasq_config(&config, &name).as_bytes());
                            configure_card_link(&nl, &config, &name).await;
                        }
                        if !up {
                            card.absent(&nl, &state, "the card link is down").await;
                        }
                    }
                    LinkEvent::Lost => {
                        // Some change went unseen. The probe re-reads the card link's state
                        // every interval; a card link that appeared unseen is looked for here.
                        tracing::warn!("link events were lost; looking at the links again");
                        if card_link.is_none() && let Some(name) = find_card_link(&config) {
                            card_link = Some(name.clone());
                            apply_or_log(&firewall::full_ruleset(&config, &name));
                            let _ = services::write_atomically(&dnsmasq_conf, services::dnsmasq_config(&config, &name).as_bytes());
                            configure_card_link(&nl, &config, &name).await;
                        }
                    }
                    LinkEvent::Removed { name, .. } => {
                        if card_link.as_deref() == Some(name.as_str()) {
                            card.absent(&nl, &state, "the card was unplugged").await;
                            card_link = None;
                        }
                    }
                }
            }
            _ = probe.tick() => {
                let Some(name) = card_link.clone() else { continue };
                let link_up = nl.link_is_up(&name).await.unwrap_or(false);
                match probe_card(&config).await {
                    Ok(report) if link_up => card.alive(&nl, &config, &name, &state, report).await,
                    Ok(_) => card.absent(&nl, &state, "the card link is down").await,
                    Err(why) => card.failed_probe(&nl, &config, &state, &why).await,
                }
            }
            _ = lease_poll.tick(), if config.outside.mode == OutsideMode::Dhcp => {
                let now = services::read_lease(&lease_file);
                if now != lease {
                    match &now {
                        Some(l) => apply_lease(&nl, &config, l).await,
                        None => {
                            tracing::warn!("outside lease lost");
                            let _ = nl.set_addresses(&config.outside.interface, &[]).await;
                        }
                    }
                    lease = now;
                }
            }
            _ = sample.tick() => {
                refresh_links(&nl, &config, card_link.as_deref(), &state, started).await;
                state.sample_traffic(unix_now());
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    // Leaving: no one watches the card any more, so nothing may pass.
    let _ = nl.flush_table(CARD_TABLE).await;
    let _ = stop_tx.send(true);
    while services.join_next().await.is_some() {}
    tracing::info!("stopped; the card route is removed and the ruleset stays closed");
    Ok(())
}

/// Presence bookkeeping: consecutive failed probes, and whether the route is in place.
#[derive(Debug, Default)]
struct CardWatch {
    failures: u32,
    present: bool,
}

impl CardWatch {
    async fn alive(
        &mut self,
        nl: &Netlink,
        config: &Config,
        link: &str,
        state: &ApplianceState,
        report: proto::CardStatus,
    ) {
        self.failures = 0;
        if !self.present {
            match nl
                .replace_default_route(CARD_TABLE, config.card.inside_address, link)
                .await
            {
                Ok(()) => {
                    self.present = true;
                    tracing::info!(link, "card present: inside traffic goes to the card");
                    state.update(|s| {
                        s.card.present = true;
                        s.card.since = unix_now();
                        s.card.absent_reason = None;
                    });
                }
                Err(e) => tracing::error!(error = %e, "cannot route to the card"),
            }
        }
        let blocks: Vec<Block> = report
            .recent
            .iter()
            .rev()
            .filter(|d| d.action == proto::Action::Deny)
            .take(RECENT_BLOCKS)
            .map(|d| Block {
                at: d.at,
                client: d.client.to_string(),
                protocol: d.protocol.clone(),
                target: d.target.clone(),
                rule: d.rule.clone(),
            })
            .collect();
        state.update(|s| {
            s.card.firmware = Some(report.firmware);
            s.card.tls_fingerprint = report.tls_fingerprint;
            s.card.rules_version = Some(report.rules_version);
            s.card.allowed = report.counters.allowed;
            s.card.denied = report.counters.denied;
            s.card.recent_blocks = blocks;
            s.card.vpns = report.vpns;
        });
    }

    async fn failed_probe(
        &mut self,
        nl: &Netlink,
        config: &Config,
        state: &ApplianceState,
        why: &str,
    ) {
        self.failures += 1;
        if self.failures >= config.card.probe_failures {
            self.absent(nl, state, &format!("the card does not answer ({why})"))
                .await;
        }
    }

    async fn absent(&mut self, nl: &Netlink, state: &ApplianceState, why: &str) {
        // Flushed even when already absent: cheap, and it repairs a route someone added by hand.
        if let Err(e) = nl.flush_table(CARD_TABLE).await {
            tracing::error!(error = %e, "cannot remove the card route; the prohibit rule still holds");
        }
        if self.present {
            tracing::warn!(reason = why, "card absent: nothing passes");
        }
        self.present = false;
        let why = why.to_string();
        state.update(|s| {
            if s.card.present || s.card.absent_reason.as_deref() != Some(why.as_str()) {
                s.card.since = unix_now();
            }
            s.card.present = false;
            s.card.absent_reason = Some(why);
        });
    }
}

/// The most of a status document the appliance reads (100 decisions are some 25 KiB).
const STATUS_LIMIT: usize = 1 << 20;

/// Asks the card's status endpoint; any failure (refused, timeout, not 200, not the card's
/// document) is a reason.
async fn probe_card(config: &Config) -> Result<proto::CardStatus, String> {
    let addr = SocketAddr::new(
        IpAddr::V4(config.card.inside_address),
        config.card.status_port,
    );
    let timeout = Duration::from_millis(config.card.probe_interval_ms.max(200));
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        // A JoinSet aborts its tasks when dropped: the connection ends with the probe, at the
        // timeout too.
        let mut connection_task = tokio::task::JoinSet::new();
        connection_task.spawn(connection);
        let request = http::Request::get("/status")
            .header(http::header::HOST, "card")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("status endpoint answered {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), STATUS_LIMIT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        drop(connection_task);
        Ok::<_, String>(body)
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    serde_json::from_slice::<proto::CardStatus>(&body)
        .map_err(|e| format!("status is not the card's JSON: {e}"))
}

fn is_card_link(config: &Config, name: &str) -> bool {
    if config.card.interface.is_empty() {
        sysfs::find_by_driver(&config.card.driver).as_deref() == Some(name)
    } else {
        config.card.interface == name
    }
}

fn find_card_link(config: &Config) -> Option<String> {
    if config.card.interface.is_empty() {
        sysfs::find_by_driver(&config.card.driver)
    } else if PathBuf::from("/sys/class/net")
        .join(&config.card.interface)
        .exists()
    {
        Some(config.card.interface.clone())
    } else {
        None
    }
}

async fn configure_card_link(nl: &Netlink, config: &Config, name: &str) {
    if let Err(e) = sysctl(&rp_filter_key(name), "2") {
        tracing::error!(link = name, error = %e, "cannot make reverse-path filtering loose on the card link");
    }
    let address = [(IpAddr::V4(config.card.address), config.card.prefix)];
    if let Err(e) = async {
        nl.link_up(name).await?;
        nl.set_addresses(name, &address).await
    }
    .await
    {
        tracing::error!(link = name, error = %e, "cannot configure the card link");
    }
}

async fn apply_lease(nl: &Netlink, config: &Config, lease: &Lease) {
    let outside = &config.outside.interface;
    tracing::info!(address = %lease.address, prefix = lease.prefix, router = ?lease.router, dns = ?lease.dns, "outside address");
    if let Err(e) = nl
        .set_addresses(outside, &[(IpAddr::V4(lease.address), lease.prefix)])
        .await
    {
        tracing::error!(error = %e, "cannot set the outside address");
    }
    if let Some(router) = lease.router
        && let Err(e) = nl.replace_default_route(MAIN_TABLE, router, outside).await
    {
        tracing::error!(error = %e, "cannot set the outside default route");
    }
    let servers = if lease.dns.is_empty() {
        config.outside.dns.clone()
    } else {
        lease.dns.clone()
    };
    if let Err(e) = services::write_resolvers(&config.paths.run_dir, &servers) {
        tracing::error!(error = %e, "cannot write the resolvers for dnsmasq");
    }
}

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

async fn refresh_links(
    nl: &Netlink,
    config: &Config,
    card: Option<&str>,
    state: &ApplianceState,
    started: Instant,
) {
    let mut links = Vec::new();
    for (role, name) in [
        (Role::Inside, Some(config.inside.interface.as_str())),
        (Role::Outside, Some(config.outside.interface.as_str())),
        (Role::Card, card),
    ] {
        let name = name.unwrap_or("");
        let up = !name.is_empty() && nl.link_is_up(name).await.unwrap_or(false);
        let addresses = if name.is_empty() {
            Vec::new()
        } else {
            nl.addresses(name)
                .await
                .unwrap_or_default()
                .iter()
                .map(|(a, p)| format!("{a}/{p}"))
                .collect()
        };
        let (rx_bytes, tx_bytes) = sysfs::counters(name).unwrap_or((0, 0));
        links.push(LinkState {
            role,
            name: name.to_string(),
            up,
            addresses,
            rx_bytes,
            tx_bytes,
        });
    }
    state.update(|s| {
        s.links = links;
        s.uptime_secs = started.elapsed().as_secs();
    });
}

fn apply_or_log(ruleset: &str) {
    if let Err(e) = firewall::apply(ruleset) {
        tracing::error!(error = %e, "cannot apply the full ruleset; the previous one stays");
    }
}

/// The reverse-path filter setting of one link.
fn rp_filter_key(link: &str) -> String {
    format!("net/ipv4/conf/{link}/rp_filter")
}

fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = PathBuf::from("/proc/sys").join(key);
    std::fs::write(&path, value).with_context(|| format!("cannot set {}", path.display()))
}

fn set_executable(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot status endpoint on loopback answering `head` and `body`, and the config that
    /// points the probe at it.
    async fn card_answering(head: &'static str, body: Vec<u8>) -> Config {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            let reply = format!("{head}\r\ncontent-length: {}\r\n\r\n", body.len());
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
        });
        let mut config = Config::default();
        config.card.inside_address = Ipv4Addr::LOCALHOST;
        config.card.status_port = port;
        config
    }

    fn document() -> proto::CardStatus {
        proto::CardStatus {
            firmware: "cardfw 0.1.0".into(),
            rules_version: "v7".into(),
            tls_fingerprint: None,
            rules_loaded_at: 1,
            rules: 2,
            uptime_secs: 3,
            connections_open: 0,
            counters: proto::CounterSnapshot {
                denied: 1,
                ..Default::default()
            },
            accept_backoffs: 0,
            refused_at_listener_cap: 0,
            recent: vec![proto::Decision {
                at: 4,
                client: "10.0.0.2".parse().unwrap(),
                protocol: "dns".into(),
                target: "ads.example".into(),
                action: proto::Action::Deny,
                rule: "no-ads".into(),
            }],
            vpns: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_probe_reads_the_card_document() {
        let body = serde_json::to_vec_pretty(&document()).unwrap();
        let config = card_answering("HTTP/1.1 200 OK", body).await;
        assert_eq!(probe_card(&config).await.unwrap(), document());
    }

    #[tokio::test]
    async fn another_answer_is_a_reason() {
        let config = card_answering("HTTP/1.1 404 Not Found", b"no\n".to_vec()).await;
        let why = probe_card(&config).await.unwrap_err();
        assert!(why.contains("404"), "{why}");

        let config = card_answering("HTTP/1.1 200 OK", b"{\"rules\": 1}".to_vec()).await;
        let why = probe_card(&config).await.unwrap_err();
        assert!(why.contains("not the card's JSON"), "{why}");
    }
}
