//! Any bytes as a chunked body passing through the proxy (after two input bytes that choose
//! how the bytes are cut into reads). The tracker never panics, and:
//! - it gives the same answer (end, payload, or error) however the body is cut into reads;
//! - it never reads past the body's end, and after the end it takes nothing more;
//! - it agrees with a strict reading of RFC 9112 §7.1: a body it ends is a valid chunked body
//!   ending there with that payload, and a valid chunked body is one it ends there. A byte
//!   the next hop could read as a line end (a bare LF) is never taken inside a line, or the
//!   proxy and the server would disagree on where the body ends (request smuggling).
#![no_main]

use cardfw::wire::http1::{Advance, ChunkError, ChunkedTracker, MAX_LINE};
use libfuzzer_sys::fuzz_target;

/// What the tracker made of a body: where it ended and the payload, or an error, or neither.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done { end: usize, payload: u64 },
    More { payload: u64 },
    Error(ChunkError),
}

fn track(body: &[u8], mut read_size: impl FnMut(usize) -> usize) -> Outcome {
    let mut tracker = ChunkedTracker::default();
    let (mut at, mut payload, mut n) = (0, 0, 0);
    while at < body.len() {
        let size = read_size(n).clamp(1, body.len() - at);
        n += 1;
        match tracker.advance(&body[at..at + size]) {
            Ok(Advance {
                consumed,
                payload: more,
            }) => {
                assert!(consumed <= size);
                assert!(more <= consumed as u64);
                payload += more;
                at += consumed;
                if tracker.is_done() {
                    let after = tracker.advance(&body[at..]).expect("nothing after the end");
                    assert_eq!((after.consumed, after.payload), (0, 0));
                    return Outcome::Done { end: at, payload };
                }
                assert_eq!(consumed, size, "a body not done takes the whole read");
            }
            Err(error) => return Outcome::Error(error),
        }
    }
    Outcome::More { payload }
}

/// The line starting at `*at`, which must end with CRLF and hold no other CR or LF; moves
/// `*at` past it.
fn line<'a>(body: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = &body[*at..];
    let end = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
    if rest[end] != b'\r' || rest.get(end + 1) != Some(&b'\n') {
        return None;
    }
    *at += end + 2;
    Some(&rest[..end])
}

/// The end and payload of the chunked body at the start of `body`, if a whole valid one is
/// there. The grammar with the tracker's limits (15 hex digits, lines of `MAX_LINE`), and
/// chunk extensions taken as any bytes but CR and LF after `;` or whitespace.
fn strict_end(body: &[u8]) -> Option<(usize, u64)> {
    let (mut at, mut payload) = (0, 0u64);
    loop {
        let size_line = line(body, &mut at)?;
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 15 {
            return None;
        }
        let extension = &size_line[digits..];
        if let Some((&first, rest)) = extension.split_first() {
            if !matches!(first, b';' | b' ' | b'\t') || rest.len() > MAX_LINE {
                return None;
            }
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).ok()?, 16).ok()?;
        if size == 0 {
            loop {
                let trailer = line(body, &mut at)?;
                if trailer.is_empty() {
                    return Some((at, payload));
                }
                if trailer.len() > MAX_LINE {
                    return None;
                }
            }
        }
        let data_end = at.checked_add(usize::try_from(size).ok()?)?;
        if body.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        payload += size;
        at = data_end + 2;
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, body @ ..] = data else {
        return;
    };
    let whole = track(body, |_| body.len());
    let cut = track(body, |n| {
        1 + usize::from(a.wrapping_add(b.wrapping_mul(n as u8)) % 64)
    });
    let bytewise = track(body, |_| 1);
    assert_eq!(whole, cut);
    assert_eq!(whole, bytewise);

    let strict = strict_end(body);
    match &whole {
        Outcome::Done { end, payload } => {
            assert_eq!(
                strict,
                Some((*end, *payload)),
                "the tracker ended a body the RFC does not"
            );
        }
        _ => assert_eq!(
            strict, None,
            "a valid body the tracker did not end: {whole:?}"
        ),
    }
});
