//! The bypass suite's packet kit: crafted raw Ethernet frames, an AF_PACKET sender and an
//! AF_PACKET capture.
//!
//! The appliance's one invariant (DESIGN.md, "Network design") is that nothing from the inside
//! LAN reaches the outside network except what the card's proxy originates. The bypass test
//! proves it by sending, from the protected computer's namespace, every kind of frame a
//! firewall might mishandle ([`Kind`], [`ALL_KINDS`], [`craft`]) with [`send_frames`], while a
//! [`Capture`] records every frame that arrives in the outside world. Each crafted frame carries
//! a *marker* (a random `u32` chosen per run, see [`random_marker`]) plus the kind's code, so a
//! captured frame can be traced back to the frame that leaked ([`CapturedFrame::carries_marker`],
//! [`CapturedFrame::kind`]).
//!
//! Where the marker sits: every payload holds one or more 8-byte *tags*
//! (`marker` big-endian, `b'K'`, kind code, `b"CW"`); in fragments every fragment holds a whole
//! tag; ARP frames carry it in the Ethernet padding; the DNS query carries it as text in its
//! first label (`m<marker hex>k<code hex>`), because a DNS proxy may legitimately re-send the
//! question: such a copy must come from the card's outside address.
//!
//! Sockets are AF_PACKET sockets made with nix's safe API; the interface address they bind or
//! send to comes from `getifaddrs` (its `AF_PACKET` entries), so no unsafe code is needed.
//! Both sockets live in the namespace of the thread that creates them: call [`send_frames`] from
//! a thread inside the sending namespace ([`Netns::enter`]); [`start_capture`] does that itself.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader,
    Ipv6Header, LinkExtSlice, LinkSlice, NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket,
    TcpOptionElement, TransportSlice, VlanId,
};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, bind, recvfrom, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use lab::topology::{Netns, panic_message};

/// An address no host in any lab owns, used as a forged source ([`Kind::SpoofedSourceAddress`],
/// [`Kind::TcpSynProxiedPortSpoofedSource`]). From 198.18.0.0/15, the benchmarking range.
pub const FOREIGN_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);

/// [`FOREIGN_SOURCE`]'s IPv6 counterpart: a world address no host in any lab owns.
pub const FOREIGN_SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 0x66);

/// A port nothing proxies (the card rejects it).
pub const UNPROXIED_PORT: u16 = 2222;

/// Length of one marker tag in payloads: marker (4, big-endian), `b'K'`, kind code, `b"CW"`.
pub const TAG_LEN: usize = 8;

/// Addresses the crafted frames use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Source MAC: the protected computer's interface.
    pub src_mac: [u8; 6],
    /// Destination MAC: the appliance inside interface's MAC (its default gateway).
    pub dst_mac: [u8; 6],
    /// The protected computer's IPv4 address.
    pub src_ip: Ipv4Addr,
    /// The protected computer's IPv6 address.
    pub src_ip6: Ipv6Addr,
    /// An outside address (a host in the outside world).
    pub victim_ip: Ipv4Addr,
    /// An outside IPv6 address.
    pub victim_ip6: Ipv6Addr,
    /// The appliance's address on the outside network.
    pub appliance_outside_ip: Ipv4Addr,
    /// The card's outside address (the only source allowed out).
    pub card_outside_ip: Ipv4Addr,
    /// The appliance's address on the inside network (the protected computer's gateway).
    pub appliance_inside_ip: Ipv4Addr,
    /// The outside network's DHCP server.
    pub dhcp_server_ip: Ipv4Addr,
    /// Put in payloads / IP id / ports so captures can recognise our frames.
    pub marker: u32,
}

impl Target {
    /// A target with the default addressing of DESIGN.md (inside `192.168.77.0/24`, card link
    /// `172.31.77.0/29`) and documentation addresses for the outside world: protected computer
    /// `192.168.77.100` / `fd77::100`, victim `198.51.100.7` / `2001:db8:5::7`, appliance
    /// outside `203.0.113.2`, appliance inside `192.168.77.1`, DHCP server `203.0.113.1`, card
    /// outside `172.31.77.3`. Change
    /// fields with struct update syntax to match a lab.
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6], marker: u32) -> Target {
        Target {
            src_mac,
            dst_mac,
            src_ip: Ipv4Addr::new(192, 168, 77, 100),
            src_ip6: "fd77::100".parse().expect("valid IPv6 literal"),
            victim_ip: Ipv4Addr::new(198, 51, 100, 7),
            victim_ip6: "2001:db8:5::7".parse().expect("valid IPv6 literal"),
            appliance_outside_ip: Ipv4Addr::new(203, 0, 113, 2),
            card_outside_ip: Ipv4Addr::new(172, 31, 77, 3),
            appliance_inside_ip: Ipv4Addr::new(192, 168, 77, 1),
            dhcp_server_ip: Ipv4Addr::new(203, 0, 113, 1),
            marker,
        }
    }

    /// The same target with the protected computer's addresses forged to world addresses
    /// ([`FOREIGN_SOURCE`], [`FOREIGN_SOURCE6`]) and another marker: every kind crafted for it
    /// is that kind's forged-source variant, told apart from the plain one by its marker.
    pub fn forged_source(&self, marker: u32) -> Target {
        Target {
            src_ip: FOREIGN_SOURCE,
            src_ip6: FOREIGN_SOURCE6,
            marker,
            ..self.clone()
        }
    }
}

/// A marker for one run: different every call (time, pid, a counter, std's random hash keys),
/// with no zero byte so it never looks like padding.
pub fn random_marker() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u32(CALLS.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    let bytes = (hasher.finish() as u32)
        .to_be_bytes()
        .map(|b| if b == 0 { 0xa5 } else { b });
    u32::from_be_bytes(bytes)
}

/// A kind of crafted traffic. Every kind is something that must never reach the outside
/// network from the inside (except through the card's proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// TCP SYN to the victim on a port nothing proxies ([`UNPROXIED_PORT`]).
    TcpSynUnproxiedPort = 1,
    /// TCP SYN to the victim's port 80 from a forged source ([`FOREIGN_SOURCE`]).
    TcpSynProxiedPortSpoofedSource,
    /// TCP ACK+PSH with data to the victim's port 80, no handshake before it.
    TcpAckWithoutHandshake,
    /// UDP to the victim on a high port.
    UdpRandomPort,
    /// A DNS query (UDP 53) straight to an outside resolver (the victim).
    UdpDns53ToOutsideResolver,
    /// ICMP echo request to the victim.
    IcmpEcho,
    /// UDP to the victim from a forged source ([`FOREIGN_SOURCE`]).
    SpoofedSourceAddress,
    /// TCP SYN to the victim forged to come from the card's outside address.
    SpoofedCardOutsideSource,
    /// UDP to the victim forged to come from the appliance's outside address.
    SpoofedApplianceOutsideSource,
    /// UDP to the victim with TTL 1.
    Ttl1,
    /// Only the first fragment (offset 0, more-fragments) of a UDP datagram to the victim.
    IpFragmentFirst,
    /// Only a later fragment (no transport header) of a UDP datagram to the victim.
    IpFragmentNonFirst,
    /// All three fragments of a UDP datagram to the victim.
    IpFragmentComplete,
    /// A TCP SYN to the victim in two fragments that overlap.
    IpFragmentOverlapping,
    /// IPv6 TCP SYN to the victim's port 443.
    Ipv6Tcp,
    /// IPv6 UDP to the victim.
    Ipv6Udp,
    /// ICMPv6 echo request to the victim.
    Icmpv6Echo,
    /// An IPv6 UDP datagram to the victim in two fragments.
    Ipv6Fragment,
    /// TCP SYN to the appliance's own outside address, port 22.
    ToApplianceOutsideAddress,
    /// TCP SYN to the card's outside address, port 80.
    ToCardOutsideAddress,
    /// DHCPREQUEST unicast to the outside network's DHCP server.
    ToOutsideDhcpServer,
    /// DHCPDISCOVER broadcast (`255.255.255.255`, broadcast MAC).
    DhcpBroadcastDiscover,
    /// UDP to the victim's (unicast) address in a frame sent to the broadcast MAC.
    ForgedBroadcastDstMac,
    /// UDP to the mDNS multicast group `224.0.0.251:5353`.
    MulticastMdns,
    /// ARP request (broadcast) for the victim's address.
    ArpRequestForVictim,
    /// Gratuitous ARP reply claiming the appliance's outside address (ARP spoofing).
    GratuitousArpForOutsideAddress,
    /// GRE (IP protocol 47) to the victim, tunnelling an IPv4 UDP packet to the victim.
    GreOrOtherProtocol,
    /// IP protocol 253 (experimental) to the victim.
    UnknownIpProtocol,
    /// TCP SYN to the victim with an IPv4 Record Route option.
    TcpWithIpOptions,
    /// UDP to the appliance's outside address with a loose source route onward to the victim.
    SourceRouteViaAppliance,
    /// 802.1Q-tagged (VLAN 100) UDP to the victim.
    VlanTagged,
    /// 802.1Q priority-tagged (VLAN 0) UDP to the victim.
    VlanPriorityTagged,
    // Reflection (DESIGN.md, rule 6): the source is forged to a world address
    // ([`FOREIGN_SOURCE`]) and the destination is something that answers. An answer would go
    // to the forged address, out of the outside port, carrying the inside's payload.
    /// ICMP echo request to the card's outside address from a forged world source.
    ReflectEchoViaCardOutside,
    /// A DNS query (UDP 53) to the card's outside address from a forged world source.
    ReflectDnsViaCardOutside,
    /// TCP SYN to the card's outside address, port 443, from a forged world source.
    ReflectSynViaCardOutside,
    /// ICMP echo request to the appliance's inside address from a forged world source.
    ReflectEchoViaApplianceInside,
    /// DHCPINFORM (UDP 68 to 67) to the appliance's inside address from a forged world source
    /// naming that source as its address: a server answers an INFORM by unicast to it.
    ReflectDhcpViaApplianceInside,
    /// TCP SYN to the appliance's inside address, port 80 (the status page), from a forged
    /// world source.
    ReflectSynViaApplianceInside,
    /// ICMP echo request to the victim with TTL 1, from a forged world source: the time
    /// exceeded error would go to that source.
    ReflectTtl1Echo,
    /// UDP to the victim with TTL 1, from a forged world source.
    ReflectTtl1Udp,
    /// TCP SYN to the victim's port 443 with TTL 1, from a forged world source.
    ReflectTtl1Syn,
}

