//! Where the card may connect: the addresses it never connects to, whatever the rules say,
//! and every address a name resolves to decided by the rules on its own.
//!
//! Two holes this closes. A name may resolve to several addresses; deciding the first and
//! connecting to whichever answers let a name with `[an address that resets, 10.1.2.3]` pass
//! a `deny any dst 10.0.0.0/8`. So each address is decided, and only allowed ones are tried.
//! And a request may name the card itself (`http://127.0.0.1:10080/` looped into the proxy
//! until the connection cap answered; `http://172.31.77.2:8081/` read the card's status): the
//! card's own and local addresses are refused before any rule is asked.

use std::net::IpAddr;

use rules::{Action, Decision, RuleSet};

use crate::config::Config;

/// The address a v4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for; any other as it is.
/// A connection to the mapped form reaches the IPv4 address, so rules and the checks below
/// must see that address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why the card never connects to `ip`, if it does not: it would reach the card itself, the
/// appliance, or a local net the request cannot have meant (loopback, link-local,
/// unspecified, multicast, broadcast).
pub fn never_connect(config: &Config, ip: IpAddr) -> Option<&'static str> {
    let ip = canonical(ip);
    if ip == canonical(config.inside_address) || ip == canonical(config.outside_address) {
        return Some("it is the card's own address");
    }
    if ip == canonical(config.appliance_address) {
        return Some("it is the appliance's card-link address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("it is a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("it is a link-local address"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("it is the unspecified address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("it is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("it is the broadcast address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("it is a loopback address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("it is a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("it is the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("it is a multicast address"),
        _ => None,
    }
}

/// Every candidate address of one request, decided.
#[derive(Debug)]
pub struct Candidates<'r> {
    /// The addresses the rules allow, in the resolver's order, each with its decision.
    pub allowed: Vec<(IpAddr, Decision<'r>)>,
    /// The first address a rule denied, with that decision.
    pub denied: Option<(IpAddr, Decision<'r>)>,
    /// The first address refused before the rules, and why.
    pub refused: Option<(IpAddr, &'static str)>,
}

impl<'r> Candidates<'r> {
    /// Decides each of `addresses` with `ask` (its `dst` set to the address); the card's own
    /// and local addresses are refused without asking the rules.
    pub fn decide(
        config: &Config,
        rules: &'r RuleSet,
        ask: &rules::Request<'_>,
        addresses: &[IpAddr],
    ) -> Candidates<'r> {
        let mut candidates = Candidates {
            allowed: Vec::new(),
            denied: None,
            refused: None,
        };
        for &ip in addresses {
            let ip = canonical(ip);
            if let Some(why) = never_connect(config, ip) {
                candidates.refused.get_or_insert((ip, why));
                continue;
            }
            let decision = rules.decide(&ask.dst(ip));
            match decision.action {
                Action::Allow => candidates.allowed.push((ip, decision)),
                Action::Deny => {
                    candidates.denied.get_or_insert((ip, decision));
                }
            }
        }
        candidates
    }

    /// The allowed addresses, to connect to in this order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.allowed.iter().map(|(ip, _)| *ip).collect()
    }

    /// The decision for the address the card connected to (the first allowed one if that is
    /// not among them, which cannot happen: only allowed addresses are tried).
    pub fn decision_for(&self, ip: IpAddr) -> Option<Decision<'r>> {
        let ip = canonical(ip);
        self.allowed
            .iter()
            .find(|(allowed, _)| *allowed == ip)
            .or(self.allowed.first())
            .map(|(_, decision)| *decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::{LocalTime, NoFiles, Protocol};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_card_and_local_nets_are_never_connected_to() {
        let config = Config::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "172.31.77.1",
            "172.31.77.2",
            "172.31.77.3",
            "::ffff:172.31.77.2",
        ] {
            assert!(never_connect(&config, ip(refused)).is_some(), "{refused}");
        }
        for allowed in ["203.0.113.10", "10.1.2.3", "172.31.77.4", "2001:db8::1"] {
            assert_eq!(never_connect(&config, ip(allowed)), None, "{allowed}");
        }
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
    }

    #[test]
    fn each_address_is_decided_and_only_allowed_ones_are_kept() {
        let rules = RuleSet::from_text(
            "t.rules",
            "private: deny any dst 10.0.0.0/8\nweb: allow http\n",
            &NoFiles,
        )
        .unwrap();
        let config = Config::default();
        let ask = rules::Request::new(Protocol::Http, LocalTime::new(0, 12, 0).unwrap())
            .host("two.test")
            .port(80);
        let both = Candidates::decide(&config, &rules, &ask, &[ip("203.0.113.10"), ip("10.1.2.3")]);
        assert_eq!(both.addresses(), [ip("203.0.113.10")]);
        assert_eq!(both.denied.unwrap().1.rule.id, "private");
        assert_eq!(
            both.decision_for(ip("203.0.113.10")).unwrap().rule.id,
            "web"
        );
        // The v4-mapped form of a denied address is denied like the address.
        let mapped = Candidates::decide(&config, &rules, &ask, &[ip("::ffff:10.1.2.3")]);
        assert!(mapped.allowed.is_empty());
        assert_eq!(mapped.denied.unwrap().0, ip("10.1.2.3"));
        let local = Candidates::decide(&config, &rules, &ask, &[ip("127.0.0.1")]);
        assert!(local.allowed.is_empty() && local.denied.is_none());
        assert_eq!(local.refused.unwrap().0, ip("127.0.0.1"));
    }
}
