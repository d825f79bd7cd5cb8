//! `appliance.toml`: every key, its default, and why. A key the daemon does not know is an
//! error, and an invalid file leaves the fail-closed base ruleset in place.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
pub use serve::daemon::{ConfigError, ConfigFile};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub inside: Inside,
    pub outside: Outside,
    pub card: Card,
    pub status: Status,
    pub paths: Paths,
}

/// The link to the protected computer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inside {
    pub interface: String,
    /// The appliance's address on it, with the prefix length.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// First and last address DHCP hands out.
    pub dhcp_first: Ipv4Addr,
    pub dhcp_last: Ipv4Addr,
    pub dhcp_lease: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutsideMode {
    /// Address, gateway and resolvers from a DHCP client (busybox `udhcpc`).
    Dhcp,
    /// Address, gateway and resolvers from this file.
    Static,
}

/// The link to the untrusted network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outside {
    pub interface: String,
    pub mode: OutsideMode,
    /// Static mode only.
    pub address: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// The link to the card (CDC-EEM on the real box).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Card {
    /// The card link by name; empty means "the interface whose driver is `driver`".
    pub interface: String,
    pub driver: String,
    /// The appliance's address on the card link.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The card's inside address: the next hop for everything from the inside.
    pub inside_address: Ipv4Addr,
    /// The card's outside address: the only source the appliance forwards outside.
    pub outside_address: Ipv4Addr,
    /// The card's status endpoint port (on its inside address).
    pub status_port: u16,
    /// How often the card is asked whether it is alive.
    pub probe_interval_ms: u64,
    /// Failed probes in a row after which the card counts as absent and traffic stops.
    pub probe_failures: u32,
    /// For a card that speaks only ISO 7816: the PC/SC reader it is in. The appliance then
    /// runs the Peer I/O server ([`crate::peerio`]) and creates TAP `interface` as the card
    /// link; routing, probes and fail-closed are the same as for a CDC-EEM card. Empty: none.
    pub peer_io_reader: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Status {
    /// The status page's port, on the inside address only.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Where generated files (dnsmasq config, leases, DHCP results) live.
    pub run_dir: PathBuf,
    pub dnsmasq: PathBuf,
    /// The DHCP client: busybox (`busybox udhcpc …`).
    pub busybox: PathBuf,
}

impl Default for Inside {
    fn default() -> Self {
        Inside {
            interface: "lan0".into(),
            address: Ipv4Addr::new(192, 168, 77, 1),
            prefix: 24,
            dhcp_first: Ipv4Addr::new(192, 168, 77, 100),
            dhcp_last: Ipv4Addr::new(192, 168, 77, 200),
            dhcp_lease: "12h".into(),
        }
    }
}

impl Default for Outside {
    fn default() -> Self {
        Outside {
            interface: "wan0".into(),
            mode: OutsideMode::Dhcp,
            address: None,
            prefix: 24,
            gateway: None,
            dns: Vec::new(),
        }
    }
}

impl Default for Card {
    fn default() -> Self {
        Card {
            interface: String::new(),
            driver: "cdc_eem".into(),
            address: Ipv4Addr::new(172, 31, 77, 1),
            prefix: 29,
            inside_address: Ipv4Addr::new(172, 31, 77, 2),
            outside_address: Ipv4Addr::new(172, 31, 77, 3),
            status_port: 8081,
            probe_interval_ms: 300,
            probe_failures: 2,
            peer_io_reader: String::new(),
        }
    }
}

impl Default for Status {
    fn default() -> Self {
        Status { port: 80 }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            run_dir: PathBuf::from("/run/cardwall"),
            dnsmasq: PathBuf::from("dnsmasq"),
            busybox: PathBuf::from("busybox"),
        }
    }
}

/// Whether `a` is in the network `net/prefix`.
fn in_network(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

/// Each named address must be in `network` (address, prefix length); the error says which is
/// not, and where it should be (`place`, e.g. "on the card link").
fn require_in_network(
    addresses: [(&str, Ipv4Addr); 2],
    (network, prefix): (Ipv4Addr, u8),
    place: &str,
) -> Result<(), String> {
    match addresses
        .into_iter()
        .find(|(_, address)| !in_network(*address, network, prefix))
    {
        Some((what, address)) => Err(format!(
            "{what} {address} is not {place} {network}/{prefix}"
        )),
        None => Ok(()),
    }
}

impl ConfigFile for Config {
    fn check(&self) -> Result<(), String> {
        for (what, prefix) in [
            ("inside", self.inside.prefix),
            ("outside", self.outside.prefix),
            ("card", self.card.prefix),
        ] {
            if !(1..=32).contains(&prefix) {
                return Err(format!("{what}.prefix must be 1 to 32, not {prefix}"));
            }
        }
        let inside = &self.inside;
        require_in_network(
            [
                ("inside.dhcp_first", inside.dhcp_first),
                ("inside.dhcp_last", inside.dhcp_last),
            ],
            (inside.address, inside.prefix),
            "in the inside network",
        )?;
        if u32::from(inside.dhcp_first) > u32::from(inside.dhcp_last) {
            return Err("inside.dhcp_first comes after inside.dhcp_last".into());
        }
        let card = &self.card;
        require_in_network(
            [
                ("card.inside_address", card.inside_address),
                ("card.outside_address", card.outside_address),
            ],
            (card.address, card.prefix),
            "on the card link",
        )?;
        if card.inside_address == card.outside_address {
            return Err("the card's inside and outside addresses must differ: the appliance tells the card's own traffic from relayed traffic by them".into());
        }
        if in_network(card.address, inside.address, inside.prefix) {
            return Err("the card link and the inside network overlap".into());
        }
        let names = [&inside.interface, &self.outside.interface];
        if names.iter().any(|n| n.is_empty()) {
            return Err("inside.interface and outside.interface must be named".into());
        }
        if inside.interface == self.outside.interface
            || (!card.interface.is_empty()
                && [&inside.interface, &self.outside.interface].contains(&&card.interface))
        {
            return Err("inside, outside and card must be three different interfaces".into());
        }
        if !card.peer_io_reader.is_empty() && card.interface.is_empty() {
            return Err(
                "card.peer_io_reader needs card.interface: the TAP device to create".into(),
            );
        }
        if card.interface.is_empty() && card.driver.is_empty() {
            return Err("name card.interface, or give card.driver to find it by".into());
        }
        if self.outside.mode == OutsideMode::Static
            && (self.outside.address.is_none() || self.outside.gateway.is_none())
        {
            return Err(
                "outside.mode = \"static\" needs outside.address and outside.gateway".into(),
            );
        }
        if card.probe_failures == 0 || card.probe_interval_ms == 0 {
            return Err("card.probe_failures and card.probe_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_the_defaults() {
        let example = Config::parse("appliance.toml", include_str!("../appliance.toml")).unwrap();
        assert_eq!(example, Config::default());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("[inside]\ninterfce = \"x\"", "unknown field `interfce`"),
            (
                "[inside]\ndhcp_first = \"10.0.0.5\"",
                "not in the inside network",
            ),
            (
                "[card]\ninside_address = \"10.1.1.1\"",
                "not on the card link",
            ),
            ("[card]\noutside_address = \"172.31.77.2\"", "must differ"),
            ("[outside]\ninterface = \"lan0\"", "three different"),
            ("[outside]\nmode = \"static\"", "needs outside.address"),
            ("[outside]\nmode = \"pppoe\"", "unknown variant"),
            ("[card]\nprefix = 40", "1 to 32"),
        ] {
            let e = Config::parse("a.toml", text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
