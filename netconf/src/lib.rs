//! The network configuration the appliance daemon and the card change, written once for both:
//!
//! - [`netlink`] — links, addresses, routes and policy rules over rtnetlink; link events. Neither
//!   program shells out to `ip`.
//! - [`wireguard`] — the kernel's WireGuard over generic netlink: a link's key and peer, its
//!   handshake and byte counters.
//! - [`sysfs`] — what only sysfs tells: the link a driver is bound to (the card), byte counters.
//! - [`nft`] — an nftables ruleset applied in one transaction.
//!
//! The lab's topologies (`cardwall-lab`) stay on `ip`: there a failed command with its stderr
//! is the clearest error, and nothing of it ships.

pub mod netlink;
pub mod nft;
pub mod sysfs;
pub mod wireguard;
