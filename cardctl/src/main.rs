//! `cardctl`: the cardwall card's PIN and rule file from the host, through PC/SC.
//!
//! PINs and PUKs are read from the terminal without echo, never from the command line (where
//! `ps` and the shell history would show them). When standard input is not a terminal (a
//! script, a test), they are read from it, one per line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use cardctl::Card;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(version, about = "cardwall card: PIN and rules over PC/SC")]
struct Args {
    /// The PC/SC reader (as `pcsc_scan` names it); default: the first one with a cardwall card.
    #[arg(long)]
    reader: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The rule version and size, PIN and PUK tries left.
    Status,
    /// Present the PIN (a wrong one costs a try).
    Verify,
    /// The rule file.
    Rules {
        #[command(subcommand)]
        command: RulesCmd,
    },
    /// The PIN.
    Pin {
        #[command(subcommand)]
        command: PinCmd,
    },
    /// A new card: print its setup code (what its label says), then ask for the first PIN
    /// (twice) and print the PUK, which the card shows only this once.
    Setup,
    /// Print a new card's setup code, for setting it up on its web page.
    SetupCode,
    /// The PUK.
    Puk {
        #[command(subcommand)]
        command: PukCmd,
    },
    /// Unblock the PIN with the PUK and set a new PIN.
    Unblock,
    /// Factory reset: wipe the rules, PIN, PUK, list files and audit log; the card gets a new
    /// setup code. Needs `--yes`.
    Reset {
        #[arg(long)]
        yes: bool,
    },
    /// Send raw command APDUs (hex, one per argument) after selecting the application, and
    /// print each response and its status word. For diagnosis: never put a PIN here.
    Send {
        #[arg(required = true)]
        apdus: Vec<String>,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Write the card's rule file to standard output.
    Get,
    /// Replace the card's rules with FILE (refused, and nothing changes, if it does not parse).
    Put { file: PathBuf },
}

#[derive(Subcommand)]
enum PukCmd {
    /// Change the PUK (current PUK, then the new one, 8 to 16 digits, twice).
    Change,
}

#[derive(Subcommand)]
enum PinCmd {
    /// Change the PIN (4 to 16 digits).
    Change,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut secrets = Secrets::new();
    let mut card = Card::connect(args.reader.as_deref())?;
    match args.command {
        Cmd::Status => {
            let status = card.status()?;
            println!("reader: {}", card.reader());
            println!(
                "rules: version {}, {} bytes",
                status.rules_version, status.rules_bytes
            );
            match status.pin_tries_left {
                0 => println!("PIN: blocked (unblock it with `cardctl unblock`)"),
                n => println!("PIN: {n} tries left"),
            }
            match status.puk_tries_left {
                0 => println!("PUK: blocked"),
                n => println!("PUK: {n} tries left"),
            }
            println!(
                "commands refused since the card was powered: {}",
                status.refused_commands
            );
            if status.needs_setup {
                println!("a new card, not set up: set its PIN with `cardctl setup`");
            }
        }
        Cmd::Verify => {
            card.verify(&secrets.read("PIN")?)?;
            println!("PIN correct");
        }
        Cmd::Rules {
            command: RulesCmd::Get,
        } => {
            card.verify(&secrets.read("PIN")?)?;
            let rules = card.read_rules()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&rules)?;
            out.flush()?;
        }
        Cmd::Rules {
            command: RulesCmd::Put { file },
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            card.verify(&secrets.read("PIN")?)?;
            let version = card.write_rules(&text)?;
            println!("rules saved as version {version}");
        }
        Cmd::Pin {
            command: PinCmd::Change,
        } => {
            let old = secrets.read("current PIN")?;
            let new = secrets.read_new("new PIN")?;
            card.change_pin(&old, &new)?;
            println!("PIN changed");
        }
        Cmd::Setup => {
            let Some(code) = card.setup_code()? else {
                bail!("the card is already set up");
            };
            println!("setup code: {}", group(&code));
            let pin = secrets.read_new("new PIN")?;
            let puk = card.setup(&code, &pin)?;
            println!(
                "the card is set up. Its PUK, shown only this once: {}",
                group(&puk)
            );
            println!("write it down and keep it apart from the card: it unblocks the PIN");
        }
        Cmd::SetupCode => match card.setup_code()? {
            Some(code) => println!("{}", group(&code)),
            None => bail!("the card is set up: it has no setup code any more"),
        },
        Cmd::Puk {
            command: PukCmd::Change,
        } => {
            let old = secrets.read("current PUK")?;
            let new = secrets.read_new("new PUK")?;
            card.change_puk(&old, &new)?;
            println!("PUK changed");
        }
        Cmd::Reset { yes } => {
            if !yes {
                bail!(
                    "a factory reset wipes the rules, the PIN, the PUK and the audit log: add --yes"
                );
            }
            card.factory_reset()?;
            println!("the card is new: set it up with `cardctl setup`");
        }
        Cmd::Unblock => {
            let puk = secrets.read("PUK")?;
            let new = secrets.read_new("new PIN")?;
            card.unblock(&puk, &new)?;
            println!("PIN unblocked and set");
        }
        Cmd::Send { apdus } => {
            for text in apdus {
                let bytes = hex::decode(&text)
                    .ok()
                    .with_context(|| format!("{text:?} is not an even number of hex digits"))?;
                // Sent as given, even when it is not a valid APDU: that is what it is for.
                let response = card.transmit_raw(&bytes)?;
                println!("{} {}", hex::encode_upper(&response.data), response.sw);
            }
        }
    }
    Ok(())
}

/// Digits in groups of four, as the card's label and page show codes.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 4);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Where PINs come from: the terminal (no echo), or standard input when it is not one.
struct Secrets {
    terminal: bool,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            terminal: std::io::stdin().is_terminal(),
        }
    }

    fn read(&mut self, what: &str) -> Result<Zeroizing<String>> {
        if self.terminal {
            let secret = rpassword::prompt_password(format!("{what}: "))
                .with_context(|| format!("cannot read the {what} from the terminal"))?;
            return Ok(Zeroizing::new(secret));
        }
        let mut line = Zeroizing::new(String::new());
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            bail!("no {what} on standard input");
        }
        Ok(Zeroizing::new(
            line.trim_end_matches(['\r', '\n']).to_owned(),
        ))
    }

    /// A new secret, asked twice at a terminal.
    fn read_new(&mut self, what: &str) -> Result<Zeroizing<String>> {
        let first = self.read(what)?;
        if self.terminal && *self.read(&format!("{what} again"))? != *first {
            bail!("the two entries of the {what} differ; nothing changed");
        }
        Ok(first)
    }
}
