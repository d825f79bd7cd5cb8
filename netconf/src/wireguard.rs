//! The kernel's WireGuard, configured over its generic-netlink family (`wireguard`, the
//! protocol `wg(8)` speaks): set a link's key and its one peer, clear them, read the peer's
//! handshake and byte counters. The link itself is made and deleted with
//! [`crate::netlink::Netlink::recreate_wireguard_link`] and
//! [`crate::netlink::Netlink::delete_link`], like every other link.
//!
//! The messages are `netlink-packet-wireguard`'s; they travel on `netlink-proto`, the
//! connection rtnetlink already brings. (`genetlink`, the crate that resolves family ids,
//! is left out: its release needs an older `netlink-proto`, which would put a second netlink
//! stack in the tree for the one request, `CTRL_CMD_GETFAMILY`, that [`Wireguard::connect`]
//! sends itself.)
//!
//! # Secrets
//!
//! [`Wireguard::configure`] takes the private key by reference: the caller keeps it in a
//! wiping container. What cannot be wiped from here: the copy inside the request (moved into
//! `netlink-proto`, serialized into its send buffer, dropped there), and the kernel's answers
//! to a GET, which carry the private key back while one is set; [`Wireguard::device`] wipes
//! its parsed copy at once, but not `netlink-proto`'s receive buffer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use futures_util::stream::StreamExt;
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::proto::{ConnectionHandle, new_connection};
use rtnetlink::sys::SocketAddr as NetlinkAddress;
use rtnetlink::sys::protocols::NETLINK_GENERIC;
use tokio::task::JoinHandle;
use zeroize::Zeroize;

use crate::netlink::NetlinkError;

/// The length of a WireGuard (Curve25519) key.
pub const KEY_LENGTH: usize = 32;

/// The one peer a link is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: [u8; KEY_LENGTH],
    pub endpoint: SocketAddr,
    /// The networks the peer may send from and is sent to (address, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Seconds between keepalives; 0 sends none.
    pub keepalive_secs: u16,
}

/// What a GET tells of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// Whether it holds a private key (the kernel reports none once an all-zero one is set).
    pub has_private_key: bool,
    pub peers: Vec<PeerState>,
}

/// One peer as a GET reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub public_key: [u8; KEY_LENGTH],
    /// When the last handshake completed; `None` before the first.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A connection to the kernel's WireGuard family, in the network namespace of the thread that
/// called [`Wireguard::connect`]. Dropping it stops its connection task.
#[derive(Debug)]
pub struct Wireguard {
    handle: ConnectionHandle<GenlMessage<WireguardMessage>>,
    family: u16,
    connection: JoinHandle<()>,
}

impl Drop for Wireguard {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Wireguard {
    /// Opens a generic-netlink socket and looks up the WireGuard family's id; fails when the
    /// kernel has no WireGuard.
    pub async fn connect() -> Result<Wireguard, NetlinkError> {
        let family = family_id(WIREGUARD_FAMILY).await?;
        let (connection, handle, _unsolicited) =
            new_connection::<GenlMessage<WireguardMessage>>(NETLINK_GENERIC)?;
        let connection = tokio::spawn(connection);
        Ok(Wireguard {
            handle,
            family,
            connection,
        })
    }

    /// Gives `interface` the private key and `peer` as its only peer (replacing any other).
    pub async fn configure(
        &self,
        interface: &str,
        private_key: &[u8; KEY_LENGTH],
        peer: &Peer,
    ) -> Result<(), NetlinkError> {
        let message = configure_message(interface, private_key, peer);
        self.change(message, format!("configuring WireGuard on {interface}"))
            .await
    }

    /// Removes every peer of `interface` and sets an all-zero private key (which the kernel
    /// takes as "no key"), then reads the link back: an error unless it has neither, so a
    /// caller never believes a link locked that could still send.
    pub async fn clear(&self, interface: &str) -> Result<(), NetlinkError> {
        self.change(
            clear_message(interface),
            format!("clearing WireGuard on {interface}"),
        )
        .await?;
        check_cleared(interface, &self.device(interface).await?)
    }