/// Every kind, in code order.
pub const ALL_KINDS: &[Kind] = &[
    Kind::TcpSynUnproxiedPort,
    Kind::TcpSynProxiedPortSpoofedSource,
    Kind::TcpAckWithoutHandshake,
    Kind::UdpRandomPort,
    Kind::UdpDns53ToOutsideResolver,
    Kind::IcmpEcho,
    Kind::SpoofedSourceAddress,
    Kind::SpoofedCardOutsideSource,
    Kind::SpoofedApplianceOutsideSource,
    Kind::Ttl1,
    Kind::IpFragmentFirst,
    Kind::IpFragmentNonFirst,
    Kind::IpFragmentComplete,
    Kind::IpFragmentOverlapping,
    Kind::Ipv6Tcp,
    Kind::Ipv6Udp,
    Kind::Icmpv6Echo,
    Kind::Ipv6Fragment,
    Kind::ToApplianceOutsideAddress,
    Kind::ToCardOutsideAddress,
    Kind::ToOutsideDhcpServer,
    Kind::DhcpBroadcastDiscover,
    Kind::ForgedBroadcastDstMac,
    Kind::MulticastMdns,
    Kind::ArpRequestForVictim,
    Kind::GratuitousArpForOutsideAddress,
    Kind::GreOrOtherProtocol,
    Kind::UnknownIpProtocol,
    Kind::TcpWithIpOptions,
    Kind::SourceRouteViaAppliance,
    Kind::VlanTagged,
    Kind::VlanPriorityTagged,
    Kind::ReflectEchoViaCardOutside,
    Kind::ReflectDnsViaCardOutside,
    Kind::ReflectSynViaCardOutside,
    Kind::ReflectEchoViaApplianceInside,
    Kind::ReflectDhcpViaApplianceInside,
    Kind::ReflectSynViaApplianceInside,
    Kind::ReflectTtl1Echo,
    Kind::ReflectTtl1Udp,
    Kind::ReflectTtl1Syn,
];

/// The reflection kinds: forged world source, destination something that answers.
pub const REFLECTION_KINDS: &[Kind] = &[
    Kind::ReflectEchoViaCardOutside,
    Kind::ReflectDnsViaCardOutside,
    Kind::ReflectSynViaCardOutside,
    Kind::ReflectEchoViaApplianceInside,
    Kind::ReflectDhcpViaApplianceInside,
    Kind::ReflectSynViaApplianceInside,
    Kind::ReflectTtl1Echo,
    Kind::ReflectTtl1Udp,
    Kind::ReflectTtl1Syn,
];

impl Kind {
    /// The kind's code: the byte after `b'K'` in its tags (1-based, unique).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with this code.
    pub fn from_code(code: u8) -> Option<Kind> {
        ALL_KINDS.iter().copied().find(|k| k.code() == code)
    }

    /// How many frames [`craft`] makes for this kind.
    pub fn frame_count(self) -> usize {
        match self {
            Kind::IpFragmentComplete => 3,
            Kind::IpFragmentOverlapping | Kind::Ipv6Fragment => 2,
            _ => 1,
        }
    }
}

/// The 8-byte tag that marks frames of `kind` in a run with `marker`.
pub fn tag(kind: Kind, marker: u32) -> [u8; TAG_LEN] {
    let m = marker.to_be_bytes();
    [m[0], m[1], m[2], m[3], b'K', kind.code(), b'C', b'W']
}

/// The DNS label that marks [`Kind::UdpDns53ToOutsideResolver`] queries.
fn dns_label(kind: Kind, marker: u32) -> String {
    format!("m{marker:08x}k{:02x}", kind.code())
}

/// `count` tags back to back.
fn tags(kind: Kind, marker: u32, count: usize) -> Vec<u8> {
    tag(kind, marker).repeat(count)
}

/// The usual payload: four tags (32 bytes).
fn payload(kind: Kind, t: &Target) -> Vec<u8> {
    tags(kind, t.marker, 4)
}

/// A source port per kind, so summaries tell kinds apart.
fn sport(kind: Kind, t: &Target) -> u16 {
    40000 + u16::from(kind.code()) * 100 + (t.marker % 100) as u16
}

/// IP identification per kind (fragments of one datagram share it).
fn ip_id(kind: Kind, t: &Target) -> u16 {
    (t.marker as u16).wrapping_add(u16::from(kind.code()))
}

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const MDNS_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// Minimum Ethernet frame length without FCS.
const MIN_FRAME: usize = 60;

/// Link-layer part of a frame.
#[derive(Clone, Copy)]
struct Eth {
    src: [u8; 6],
    dst: [u8; 6],
    vlan: Option<u16>,
}

impl Eth {
    fn to(t: &Target) -> Eth {
        Eth {
            src: t.src_mac,
            dst: t.dst_mac,
            vlan: None,
        }
    }
}

/// Transport part of a frame built with [`PacketBuilder`].
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        syn: bool,
        ack: Option<u32>,
        psh: bool,
        mss: Option<u16>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmpv4Echo {
        id: u16,
        seq: u16,
    },
    Icmpv6Echo {
        id: u16,
        seq: u16,
    },
    /// Raw IP payload with this protocol number (no transport header built).
    Raw(IpNumber),
}

impl L4 {
    fn syn(sport: u16, dport: u16, seq: u32) -> L4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            syn: true,
            ack: None,
            psh: false,
            mss: Some(1460),
        }
    }
}

/// An IPv4 header (checksum and lengths are filled in when written).
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, id: u16) -> Ipv4Header {
    let mut header = Ipv4Header::new(0, ttl, IpNumber::UDP, src.octets(), dst.octets())
        .expect("zero payload length is valid");
    header.identification = id;
    header.dont_fragment = false;
    header
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, marker: u32) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(marker & 0xf_ffff).expect("20-bit flow label"),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: src.octets(),
        destination: dst.octets(),
    }
}

/// The builder up to the IP layer (Ethernet, optional 802.1Q tag, IP).
fn ip_step(eth: Eth, ip: IpHeaders) -> PacketBuilderStep<IpHeaders> {
    let builder = PacketBuilder::ethernet2(eth.src, eth.dst);
    match eth.vlan {
        Some(id) => builder
            .single_vlan(VlanId::try_new(id).expect("VLAN id below 4096"))
            .ip(ip),
        None => builder.ip(ip),
    }
}

/// Writes the transport layer and payload after `step`; checksums are computed by etherparse.
fn finish(step: PacketBuilderStep<IpHeaders>, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let result = match l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            syn,
            ack,
            psh,
            mss,
        } => {
            let mut tcp = step.tcp(sport, dport, seq, 64240);
            if syn {
                tcp = tcp.syn();
            }
            if let Some(number) = ack {
                tcp = tcp.ack(number);
            }
            if psh {
                tcp = tcp.psh();
            }
            if let Some(mss) = mss {
                tcp = tcp
                    .options(&[TcpOptionElement::MaximumSegmentSize(mss)])
                    .expect("MSS option fits");
            }
            tcp.write(&mut out, payload)
        }
        L4::Udp { sport, dport } => step.udp(sport, dport).write(&mut out, payload),
        L4::Icmpv4Echo { id, seq } => step.icmpv4_echo_request(id, seq).write(&mut out, payload),
        L4::Icmpv6Echo { id, seq } => step.icmpv6_echo_request(id, seq).write(&mut out, payload),
        L4::Raw(protocol) => step.write(&mut out, protocol, payload),
    };
    result.expect("crafted frames are small and well-formed");
    out
}

fn ipv4_frame(eth: Eth, header: Ipv4Header, l4: L4, payload: &[u8]) -> Vec<u8> {
    finish(
        ip_step(eth, IpHeaders::Ipv4(header, Ipv4Extensions::default())),
        l4,
        payload,
    )
}

fn ipv6_frame(eth: Eth, header: Ipv6Header, l4: L4, payload: &[u8]) -> Vec<u8> {
    finish(
        ip_step(eth, IpHeaders::Ipv6(header, Ipv6Extensions::default())),
        l4,
        payload,
    )
}

/// Length of the Ethernet (and VLAN) header in front of the IP header.
fn link_len(eth: Eth) -> usize {
    14 + if eth.vlan.is_some() { 4 } else { 0 }
}

