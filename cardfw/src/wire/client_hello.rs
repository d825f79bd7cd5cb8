//! The TLS ClientHello, read far enough to decide on it: the server name (SNI), whether
//! Encrypted Client Hello hides the real name, and the ALPN protocols offered.
//!
//! The port-443 proxy never terminates TLS. It reads the client's first bytes into a buffer,
//! calls [`parse`] after every read, and gets one of three answers: read more
//! ([`HelloError::Incomplete`]), here is the hello, or refuse ([`HelloError::NotTls`],
//! [`HelloError::Malformed`], [`HelloError::TooLarge`]). Once the answer is not `Incomplete`
//! it is final: more bytes never change it, so the proxy can stop reading and decide. The
//! proxy then forwards the buffer unchanged to the server, which sees exactly what we judged.
//!
//! The reader is strict where leniency would let the client show the proxy one name and the
//! server another (duplicate extensions, two host names, fragments interleaved with other
//! records), and lenient where the server is the better judge (cipher suites, versions
//! inside extensions, bytes after the hello).
//!
//! Layout read here (RFC 8446 §4.1.2, RFC 5246 §6.2 and §7.4.1.2, RFC 6066 §3, RFC 7301):
//!
//! ```text
//! record:      content_type(1)=22 legacy_version(2) length(2) fragment(length)
//! handshake:   msg_type(1)=1 length(3) ClientHello(length)    -- may span several records
//! ClientHello: legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
//!              compression_methods<1..2^8-1> [extensions<0..2^16-1>]
//! extension:   type(2) data<0..2^16-1>
//! ```

use std::borrow::Cow;
use std::collections::HashSet;

/// Bound on the ClientHello body (the handshake message after its 4-byte header). Real hellos
/// are a few hundred bytes, up to about 2 KiB with post-quantum key shares; 16 KiB leaves
/// room for padding and large session tickets while keeping one connection's buffer small.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Bound on the buffer [`parse`] looks at. A hello may be cut into many tiny records, each
/// with its own 5-byte header (clients that try to slip past name-based filters do exactly
/// that), so the buffer can be larger than the hello itself. A hello whose framing needs more
/// than this is [`HelloError::TooLarge`], so the proxy never needs a bigger buffer.
pub const MAX_BUFFER_BYTES: usize = 2 * MAX_HELLO_BYTES;

/// Largest record length accepted: 2^14 plaintext plus the 256 bytes RFC 5246 §6.2.3 allows
/// for expansion. A first record cannot be encrypted, but some stacks use the larger limit.
const MAX_RECORD_PAYLOAD: usize = 16384 + 256;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_ALERT: u8 = 21;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const MAX_SESSION_ID_LEN: usize = 32;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const EXTENSION_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the proxy needs from a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The host_name from the server_name extension (type 0), lowercased, if present. It is
    /// printable ASCII; a trailing dot is kept (the rule set strips it when matching).
    pub server_name: Option<String>,
    /// True when the hello carries the Encrypted Client Hello extension (type 0xfe0d): the
    /// real name is hidden, and `server_name` is only the ECH provider's public name.
    pub has_ech: bool,
    /// ALPN protocol names offered (extension 16), e.g. "h2", "http/1.1", in the client's
    /// order. Names that are not UTF-8 are kept with replacement characters, so they match
    /// no rule but still count.
    pub alpn: Vec<String>,
}

/// Why [`parse`] gave no hello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The bytes so far are a valid prefix; read more. `at_least` = total buffer length
    /// needed before the hello can be complete (an error may be decided sooner), when known.
    #[error("the ClientHello is not complete yet")]
    Incomplete { at_least: Option<usize> },
    /// The first record is not a TLS handshake record (e.g. plain HTTP sent to port 443).
    /// A connection that opens with any other TLS record type (application data, an alert)
    /// is also reported here: it did not start a TLS handshake, whatever it is.
    #[error("not a TLS handshake")]
    NotTls,
    /// It is TLS but malformed; the text says what.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    /// The hello is larger than [`MAX_HELLO_BYTES`], or its records need a buffer larger than
    /// [`MAX_BUFFER_BYTES`].
    #[error(
        "TLS ClientHello too large (over {MAX_HELLO_BYTES} bytes, or over {MAX_BUFFER_BYTES} bytes of records)"
    )]
    TooLarge,
}

impl HelloError {
    /// The alert to send the client before closing, if one fits: a client that is not
    /// speaking TLS would not understand an alert, and an incomplete hello is no failure yet.
    pub fn alert(&self) -> Option<AlertDescription> {
        match self {
            HelloError::Incomplete { .. } | HelloError::NotTls => None,
            HelloError::Malformed(_) => Some(AlertDescription::DecodeError),
            // Not undecodable, just more than the card holds: a refusal, not a decode error.
            HelloError::TooLarge => Some(AlertDescription::HandshakeFailure),
        }
    }
}

/// The TLS alerts the proxy sends when it refuses a hello (RFC 8446 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AlertDescription {
    /// The rules refuse this name.
    AccessDenied = 49,
    /// The hello names no server, and the rules need a name.
    UnrecognizedName = 112,
    /// Any other refusal.
    HandshakeFailure = 40,
    /// The hello could not be read.
    DecodeError = 50,
}

/// The 7 bytes of a fatal TLS alert record (content type 21, version 0x0303, length 2,
/// level 2=fatal, description). Sent in the clear: before the handshake there are no keys,
/// and every TLS version accepts a plaintext alert in reply to its ClientHello.
pub fn fatal_alert(description: AlertDescription) -> [u8; 7] {
    const FATAL: u8 = 2;
    [CONTENT_TYPE_ALERT, 3, 3, 0, 2, FATAL, description as u8]
}

