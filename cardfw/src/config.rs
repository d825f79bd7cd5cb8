//! `cardfw.toml`: every key, its default, and why it exists. A key that is not known is an
//! error (a misspelt limit must not silently fall back to its default).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use serve::daemon::{ConfigError, ConfigFile};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The rule file (list files it names are read from beside it). With a `store`, only the
    /// first rule set written into a new store.
    pub rules: PathBuf,
    /// The card's data directory: the sealed, PIN-protected rule store, and the key of the
    /// card's own web page. When set, the rules come from the store and are changed on the
    /// card's web page; when absent, from the plain `rules` file.
    pub store: Option<PathBuf>,
    /// The card's inside address: where the protected side reaches the explicit proxy, the
    /// DNS forwarder and the status endpoint.
    pub inside_address: IpAddr,
    /// The card's outside address: every upstream connection and DNS query leaves from it,
    /// so the appliance can tell card traffic from anything else.
    pub outside_address: IpAddr,
    /// The appliance's address on the card link: the only client the status endpoint
    /// answers (its recent decisions name other clients and what they asked for). The card
    /// never opens a connection to it, nor to its own two addresses.
    pub appliance_address: IpAddr,
    /// The interface inside traffic arrives on. Transparent interception and the reject
    /// rule apply to it only.
    pub link: String,
    /// Install the nftables TPROXY ruleset at start (and remove it at exit). Off only for
    /// running the explicit proxy on a development machine.
    pub transparent: bool,
    pub ports: Ports,
    pub dns: Dns,
    pub limits: Limits,
    pub iso7816: Iso7816,
    pub policy: Policy,
    pub inspect: Inspect,
    /// The VPNs the card can open (`[vpn.NAME]`, see `cardfw::vpn`), by name.
    pub vpn: BTreeMap<String, Vpn>,
}

/// Which WireGuard implementation carries the VPNs: chosen once at start and shown on the
/// card page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VpnBackend {
    /// The kernel's when it can make a WireGuard link here, else the userspace one (with a
    /// log line saying why).
    #[default]
    Auto,
    /// cardfw's own WireGuard on a TUN device (gotatun).
    Userspace,
    /// The kernel's WireGuard over netlink; start fails when the kernel has none.
    Kernel,
}

/// One VPN (`[vpn.NAME]`): the other end, and what belongs to it. The card's private key is
/// not here: it is made in the sealed store, and only its public key is ever shown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vpn {
    /// The peer's WireGuard public key, base64 (as `wg` prints it).
    pub peer_public_key: String,
    /// Where the peer listens (UDP); the tunnel's packets leave from the outside address.
    pub endpoint: SocketAddr,
    /// The card's address inside the tunnel (what the peer's `AllowedIPs` names).
    pub address: Ipv4Addr,
    /// The networks reached only through the tunnel, e.g. `10.20.0.0/16`.
    pub networks: Vec<VpnNetwork>,
    /// The names that belong to the VPN: `intranet.corp.example`, or `*.corp.example` for
    /// every name under it. They are resolved through the tunnel by `resolver`.
    #[serde(default)]
    pub names: Vec<String>,
    /// The corporate resolver, inside `networks`; needed when `names` are given.
    pub resolver: Option<SocketAddr>,
    /// The unlocked VPN locks again after this many seconds without a connection through it.
    #[serde(default = "default_vpn_idle_secs")]
    pub idle_lock_secs: u64,
    /// WireGuard persistent keepalive, seconds (0: none).
    #[serde(default)]
    pub keepalive_secs: u16,
    #[serde(default)]
    pub backend: VpnBackend,
}

/// A WireGuard public key from its base64 form, or why it is not one.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("{} bytes, a key is 32", bytes.len()))
}

fn default_vpn_idle_secs() -> u64 {
    30 * 60
}

/// A network of a VPN, checked when the file is read (`10.20.0.0/16`; IPv4 for now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct VpnNetwork(pub rules::Cidr);

