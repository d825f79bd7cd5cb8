//! The network-namespace lab: the one library behind `./x lab` and every end-to-end test. Test
//! and lab tooling only; nothing here ships on the appliance or the card.
//!
//! - [`topology`] — namespaces, veth links, addresses, processes in namespaces; removed on drop.
//! - [`origin`] — the "outside world": HTTP/HTTPS origins, DNS, TCP echo, a throwaway test CA.
//! - [`pcscd`] — a private `pcscd` with the `vpcd` virtual reader, for Peer I/O cards.
//! - [`SystemLab`] — the whole system (protected computer, appliance, card, outside world)
//!   wired like the real thing, as the `cardwall-lab` binary runs it.

pub mod origin;
pub mod pcscd;
mod system;
pub mod topology;

pub use system::{
    ALLOWED, APPLIANCE_INSIDE, BLOCKED, CARD_INSIDE, CARD_OUTSIDE, DEMO_RULES, ECH_COVER_NAME,
    ECH_HTTPS_RR, GIT_README, Options, SystemLab, WORLD, dhcp_client, sibling_binaries,
    start_world,
};