/// Reads the ClientHello at the start of `buf`, the bytes received so far from the client.
///
/// Never panics. Bytes after the hello (the rest of its last record, early data) are not
/// looked at. Only the first [`MAX_BUFFER_BYTES`] of `buf` are.
pub fn parse(buf: &[u8]) -> Result<ClientHello, HelloError> {
    let buf = buf.get(..MAX_BUFFER_BYTES).unwrap_or(buf);
    let message = reassemble(buf)?;
    // `reassemble` checked the 4-byte header and returned exactly the declared length.
    let body = message.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
    parse_hello(body)
}

/// Joins the handshake records at the start of `buf` until they hold the whole ClientHello
/// message (header included), and returns exactly that message.
///
/// Reassembly is needed because TLS lets a handshake message span records (RFC 8446 §5.1):
/// large hellos do, and a client evading a name filter can cut its hello before the name.
/// Judging only the first record would let that client through undecided. Each record may
/// also arrive split across reads, so every check is made as soon as its bytes are present,
/// and `Incomplete` says how far the buffer must grow.
///
/// The buffer limit is checked at fixed points of the walk (before each record header, after
/// it, after the handshake header) from bytes already read, so a `TooLarge` found on a prefix
/// is also what the longer buffer gives: later bytes cannot turn it into another error.
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, HelloError> {
    use HelloError::{Incomplete, Malformed, NotTls};

    let mut records = Reader::new(buf);
    // Borrowed from `buf` while the hello sits in one record (the usual case), owned once a
    // second fragment has to be appended.
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    // Lower bound on the message length: its header until that is read, then the real length.
    let mut needed = HANDSHAKE_HEADER_LEN;
    loop {
        let record_start = records.position();
        let first = record_start == 0;
        let header_incomplete = Incomplete {
            at_least: Some(within_buffer(
                record_start + RECORD_HEADER_LEN + needed.saturating_sub(message.len()),
            )?),
        };
        // The header is judged byte by byte, so plain HTTP is refused on its first byte.
        let content_type = records.u8().or(Err(header_incomplete.clone()))?;
        if content_type != CONTENT_TYPE_HANDSHAKE {
            // Only handshake records may come before the hello is complete: anything else
            // in between would be skipped by us but acted on by the server.
            return Err(if first {
                NotTls
            } else {
                Malformed("non-handshake record before the ClientHello is complete")
            });
        }
        let major = records.u8().or(Err(header_incomplete.clone()))?;
        if major != 3 {
            return Err(if first {
                NotTls
            } else {
                Malformed("record version is not TLS")
            });
        }
        let minor = records.u8().or(Err(header_incomplete.clone()))?;
        if !(1..=4).contains(&minor) {
            return Err(Malformed("record version is not TLS 1.0 to 1.3"));
        }
        let length = usize::from(records.u16().or(Err(header_incomplete))?);
        if length > MAX_RECORD_PAYLOAD {
            return Err(Malformed("record longer than 2^14 + 256 bytes"));
        }
        if length == 0 {
            // RFC 8446 §5.1 and RFC 5246 §6.2.1 forbid empty handshake fragments.
            return Err(Malformed("empty handshake record"));
        }
        let before = message.len();
        within_buffer(buffer_needed(
            record_start,
            length,
            needed.saturating_sub(before),
        ))?;

        let fragment = records.take_up_to(length);
        if message.is_empty() {
            message = Cow::Borrowed(fragment);
        } else {
            message.to_mut().extend_from_slice(fragment);
        }
        needed = match message_length(&message)? {
            MessageLength::Complete(total) => {
                match &mut message {
                    Cow::Borrowed(bytes) => *bytes = bytes.get(..total).unwrap_or(bytes),
                    Cow::Owned(bytes) => bytes.truncate(total),
                }
                return Ok(message);
            }
            MessageLength::AtLeast(needed) => needed,
        };
        // Again, now that the handshake header may have told the real length.
        let at_least = within_buffer(buffer_needed(
            record_start,
            length,
            needed.saturating_sub(before),
        ))?;
        if fragment.len() < length {
            return Err(Incomplete {
                at_least: Some(at_least),
            });
        }
        // This record is whole but the message is not: it continues in the next record.
    }
}

/// How many bytes of `buf` the records carrying the ClientHello take, for a `buf` that
/// [`parse`] accepted; `None` if the hello is not complete in it. What follows is the
/// client's next record, which the proxy checks before passing the connection on.
pub fn hello_records_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    // The handshake message's first bytes (its header), gathered across records.
    let mut header = Vec::with_capacity(HANDSHAKE_HEADER_LEN);
    let mut carried = 0usize;
    loop {
        let record = buf.get(at..at + RECORD_HEADER_LEN)?;
        let length = usize::from(u16::from_be_bytes([record[3], record[4]]));
        let fragment = buf.get(at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + length)?;
        at += RECORD_HEADER_LEN + length;
        carried += length;
        let wanted = HANDSHAKE_HEADER_LEN - header.len();
        header.extend_from_slice(&fragment[..wanted.min(fragment.len())]);
        if let [_, a, b, c] = header[..] {
            let total = HANDSHAKE_HEADER_LEN
                + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if carried >= total {
                return Some(at);
            }
        }
    }
}

/// Whether `bytes` can start a TLS record (RFC 8446 §5.1) of one of `types`: the content
/// type, then the legacy version 3.0 to 3.4. Fewer than three bytes are judged on what is
/// there. After a hello the client's next record is change_cipher_spec (20), alert (21),
/// handshake (22) or application_data (23); a server's first is handshake or alert.
pub fn starts_record(bytes: &[u8], types: &[u8]) -> bool {
    bytes.first().is_none_or(|t| types.contains(t))
        && bytes.get(1).is_none_or(|&major| major == 3)
        && bytes.get(2).is_none_or(|&minor| minor <= 4)
}

