//! Any bytes as a card's answer on the host: the response, the status data and the secret
//! pair decoders never panic.
#![no_main]

use apdu::Response;
use apdu::app::{CardStatus, split_secret_pair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Some(response) = Response::parse(bytes) {
        assert_eq!(response.emit(), bytes);
    }
    if let Some(status) = CardStatus::parse(bytes) {
        assert_eq!(CardStatus::parse(&status.emit()), Some(status));
    }
    let _ = split_secret_pair(bytes);
});