/// The IPv4 payload (transport header + data) of an unfragmented frame built by [`ipv4_frame`].
fn ipv4_payload_of(eth: Eth, frame: &[u8]) -> Vec<u8> {
    let ip = &frame[link_len(eth)..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[ihl..].to_vec()
}

/// One IPv4 fragment: `chunk` is the slice of the original IP payload at `byte_offset`.
fn ipv4_fragment(
    eth: Eth,
    mut header: Ipv4Header,
    protocol: IpNumber,
    byte_offset: usize,
    more: bool,
    chunk: &[u8],
) -> Vec<u8> {
    assert!(
        byte_offset.is_multiple_of(8),
        "fragment offsets are multiples of 8"
    );
    header.more_fragments = more;
    header.fragment_offset =
        IpFragOffset::try_new((byte_offset / 8) as u16).expect("fragment offset fits 13 bits");
    finish(
        ip_step(eth, IpHeaders::Ipv4(header, Ipv4Extensions::default())),
        L4::Raw(protocol),
        chunk,
    )
}

/// Pads a frame to the Ethernet minimum, putting `tag` first in the padding.
fn pad_with_tag(mut frame: Vec<u8>, tag: &[u8]) -> Vec<u8> {
    frame.extend_from_slice(tag);
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

fn arp_frame(
    eth: Eth,
    operation: ArpOperation,
    sender: ([u8; 6], Ipv4Addr),
    target: ([u8; 6], Ipv4Addr),
    tag: &[u8],
) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        operation,
        &sender.0,
        &sender.1.octets(),
        &target.0,
        &target.1.octets(),
    )
    .expect("Ethernet/IPv4 ARP addresses have matching sizes");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth.src, eth.dst)
        .arp(arp)
        .write_to_vec(&mut out)
        .expect("ARP frame is written to a Vec");
    pad_with_tag(out, tag)
}

/// A DNS query (recursion desired) for an A record of `labels`.
fn dns_query(id: u16, labels: &[&str]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // flags: RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in labels {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    m
}

/// DHCP message types used here.
const DHCPDISCOVER: u8 = 1;
const DHCPREQUEST: u8 = 3;
const DHCPINFORM: u8 = 8;

/// A BOOTP/DHCP client message with the tag in option 60 (vendor class identifier).
fn dhcp_message(msg_type: u8, xid: u32, ciaddr: Ipv4Addr, chaddr: [u8; 6], tag: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6; // hardware address length
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    if msg_type == DHCPDISCOVER {
        m[10] = 0x80; // broadcast flag
    }
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&chaddr);
    m.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    m.extend_from_slice(&[53, 1, msg_type]);
    m.extend_from_slice(&[60, tag.len() as u8]);
    m.extend_from_slice(tag);
    m.extend_from_slice(&[55, 3, 1, 3, 6]); // parameter request list
    m.push(255);
    m
}

