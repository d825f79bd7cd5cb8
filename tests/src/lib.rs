//! Origin servers for end-to-end tests (being written).
