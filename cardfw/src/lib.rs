//! The card firmware: a proxy firewall. It never routes a packet; it terminates each
//! connection, asks [`rules::RuleSet::decide`], and opens its own upstream connection from the
//! card's outside address, or refuses.
//!
//! - [`proxy::http`]: plain HTTP, transparent (port 80) and explicit (3128, with CONNECT).
//! - [`proxy::tls`]: port 443, decided on the ClientHello's name without terminating TLS.
//! - [`proxy::dns`]: the DNS forwarder.
//! - [`proxy::tcp`]: other ports, decided on address and port.
//! - [`wire`]: the byte formats read by hand (the TLS ClientHello).
//! - [`card`]: what they share: live rules, connection slots, counters, recent decisions.
//! - [`store`]: the PIN-protected, sealed rule store; [`admin`]: the card's web page over it.
//! - [`accept`]: the one accept loop every listener runs, and the descriptor budget.
//! - [`inspect`]: TLS inspection for chosen sites (the card's CA, leaves, upstream checks); not wired yet.

pub mod accept;
pub mod admin;
pub mod card;
pub mod config;
pub mod ech;
pub mod inspect;
pub mod intercept;
pub mod iso7816;
pub mod managed;
pub mod proxy;
pub mod run;
pub mod status;
pub mod store;
pub mod wire;
