//! DNS forwarder (being written).
