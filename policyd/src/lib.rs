//! cardwall policy server: signs and serves rule bundles to enrolled cards over mutual TLS.
//!
//! What cards, the administrator and policyd say to each other is not here: those documents
//! are `proto::policy` and `proto::policy_admin`, shared with the card.
//!
//! - [`client`] (feature `client`): the HTTPS client, the card's key and certificate request.
//! - [`fleet`] (feature `server`): the fleet CA, the server's TLS identity, the policy key and
//!   the admin token, made by `policyd ca init`.
//! - [`db`]: cards, tokens and bundles in SQLite or PostgreSQL (same queries, same migrations).
//! - [`server`]: the HTTPS service: enrolment, long poll, reports, admin calls, and the admin
//!   page (a part of it: the page's routes share the service's state).
//! - [`admin`]: the administrator's side of the API, for the `policyd` commands: [`client`]
//!   and the documents of `proto::policy_admin`, nothing of the server.
//!
//! The binary `policyd` is a thin CLI over these; `policyd-loadgen` is the scale benchmark.

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod fleet;
#[cfg(feature = "server")]
pub mod server;

/// Unix seconds now.
#[cfg(feature = "server")]
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Lower-case hex.
#[cfg(feature = "server")]
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 through the ring provider's hash (no second crypto library in the tree).
#[cfg(feature = "server")]
pub fn sha256_hex(data: &[u8]) -> String {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    hex(suite.common.hash_provider.hash(data).as_ref())
}

/// Each waiting card holds a socket (and the load generator one per simulated card): lift the
/// soft limit on open files to the hard one.
#[cfg(feature = "server")]
pub fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%e, "cannot raise the open file limit");
    }
}
