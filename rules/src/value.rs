//! The small values a rule condition holds (addresses, ports, methods, paths, content types,
//! sizes, names), each with its parser and its printed form. Parsers report *where* in the
//! token a problem is, so the caret lands on it.

use std::fmt;
use std::net::IpAddr;

use crate::diagnostic::ErrorKind;

/// A problem in one value, `offset` characters into its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub kind: ErrorKind,
    pub offset: usize,
    pub message: String,
}

impl ValueError {
    pub(crate) fn at(kind: ErrorKind, offset: usize, message: impl Into<String>) -> Self {
        ValueError {
            kind,
            offset,
            message: message.into(),
        }
    }

    /// The same error, for a token that had `by` characters stripped from its front.
    pub(crate) fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }
}

/// Checks a rule or list name: `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub(crate) fn check_name(name: &str) -> Result<(), ValueError> {
    if name.is_empty() {
        return Err(ValueError::at(ErrorKind::BadName, 0, "empty name"));
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(ValueError::at(
                ErrorKind::BadName,
                i,
                format!("`{c}` cannot appear here in a name (use letters, digits, `_`, `.`, `-`)"),
            ));
        }
    }
    Ok(())
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let cidr = Cidr { addr, prefix };
        (prefix <= cidr.max_prefix() && mask(addr, prefix) == addr).then_some(cidr)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// `10.0.0.0/8`, `2001:db8::/32` or one address; host bits set are an error.
    pub fn parse(text: &str) -> Result<Cidr, ValueError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            ValueError::at(
                ErrorKind::BadAddress,
                0,
                format!("`{addr_text}` is not an IPv4 or IPv6 address"),
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let at = addr_text.chars().count() + 1;
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        return Err(ValueError::at(
                            ErrorKind::BadAddress,
                            at,
                            format!("`/{p}` is not a prefix length (0 to {max})"),
                        ));
                    }
                }
            }
        };
        let network = mask(addr, prefix);
        if network != addr {
            return Err(ValueError::at(
                ErrorKind::BadAddress,
                0,
                format!("`{text}` has host bits set; did you mean `{network}/{prefix}`?"),
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// `addr` with all but the first `prefix` bits cleared.
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.max_prefix() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// `443` or `8000-8100`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub(crate) fn parse(text: &str) -> Result<PortRange, ValueError> {
        match text.split_once('-') {
            None => {
                let port = parse_port(text, 0)?;
                Ok(PortRange {
                    first: port,
                    last: port,
                })
            }
            Some((a, b)) => {
                let first = parse_port(a, 0)?;
                let last = parse_port(b, a.len() + 1)?;
                if first > last {
                    return Err(ValueError::at(
                        ErrorKind::BadPort,
                        0,
                        format!("port range `{text}` runs backwards; write `{last}-{first}`"),
                    ));
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

fn parse_port(text: &str, offset: usize) -> Result<u16, ValueError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::at(
            ErrorKind::BadPort,
            offset,
            format!("`{text}` is not a port number"),
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(ValueError::at(
            ErrorKind::BadPort,
            offset,
            "port 0 is not a port a connection can use (ports are 1 to 65535)",
        )),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(ValueError::at(
            ErrorKind::BadPort,
            offset,
            format!("port {text} is out of range (ports are 1 to 65535)"),
        )),
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Parses an HTTP method (RFC 9110 token); rules store it upper case, as every client sends
/// the standard methods.
pub(crate) fn parse_method(text: &str) -> Result<String, ValueError> {
    const TOKEN_PUNCT: &str = "!#$%&'*+-.^_`|~";
    if text.is_empty() {
        return Err(ValueError::at(ErrorKind::BadMethod, 0, "empty method"));
    }
    if let Some((i, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || TOKEN_PUNCT.contains(*c)))
    {
        return Err(ValueError::at(
            ErrorKind::BadMethod,
            i,
            format!("`{c}` cannot appear in an HTTP method"),
        ));
    }
    Ok(text.to_ascii_uppercase())
}

/// Parses a path prefix: it must start with `/`, and is stored normalised like the paths it
/// is compared with.
pub(crate) fn parse_path(text: &str) -> Result<String, ValueError> {
    if !text.starts_with('/') {
        return Err(ValueError::at(
            ErrorKind::BadPath,
            0,
            format!("path prefix `{text}` must start with `/`"),
        ));
    }
    if let Some(i) = text.find(['?', '#']) {
        return Err(ValueError::at(
            ErrorKind::BadPath,
            i,
            "a path prefix matches the path only; the query string is not part of it",
        ));
    }
    Ok(normalize_path(text).into_owned())
}

/// Brings a request path to the one form rules compare against, so `/a/../admin`,
/// `//admin` and `/%61dmin` cannot slip past a rule on `/admin`: drops the query, decodes
/// percent-escapes of unreserved characters (RFC 3986 2.3) and upper-cases the others,
/// collapses repeated slashes, and resolves `.` and `..` segments.
pub fn normalize_path(raw: &str) -> std::borrow::Cow<'_, str> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let simple = path.starts_with('/')
        && !path.contains("//")
        && !path.contains('%')
        && !path.split('/').any(|s| s == "." || s == "..");
    if simple {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // Keep a trailing slash: `/admin/` and `/admin` are different prefixes.
    if out.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if escape {
            // Both are ASCII hex digits, so this slice is on character boundaries.
            let hex = &path[i + 1..i + 3];
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        // Bytes of a multi-byte character are copied through whole.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `text/html` or `image/*`, compared case-insensitively with the response's media type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaRange {
    top: String,
    /// `None` for `type/*`.
    sub: Option<String>,
}

impl MediaRange {
    pub(crate) fn parse(text: &str) -> Result<MediaRange, ValueError> {
        let bad = |offset: usize, why: &str| {
            ValueError::at(
                ErrorKind::BadContentType,
                offset,
                format!("`{text}` is not a content type: {why} (write `type/subtype` or `type/*`)"),
            )
        };
        let Some((top, sub)) = text.split_once('/') else {
            return Err(bad(0, "no `/`"));
        };
        let is_token = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
        };
        if !is_token(top) {
            return Err(bad(0, "bad type"));
        }
        let sub = match sub {
            "*" => None,
            s if is_token(s) => Some(s.to_ascii_lowercase()),
            _ => return Err(bad(top.len() + 1, "bad subtype")),
        };
        Ok(MediaRange {
            top: top.to_ascii_lowercase(),
            sub,
        })
    }

    /// Whether a `Content-Type` header value (parameters allowed) falls in this range.
    pub fn matches(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let Some((top, sub)) = media.split_once('/') else {
            return false;
        };
        top.eq_ignore_ascii_case(&self.top)
            && self
                .sub
                .as_deref()
                .is_none_or(|want| sub.trim().eq_ignore_ascii_case(want))
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.top, self.sub.as_deref().unwrap_or("*"))
    }
}

/// Parses `1500`, `512K`, `10M`, `2G` (binary units: K = 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, ValueError> {
    let bad = || {
        ValueError::at(
            ErrorKind::BadSize,
            0,
            format!("`{text}` is not a size (write bytes, or a number with K, M or G: `10M`)"),
        )
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Prints a size in the largest unit that divides it exactly, so it parses back unchanged.
pub(crate) fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::".parse().unwrap()));
        let any = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert_eq!(one.prefix(), 32);
        assert_eq!(one.to_string(), "192.0.2.7");
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        let e = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadAddress);
        assert!(
            e.message.contains("did you mean `10.0.0.0/8`"),
            "{}",
            e.message
        );
        let e = Cidr::parse("10.0.0.0/33").unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("0 to 32"));
        assert!(Cidr::parse("10.0.0.256").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("::/129").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            PortRange::parse("443").unwrap(),
            PortRange {
                first: 443,
                last: 443
            }
        );
        let r = PortRange::parse("8000-8100").unwrap();
        assert!(r.contains(8000) && r.contains(8100) && !r.contains(8101));
        for (text, offset, needle) in [
            ("0", 0, "port 0"),
            ("65536", 0, "out of range"),
            ("99999999999", 0, "out of range"),
            ("http", 0, "not a port"),
            ("10-0", 3, "port 0"),
            ("20-10", 0, "backwards"),
            ("-5", 0, "not a port"),
        ] {
            let e = PortRange::parse(text).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadPort);
            assert_eq!(e.offset, offset, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    #[test]
    fn methods_are_tokens() {
        assert_eq!(parse_method("get").unwrap(), "GET");
        assert_eq!(parse_method("PROPFIND").unwrap(), "PROPFIND");
        assert_eq!(parse_method("GE T").unwrap_err().offset, 2);
        assert_eq!(parse_method("").unwrap_err().kind, ErrorKind::BadMethod);
    }

    #[test]
    fn paths_are_normalised_so_prefixes_cannot_be_dodged() {
        assert_eq!(normalize_path("/admin/x?y=1"), "/admin/x");
        assert_eq!(normalize_path("//admin"), "/admin");
        assert_eq!(normalize_path("/a/../admin/"), "/admin/");
        assert_eq!(normalize_path("/%61dmin"), "/admin");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize_path("/./"), "/");
        assert_eq!(normalize_path("/../../"), "/");
        assert_eq!(normalize_path("/%"), "/%");
        assert_eq!(normalize_path("/%4"), "/%4");
        assert_eq!(normalize_path("/é/%C3"), "/é/%C3");
        assert_eq!(normalize_path("/%aé"), "/%aé");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(parse_path("/x/").unwrap(), "/x/");
        assert_eq!(parse_path("x").unwrap_err().kind, ErrorKind::BadPath);
        assert_eq!(parse_path("/x?a").unwrap_err().offset, 2);
    }

    #[test]
    fn media_ranges() {
        let video = MediaRange::parse("video/*").unwrap();
        assert!(video.matches("video/mp4"));
        assert!(video.matches("Video/MP4; codecs=avc1"));
        assert!(!video.matches("audio/mp4"));
        assert!(!video.matches("garbage"));
        let html = MediaRange::parse("text/HTML").unwrap();
        assert!(html.matches("text/html; charset=utf-8"));
        assert!(!html.matches("text/plain"));
        assert_eq!(html.to_string(), "text/html");
        for bad in ["text", "/html", "text/", "te xt/html", "*/*x"] {
            assert_eq!(
                MediaRange::parse(bad).unwrap_err().kind,
                ErrorKind::BadContentType,
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1500").unwrap(), 1500);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        for bad in ["", "M", "10X", "1.5M", "-1", "99999999999999999999G"] {
            assert_eq!(
                parse_size(bad).unwrap_err().kind,
                ErrorKind::BadSize,
                "{bad}"
            );
        }
        for n in [0, 1, 1023, 1024, 10 << 20, (3 << 30) + 1] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
    }

    #[test]
    fn names() {
        assert!(check_name("work-docs_2.a").is_ok());
        assert_eq!(check_name("-x").unwrap_err().offset, 0);
        assert_eq!(check_name("a b").unwrap_err().offset, 1);
        assert!(check_name("").is_err());
    }
}
