//! `appliance run --config appliance.toml`: the appliance daemon.
//! `appliance base-ruleset`: print the fail-closed base ruleset (for `nft -f`), so a boot
//! script can close everything before any link is up, with no daemon running yet.
//! `appliance peer-io --reader NAME --tap NAME`: the Peer I/O link to an ISO 7816-only card.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serve::daemon::ConfigFile;

#[derive(Parser)]
#[command(
    version,
    about = "cardwall appliance: routes everything via the card, fails closed"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance daemon.
    Run {
        #[arg(long, default_value = "/etc/cardwall/appliance.toml")]
        config: PathBuf,
    },
    /// Run the Peer I/O server for the card in a PC/SC reader, bridged to a TAP device that
    /// stands for the card link.
    PeerIo {
        /// The PC/SC reader the card is in.
        #[arg(long)]
        reader: String,
        /// The TAP device to create (or attach to) for the card link.
        #[arg(long)]
        tap: String,
    },
    /// Print the fail-closed base ruleset (nothing forwarded, only loopback delivered) for
    /// `nft -f`; the boot scripts apply it before any link comes up.
    BaseRuleset,
}

fn main() -> ExitCode {
    serve::daemon::init_logging();
    let runtime = match serve::daemon::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let outcome = match Args::parse().command {
        Command::Run { config } => match appliance::config::Config::load(&config) {
            Ok(config) => runtime.block_on(appliance::daemon::run(config)),
            Err(e) => {
                // An invalid configuration still closes everything before giving up.
                let closed = appliance::firewall::apply(&appliance::firewall::base_ruleset());
                eprintln!("error: {e}");
                if let Err(nft) = closed {
                    eprintln!(
                        "error: and the fail-closed base ruleset could not be applied: {nft}"
                    );
                }
                return ExitCode::from(2);
            }
        },
        Command::BaseRuleset => {
            print!("{}", appliance::firewall::base_ruleset());
            Ok(())
        }
        Command::PeerIo { reader, tap } => runtime.block_on(async move {
            let link = apdu::tap::open(&tap)?;
            tokio::task::spawn_blocking(move || appliance::peerio::run(&reader, link)).await?
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