/// Content types a client may send after its hello.
pub const CLIENT_RECORD_TYPES: [u8; 4] = [20, 21, 22, 23];
/// Content types a server may open with.
pub const SERVER_FIRST_RECORD_TYPES: [u8; 2] = [CONTENT_TYPE_ALERT, CONTENT_TYPE_HANDSHAKE];

/// Lower bound on the buffer length that completes the message, seen from a record starting
/// at `record_start` with `length` bytes when the message still missed `missing` bytes before
/// it: the message bytes this record holds, and if it cannot hold them all, at least one more
/// record header.
fn buffer_needed(record_start: usize, length: usize, missing: usize) -> usize {
    let another_record = if missing > length {
        RECORD_HEADER_LEN
    } else {
        0
    };
    record_start + RECORD_HEADER_LEN + missing + another_record
}

/// `at_least`, or `TooLarge` if it is more than the buffer the proxy holds.
fn within_buffer(at_least: usize) -> Result<usize, HelloError> {
    if at_least > MAX_BUFFER_BYTES {
        Err(HelloError::TooLarge)
    } else {
        Ok(at_least)
    }
}

/// How long the handshake message is, judged from the bytes gathered so far.
#[derive(Debug)]
enum MessageLength {
    /// The whole message (header included) is this long and present.
    Complete(usize),
    /// The message needs at least this many bytes (header included); fewer are present.
    AtLeast(usize),
}

/// Checks the handshake header as soon as its bytes are present: the type on the first byte,
/// the size limit on the fourth, so an oversized hello is refused before it is read.
fn message_length(message: &[u8]) -> Result<MessageLength, HelloError> {
    let mut header = Reader::new(message);
    let Ok(message_type) = header.u8() else {
        return Ok(MessageLength::AtLeast(HANDSHAKE_HEADER_LEN));
    };
    if message_type != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::Malformed("handshake is not a ClientHello"));
    }
    let Ok(length) = header.u24() else {
        return Ok(MessageLength::AtLeast(HANDSHAKE_HEADER_LEN));
    };
    if length > MAX_HELLO_BYTES {
        return Err(HelloError::TooLarge);
    }
    let total = HANDSHAKE_HEADER_LEN + length;
    Ok(if message.len() >= total {
        MessageLength::Complete(total)
    } else {
        MessageLength::AtLeast(total)
    })
}

/// Walks the ClientHello body (exactly its declared length).
fn parse_hello(body: &[u8]) -> Result<ClientHello, HelloError> {
    use HelloError::Malformed;

    let mut hello = Reader::new(body);
    let [major, _minor] = hello
        .array()
        .or(Err(Malformed("hello ends inside legacy_version")))?;
    if major != 3 {
        return Err(Malformed("legacy_version is not TLS"));
    }
    hello
        .bytes(32)
        .or(Err(Malformed("hello ends inside random")))?;
    let session_id = hello
        .vector_u8()
        .or(Err(Malformed("session id runs past the hello")))?;
    if session_id.remaining() > MAX_SESSION_ID_LEN {
        return Err(Malformed("session id longer than 32 bytes"));
    }
    let cipher_suites = hello
        .vector_u16()
        .or(Err(Malformed("cipher suites run past the hello")))?;
    if cipher_suites.is_empty() || cipher_suites.remaining() % 2 != 0 {
        return Err(Malformed("cipher suite list is empty or of odd length"));
    }
    let compression_methods = hello
        .vector_u8()
        .or(Err(Malformed("compression methods run past the hello")))?;
    if compression_methods.is_empty() {
        return Err(Malformed("no compression methods"));
    }

    let mut result = ClientHello::default();
    if hello.is_empty() {
        // Extensions are optional (RFC 5246 §7.4.1.2): an old client may send none.
        return Ok(result);
    }
    let mut extensions = hello
        .vector_u16()
        .or(Err(Malformed("extensions length runs past the hello")))?;
    if !hello.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    // RFC 8446 §4.2 forbids two extensions of one type. Refusing them matters here: with two
    // server_name extensions the proxy could judge one name while the server uses the other.
    let mut seen = HashSet::new();
    while !extensions.is_empty() {
        let extension_type = extensions
            .u16()
            .or(Err(Malformed("extension header runs past the hello")))?;
        let data = extensions
            .vector_u16()
            .or(Err(Malformed("extension length runs past the hello")))?;
        if !seen.insert(extension_type) {
            return Err(Malformed("duplicate extension"));
        }
        match extension_type {
            EXTENSION_SERVER_NAME => result.server_name = parse_server_name(data)?,
            EXTENSION_ALPN => result.alpn = parse_alpn(data)?,
            EXTENSION_ENCRYPTED_CLIENT_HELLO => result.has_ech = true,
            _ => {}
        }
    }
    Ok(result)
}

/// Reads the server_name extension (RFC 6066 §3) and returns its host name, lowercased.
fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, HelloError> {
    use HelloError::Malformed;

    let mut list = data
        .vector_u16()
        .or(Err(Malformed("server name list runs past the extension")))?;
    if !data.is_empty() {
        return Err(Malformed("bytes after the server name list"));
    }
    if list.is_empty() {
        return Err(Malformed("empty server name list"));
    }
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list
            .u8()
            .or(Err(Malformed("server name entry runs past the list")))?;
        // Every name type defined or ever proposed is a 2-byte-length opaque name, so an
        // unknown type can be stepped over.
        let name = list
            .vector_u16()
            .or(Err(Malformed("server name runs past the list")))?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        // RFC 6066 allows one name per type; a second host name is the same confusion as a
        // second server_name extension.
        if host_name.is_some() {
            return Err(Malformed("more than one host name"));
        }
        host_name = Some(host_name_text(name.rest())?);
    }
    Ok(host_name)
}

/// The host name as the rules see it: lowercased, because DNS names are case-insensitive and
/// the rules compare text. Control characters and spaces are refused with the non-ASCII:
/// no DNS name has them, and they would only serve to confuse logs and matching.
fn host_name_text(name: &[u8]) -> Result<String, HelloError> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
        return Err(HelloError::Malformed("bad server name"));
    }
    Ok(name
        .iter()
        .map(|&byte| char::from(byte.to_ascii_lowercase()))
        .collect())
}