impl TryFrom<String> for VpnNetwork {
    type Error = String;

    fn try_from(text: String) -> Result<VpnNetwork, String> {
        let cidr = rules::Cidr::parse(&text)
            .map_err(|e| format!("`{text}` is not a network: {}", e.message))?;
        if !cidr.addr().is_ipv4() {
            return Err(format!(
                "`{text}`: only IPv4 networks are carried through the VPN for now"
            ));
        }
        Ok(VpnNetwork(cidr))
    }
}

impl Vpn {
    /// Whether `ip` lies in one of the VPN's networks.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.0.contains(ip))
    }

    /// A network of this VPN that shares addresses with one of `other`'s, with that one: an
    /// address must belong to one VPN at most.
    pub fn overlap(&self, other: &Vpn) -> Option<(rules::Cidr, rules::Cidr)> {
        self.networks.iter().find_map(|mine| {
            other
                .networks
                .iter()
                .find(|theirs| mine.0.contains(theirs.0.addr()) || theirs.0.contains(mine.0.addr()))
                .map(|theirs| (mine.0, theirs.0))
        })
    }

    /// Whether `name` belongs to the VPN (`names`; `*.x` is every name under `x`).
    pub fn owns_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.names
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => {
                    name.len() > parent.len() + 1
                        && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
                        && name[name.len() - parent.len()..].eq_ignore_ascii_case(parent)
                }
                None => name.eq_ignore_ascii_case(pattern),
            })
    }

    /// A VPN the policy server pushed (`proto::policy::ManagedVpn`), as if it were a
    /// `[vpn.NAME]` of the file; [`Config::check_vpn`] then checks it as one.
    pub fn from_managed(pushed: &proto::policy::ManagedVpn) -> Result<Vpn, String> {
        let networks = pushed
            .networks
            .iter()
            .map(|text| VpnNetwork::try_from(text.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("vpn.{}: networks: {e}", pushed.name))?;
        Ok(Vpn {
            peer_public_key: pushed.peer_public_key.clone(),
            endpoint: pushed.endpoint,
            address: pushed.address,
            networks,
            names: pushed.names.clone(),
            resolver: pushed.resolver,
            idle_lock_secs: pushed.idle_lock_secs,
            keepalive_secs: pushed.keepalive_secs,
            backend: VpnBackend::default(),
        })
    }

    /// What the types alone cannot check; `name` is the table's name.
    fn check(&self, name: &str) -> Result<(), String> {
        let at = |what: String| format!("vpn.{name}: {what}");
        // The name becomes the TUN interface's (`cw-NAME`, at most 15 bytes) and a rule's
        // `via NAME`.
        if !proto::policy::valid_vpn_name(name) {
            return Err(at(
                "a VPN's name is 1 to 12 of a-z, 0-9 and `-` (it names the interface and rules' `via`)".into(),
            ));
        }
        parse_public_key(&self.peer_public_key).map_err(|e| at(format!("peer_public_key: {e}")))?;
        if self.networks.is_empty() {
            return Err(at("networks is empty: name what the VPN reaches".into()));
        }
        for pattern in &self.names {
            let bare = pattern.strip_prefix("*.").unwrap_or(pattern);
            if rules::normalize_name(bare).is_err() || bare.contains('*') {
                return Err(at(format!("names: `{pattern}` is not a name or `*.name`")));
            }
        }
        match self.resolver {
            Some(resolver) if !self.covers(resolver.ip()) => {
                return Err(at(format!(
                    "resolver {resolver} is not in the VPN's networks: it is reached through the tunnel"
                )));
            }
            None if !self.names.is_empty() => {
                return Err(at(
                    "names are given but no resolver: they are resolved through the tunnel".into(),
                ));
            }
            _ => {}
        }
        if self.covers(self.endpoint.ip()) {
            return Err(at(format!(
                "endpoint {} is inside the VPN's networks: the tunnel cannot run through itself",
                self.endpoint
            )));
        }
        if self.idle_lock_secs == 0 {
            return Err(at("idle_lock_secs must be at least 1".into()));
        }
        Ok(())
    }
}

