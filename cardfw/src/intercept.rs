//! Transparent interception on the card: the nftables ruleset that hands inside traffic for
//! foreign addresses to the proxy sockets (TPROXY), the policy route that makes those packets
//! local, and the listening sockets that may accept them (`IP_TRANSPARENT`).
//!
//! The card never forwards (`ip_forward=0`): a packet that no rule hands to a proxy is
//! rejected with ICMP admin-prohibited, so a client learns at once that it is not allowed
//! instead of hanging. The card's outside address takes nothing but replies to the card's own
//! connections: a new packet to it is dropped without an answer.

use std::net::SocketAddr;

use netconf::netlink::{Netlink, NetlinkError};
use netconf::nft::{self, NftError};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::config::Config;

/// The nftables table cardfw owns; created at start, deleted at exit.
pub const TABLE: &str = "cardfw";
/// Firewall mark for intercepted packets, and the routing table that delivers them locally.
const MARK: u32 = 0xca7d;
const ROUTE_TABLE: u32 = 0xca7d;

/// The ruleset as `nft -f` reads it. Applied in one transaction: it is all in place, or
/// nothing changed.
pub fn ruleset(config: &Config) -> String {
    let link = &config.link;
    let ports = &config.ports;
    let set = |ports: &[u16]| {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    };
    let mut intercept = String::new();
    for (dports, listener) in [
        (&ports.http, ports.transparent_http),
        (&ports.https, ports.transparent_https),
        (&ports.tcp, ports.transparent_tcp),
    ] {
        if !dports.is_empty() {
            intercept += &format!(
                "        meta nfproto ipv4 tcp dport {} tproxy ip to 127.0.0.1:{listener} meta mark set {MARK:#x} accept\n",
                set(dports)
            );
        }
    }
    let inside = config.inside_address;
    let outside = match config.outside_address {
        std::net::IpAddr::V4(address) => format!("ip daddr {address}"),
        std::net::IpAddr::V6(address) => format!("ip6 daddr {address}"),
    };
    let local_tcp = set(&[ports.explicit_proxy, ports.status, ports.dns, ports.admin]);
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        iifname != \"{link}\" accept
        fib daddr type local jump to_card
        # DNS to any address: accepted here, redirected to the card's forwarder below.
        meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport 53 accept
{intercept}        reject with icmpx admin-prohibited
    }}
    chain to_card {{
        ct state established,related accept
        # The outside address only receives replies to the card's own connections: anything
        # new to it is dropped, never answered (an answer would go wherever the source says,
        # and the inside can forge that: no reflection, DESIGN.md rule 6).
        {outside} drop
        meta l4proto tcp tcp dport {local_tcp} accept
        udp dport {dns} accept
        meta l4proto icmp icmp type echo-request accept
        reject with icmpx admin-prohibited
    }}
    chain dns_redirect {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname \"{link}\" fib daddr type != local meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {inside}:{dns}
    }}
}}
",
        dns = ports.dns,
    )
}

/// Why interception could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// `nft` refused the ruleset or could not run.
    #[error(transparent)]
    Ruleset(#[from] NftError),
    /// The policy route that makes intercepted packets local could not be made.
    #[error("policy route: {0}")]
    Route(#[from] NetlinkError),
}

/// Installs the ruleset and the local-delivery route for marked packets.
pub async fn install(config: &Config) -> Result<(), InterceptError> {
    nft::apply(&ruleset(config))?;
    let netlink = Netlink::connect().await?;
    // Replace, not add, so a restart after a crash does not stack duplicate rules.
    netlink.replace_mark_rule(MARK, ROUTE_TABLE).await?;
    netlink
        .replace_local_default_route(ROUTE_TABLE, "lo")
        .await?;
    Ok(())
}

/// Removes what [`install`] added. Without it nothing is intercepted, and since the card does
/// not forward, nothing passes either.
pub async fn remove() {
    // Best effort all the way: what cannot be removed now is replaced at the next start.
    let _ = nft::apply(&format!("delete table inet {TABLE}\n"));
    if let Ok(netlink) = Netlink::connect().await {
        let _ = netlink.delete_mark_rule(MARK, ROUTE_TABLE).await;
        let _ = netlink.flush_table(ROUTE_TABLE).await;
    }
}

/// A listener that may accept connections addressed to any address (TPROXY's target).
pub fn transparent_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_ip_transparent_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_intercepts_the_configured_ports_and_rejects_the_rest() {
        let mut config = Config::default();
        config.ports.tcp = vec![22, 993];
        let text = ruleset(&config);
        assert!(
            text.contains("tcp dport { 80 } tproxy ip to 127.0.0.1:10080"),
            "{text}"
        );
        assert!(
            text.contains("tcp dport { 443 } tproxy ip to 127.0.0.1:10443"),
            "{text}"
        );
        assert!(
            text.contains("tcp dport { 22, 993 } tproxy ip to 127.0.0.1:10000"),
            "{text}"
        );
        assert!(
            text.contains("tcp dport { 3128, 8081, 53, 443 } accept"),
            "{text}"
        );
        assert!(text.contains("dnat ip to 172.31.77.2:53"), "{text}");
        let to_card = &text[text.find("chain to_card").unwrap()..];
        let replies = to_card.find("ct state established,related accept").unwrap();
        let outside = to_card.find("ip daddr 172.31.77.3 drop").unwrap();
        assert!(
            replies < outside && outside < to_card.find("tcp dport").unwrap(),
            "only replies reach the outside address: {to_card}"
        );
        let reject = text.find("reject with icmpx admin-prohibited").unwrap();
        assert!(
            reject > text.find("tproxy").unwrap(),
            "reject comes after every intercept"
        );
        config.ports.tcp.clear();
        assert!(
            !ruleset(&config).contains("10000"),
            "no empty set for no ports"
        );
    }
}
