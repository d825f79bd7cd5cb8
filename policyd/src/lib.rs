//! cardwall policy server: signs and serves rule bundles to enrolled cards over mutual TLS.
//!
//! - [`wire`]: what cards and policyd say to each other (always built: the card uses it).
//! - [`client`] (feature `client`): the HTTPS client, the card's key and certificate request.
//! - [`fleet`] (feature `server`): the fleet CA, the server's TLS identity, the policy key and
//!   the admin token, made by `policyd ca init`.
//! - [`db`]: cards, tokens and bundles in SQLite or PostgreSQL (same queries, same migrations).
//! - [`server`]: the HTTPS service: enrolment, long poll, reports, admin calls and page.
//! - [`admin`]: the administrator's side of the API, for the `policyd` commands.
//!
//! The binary `policyd` is a thin CLI over these; `policyd-loadgen` is the scale benchmark.

pub mod wire;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod fleet;
#[cfg(feature = "server")]
mod page;
#[cfg(feature = "server")]
pub mod server;

/// Unix seconds now, as the database keeps times.
#[cfg(feature = "server")]
pub(crate) fn unix_now() -> i64 {
    i64::try_from(serve::unix_now()).unwrap_or(i64::MAX)
}

/// SHA-256 of `data` in lower-case hex: certificate fingerprints and token hashes.
#[cfg(feature = "server")]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Each waiting card holds a socket (and the load generator one per simulated card): lift the
/// soft limit on open files to the hard one.
#[cfg(feature = "server")]
pub fn raise_file_limit() {
    if let Err(e) = serve::accept::raise_descriptor_limit(None, "the waiting cards") {
        tracing::warn!(%e, "cannot raise the open file limit");
    }
}
