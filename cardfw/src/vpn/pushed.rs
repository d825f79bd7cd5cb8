//! The VPNs the policy server pushes (`crate::managed::vpns`) come and go while the card
//! runs; the file's `[vpn.NAME]` only at start. A push names the whole set: a VPN it adds is
//! started locked, one it drops is locked and its interface goes (a kernel link is deleted, a
//! TUN device closes with its last handle, and its routes go with it), one whose settings
//! changed is both, so it comes back locked with the new settings and the same key.
//!
//! Fail closed while that happens: a changed VPN needs its interface name back before it can
//! be made again, so for a moment it has no interface and no routes. Its networks and names
//! must not become ordinary destinations then, so the decisions first see a locked stand-in
//! for every VPN leaving ([`super::Vpn::closed_stand_in`]), and only the finished set after the new
//! ones are up; when starting them fails, the stand-ins stay and keep refusing.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{VpnError, Vpns};
use crate::config::{self, Config};
use crate::store::Store;

impl Vpns {
    /// Makes the VPNs in `running` the file's (`config.vpn`, untouched) and `pushed`, checked
    /// by the caller against `config` (see the module documentation for the order).
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
        let mut meanwhile = kept.clone();
        for vpn in &gone {
            meanwhile.insert(vpn.name.clone(), Arc::new(vpn.closed_stand_in()));
        }
        running.store(Arc::new(Vpns { by_name: meanwhile }));
        drop(old);
        for vpn in gone {
            vpn.take_down("the policy server changed or removed it")
                .await;
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
