//! Any bytes offered as a bundle: refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rules::bundle::{SigningKey, Trust, verify};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let trust = Trust { key: &key, installed_version: 0, group: "g", now: chrono::DateTime::UNIX_EPOCH };
    let _ = verify(data, &trust);
});
