//! Bundles, two ways, chosen by the first input byte:
//! - even: the rest as a bundle from the network. Refused with an error, never a panic.
//! - odd: the rest as a payload, signed with the trusted key (a random payload never gets
//!   past the signature otherwise), then verified: the payload reader, the date, group and
//!   version checks and the rules behind them. A bundle that verifies signs again to the same
//!   bundle.
#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use rules::bundle::{Bundle, SigningKey, Trust, key_id, verify};

fn signed(key: &SigningKey, payload: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(payload).to_bytes());
    let mut out = format!(
        "cardwall-bundle 1\nkey: {}\nsignature: {signature}\n\n",
        key_id(&key.verifying_key())
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    let now: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
    let trust = Trust {
        key: &verifying,
        installed_version: 1,
        group: "g",
        now,
    };
    if mode % 2 == 0 {
        let _ = verify(rest, &trust);
        return;
    }
    let Ok(verified) = verify(&signed(&key, rest), &trust) else {
        return;
    };
    let bundle: &Bundle = &verified.bundle;
    assert_eq!(bundle.group, "g");
    assert!(bundle.version > 1 && bundle.expires_at > now);
    let again = verify(&bundle.sign(&key), &trust).expect("a verified bundle signs again");
    assert_eq!(&again.bundle, bundle);
});