/// TLS inspection (`inspect` rules, see `cardfw::inspect`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inspect {
    /// A PEM file of CA certificates the card trusts for inspected sites besides Mozilla's
    /// roots (a company's own CA, a lab's test CA). Not set: Mozilla's roots only.
    pub trusted_cas: Option<PathBuf>,
    /// The unlocked client certificate locks again after this many seconds without a
    /// handshake that used it (`client-cert` rules).
    pub client_cert_idle_secs: u64,
}

impl Inspect {
    pub fn client_cert_idle(&self) -> Duration {
        Duration::from_secs(self.client_cert_idle_secs)
    }
}

impl Default for Inspect {
    fn default() -> Self {
        Inspect {
            trusted_cas: None,
            client_cert_idle_secs: 15 * 60,
        }
    }
}

/// The card's ISO 7816 face (the `iso7816` front end): the PIN and the rule file over APDUs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Iso7816 {
    /// The vsmartcard `vpcd` reader to connect to as a virtual card (its first reader listens
    /// on port 35963), so the card is reached through PC/SC. The cardwall application needs
    /// `store`; without one the card answers only Peer I/O. Not set: no APDUs.
    pub vpcd: Option<SocketAddr>,
    /// A TAP device (created if missing) bridged to the Peer I/O link on the same vpcd
    /// connection: the card's network link for a host that reaches it only by APDUs. Needs
    /// `vpcd`. Not set: class-12 commands are refused.
    pub peer_io_tap: Option<String>,
}

/// Managed mode: how the card keeps its long poll to the policy server (see `cardfw enroll`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// One long poll is abandoned after this; longer than the server's hold time.
    pub poll_timeout_secs: u64,
    /// The first wait after the server was unreachable or sent a bundle that was refused.
    pub retry_min_ms: u64,
    /// The wait doubles up to this (with jitter, so a fleet does not come back in step).
    pub retry_max_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            poll_timeout_secs: 90,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

/// Where the card listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    /// Explicit HTTP proxy (absolute-form and CONNECT) on the inside address.
    pub explicit_proxy: u16,
    /// Read-only JSON status on the inside address.
    pub status: u16,
    /// The card's own web page (HTTPS), on the inside address, when a `store` is set.
    pub admin: u16,
    /// DNS on the inside address; inside DNS to any address is redirected here.
    pub dns: u16,
    /// Destination ports intercepted as plain HTTP.
    pub http: Vec<u16>,
    /// Destination ports intercepted as TLS (decided on the ClientHello).
    pub https: Vec<u16>,
    /// Other destination ports intercepted as plain TCP (decided on address and port).
    pub tcp: Vec<u16>,
    /// Local ports the transparent listeners use; traffic reaches them only through TPROXY.
    pub transparent_http: u16,
    pub transparent_https: u16,
    pub transparent_tcp: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// The resolver allowed queries go to (the appliance's card-link address by default).
    pub upstream: SocketAddr,
    /// Answers kept, at most; the cache never grows past this.
    pub cache_entries: usize,
    /// Answer `use-application-dns.net` with NXDOMAIN, which tells browsers not to switch to
    /// DNS over HTTPS behind the filter's back.
    pub block_doh_canary: bool,
    /// How long to wait for the upstream resolver.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections the card handles at once, all clients together; the next is refused.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_per_client: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head (or TLS ClientHello); slow-loris clients are
    /// cut after it.
    pub header_timeout_ms: u64,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// Time allowed to connect upstream before answering 504.
    pub connect_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rules: PathBuf::from("/etc/cardwall/rules.txt"),
            store: None,
            inside_address: IpAddr::V4(Ipv4Addr::new(172, 31, 77, 2)),
            outside_address: IpAddr::V4(Ipv4Addr::new(172, 31, 77, 3)),
            appliance_address: IpAddr::V4(Ipv4Addr::new(172, 31, 77, 1)),
            link: "usb0".into(),
            transparent: true,
            ports: Ports::default(),
            dns: Dns::default(),
            limits: Limits::default(),
            iso7816: Iso7816::default(),
            policy: Policy::default(),
            inspect: Inspect::default(),
            vpn: BTreeMap::new(),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            explicit_proxy: 3128,
            status: 8081,
            admin: 443,
            dns: 53,
            http: vec![80],
            https: vec![443],
            tcp: Vec::new(),
            transparent_http: 10080,
            transparent_https: 10443,
            transparent_tcp: 10000,
        }
    }
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            upstream: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(172, 31, 77, 1)), 53),
            cache_entries: 512,
            block_doh_canary: true,
            timeout_ms: 3000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_client: 256,
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            connect_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Config {
    /// Checks one VPN for this card: a `[vpn.NAME]` of the file, or one the policy server
    /// pushed (`crate::managed`), by the same rules.
    pub fn check_vpn(&self, name: &str, vpn: &Vpn) -> Result<(), String> {
        vpn.check(name)?;
        for address in [
            self.inside_address,
            self.outside_address,
            self.appliance_address,
        ] {
            if vpn.covers(address) {
                return Err(format!(
                    "vpn.{name}: the card's own address {address} is inside the VPN's networks"
                ));
            }
        }
        Ok(())
    }
}

