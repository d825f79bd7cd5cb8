//! A private PC/SC stack for a test: its own `pcscd` with the `vpcd` virtual reader
//! ([`lab::pcscd`]), and the card firmware plugged into it as a virtual card, all in one
//! lab namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::topology::{Lab, Netns};

pub use lab::pcscd::{READER, VPCD_PORT};

/// The stack of one test.
#[derive(Debug)]
pub struct CardReader {
    /// The `pcscd` socket to give clients as `PCSCLITE_CSOCK_NAME`.
    pub socket: PathBuf,
    /// The card's data directory.
    pub store: PathBuf,
    pub pcscd: u32,
    pub card: u32,
}

/// Checks what a PC/SC test needs (root and namespaces, `pcscd`, `unshare`, the `vpcd`
/// driver), with the policy of [`crate::require_root`]: a failure under CI, a skip elsewhere.
pub fn require_pcsc() -> bool {
    if !crate::require_root()
        || !crate::require_program("pcscd", "pcscd")
        || !crate::require_program("unshare", "util-linux")
    {
        return false;
    }
    if !Path::new(lab::pcscd::VPCD_DRIVER).exists() {
        assert!(
            !crate::in_ci(),
            "CI=true and vpcd is missing (Debian package vsmartcard-vpcd)"
        );
        eprintln!("skipping: vpcd is not installed (Debian package vsmartcard-vpcd)");
        return false;
    }
    true
}

/// Starts `pcscd` and the card (`cardfw` with a store and the APDU face, its listeners on
/// 127.0.0.1) in `ns`, and waits until `cardctl status` reaches the card.
pub fn start(lab: &mut Lab, ns: &Netns, rules: &str) -> anyhow::Result<CardReader> {
    start_with(lab, ns, rules, "127.0.0.1", "")
}

/// Like [`start`], with the card's inside address and more keys of its `[iso7816]` section.
pub fn start_with(
    lab: &mut Lab,
    ns: &Netns,
    rules: &str,
    inside_address: &str,
    iso7816: &str,
) -> anyhow::Result<CardReader> {
    let dir = lab.dir().to_path_buf();
    let pcscd = lab::pcscd::start(lab, ns)?;
    let (socket, pcscd) = (pcscd.socket, pcscd.pid);

    let store = dir.join("store");
    std::fs::write(dir.join("rules.txt"), rules)?;
    let config = dir.join("cardfw.toml");
    std::fs::write(
        &config,
        format!(
            "rules = \"{}\"\nstore = \"{}\"\ninside_address = \"{inside_address}\"\n\
             transparent = false\n[iso7816]\nvpcd = \"127.0.0.1:{VPCD_PORT}\"\n{iso7816}",
            dir.join("rules.txt").display(),
            store.display()
        ),
    )?;
    let cardfw = lab::sibling_binaries().join("cardfw");
    let card = lab.spawn(ns, &cardfw, &["--config", &config.to_string_lossy()])?;
    let reader = CardReader {
        socket,
        store,
        pcscd,
        card,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = reader.cardctl(&["status"], "")?;
        if status.status.success() {
            return Ok(reader);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the card never answered in the reader: {}\n{}\n{}",
                String::from_utf8_lossy(&status.stderr),
                lab.log_of(pcscd),
                lab.log_of(reader.card)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl CardReader {
    /// Runs `cardctl args…` against this stack, with `stdin` as its standard input (where it
    /// reads PINs when that is not a terminal).
    pub fn cardctl(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        run_with_input(
            Command::new(lab::sibling_binaries().join("cardctl"))
                .args(args)
                .env("PCSCLITE_CSOCK_NAME", &self.socket),
            stdin,
        )
    }

    /// Sets the new card up over its reader (`cardctl setup`: the setup code read from the
    /// card, then `pin`) and returns the PUK the card showed, digits only.
    pub fn set_up(&self, pin: &str) -> anyhow::Result<String> {
        let output = self.cardctl(&["setup"], &format!("{pin}\n"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "cardctl setup: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .find_map(|line| line.split_once("shown only this once: "))
            .map(|(_, puk)| puk.replace('-', ""))
            .ok_or_else(|| anyhow::anyhow!("no PUK in: {stdout}"))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn run_with_input(command: &mut Command, stdin: &str) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // A child that exits before reading (it failed early) closes the pipe: its output says why.
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes());
    Ok(child.wait_with_output()?)
}