/// The frames of one kind: one or more raw Ethernet frames (fragments give several), ready for
/// [`send_frames`], with valid IPv4 header and transport checksums (for fragments: valid once
/// reassembled). Every frame carries the marker (see the module documentation).
pub fn craft(kind: Kind, t: &Target) -> Vec<Vec<u8>> {
    let eth = Eth::to(t);
    let data = payload(kind, t);
    let sp = sport(kind, t);
    let id = ip_id(kind, t);
    let v4 = |src: Ipv4Addr, dst: Ipv4Addr| ipv4_header(src, dst, 64, id);
    let udp = |dport| L4::Udp { sport: sp, dport };
    let frame = match kind {
        Kind::TcpSynUnproxiedPort => ipv4_frame(
            eth,
            v4(t.src_ip, t.victim_ip),
            L4::syn(sp, UNPROXIED_PORT, t.marker),
            &data,
        ),
        Kind::TcpSynProxiedPortSpoofedSource => ipv4_frame(
            eth,
            v4(FOREIGN_SOURCE, t.victim_ip),
            L4::syn(sp, 80, t.marker),
            &data,
        ),
        Kind::TcpAckWithoutHandshake => ipv4_frame(
            eth,
            v4(t.src_ip, t.victim_ip),
            L4::Tcp {
                sport: sp,
                dport: 80,
                seq: t.marker,
                syn: false,
                ack: Some(!t.marker),
                psh: true,
                mss: None,
            },
            &data,
        ),
        Kind::UdpRandomPort => ipv4_frame(
            eth,
            v4(t.src_ip, t.victim_ip),
            udp(31337 + (t.marker % 1000) as u16),
            &data,
        ),
        Kind::UdpDns53ToOutsideResolver => {
            let label = dns_label(kind, t.marker);
            let query = dns_query(id, &[&label, "cardwall-bypass", "example"]);
            ipv4_frame(eth, v4(t.src_ip, t.victim_ip), udp(53), &query)
        }
        Kind::IcmpEcho => ipv4_frame(
            eth,
            v4(t.src_ip, t.victim_ip),
            L4::Icmpv4Echo {
                id: (t.marker >> 16) as u16,
                seq: t.marker as u16,
            },
            &data,
        ),
        Kind::SpoofedSourceAddress => ipv4_frame(
            eth,
            v4(FOREIGN_SOURCE, t.victim_ip),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::SpoofedCardOutsideSource => ipv4_frame(
            eth,
            v4(t.card_outside_ip, t.victim_ip),
            L4::syn(sp, UNPROXIED_PORT, t.marker),
            &data,
        ),
        Kind::SpoofedApplianceOutsideSource => ipv4_frame(
            eth,
            v4(t.appliance_outside_ip, t.victim_ip),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::Ttl1 => ipv4_frame(
            eth,
            ipv4_header(t.src_ip, t.victim_ip, 1, id),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::IpFragmentFirst | Kind::IpFragmentNonFirst | Kind::IpFragmentComplete => {
            // UDP header (8) + 8 tags: 72 bytes of IP payload, cut in three 24-byte fragments;
            // every fragment holds whole tags (they start at IP payload offset 8).
            let header = v4(t.src_ip, t.victim_ip);
            let whole = ipv4_frame(
                eth,
                header.clone(),
                udp(UNPROXIED_PORT),
                &tags(kind, t.marker, 8),
            );
            let datagram = ipv4_payload_of(eth, &whole);
            let fragment = |offset: usize, more: bool| {
                let end = (offset + 24).min(datagram.len());
                ipv4_fragment(
                    eth,
                    header.clone(),
                    IpNumber::UDP,
                    offset,
                    more,
                    &datagram[offset..end],
                )
            };
            return match kind {
                Kind::IpFragmentFirst => vec![fragment(0, true)],
                Kind::IpFragmentNonFirst => vec![fragment(24, true)],
                _ => vec![fragment(0, true), fragment(24, true), fragment(48, false)],
            };
        }
        Kind::IpFragmentOverlapping => {
            // TCP header with MSS (24) + 4 tags: fragment A is bytes 0..32 (offset 0, MF),
            // fragment B is bytes 24..56 (offset 24): they overlap in 24..32 (same content).
            let header = v4(t.src_ip, t.victim_ip);
            let whole = ipv4_frame(
                eth,
                header.clone(),
                L4::syn(sp, UNPROXIED_PORT, t.marker),
                &data,
            );
            let segment = ipv4_payload_of(eth, &whole);
            return vec![
                ipv4_fragment(eth, header.clone(), IpNumber::TCP, 0, true, &segment[..32]),
                ipv4_fragment(eth, header, IpNumber::TCP, 24, false, &segment[24..]),
            ];
        }
        Kind::Ipv6Tcp => ipv6_frame(
            eth,
            ipv6_header(t.src_ip6, t.victim_ip6, t.marker),
            L4::syn(sp, 443, t.marker),
            &data,
        ),
        Kind::Ipv6Udp => ipv6_frame(
            eth,
            ipv6_header(t.src_ip6, t.victim_ip6, t.marker),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::Icmpv6Echo => ipv6_frame(
            eth,
            ipv6_header(t.src_ip6, t.victim_ip6, t.marker),
            L4::Icmpv6Echo {
                id: (t.marker >> 16) as u16,
                seq: t.marker as u16,
            },
            &data,
        ),
        Kind::Ipv6Fragment => {
            // UDP header (8) + 6 tags = 56 bytes: fragments 0..24 (MF) and 24..56.
            let header = ipv6_header(t.src_ip6, t.victim_ip6, t.marker);
            let whole = ipv6_frame(
                eth,
                header.clone(),
                udp(UNPROXIED_PORT),
                &tags(kind, t.marker, 6),
            );
            let datagram = whole[14 + Ipv6Header::LEN..].to_vec();
            let fragment = |offset: usize, more: bool, chunk: &[u8]| {
                let extensions = Ipv6Extensions {
                    fragment: Some(Ipv6FragmentHeader::new(
                        IpNumber::UDP,
                        IpFragOffset::try_new((offset / 8) as u16).expect("small offset"),
                        more,
                        t.marker,
                    )),
                    ..Default::default()
                };
                finish(
                    ip_step(eth, IpHeaders::Ipv6(header.clone(), extensions)),
                    L4::Raw(IpNumber::UDP),
                    chunk,
                )
            };
            return vec![
                fragment(0, true, &datagram[..24]),
                fragment(24, false, &datagram[24..]),
            ];
        }
        Kind::ToApplianceOutsideAddress => ipv4_frame(
            eth,
            v4(t.src_ip, t.appliance_outside_ip),
            L4::syn(sp, 22, t.marker),
            &data,
        ),
        Kind::ToCardOutsideAddress => ipv4_frame(
            eth,
            v4(t.src_ip, t.card_outside_ip),
            L4::syn(sp, 80, t.marker),
            &data,
        ),
        Kind::ToOutsideDhcpServer => {
            let message = dhcp_message(
                DHCPREQUEST,
                t.marker,
                t.src_ip,
                t.src_mac,
                &tag(kind, t.marker),
            );
            ipv4_frame(
                eth,
                v4(t.src_ip, t.dhcp_server_ip),
                L4::Udp {
                    sport: 68,
                    dport: 67,
                },
                &message,
            )
        }
        Kind::DhcpBroadcastDiscover => {
            let message = dhcp_message(
                DHCPDISCOVER,
                t.marker,
                Ipv4Addr::UNSPECIFIED,
                t.src_mac,
                &tag(kind, t.marker),
            );
            ipv4_frame(
                Eth {
                    dst: BROADCAST_MAC,
                    ..eth
                },
                v4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
                L4::Udp {
                    sport: 68,
                    dport: 67,
                },
                &message,
            )
        }
        Kind::ForgedBroadcastDstMac => ipv4_frame(
            Eth {
                dst: BROADCAST_MAC,
                ..eth
            },
            v4(t.src_ip, t.victim_ip),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::MulticastMdns => ipv4_frame(
            Eth {
                dst: MDNS_MAC,
                ..eth
            },
            ipv4_header(t.src_ip, MDNS_GROUP, 255, id),
            L4::Udp {
                sport: 5353,
                dport: 5353,
            },
            &data,
        ),
        Kind::ArpRequestForVictim => arp_frame(
            Eth {
                dst: BROADCAST_MAC,
                ..eth
            },
            ArpOperation::REQUEST,
            (t.src_mac, t.src_ip),
            ([0; 6], t.victim_ip),
            &tag(kind, t.marker),
        ),
        Kind::GratuitousArpForOutsideAddress => arp_frame(
            Eth {
                dst: BROADCAST_MAC,
                ..eth
            },
            ArpOperation::REPLY,
            (t.src_mac, t.appliance_outside_ip),
            (BROADCAST_MAC, t.appliance_outside_ip),
            &tag(kind, t.marker),
        ),
        Kind::GreOrOtherProtocol => {
            let mut inner = Vec::new();
            PacketBuilder::ip(IpHeaders::Ipv4(
                v4(t.src_ip, t.victim_ip),
                Ipv4Extensions::default(),
            ))
            .udp(sp, UNPROXIED_PORT)
            .write(&mut inner, &data)
            .expect("inner packet is written to a Vec");
            let mut gre = vec![0x00, 0x00, 0x08, 0x00]; // no flags, version 0, IPv4 inside
            gre.extend_from_slice(&inner);
            ipv4_frame(eth, v4(t.src_ip, t.victim_ip), L4::Raw(IpNumber::GRE), &gre)
        }
        Kind::UnknownIpProtocol => ipv4_frame(
            eth,
            v4(t.src_ip, t.victim_ip),
            L4::Raw(IpNumber(253)),
            &data,
        ),
        Kind::TcpWithIpOptions => {
            let mut header = v4(t.src_ip, t.victim_ip);
            // Record Route (type 7, length 11, pointer 4, two empty slots), then End of List.
            let options = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            header.options = Ipv4Options::try_from(&options[..]).expect("12 bytes of options");
            ipv4_frame(eth, header, L4::syn(sp, UNPROXIED_PORT, t.marker), &data)
        }
        Kind::SourceRouteViaAppliance => {
            let mut header = v4(t.src_ip, t.appliance_outside_ip);
            // NOP, then Loose Source Route (type 131, length 7, pointer 4) listing the victim.
            let v = t.victim_ip.octets();
            let options = [1, 131, 7, 4, v[0], v[1], v[2], v[3]];
            header.options = Ipv4Options::try_from(&options[..]).expect("8 bytes of options");
            ipv4_frame(eth, header, udp(UNPROXIED_PORT), &data)
        }
        Kind::ReflectEchoViaCardOutside | Kind::ReflectEchoViaApplianceInside => {
            let dst = if kind == Kind::ReflectEchoViaCardOutside {
                t.card_outside_ip
            } else {
                t.appliance_inside_ip
            };
            ipv4_frame(
                eth,
                v4(FOREIGN_SOURCE, dst),
                L4::Icmpv4Echo {
                    id: (t.marker >> 16) as u16,
                    seq: t.marker as u16,
                },
                &data,
            )
        }
        Kind::ReflectDnsViaCardOutside => {
            let label = dns_label(kind, t.marker);
            let query = dns_query(id, &[&label, "cardwall-reflect", "example"]);
            ipv4_frame(eth, v4(FOREIGN_SOURCE, t.card_outside_ip), udp(53), &query)
        }
        Kind::ReflectSynViaCardOutside => ipv4_frame(
            eth,
            v4(FOREIGN_SOURCE, t.card_outside_ip),
            L4::syn(sp, 443, t.marker),
            &data,
        ),
        Kind::ReflectDhcpViaApplianceInside => {
            let message = dhcp_message(
                DHCPINFORM,
                t.marker,
                FOREIGN_SOURCE,
                t.src_mac,
                &tag(kind, t.marker),
            );
            ipv4_frame(
                eth,
                v4(FOREIGN_SOURCE, t.appliance_inside_ip),
                L4::Udp {
                    sport: 68,
                    dport: 67,
                },
                &message,
            )
        }
        Kind::ReflectSynViaApplianceInside => ipv4_frame(
            eth,
            v4(FOREIGN_SOURCE, t.appliance_inside_ip),
            L4::syn(sp, 80, t.marker),
            &data,
        ),
        Kind::ReflectTtl1Echo => ipv4_frame(
            eth,
            ipv4_header(FOREIGN_SOURCE, t.victim_ip, 1, id),
            L4::Icmpv4Echo {
                id: (t.marker >> 16) as u16,
                seq: t.marker as u16,
            },
            &data,
        ),
        Kind::ReflectTtl1Udp => ipv4_frame(
            eth,
            ipv4_header(FOREIGN_SOURCE, t.victim_ip, 1, id),
            udp(UNPROXIED_PORT),
            &data,
        ),
        Kind::ReflectTtl1Syn => ipv4_frame(
            eth,
            ipv4_header(FOREIGN_SOURCE, t.victim_ip, 1, id),
            L4::syn(sp, 443, t.marker),
            &data,
        ),
        Kind::VlanTagged | Kind::VlanPriorityTagged => {
            let vlan = if kind == Kind::VlanTagged { 100 } else { 0 };
            ipv4_frame(
                Eth {
                    vlan: Some(vlan),
                    ..eth
                },
                v4(t.src_ip, t.victim_ip),
                udp(UNPROXIED_PORT),
                &data,
            )
        }
    };
    vec![frame]
}

/// Every kind's frames, in [`ALL_KINDS`] order, each with its kind.
pub fn craft_all(t: &Target) -> Vec<(Kind, Vec<u8>)> {
    ALL_KINDS
        .iter()
        .flat_map(|&kind| craft(kind, t).into_iter().map(move |f| (kind, f)))
        .collect()
}

/// The AF_PACKET address of `ifname` in the calling thread's namespace (from `getifaddrs`).
fn link_addr(ifname: &str) -> io::Result<LinkAddr> {
    nix::ifaddrs::getifaddrs()?
        .filter(|entry| entry.interface_name == ifname)
        .find_map(|entry| entry.address.and_then(|a| a.as_link_addr().copied()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname:?} in this thread's network namespace"),
            )
        })
}

/// The MAC address of `ifname` as seen from the calling thread's network namespace (via
/// `getifaddrs`, which asks the kernel over netlink); if that fails, read from
/// `/sys/class/net/<if>/address`. Note that `/sys` shows the namespace of whoever mounted it (the
/// test process's own namespace), not a [`Netns::enter`] thread's: use [`interface_mac_in`] for
/// interfaces inside a lab namespace.
pub fn interface_mac(ifname: &str) -> Option<[u8; 6]> {
    if let Ok(addr) = link_addr(ifname) {
        return addr.addr();
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    parse_mac(text.trim())
}

/// The MAC address of `ifname` inside `ns` (asked from a thread that joins it).
pub fn interface_mac_in(ns: &Netns, ifname: &str) -> Option<[u8; 6]> {
    let ifname = ifname.to_owned();
    ns.enter(move || interface_mac(&ifname))
        .join()
        .ok()
        .flatten()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Sends raw frames out of `ifname` (AF_PACKET). Call from a thread inside the sending
/// namespace ([`Netns::enter`]). Each frame must start with its Ethernet header; it is sent as
/// is (the kernel adds nothing but the FCS a real NIC appends).
pub fn send_frames(ifname: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    let addr = link_addr(ifname)?;
    // Protocol 0: this socket only sends, it receives nothing.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None::<SockProtocol>,
    )?;
    for (index, frame) in frames.iter().enumerate() {
        let sent = sendto(fd.as_raw_fd(), frame, &addr, MsgFlags::empty()).map_err(|errno| {
            io::Error::new(
                io::Error::from(errno).kind(),
                format!(
                    "sending frame {index} ({} bytes) out of {ifname}: {errno}",
                    frame.len()
                ),
            )
        })?;
        if sent != frame.len() {
            return Err(io::Error::other(format!(
                "frame {index}: sent {sent} of {} bytes",
                frame.len()
            )));
        }
    }
    Ok(())
}

/// `sll_pkttype` of frames the capturing host sent itself.
const PACKET_OUTGOING: u8 = 4;
/// How often the capture thread looks at its stop channel.
const CAPTURE_POLL: Duration = Duration::from_millis(20);
/// How long [`Capture::stop`] keeps reading after being asked to stop, for frames in flight.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);
/// Receive buffer asked for (root may exceed `rmem_max`): a burst must not be dropped, since a
/// dropped frame could be the one that leaked.
const CAPTURE_BUFFER: usize = 8 << 20;

/// A frame seen by a [`Capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The frame from its Ethernet header on (no FCS). 802.1Q tags are not in here: the
    /// receiving kernel takes them off before any capture sees the frame.
    pub bytes: Vec<u8>,
    /// Whether the capturing host sent this frame itself (rather than received it).
    pub outgoing: bool,
}

/// A capture running on one interface: every frame on it, in order, until [`Capture::stop`].
#[derive(Debug)]
pub struct Capture {
    ifname: String,
    namespace: String,
    stop: mpsc::Sender<Duration>,
    thread: JoinHandle<io::Result<Vec<CapturedFrame>>>,
}

/// Captures every frame on `ifname` (AF_PACKET, ETH_P_ALL; promiscuous mode is not needed for
/// veth, which hands every frame up) in namespace `ns`, until [`Capture::stop`]. The capture is
/// live when this returns: frames sent afterwards are seen.
pub fn start_capture(ns: &Netns, ifname: &str) -> io::Result<Capture> {
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let (stop_tx, stop_rx) = mpsc::channel::<Duration>();
    let name = ifname.to_owned();
    let thread = ns.enter(move || capture_loop(&name, &ready_tx, &stop_rx));
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Capture {
            ifname: ifname.to_owned(),
            namespace: ns.name().to_owned(),
            stop: stop_tx,
            thread,
        }),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        // The thread ended before reporting: it could not join the namespace.
        Err(_) => Err(match thread.join() {
            Err(panic) => io::Error::other(format!(
                "capture on {ifname} in {ns}: {}",
                panic_message(&panic)
            )),
            Ok(Err(error)) => error,
            Ok(Ok(_)) => io::Error::other("capture thread ended before it started"),
        }),
    }
}

/// Opens and binds the capture socket; returns it and the interface index.
fn open_capture_socket(ifname: &str) -> io::Result<(OwnedFd, usize)> {
    let addr = link_addr(ifname)?;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )?;
    if setsockopt(&fd, sockopt::RcvBufForce, &CAPTURE_BUFFER).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &CAPTURE_BUFFER)?;
    }
    let poll = TimeVal::milliseconds(CAPTURE_POLL.as_millis() as i64);
    setsockopt(&fd, sockopt::ReceiveTimeout, &poll)?;
    // getifaddrs leaves the protocol 0: bind keeps the socket's ETH_P_ALL.
    bind(fd.as_raw_fd(), &addr)?;
    Ok((fd, addr.ifindex()))
}