impl ConfigFile for Config {
    /// Checks what the types alone cannot.
    fn check(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.max_connections == 0 || limits.max_per_client == 0 {
            return Err(
                "limits.max_connections and limits.max_per_client must be at least 1".into(),
            );
        }
        if limits.max_per_client > limits.max_connections {
            return Err(format!(
                "limits.max_per_client ({}) is larger than limits.max_connections ({})",
                limits.max_per_client, limits.max_connections
            ));
        }
        // Below this, ordinary browser requests (cookies, user agent) would be refused.
        if limits.max_header_bytes < 4096 {
            return Err("limits.max_header_bytes must be at least 4096".into());
        }
        let iso = &self.iso7816;
        if iso.vpcd.is_some() && self.store.is_none() && iso.peer_io_tap.is_none() {
            return Err("iso7816.vpcd needs a `store` (the PIN and the rule file live there) or iso7816.peer_io_tap".into());
        }
        if self.iso7816.peer_io_tap.is_some() && self.iso7816.vpcd.is_none() {
            return Err("iso7816.peer_io_tap needs iso7816.vpcd: Peer I/O runs over it".into());
        }
        let policy = &self.policy;
        if policy.poll_timeout_secs == 0 || policy.retry_min_ms == 0 {
            return Err(
                "policy.poll_timeout_secs and policy.retry_min_ms must be at least 1".into(),
            );
        }
        if policy.retry_max_ms < policy.retry_min_ms {
            return Err("policy.retry_max_ms is smaller than policy.retry_min_ms".into());
        }
        if self.dns.cache_entries == 0 {
            return Err("dns.cache_entries must be at least 1".into());
        }
        if self.inspect.client_cert_idle_secs == 0 {
            return Err("inspect.client_cert_idle_secs must be at least 1".into());
        }
        if !self.vpn.is_empty() && self.store.is_none() {
            return Err(
                "[vpn.*] needs a `store`: the card's WireGuard keys are made and sealed there"
                    .into(),
            );
        }
        for (name, vpn) in &self.vpn {
            self.check_vpn(name, vpn)?;
        }
        let ports = &self.ports;
        let intercepted = ports.http.iter().chain(&ports.https).chain(&ports.tcp);
        let mut seen = std::collections::HashSet::new();
        for port in intercepted {
            if *port == 0 {
                return Err("port 0 cannot be intercepted".into());
            }
            if !seen.insert(*port) {
                return Err(format!(
                    "port {port} is listed twice among ports.http, ports.https, ports.tcp"
                ));
            }
        }
        if seen.contains(&53) {
            return Err(
                "port 53 is DNS; it is intercepted by the DNS forwarder, not as http/https/tcp"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys() {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_public_key(&key).unwrap(), [7u8; 32]);
        assert!(
            parse_public_key("not base64!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(parse_public_key("AAAA").unwrap_err().contains("3 bytes"));
    }

    #[test]
    fn vpn_mistakes_are_named() {
        let good = "store = \"/s\"\n[vpn.corp]\npeer_public_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\nendpoint = \"198.51.100.7:51820\"\naddress = \"10.20.255.2\"\n";
        let with = |extra: &str| format!("{good}{extra}");
        assert!(Config::parse("c.toml", &with("networks = [\"10.20.0.0/16\"]\n")).is_ok());
        for (text, needle) in [
            (with("networks = [\"10.20.0.1/16\"]\n"), "host bits"),
            (with("networks = [\"fd00::/8\"]\n"), "only IPv4"),
            (with("networks = []\n"), "networks is empty"),
            (
                with("networks = [\"10.20.0.0/16\"]\nnames = [\"*.corp.example\"]\n"),
                "no resolver",
            ),
            (
                with("networks = [\"10.20.0.0/16\"]\nresolver = \"192.0.2.1:53\"\n"),
                "not in the VPN's networks",
            ),
            (
                with(
                    "networks = [\"10.20.0.0/16\"]\nnames = [\"a b\"]\nresolver = \"10.20.0.53:53\"\n",
                ),
                "not a name",
            ),
            (
                with("networks = [\"198.51.100.0/24\"]\n"),
                "tunnel cannot run through itself",
            ),
            (with("networks = [\"172.31.77.0/24\"]\n"), "own address"),
            (
                with("networks = [\"10.20.0.0/16\"]\nsecret = 1\n"),
                "unknown field",
            ),
            (
                good.replace("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "short")
                    + "networks = [\"10.20.0.0/16\"]\n",
                "peer_public_key",
            ),
            (
                good.replace("store = \"/s\"\n", "") + "networks = [\"10.20.0.0/16\"]\n",
                "needs a `store`",
            ),
            (
                good.replace("vpn.corp", "vpn.Corp_1") + "networks = [\"10.20.0.0/16\"]\n",
                "a VPN's name",
            ),
        ] {
            let e = Config::parse("c.toml", &text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let config = Config::parse(
            "c.toml",
            "rules = \"/r\"\n[limits]\nmax_connections = 10\nmax_per_client = 2\n",
        )
        .unwrap();
        assert_eq!(config.rules, PathBuf::from("/r"));
        assert_eq!(config.limits.max_connections, 10);
        assert_eq!(config.ports.explicit_proxy, 3128);
        assert_eq!(
            Config::parse("c.toml", "").unwrap().limits.max_connections,
            1024
        );
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let example = Config::parse("cardfw.toml", include_str!("../cardfw.toml")).unwrap();
        assert_eq!(example, Config::default());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("rulez = \"/r\"", "unknown field `rulez`"),
            (
                "[limits]\nmax_conections = 3",
                "unknown field `max_conections`",
            ),
            ("inside_address = \"300.1.1.1\"", "invalid"),
            (
                "[limits]\nmax_connections = 2\nmax_per_client = 3",
                "larger than",
            ),
            ("[ports]\nhttp = [80]\ntcp = [80]", "listed twice"),
            ("[ports]\ntcp = [53]", "DNS"),
            ("[dns]\ncache_entries = 0", "cache_entries"),
            ("[iso7816]\nvpcd = \"127.0.0.1:35963\"", "needs a `store`"),
            ("[iso7816]\npeer_io_tap = \"pio0\"", "needs iso7816.vpcd"),
        ] {
            let e = Config::parse("c.toml", text).unwrap_err().to_string();
            assert!(e.starts_with("c.toml: "), "{e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
