//! cardwall policy server: signs and serves rule bundles to enrolled cards over mutual TLS
//!
//! Nothing here yet: the policy server is issue 6 (bundles themselves are signed by `rules::bundle`).
