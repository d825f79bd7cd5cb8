//! Contracts between cardwall's processes: each document one process writes and another
//! reads is a type here, used by both sides, so a field renamed on one side fails to compile
//! on the other instead of going missing at run time.
//!
//! Dependencies stay at serde alone: the card firmware and the appliance daemon both link this.

pub mod status;

pub use status::{Action, CardStatus, CounterSnapshot, Decision};
