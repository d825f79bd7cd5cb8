//! `cardwall-lab [--peer-io]`: the whole system in network namespaces on this machine, until
//! Ctrl-C (`./x lab` runs it).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "cardwall lab: the whole system in network namespaces on this machine, until Ctrl-C"
)]
struct Args {
    /// Link the card by Peer I/O over PC/SC (pcscd + vpcd) instead of an EEM-like veth.
    #[arg(long)]
    peer_io: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.peer_io) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(peer_io: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let options = lab::Options {
        bin_dir: lab::sibling_binaries(),
        tag: "lab".into(),
        rules: lab::DEMO_RULES.into(),
        peer_io,
    };
    eprintln!("starting the lab (namespaces, links, dnsmasq, origins, cardfw, appliance)…");
    let lab = lab::SystemLab::start(&options)?;
    println!("{}", lab.instructions());
    runtime.block_on(tokio::signal::ctrl_c())?;
    eprintln!("stopping the lab and removing what it created…");
    drop(lab);
    Ok(())
}
