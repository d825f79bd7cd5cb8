//! `policyd`: the cardwall policy server and its administration commands. See the README's
//! "Policy server" section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use policyd::admin::{AdminClient, AdminError, RuleFiles};
use policyd::db::Db;
use policyd::fleet::Fleet;
use policyd::service::{AppState, Settings};
use rules::bundle::{self, Bundle};

#[derive(Parser)]
#[command(
    version,
    about = "cardwall policy server: signed rule bundles for enrolled cards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a running policyd is and how the administrator reaches it.
#[derive(Args)]
struct Remote {
    /// The policy server, `https://HOST:PORT`.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    server: String,
    /// policyd's data directory: `ca.pem` and `admin.token` are read from it.
    #[arg(long, default_value = "/var/lib/policyd")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Fleet CA commands.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run the server.
    Serve {
        /// The data directory `policyd ca init` made.
        #[arg(long, default_value = "/var/lib/policyd")]
        dir: PathBuf,
        /// Database: `sqlite://<dir>/policyd.db` by default, or `postgres://…`.
        #[arg(long)]
        db: Option<String>,
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// Seconds a long poll is held open before it is answered "nothing new".
        #[arg(long, default_value_t = 60)]
        hold_secs: u64,
        /// Hours an enrolment token stays valid unless `policyd token --ttl-hours` says.
        #[arg(long, default_value_t = 24)]
        token_ttl_hours: u64,
        /// Open access requests the server keeps at most, over every card (each card: 20).
        #[arg(long, default_value_t = 10_000)]
        max_open_requests: usize,
    },
    /// Make one-time enrolment tokens for a group (printed one a line).
    Token {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long)]
        ttl_hours: Option<u64>,
    },
    /// Check, version, sign and publish a rule file (and its list files) to a group.
    Publish {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        group: String,
        /// Days the bundle stays valid.
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
        /// PEM file of CA certificates the cards trust for inspected sites (certificates
        /// only: a file holding a private key is refused).
        #[arg(long, value_name = "PEM")]
        trusted_cas: Option<PathBuf>,
        rules: PathBuf,
    },
    /// Sign a bundle offline, with the policy key on this machine (then `policyd upload` it).
    Sign {
        #[arg(long, value_name = "PRIVATE_KEY_PEM")]
        key: PathBuf,
        #[arg(long)]
        group: String,
        /// The version: higher than the group's newest (`policyd status` shows it).
        #[arg(long)]
        version: u64,
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
        #[arg(long)]
        out: PathBuf,
        /// PEM file of CA certificates the cards trust for inspected sites (certificates
        /// only: a file holding a private key is refused).
        #[arg(long, value_name = "PEM")]
        trusted_cas: Option<PathBuf>,
        rules: PathBuf,
    },
    /// Upload a bundle signed offline.
    Upload {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        group: String,
        bundle: PathBuf,
    },
    /// Every card: group, version it runs, last seen, last error.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a card: its certificate is refused from now on.
    Revoke {
        #[command(flatten)]
        remote: Remote,
        card: String,
    },
    /// List the open access requests of the fleet's users (oldest first).
    Requests {
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve an access request: its rule goes into the card's overlay.
    Approve {
        #[command(flatten)]
        remote: Remote,
        card: String,
        id: String,
        /// The rule to add (one unnamed rule); default: one that allows just what was blocked.
        #[arg(long)]
        rule: Option<String>,
        /// For how many minutes; default: no limit.
        #[arg(long)]
        minutes: Option<u64>,
    },
    /// Push VPN peer settings to a card, or take them off.
    Vpn {
        #[command(subcommand)]
        command: VpnCommand,
    },
    /// Decline an access request, with a message the card's page shows.
    Decline {
        #[command(flatten)]
        remote: Remote,
        card: String,
        id: String,
        #[arg(long, default_value = "")]
        message: String,
    },
}

