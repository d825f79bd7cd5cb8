//! The appliance: the two-port box between the protected computer and the untrusted network.
//! It owns no firewall decision (the card makes every one); its job is that no packet can
//! reach the outside except the card's own, and that when the card is gone nothing passes.
//!
//! - [`config`] — `appliance.toml`.
//! - [`firewall`] — the nftables rulesets (base fail-closed, and full) and their application.
//! - [`netlink`] — links, addresses, routes and policy rules over rtnetlink; link events.
//! - [`daemon`] — the control loop: find links, configure, watch the card, fail closed.
//! - [`services`] — dnsmasq (inside DHCP, card-link DNS) and the outside DHCP client, supervised.
//! - [`state`] and [`status`] — what the status page and `/api/status` show.
//! - [`topology`], [`origin`], [`lab`] — the network-namespace lab that `appliance lab` runs and
//!   every end-to-end test builds on. Topology code is written once, there.

pub mod config;
pub mod daemon;
pub mod firewall;
pub mod lab;
pub mod netlink;
pub mod origin;
pub mod pcscd;
pub mod peerio;
pub mod services;
pub mod state;
pub mod status;
pub mod topology;
