//! Whether the card's network is up, so the poller need not sit out a long back-off once it
//! is: up means the `link` interface and the interface holding the outside address are both
//! up with carrier, and the outside address is assigned. Looked at every
//! [`CHECK_EVERY`]; each change is published on a `watch` channel.

use std::net::IpAddr;
use std::time::Duration;

use nix::net::if_::InterfaceFlags;
use tokio::sync::watch;

const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The network's state now. An interface list that cannot be read counts as down.
pub fn is_up(link: &str, outside_address: IpAddr) -> bool {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    // Carrier, not IFF_RUNNING: a link with carrier may still report a dormant operstate.
    let running = InterfaceFlags::IFF_UP | InterfaceFlags::IFF_LOWER_UP;
    let mut link_up = false;
    let mut outside_up = false;
    for entry in addresses {
        if !entry.flags.contains(running) {
            continue;
        }
        link_up |= entry.interface_name == link;
        let address = entry.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        outside_up |= address == Some(outside_address);
    }
    link_up && outside_up
}

/// A channel that says whether the network is up, kept current by a background task for as
/// long as a receiver lives.
pub fn watch(link: String, outside_address: IpAddr) -> watch::Receiver<bool> {
    let up = is_up(&link, outside_address);
    tracing::info!(%link, %outside_address, up, "watching the network for the policy poll");
    let (sender, receiver) = watch::channel(up);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = sender.closed() => return,
            }
            let up = is_up(&link, outside_address);
            if !sender.send_if_modified(|was| std::mem::replace(was, up) != up) {
                continue;
            }
            if up {
                tracing::info!(%link, %outside_address, "network up: polling the server now");
            } else {
                tracing::warn!(%link, %outside_address, "network down: no policy server");
            }
        }
    });
    receiver
}
