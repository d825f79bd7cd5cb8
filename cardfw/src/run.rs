//! Starting the card: listeners, interception, reloads, and a clean exit that removes the
//! interception ruleset again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::card::{Card, Counters, LoadedRules};
use crate::config::Config;
use crate::proxy::{self, http::Mode};
use crate::{intercept, status};

/// How often the rule file is checked for changes (the store rewrites it atomically).
const RULES_POLL: Duration = Duration::from_secs(2);

/// Runs the card until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let started = Instant::now();
    let rules = LoadedRules::from_file(&config.rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(version = %rules.version, rules = rules.rules.stats().rules, "rules loaded");
    let card = Card::new(config, rules);
    let config = &card.config;
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
        card.clone(),
        Mode::Explicit,
    ));
    tasks.spawn(status::serve(
        bind(at(config.ports.status)).await?,
        card.clone(),
        started,
    ));
    let dns_udp = UdpSocket::bind(at(config.ports.dns))
        .await
        .with_context(|| format!("cannot listen on udp {}", at(config.ports.dns)))?;
    // One cache for both transports: a name asked over UDP is answered from it over TCP too.
    let cache = Arc::new(proxy::dns::Cache::new(config.dns.cache_entries));
    tasks.spawn(proxy::dns::serve_udp_with_cache(
        dns_udp,
        card.clone(),
        cache.clone(),
    ));
    tasks.spawn(proxy::dns::serve_tcp_with_cache(
        bind(at(config.ports.dns)).await?,
        card.clone(),
        cache,
    ));

    if config.transparent {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let listener = |port| {
            intercept::transparent_listener(local(port))
                .with_context(|| format!("cannot listen transparently on {}", local(port)))
        };
        tasks.spawn(proxy::http::serve(
            listener(config.ports.transparent_http)?,
            card.clone(),
            Mode::Transparent,
        ));
        tasks.spawn(proxy::tls::serve(
            listener(config.ports.transparent_https)?,
            card.clone(),
        ));
        tasks.spawn(proxy::tcp::serve(
            listener(config.ports.transparent_tcp)?,
            card.clone(),
        ));
        intercept::install(config).context("cannot install the interception ruleset")?;
        tracing::info!(link = %config.link, "transparent interception installed");
    }
    tracing::info!(inside = %inside, outside = %config.outside_address, "card firewall running");

    let outcome = watch(&card, &mut tasks).await;
    if card.config.transparent {
        intercept::remove();
    }
    outcome
}

/// Waits for a signal or a failed task; reloads the rules on SIGHUP or when the file changes.
async fn watch(
    card: &Arc<Card>,
    tasks: &mut tokio::task::JoinSet<std::io::Result<()>>,
) -> Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(RULES_POLL);
    let mut seen = modified(card);
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(card),
            _ = poll.tick() => {
                let now = modified(card);
                if now != seen {
                    seen = now;
                    reload(card);
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

fn modified(card: &Card) -> Option<SystemTime> {
    std::fs::metadata(&card.config.rules)
        .and_then(|m| m.modified())
        .ok()
}

/// Loads the rule file again and swaps it in; on any error the running rules stay.
pub fn reload(card: &Card) {
    match LoadedRules::from_file(&card.config.rules) {
        Ok(rules) => {
            tracing::info!(version = %rules.version, rules = rules.rules.stats().rules, "rules reloaded");
            card.policy.replace(rules);
            Counters::bump(&card.events.counters.reloads);
        }
        Err(e) => {
            Counters::bump(&card.events.counters.reload_failures);
            tracing::error!("rules not reloaded, the previous ones stay in force:\n{e}");
        }
    }
}
