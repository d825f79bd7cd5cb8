//! Starting the card: listeners, interception, reloads, and a clean exit that removes the
//! interception ruleset again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::AdminState;
use crate::config::Config;
use crate::firewall::{Firewall, LoadedRules};
use crate::inspect::Inspection;
use crate::proxy::{self, http::Mode};
use crate::store::{PinCost, Store};
use crate::{intercept, status};

/// How often the rule file is checked for changes (the store rewrites it atomically).
const RULES_POLL: Duration = Duration::from_secs(2);

/// The first rule set of a new store when the configured rule file cannot be read: name
/// lookups only, everything else denied, until someone logs in and writes rules.
const FIRST_RULES: &str = "dns: allow dns\ndefault deny\n";

/// Opens the configured store (creating it on a first start), if there is one.
pub fn open_store(config: &Config) -> Result<Option<Store>> {
    let Some(dir) = &config.store else {
        return Ok(None);
    };
    let first = std::fs::read_to_string(&config.rules).unwrap_or_else(|_| FIRST_RULES.to_string());
    let store = Store::open_or_create(dir, &first, PinCost::PRODUCTION)
        .with_context(|| format!("cannot open the rule store in {}", dir.display()))?;
    // Until the card is set up, its console shows the setup code at every start.
    crate::iso7816::log_setup_code(&store);
    Ok(Some(store))
}

/// How often an unlocked client certificate is checked for its idle time.
const CLIENT_CERT_IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How often unlocked VPNs are checked for their idle time.
const VPN_IDLE_CHECK: Duration = Duration::from_secs(5);

