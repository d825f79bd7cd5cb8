//! TLS inspection for chosen sites (issue 14): the card terminates the inside TLS connection
//! with a certificate from its own CA, checks the upstream server's certificate itself, and
//! relays HTTP in between, so path, method, content-type and size rules apply inside HTTPS.
//!
//! - [`ca`]: the card's CA, made at first use and kept sealed in the [`crate::store`]; its
//!   certificate and fingerprint are public, its key never leaves the store file; re-key with
//!   the PIN.
//! - [`leaf`]: leaf certificates minted per name (SAN set, a day of validity, random serial)
//!   and a bounded cache of them, served to rustls by the hello's SNI.
//! - [`upstream`]: the card's own TLS client: webpki over Mozilla's roots plus the owner's CAs,
//!   and a named [`upstream::CertReason`] for every refused server certificate, for the block
//!   page.
//!
//! # How it plugs in (not wired yet)
//!
//! These are foundations; nothing calls them yet. The wiring, once the proxies have their new
//! shape, is:
//!
//! 1. **The rule.** An `https` rule takes the flag `inspect`; a hello matching such a rule is
//!    terminated, every other hello is spliced as today (so a pinned app breaks only where the
//!    owner asked for inspection).
//! 2. **Terminating.** `proxy/tls.rs` has already read the ClientHello to decide; for an
//!    `inspect` decision it replays the buffered hello into a rustls server connection whose
//!    config comes from [`leaf::LeafCache::server_config`] (the resolver mints or reuses the
//!    leaf for the SNI; a hello without SNI gets the original destination's address). ALPN
//!    offers `h2` and `http/1.1`.
//! 3. **Upstream.** The card connects to the original destination with
//!    [`upstream::UpstreamTls::client_config`], the SNI the client sent, and the same ALPN the
//!    client chose. A refused certificate ends in the block page (over the inside TLS session)
//!    naming [`upstream::CertReason::code`] and its sentence, never in a forged certificate for a
//!    server that did not prove itself.
//! 4. **HTTP.** The two TLS streams are joined by the HTTP relay, every request going through
//!    the same decide-and-record call as plain HTTP, so a denied path in HTTPS gets the same
//!    block page and the same log line.
//!
//! Still to come with the wiring: the user's client certificate (sealed, unlocked with the PIN,
//! presented through the client config's certificate resolver), the CA download and re-key on
//! the card page, owner CAs and inspection rules from managed bundles (never private keys).

pub mod ca;
pub mod leaf;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use ca::{CaError, CardCa};
pub use leaf::{LeafCache, LeafResolver, Subject};
pub use upstream::{CertReason, UpstreamTls};
