//! Byte formats the card reads by hand, each a typed view with its malformed cases tested in
//! the same file.

pub mod client_hello;
pub mod http1;
pub mod http2;
