//! The card as a VPN gateway (seed 000, 5.3): WireGuard tunnels the card's own upstream
//! connections go through, for the networks and names that belong to a VPN.
//!
//! # Nothing is routed
//!
//! The card still proxies. A connection from the protected computer to a corporate name or
//! address reaches the card like every other one and is decided by the same rules (a rule may
//! name the tunnel: `allow https host *.corp.example via corp`); only the card's *upstream*
//! connection goes through the tunnel. The kernel carries it: each VPN has an interface in
//! the card's namespace with the card's tunnel address, and a route for each of the VPN's
//! networks `dev <interface> src <tunnel address>` in the main table. So every socket to those
//! networks, bound or not, enters the tunnel's interface; nothing for them ever leaves on the
//! outside link in clear, whether the VPN is unlocked or not (kill switch). The upstream
//! socket binds the tunnel address ([`Vpns::source_for`]), which is what the peer's
//! `AllowedIPs` names.
//!
//! # Locked and unlocked
//!
//! Locked is the normal state: the private key is neither in cardfw's memory nor in the
//! kernel's, the interface sends nothing (nothing reads the TUN device; the kernel's link has
//! no peer), and [`crate::firewall::Firewall`] refuses every connection to the VPN's networks
//! and names with `vpn-locked`. Unlocking takes the PIN
//! ([`crate::store::AdminSession::unlock_vpn_key`]); the VPN locks again when the owner locks
//! it, after `idle_lock_secs` with no connection through it, and when cardfw stops
//! ([`Vpns::stop`]) or the card restarts. This is the client certificate's life
//! (`crate::inspect::client_cert`) applied to a tunnel.
//!
//! # Which WireGuard
//!
//! One interface, [`Tunnel`], for two implementations, chosen once at start
//! ([`crate::config::VpnBackend`]) and shown on the card page:
//! - **userspace** ([`userspace`]): `gotatun` 0.10 (MPL-2.0), Mullvad's maintained fork of
//!   Cloudflare's boringtun, on a TUN device. Chosen over boringtun itself (last release
//!   0.6 in 2023, its device module unmaintained) because Mullvad ships it in its VPN app,
//!   releases it, and it builds here with rustc 1.95 on `ring`, the tree's one crypto
//!   provider (its default `aws-lc-rs` is turned off). Its UDP socket is bound to the card's
//!   outside address, so the tunnel's packets leave like every other card connection and the
//!   appliance sees nothing new.
//! - **kernel** ([`kernel`]): the kernel's WireGuard, configured by cardfw over netlink
//!   (`netconf::wireguard`, on `netlink-packet-wireguard`): no packet crosses into userspace,
//!   which on a card-sized CPU is the difference that counts. Its link is made at start with
//!   no key and no peer, so what the routes send into it is dropped; unlocking sets the key
//!   and the peer, locking removes both and reads the link back to be sure. Its UDP leaves
//!   from the outside address by the card's routing, which is checked at start.
//!
//! `backend = "kernel"` fails at start when the kernel cannot make a WireGuard link (or
//! would send the tunnel's packets from another address than the outside one); `auto` tries
//! the kernel the same way and, failing, says why in the log and uses userspace.

pub mod added;
mod kernel;
mod userspace;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gotatun::x25519::{PublicKey, StaticSecret};

use crate::config::{self, Config, VpnBackend};
use crate::store::{AdminSession, Store, StoreError};
use zeroize::Zeroizing;

/// The routing table the VPN routes go in: the main table, so that no socket can miss them.
const MAIN_TABLE: u32 = 254;

/// Why a VPN did not start, unlock or lock.
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    #[error(
        "the route to the endpoint {endpoint} leaves from {}, not the card's outside address {outside}: give the card's default route `src {outside}` (or set backend = \"userspace\")",
        from.map_or("no address".to_owned(), |from| from.to_string())
    )]
    KernelSource {
        endpoint: std::net::SocketAddr,
        from: Option<IpAddr>,
        outside: IpAddr,
    },
    #[error(
        "VPN {name} has backend = \"kernel\", and the kernel's WireGuard cannot carry it here: {source} (backend = \"auto\" would use userspace WireGuard)"
    )]
    KernelBackend { name: String, source: Box<VpnError> },
    #[error("cannot create the TUN device {interface}: {why}")]
    Tun { interface: String, why: String },
    #[error("cannot configure {interface}: {source}")]
    Netlink {
        interface: String,
        source: netconf::netlink::NetlinkError,
    },
    #[error("the WireGuard device for {name} did not start: {why}")]
    Device { name: String, why: String },
    #[error("the card has no key for the VPN {0}")]
    NoKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The WireGuard implementation a VPN runs on (see the module documentation).
