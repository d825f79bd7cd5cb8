//! Any bytes as a client's first bytes on port 443. The reader answers read more, a hello, or
//! a refusal, never panics, and keeps the contract the proxy relies on:
//! - `Incomplete { at_least }` asks for more bytes than it was given, and no more than the
//!   buffer holds;
//! - the answers on growing prefixes are `Incomplete` up to one point and the same final
//!   answer from there on (the proxy stops reading at that point and forwards the buffer);
//!   while a hello is still coming, `at_least` never points past where it ends;
//! - a hello re-serialises: one built from what was read, in one record or cut into records
//!   of sizes taken from the input, reads back the same.
#![no_main]

use cardfw::wire::client_hello::{
    ClientHello, HelloError, MAX_BUFFER_BYTES, MAX_HELLO_BYTES, parse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Err(HelloError::Incomplete {
        at_least: Some(at_least),
    }) = whole
    {
        assert!(at_least > data.len().min(MAX_BUFFER_BYTES) && at_least <= MAX_BUFFER_BYTES);
    }
    if whole == Err(HelloError::NotTls) {
        assert!(!data.starts_with(&[22, 3]));
    }
    check_prefixes(data, &whole);
    if let Ok(hello) = &whole {
        check_reserialised(hello, data);
    }
});

fn is_incomplete(answer: &Result<ClientHello, HelloError>) -> bool {
    matches!(answer, Err(HelloError::Incomplete { .. }))
}

/// Prefix lengths to look at: the first few bytes (where the record header is judged), a
/// spread across the input, and the two sides of `around`.
fn sample(len: usize, around: usize) -> Vec<usize> {
    let mut lengths: Vec<usize> = (0..=8.min(len)).collect();
    lengths.extend((1..16).map(|i| len * i / 16));
    lengths.extend([around.saturating_sub(1), around, (around + 1).min(len)]);
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

fn check_prefixes(data: &[u8], whole: &Result<ClientHello, HelloError>) {
    let answer = |len: usize| parse(&data[..len]);
    if is_incomplete(whole) {
        for len in sample(data.len(), data.len()) {
            assert!(
                is_incomplete(&answer(len)),
                "prefix {len} final, whole incomplete"
            );
        }
        return;
    }
    // The first final prefix, if the answers are monotone (checked below).
    let (mut low, mut high) = (0, data.len());
    while low < high {
        let middle = (low + high) / 2;
        if is_incomplete(&answer(middle)) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let end = low;
    for len in sample(data.len(), end) {
        let prefix = answer(len);
        if len < end {
            let Err(HelloError::Incomplete { at_least }) = prefix else {
                panic!("prefix {len} gave {prefix:?} before the first final prefix {end}");
            };
            if whole.is_ok() {
                assert!(at_least.is_none_or(|at_least| at_least <= end));
            }
        } else {
            assert_eq!(&prefix, whole, "prefix {len}, first final at {end}");
        }
    }
}

fn put_u16(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&u16::try_from(value).unwrap().to_be_bytes());
}

/// A ClientHello handshake message saying what `hello` says, or `None` if it cannot be
/// written (an ALPN name over 255 bytes after lossy decoding).
fn hello_message(hello: &ClientHello) -> Option<Vec<u8>> {
    let mut extensions = Vec::new();
    if let Some(name) = &hello.server_name {
        let name = name.as_bytes();
        put_u16(&mut extensions, 0);
        put_u16(&mut extensions, name.len() + 5);
        put_u16(&mut extensions, name.len() + 3);
        extensions.push(0);
        put_u16(&mut extensions, name.len());
        extensions.extend_from_slice(name);
    }
    if !hello.alpn.is_empty() {
        let mut list = Vec::new();
        for protocol in &hello.alpn {
            list.push(u8::try_from(protocol.len()).ok()?);
            list.extend_from_slice(protocol.as_bytes());
        }
        put_u16(&mut extensions, 16);
        put_u16(&mut extensions, list.len() + 2);
        put_u16(&mut extensions, list.len());
        extensions.extend_from_slice(&list);
    }
    if hello.has_ech {
        put_u16(&mut extensions, 0xfe0d);
        put_u16(&mut extensions, 1);
        extensions.push(0);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    put_u16(&mut body, extensions.len());
    body.extend_from_slice(&extensions);
    if body.len() > MAX_HELLO_BYTES {
        return None;
    }
    let mut message = vec![1];
    message.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    Some(message)
}

/// `message` in records, the nth holding `sizes(n)` bytes (at least one, at most what is left).
fn records(message: &[u8], mut sizes: impl FnMut(usize) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut n = 0;
    while !rest.is_empty() {
        let size = sizes(n).clamp(1, rest.len());
        out.extend_from_slice(&[22, 3, 1]);
        put_u16(&mut out, size);
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        n += 1;
    }
    out
}

fn check_reserialised(hello: &ClientHello, data: &[u8]) {
    let Some(message) = hello_message(hello) else {
        return;
    };
    let one_record = records(&message, |_| message.len());
    assert_eq!(parse(&one_record).as_ref(), Ok(hello));
    let fragmented = records(&message, |n| 1 + usize::from(data[n % data.len()]));
    if fragmented.len() <= MAX_BUFFER_BYTES {
        assert_eq!(parse(&fragmented).as_ref(), Ok(hello));
    }
}
