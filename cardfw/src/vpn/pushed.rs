//! The VPNs the policy server pushes (`crate::managed::vpns`) come and go while the card
//! runs; the file's `[vpn.NAME]` only at start. A push names the whole set: a VPN it adds is
//! started locked, one it drops is locked and its interface goes (the TUN device is closed
//! with its last handle, and its routes with it), one whose settings changed is both, so it
//! comes back locked with the new settings and the same key.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{VpnError, Vpns};
use crate::config::{self, Config};
use crate::store::Store;

impl Vpns {
    /// Makes the VPNs in `running` the file's (`config.vpn`, untouched) and `pushed`, checked
    /// by the caller against `config`.
    ///
    /// A changed VPN needs its interface name back, so the old one is taken out of `running`
    /// and dropped before the new one is made: for that moment its networks and names belong
    /// to no VPN.
    pub async fn replace_pushed(
        running: &ArcSwap<Vpns>,
        config: &Config,
        store: &Store,
        pushed: &BTreeMap<String, config::Vpn>,
    ) -> Result<(), VpnError> {
        let old = running.load_full();
        let mut kept = BTreeMap::new();
        let mut gone = Vec::new();
        for (name, vpn) in &old.by_name {
            if config.vpn.contains_key(name) || pushed.get(name) == Some(&vpn.config) {
                kept.insert(name.clone(), vpn.clone());
            } else {
                gone.push(vpn.clone());
            }
        }
        let added: BTreeMap<String, config::Vpn> = pushed
            .iter()
            .filter(|(name, _)| !kept.contains_key(*name))
            .map(|(name, vpn)| (name.clone(), vpn.clone()))
            .collect();
        if gone.is_empty() && added.is_empty() {
            return Ok(());
        }
        running.store(Arc::new(Vpns {
            by_name: kept.clone(),
        }));
        drop(old);
        for vpn in gone {
            vpn.lock("the policy server changed or removed it").await;
            tracing::info!(vpn = %vpn.name, interface = %vpn.interface, "VPN taken off the card");
        }
        // `Vpns::start` for the added ones alone: the same key, interface and routes as a
        // `[vpn.NAME]` of the file gets.
        let started = Vpns::start(
            &Config {
                vpn: added,
                ..config.clone()
            },
            store,
        )
        .await?;
        kept.extend(started.by_name);
        running.store(Arc::new(Vpns { by_name: kept }));
        Ok(())
    }
}
