//! cardwall's serving layer: what every listener and web page of the card, the policy server
//! and the appliance share, written once.
//!
//! - [`accept`]: the one accept loop; it survives running out of descriptors, counts, caps
//!   connections per listener ([`slots`]), and never ends the process.
//! - [`http`]: HTTP/1.1 (in clear, or HTTPS with rustls) over that loop for an axum router,
//!   and the security headers every page sends.
//! - [`daemon`]: what every daemon binary does first: logging, a runtime, its TOML
//!   configuration with errors that name the file.
//! - [`session`]: page sessions in a cookie, CSRF tokens bound to them, and the axum
//!   extractors that check both before a handler runs.
//!
//! Cookies, hex and SHA-256 come from their crates (`cookie`, `hex`, `sha2`); [`unix_now`] is
//! the one clock in seconds.

pub mod accept;
pub mod daemon;
pub mod http;
pub mod session;
pub mod slots;

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