fn capture_loop(
    ifname: &str,
    ready: &mpsc::Sender<io::Result<()>>,
    stop: &mpsc::Receiver<Duration>,
) -> io::Result<Vec<CapturedFrame>> {
    let (fd, ifindex) = match open_capture_socket(ifname) {
        Ok(opened) => {
            let _ = ready.send(Ok(()));
            opened
        }
        Err(error) => {
            let _ = ready.send(Err(io::Error::new(
                error.kind(),
                format!("capture on {ifname}: {error}"),
            )));
            return Err(error);
        }
    };
    let mut frames = Vec::new();
    let mut buffer = vec![0u8; 1 << 17];
    let mut deadline: Option<Instant> = None;
    loop {
        match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buffer) {
            Ok((len, from)) => {
                // Frames queued between socket() and bind() may come from other interfaces.
                if from.is_none_or(|a| a.ifindex() == ifindex) {
                    frames.push(CapturedFrame {
                        bytes: buffer[..len.min(buffer.len())].to_vec(),
                        outgoing: from.is_some_and(|a| a.pkttype() == PACKET_OUTGOING),
                    });
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => {
                return Err(io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("capture on {ifname}: receiving: {errno}"),
                ));
            }
        }
        if deadline.is_none() {
            match stop.try_recv() {
                Ok(linger) => deadline = Some(Instant::now() + linger),
                Err(mpsc::TryRecvError::Empty) => {}
                // The Capture was dropped without stop(): nobody wants the frames.
                Err(mpsc::TryRecvError::Disconnected) => return Ok(frames),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(frames);
        }
    }
}

impl Capture {
    /// The interface captured.
    pub fn interface(&self) -> &str {
        &self.ifname
    }

    /// Stops after a short linger ([`DEFAULT_LINGER`]) for frames still in flight, and returns
    /// the frames that *arrived* on the interface (frames the capturing host sent itself, such
    /// as its own replies, are left out; see [`Capture::stop_all`]). Panics if the capture
    /// failed: a capture that silently missed frames could hide a leak.
    pub fn stop(self) -> Vec<CapturedFrame> {
        self.stop_after(DEFAULT_LINGER)
            .into_iter()
            .filter(|f| !f.outgoing)
            .collect()
    }

    /// Like [`Capture::stop`], keeping outgoing frames too (see [`CapturedFrame::outgoing`]).
    pub fn stop_all(self) -> Vec<CapturedFrame> {
        self.stop_after(DEFAULT_LINGER)
    }

    /// Keeps capturing for `linger` more, then stops and returns every frame (both
    /// directions). Panics if the capture failed.
    pub fn stop_after(self, linger: Duration) -> Vec<CapturedFrame> {
        let what = format!("capture on {} in {}", self.ifname, self.namespace);
        match self.try_stop(linger) {
            Ok(frames) => frames,
            Err(error) => panic!("{what} failed: {error}"),
        }
    }

    /// Keeps capturing for `linger` more, then stops; returns every frame, or why the capture
    /// failed.
    pub fn try_stop(self, linger: Duration) -> io::Result<Vec<CapturedFrame>> {
        // A send error means the thread already ended; join() then tells why.
        let _ = self.stop.send(linger);
        self.thread
            .join()
            .map_err(|panic| io::Error::other(panic_message(&panic)))?
    }
}

/// The frames in `seen` that arrived (not sent from the capturing side) carrying `marker`:
/// crafted frames that leaked, one summary each. The bypass checks assert it is empty.
pub fn leaks(seen: &[CapturedFrame], marker: u32) -> Vec<String> {
    seen.iter()
        .filter(|f| !f.outgoing && f.carries_marker(marker))
        .map(CapturedFrame::summary)
        .collect()
}

/// Internet checksum (RFC 1071) over `chunks` taken as one byte string.
pub fn internet_checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for &byte in chunks.iter().flat_map(|c| c.iter()) {
        match odd.take() {
            Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 or IPv6 pseudo-header for transport checksums.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, protocol]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            p.extend_from_slice(&v6(s).octets());
            p.extend_from_slice(&v6(d).octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, protocol]);
        }
    }
    p
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The kind whose tag (or DNS label) with `marker` appears in `bytes`.
pub fn kind_of(bytes: &[u8], marker: u32) -> Option<Kind> {
    let m = marker.to_be_bytes();
    let raw = bytes
        .windows(TAG_LEN)
        .find(|w| w[..4] == m && w[4] == b'K' && w[6..] == *b"CW")
        .and_then(|w| Kind::from_code(w[5]));
    raw.or_else(|| {
        let prefix = format!("m{marker:08x}k");
        let at = bytes
            .windows(prefix.len())
            .position(|w| w == prefix.as_bytes())?;
        let hex = bytes.get(at + prefix.len()..at + prefix.len() + 2)?;
        Kind::from_code(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?)
    })
}

/// Whether `bytes` carries `marker`, raw (big-endian) or as 8 lowercase hex digits.
pub fn frame_carries_marker(bytes: &[u8], marker: u32) -> bool {
    contains(bytes, &marker.to_be_bytes()) || contains(bytes, format!("{marker:08x}").as_bytes())
}

