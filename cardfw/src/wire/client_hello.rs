//! TLS ClientHello reader (being written).
