//! VPNs the policy server pushes to this card (issue 15), in the card's own overlay bundle
//! (`rules::bundle`'s `vpns` section, [`proto::policy::ManagedVpns`]):
//!
//! - **Checked** ([`pushed_vpns`]) before anything is installed, each as a `[vpn.NAME]` of the
//!   card's file would be ([`Config::check_vpn`]). A VPN that fails, a name pushed twice, more
//!   than `MAX_MANAGED_VPNS`, a name the file has already, or a name or network of a VPN
//!   the owner added on the card page refuses the whole overlay: the last good one stays,
//!   VPNs and rules alike.
//! - **Kept** with the overlay in `overlay.sealed` (one atomic write), so they come back
//!   after a restart ([`crate::vpn::added::start_added`]).
//! - **Started** like the file's ([`crate::vpn::Vpns::replace_added`]): locked, the key made
//!   in the store the first time a name is seen and kept after, so a VPN pushed again gets
//!   the key the corporate peer already knows.
//! - **Reported** ([`public_keys`]): the public key of each, for the administrator to give
//!   the corporate peer. Never the private key: there is no field to carry it. The file's and
//!   the page's VPNs are the owner's business and are not reported.

use std::collections::BTreeMap;

use proto::policy::{ManagedVpn, ManagedVpns, VpnKey, VpnKeys};

use crate::config::{self, Config};
use crate::firewall::Firewall;
use crate::vpn::added::check_pushed;

pub use crate::vpn::added::PushedVpnError;

/// The VPNs of an overlay's `vpns` section (none without one), each checked for this card.
pub fn pushed_vpns(
    config: &Config,
    page: &BTreeMap<String, config::Vpn>,
    section: Option<&str>,
) -> Result<Vec<ManagedVpn>, PushedVpnError> {
    let Some(text) = section else {
        return Ok(Vec::new());
    };
    let pushed: ManagedVpns =
        serde_json::from_str(text).map_err(|e| PushedVpnError::Unreadable(e.to_string()))?;
    check_pushed(config, page, &pushed.vpns)?;
    Ok(pushed.vpns)
}

/// The public key of each running VPN the policy server pushed, by name: neither the file's
/// nor the page's (a stored page VPN that does not read is not reported either: better one
/// key missing than the owner's VPN told to the server).
pub fn public_keys(firewall: &Firewall) -> VpnKeys {
    let vpns = firewall.vpns.load();
    let pushed: Vec<String> = firewall
        .store()
        .and_then(|store| store.overlay().ok().flatten())
        .map(|overlay| overlay.vpns.into_iter().map(|vpn| vpn.name).collect())
        .unwrap_or_default();
    VpnKeys {
        keys: vpns
            .iter()
            .filter(|vpn| {
                !firewall.config.vpn.contains_key(&vpn.name) && pushed.contains(&vpn.name)
            })
            .map(|vpn| VpnKey {
                name: vpn.name.clone(),
                public_key: vpn.public_key_base64(),
            })
            .collect(),
    }
}