/// Reads the ALPN extension (RFC 7301 §3.1): a non-empty list of non-empty names.
fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<String>, HelloError> {
    use HelloError::Malformed;

    let mut list = data
        .vector_u16()
        .or(Err(Malformed("ALPN list runs past the extension")))?;
    if !data.is_empty() {
        return Err(Malformed("bytes after the ALPN list"));
    }
    if list.is_empty() {
        return Err(Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list
            .vector_u8()
            .or(Err(Malformed("ALPN name runs past the list")))?;
        if name.is_empty() {
            return Err(Malformed("empty ALPN name"));
        }
        protocols.push(String::from_utf8_lossy(name.rest()).into_owned());
    }
    Ok(protocols)
}

/// The input ran out before the value being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Truncated;

/// A cursor over a byte slice. Every read checks the length once and either returns the value
/// and advances, or returns `Truncated` and stays put; nothing else in this file indexes.
#[derive(Debug, Clone)]
struct Reader<'a> {
    rest: &'a [u8],
    /// Length of the whole input, so that `position` can be derived from `rest`.
    total: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            total: bytes.len(),
        }
    }

    /// Bytes consumed so far.
    fn position(&self) -> usize {
        self.total - self.rest.len()
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not read yet, without consuming them.
    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, Truncated> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u24(&mut self) -> Result<usize, Truncated> {
        let [high, middle, low] = self.array()?;
        Ok(usize::from(high) << 16 | usize::from(middle) << 8 | usize::from(low))
    }

    fn bytes(&mut self, count: usize) -> Result<&'a [u8], Truncated> {
        let (head, tail) = self.rest.split_at_checked(count).ok_or(Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    /// Up to `count` bytes: all of them if present, else what there is.
    fn take_up_to(&mut self, count: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(count.min(self.rest.len()));
        self.rest = tail;
        head
    }

    /// A vector with a 1-byte length prefix, as a reader of its own.
    fn vector_u8(&mut self) -> Result<Reader<'a>, Truncated> {
        let mut peek = self.clone();
        let length = usize::from(peek.u8()?);
        let contents = peek.bytes(length)?;
        *self = peek;
        Ok(Reader::new(contents))
    }

    /// A vector with a 2-byte length prefix, as a reader of its own.
    fn vector_u16(&mut self) -> Result<Reader<'a>, Truncated> {
        let mut peek = self.clone();
        let length = usize::from(peek.u16()?);
        let contents = peek.bytes(length)?;
        *self = peek;
        Ok(Reader::new(contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::IpAddr;
    use std::sync::Arc;

    use proptest::prelude::*;
    use rustls::pki_types::ServerName;

    /// The bytes rustls sends first, as a client of `server_name` offering `alpn`.
    fn rustls_hello(server_name: ServerName<'static>, alpn: &[&str]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|name| name.as_bytes().to_vec()).collect();
        let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut bytes = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    fn real_hello() -> Vec<u8> {
        rustls_hello("Www.Example.COM".try_into().unwrap(), &["h2", "http/1.1"])
    }

    fn expected_real() -> ClientHello {
        ClientHello {
            server_name: Some("www.example.com".to_owned()),
            has_ech: false,
            alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
        }
    }

    /// A ClientHello taken apart, to be edited and put back together with the lengths fixed.
    #[derive(Debug, Clone)]
    struct Parts {
        legacy_version: [u8; 2],
        random: Vec<u8>,
        session_id: Vec<u8>,
        cipher_suites: Vec<u8>,
        compression_methods: Vec<u8>,
        /// `None`: no extensions block at all.
        extensions: Option<Vec<(u16, Vec<u8>)>>,
    }

    impl Parts {
        /// Splits a one-record hello as produced by rustls (test code: trusts its input).
        fn of(record: &[u8]) -> Parts {
            assert_eq!(record[0], 22);
            let message = &record[RECORD_HEADER_LEN..];
            assert_eq!(message[0], 1);
            let body = &message[HANDSHAKE_HEADER_LEN..];
            let mut at = 0;
            let mut take = |count: usize| {
                let slice = body[at..at + count].to_vec();
                at += count;
                slice
            };
            let legacy_version = take(2).try_into().unwrap();
            let random = take(32);
            let session_id_len = take(1)[0] as usize;
            let session_id = take(session_id_len);
            let suites = take(2);
            let cipher_suites = take(u16::from_be_bytes([suites[0], suites[1]]) as usize);
            let compression_len = take(1)[0] as usize;
            let compression_methods = take(compression_len);
            let block = take(2);
            let block = take(u16::from_be_bytes([block[0], block[1]]) as usize);
            let mut extensions = Vec::new();
            let mut i = 0;
            while i < block.len() {
                let kind = u16::from_be_bytes([block[i], block[i + 1]]);
                let len = u16::from_be_bytes([block[i + 2], block[i + 3]]) as usize;
                extensions.push((kind, block[i + 4..i + 4 + len].to_vec()));
                i += 4 + len;
            }
            Parts {
                legacy_version,
                random,
                session_id,
                cipher_suites,
                compression_methods,
                extensions: Some(extensions),
            }
        }

        fn extensions_block(&self) -> Option<Vec<u8>> {
            self.extensions.as_ref().map(|list| {
                let mut block = Vec::new();
                for (kind, data) in list {
                    block.extend_from_slice(&kind.to_be_bytes());
                    block.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    block.extend_from_slice(data);
                }
                block
            })
        }

        /// The hello body, with `extensions_raw` (the bytes after the 2-byte block length)
        /// in place of the extension list when given, so a test can write bad lengths.
        fn body_with(&self, extensions_raw: Option<(u16, &[u8])>) -> Vec<u8> {
            let mut body = self.legacy_version.to_vec();
            body.extend_from_slice(&self.random);
            body.push(self.session_id.len() as u8);
            body.extend_from_slice(&self.session_id);
            body.extend_from_slice(&(self.cipher_suites.len() as u16).to_be_bytes());
            body.extend_from_slice(&self.cipher_suites);
            body.push(self.compression_methods.len() as u8);
            body.extend_from_slice(&self.compression_methods);
            match extensions_raw {
                Some((declared, raw)) => {
                    body.extend_from_slice(&declared.to_be_bytes());
                    body.extend_from_slice(raw);
                }
                None => {
                    if let Some(block) = self.extensions_block() {
                        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
                        body.extend_from_slice(&block);
                    }
                }
            }
            body
        }

        fn record(&self) -> Vec<u8> {
            record_of(&message_of(&self.body_with(None)))
        }

        fn extensions_mut(&mut self) -> &mut Vec<(u16, Vec<u8>)> {
            self.extensions.as_mut().unwrap()
        }
    }

    /// A handshake message (type ClientHello) around `body`.
    fn message_of(body: &[u8]) -> Vec<u8> {
        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn the_hello_records_end_where_the_next_record_starts() {
        let hello = real_hello();
        let message = message_in(&hello).to_vec();
        for sizes in [&[message.len()][..], &[2, 10, 1][..], &[1, 1, 1, 1, 1][..]] {
            let mut bytes = framed(&message, sizes);
            let end = bytes.len();
            bytes.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
            assert!(parse(&bytes).is_ok());
            assert_eq!(hello_records_len(&bytes), Some(end), "{sizes:?}");
            assert!(starts_record(&bytes[end..], &CLIENT_RECORD_TYPES));
            assert_eq!(hello_records_len(&bytes[..end - 1]), None);
        }
    }

    #[test]
    fn only_tls_records_start_like_tls() {
        for ok in [&b"\x17\x03\x03\x00\x10"[..], b"\x14\x03\x03", b"\x15", b""] {
            assert!(starts_record(ok, &CLIENT_RECORD_TYPES), "{ok:?}");
        }
        for bad in [
            &b"HELO x\r\n"[..],
            b"\x18\x03\x03",
            b"\x17\x04\x03",
            b"\x17\x03\x05",
            b"220 smtp",
        ] {
            assert!(!starts_record(bad, &CLIENT_RECORD_TYPES), "{bad:?}");
        }
        assert!(starts_record(b"\x16\x03\x03", &SERVER_FIRST_RECORD_TYPES));
        assert!(!starts_record(b"\x17\x03\x03", &SERVER_FIRST_RECORD_TYPES));
        assert!(!starts_record(
            b"220 mail.example ESMTP",
            &SERVER_FIRST_RECORD_TYPES
        ));
    }

    /// One handshake record around `message`.
    fn record_of(message: &[u8]) -> Vec<u8> {
        framed(message, &[message.len()])
    }

    /// `message` cut into handshake records of the given fragment sizes (the last takes the
    /// rest).
    fn framed(message: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = message;
        for (i, &size) in sizes.iter().enumerate() {
            let size = if i + 1 == sizes.len() {
                rest.len()
            } else {
                size.min(rest.len())
            };
            let (fragment, tail) = rest.split_at(size);
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
            rest = tail;
        }
        out
    }

    /// The hello's handshake message, out of its single rustls record.
    fn message_in(record: &[u8]) -> &[u8] {
        &record[RECORD_HEADER_LEN..]
    }

    fn server_name_extension(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    /// The real hello with its server_name extension's data replaced.
    fn with_server_name_data(data: Vec<u8>) -> Vec<u8> {
        let mut parts = Parts::of(&real_hello());
        for (kind, existing) in parts.extensions_mut() {
            if *kind == EXTENSION_SERVER_NAME {
                *existing = data.clone();
            }
        }
        parts.record()
    }

    /// Every strict prefix must be `Incomplete`, with an `at_least` that is a true lower bound:
    /// more than the prefix, no more than where the hello completes.
    fn assert_prefixes_incomplete(bytes: &[u8]) {
        for len in 0..bytes.len() {
            match parse(&bytes[..len]) {
                Err(HelloError::Incomplete {
                    at_least: Some(needed),
                }) => assert!(
                    len < needed && needed <= bytes.len(),
                    "prefix {len}: at_least {needed} of {}",
                    bytes.len()
                ),
                other => panic!("prefix {len} of {}: {other:?}", bytes.len()),
            }
        }
    }

    #[test]
    fn real_rustls_hello_gives_lowercased_name_and_alpn() {
        let bytes = real_hello();
        assert_eq!(parse(&bytes), Ok(expected_real()));
        // What the tests below rely on: one record, one message, nothing after it.
        assert_eq!(message_in(&bytes).len(), bytes.len() - RECORD_HEADER_LEN);
        assert_eq!(Parts::of(&bytes).record(), bytes);
    }

    #[test]
    fn every_prefix_of_a_real_hello_is_incomplete() {
        let bytes = real_hello();
        assert_prefixes_incomplete(&bytes);
        assert_eq!(parse(&bytes), Ok(expected_real()));
    }

    #[test]
    fn hello_fragmented_across_records_is_reassembled() {
        let bytes = real_hello();
        let message = message_in(&bytes);
        let third = message.len() / 3;
        let fragmented = framed(message, &[third, third, 0]);
        assert_eq!(parse(&fragmented), Ok(expected_real()));
        assert_prefixes_incomplete(&fragmented);

        // Cut inside the handshake header and right before the name, as evasion tools do.
        let name_at = message
            .windows(3)
            .position(|window| window == b"Www")
            .unwrap();
        for sizes in [&[1, 2, 0][..], &[3, name_at - 3, 2, 0]] {
            let fragmented = framed(message, sizes);
            assert_eq!(parse(&fragmented), Ok(expected_real()), "{sizes:?}");
            assert_prefixes_incomplete(&fragmented);
        }
    }

    #[test]
    fn hello_in_one_byte_records_is_reassembled() {
        let bytes = real_hello();
        let message = message_in(&bytes);
        let fragmented = framed(message, &vec![1; message.len()]);
        assert!(fragmented.len() <= MAX_BUFFER_BYTES);
        assert_eq!(parse(&fragmented), Ok(expected_real()));
    }

    #[test]
    fn framing_that_needs_more_than_the_buffer_is_too_large() {
        // An 8 KiB hello is allowed, but not cut into 1-byte records: that needs 48 KiB.
        let mut parts = Parts::of(&real_hello());
        parts.extensions_mut().push((21, vec![0; 8 * 1024]));
        let message = message_of(&parts.body_with(None));
        assert!(parse(&record_of(&message)).is_ok());
        let fragmented = framed(&message, &vec![1; message.len()]);
        assert!(fragmented.len() > MAX_BUFFER_BYTES);
        assert_eq!(parse(&fragmented), Err(HelloError::TooLarge));
        // Decided before the buffer is full, once the known length cannot fit, and never
        // changed by a longer prefix. Early prefixes are merely incomplete.
        let refused = |len: usize| parse(&fragmented[..len]) == Err(HelloError::TooLarge);
        let (mut accepted, mut first_refused) = (0, MAX_BUFFER_BYTES);
        assert!(!refused(accepted) && refused(first_refused));
        while first_refused - accepted > 1 {
            let middle = (accepted + first_refused) / 2;
            if refused(middle) {
                first_refused = middle;
            } else {
                accepted = middle;
            }
        }
        assert!(first_refused < MAX_BUFFER_BYTES - 1000, "{first_refused}");
        for len in (first_refused..fragmented.len()).step_by(97) {
            assert_eq!(
                parse(&fragmented[..len]),
                Err(HelloError::TooLarge),
                "{len}"
            );
        }
        for len in (0..first_refused).step_by(97) {
            assert!(matches!(
                parse(&fragmented[..len]),
                Err(HelloError::Incomplete { at_least: Some(needed) }) if needed <= MAX_BUFFER_BYTES
            ));
        }
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        let mut bytes = real_hello();
        bytes.extend_from_slice(&[23, 3, 3, 0, 3, 1, 2, 3]);
        assert_eq!(parse(&bytes), Ok(expected_real()));
        // The record may even declare more than the hello and not have arrived in full.
        let message = message_in(&real_hello()).to_vec();
        let mut longer = vec![22, 3, 1];
        longer.extend_from_slice(&((message.len() + 100) as u16).to_be_bytes());
        longer.extend_from_slice(&message);
        assert_eq!(parse(&longer), Ok(expected_real()));
    }

    #[test]
    fn ech_extension_is_reported() {
        let mut parts = Parts::of(&real_hello());
        let extensions = parts.extensions_mut();
        let middle = extensions.len() / 2;
        extensions.insert(middle, (EXTENSION_ENCRYPTED_CLIENT_HELLO, vec![0, 1, 2, 3]));
        let bytes = parts.record();
        assert_eq!(
            parse(&bytes),
            Ok(ClientHello {
                has_ech: true,
                ..expected_real()
            })
        );
    }

    #[test]
    fn ip_address_server_name_sends_no_sni() {
        let address = IpAddr::from([192, 0, 2, 7]);
        let bytes = rustls_hello(ServerName::from(address), &[]);
        assert_eq!(parse(&bytes), Ok(ClientHello::default()));
    }

    #[test]
    fn hello_without_extensions_is_valid() {
        let mut parts = Parts::of(&real_hello());
        parts.extensions = None;
        assert_eq!(parse(&parts.record()), Ok(ClientHello::default()));
        // An empty block is as good as none.
        parts.extensions = Some(Vec::new());
        assert_eq!(parse(&parts.record()), Ok(ClientHello::default()));
    }

    #[test]
    fn plain_http_is_not_tls_from_its_first_byte() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(parse(b"G"), Err(HelloError::NotTls));
        assert_eq!(parse(&[22, 2]), Err(HelloError::NotTls));
        assert_eq!(
            parse(&[]),
            Err(HelloError::Incomplete {
                at_least: Some(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN)
            })
        );
    }

    #[test]
    fn other_record_types_first_are_not_tls() {
        // Application data or an alert before any handshake: not a TLS connection opening.
        assert_eq!(parse(&[23, 3, 3, 0, 2, 0, 0]), Err(HelloError::NotTls));
        assert_eq!(parse(&[21, 3, 3, 0, 2, 2, 40]), Err(HelloError::NotTls));
    }

    #[test]
    fn other_records_between_fragments_are_malformed() {
        let bytes = real_hello();
        let message = message_in(&bytes);
        let mut spliced = framed(&message[..10], &[10]);
        spliced.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        spliced.extend_from_slice(&framed(&message[10..], &[0]));
        assert_eq!(
            parse(&spliced),
            Err(HelloError::Malformed(
                "non-handshake record before the ClientHello is complete"
            ))
        );
        let mut spliced = framed(&message[..10], &[10]);
        spliced.extend_from_slice(&[22, 4, 1]);
        assert_eq!(
            parse(&spliced),
            Err(HelloError::Malformed("record version is not TLS"))
        );
    }

    #[test]
    fn record_header_limits() {
        assert_eq!(
            parse(&[22, 3, 0, 0, 10]),
            Err(HelloError::Malformed(
                "record version is not TLS 1.0 to 1.3"
            ))
        );
        assert_eq!(
            parse(&[22, 3, 5]),
            Err(HelloError::Malformed(
                "record version is not TLS 1.0 to 1.3"
            ))
        );
        let too_long = (MAX_RECORD_PAYLOAD + 1) as u16;
        let [high, low] = too_long.to_be_bytes();
        assert_eq!(
            parse(&[22, 3, 3, high, low]),
            Err(HelloError::Malformed("record longer than 2^14 + 256 bytes"))
        );
        assert_eq!(
            parse(&[22, 3, 1, 0, 0]),
            Err(HelloError::Malformed("empty handshake record"))
        );
        // Every accepted record version.
        let message = message_in(&real_hello()).to_vec();
        for minor in 1..=4 {
            let mut bytes = record_of(&message);
            bytes[2] = minor;
            assert_eq!(parse(&bytes), Ok(expected_real()));
        }
    }

    #[test]
    fn handshake_other_than_client_hello_is_malformed() {
        let mut bytes = real_hello();
        bytes[RECORD_HEADER_LEN] = 2;
        let expected = Err(HelloError::Malformed("handshake is not a ClientHello"));
        assert_eq!(parse(&bytes), expected);
        // Decided on the type byte alone.
        assert_eq!(parse(&bytes[..RECORD_HEADER_LEN + 1]), expected);
    }

    #[test]
    fn oversized_hello_is_refused_from_its_header() {
        let [_, a, b, c] = ((MAX_HELLO_BYTES + 1) as u32).to_be_bytes();
        assert_eq!(
            parse(&[22, 3, 1, 0x40, 0, 1, a, b, c]),
            Err(HelloError::TooLarge)
        );
        // Also when the length arrives split across records.
        let mut split = framed(&[1, a], &[2]);
        split.extend_from_slice(&framed(&[b, c], &[2]));
        assert_eq!(parse(&split), Err(HelloError::TooLarge));
        // Exactly the cap is still read (and found incomplete).
        let [_, a, b, c] = (MAX_HELLO_BYTES as u32).to_be_bytes();
        assert!(matches!(
            parse(&[22, 3, 1, 0x40, 0, 1, a, b, c]),
            Err(HelloError::Incomplete { .. })
        ));
    }

    #[test]
    fn hello_at_the_cap_is_read() {
        let mut parts = Parts::of(&real_hello());
        let used = parts.body_with(None).len() + 4;
        parts
            .extensions_mut()
            .push((21, vec![0; MAX_HELLO_BYTES - used]));
        let body = parts.body_with(None);
        assert_eq!(body.len(), MAX_HELLO_BYTES);
        let message = message_of(&body);
        let bytes = framed(&message, &[16384, 0]);
        assert_eq!(parse(&bytes), Ok(expected_real()));

        parts.extensions_mut().last_mut().unwrap().1.push(0);
        let message = message_of(&parts.body_with(None));
        assert_eq!(
            parse(&framed(&message, &[16384, 0])),
            Err(HelloError::TooLarge)
        );
    }

    #[test]
    fn extension_length_past_the_end_is_malformed() {
        let parts = Parts::of(&real_hello());
        let mut block = parts.extensions_block().unwrap();
        // The last extension claims one byte more than there is.
        let (last_kind, last_data) = parts.extensions.as_ref().unwrap().last().unwrap();
        let length_at = block.len() - last_data.len() - 2;
        assert_eq!(&block[length_at - 2..length_at], &last_kind.to_be_bytes());
        block[length_at..length_at + 2]
            .copy_from_slice(&(last_data.len() as u16 + 1).to_be_bytes());
        let body = parts.body_with(Some((block.len() as u16, &block)));
        assert_eq!(
            parse(&record_of(&message_of(&body))),
            Err(HelloError::Malformed(
                "extension length runs past the hello"
            ))
        );
    }

    #[test]
    fn extensions_block_must_fit_exactly() {
        let parts = Parts::of(&real_hello());
        let block = parts.extensions_block().unwrap();
        let longer = parts.body_with(Some((block.len() as u16 + 1, &block)));
        assert_eq!(
            parse(&record_of(&message_of(&longer))),
            Err(HelloError::Malformed(
                "extensions length runs past the hello"
            ))
        );
        let shorter = parts.body_with(Some((block.len() as u16 - 1, &block)));
        assert!(matches!(
            parse(&record_of(&message_of(&shorter))),
            Err(HelloError::Malformed(_))
        ));
        let mut one_byte = parts.body_with(None);
        one_byte.truncate(one_byte.len() - block.len() - 1);
        assert_eq!(
            parse(&record_of(&message_of(&one_byte))),
            Err(HelloError::Malformed(
                "extensions length runs past the hello"
            ))
        );
    }

    #[test]
    fn duplicate_extensions_are_malformed() {
        let mut parts = Parts::of(&real_hello());
        // A second SNI naming another host, placed last, where a lenient reader keeps it.
        parts
            .extensions_mut()
            .push((0, server_name_extension(&[(0, b"evil.example")])));
        assert_eq!(
            parse(&parts.record()),
            Err(HelloError::Malformed("duplicate extension"))
        );

        let mut parts = Parts::of(&real_hello());
        parts.extensions_mut().push((0x1234, vec![]));
        parts.extensions_mut().push((0x1234, vec![1]));
        assert_eq!(
            parse(&parts.record()),
            Err(HelloError::Malformed("duplicate extension"))
        );
    }

    #[test]
    fn server_name_contents() {
        let name =
            |names: &[(u8, &[u8])]| parse(&with_server_name_data(server_name_extension(names)));
        let bad = Err(HelloError::Malformed("bad server name"));
        assert_eq!(name(&[(0, b"")]), bad);
        assert_eq!(name(&[(0, "bücher.example".as_bytes())]), bad);
        assert_eq!(name(&[(0, b"a\0.example")]), bad);
        assert_eq!(name(&[(0, b"a b.example")]), bad);
        assert_eq!(
            name(&[(0, b"a.example"), (0, b"b.example")]),
            Err(HelloError::Malformed("more than one host name"))
        );
        // Unknown name types are stepped over; the host name is found after them.
        assert_eq!(
            name(&[(7, b"whatever"), (0, b"API.Example.")])
                .unwrap()
                .server_name,
            Some("api.example.".to_owned())
        );
        assert_eq!(name(&[(7, b"whatever")]).unwrap().server_name, None);
        assert_eq!(
            parse(&with_server_name_data(vec![0, 0])),
            Err(HelloError::Malformed("empty server name list"))
        );
        assert_eq!(
            parse(&with_server_name_data(vec![0, 9, 0, 0, 1, b'a'])),
            Err(HelloError::Malformed(
                "server name list runs past the extension"
            ))
        );
        assert_eq!(
            parse(&with_server_name_data(vec![0, 4, 0, 0, 9, b'a'])),
            Err(HelloError::Malformed("server name runs past the list"))
        );
        assert_eq!(
            parse(&with_server_name_data(vec![0, 4, 0, 0, 1, b'a', 0])),
            Err(HelloError::Malformed("bytes after the server name list"))
        );
    }

    #[test]
    fn alpn_contents() {
        let with_alpn = |data: Vec<u8>| {
            let mut parts = Parts::of(&real_hello());
            for (kind, existing) in parts.extensions_mut() {
                if *kind == EXTENSION_ALPN {
                    *existing = data.clone();
                }
            }
            parse(&parts.record())
        };
        assert_eq!(
            with_alpn(vec![0, 3, 2, b'h', b'2']).unwrap().alpn,
            vec!["h2"]
        );
        assert_eq!(
            with_alpn(vec![0, 4, 1, b'a', 1, 0xff]).unwrap().alpn,
            vec!["a", "\u{fffd}"]
        );
        assert_eq!(
            with_alpn(vec![0, 0]),
            Err(HelloError::Malformed("empty ALPN list"))
        );
        assert_eq!(
            with_alpn(vec![0, 1, 0]),
            Err(HelloError::Malformed("empty ALPN name"))
        );
        assert_eq!(
            with_alpn(vec![0, 2, 5, b'h']),
            Err(HelloError::Malformed("ALPN name runs past the list"))
        );
    }

    #[test]
    fn hello_body_checks() {
        let parts = Parts::of(&real_hello());
        let parse_parts = |parts: &Parts| parse(&parts.record());

        let mut long_session = parts.clone();
        long_session.session_id = vec![0; 33];
        assert_eq!(
            parse_parts(&long_session),
            Err(HelloError::Malformed("session id longer than 32 bytes"))
        );
        let mut no_suites = parts.clone();
        no_suites.cipher_suites.clear();
        let suites_error = Err(HelloError::Malformed(
            "cipher suite list is empty or of odd length",
        ));
        assert_eq!(parse_parts(&no_suites), suites_error);
        let mut odd_suites = parts.clone();
        odd_suites.cipher_suites.push(0);
        assert_eq!(parse_parts(&odd_suites), suites_error);
        let mut no_compression = parts.clone();
        no_compression.compression_methods.clear();
        assert_eq!(
            parse_parts(&no_compression),
            Err(HelloError::Malformed("no compression methods"))
        );
        let mut not_tls = parts.clone();
        not_tls.legacy_version = [2, 0];
        assert_eq!(
            parse_parts(&not_tls),
            Err(HelloError::Malformed("legacy_version is not TLS"))
        );
        // Truncated bodies, declared as such by the handshake header.
        let body = parts.body_with(None);
        for (len, what) in [
            (0, "hello ends inside legacy_version"),
            (10, "hello ends inside random"),
            (34, "session id runs past the hello"),
        ] {
            assert_eq!(
                parse(&record_of(&message_of(&body[..len]))),
                Err(HelloError::Malformed(what)),
                "{len}"
            );
        }
    }

    #[test]
    fn fatal_alert_bytes() {
        assert_eq!(
            fatal_alert(AlertDescription::AccessDenied),
            [21, 3, 3, 0, 2, 2, 49]
        );
        assert_eq!(
            fatal_alert(AlertDescription::UnrecognizedName),
            [21, 3, 3, 0, 2, 2, 112]
        );
        assert_eq!(
            HelloError::Malformed("x").alert(),
            Some(AlertDescription::DecodeError)
        );
        assert_eq!(HelloError::NotTls.alert(), None);
    }

    /// The proxy stops reading once the answer is not `Incomplete`, so that answer must be
    /// the one the whole input would give; and `at_least` must never overshoot.
    fn assert_answers_are_final(bytes: &[u8]) {
        let full = parse(bytes);
        for len in 0..bytes.len() {
            match parse(&bytes[..len]) {
                Err(HelloError::Incomplete { at_least }) => {
                    if let Some(needed) = at_least {
                        assert!(needed > len, "prefix {len}: at_least {needed}");
                    }
                    if full.is_ok() {
                        assert!(at_least.is_none_or(|needed| needed <= bytes.len()));
                    }
                }
                decided => assert_eq!(decided, full, "prefix {len} decided early"),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_records_never_panic(
            version in 0u8..6,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            // A plausible record and handshake header, so the hello walk itself is reached.
            let mut bytes = vec![22, 3, version];
            bytes.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
            bytes.extend_from_slice(&message_of(&body));
            assert_answers_are_final(&bytes);
        }

        #[test]
        fn mutated_real_hellos_never_panic_and_answers_are_final(
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            fragments in proptest::collection::vec(1usize..64, 0..4),
        ) {
            let record = real_hello();
            let mut bytes = framed(message_in(&record), &fragments.iter().copied().chain([0]).collect::<Vec<_>>());
            for (at, value) in &mutations {
                let at = at.index(bytes.len());
                bytes[at] = *value;
            }
            let _ = parse(&bytes[..cut.index(bytes.len() + 1)]);
            assert_answers_are_final(&bytes);
        }
    }
}