#[derive(Debug)]
pub enum Tunnel {
    Userspace(userspace::Userspace),
    Kernel(kernel::Kernel),
    /// No tunnel (any more): the stand-in for a VPN whose tunnel is being taken down and
    /// made again ([`Vpns::replace_added`]), so that its networks and names are still
    /// refused as locked meanwhile; and VPNs to decide with in unit tests
    /// ([`Vpns::unrouted_for_tests`]). Always locked: it cannot come up.
    Closed,
}

/// What the card page shows of a tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Time since the last completed handshake; `None` before the first.
    pub handshake_age: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Tunnel {
    /// The implementation's name, for the page and the log.
    pub fn backend(&self) -> &'static str {
        match self {
            Tunnel::Userspace(_) => "userspace (gotatun on TUN)",
            Tunnel::Kernel(_) => "kernel (WireGuard over netlink)",
            Tunnel::Closed => "none (being replaced)",
        }
    }

    async fn up(
        &self,
        vpn: &config::Vpn,
        key: &Zeroizing<[u8; 32]>,
        from: IpAddr,
    ) -> Result<(), String> {
        match self {
            Tunnel::Userspace(tunnel) => tunnel.up(vpn, StaticSecret::from(**key), from).await,
            Tunnel::Kernel(tunnel) => tunnel.up(vpn, key).await,
            Tunnel::Closed => Err("its tunnel is being replaced: try again".to_owned()),
        }
    }

    async fn down(&self) -> Result<(), netconf::netlink::NetlinkError> {
        match self {
            Tunnel::Userspace(tunnel) => {
                tunnel.down().await;
                Ok(())
            }
            Tunnel::Kernel(tunnel) => tunnel.down().await,
            Tunnel::Closed => Ok(()),
        }
    }

    async fn stats(&self) -> Option<TunnelStats> {
        match self {
            Tunnel::Userspace(tunnel) => tunnel.stats().await,
            Tunnel::Kernel(tunnel) => tunnel.stats().await,
            Tunnel::Closed => None,
        }
    }
}

/// One configured VPN on the card.
pub struct Vpn {
    pub name: String,
    pub config: config::Vpn,
    /// The card's public key for this VPN (the only part of its key ever shown).
    pub public_key: [u8; 32],
    /// The interface its networks are routed to.
    pub interface: String,
    tunnel: Tunnel,
    /// Read by every decision, so an atomic; changed only under `changing`.
    unlocked: AtomicBool,
    changing: tokio::sync::Mutex<()>,
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Vpn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vpn")
            .field("name", &self.name)
            .field("interface", &self.interface)
            .field("unlocked", &self.is_unlocked())
            .finish_non_exhaustive()
    }
}

impl Vpn {
    pub fn is_unlocked(&self) -> bool {
        self.unlocked.load(Ordering::Acquire)
    }

