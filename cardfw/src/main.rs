//! `cardfw --config cardfw.toml`: the card's proxy firewall.
//! `cardfw --config cardfw.toml check`: check the configuration and the rules, and exit.
//! `cardfw --config cardfw.toml fingerprint`: the card web page certificate's SHA-256.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "cardwall card firmware: the proxy firewall")]
struct Args {
    /// The configuration file (see the README's configuration section).
    #[arg(long, default_value = "/etc/cardwall/cardfw.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration and the rules, print what is wrong, and exit.
    Check,
    /// Print the SHA-256 fingerprint of the card web page's certificate (made on first use),
    /// to compare with what a browser shows.
    Fingerprint,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match cardfw::config::Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(args.command, Some(Command::Fingerprint)) {
        let identity = cardfw::run::open_store(&config).and_then(|store| {
            let store = store.ok_or_else(|| {
                anyhow::anyhow!("no `store` in the configuration: the card has no web page")
            })?;
            Ok(cardfw::store::tls::tls_identity(
                &store,
                config.inside_address,
            )?)
        });
        return match identity {
            Ok(identity) => {
                println!("{}", identity.fingerprint());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if matches!(args.command, Some(Command::Check)) {
        let loaded = cardfw::run::open_store(&config)
            .map_err(|e| format!("{e:#}"))
            .and_then(|store| cardfw::run::load_rules(&config, store.as_ref()));
        return match loaded {
            Ok(rules) => {
                println!(
                    "ok: {} ({} rules)",
                    rules.version,
                    rules.rules.stats().rules
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cardfw::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
