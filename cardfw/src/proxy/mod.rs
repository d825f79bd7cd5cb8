//! The proxies, one module per protocol. Each takes its listener and the shared [`Card`],
//! and decides every connection with `card.policy.current().rules.decide(..)`.
//!
//! [`Card`]: crate::card::Card

pub mod dns;
pub mod http;
pub mod pages;
pub mod splice;
pub mod tcp;
pub mod tls;
pub mod upstream;

/// Errors a response body can end with (upstream failure, a size cap).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response the HTTP proxy sends: a page of its own, or the origin's body.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
