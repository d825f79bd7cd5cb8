//! cardwall policy server: signs and serves rule bundles to enrolled cards over mutual TLS.
//!
//! What cards, the administrator and policyd say to each other is not here: those documents
//! are `proto::policy` and `proto::policy_admin`, and the HTTPS client that carries them is
//! `policy_client`; the card links both, and nothing of the server.
//!
//! - [`fleet`]: the fleet CA, the server's TLS identity, the policy key and
//!   the admin token, made by `policyd ca init`.
//! - [`db`]: cards, tokens and bundles in SQLite or PostgreSQL (same queries, same migrations).
//! - [`service`]: the fleet's state and operations (cards, bundles, long polls, tokens,
//!   revocation), below the two faces of the HTTPS service:
//! - [`server`]: the HTTPS service and its card and admin calls; it mounts `page`, the
//!   administrator's page (its sessions in `sessions`).
//! - [`admin`]: the administrator's side of the API, for the `policyd` commands: `policy_client`
//!   and the documents of `proto::policy_admin`, nothing of the server.
//!
//! The binary `policyd` is a thin CLI over these; `policyd-loadgen` is the scale benchmark.

pub mod admin;
pub mod db;
pub mod fleet;
mod page;
pub mod server;
pub mod service;
mod sessions;

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 through the ring provider's hash (no second crypto library in the tree).
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
pub fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%e, "cannot raise the open file limit");
    }
}
