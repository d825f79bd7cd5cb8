//! The card firmware: a proxy firewall. It never routes a packet; it terminates each
//! connection, asks the core whether it may go on, and opens its own upstream connection
//! from the card's outside address, or refuses.
//!
//! **Where is a packet decided?** In [`firewall::Firewall`]: `decide`, `check`,
//! `decide_addresses`. It owns the rules in force and the store, and records every verdict
//! (a rule's or a [`firewall::Refusal`]) in one place, so the log, the counters and both
//! status pages agree. Everything else is a front end over it, and no front end imports
//! another:
//!
//! - [`proxy`]: the traffic. [`proxy::http`] (port 80 and the explicit proxy's requests),
//!   [`proxy::http::connect`] (the explicit proxy's CONNECT tunnels), [`proxy::tls`] (port 443,
//!   decided on the ClientHello's name without terminating TLS), [`proxy::dns`] (the DNS
//!   forwarder), [`proxy::tcp`] (other ports, decided on address and port).
//! - [`admin`]: the card's web page; [`iso7816`]: the same store over APDUs; [`managed`]:
//!   the policy server's bundles; [`status`]: the JSON the appliance reads.
//!
//! Beside them: [`store`] (the PIN-protected, sealed rule store), [`wire`] (the byte formats
//! read by hand), [`ech`] (cover names), [`config`], [`intercept`] (the card's nftables),
//! [`accept`] (the one accept loop and the descriptor budget). [`run`] wires it all together
//! and is imported by nobody. [`inspect`]: TLS inspection for chosen sites (the card's CA,
//! leaves, upstream checks); not wired into the proxies yet.

pub mod accept;
pub mod admin;
pub mod config;
pub mod ech;
pub mod firewall;
pub mod inspect;
pub mod intercept;
pub mod iso7816;
pub mod managed;
pub mod proxy;
pub mod run;
pub mod status;
pub mod store;
pub mod vpn;
pub mod wire;