/// A one-line description of a raw Ethernet frame, e.g.
/// `IPv4 10.0.0.1 -> 1.2.3.4 TCP 1234->80 SYN`.
pub fn summarize(bytes: &[u8]) -> String {
    let packet = match SlicedPacket::from_ethernet(bytes) {
        Ok(packet) => packet,
        Err(error) => {
            let ether_type = bytes
                .get(12..14)
                .map(|b| format!("ethertype 0x{:02x}{:02x}", b[0], b[1]))
                .unwrap_or_else(|| "runt".to_owned());
            return format!("unparsed {ether_type} ({} bytes): {error}", bytes.len());
        }
    };
    let mut out = String::new();
    for ext in &packet.link_exts {
        if let LinkExtSlice::Vlan(vlan) = ext {
            let _ = write!(out, "VLAN {} ", vlan.vlan_identifier().value());
        }
    }
    match &packet.net {
        None => {
            let ether_type = match &packet.link {
                Some(LinkSlice::Ethernet2(eth)) => eth.ether_type().0,
                _ => 0,
            };
            let _ = write!(out, "ethertype 0x{ether_type:04x} ({} bytes)", bytes.len());
            return out;
        }
        Some(NetSlice::Arp(arp)) => {
            let ip = |a: &[u8]| {
                <[u8; 4]>::try_from(a)
                    .map(|o| Ipv4Addr::from(o).to_string())
                    .unwrap_or_else(|_| format!("{a:02x?}"))
            };
            let sender = ip(arp.sender_protocol_addr());
            let target = ip(arp.target_protocol_addr());
            match arp.operation() {
                ArpOperation::REQUEST => {
                    let _ = write!(out, "ARP request who-has {target} tell {sender}");
                }
                ArpOperation::REPLY => {
                    let mac = <[u8; 6]>::try_from(arp.sender_hw_addr())
                        .map(format_mac)
                        .unwrap_or_default();
                    let _ = write!(out, "ARP reply {sender} is-at {mac}");
                }
                op => {
                    let _ = write!(out, "ARP op {} {sender} -> {target}", op.0);
                }
            }
            return out;
        }
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let _ = write!(out, "IPv4 {} -> {}", h.source_addr(), h.destination_addr());
            if h.ttl() <= 1 {
                let _ = write!(out, " ttl={}", h.ttl());
            }
            if !h.options().is_empty() {
                let _ = write!(out, " options={:02x?}", h.options());
            }
            if h.is_fragmenting_payload() {
                let _ = write!(
                    out,
                    " fragment id=0x{:04x} offset={}{}",
                    h.identification(),
                    h.fragments_offset().byte_offset(),
                    if h.more_fragments() { " MF" } else { "" }
                );
            }
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let _ = write!(out, "IPv6 {} -> {}", h.source_addr(), h.destination_addr());
            if ip.is_payload_fragmented() {
                let _ = write!(out, " fragment");
            }
        }
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let flags: Vec<&str> = [
                (tcp.syn(), "SYN"),
                (tcp.ack(), "ACK"),
                (tcp.psh(), "PSH"),
                (tcp.fin(), "FIN"),
                (tcp.rst(), "RST"),
                (tcp.urg(), "URG"),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect();
            let _ = write!(
                out,
                " TCP {}->{} {}",
                tcp.source_port(),
                tcp.destination_port(),
                flags.join(",")
            );
        }
        Some(TransportSlice::Udp(udp)) => {
            let _ = write!(
                out,
                " UDP {}->{}",
                udp.source_port(),
                udp.destination_port()
            );
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            let _ = write!(out, " ICMP type {} code {}", icmp.type_u8(), icmp.code_u8());
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            let _ = write!(
                out,
                " ICMPv6 type {} code {}",
                icmp.type_u8(),
                icmp.code_u8()
            );
        }
        Some(TransportSlice::Igmp(_)) => out.push_str(" IGMP"),
        None => {
            let number = match &packet.net {
                Some(NetSlice::Ipv4(ip)) => Some(ip.payload_ip_number()),
                Some(NetSlice::Ipv6(ip)) => Some(ip.payload().ip_number),
                _ => None,
            };
            if let Some(number) = number {
                let _ = write!(out, " proto {}", number.0);
                if let Some(keyword) = number.keyword_str() {
                    let _ = write!(out, " ({keyword})");
                }
            }
        }
    }
    out
}

impl CapturedFrame {
    /// A one-line description (see [`summarize`]), `[out]` first for outgoing frames.
    pub fn summary(&self) -> String {
        let text = summarize(&self.bytes);
        if self.outgoing {
            format!("[out] {text}")
        } else {
            text
        }
    }

