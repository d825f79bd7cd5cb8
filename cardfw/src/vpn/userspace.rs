//! WireGuard in cardfw: `gotatun` on a TUN device (see the parent module for why this crate).
//!
//! The TUN device is made at start and kept for the card's life, so the VPN's routes point
//! into it from the first second: while locked nothing reads it, and what the kernel queues
//! there is dropped, never sent in clear. Unlocking builds a gotatun device on it with the
//! private key; locking stops that device and drops the key with it.

use std::net::IpAddr;

use gotatun::device::{Device, DeviceBuilder, Peer};
use gotatun::tun::tun_async_device::TunDevice;
use gotatun::udp::socket::UdpSocketFactory;
use gotatun::udp::{UdpTransportFactory, UdpTransportFactoryParams};
use gotatun::x25519::{PublicKey, StaticSecret};
use ipnetwork::{IpNetwork, Ipv4Network};

use super::TunnelStats;
use crate::config;

type Transports = (OutsideUdp, TunDevice, TunDevice);

/// A VPN's TUN device and, while unlocked, the WireGuard device on it.
pub struct Userspace {
    tun: TunDevice,
    outside: IpAddr,
    device: tokio::sync::Mutex<Option<Device<Transports>>>,
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Userspace")
            .field("outside", &self.outside)
            .finish_non_exhaustive()
    }
}

impl Userspace {
    /// Creates the TUN device `interface`; the tunnel's UDP will leave from `outside`.
    pub fn create(interface: &str, outside: IpAddr) -> Result<Userspace, String> {
        let tun = TunDevice::from_name(interface).map_err(|e| e.to_string())?;
        Ok(Userspace {
            tun,
            outside,
            device: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts WireGuard with `key` to the configured peer. `from` is the card's tunnel
    /// address (it is on the interface already; named here for the log).
    pub async fn up(
        &self,
        vpn: &config::Vpn,
        key: StaticSecret,
        from: IpAddr,
    ) -> Result<(), String> {
        let mut device = self.device.lock().await;
        if device.is_some() {
            return Ok(());
        }
        // Only the peer's public key is needed to reach it; a configuration check already
        // refused one that does not decode.
        let peer_key = config::parse_public_key(&vpn.peer_public_key)?;
        let allowed: Vec<IpNetwork> = vpn
            .networks
            .iter()
            .filter_map(|network| match network.0.addr() {
                IpAddr::V4(address) => Ipv4Network::new(address, network.0.prefix())
                    .ok()
                    .map(IpNetwork::V4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let mut peer = Peer::new(PublicKey::from(peer_key))
            .with_endpoint(vpn.endpoint)
            .with_allowed_ips(allowed);
        peer.keepalive = (vpn.keepalive_secs > 0).then_some(vpn.keepalive_secs);
        let built = DeviceBuilder::new()
            .with_udp(OutsideUdp {
                inner: UdpSocketFactory::default(),
                address: self.outside,
            })
            .with_ip(self.tun.clone())
            .with_private_key(key)
            .with_peer(peer)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(%from, endpoint = %vpn.endpoint, "userspace WireGuard up");
        *device = Some(built);
        Ok(())
    }

    /// Stops WireGuard; the key goes with the device.
    pub async fn down(&self) {
        if let Some(device) = self.device.lock().await.take() {
            device.stop().await;
        }
    }

    /// The peer's handshake age and bytes, while up.
    pub async fn stats(&self) -> Option<TunnelStats> {
        let device = self.device.lock().await;
        let peers = device.as_ref()?.peers().await;
        let peer = peers.first()?;
        Some(TunnelStats {
            handshake_age: peer.stats.last_handshake,
            rx_bytes: peer.stats.rx_bytes as u64,
            tx_bytes: peer.stats.tx_bytes as u64,
        })
    }
}

/// gotatun's UDP sockets, bound to the card's outside address rather than to every address,
/// so the tunnel's packets leave the way every card connection does (DESIGN.md: only the
/// outside address originates outside traffic, and the appliance masquerades only it).
struct OutsideUdp {
    inner: UdpSocketFactory,
    address: IpAddr,
}

impl UdpTransportFactory for OutsideUdp {
    type Send = <UdpSocketFactory as UdpTransportFactory>::Send;
    type Recv = <UdpSocketFactory as UdpTransportFactory>::Recv;

    async fn bind(
        &mut self,
        params: &UdpTransportFactoryParams,
    ) -> std::io::Result<(Self::Send, Self::Recv)> {
        let mut params = params.clone();
        params.addr = Some(self.address);
        self.inner.bind(&params).await
    }
}
