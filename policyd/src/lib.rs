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

/// Unix seconds now, as the database keeps times.
pub(crate) fn unix_now() -> i64 {
    i64::try_from(serve::unix_now()).unwrap_or(i64::MAX)
}

/// SHA-256 of `data` in lower-case hex: certificate fingerprints and token hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Each waiting card holds a socket (and the load generator one per simulated card): lift the
/// soft limit on open files to the hard one.
pub fn raise_file_limit() {
    if let Err(e) = serve::accept::raise_descriptor_limit(None, "the waiting cards") {
        tracing::warn!(%e, "cannot raise the open file limit");
    }
}