    fn parsed(&self) -> Option<SlicedPacket<'_>> {
        SlicedPacket::from_ethernet(&self.bytes).ok()
    }

    /// The IPv4 source address, if this is an IPv4 frame.
    pub fn ipv4_source(&self) -> Option<Ipv4Addr> {
        match self.parsed()?.net? {
            NetSlice::Ipv4(ip) => Some(ip.header().source_addr()),
            _ => None,
        }
    }

    /// The IP source address (v4 or v6), if this is an IP frame.
    pub fn ip_source(&self) -> Option<IpAddr> {
        match self.parsed()?.net? {
            NetSlice::Ipv4(ip) => Some(ip.header().source_addr().into()),
            NetSlice::Ipv6(ip) => Some(ip.header().source_addr().into()),
            NetSlice::Arp(_) => None,
        }
    }

    /// The IP destination address (v4 or v6), if this is an IP frame.
    pub fn ip_destination(&self) -> Option<IpAddr> {
        match self.parsed()?.net? {
            NetSlice::Ipv4(ip) => Some(ip.header().destination_addr().into()),
            NetSlice::Ipv6(ip) => Some(ip.header().destination_addr().into()),
            NetSlice::Arp(_) => None,
        }
    }

    /// The Ethernet source address.
    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.bytes.get(6..12)?.try_into().ok()
    }

    /// The Ethernet destination address.
    pub fn dst_mac(&self) -> Option<[u8; 6]> {
        self.bytes.get(..6)?.try_into().ok()
    }

    /// Whether the frame carries `marker` (raw or as hex text; see the module documentation).
    pub fn carries_marker(&self, marker: u32) -> bool {
        frame_carries_marker(&self.bytes, marker)
    }

    /// The kind of crafted frame this is, for a run with `marker`.
    pub fn kind(&self, marker: u32) -> Option<Kind> {
        kind_of(&self.bytes, marker)
    }

    /// Whether this is an ARP frame.
    pub fn is_arp(&self) -> bool {
        matches!(self.parsed().and_then(|p| p.net), Some(NetSlice::Arp(_)))
    }

    /// Whether this is an IPv6 frame.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.parsed().and_then(|p| p.net), Some(NetSlice::Ipv6(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn target() -> Target {
        Target::new(
            [0x02, 0, 0, 0, 0, 0x01],
            [0x02, 0, 0, 0, 0, 0xfe],
            0x1a2b_3c4d,
        )
    }

    /// Parsed facts about an IPv4 frame.
    #[derive(Debug)]
    struct V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        protocol: u8,
        more: bool,
        offset: usize,
        id: u16,
        options: Vec<u8>,
        /// IP payload (transport header + data, or a fragment of it).
        payload: Vec<u8>,
    }

    fn sliced(frame: &[u8]) -> SlicedPacket<'_> {
        SlicedPacket::from_ethernet(frame)
            .unwrap_or_else(|e| panic!("frame does not parse: {e}: {frame:02x?}"))
    }

    fn v4(frame: &[u8]) -> V4 {
        match sliced(frame).net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert_eq!(
                    internet_checksum(&[h.slice()]),
                    0,
                    "IPv4 header checksum of {}",
                    summarize(frame)
                );
                V4 {
                    src: h.source_addr(),
                    dst: h.destination_addr(),
                    ttl: h.ttl(),
                    protocol: h.protocol().0,
                    more: h.more_fragments(),
                    offset: usize::from(h.fragments_offset().byte_offset()),
                    id: h.identification(),
                    options: h.options().to_vec(),
                    payload: ip.payload().payload.to_vec(),
                }
            }
            other => panic!("not IPv4: {other:?}"),
        }
    }

    /// (source, destination, next protocol, payload after all IPv6 headers, fragment info).
    fn v6(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, Vec<u8>, Option<(usize, bool)>) {
        match sliced(frame).net {
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                // A fragment header, if any, directly follows the fixed header here.
                let fragment =
                    (h.next_header() == IpNumber::IPV6_FRAGMENTATION_HEADER).then(|| {
                        let f = &frame[14 + Ipv6Header::LEN..];
                        let field = u16::from_be_bytes([f[2], f[3]]);
                        (usize::from(field & !7), field & 1 == 1)
                    });
                (
                    h.source_addr(),
                    h.destination_addr(),
                    ip.payload().ip_number.0,
                    ip.payload().payload.to_vec(),
                    fragment,
                )
            }
            other => panic!("not IPv6: {other:?}"),
        }
    }

    /// Asserts the transport checksum of a whole transport segment is valid.
    fn assert_l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) {
        let sum = if protocol == 1 {
            internet_checksum(&[segment])
        } else {
            internet_checksum(&[&pseudo_header(src, dst, protocol, segment.len()), segment])
        };
        assert_eq!(sum, 0, "protocol {protocol} checksum {src} -> {dst}");
    }

    fn ports(segment: &[u8]) -> (u16, u16) {
        (
            u16::from_be_bytes([segment[0], segment[1]]),
            u16::from_be_bytes([segment[2], segment[3]]),
        )
    }

    /// TCP flags byte of a segment: SYN 0x02, ACK 0x10, PSH 0x08.
    fn tcp_flags(segment: &[u8]) -> u8 {
        segment[13]
    }

    fn dst_mac(frame: &[u8]) -> [u8; 6] {
        frame[..6].try_into().unwrap()
    }

    fn reassemble(fragments: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut whole = Vec::new();
        for (offset, data) in fragments {
            let end = offset + data.len();
            if whole.len() < end {
                whole.resize(end, 0);
            }
            whole[*offset..end].copy_from_slice(data);
        }
        whole
    }

    #[test]
    fn there_are_at_least_15_kinds_with_unique_codes() {
        assert!(ALL_KINDS.len() >= 15);
        let codes: HashSet<u8> = ALL_KINDS.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ALL_KINDS.len());
        for &kind in ALL_KINDS {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(0), None);
    }

    #[test]
    fn reflection_kinds_come_from_the_forged_source_to_what_answers() {
        let t = target();
        let expect = [
            (Kind::ReflectEchoViaCardOutside, t.card_outside_ip, 1, 64),
            (Kind::ReflectDnsViaCardOutside, t.card_outside_ip, 17, 64),
            (Kind::ReflectSynViaCardOutside, t.card_outside_ip, 6, 64),
            (
                Kind::ReflectEchoViaApplianceInside,
                t.appliance_inside_ip,
                1,
                64,
            ),
            (
                Kind::ReflectDhcpViaApplianceInside,
                t.appliance_inside_ip,
                17,
                64,
            ),
            (
                Kind::ReflectSynViaApplianceInside,
                t.appliance_inside_ip,
                6,
                64,
            ),
            (Kind::ReflectTtl1Echo, t.victim_ip, 1, 1),
            (Kind::ReflectTtl1Udp, t.victim_ip, 17, 1),
            (Kind::ReflectTtl1Syn, t.victim_ip, 6, 1),
        ];
        assert_eq!(expect.len(), REFLECTION_KINDS.len());
        for (kind, dst, protocol, ttl) in expect {
            assert!(REFLECTION_KINDS.contains(&kind) && ALL_KINDS.contains(&kind));
            let p = v4(&craft(kind, &t)[0]);
            assert_eq!(
                (p.src, p.dst, p.protocol, p.ttl),
                (FOREIGN_SOURCE, dst, protocol, ttl),
                "{kind:?}"
            );
        }
        let dhcp = v4(&craft(Kind::ReflectDhcpViaApplianceInside, &t)[0]);
        assert_eq!(ports(&dhcp.payload), (68, 67));
        // ciaddr (BOOTP offset 12, after the 8-byte UDP header) names the forged source.
        assert_eq!(dhcp.payload[8 + 12..8 + 16], FOREIGN_SOURCE.octets());
        assert_eq!(
            ports(&v4(&craft(Kind::ReflectSynViaApplianceInside, &t)[0]).payload).1,
            80
        );
        assert_eq!(
            ports(&v4(&craft(Kind::ReflectDnsViaCardOutside, &t)[0]).payload).1,
            53
        );

        let forged = t.forged_source(0x0102_0304);
        assert_eq!(
            (forged.src_ip, forged.src_ip6),
            (FOREIGN_SOURCE, FOREIGN_SOURCE6)
        );
        let p = v4(&craft(Kind::UdpRandomPort, &forged)[0]);
        assert_eq!(p.src, FOREIGN_SOURCE);
        assert_eq!(
            kind_of(&craft(Kind::UdpRandomPort, &forged)[0], 0x0102_0304),
            Some(Kind::UdpRandomPort)
        );
    }

    #[test]
    fn every_kind_parses_carries_the_marker_and_names_its_kind() {
        let t = target();
        for &kind in ALL_KINDS {
            let frames = craft(kind, &t);
            assert_eq!(frames.len(), kind.frame_count(), "{kind:?}");
            for frame in &frames {
                let packet = sliced(frame);
                assert!(packet.net.is_some(), "{kind:?}: no network layer");
                assert_eq!(frame[6..12], t.src_mac, "{kind:?}: source MAC");
                let captured = CapturedFrame {
                    bytes: frame.clone(),
                    outgoing: false,
                };
                assert!(captured.carries_marker(t.marker), "{kind:?}");
                assert!(!captured.carries_marker(0x5566_7788), "{kind:?}");
                assert_eq!(captured.kind(t.marker), Some(kind), "{kind:?}");
                assert_eq!(captured.kind(0x5566_7788), None, "{kind:?}");
                assert!(!captured.summary().starts_with("unparsed"), "{kind:?}");
            }
        }
    }

    #[test]
    fn unfragmented_ip_frames_have_valid_checksums() {
        let t = target();
        for &kind in ALL_KINDS {
            for frame in craft(kind, &t) {
                match sliced(&frame).net {
                    Some(NetSlice::Ipv4(ip)) if !ip.is_payload_fragmented() => {
                        let p = v4(&frame);
                        if [1, 6, 17].contains(&p.protocol) {
                            assert_l4_checksum(p.src.into(), p.dst.into(), p.protocol, &p.payload);
                        }
                    }
                    Some(NetSlice::Ipv6(ip)) if !ip.is_payload_fragmented() => {
                        let (src, dst, protocol, payload, _) = v6(&frame);
                        assert_l4_checksum(src.into(), dst.into(), protocol, &payload);
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn tcp_kinds_have_the_intended_addresses_ports_and_flags() {
        let t = target();
        let check = |kind, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, flags: u8| {
            let frames = craft(kind, &t);
            assert_eq!(dst_mac(&frames[0]), t.dst_mac, "{kind:?}");
            let p = v4(&frames[0]);
            assert_eq!(
                (p.src, p.dst, p.protocol, p.ttl),
                (src, dst, 6, 64),
                "{kind:?}"
            );
            assert_eq!(ports(&p.payload).1, dport, "{kind:?}");
            assert_eq!(tcp_flags(&p.payload), flags, "{kind:?}");
            let summary = summarize(&frames[0]);
            assert!(
                summary.starts_with(&format!("IPv4 {src} -> {dst} "))
                    && summary.contains(&format!("TCP {}->{dport} ", ports(&p.payload).0)),
                "{summary}"
            );
            p
        };
        check(
            Kind::TcpSynUnproxiedPort,
            t.src_ip,
            t.victim_ip,
            UNPROXIED_PORT,
            0x02,
        );
        check(
            Kind::TcpSynProxiedPortSpoofedSource,
            FOREIGN_SOURCE,
            t.victim_ip,
            80,
            0x02,
        );
        check(
            Kind::TcpAckWithoutHandshake,
            t.src_ip,
            t.victim_ip,
            80,
            0x18,
        );
        check(
            Kind::SpoofedCardOutsideSource,
            t.card_outside_ip,
            t.victim_ip,
            UNPROXIED_PORT,
            0x02,
        );
        check(
            Kind::ToApplianceOutsideAddress,
            t.src_ip,
            t.appliance_outside_ip,
            22,
            0x02,
        );
        check(
            Kind::ToCardOutsideAddress,
            t.src_ip,
            t.card_outside_ip,
            80,
            0x02,
        );
        let p = check(
            Kind::TcpWithIpOptions,
            t.src_ip,
            t.victim_ip,
            UNPROXIED_PORT,
            0x02,
        );
        assert_eq!(p.options[..3], [7, 11, 4], "record route option");
        let syn = summarize(&craft(Kind::TcpSynUnproxiedPort, &t)[0]);
        assert_eq!(
            syn,
            format!(
                "IPv4 {} -> {} TCP {}->{UNPROXIED_PORT} SYN",
                t.src_ip,
                t.victim_ip,
                sport(Kind::TcpSynUnproxiedPort, &t)
            )
        );
    }

    #[test]
    fn udp_and_icmp_kinds_have_the_intended_addresses_and_ttl() {
        let t = target();
        let udp = |kind| {
            let frames = craft(kind, &t);
            let p = v4(&frames[0]);
            assert_eq!(p.protocol, 17, "{kind:?}");
            (dst_mac(&frames[0]), p)
        };
        let (mac, p) = udp(Kind::UdpRandomPort);
        assert_eq!((mac, p.src, p.dst), (t.dst_mac, t.src_ip, t.victim_ip));
        assert!(ports(&p.payload).1 >= 31337);
        let (_, p) = udp(Kind::SpoofedSourceAddress);
        assert_eq!((p.src, p.dst), (FOREIGN_SOURCE, t.victim_ip));
        let (_, p) = udp(Kind::SpoofedApplianceOutsideSource);
        assert_eq!((p.src, p.dst), (t.appliance_outside_ip, t.victim_ip));
        let (_, p) = udp(Kind::Ttl1);
        assert_eq!((p.src, p.dst, p.ttl), (t.src_ip, t.victim_ip, 1));
        assert!(summarize(&craft(Kind::Ttl1, &t)[0]).contains("ttl=1"));
        let (mac, p) = udp(Kind::ForgedBroadcastDstMac);
        assert_eq!((mac, p.dst), (BROADCAST_MAC, t.victim_ip));
        let (mac, p) = udp(Kind::MulticastMdns);
        assert_eq!((mac, p.dst, p.ttl), (MDNS_MAC, MDNS_GROUP, 255));
        assert_eq!(ports(&p.payload), (5353, 5353));
        let (_, p) = udp(Kind::SourceRouteViaAppliance);
        assert_eq!(p.dst, t.appliance_outside_ip);
        let v = t.victim_ip.octets();
        assert_eq!(p.options, [1, 131, 7, 4, v[0], v[1], v[2], v[3]]);

        let icmp = craft(Kind::IcmpEcho, &t);
        let p = v4(&icmp[0]);
        assert_eq!((p.protocol, p.dst), (1, t.victim_ip));
        assert_eq!(p.payload[0], 8, "echo request");
    }

    #[test]
    fn dns_query_is_a_valid_question_naming_the_marker() {
        use hickory_proto::op::Message;
        let t = target();
        let frame = &craft(Kind::UdpDns53ToOutsideResolver, &t)[0];
        let p = v4(frame);
        assert_eq!((p.dst, ports(&p.payload).1), (t.victim_ip, 53));
        let message = Message::from_vec(&p.payload[8..]).expect("DNS message parses");
        let name = message.queries[0].name().to_ascii();
        assert!(name.starts_with(&format!("m{:08x}k", t.marker)), "{name}");
    }

    #[test]
    fn dhcp_kinds_are_bootp_requests_with_the_marker_as_xid() {
        let t = target();
        for (kind, dst, dst_ip, msg_type) in [
            (
                Kind::ToOutsideDhcpServer,
                t.dst_mac,
                t.dhcp_server_ip,
                DHCPREQUEST,
            ),
            (
                Kind::DhcpBroadcastDiscover,
                BROADCAST_MAC,
                Ipv4Addr::BROADCAST,
                DHCPDISCOVER,
            ),
        ] {
            let frame = &craft(kind, &t)[0];
            assert_eq!(dst_mac(frame), dst, "{kind:?}");
            let p = v4(frame);
            assert_eq!((p.dst, ports(&p.payload)), (dst_ip, (68, 67)), "{kind:?}");
            let bootp = &p.payload[8..];
            assert_eq!(bootp[0], 1, "BOOTREQUEST");
            assert_eq!(bootp[4..8], t.marker.to_be_bytes(), "xid");
            assert_eq!(bootp[28..34], t.src_mac, "chaddr");
            assert_eq!(bootp[236..240], [99, 130, 83, 99], "magic cookie");
            assert_eq!(bootp[240..243], [53, 1, msg_type], "message type");
        }
    }

    #[test]
    fn ipv4_fragments_have_the_intended_flags_and_reassemble_with_a_valid_checksum() {
        let t = target();
        let first = v4(&craft(Kind::IpFragmentFirst, &t)[0]);
        assert_eq!((first.offset, first.more, first.protocol), (0, true, 17));
        assert_eq!(ports(&first.payload).1, UNPROXIED_PORT);
        let later = v4(&craft(Kind::IpFragmentNonFirst, &t)[0]);
        assert_eq!((later.offset, later.more), (24, true));
        assert!(summarize(&craft(Kind::IpFragmentNonFirst, &t)[0]).contains("offset=24 MF"));

        let parts: Vec<V4> = craft(Kind::IpFragmentComplete, &t)
            .iter()
            .map(|f| v4(f))
            .collect();
        let flags: Vec<(usize, bool)> = parts.iter().map(|p| (p.offset, p.more)).collect();
        assert_eq!(flags, [(0, true), (24, true), (48, false)]);
        assert!(
            parts
                .iter()
                .all(|p| p.id == parts[0].id && p.dst == t.victim_ip)
        );
        let whole = reassemble(
            &parts
                .iter()
                .map(|p| (p.offset, p.payload.clone()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(whole.len(), 72);
        assert_eq!(u16::from_be_bytes([whole[4], whole[5]]), 72, "UDP length");
        assert_l4_checksum(t.src_ip.into(), t.victim_ip.into(), 17, &whole);
    }

    #[test]
    fn overlapping_fragments_overlap_and_reassemble_into_a_valid_syn() {
        let t = target();
        let parts: Vec<V4> = craft(Kind::IpFragmentOverlapping, &t)
            .iter()
            .map(|f| v4(f))
            .collect();
        assert_eq!((parts[0].offset, parts[0].more), (0, true));
        assert_eq!((parts[1].offset, parts[1].more), (24, false));
        assert!(
            parts[0].offset + parts[0].payload.len() > parts[1].offset,
            "overlap"
        );
        assert_eq!(parts[0].id, parts[1].id);
        let whole = reassemble(&[
            (parts[0].offset, parts[0].payload.clone()),
            (parts[1].offset, parts[1].payload.clone()),
        ]);
        assert_eq!(tcp_flags(&whole), 0x02);
        assert_l4_checksum(t.src_ip.into(), t.victim_ip.into(), 6, &whole);
    }

    #[test]
    fn ipv6_kinds_have_the_intended_addresses() {
        let t = target();
        for (kind, protocol) in [
            (Kind::Ipv6Tcp, 6),
            (Kind::Ipv6Udp, 17),
            (Kind::Icmpv6Echo, 58),
        ] {
            let frame = &craft(kind, &t)[0];
            let (src, dst, next, payload, fragment) = v6(frame);
            assert_eq!(
                (src, dst, next, fragment),
                (t.src_ip6, t.victim_ip6, protocol, None)
            );
            assert_eq!(dst_mac(frame), t.dst_mac);
            let captured = CapturedFrame {
                bytes: frame.clone(),
                outgoing: false,
            };
            assert!(captured.is_ipv6() && !captured.is_arp());
            assert_eq!(captured.ipv4_source(), None);
            assert_eq!(captured.ip_source(), Some(t.src_ip6.into()));
            if kind == Kind::Ipv6Tcp {
                assert_eq!(ports(&payload).1, 443);
            }
        }
        let parts: Vec<_> = craft(Kind::Ipv6Fragment, &t)
            .iter()
            .map(|f| v6(f))
            .collect();
        assert_eq!(parts[0].4, Some((0, true)));
        assert_eq!(parts[1].4, Some((24, false)));
        let whole = reassemble(&[(0, parts[0].3.clone()), (24, parts[1].3.clone())]);
        assert_eq!(parts[0].2, 17);
        assert_l4_checksum(t.src_ip6.into(), t.victim_ip6.into(), 17, &whole);
    }

    #[test]
    fn arp_kinds_are_broadcast_and_padded_with_the_tag() {
        let t = target();
        for (kind, op, sender, target_ip) in [
            (
                Kind::ArpRequestForVictim,
                ArpOperation::REQUEST,
                t.src_ip,
                t.victim_ip,
            ),
            (
                Kind::GratuitousArpForOutsideAddress,
                ArpOperation::REPLY,
                t.appliance_outside_ip,
                t.appliance_outside_ip,
            ),
        ] {
            let frame = &craft(kind, &t)[0];
            assert_eq!(frame.len(), MIN_FRAME);
            assert_eq!(dst_mac(frame), BROADCAST_MAC);
            match sliced(frame).net {
                Some(NetSlice::Arp(arp)) => {
                    assert_eq!(arp.operation(), op);
                    assert_eq!(arp.sender_hw_addr(), t.src_mac);
                    assert_eq!(arp.sender_protocol_addr(), sender.octets());
                    assert_eq!(arp.target_protocol_addr(), target_ip.octets());
                }
                other => panic!("{kind:?} is not ARP: {other:?}"),
            }
            let captured = CapturedFrame {
                bytes: frame.clone(),
                outgoing: false,
            };
            assert!(captured.is_arp());
            assert_eq!(captured.ipv4_source(), None);
        }
        assert_eq!(
            summarize(&craft(Kind::ArpRequestForVictim, &t)[0]),
            format!("ARP request who-has {} tell {}", t.victim_ip, t.src_ip)
        );
    }

    #[test]
    fn gre_and_unknown_protocols_carry_the_intended_protocol_numbers() {
        let t = target();
        let gre = v4(&craft(Kind::GreOrOtherProtocol, &t)[0]);
        assert_eq!((gre.protocol, gre.dst), (47, t.victim_ip));
        assert_eq!(gre.payload[..4], [0, 0, 0x08, 0x00]);
        let inner = etherparse::Ipv4Slice::from_slice(&gre.payload[4..]).expect("inner IPv4");
        assert_eq!(internet_checksum(&[inner.header().slice()]), 0);
        assert_eq!(inner.header().destination_addr(), t.victim_ip);
        assert_l4_checksum(
            t.src_ip.into(),
            t.victim_ip.into(),
            17,
            inner.payload().payload,
        );
        assert!(summarize(&craft(Kind::GreOrOtherProtocol, &t)[0]).ends_with("proto 47 (GRE)"));
        let unknown = v4(&craft(Kind::UnknownIpProtocol, &t)[0]);
        assert_eq!((unknown.protocol, unknown.dst), (253, t.victim_ip));
    }

    #[test]
    fn vlan_kinds_are_tagged() {
        let t = target();
        for (kind, id) in [(Kind::VlanTagged, 100), (Kind::VlanPriorityTagged, 0)] {
            let frame = &craft(kind, &t)[0];
            assert_eq!(frame[12..14], [0x81, 0x00]);
            let packet = sliced(frame);
            match packet.link_exts.first() {
                Some(LinkExtSlice::Vlan(vlan)) => assert_eq!(vlan.vlan_identifier().value(), id),
                other => panic!("{kind:?}: no VLAN header: {other:?}"),
            }
            let p = v4(frame);
            assert_eq!(p.dst, t.victim_ip);
            assert_l4_checksum(p.src.into(), p.dst.into(), 17, &p.payload);
            assert!(summarize(frame).starts_with(&format!("VLAN {id} IPv4 ")));
        }
    }

    #[test]
    fn markers_and_macs_helpers() {
        let a = random_marker();
        let b = random_marker();
        assert_ne!(a, b);
        assert!(a.to_be_bytes().iter().all(|&byte| byte != 0));
        assert_eq!(
            parse_mac("02:00:00:0a:bc:FF"),
            Some([2, 0, 0, 0x0a, 0xbc, 0xff])
        );
        assert_eq!(parse_mac("02:00:00:0a:bc"), None);
        assert_eq!(parse_mac("02:00:00:0a:bc:ff:00"), None);
        assert_eq!(format_mac([2, 0, 0, 0x0a, 0xbc, 0xff]), "02:00:00:0a:bc:ff");
        assert_eq!(interface_mac("lo"), Some([0; 6]));
        assert_eq!(interface_mac("no-such-if0"), None);
        assert_eq!(
            summarize(&[1, 2, 3]),
            "unparsed runt (3 bytes): ".to_owned() + &summarize_error(&[1, 2, 3])
        );
        let frame = CapturedFrame {
            bytes: craft(Kind::UdpRandomPort, &target()).remove(0),
            outgoing: true,
        };
        assert!(frame.summary().starts_with("[out] IPv4 "));
        assert_eq!(frame.ipv4_source(), Some(target().src_ip));
        assert_eq!(frame.src_mac(), Some(target().src_mac));
        assert_eq!(frame.dst_mac(), Some(target().dst_mac));
    }

    fn summarize_error(bytes: &[u8]) -> String {
        SlicedPacket::from_ethernet(bytes).unwrap_err().to_string()
    }

    #[test]
    fn checksum_matches_a_known_ipv4_header() {
        // Example header from RFC 1071 discussions / Wikipedia: checksum 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&[&header]), 0xb861);
        assert_eq!(internet_checksum(&[&header[..7], &header[7..]]), 0xb861);
    }
}
