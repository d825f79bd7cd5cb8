//! `cardfw --config cardfw.toml`: the card's proxy firewall.
//! `cardfw --config cardfw.toml check`: check the configuration and the rules, and exit.
//! `cardfw --config cardfw.toml fingerprint`: the card web page certificate's SHA-256.
//! `cardfw --config cardfw.toml inspection-ca`: the card's inspection CA certificate (PEM), to
//! install in the browsers behind the card.
//! `cardfw --config cardfw.toml enroll --server URL --token T --ca ca.pem`: join a policy
//! server's fleet; `unenroll`: leave it. Both read the PIN from standard input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serve::daemon::ConfigFile;

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
    /// Print the card's TLS inspection CA certificate, PEM (made on first use; its key stays
    /// sealed in the store): what browsers must trust for sites an `inspect` rule names.
    InspectionCa,
    /// Enrol with a policy server (the PIN is read from standard input): the card makes its
    /// key, gets its certificate, and pins the server's CA, the policy key and its group.
    Enroll {
        /// The policy server, `https://HOST:PORT`.
        #[arg(long)]
        server: String,
        /// The one-time enrolment token (`policyd token`).
        #[arg(long)]
        token: String,
        /// The fleet CA certificate (policyd's `ca.pem`): the only issuer trusted for the server.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Leave the policy server (the PIN is read from standard input); the rules in force stay
    /// and become editable again.
    Unenroll,
    /// Print a new card's setup code (what its label says), needed to choose its first PIN;
    /// nothing once the card is set up. Reads the store without changing it, so it may run
    /// beside the card.
    SetupCode,
    /// Console only: wipe the rules, PIN, PUK, list files and audit log and make the card new
    /// (a new setup code). Stop the card first. Needs `--yes`.
    FactoryReset {
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    serve::daemon::init_logging();
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
    match &args.command {
        Some(Command::InspectionCa) => return inspection_ca(&config),
        Some(Command::SetupCode) => return setup_code(&config),
        Some(Command::FactoryReset { yes }) => return factory_reset(&config, *yes),
        _ => {}
    }
    let managed = match &args.command {
        Some(Command::Enroll { server, token, ca }) => Some(enroll(&config, server, token, ca)),
        Some(Command::Unenroll) => Some(unenroll(&config)),
        _ => None,
    };
    if let Some(outcome) = managed {
        return match outcome {
            Ok(message) => {
                println!("{message}");
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
            .and_then(|store| cardfw::firewall::LoadedRules::load(&config, store.as_ref()));
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
    let runtime = match serve::daemon::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    match runtime.block_on(cardfw::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `enroll` and `unenroll` both need the store and the PIN (one line on standard input).
fn store_and_pin(
    config: &cardfw::config::Config,
) -> anyhow::Result<(cardfw::store::Store, zeroize::Zeroizing<String>)> {
    use anyhow::Context;
    let store = cardfw::run::open_store(config)?
        .context("no `store` in the configuration: only a card with a rule store can be managed")?;
    let mut pin = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut pin)
        .context("cannot read the PIN from standard input")?;
    Ok((store, zeroize::Zeroizing::new(pin.trim().to_string())))
}

fn enroll(
    config: &cardfw::config::Config,
    server: &str,
    token: &str,
    ca: &std::path::Path,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let (store, pin) = store_and_pin(config)?;
    let enrolment = cardfw::managed::enroll(&store, &pin, server, &ca_pem, token)?;
    Ok(format!(
        "enrolled with {} as card {} in group {}: the rules now come from the policy server",
        enrolment.server, enrolment.card_id, enrolment.group
    ))
}

fn unenroll(config: &cardfw::config::Config) -> anyhow::Result<String> {
    let (store, pin) = store_and_pin(config)?;
    let enrolment = cardfw::managed::unenroll(&store, &pin)?;
    Ok(format!(
        "left {} (card {}): the rules in force stay and are editable again",
        enrolment.server, enrolment.card_id
    ))
}

fn setup_code(config: &cardfw::config::Config) -> ExitCode {
    let Some(dir) = &config.store else {
        eprintln!("error: no `store` in the configuration: the card has no PIN to set up");
        return ExitCode::FAILURE;
    };
    match cardfw::store::Store::read_setup_code(dir) {
        Ok(Some(code)) => {
            println!("{}", cardfw::store::format_setup_code(&code).as_str());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("the card is set up: it has no setup code any more");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e} (a new store is made when cardfw first starts)");
            ExitCode::FAILURE
        }
    }
}

fn factory_reset(config: &cardfw::config::Config, yes: bool) -> ExitCode {
    if !yes {
        eprintln!(
            "error: a factory reset wipes the rules, the PIN, the PUK and the audit log: add --yes"
        );
        return ExitCode::from(2);
    }
    let outcome = cardfw::run::open_store(config).and_then(|store| {
        let store = anyhow::Context::context(store, "no `store` in the configuration")?;
        store.factory_reset()?;
        Ok(store)
    });
    match outcome {
        Ok(store) => {
            println!("the card is new: set it up with its setup code");
            cardfw::iso7816::log_setup_code(&store);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn inspection_ca(config: &cardfw::config::Config) -> ExitCode {
    let ca = cardfw::run::open_store(config).and_then(|store| {
        let store = store.ok_or_else(|| {
            anyhow::anyhow!("no `store` in the configuration: the card has no inspection CA")
        })?;
        Ok(cardfw::inspect::CardCa::load_or_create(&store)?)
    });
    match ca {
        Ok(ca) => {
            print!("{}", ca.cert_pem());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
