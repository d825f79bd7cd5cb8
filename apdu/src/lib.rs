//! ISO 7816-4 APDUs, read and written by hand (no crate does it well), and the identifiers of
//! the cardwall card application and its Peer I/O link.
//!
//! This crate is shared by the card (`cardfw`, which parses commands and answers them), the
//! host tool (`cardctl`) and the appliance's Peer I/O server (which build commands and read
//! responses). It is its own crate so the host side gets the codec without the proxy.
//!
//! - [`Command`]: a command APDU, all four ISO 7816-3 cases, short and extended lengths.
//! - [`Response`] and [`StatusWord`]: a response APDU and the status words the card uses.
//! - [`app`]: the cardwall application's AID, file, data tags and PIN blocks.
//! - [`peerio`]: Peer I/O (seed 003, §7): its commands, and the client and server state
//!   machines, free of I/O so they are tested against each other here.
//! - [`tap`] (feature `tap`): the bridge between a Peer I/O end and a TAP device.

pub mod app;
mod command;
pub mod peerio;
mod response;
#[cfg(feature = "tap")]
pub mod tap;

pub use command::{CLA_CHAINING, Command, ParseError};
pub use response::{Response, StatusWord};
