//! Any bytes as a JSON body between a card and policyd (access requests included): every wire
//! type decodes it or refuses it, never panics; what decodes encodes and decodes back to the
//! same value. The policy key in an enrolment answer (pinned by the card) is read or refused
//! without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::policy::{
    AccessRequest, AccessRequestList, EnrolRequest, EnrolResponse, ErrorBody, MAX_JSON_BODY,
    Report,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Option<T> {
    let value: T = serde_json::from_slice(bytes).ok()?;
    let text = serde_json::to_vec(&value).expect("a wire value encodes");
    let again: T = serde_json::from_slice(&text).expect("an encoded wire value decodes");
    assert_eq!(again, value);
    Some(value)
}

fuzz_target!(|bytes: &[u8]| {
    // Both sides read at most this much (larger bodies are refused before parsing).
    if bytes.len() > MAX_JSON_BODY {
        return;
    }
    let _ = round_trip::<EnrolRequest>(bytes);
    if let Some(response) = round_trip::<EnrolResponse>(bytes) {
        let _ = rules::bundle::public_key_from_pem(&response.policy_key_pem);
    }
    if let Some(report) = round_trip::<Report>(bytes) {
        let _ = report.outcome.as_str();
    }
    let _ = round_trip::<ErrorBody>(bytes);
    // Access requests (issue 16): whatever decodes is checked without a panic, and what
    // passes the check makes a rule line and a description without one.
    if let Some(request) = round_trip::<AccessRequest>(bytes)
        && request.check().is_ok()
    {
        let _ = request.blocked.suggested_rule();
        let _ = request.blocked.describe();
    }
    let _ = round_trip::<AccessRequestList>(bytes);
});
