//! Any bytes as the start of a request from a client (first input byte even) or of a response
//! from a server (odd). The head parsers never panic, and what they read holds together:
//! - the head's length lies within the buffer, ends a line, and the head alone parses the
//!   same, one byte less is not yet a head;
//! - the head the proxy writes on parses back to the same head (the response as HTTP/1.1),
//!   with the same framing, so the next hop finds the body's end where the proxy does;
//!   with the hop-by-hop fields stripped, the framing is still the same.
#![no_main]

use cardfw::wire::http1::{Framing, parse_request, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let keep_upgrade = selector & 2 != 0;
    if selector & 1 == 0 {
        check_request(bytes, keep_upgrade);
    } else {
        check_response(bytes, keep_upgrade);
    }
});

fn check_head_length(bytes: &[u8], len: usize) {
    assert!(
        len > 0 && len <= bytes.len(),
        "head length {len} of {}",
        bytes.len()
    );
    assert_eq!(bytes[len - 1], b'\n');
}

fn check_framing(framing: &Framing) {
    if let Framing::Length(n) = framing {
        assert!(*n > 0, "a zero length is Empty");
    }
}

fn check_request(bytes: &[u8], keep_upgrade: bool) {
    let Ok(Some((head, len))) = parse_request(bytes) else {
        return;
    };
    check_head_length(bytes, len);
    assert_eq!(parse_request(&bytes[..len]), Ok(Some((head.clone(), len))));
    assert_eq!(parse_request(&bytes[..len - 1]), Ok(None));
    let framing = head.framing();
    if let Ok(framing) = &framing {
        check_framing(framing);
    }
    let _ = head.closes();

    let mut written = Vec::new();
    head.write_to(&mut written);
    assert_eq!(
        parse_request(&written),
        Ok(Some((head.clone(), written.len()))),
        "written: {:?}",
        String::from_utf8_lossy(&written)
    );

    let mut stripped = head.clone();
    stripped.headers.strip_hop_by_hop(keep_upgrade);
    let mut written = Vec::new();
    stripped.write_to(&mut written);
    let (reparsed, _) = parse_request(&written)
        .expect("a stripped head parses")
        .expect("a stripped head is complete");
    assert_eq!(reparsed.framing(), framing);
}

fn check_response(bytes: &[u8], keep_upgrade: bool) {
    let Ok(Some((head, len))) = parse_response(bytes) else {
        return;
    };
    check_head_length(bytes, len);
    assert_eq!(parse_response(&bytes[..len]), Ok(Some((head.clone(), len))));
    assert_eq!(parse_response(&bytes[..len - 1]), Ok(None));
    let framings = ["GET", "HEAD", "POST"].map(|method| head.framing(method));
    for framing in framings.iter().flatten() {
        check_framing(framing);
    }
    let _ = head.closes();

    let mut written = Vec::new();
    head.write_to(&mut written);
    let mut as_written = head.clone();
    as_written.minor_version = 1;
    assert_eq!(
        parse_response(&written),
        Ok(Some((as_written, written.len()))),
        "written: {:?}",
        String::from_utf8_lossy(&written)
    );

    let mut stripped = head.clone();
    stripped.headers.strip_hop_by_hop(keep_upgrade);
    let mut written = Vec::new();
    stripped.write_to(&mut written);
    let (reparsed, _) = parse_response(&written)
        .expect("a stripped head parses")
        .expect("a stripped head is complete");
    assert_eq!(
        ["GET", "HEAD", "POST"].map(|method| reparsed.framing(method)),
        framings
    );
}
