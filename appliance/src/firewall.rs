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

use std::io::Write;
use std::process::{Command, Stdio};

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

/// The full ruleset for these interfaces (`card` is the card link's current name).
pub fn full_ruleset(config: &Config, card: &str) -> String {
    let inside = &config.inside.interface;
    let outside = &config.outside.interface;
    let inside_address = config.inside.address;
    let card_link_address = config.card.address;
    let card_outside = config.card.outside_address;
    let status = config.status.port;
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
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
    chain forward {{
        type filter hook forward priority filter; policy drop;
        # IPv6 is not forwarded until the card proxies it: dropped, not leaked.
        meta nfproto ipv6 drop
        ct state invalid drop
        # Inside to the card link only; policy routing makes the card the next hop for all of it.
        iifname \"{inside}\" oifname \"{card}\" accept
        # The card answers the inside (its proxies reply with the original destination address).
        iifname \"{card}\" oifname \"{inside}\" ip saddr != {card_outside} ct state established,related accept
        # Only the card's outside address goes out, and its replies come back.
        iifname \"{card}\" oifname \"{outside}\" ip saddr {card_outside} accept
        iifname \"{outside}\" oifname \"{card}\" ip daddr {card_outside} ct state established,related accept
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

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Applies a ruleset in one transaction.
pub fn apply(ruleset: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(FirewallError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
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
            text.contains("iifname \"card0\" oifname \"wan0\" ip saddr 172.31.77.3 accept"),
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
    fn base_ruleset_drops_everything_but_loopback() {
        let text = base_ruleset();
        assert!(text.contains("chain forward {\n        type filter hook forward priority filter; policy drop;\n    }"), "{text}");
        assert!(text.contains("iif lo accept"));
    }
}
