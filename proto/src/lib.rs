//! Contracts between cardwall's processes: each document one process writes and another
//! reads is a type here, used by both sides, so a field renamed on one side fails to compile
//! on the other instead of going missing at run time.
//!
//! - [`status`]: the card's status document (card → appliance).
//! - [`policy`]: enrolment, bundle long poll and reports (card ↔ policy server).
//! - [`policy_admin`]: the fleet administrator's calls (admin CLI ↔ policy server).
//!
//! The appliance ↔ card portal and per-device messages, when they come, go in a module of
//! their own here, beside [`status`].
//!
//! Dependencies stay at serde alone: the card firmware and the appliance daemon both link this.

pub mod policy;
pub mod policy_admin;
pub mod status;

pub use status::{Action, CardStatus, CounterSnapshot, Decision, VpnStatus};
