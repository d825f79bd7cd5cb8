//! The few bytes of HTTP/2 the card speaks: recognising a cleartext HTTP/2 client (h2c by
//! prior knowledge, RFC 9113 section 3.3) and telling it, in its own framing, that HTTP/1.1 is
//! required. HTTP/2 inside TLS never reaches this: it is spliced unread.

/// The start of the client connection preface: `PRI * HTTP/2.0`. A head beginning so is not
/// HTTP/1.
pub const PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
/// RFC 9113 section 7: "use HTTP/1.1 for the request".
const HTTP_1_1_REQUIRED: u32 = 0xd;

/// A server connection preface (an empty SETTINGS frame) followed by GOAWAY with
/// `HTTP_1_1_REQUIRED` and `why` as debug data, so the client reports a clear error instead of
/// a framing failure.
pub fn refusal(why: &str) -> Vec<u8> {
    let mut out = frame_header(0, FRAME_SETTINGS);
    let debug = &why.as_bytes()[..why.len().min(256)];
    let payload_len = u32::try_from(8 + debug.len()).unwrap_or(8);
    out.extend_from_slice(&frame_header(payload_len, FRAME_GOAWAY));
    out.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none was processed
    out.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    out.extend_from_slice(debug);
    out
}

/// A 9-byte frame header on stream 0 with no flags.
fn frame_header(length: u32, kind: u8) -> Vec<u8> {
    let mut header = length.to_be_bytes()[1..].to_vec();
    header.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_settings_then_goaway_with_http_1_1_required() {
        let bytes = refusal("h2c refused");
        assert_eq!(&bytes[..9], &[0, 0, 0, FRAME_SETTINGS, 0, 0, 0, 0, 0]);
        let goaway = &bytes[9..];
        assert_eq!(&goaway[..3], &[0, 0, 8 + 11]);
        assert_eq!(goaway[3], FRAME_GOAWAY);
        assert_eq!(&goaway[9..13], &[0, 0, 0, 0]);
        assert_eq!(&goaway[13..17], &[0, 0, 0, 0xd]);
        assert_eq!(&goaway[17..], b"h2c refused");
    }
}
