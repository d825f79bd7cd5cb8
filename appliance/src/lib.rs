//! The appliance: the two-port box between the protected computer and the untrusted network.
//! It owns no firewall decision (the card makes every one); its job is that no packet can
//! reach the outside except the card's own, and that when the card is gone nothing passes.
//!
//! - [`config`] — `appliance.toml`.
//! - [`firewall`] — the nftables rulesets (base fail-closed, and full) and their application.
//! - [`daemon`] — the control loop: find links, configure, watch the card, fail closed.
//! - [`services`] — dnsmasq (inside DHCP, card-link DNS) and the outside DHCP client, supervised.
//! - [`state`] and [`status`] — what the status page and `/api/status` show.
//! - [`peerio`] — the Peer I/O server for a card that speaks only ISO 7816.
//!
//! Links, addresses, routes and policy rules (over rtnetlink), link events, sysfs lookups and
//! `nft` come from the `cardwall-netconf` crate, which the card's interception uses too.
//!
//! The network-namespace lab that `./x lab` runs and every end-to-end test builds on is the
//! `cardwall-lab` crate (`lab/`): it never ships with the daemon.

pub mod config;
pub mod daemon;
pub mod firewall;
pub mod peerio;
pub mod services;
pub mod state;
pub mod status;