    /// The card's public key, base64 as `wg` shows it (for the peer's configuration).
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public_key)
    }

    pub fn backend(&self) -> &'static str {
        self.tunnel.backend()
    }

    /// Handshake age and bytes while unlocked.
    pub async fn stats(&self) -> Option<TunnelStats> {
        self.tunnel.stats().await
    }

    /// Notes a connection through the tunnel (the idle lock counts from the last).
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Reads this VPN's private key with the PIN's session (audited), for [`Vpn::unlock`].
    pub fn read_key(&self, session: &AdminSession<'_>) -> Result<Zeroizing<[u8; 32]>, VpnError> {
        session
            .unlock_vpn_key(&self.name)?
            .ok_or_else(|| VpnError::NoKey(self.name.clone()))
    }

    /// Brings the tunnel up with `key` (from [`Vpn::read_key`]).
    pub async fn unlock(&self, key: Zeroizing<[u8; 32]>) -> Result<(), VpnError> {
        let _changing = self.changing.lock().await;
        if self.is_unlocked() {
            return Ok(());
        }
        let from = IpAddr::V4(self.config.address);
        self.tunnel
            .up(&self.config, &key, from)
            .await
            .map_err(|why| VpnError::Device {
                name: self.name.clone(),
                why,
            })?;
        self.touch();
        self.unlocked.store(true, Ordering::Release);
        tracing::info!(vpn = %self.name, "VPN unlocked");
        Ok(())
    }

    /// While unlocked, the time left before the idle lock.
    pub fn idle_left(&self) -> Option<Duration> {
        if !self.is_unlocked() {
            return None;
        }
        let idle = Duration::from_secs(self.config.idle_lock_secs);
        let last = *self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        Some(idle.saturating_sub(last.elapsed()))
    }

    /// Drops the key and stops the tunnel; `Ok(false)` when it was locked already. Decisions
    /// see it locked before the tunnel stops. An error means the tunnel may still hold its
    /// key or peer (the kernel's link read back so): decisions still refuse its networks, and
    /// the error is logged and shown, never passed over.
    pub async fn lock(&self, why: &str) -> Result<bool, VpnError> {
        let _changing = self.changing.lock().await;
        if !self.unlocked.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        if let Err(source) = self.tunnel.down().await {
            tracing::error!(vpn = %self.name, why, error = %source, "VPN locked for decisions, but its tunnel did not stop");
            return Err(VpnError::Netlink {
                interface: self.interface.clone(),
                source,
            });
        }
        tracing::info!(vpn = %self.name, why, "VPN locked");
        Ok(true)
    }

    /// Locks it and deletes a kernel link (a TUN device goes with its last handle). Failures
    /// are logged: it is leaving either way.
    async fn take_down(&self, why: &str) {
        let _ = self.lock(why).await;
        if let Tunnel::Kernel(tunnel) = &self.tunnel
            && let Err(error) = tunnel.delete().await
        {
            tracing::warn!(vpn = %self.name, %error, "cannot delete the WireGuard link");
        }
    }

    /// A locked stand-in with the same name, settings and public key and no tunnel
    /// ([`Tunnel::Closed`]): decisions keep refusing its networks and names while its
    /// interface is taken down and made again.
    fn closed_stand_in(&self) -> Vpn {
        Vpn {
            name: self.name.clone(),
            config: self.config.clone(),
            public_key: self.public_key,
            interface: self.interface.clone(),
            tunnel: Tunnel::Closed,
            unlocked: AtomicBool::new(false),
            changing: tokio::sync::Mutex::new(()),
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Locks when no connection went through for `idle_lock_secs`. A connection still open
    /// through the tunnel (a long download, a kept-alive session) is use too, so the lock
    /// never cuts one: the kernel's socket table is asked rather than the proxy counting, so
    /// no relay path carries a guard and none can forget one.
    pub async fn lock_if_idle(&self) {
        let idle = Duration::from_secs(self.config.idle_lock_secs);
        let last = *self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_unlocked() || last.elapsed() < idle {
            return;
        }
        if connection_open_from(IpAddr::V4(self.config.address)) {
            self.touch();
            return;
        }
        // A failure is logged by `lock`; the next check does not retry it, the VPN being
        // locked for decisions already.
        let _ = self.lock("idle").await;
    }
}

/// Every VPN of the card, by name.
#[derive(Debug, Default)]
pub struct Vpns {
    by_name: BTreeMap<String, Arc<Vpn>>,
}

impl Vpns {
    /// Makes each configured VPN's key (in the store) and interface and routes, all locked.
    /// A VPN that cannot start stops the card: running without it would be running without
    /// its kill switch's routes.
    pub async fn start(config: &Config, store: &Store) -> Result<Vpns, VpnError> {
        let mut by_name = BTreeMap::new();
        for (name, vpn) in &config.vpn {
            let public_key = store.vpn_public_key_or_create(name, |private| {
                PublicKey::from(&StaticSecret::from(*private)).to_bytes()
            })?;
            let interface = format!("cw-{name}");
            let kernel =
                || kernel::Kernel::create(&interface, vpn.endpoint, config.outside_address);
            let userspace = || {
                userspace::Userspace::create(&interface, config.outside_address)
                    .map(Tunnel::Userspace)
                    .map_err(|why| VpnError::Tun {
                        interface: interface.clone(),
                        why,
                    })
            };
            let tunnel = match vpn.backend {
                VpnBackend::Kernel => {
                    Tunnel::Kernel(kernel().await.map_err(|source| VpnError::KernelBackend {
                        name: name.clone(),
                        source: Box::new(source),
                    })?)
                }
                VpnBackend::Userspace => userspace()?,
                VpnBackend::Auto => match kernel().await {
                    Ok(tunnel) => Tunnel::Kernel(tunnel),
                    Err(error) => {
                        tracing::info!(vpn = %name, %error, "no kernel WireGuard for this VPN: userspace");
                        userspace()?
                    }
                },
            };
            route(&interface, vpn).await?;
            tracing::info!(vpn = %name, %interface, backend = tunnel.backend(),
                public_key = %STANDARD.encode(public_key), "VPN ready, locked");
            by_name.insert(
                name.clone(),
                Arc::new(Vpn {
                    name: name.clone(),
                    config: vpn.clone(),
                    public_key,
                    interface,
                    tunnel,
                    unlocked: AtomicBool::new(false),
                    changing: tokio::sync::Mutex::new(()),
                    last_used: Mutex::new(Instant::now()),
                }),
            );
        }
        Ok(Vpns { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Vpn>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Vpn>> {
        self.by_name.values()
    }

    /// The VPN whose networks hold `ip`.
    pub fn covering(&self, ip: IpAddr) -> Option<&Arc<Vpn>> {
        self.iter().find(|vpn| vpn.config.covers(ip))
    }

    /// The VPN a name belongs to.
    pub fn owning(&self, name: &str) -> Option<&Arc<Vpn>> {
        self.iter().find(|vpn| vpn.config.owns_name(name))
    }

    /// The address an upstream socket to `ip` binds: the tunnel's for a VPN's networks (the
    /// connection is noted for the idle lock), else `None` (the outside address).
    pub fn source_for(&self, ip: IpAddr) -> Option<IpAddr> {
        let vpn = self.covering(ip)?;
        vpn.touch();
        Some(IpAddr::V4(vpn.config.address))
    }

    /// The configured VPNs with no interface and no key, locked: for deciding in tests
    /// without root. `unlocked` names those to show as unlocked.
    #[cfg(test)]
    pub fn unrouted_for_tests(config: &Config, unlocked: &[&str]) -> Vpns {
        let by_name = config
            .vpn
            .iter()
            .map(|(name, vpn)| {
                let entry = Vpn {
                    name: name.clone(),
                    config: vpn.clone(),
                    public_key: [0; 32],
                    interface: format!("cw-{name}"),
                    tunnel: Tunnel::Closed,
                    unlocked: AtomicBool::new(unlocked.contains(&name.as_str())),
                    changing: tokio::sync::Mutex::new(()),
                    last_used: Mutex::new(Instant::now()),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        Vpns { by_name }
    }

    /// What the appliance's status page shows of each VPN (`proto::CardStatus::vpns`).
    pub async fn statuses(&self) -> Vec<proto::VpnStatus> {
        let mut statuses = Vec::new();
        for vpn in self.iter() {
            let stats = if vpn.is_unlocked() {
                vpn.stats().await.unwrap_or_default()
            } else {
                TunnelStats::default()
            };
            statuses.push(proto::VpnStatus {
                name: vpn.name.clone(),
                backend: vpn.backend().to_owned(),
                unlocked: vpn.is_unlocked(),
                endpoint: vpn.config.endpoint.to_string(),
                handshake_age_secs: stats.handshake_age.map(|age| age.as_secs()),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
            });
        }
        statuses
    }

    /// Locks every VPN and deletes the kernel's links (cardfw is stopping; the userspace
    /// TUN devices go with the process). Failures are logged: the process is ending.
    pub async fn stop(&self) {
        for vpn in self.iter() {
            vpn.take_down("the card is stopping").await;
        }
    }

    /// Locks each unlocked VPN that has been idle too long.
    pub async fn lock_idle(&self) {
        for vpn in self.iter() {
            vpn.lock_if_idle().await;
        }
    }
}

/// Whether the card has an established TCP connection from `address` (a tunnel address: the
/// upstream sockets to a VPN's networks bind it). Read from `/proc/net/tcp{,6}`, the table of
/// the card's own namespace. A table that cannot be read counts as no connection: the VPN
/// then locks on time, the safe side.
fn connection_open_from(address: IpAddr) -> bool {
    let table = match address {
        IpAddr::V4(_) => procfs::net::tcp(),
        IpAddr::V6(_) => procfs::net::tcp6(),
    };
    match table {
        Ok(entries) => entries.iter().any(|entry| {
            entry.state == procfs::net::TcpState::Established && entry.local_address.ip() == address
        }),
        Err(error) => {
            tracing::warn!(%error, "cannot read the TCP socket table: the idle lock counts time only");
            false
        }
    }
}

/// The interface's address and a route for each network into it, in the main table.
async fn route(interface: &str, vpn: &config::Vpn) -> Result<(), VpnError> {
    let failed = |source| VpnError::Netlink {
        interface: interface.to_string(),
        source,
    };
    let netlink = netconf::netlink::Netlink::connect().await.map_err(failed)?;
    netlink
        .set_addresses(interface, &[(IpAddr::V4(vpn.address), 32)])
        .await
        .map_err(failed)?;
    netlink.link_up(interface).await.map_err(failed)?;
    for network in &vpn.networks {
        let IpAddr::V4(destination) = network.0.addr() else {
            continue; // refused by the configuration check
        };
        netlink
            .replace_network_route(
                MAIN_TABLE,
                destination,
                network.0.prefix(),
                interface,
                vpn.address,
            )
            .await
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn names_and_networks() {
        let vpn = <crate::config::Config as crate::config::ConfigFile>::parse("c.toml", CORP)
            .unwrap()
            .vpn["corp"]
            .clone();
        assert!(vpn.covers("10.20.3.4".parse().unwrap()));
        assert!(!vpn.covers("10.21.0.1".parse().unwrap()));
        assert!(vpn.owns_name("intranet.corp.example"));
        assert!(vpn.owns_name("A.B.Corp.Example."));
        assert!(!vpn.owns_name("corp.example"), "*.x is the names under x");
        assert!(!vpn.owns_name("evilcorp.example"));
        assert!(vpn.owns_name("wiki.internal"));
    }

    /// The idle lock waits while a connection from the tunnel address is open, and locks
    /// once it is closed (here the "tunnel address" is loopback's: the kernel's socket table
    /// is what is read, whatever the interface).
    #[tokio::test]
    async fn the_idle_lock_waits_for_open_connections() {
        let text = CORP.replace("address = \"10.20.255.2\"", "address = \"127.0.0.1\"");
        let config =
            <crate::config::Config as crate::config::ConfigFile>::parse("c.toml", &text).unwrap();
        let vpns = super::Vpns::unrouted_for_tests(&config, &["corp"]);
        let vpn = vpns.get("corp").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let open = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let long_ago = || Instant::now() - Duration::from_secs(3600);
        *vpn.last_used.lock().unwrap() = long_ago();
        vpns.lock_idle().await;
        assert!(vpn.is_unlocked(), "locked under an open connection");
        drop((open, accepted, listener));
        // Closed sockets linger in TIME_WAIT/FIN states, which are not established.
        *vpn.last_used.lock().unwrap() = long_ago();
        vpns.lock_idle().await;
        assert!(
            !vpn.is_unlocked(),
            "still unlocked with nothing open, idle an hour"
        );
    }

    #[test]
    fn no_connection_is_open_from_an_unused_address() {
        assert!(!super::connection_open_from("192.0.2.77".parse().unwrap()));
    }

    /// A `[vpn.corp]` for tests elsewhere in the crate.
    pub const CORP: &str = "store = \"/nonexistent\"
[vpn.corp]
peer_public_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"
endpoint = \"198.51.100.7:51820\"
address = \"10.20.255.2\"
networks = [\"10.20.0.0/16\"]
names = [\"*.corp.example\", \"wiki.internal\"]
resolver = \"10.20.0.53:53\"
";
}