/// Runs the card until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let started = Instant::now();
    // Before any listener: the connection caps, which refuse cleanly, must come before the
    // descriptor limit, which refuses everyone.
    if let Err(error) = crate::accept::raise_descriptor_limit(&config.limits) {
        tracing::warn!(%error, "the descriptor limit stays as it is");
    }
    let store = open_store(&config)?;
    let rules = LoadedRules::load(&config, store.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(version = %rules.version, rules = rules.rules.stats().rules, "rules loaded");
    let firewall = Firewall::new(config, rules, store);
    let config = &firewall.config;
    // The CA lives in the store: a card without one refuses `inspect` rules when they match.
    if let Some(store) = firewall.store() {
        let inspection = Inspection::start(
            store,
            config.inspect.trusted_cas.as_deref(),
            config.inspect.client_cert_idle(),
        )
        .context("cannot set up TLS inspection")?;
        tracing::info!(fingerprint = %inspection.ca().fingerprint(), "the card's inspection CA");
        let identity = inspection.client_identity.clone();
        let _ = firewall.inspection.set(std::sync::Arc::new(inspection));
        // The idle lock drops the key from memory even when nothing asks for it.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLIENT_CERT_IDLE_CHECK);
            loop {
                tick.tick().await;
                identity.lock_if_idle();
            }
        });
    }
    // The VPNs' keys live in the store; their routes go in before any listener, so no
    // connection to their networks can leave in clear.
    if !config.vpn.is_empty() {
        let store = firewall
            .store()
            .context("[vpn.*] needs a `store`: the card's WireGuard keys are sealed there")?;
        let vpns = crate::vpn::Vpns::start(config, store)
            .await
            .context("cannot start the VPNs")?;
        firewall.vpns.store(Arc::new(vpns));
    }
    // Those added on the card page and those the policy server pushed, as they were kept;
    // like the file's, before any listener.
    firewall
        .start_added_vpns()
        .await
        .context("cannot start the VPNs added on the card page or pushed by the policy server")?;
    let idle = firewall.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(VPN_IDLE_CHECK);
        loop {
            tick.tick().await;
            idle.vpns.load_full().lock_idle().await;
        }
    });
    let inside = config.inside_address;
    let at = |port| SocketAddr::new(inside, port);
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(proxy::http::serve(
        bind(at(config.ports.explicit_proxy)).await?,
        firewall.clone(),
        Mode::Explicit,
    ));
    tasks.spawn(status::serve(
        bind(at(config.ports.status)).await?,
        firewall.clone(),
        started,
    ));
    let dns_udp = UdpSocket::bind(at(config.ports.dns))
        .await
        .with_context(|| format!("cannot listen on udp {}", at(config.ports.dns)))?;
    // One cache for both transports: a name asked over UDP is answered from it over TCP too.
    let cache = Arc::new(proxy::dns::Cache::new(config.dns.cache_entries));
    tasks.spawn(proxy::dns::serve_udp(
        dns_udp,
        firewall.clone(),
        cache.clone(),
    ));
    tasks.spawn(proxy::dns::serve_tcp(
        bind(at(config.ports.dns)).await?,
        firewall.clone(),
        cache,
    ));

    // A card with a store has its web page and may be managed; one with a rule file has neither.
    if let Some(admin) = AdminState::new(firewall.clone()) {
        let identity = crate::store::tls::tls_identity(admin.store(), inside)
            .context("cannot make the web page's TLS identity")?;
        let fingerprint = identity.fingerprint();
        tracing::info!(%fingerprint, "the card's web page certificate");
        let _ = firewall.tls_fingerprint.set(fingerprint);
        tasks.spawn(crate::admin::serve(
            bind(at(config.ports.admin)).await?,
            identity.server_config(),
            admin,
        ));
        tasks.spawn(crate::managed::poller::poll_forever(
            firewall.clone(),
            config.policy.clone(),
            crate::managed::network::watch(config.link.clone(), config.outside_address),
        ));
        tasks.spawn(crate::managed::requests::send_forever(
            firewall.clone(),
            config.policy.clone(),
        ));
    }

    if let Some(reader) = config.iso7816.vpcd {
        let peer = match &config.iso7816.peer_io_tap {
            Some(tap) => Some(crate::iso7816::peerio::PeerLink::new(
                apdu::tap::open(tap).with_context(|| format!("cannot open TAP device {tap}"))?,
            )),
            None => None,
        };
        crate::iso7816::vpcd::spawn(reader, firewall.clone(), peer)
            .context("cannot start the vpcd card thread")?;
    }

    if config.transparent {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let listener = |port| {
            intercept::transparent_listener(local(port))
                .with_context(|| format!("cannot listen transparently on {}", local(port)))
        };
        tasks.spawn(proxy::http::serve(
            listener(config.ports.transparent_http)?,
            firewall.clone(),
            Mode::Transparent,
        ));
        tasks.spawn(proxy::tls::serve(
            listener(config.ports.transparent_https)?,
            firewall.clone(),
        ));
        tasks.spawn(proxy::tcp::serve(
            listener(config.ports.transparent_tcp)?,
            firewall.clone(),
        ));
        intercept::install(config)
            .await
            .context("cannot install the interception ruleset")?;
        tracing::info!(link = %config.link, "transparent interception installed");
    }
    tracing::info!(inside = %inside, outside = %config.outside_address, "card firewall running");

    let outcome = watch(&firewall, &mut tasks).await;
    // Locked and gone before the process is: a kernel WireGuard link would outlive it.
    firewall.vpns.load_full().stop().await;
    if firewall.config.transparent {
        intercept::remove().await;
    }
    outcome
}

/// Waits for a signal or a failed task; reloads the rules on SIGHUP or when the file changes.
async fn watch(
    firewall: &Firewall,
    tasks: &mut tokio::task::JoinSet<std::io::Result<()>>,
) -> Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(RULES_POLL);
    let mut seen = firewall.rules_stamp();
    loop {
        tokio::select! {
            _ = hangup.recv() => firewall.reload(),
            _ = poll.tick() => {
                let now = firewall.rules_stamp();
                if now != seen {
                    seen = now;
                    firewall.reload();
                }
            }
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            Some(ended) = tasks.join_next() => {
                // A listener stopping means the card no longer filters: stop (and so block)
                // rather than run half a firewall.
                return match ended {
                    Ok(Err(e)) => Err(anyhow::anyhow!("a listener failed: {e}")),
                    Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped")),
                    Err(e) => Err(anyhow::anyhow!("a listener crashed: {e}")),
                };
            }
        }
    }
}