    /// The link's key state and peers (`wg show`).
    pub async fn device(&self, interface: &str) -> Result<Device, NetlinkError> {
        let what = || format!("reading WireGuard on {interface}");
        let request = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfName(interface.to_owned())],
        };
        let mut replies = self.request(request, NLM_F_REQUEST | NLM_F_DUMP, &what)?;
        let mut messages = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(message) => messages.push(message.payload),
                NetlinkPayload::Error(error) if error.code.is_some() => {
                    return Err(wireguard_error(what(), error.to_io()));
                }
                _ => {}
            }
        }
        Ok(device_from(messages))
    }

    /// Sends a SET and waits for the kernel's answer: an error, or an acknowledgement, which
    /// `netlink-proto` keeps to itself and ends the replies with.
    async fn change(&self, message: WireguardMessage, what: String) -> Result<(), NetlinkError> {
        let mut replies = self.request(message, NLM_F_REQUEST | NLM_F_ACK, &|| what.clone())?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(error) = reply.payload
                && error.code.is_some()
            {
                return Err(wireguard_error(what, error.to_io()));
            }
        }
        Ok(())
    }

    fn request(
        &self,
        message: WireguardMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<
        impl futures_util::Stream<Item = NetlinkMessage<GenlMessage<WireguardMessage>>> + use<>,
        NetlinkError,
    > {
        let mut message = GenlMessage::from_payload(message);
        message.set_resolved_family_id(self.family);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        request.finalize();
        self.handle
            .request(request, NetlinkAddress::new(0, 0))
            .map_err(|error| wireguard_error(what(), io::Error::other(error.to_string())))
    }
}

/// The WireGuard family's name, which its id is looked up by.
const WIREGUARD_FAMILY: &str = "wireguard";

/// The id the kernel gave the generic-netlink family `name` (`CTRL_CMD_GETFAMILY` to the
/// controller, whose own id is fixed). The kernel loads the family's module on this request
/// if it can.
async fn family_id(name: &str) -> Result<u16, NetlinkError> {
    let what = || format!("looking up the generic-netlink family {name}");
    let (connection, handle, _unsolicited) =
        new_connection::<GenlMessage<GenlCtrl>>(NETLINK_GENERIC)?;
    let connection = tokio::spawn(connection);
    let mut message = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    message.finalize();
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST;
    request.finalize();
    let replies = handle.request(request, NetlinkAddress::new(0, 0));
    let mut replies = match replies {
        Ok(replies) => replies,
        Err(error) => {
            connection.abort();
            return Err(wireguard_error(what(), io::Error::other(error.to_string())));
        }
    };
    let mut found = Err(wireguard_error(
        what(),
        io::Error::other("no answer from the controller"),
    ));
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(message) => {
                let id = message
                    .payload
                    .nlas
                    .iter()
                    .find_map(|attribute| match attribute {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    });
                found = id.ok_or_else(|| {
                    wireguard_error(what(), io::Error::other("the answer names no family id"))
                });
                break;
            }
            NetlinkPayload::Error(error) if error.code.is_some() => {
                found = Err(wireguard_error(what(), error.to_io()));
                break;
            }
            _ => {}
        }
    }
    connection.abort();
    found
}

fn wireguard_error(what: String, source: io::Error) -> NetlinkError {
    NetlinkError::Wireguard { what, source }
}

/// The SET that makes `peer` the link's only peer, with the private key.
fn configure_message(
    interface: &str,
    private_key: &[u8; KEY_LENGTH],
    peer: &Peer,
) -> WireguardMessage {
    let allowed_ips = peer
        .allowed_ips
        .iter()
        .map(|(address, prefix)| {
            let family = match address {
                IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
            };
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(family),
                WireguardAllowedIpAttr::IpAddr(*address),
                WireguardAllowedIpAttr::Cidr(*prefix),
            ])
        })
        .collect();
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(interface.to_owned()),
            WireguardAttribute::PrivateKey(*private_key),
            // Whatever peers the link had are dropped: it talks to this one only.
            WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
            WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(peer.public_key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint(peer.endpoint),
                WireguardPeerAttribute::PersistentKeepalive(peer.keepalive_secs),
                WireguardPeerAttribute::AllowedIps(allowed_ips),
            ])]),
        ],
    }
}

/// The SET that leaves the link with no peer and no key.
fn clear_message(interface: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(interface.to_owned()),
            WireguardAttribute::PrivateKey([0; KEY_LENGTH]),
            WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
        ],
    }
}

