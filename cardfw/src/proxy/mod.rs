//! The proxies, one module per protocol. Each takes its listener and the shared [`Card`],
//! and decides every connection with `card.policy.current().rules.decide(..)`.
//!
//! [`Card`]: crate::card::Card

pub mod dns;
