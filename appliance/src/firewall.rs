//! The appliance's nftables rulesets. Each is applied with one `nft -f` transaction: the
//! whole set is in place or nothing changed.
//!
//! - The **base** ruleset is applied first, at start, before any link is configured: nothing is
//!   forwarded, nothing but loopback reaches the appliance. It is also what stays when the
//!   configuration is invalid.
//! - The **full** ruleset allows exactly what the design allows (DESIGN.md, "Network design"):
//!   inside traffic only towards the card link (policy routing picks the card as next hop),
//!   only the card's outside address out to the outside (masqueraded), replies back, and no
//!   IPv6 forwarding at all.

use std::net::Ipv4Addr;

pub use netconf::nft::apply;

use crate::config::Config;

/// The table the appliance owns.
pub const TABLE: &str = "cardwall";

/// Nothing forwarded; only loopback delivered locally.
pub fn base_ruleset() -> String {
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iif lo accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
    }}
}}
"
    )
}

/// The inside network (`address` with the host bits cleared), as nft writes it.
fn subnet(address: Ipv4Addr, prefix: u8) -> String {
    let prefix = prefix.min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(address) & mask))
}

/// The full ruleset for these interfaces (`card` is the card link's current name).
///
/// Rule 6 of the design (no reflection) is kept in four places, each enough on its own for
/// what it covers: the inside port takes only sources of its own subnet (`prerouting`, with
/// strict reverse-path filtering on that port beside it, see the daemon); the appliance sends
/// out of the outside port only its DHCP client's and its DNS upstream's messages (`output`:
/// an echo reply, a SYN-ACK or an ICMP error it makes for a forged source stays in); the card
/// takes nothing new on its outside address (cardfw's own ruleset); and card-to-outside
/// forwarding takes only connections the card started, so the card's answer to a packet the
/// inside sent it never leaves (`forward`, `ct direction`).
pub fn full_ruleset(config: &Config, card: &str) -> String {
    let inside = &config.inside.interface;
    let outside = &config.outside.interface;
    let inside_address = config.inside.address;
    let inside_subnet = subnet(inside_address, config.inside.prefix);
    let card_link_address = config.card.address;
    let card_outside = config.card.outside_address;
    let status = config.status.port;
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        # The inside port takes only its own subnet as source: a packet forged to come from
        # the world would be answered to the world (no reflection). DHCP's 0.0.0.0 is the one
        # exception, and only as a DHCP request.
        iifname \"{inside}\" ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
        iifname \"{inside}\" meta nfproto ipv4 ip saddr != {inside_subnet} drop
    }}
    chain input {{
        type filter hook input priority filter; policy drop;
        iif lo accept
        ct state invalid drop
        ct state established,related accept
        # The protected computer: DHCP and the status page, nothing else (its DNS goes to the card).
        iifname \"{inside}\" udp sport 68 udp dport 67 accept
        iifname \"{inside}\" ip daddr {inside_address} tcp dport {status} accept
        iifname \"{inside}\" ip daddr {inside_address} icmp type echo-request accept
        # The card: DNS forwarding for its own queries only.
        iifname \"{card}\" ip saddr {card_outside} ip daddr {card_link_address} meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname \"{card}\" icmp type echo-request accept
        # The outside: DHCP offers to our client; everything else only as replies (above).
        iifname \"{outside}\" udp sport 67 udp dport 68 accept
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname != \"{outside}\" accept
        # Out of the outside port the appliance itself sends its DHCP client's messages and
        # its DNS upstream queries (dnsmasq forwards the card's), each starting its own
        # connection. The card's connections are forwarded and never pass here. Everything
        # else (an answer to a forged source, an ICMP error about a forwarded packet) stays in.
        udp sport 68 udp dport 67 ct direction original accept
        meta l4proto {{ tcp, udp }} th dport 53 ct direction original accept
        # IPv6 link housekeeping only (no IPv6 is forwarded).
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report, mld-listener-done }} accept
        drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        # IPv6 is not forwarded until the card proxies it: dropped, not leaked.
        meta nfproto ipv6 drop
        ct state invalid drop
        # Inside to the card link only; policy routing makes the card the next hop for all of it.
        iifname \"{inside}\" oifname \"{card}\" accept
        # The card answers the inside (its proxies reply with the original destination address).
        iifname \"{card}\" oifname \"{inside}\" ip saddr != {card_outside} ct direction reply ct state established,related accept
        # Only the card's outside address goes out, and only in connections the card started
        # (an answer of the card to something the inside sent is the reply direction of the
        # inside's connection: it stays in); their replies come back.
        iifname \"{card}\" oifname \"{outside}\" ip saddr {card_outside} ct direction original ct state new,established accept
        iifname \"{outside}\" oifname \"{card}\" ip daddr {card_outside} ct direction reply ct state established,related accept
        # Never: outside to inside, outside to the card's inside address, inside to outside.
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"{outside}\" ip saddr {card_outside} masquerade
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ruleset_forwards_inside_only_to_the_card_and_only_the_card_outside() {
        let text = full_ruleset(&Config::default(), "card0");
        assert!(
            text.contains("iifname \"lan0\" oifname \"card0\" accept"),
            "{text}"
        );
        assert!(
            text.contains("iifname \"card0\" oifname \"wan0\" ip saddr 172.31.77.3 ct direction original ct state new,established accept"),
            "{text}"
        );
        assert!(
            text.contains("oifname \"wan0\" ip saddr 172.31.77.3 masquerade"),
            "{text}"
        );
        assert!(
            !text.contains("iifname \"lan0\" oifname \"wan0\""),
            "no inside-to-outside rule at all"
        );
        assert!(text.contains("meta nfproto ipv6 drop"));
        assert!(
            text.matches("policy drop").count() == 2,
            "input and forward drop by default"
        );
    }

    #[test]
    fn full_ruleset_reflects_nothing_from_the_inside() {
        let text = full_ruleset(&Config::default(), "card0");
        assert!(
            text.contains("iifname \"lan0\" meta nfproto ipv4 ip saddr != 192.168.77.0/24 drop"),
            "{text}"
        );
        let output = &text[text.find("chain output").unwrap()..text.find("chain forward").unwrap()];
        assert!(output.contains("oifname != \"wan0\" accept"), "{output}");
        assert!(output.trim_end().ends_with("drop\n    }"), "{output}");
        assert!(
            text.contains("iifname \"wan0\" oifname \"card0\" ip daddr 172.31.77.3 ct direction reply ct state established,related accept"),
            "{text}"
        );
    }

    #[test]
    fn subnets_clear_the_host_bits() {
        assert_eq!(
            subnet(Ipv4Addr::new(192, 168, 77, 1), 24),
            "192.168.77.0/24"
        );
        assert_eq!(subnet(Ipv4Addr::new(10, 1, 2, 3), 8), "10.0.0.0/8");
        assert_eq!(subnet(Ipv4Addr::new(10, 1, 2, 3), 32), "10.1.2.3/32");
        assert_eq!(subnet(Ipv4Addr::new(10, 1, 2, 3), 0), "0.0.0.0/0");
    }

    #[test]
    fn base_ruleset_drops_everything_but_loopback() {
        let text = base_ruleset();
        assert!(text.contains("chain forward {\n        type filter hook forward priority filter; policy drop;\n    }"), "{text}");
        assert!(text.contains("iif lo accept"));
    }
}