/// `policyd vpn …`: the VPNs pushed to one card in its overlay (never a private key: the card
/// makes its own and reports the public one, shown by `policyd status`).
#[derive(Subcommand)]
enum VpnCommand {
    /// Push a VPN to a card, or change its settings.
    Set {
        #[command(flatten)]
        remote: Remote,
        card: String,
        /// The VPN's name on the card (1 to 12 of a-z, 0-9, `-`).
        name: String,
        /// The corporate peer's WireGuard public key, base64.
        #[arg(long)]
        peer_key: String,
        /// Where the peer listens, `ADDRESS:PORT` (UDP).
        #[arg(long)]
        endpoint: SocketAddr,
        /// The card's address inside the tunnel.
        #[arg(long)]
        address: std::net::Ipv4Addr,
        /// A network reached only through the tunnel, e.g. `10.20.0.0/16` (repeat for more).
        #[arg(long = "network", required = true)]
        networks: Vec<String>,
        /// A name that belongs to the VPN, or `*.name` for every name under it (repeat).
        #[arg(long = "name")]
        names: Vec<String>,
        /// The corporate resolver, `ADDRESS:PORT`, inside the networks (needed with names).
        #[arg(long)]
        resolver: Option<SocketAddr>,
        /// The unlocked VPN locks again after this many seconds without a connection.
        #[arg(long, default_value_t = 1800)]
        idle_lock_secs: u64,
        /// WireGuard persistent keepalive, seconds (0: none).
        #[arg(long, default_value_t = 0)]
        keepalive_secs: u16,
    },
    /// Take a VPN off a card.
    Remove {
        #[command(flatten)]
        remote: Remote,
        card: String,
        name: String,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Make the fleet CA, the server certificate, the policy key and the admin token.
    Init {
        #[arg(long, default_value = "/var/lib/policyd")]
        dir: PathBuf,
        /// A DNS name or IP address cards use to reach the server (repeat for more).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    serve::daemon::init_logging();
    let runtime = match serve::daemon::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const DAY: u64 = 86_400;

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ca {
            command: CaCommand::Init { dir, names },
        } => {
            Fleet::init(&dir, &names)?;
            println!(
                "fleet CA made in {}: give cards {}/ca.pem with their enrolment token",
                dir.display(),
                dir.display()
            );
        }
        Command::Serve {
            dir,
            db,
            listen,
            hold_secs,
            token_ttl_hours,
            max_open_requests,
        } => {
            policyd::raise_file_limit();
            let fleet = Fleet::load(&dir)?;
            let url =
                db.unwrap_or_else(|| format!("sqlite://{}", dir.join("policyd.db").display()));
            let db = Db::connect(&url)
                .await
                .with_context(|| format!("cannot open the database {url}"))?;
            let settings = Settings {
                hold: Duration::from_secs(hold_secs.max(1)),
                token_ttl: Duration::from_secs(token_ttl_hours * 3600),
                max_open_requests,
            };
            let state = AppState::new(fleet, db, settings).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(%listen, "policyd serving");
            tokio::select! {
                served = policyd::server::serve(listener, state) => served?,
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate() => {}
            }
        }
        Command::Token {
            remote,
            group,
            count,
            ttl_hours,
        } => {
            let client = AdminClient::from_dir(&remote.server, &remote.dir)?;
            for token in client
                .tokens(
                    &group,
                    count,
                    ttl_hours.map(|h| Duration::from_secs(h * 3600)),
                )
                .await?
            {
                println!("{token}");
            }
        }
        Command::Publish {
            remote,
            group,
            expires_days,
            trusted_cas,
            rules,
        } => {
            let files = rule_files(&rules)?;
            let trusted_cas = trusted_cas_file(trusted_cas.as_deref())?;
            let client = AdminClient::from_dir(&remote.server, &remote.dir)?;
            let version = client
                .publish(
                    &group,
                    files,
                    trusted_cas,
                    Duration::from_secs(expires_days * DAY),
                )
                .await?;
            println!("published version {version} to group {group}");
        }
        Command::Sign {
            key,
            group,
            version,
            expires_days,
            out,
            trusted_cas,
            rules,
        } => {
            let key = bundle::signing_key_from_pem(
                &std::fs::read_to_string(&key)
                    .with_context(|| format!("cannot read {}", key.display()))?,
            )?;
            let files = rule_files(&rules)?;
            let lists = files
                .lists
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>();
            if let Err(errors) = rules::RuleSet::from_text(&files.name, &files.text, &lists) {
                bail!("{errors}");
            }
            let now = chrono::Utc::now();
            let bundle = Bundle {
                version,
                group,
                issued_at: now,
                expires_at: now + chrono::Duration::seconds((expires_days * DAY) as i64),
                rules: (files.name, files.text),
                list_files: files.lists,
                trusted_cas: trusted_cas_file(trusted_cas.as_deref())?,
                // VPNs are per card, in its overlay, which the server signs online.
                vpns: None,
            };
            std::fs::write(&out, bundle.sign(&key))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("signed {bundle} into {}", out.display());
        }
        Command::Upload {
            remote,
            group,
            bundle,
        } => {
            let bytes = std::fs::read(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let client = AdminClient::from_dir(&remote.server, &remote.dir)?;
            let version = client.upload(&group, bytes).await?;
            println!("uploaded version {version} to group {group}");
        }
        Command::Status { remote } => {
            let client = AdminClient::from_dir(&remote.server, &remote.dir)?;
            let status = client.status().await?;
            for (group, version) in &status.groups {
                println!("group {group}: newest version {version}");
            }
            println!(
                "{:<18} {:<12} {:>7} {:<20} {:<8} error",
                "card", "group", "version", "last seen (UTC)", "result"
            );
            for card in status.cards {
                println!(
                    "{:<18} {:<12} {:>7} {:<20} {:<8} {}",
                    card.id,
                    card.group,
                    card.running_version,
                    card.last_seen
                        .map_or("never".into(), |t| web::format::date_time(t.max(0) as u64)),
                    if card.revoked_at.is_some() {
                        "revoked".to_string()
                    } else {
                        card.last_outcome.unwrap_or_default()
                    },
                    card.last_error.unwrap_or_default().replace('\n', " "),
                );
            }
            for pushed in status.vpns {
                let vpn = &pushed.vpn;
                println!(
                    "vpn {} {}: peer {} endpoint {} address {} networks {}; card public key {}",
                    pushed.card_id,
                    vpn.name,
                    vpn.peer_public_key,
                    vpn.endpoint,
                    vpn.address,
                    vpn.networks.join(","),
                    pushed
                        .card_public_key
                        .as_deref()
                        .unwrap_or("not reported yet"),
                );
            }
        }
        Command::Revoke { remote, card } => {
            AdminClient::from_dir(&remote.server, &remote.dir)?
                .revoke(&card)
                .await?;
            println!("card {card} revoked");
        }
        Command::Requests { remote } => {
            let open = AdminClient::from_dir(&remote.server, &remote.dir)?
                .requests()
                .await?;
            for entry in open.requests {
                let blocked = &entry.request.blocked;
                println!(
                    "{} {} {} rule {} reason {:?}",
                    entry.card_id,
                    entry.request.id,
                    blocked.describe(),
                    blocked.rule,
                    entry.request.reason.unwrap_or_default(),
                );
            }
            if open.refused > 0 {
                println!("{} requests refused since the server started", open.refused);
            }
        }
        Command::Approve {
            remote,
            card,
            id,
            rule,
            minutes,
        } => {
            let version = AdminClient::from_dir(&remote.server, &remote.dir)?
                .approve(&proto::policy_admin::ApproveRequest {
                    card_id: card.clone(),
                    id,
                    rule,
                    minutes,
                })
                .await?;
            println!("approved: card {card} gets overlay version {version}");
        }
        Command::Vpn {
            command:
                VpnCommand::Set {
                    remote,
                    card,
                    name,
                    peer_key,
                    endpoint,
                    address,
                    networks,
                    names,
                    resolver,
                    idle_lock_secs,
                    keepalive_secs,
                },
        } => {
            let vpn = proto::policy::ManagedVpn {
                name: name.clone(),
                peer_public_key: peer_key,
                endpoint,
                address,
                networks,
                names,
                resolver,
                idle_lock_secs,
                keepalive_secs,
            };
            let version = AdminClient::from_dir(&remote.server, &remote.dir)?
                .set_vpn(&proto::policy_admin::SetVpnRequest {
                    card_id: card.clone(),
                    vpn,
                })
                .await?;
            println!(
                "VPN {name} pushed: card {card} gets overlay version {version}; \
                 `policyd status` shows the card's public key once it reports it"
            );
        }
        Command::Vpn {
            command: VpnCommand::Remove { remote, card, name },
        } => {
            let version = AdminClient::from_dir(&remote.server, &remote.dir)?
                .remove_vpn(&proto::policy_admin::RemoveVpnRequest {
                    card_id: card.clone(),
                    name: name.clone(),
                })
                .await?;
            println!("VPN {name} removed: card {card} gets overlay version {version}");
        }
        Command::Decline {
            remote,
            card,
            id,
            message,
        } => {
            AdminClient::from_dir(&remote.server, &remote.dir)?
                .decline(&proto::policy_admin::DeclineRequest {
                    card_id: card.clone(),
                    id,
                    message,
                })
                .await?;
            println!("declined the request of card {card}");
        }
    }
    Ok(())
}

/// The PEM text of `path`, checked as a card will check it (certificates only, within the
/// limits), so a mistake shows here and not on every card.
fn trusted_cas_file(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    bundle::check_trusted_cas(&text).with_context(|| format!("in {}", path.display()))?;
    Ok(Some(text))
}

/// Rule files, with parse errors printed as `file:line:col` and no other wrapping.
fn rule_files(path: &std::path::Path) -> Result<RuleFiles> {
    match RuleFiles::read(path) {
        Ok(files) => Ok(files),
        Err(AdminError::Rules(diagnostics)) => bail!("{diagnostics}"),
        Err(e) => Err(e.into()),
    }
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
