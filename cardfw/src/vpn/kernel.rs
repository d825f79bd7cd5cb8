//! The kernel's WireGuard, configured by cardfw over netlink (`netconf`: the link over
//! rtnetlink, its key and peer over WireGuard's generic-netlink family).
//!
//! The link `cw-NAME` is made at start with no key and no peer, and kept for the card's life,
//! so the VPN's routes point into it from the first second: with no peer the kernel has
//! nowhere to send what is routed there and drops it, never sends it in clear. Unlocking
//! gives the link the private key and the one peer (its public key, endpoint, the VPN's
//! networks as allowed IPs, the keepalive); locking removes the peer and sets an all-zero key
//! (the kernel's "no key"), then reads the link back and fails loudly if either is still
//! there. The link is deleted when cardfw stops ([`super::Vpns::stop`]).
//!
//! # Where the tunnel's packets leave from
//!
//! The kernel's WireGuard socket is bound to no address: the source of its UDP is what the
//! routing gives the endpoint. Every card connection must leave from the outside address (the
//! appliance forwards and masquerades only that one, DESIGN.md rule 2), so the card's default
//! route names it (`src`, set by the card's boot script), and [`Kernel::create`] checks the
//! route to the endpoint says so, refusing the kernel path otherwise. A fwmark on the link
//! with a policy rule and a table of its own would do the same without the default route,
//! but that table would copy the gateway from the main one and go stale when it changes;
//! and an unbound socket leaving from the outside address is what every card connection
//! wants anyway. Had the check been skipped, the packets would leave from the inside address
//! and the appliance would drop them: a tunnel that never comes up, not a leak.
//!
//! # The key
//!
//! The caller holds the private key in a `Zeroizing`; it is passed by reference. The copies
//! netlink makes (the request's buffer, and the kernel's GET answers, which carry the key
//! back while one is set) are not ours to wipe; see `netconf::wireguard`.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use netconf::netlink::{Netlink, NetlinkError};
use netconf::wireguard::{Peer, Wireguard};
use zeroize::Zeroizing;

use super::{TunnelStats, VpnError};
use crate::config;

/// A VPN's kernel WireGuard link.
#[derive(Debug)]
pub struct Kernel {
    interface: String,
    wireguard: Wireguard,
}

impl Kernel {
    /// Makes the link `interface`, locked (see the module documentation), after checking the
    /// tunnel's packets would leave from `outside`. Fails when the kernel has no WireGuard;
    /// leaves no link behind when it fails.
    pub async fn create(
        interface: &str,
        endpoint: SocketAddr,
        outside: IpAddr,
    ) -> Result<Kernel, VpnError> {
        let failed = |source| VpnError::Netlink {
            interface: interface.to_owned(),
            source,
        };
        let netlink = Netlink::connect().await.map_err(failed)?;
        netlink
            .recreate_wireguard_link(interface)
            .await
            .map_err(failed)?;
        let made = async {
            let wireguard = Wireguard::connect().await.map_err(failed)?;
            let from = netlink.source_toward(endpoint.ip()).await.map_err(failed)?;
            if from != Some(outside) {
                return Err(VpnError::KernelSource {
                    endpoint,
                    from,
                    outside,
                });
            }
            Ok(Kernel {
                interface: interface.to_owned(),
                wireguard,
            })
        };
        match made.await {
            Ok(kernel) => Ok(kernel),
            Err(error) => {
                // Best effort: the next start deletes a leftover link anyway.
                let _ = netlink.delete_link(interface).await;
                Err(error)
            }
        }
    }

    /// Gives the link the key and the peer: the tunnel is up.
    pub async fn up(&self, vpn: &config::Vpn, key: &Zeroizing<[u8; 32]>) -> Result<(), String> {
        // A configuration check already refused a peer key that does not decode.
        let public_key = config::parse_public_key(&vpn.peer_public_key)?;
        let peer = Peer {
            public_key,
            endpoint: vpn.endpoint,
            allowed_ips: vpn
                .networks
                .iter()
                .map(|network| (network.0.addr(), network.0.prefix()))
                .collect(),
            keepalive_secs: vpn.keepalive_secs,
        };
        self.wireguard
            .configure(&self.interface, key, &peer)
            .await
            .map_err(|e| e.to_string())
    }

    /// Takes the peer and the key off the link, and checks they are gone.
    pub async fn down(&self) -> Result<(), NetlinkError> {
        self.wireguard.clear(&self.interface).await
    }

    /// The peer's handshake age and bytes, from the kernel.
    pub async fn stats(&self) -> Option<TunnelStats> {
        let device = match self.wireguard.device(&self.interface).await {
            Ok(device) => device,
            Err(error) => {
                tracing::warn!(interface = %self.interface, %error, "cannot read the WireGuard link");
                return None;
            }
        };
        let peer = device.peers.first()?;
        Some(TunnelStats {
            handshake_age: peer
                .last_handshake
                .and_then(|at| SystemTime::now().duration_since(at).ok()),
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
        })
    }

    /// Deletes the link (cardfw is stopping).
    pub async fn delete(&self) -> Result<(), NetlinkError> {
        Netlink::connect().await?.delete_link(&self.interface).await
    }
}
