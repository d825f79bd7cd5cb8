//! `policyd-loadgen`: the scale benchmark. Enrols N simulated cards with a running policyd
//! (each its own key, CSR and certificate, like a real card), holds N long polls over mutual
//! TLS, publishes one bundle and measures how long each card takes to receive it; then reads
//! policyd's memory from /proc. See BENCHMARKS.md for the command and the figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use http::{Method, StatusCode};
use policy_client::{Client, ClientIdentity};
use policyd::admin::{AdminClient, RuleFiles};
use proto::policy::{self, EnrolRequest, EnrolResponse, Outcome, Report};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "enrol N simulated cards, hold N long polls, publish, measure the fan-out")]
struct Args {
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    server: String,
    /// policyd's data directory (for ca.pem and admin.token).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1000)]
    cards: usize,
    #[arg(long, default_value = "bench")]
    group: String,
    /// policyd's pid, to read its memory (VmRSS, VmHWM) from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Enrolments and poll connections opened at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
}

const POLL_TIMEOUT: Duration = Duration::from_secs(600);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    policyd::raise_file_limit();
    let admin = AdminClient::from_dir(&args.server, &args.dir)?;
    let ca_pem = std::fs::read_to_string(args.dir.join(policyd::fleet::CA_CERT))?;

    let started = Instant::now();
    let tokens = admin.tokens(&args.group, args.cards, None).await?;
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut enrolments = tokio::task::JoinSet::new();
    for token in tokens {
        let gate = gate.clone();
        let (server, ca_pem) = (args.server.clone(), ca_pem.clone());
        enrolments.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("open");
            enrol(&server, &ca_pem, &token).await
        });
    }
    let mut cards = Vec::with_capacity(args.cards);
    while let Some(card) = enrolments.join_next().await {
        cards.push(card??);
    }
    eprintln!(
        "{} cards enrolled in {:.1?}",
        cards.len(),
        started.elapsed()
    );
    let rss_idle = memory(args.server_pid);

    // Everything the cards run now: the group's newest version (0 if none yet).
    let status = admin.status().await?;
    let current = status
        .groups
        .iter()
        .find(|(g, _)| *g == args.group)
        .map_or(0, |(_, v)| *v);
    let polls_start = policyd_clock();
    let published_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut polls = tokio::task::JoinSet::new();
    for (i, card) in cards.into_iter().enumerate() {
        // Handshakes in waves of `concurrency`, as a fleet coming online would, not all at once.
        if i > 0 && i % args.concurrency == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let published_at = published_at.clone();
        polls.spawn(async move { poll_until_newer(&card, current, &published_at).await });
    }
    // Wait until policyd has seen every card's poll (last seen after the polls began).
    let wait_start = Instant::now();
    loop {
        let status = admin.status().await?;
        let polling = status
            .cards
            .iter()
            .filter(|c| c.group == args.group && c.last_seen.is_some_and(|t| t >= polls_start))
            .count();
        if polling >= args.cards {
            break;
        }
        if wait_start.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {polling} of {} cards are polling after 300 s",
                args.cards
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A moment for the last requests to reach their wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_polling = memory(args.server_pid);
    eprintln!(
        "{} long polls held after {:.1?}",
        args.cards,
        wait_start.elapsed()
    );

    let rules = tempfile_with(
        "bench.txt",
        "dns: allow dns\nweb: allow http host allowed.test\ndefault deny\n",
    )?;
    let start = Instant::now();
    published_at.set(start).expect("set once");
    let version = admin
        .publish(
            &args.group,
            RuleFiles::read(&rules)?,
            None,
            Duration::from_secs(86_400),
        )
        .await?;
    let publish_call = start.elapsed();
    let mut latencies = Vec::with_capacity(args.cards);
    let mut failures = 0;
    while let Some(done) = polls.join_next().await {
        match done? {
            Ok(latency) => latencies.push(latency),
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("a card failed: {e:#}");
                }
            }
        }
    }
    let rss_after = memory(args.server_pid);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let within_2s = latencies
        .iter()
        .filter(|d| **d <= Duration::from_secs(2))
        .count();
    println!(
        "cards={} version={version} publish_call_ms={:.0} fetched={} failed={failures} \
         within_2s={:.2}% p50_ms={:.0} p99_ms={:.0} max_ms={:.0} \
         policyd_rss_idle_mb={} policyd_rss_polling_mb={} policyd_rss_after_mb={} policyd_peak_mb={}",
        args.cards,
        publish_call.as_secs_f64() * 1000.0,
        latencies.len(),
        100.0 * within_2s as f64 / args.cards as f64,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        rss_idle.0,
        rss_polling.0,
        rss_after.0,
        rss_after.1,
    );
    Ok(())
}

async fn enrol(server: &str, ca_pem: &str, token: &str) -> Result<Client> {
    let client = Client::new(server, ca_pem, None)?;
    let (key_pem, csr_pem) = policy_client::new_key_and_csr()?;
    let request = EnrolRequest {
        token: token.to_string(),
        csr_pem,
    };
    let answer = client
        .post_json(
            policy::ENROL_PATH,
            &[],
            &request,
            CALL_TIMEOUT,
            policy::MAX_JSON_BODY,
        )
        .await?;
    if answer.status != StatusCode::OK {
        bail!("enrolment refused: {}", answer.error_text());
    }
    let response: EnrolResponse = serde_json::from_slice(&answer.body)?;
    Ok(Client::new(
        server,
        ca_pem,
        Some(&ClientIdentity {
            certificate_pem: response.certificate_pem,
            key_pem,
        }),
    )?)
}

/// Polls like a card until a version above `current` arrives (after the publish), reports it,
/// and returns the time from the publish to its arrival.
async fn poll_until_newer(
    card: &Client,
    current: u64,
    published_at: &tokio::sync::OnceCell<Instant>,
) -> Result<Duration> {
    loop {
        let answer = card
            .request(
                Method::GET,
                &format!("{}?after={current}", policy::BUNDLE_PATH),
                &[],
                None,
                POLL_TIMEOUT,
                policy::MAX_BUNDLE_BODY,
            )
            .await
            .context("poll")?;
        match answer.status {
            StatusCode::NO_CONTENT => continue,
            StatusCode::OK => {
                let arrived = Instant::now();
                let start = published_at.get().context("a bundle before the publish")?;
                let version = answer
                    .headers
                    .get(policy::VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let report = Report {
                    running_version: version,
                    offered_version: Some(version),
                    outcome: Outcome::Applied,
                    error: None,
                };
                card.post_json(
                    policy::REPORT_PATH,
                    &[],
                    &report,
                    CALL_TIMEOUT,
                    policy::MAX_JSON_BODY,
                )
                .await
                .context("report")?;
                return Ok(arrived.saturating_duration_since(*start));
            }
            status => bail!("poll answered {status}: {}", answer.error_text()),
        }
    }
}

/// policyd stores Unix seconds; a poll that began now is "seen" at or after this.
fn policyd_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (VmRSS, VmHWM) of a process in MB, from /proc.
fn memory(pid: Option<u32>) -> (u64, u64) {
    let Some(pid) = pid else { return (0, 0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tempfile_with(name: &str, text: &str) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("policyd-loadgen-{}-{name}", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}
