//! Applying an nftables ruleset: the text `nft -f` reads, given on `nft`'s stdin. `nft` runs a
//! file as one transaction, so the ruleset is all in place or nothing changed; that is why the
//! rulesets are text for `nft` and not a rule at a time.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why a ruleset was not applied. Nothing changed in either case.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started or fed (not installed, no permission).
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    /// `nft` refused the ruleset; its stderr, trimmed.
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Applies `ruleset` (`nft -f` syntax) in one transaction.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}
