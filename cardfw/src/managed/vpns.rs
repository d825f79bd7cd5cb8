//! VPNs the policy server pushes to this card (issue 15), in the card's own overlay bundle
//! (`rules::bundle`'s `vpns` section, [`proto::policy::ManagedVpns`]):
//!
//! - **Checked** ([`pushed_vpns`]) before anything is installed, each as a `[vpn.NAME]` of the
//!   card's file would be ([`Config::check_vpn`]). A VPN that fails, a name pushed twice, more
//!   than [`MAX_MANAGED_VPNS`], or a name the file has already refuses the whole overlay: the
//!   last good one stays, VPNs and rules alike.
//! - **Kept** with the overlay in `overlay.sealed` (one atomic write), so they come back
//!   after a restart ([`start_pushed`]).
//! - **Started** like the file's ([`crate::vpn::Vpns::replace_pushed`]): locked, the key made
//!   in the store the first time a name is seen and kept after, so a VPN pushed again gets
//!   the key the corporate peer already knows.
//! - **Reported** ([`public_keys`]): the public key of each, for the administrator to give
//!   the corporate peer. Never the private key: there is no field to carry it.

use std::collections::BTreeMap;

use proto::policy::{MAX_MANAGED_VPNS, ManagedVpn, ManagedVpns, VpnKey, VpnKeys};

use crate::config::{self, Config};
use crate::firewall::Firewall;
use crate::vpn::{VpnError, Vpns};

/// Why pushed VPNs are refused, and the overlay that carries them with them.
#[derive(Debug, thiserror::Error)]
pub enum PushedVpnError {
    #[error("the VPN settings do not read: {0}")]
    Unreadable(String),
    #[error("more than {MAX_MANAGED_VPNS} VPNs are pushed")]
    TooMany,
    #[error("the VPN `{0}` is pushed twice")]
    Twice(String),
    #[error(
        "the VPN `{0}` is one of the card's own (`[vpn.{0}]` in its configuration): a pushed VPN never replaces it"
    )]
    OwnName(String),
    #[error("{0}")]
    Invalid(String),
}

/// The VPNs of an overlay's `vpns` section (none without one), each checked for this card.
pub fn pushed_vpns(
    config: &Config,
    section: Option<&str>,
) -> Result<Vec<ManagedVpn>, PushedVpnError> {
    let Some(text) = section else {
        return Ok(Vec::new());
    };
    let pushed: ManagedVpns =
        serde_json::from_str(text).map_err(|e| PushedVpnError::Unreadable(e.to_string()))?;
    checked(config, &pushed.vpns)?;
    Ok(pushed.vpns)
}

/// `vpns` as the card runs them, by name, once each passed the file's checks.
fn checked(
    config: &Config,
    vpns: &[ManagedVpn],
) -> Result<BTreeMap<String, config::Vpn>, PushedVpnError> {
    if vpns.len() > MAX_MANAGED_VPNS {
        return Err(PushedVpnError::TooMany);
    }
    let mut by_name = BTreeMap::new();
    for pushed in vpns {
        if config.vpn.contains_key(&pushed.name) {
            return Err(PushedVpnError::OwnName(pushed.name.clone()));
        }
        let vpn = config::Vpn::from_managed(pushed).map_err(PushedVpnError::Invalid)?;
        config
            .check_vpn(&pushed.name, &vpn)
            .map_err(PushedVpnError::Invalid)?;
        if by_name.insert(pushed.name.clone(), vpn).is_some() {
            return Err(PushedVpnError::Twice(pushed.name.clone()));
        }
    }
    Ok(by_name)
}

/// Why the pushed VPNs could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the installed overlay does not read: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Vpn(#[from] VpnError),
}

/// Makes the running VPNs the file's and those of the installed overlay: at start, and after
/// each overlay installed.
pub async fn start_pushed(firewall: &Firewall) -> Result<(), StartError> {
    let Some(store) = firewall.store() else {
        return Ok(());
    };
    let installed = store
        .overlay()?
        .map(|overlay| overlay.vpns)
        .unwrap_or_default();
    let pushed = checked(&firewall.config, &installed).unwrap_or_else(|error| {
        // The card's file changed since the push (a `[vpn.NAME]` took a pushed name, an
        // address moved into a pushed VPN's networks): the file wins, and the pushed VPNs
        // wait for a push that fits.
        tracing::error!(%error, "the pushed VPNs no longer fit this card's configuration: none runs");
        BTreeMap::new()
    });
    Vpns::replace_pushed(&firewall.vpns, &firewall.config, store, &pushed).await?;
    Ok(())
}

/// The public key of each running VPN the policy server pushed, by name.
pub fn public_keys(firewall: &Firewall) -> VpnKeys {
    let vpns = firewall.vpns.load();
    VpnKeys {
        keys: vpns
            .iter()
            .filter(|vpn| !firewall.config.vpn.contains_key(&vpn.name))
            .map(|vpn| VpnKey {
                name: vpn.name.clone(),
                public_key: vpn.public_key_base64(),
            })
            .collect(),
    }
}