/// The device a GET's replies describe. The kernel splits a long answer over several
/// messages, and one peer over two when its allowed IPs do not fit: peers are merged by
/// public key. A private key in the answer is wiped here, once noted.
fn device_from(mut messages: Vec<WireguardMessage>) -> Device {
    let mut device = Device::default();
    for message in &mut messages {
        for attribute in &mut message.attributes {
            match attribute {
                WireguardAttribute::PrivateKey(key) => {
                    device.has_private_key |= *key != [0; KEY_LENGTH];
                    key.zeroize();
                }
                WireguardAttribute::Peers(peers) => {
                    for peer in peers.iter() {
                        merge_peer(&mut device.peers, peer);
                    }
                }
                _ => {}
            }
        }
    }
    device
}

fn merge_peer(peers: &mut Vec<PeerState>, peer: &WireguardPeer) {
    let Some(public_key) = peer.iter().find_map(|attribute| match attribute {
        WireguardPeerAttribute::PublicKey(key) => Some(*key),
        _ => None,
    }) else {
        return;
    };
    let index = match peers
        .iter()
        .position(|known| known.public_key == public_key)
    {
        Some(index) => index,
        None => {
            peers.push(PeerState {
                public_key,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            peers.len() - 1
        }
    };
    let state = &mut peers[index];
    for attribute in peer.iter() {
        match attribute {
            WireguardPeerAttribute::LastHandshake(time) => {
                // The kernel's wall clock; all zero before the first handshake.
                state.last_handshake = (time.seconds > 0 || time.nano_seconds > 0).then(|| {
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(time.seconds.unsigned_abs())
                        + Duration::from_nanos(time.nano_seconds.unsigned_abs())
                });
            }
            WireguardPeerAttribute::RxBytes(bytes) => state.rx_bytes = *bytes,
            WireguardPeerAttribute::TxBytes(bytes) => state.tx_bytes = *bytes,
            _ => {}
        }
    }
}

/// `Ok` when the link has neither a private key nor a peer.
fn check_cleared(interface: &str, device: &Device) -> Result<(), NetlinkError> {
    if device.has_private_key || !device.peers.is_empty() {
        return Err(NetlinkError::NotCleared {
            interface: interface.to_owned(),
            private_key: device.has_private_key,
            peers: device.peers.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use netlink_packet_generic::GenlHeader;
    use netlink_packet_wireguard::WireguardTimeSpec;
    use rtnetlink::packet_core::{Emitable, ParseableParametrized};

    fn peer() -> Peer {
        Peer {
            public_key: [7; KEY_LENGTH],
            endpoint: "198.51.100.7:51820".parse().unwrap(),
            allowed_ips: vec![
                ("10.20.0.0".parse().unwrap(), 16),
                ("10.30.1.0".parse().unwrap(), 24),
            ],
            keepalive_secs: 25,
        }
    }

    /// The message as the kernel reads it: emitted, then parsed back (as a GET reply would
    /// be), so a field the crate would drop or mangle shows.
    fn on_the_wire(message: &WireguardMessage) -> WireguardMessage {
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        let header = GenlHeader {
            cmd: message.cmd.into(),
            version: 1,
        };
        WireguardMessage::parse_with_param(&bytes, header).unwrap()
    }

    #[test]
    fn configuring_sets_the_key_and_replaces_peers_and_allowed_ips() {
        let key = [0x42; KEY_LENGTH];
        let message = on_the_wire(&configure_message("cw-corp", &key, &peer()));
        assert_eq!(message.cmd, WireguardCmd::SetDevice);
        let attributes = &message.attributes;
        assert!(attributes.contains(&WireguardAttribute::IfName("cw-corp".into())));
        assert!(attributes.contains(&WireguardAttribute::PrivateKey(key)));
        assert!(attributes.contains(&WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers
        )));
        let peers = attributes
            .iter()
            .find_map(|attribute| match attribute {
                WireguardAttribute::Peers(peers) => Some(peers.clone()),
                _ => None,
            })
            .expect("a peer");
        assert_eq!(peers.len(), 1);
        let peer = &peers[0];
        assert!(peer.contains(&WireguardPeerAttribute::PublicKey([7; KEY_LENGTH])));
        assert!(peer.contains(&WireguardPeerAttribute::Endpoint(
            "198.51.100.7:51820".parse().unwrap()
        )));
        assert!(peer.contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
        assert!(peer.contains(&WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps
        )));
        let allowed = peer
            .iter()
            .find_map(|attribute| match attribute {
                WireguardPeerAttribute::AllowedIps(ips) => Some(ips.clone()),
                _ => None,
            })
            .expect("allowed IPs");
        let networks: Vec<(IpAddr, u8)> = allowed
            .iter()
            .map(|ip| {
                let address = ip.iter().find_map(|a| match a {
                    WireguardAllowedIpAttr::IpAddr(address) => Some(*address),
                    _ => None,
                });
                let prefix = ip.iter().find_map(|a| match a {
                    WireguardAllowedIpAttr::Cidr(prefix) => Some(*prefix),
                    _ => None,
                });
                (address.unwrap(), prefix.unwrap())
            })
            .collect();
        assert_eq!(networks, super::tests::peer().allowed_ips);
        assert!(allowed[0].contains(&WireguardAllowedIpAttr::Family(
            WireguardAddressFamily::Ipv4
        )));
    }

    #[test]
    fn clearing_sets_a_zero_key_and_no_peer() {
        let message = on_the_wire(&clear_message("cw-corp"));
        assert_eq!(
            message.attributes,
            vec![
                WireguardAttribute::IfName("cw-corp".into()),
                WireguardAttribute::PrivateKey([0; KEY_LENGTH]),
                WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
            ]
        );
    }

    fn reply(attributes: Vec<WireguardAttribute>) -> WireguardMessage {
        on_the_wire(&WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes,
        })
    }

    fn reported_peer(key: u8, attributes: Vec<WireguardPeerAttribute>) -> WireguardPeer {
        let mut all = vec![WireguardPeerAttribute::PublicKey([key; KEY_LENGTH])];
        all.extend(attributes);
        WireguardPeer(all)
    }

    #[test]
    fn a_get_reply_gives_the_peer_handshake_and_bytes() {
        let device = device_from(vec![reply(vec![
            WireguardAttribute::IfName("cw-corp".into()),
            WireguardAttribute::PrivateKey([0x42; KEY_LENGTH]),
            WireguardAttribute::ListenPort(40000),
            WireguardAttribute::Peers(vec![reported_peer(
                7,
                vec![
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                        seconds: 1_700_000_000,
                        nano_seconds: 500,
                    }),
                    WireguardPeerAttribute::RxBytes(1234),
                    WireguardPeerAttribute::TxBytes(5678),
                ],
            )]),
        ])]);
        assert!(device.has_private_key);
        assert_eq!(
            device.peers,
            vec![PeerState {
                public_key: [7; KEY_LENGTH],
                last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500)),
                rx_bytes: 1234,
                tx_bytes: 5678,
            }]
        );
    }

    #[test]
    fn a_peer_split_over_two_replies_is_one_peer_and_no_handshake_is_none() {
        let device = device_from(vec![
            reply(vec![WireguardAttribute::Peers(vec![reported_peer(
                7,
                vec![
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec::default()),
                    WireguardPeerAttribute::TxBytes(148),
                ],
            )])]),
            reply(vec![WireguardAttribute::Peers(vec![
                reported_peer(7, vec![]),
                reported_peer(9, vec![WireguardPeerAttribute::RxBytes(1)]),
            ])]),
        ]);
        assert!(!device.has_private_key);
        assert_eq!(device.peers.len(), 2, "{device:?}");
        assert_eq!(device.peers[0].last_handshake, None);
        assert_eq!(device.peers[0].tx_bytes, 148);
        assert_eq!(device.peers[1].rx_bytes, 1);
    }

    #[test]
    fn a_link_is_cleared_only_with_no_key_and_no_peer() {
        let cleared = device_from(vec![reply(vec![
            WireguardAttribute::IfName("cw-corp".into()),
            WireguardAttribute::ListenPort(40000),
        ])]);
        assert!(check_cleared("cw-corp", &cleared).is_ok());
        // An all-zero key reported is no key.
        let zero_key = device_from(vec![reply(vec![WireguardAttribute::PrivateKey(
            [0; KEY_LENGTH],
        )])]);
        assert!(check_cleared("cw-corp", &zero_key).is_ok());

        let keyed = device_from(vec![reply(vec![WireguardAttribute::PrivateKey(
            [1; KEY_LENGTH],
        )])]);
        let error = check_cleared("cw-corp", &keyed).unwrap_err();
        assert!(
            matches!(
                error,
                NetlinkError::NotCleared {
                    private_key: true,
                    peers: 0,
                    ..
                }
            ),
            "{error}"
        );
        let with_peer = device_from(vec![reply(vec![WireguardAttribute::Peers(vec![
            reported_peer(7, vec![]),
        ])])]);
        let error = check_cleared("cw-corp", &with_peer).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("still has 1 peer(s) and no private key"),
            "{error}"
        );
    }
}
