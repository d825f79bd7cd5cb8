//! A private `pcscd` with the `vpcd` virtual reader in a lab namespace, for the lab's Peer I/O
//! card and for the tests.
//!
//! `pcscd` 1.9 always serves `/run/pcscd/pcscd.comm`. To give each lab its own daemon, it runs
//! in a private mount namespace (`unshare --mount`) where a directory of the lab is
//! bind-mounted on `/run/pcscd`; its socket therefore appears in that directory, and clients
//! are pointed at it with `PCSCLITE_CSOCK_NAME`. Its reader configuration (`-c`) is the lab's
//! too, and the `vpcd` port it opens (35963 for reader "Virtual PCD 00 00") is inside the lab
//! namespace, so labs never collide with each other or with a system `pcscd`.

use std::path::PathBuf;

use anyhow::Result;

use crate::topology::{Lab, Netns};

/// The `vpcd` port of reader [`READER`] (the second reader, "00 01", is the next port).
pub const VPCD_PORT: u16 = 35963;
pub const READER: &str = "Virtual PCD 00 00";
/// Where Debian's `vsmartcard-vpcd` puts the driver.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// A running private `pcscd`.
#[derive(Debug, Clone)]
pub struct Pcscd {
    pub pid: u32,
    /// The socket to give clients as `PCSCLITE_CSOCK_NAME`.
    pub socket: PathBuf,
}

/// Starts `pcscd` in `ns` (stopped with the lab). The virtual card connects to
/// `127.0.0.1:`[`VPCD_PORT`] inside `ns`.
pub fn start(lab: &mut Lab, ns: &Netns) -> Result<Pcscd> {
    let dir = lab.dir().to_path_buf();
    let run = dir.join("pcscd-run");
    let conf = dir.join("reader.conf.d");
    std::fs::create_dir_all(&run)?;
    std::fs::create_dir_all(&conf)?;
    // The mount point must exist on the host for the private bind mount.
    std::fs::create_dir_all("/run/pcscd")?;
    std::fs::write(
        conf.join("vpcd"),
        format!(
            "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:{VPCD_PORT:#06X}\n\
             LIBPATH {VPCD_DRIVER}\nCHANNELID {VPCD_PORT:#06X}\n"
        ),
    )?;
    let script = format!(
        "mount --bind '{}' /run/pcscd && exec pcscd --foreground -c '{}'",
        run.display(),
        conf.display()
    );
    let pid = lab.spawn(ns, "unshare", &["--mount", "sh", "-c", &script])?;
    Ok(Pcscd {
        pid,
        socket: run.join("pcscd.comm"),
    })
}
