//! The rule file as written: the syntax tree the parser builds and `Display` prints back.
//! Printing then parsing gives the same tree (a property test holds us to it).

use std::fmt;

use crate::host::HostPattern;
use crate::time::TimeWindow;
use crate::value::{Cidr, MediaRange, PortRange, format_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// What the card's proxy is deciding about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A plain HTTP request: host, port, method and path are all visible.
    Http,
    /// A TLS connection (port 443 or a CONNECT tunnel): the name from the ClientHello (SNI)
    /// and the address are visible, never the method or path.
    Https,
    /// A DNS question: only the name.
    Dns,
    /// Any other TCP connection: only address and port.
    Tcp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Dns,
        Protocol::Tcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Dns => "dns",
            Protocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule line. An empty list means "no condition on this".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The explicit name (`name: allow …`); without one the rule is known as `file:line`.
    pub name: Option<String>,
    pub action: Action,
    /// `None` is `any`.
    pub protocol: Option<Protocol>,
    pub hosts: Vec<HostPattern>,
    pub dst: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    pub content_types: Vec<MediaRange>,
    /// Matches responses whose body is larger than this many bytes.
    pub max_body: Option<u64>,
    pub time: Option<TimeWindow>,
    /// `allow-ech`: a TLS hello naming an Encrypted Client Hello cover name may pass.
    pub allow_ech: bool,
    /// `allow-private`: DNS answers for the name may hold private, loopback or link-local
    /// addresses (otherwise refused as DNS rebinding).
    pub allow_private: bool,
    /// `inspect`: the card terminates the TLS connections the rule allows and decides each
    /// HTTP request inside them.
    pub inspect: bool,
    /// `client-cert`: on an inspected connection, the card presents the user's client
    /// certificate (kept on the card, unlocked with the PIN) to the site.
    pub client_cert: bool,
    /// `via NAME`: the connection's upstream goes through the card's VPN `NAME`.
    pub via: Option<String>,
    /// Where the rule was written (1-based); not part of what the rule means.
    pub line: u32,
}

impl Rule {
    /// Whether the rule can only be decided once the response is seen.
    pub fn has_response_conditions(&self) -> bool {
        !self.content_types.is_empty() || self.max_body.is_some()
    }
}

/// Where a list's names come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// `list ads = ads.example.net *.doubleclick.net`
    Inline(Vec<HostPattern>),
    /// `list malware file malware.txt`: one name or `*.name` per line, or a hosts file
    /// (`0.0.0.0 name`); the path is relative to the rule file.
    File(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDef {
    pub name: String,
    pub source: ListSource,
    pub line: u32,
}

/// A whole rule file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// The `default` line and where it is; deny when absent.
    pub default: Option<(Action, u32)>,
    pub lists: Vec<ListDef>,
    pub rules: Vec<Rule>,
}

impl Policy {
    pub fn default_action(&self) -> Action {
        self.default.map_or(Action::Deny, |(action, _)| action)
    }
}

/// Writes `keyword a,b,c` when the list is not empty.
fn write_condition<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    keyword: &str,
    values: &[T],
) -> fmt::Result {
    if values.is_empty() {
        return Ok(());
    }
    write!(f, " {keyword} ")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{v}")?;
    }
    Ok(())
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}: ")?;
        }
        write!(f, "{} ", self.action)?;
        match self.protocol {
            Some(p) => write!(f, "{p}")?,
            None => f.write_str("any")?,
        }
        write_condition(f, "host", &self.hosts)?;
        write_condition(f, "dst", &self.dst)?;
        write_condition(f, "port", &self.ports)?;
        write_condition(f, "method", &self.methods)?;
        write_condition(f, "path", &self.paths)?;
        write_condition(f, "content-type", &self.content_types)?;
        if let Some(size) = self.max_body {
            write!(f, " max-body {}", format_size(size))?;
        }
        if let Some(window) = &self.time {
            write!(f, " time {window}")?;
        }
        if self.allow_ech {
            f.write_str(" allow-ech")?;
        }
        if self.allow_private {
            f.write_str(" allow-private")?;
        }
        if self.inspect {
            f.write_str(" inspect")?;
        }
        if self.client_cert {
            f.write_str(" client-cert")?;
        }
        if let Some(vpn) = &self.via {
            write!(f, " via {vpn}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ListDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "list {} ", self.name)?;
        match &self.source {
            ListSource::File(path) => write!(f, "file {path}"),
            ListSource::Inline(patterns) => {
                f.write_str("=")?;
                for p in patterns {
                    write!(f, " {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Lists first, then rules in order, then the default: a file that reads top to bottom in
/// the order the card decides.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for list in &self.lists {
            writeln!(f, "{list}")?;
        }
        for rule in &self.rules {
            writeln!(f, "{rule}")?;
        }
        if let Some((action, _)) = self.default {
            writeln!(f, "default {action}")?;
        }
        Ok(())
    }
}
