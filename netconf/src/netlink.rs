//! Links, addresses, routes and policy-routing rules over rtnetlink: the only way the appliance
//! daemon and the card's interception change the network configuration (neither shells out to
//! `ip`), plus link events for the daemon's watch loop.
//!
//! Every call works in the network namespace of the thread that opened the socket
//! ([`Netlink::connect`], [`watch_links`]); tests use that to run them inside a lab namespace.
//!
//! The calls are written to be repeated: the daemon re-applies the whole configuration whenever
//! a link changes, so "add" means "make it so" ([`Netlink::set_addresses`],
//! [`Netlink::replace_default_route`], [`Netlink::ensure_rule`]) and deleting something that is
//! already gone is not an error.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use futures_util::stream::{Stream, StreamExt, TryStreamExt};
use nix::errno::Errno;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::packet_route::route::RouteAddress;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{
    RuleAction as KernelRuleAction, RuleAttribute, RuleFlags, RuleMessage,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{IpVersion, LinkUnspec, LinkWireguard, RouteMessageBuilder};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Linux limit for interface names (IFNAMSIZ minus the terminating NUL). Longer names are
/// refused before asking the kernel, which would silently truncate them and could match
/// another link.
const MAX_INTERFACE_NAME: usize = 15;
/// The protocol (`FRA_PROTOCOL`, `ip -d rule` shows `proto static`) of the rules the daemon
/// adds. It tells them apart from rules added by hand (`proto unspec`), also for the kernel when
/// deleting: see [`Netlink::delete_rule`].
const RULE_PROTOCOL: RouteProtocol = RouteProtocol::Static;
/// `RTMGRP_LINK`: the bit of the `RTNLGRP_LINK` multicast group in a netlink bind address.
const LINK_GROUP_BIT: u32 = rtnetlink::constants::RTMGRP_LINK;

/// The value of the first attribute of a kernel message that matches `$pattern`: the lookup
/// every message needs, its attributes being an unordered list of enum variants.
macro_rules! find_attribute {
    ($attributes:expr, $pattern:pat => $value:expr) => {
        $attributes.iter().find_map(|attribute| match attribute {
            $pattern => Some($value),
            _ => None,
        })
    };
}

/// What went wrong while reading or changing the network configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No link has this name (in the namespace of the netlink socket).
    #[error("no such link: {0:?}")]
    NoSuchLink(String),
    /// The kernel refused a request, or answered it with something unexpected.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being done, e.g. `adding 172.31.77.1/29 to card0`.
        what: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The kernel's WireGuard (its generic-netlink family, see [`crate::wireguard`]) refused a
    /// request, or answered with something unexpected.
    #[error("{what}: {source}")]
    Wireguard {
        /// What was being done, e.g. `configuring WireGuard on cw-corp`.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A WireGuard link still holds a private key or a peer after it was cleared: it could
    /// still send, so the caller must not believe it locked.
    #[error(
        "WireGuard on {interface} still has {peers} peer(s) and {} after clearing it",
        if *private_key { "a private key" } else { "no private key" }
    )]
    NotCleared {
        interface: String,
        private_key: bool,
        peers: usize,
    },
    /// The netlink socket could not be opened or bound.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// A rule cannot be deleted alone: the kernel matches a delete request by the fields it
    /// sets, so it would delete an earlier rule with the same priority and action but more
    /// selectors (see [`Netlink::delete_rule`]). Nothing was deleted.
    #[error("cannot delete rule `{rule}` alone: the kernel would delete {other} instead")]
    AmbiguousRule {
        /// The rule that was to be deleted.
        rule: PolicyRule,
        /// The rule the kernel would delete, described.
        other: String,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a kernel refusal (`EEXIST`, `EPERM`...).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { source, .. } => kernel_errno(source),
            NetlinkError::Io(error) | NetlinkError::Wireguard { source: error, .. } => {
                error.raw_os_error().map(Errno::from_raw)
            }
            NetlinkError::NoSuchLink(_)
            | NetlinkError::AmbiguousRule { .. }
            | NetlinkError::NotCleared { .. } => None,
        }
    }
}

/// The errno inside a kernel error answer.
fn kernel_errno(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message
            .code
            .map(|code| Errno::from_raw(code.get().saturating_abs())),
        _ => None,
    }
}

/// Whether `result` failed with one of `errnos`.
fn failed_with(result: &Result<(), rtnetlink::Error>, errnos: &[Errno]) -> bool {
    match result {
        Err(error) => kernel_errno(error).is_some_and(|errno| errnos.contains(&errno)),
        Ok(()) => false,
    }
}

/// Wraps a kernel error with what was being done.
fn kernel(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Kernel { what, source }
}

/// A policy-routing rule, the part of `ip rule` the appliance uses: a priority, optionally an
/// input interface, and what to do with matching packets.
///
/// # Why the appliance needs rules at all: fail closed
///
/// The inside interface gets two rules at consecutive priorities
/// (see [`PolicyRule::fail_closed_pair`]):
///
/// ```text
/// P:   iif <inside> lookup <card table>
/// P+1: iif <inside> prohibit
/// ```
///
/// The card table holds one route, the default via the card's inside address. While it is
/// there, everything from the inside goes to the card. When the card is gone (unplugged, link
/// down) the daemon flushes the card table; inside traffic then no longer finds a route at `P`
/// and hits `prohibit` at `P+1`, instead of falling through to the main table, whose default
/// route goes to the outside. Without the second rule, losing the card would quietly route the
/// protected computer straight to the untrusted network.
///
/// Rules name the interface, not its index, so they can (and should) be installed before the
/// inside link exists or is up: the kernel keeps such a rule "detached" until the link appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Rule priority (`ip rule ... priority N`); lower is tried first.
    pub priority: u32,
    /// Only packets arriving on this interface (`iif NAME`); `None` matches every packet.
    pub input_interface: Option<String>,
    /// What happens to a matching packet.
    pub action: RuleAction,
}

/// What a [`PolicyRule`] does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Look the destination up in this routing table (`lookup N`); if the table has no matching
    /// route, continue with the next rule.
    Lookup(u32),
    /// Refuse: the sender gets ICMP "communication administratively prohibited" (`prohibit`).
    Prohibit,
    /// Refuse: the sender gets ICMP "network unreachable" (`unreachable`).
    Unreachable,
}

impl PolicyRule {
    /// The two rules that send everything arriving on `inside` through the card table, and
    /// refuse it when that table has no route (see the type's documentation): `lookup
    /// card_table` at `priority`, `prohibit` at `priority + 1`.
    pub fn fail_closed_pair(inside: &str, card_table: u32, priority: u32) -> [PolicyRule; 2] {
        [
            PolicyRule {
                priority,
                input_interface: Some(inside.to_owned()),
                action: RuleAction::Lookup(card_table),
            },
            PolicyRule {
                priority: priority.saturating_add(1),
                input_interface: Some(inside.to_owned()),
                action: RuleAction::Prohibit,
            },
        ]
    }
}

/// `ip rule` syntax, e.g. `100: iif inside lookup 100`.
impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.priority)?;
        match &self.input_interface {
            Some(interface) => write!(f, "iif {interface} ")?,
            None => f.write_str("from all ")?,
        }
        match self.action {
            RuleAction::Lookup(table) => write!(f, "lookup {table}"),
            RuleAction::Prohibit => f.write_str("prohibit"),
            RuleAction::Unreachable => f.write_str("unreachable"),
        }
    }
}

/// A connection to the kernel's routing netlink, in the network namespace of the thread that
/// called [`Netlink::connect`]. Dropping it stops its connection task.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens a netlink socket and spawns the task that drives it (on the current tokio
    /// runtime).
    pub async fn connect() -> Result<Netlink, NetlinkError> {
        // The third value carries unsolicited messages, which a socket that joined no multicast
        // group never receives.
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
        let connection = tokio::spawn(connection);
        Ok(Netlink { handle, connection })
    }

    /// The kernel's index of the link called `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(name).await?.header.index)
    }

    /// Sets the link administratively up (`ip link set NAME up`).
    pub async fn link_up(&self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(name, true).await
    }

    /// Sets the link administratively down (`ip link set NAME down`).
    pub async fn link_down(&self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(name, false).await
    }

    /// Sets the link administratively up or down.
    async fn set_link(&self, name: &str, up: bool) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        let change = LinkUnspec::new_with_index(index);
        let (change, state) = if up {
            (change.up(), "up")
        } else {
            (change.down(), "down")
        };
        self.handle
            .link()
            .change(change.build())
            .execute()
            .await
            .map_err(kernel(format!("setting link {name} {state}")))
    }

    /// Creates the kernel WireGuard link `name` (`ip link add NAME type wireguard`), down, with
    /// no key and no peer, after deleting one an earlier run left behind (a crash leaves the
    /// link, and whatever key and peer it had). Fails when the kernel has no WireGuard.
    pub async fn recreate_wireguard_link(&self, name: &str) -> Result<(), NetlinkError> {
        self.delete_link(name).await?;
        self.handle
            .link()
            .add(LinkWireguard::new(name).build())
            .execute()
            .await
            .map_err(kernel(format!("creating the WireGuard link {name}")))
    }

    /// Deletes the link `name` (`ip link del NAME`); one already gone is not an error.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        let index = match self.link_index(name).await {
            Err(NetlinkError::NoSuchLink(_)) => return Ok(()),
            found => found?,
        };
        let result = self.handle.link().del(index).execute().await;
        if failed_with(&result, &[Errno::ENODEV]) {
            return Ok(());
        }
        result.map_err(kernel(format!("deleting link {name}")))
    }

    /// The source address the kernel gives a packet to `destination` from a socket bound to
    /// no address (`ip route get DESTINATION`, its `src`); `None` when no route says.
    pub async fn source_toward(&self, destination: IpAddr) -> Result<Option<IpAddr>, NetlinkError> {
        let mut query = RouteMessage::default();
        let (family, length) = match destination {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        query.header.address_family = family;
        query.header.destination_prefix_length = length;
        query
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        let mut answers = pin!(self.handle.route().get(query).execute());
        let route = answers
            .try_next()
            .await
            .map_err(kernel(format!("looking up the route to {destination}")))?;
        Ok(route.and_then(|route| {
            find_attribute!(route.attributes, RouteAttribute::PrefSource(source) => source.clone())
        })
        .and_then(|source| match source {
            RouteAddress::Inet(address) => Some(IpAddr::V4(address)),
            RouteAddress::Inet6(address) => Some(IpAddr::V6(address)),
            _ => None,
        }))
    }

    /// Whether the link can carry packets now: administratively up and operationally up
    /// (carrier present; for a veth, its peer is up too). See [`LinkEvent::Changed`].
    pub async fn link_is_up(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(link_message_is_up(&self.link(name).await?))
    }

    /// The addresses on the link that [`Netlink::set_addresses`] manages: every IPv4 and IPv6
    /// address except IPv6 link-local ones (`fe80::/10`, which the kernel makes itself) and
    /// host-scope ones (loopback). Unordered.
    pub async fn addresses(&self, name: &str) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let index = self.link_index(name).await?;
        let messages = self.address_messages(name, index).await?;
        Ok(messages.iter().filter_map(managed_address).collect())
    }

    /// Makes the link's addresses exactly `wanted` (address, prefix length): removes the others
    /// (see [`Netlink::addresses`] for which ones count), then adds the missing ones. Running
    /// it again changes nothing. IPv6 link-local addresses in `wanted` are ignored.
    ///
    /// IPv6 addresses are added without duplicate address detection: the appliance's links are
    /// point to point with nothing to collide with, and a tentative address could not be bound
    /// for a second or two.
    pub async fn set_addresses(
        &self,
        name: &str,
        wanted: &[(IpAddr, u8)],
    ) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        let wanted: Vec<(IpAddr, u8)> = wanted
            .iter()
            .copied()
            .filter(|(address, _)| !is_ipv6_link_local(*address))
            .collect();

        for message in self.address_messages(name, index).await? {
            let Some((address, prefix)) = managed_address(&message) else {
                continue;
            };
            if wanted.contains(&(address, prefix)) {
                continue;
            }
            let result = self.handle.address().del(message).execute().await;
            // Removing a primary IPv4 address can take its secondaries with it.
            if !failed_with(&result, &[Errno::EADDRNOTAVAIL]) {
                result.map_err(kernel(format!("removing {address}/{prefix} from {name}")))?;
            }
        }

        let mut present: Vec<(IpAddr, u8)> = self
            .address_messages(name, index)
            .await?
            .iter()
            .filter_map(managed_address)
            .collect();
        for (address, prefix) in wanted {
            if present.contains(&(address, prefix)) {
                continue;
            }
            let mut request = self.handle.address().add(index, address, prefix);
            if address.is_ipv6() {
                request
                    .message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            let result = request.execute().await;
            // An address the kernel gives host scope (127.0.0.2/8) is never "present" above.
            if !failed_with(&result, &[Errno::EEXIST]) {
                result.map_err(kernel(format!("adding {address}/{prefix} to {name}")))?;
            }
            present.push((address, prefix));
        }
        Ok(())
    }

    /// Makes `default via GATEWAY dev DEV table TABLE` the table's default route, creating it
    /// or replacing the one there (`ip route replace`).
    pub async fn replace_default_route(
        &self,
        table: u32,
        gateway: Ipv4Addr,
        dev: &str,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway);
        let what = format!("replacing default via {gateway} dev {dev} table {table}");
        self.replace_route(table, dev, route, what).await
    }

    /// Makes `NETWORK/PREFIX dev DEV src SRC table TABLE` the table's route to that network
    /// (`ip route replace`): the card's VPN networks into their tunnel interface.
    pub async fn replace_network_route(
        &self,
        table: u32,
        network: Ipv4Addr,
        prefix: u8,
        dev: &str,
        src: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(network, prefix)
            .pref_source(src);
        let what = format!("replacing {network}/{prefix} dev {dev} src {src} table {table}");
        self.replace_route(table, dev, route, what).await
    }

    /// Makes `route`, in `table` and out of `dev`, the table's route to its destination,
    /// creating it or replacing the one there (`ip route replace`).
    async fn replace_route(
        &self,
        table: u32,
        dev: &str,
        route: RouteMessageBuilder<Ipv4Addr>,
        what: String,
    ) -> Result<(), NetlinkError> {
        let index = self.link_index(dev).await?;
        let route = route.table_id(table).output_interface(index).build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(kernel(what))
    }

    /// Deletes every IPv4 route in the table (`ip route flush table TABLE`).
    pub async fn flush_table(&self, table: u32) -> Result<(), NetlinkError> {
        for route in self.ipv4_routes(table).await? {
            let result = self.handle.route().del(route).execute().await;
            // A route that vanished meanwhile (its link went away) is as good as deleted.
            if !failed_with(&result, &[Errno::ESRCH]) {
                result.map_err(kernel(format!("flushing table {table}")))?;
            }
        }
        Ok(())
    }

    /// Whether the table has an IPv4 unicast default route (`0.0.0.0/0` via somewhere).
    pub async fn table_has_default(&self, table: u32) -> Result<bool, NetlinkError> {
        Ok(self.ipv4_routes(table).await?.iter().any(|route| {
            route.header.destination_prefix_length == 0 && route.header.kind == RouteType::Unicast
        }))
    }

    /// Adds the rule unless an identical one (same priority, input interface and action) is
    /// already there. See [`PolicyRule`] for why the appliance's rules matter.
    pub async fn ensure_rule(&self, rule: &PolicyRule) -> Result<(), NetlinkError> {
        if self.rules().await?.contains(rule) {
            return Ok(());
        }
        let mut request = self.handle.rule().add().v4().priority(rule.priority);
        request
            .message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RULE_PROTOCOL));
        if let Some(interface) = &rule.input_interface {
            request = request.input_interface(interface.clone());
        }
        let mut request = match rule.action {
            RuleAction::Lookup(table) => request.action(KernelRuleAction::ToTable).table_id(table),
            RuleAction::Prohibit => request.action(KernelRuleAction::Prohibit),
            RuleAction::Unreachable => request.action(KernelRuleAction::Unreachable),
        };
        if !matches!(rule.action, RuleAction::Lookup(_)) {
            // Refusing rules name no table (the request starts out as `lookup main`).
            request.message_mut().header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        let result = request.execute().await;
        // EEXIST: someone added the very same rule since we looked.
        if failed_with(&result, &[Errno::EEXIST]) {
            return Ok(());
        }
        result.map_err(kernel(format!("adding rule `{rule}`")))
    }

    /// The IPv4 policy rules, in the kernel's order (by priority). Rules with selectors a
    /// [`PolicyRule`] cannot express (source or destination prefix, fwmark, output interface,
    /// `not`, ...) or other actions (goto, blackhole) are left out.
    pub async fn rules(&self) -> Result<Vec<PolicyRule>, NetlinkError> {
        Ok(self
            .rule_messages()
            .await?
            .iter()
            .filter_map(policy_rule)
            .collect())
    }

    /// Deletes every IPv4 rule identical to `rule`. A rule that is not there is not an error.
    ///
    /// The kernel deletes the first rule (in priority order) that matches the fields a delete
    /// request sets, treating unset ones as "any": a request for `1000: iif x0 lookup 100`
    /// also matches an earlier `1000: iif x0 fwmark 0x1 lookup 100`, and a request cannot say
    /// "no fwmark". So each rule is deleted with the kernel's own description of it (which
    /// includes its protocol: the daemon's rules are `proto static`, hand-made ones usually
    /// `proto unspec`), and if an earlier rule would still match, nothing is deleted and the
    /// answer is [`NetlinkError::AmbiguousRule`].
    pub async fn delete_rule(&self, rule: &PolicyRule) -> Result<(), NetlinkError> {
        let messages = self.rule_messages().await?;
        let mut requests = Vec::new();
        for (position, message) in messages.iter().enumerate() {
            if policy_rule(message).as_ref() != Some(rule) {
                continue;
            }
            let request = rule_delete_request(message);
            // Earlier identical rules are deleted before this one; any other earlier rule
            // that matches the request would be deleted in its place.
            let victim = messages[..position].iter().find(|earlier| {
                policy_rule(earlier).as_ref() != Some(rule)
                    && kernel_rule_matches(&request, earlier)
            });
            if let Some(victim) = victim {
                return Err(NetlinkError::AmbiguousRule {
                    rule: rule.clone(),
                    other: describe_rule(victim),
                });
            }
            requests.push(request);
        }
        for request in requests {
            let result = self.handle.rule().del(request).execute().await;
            if !failed_with(&result, &[Errno::ENOENT]) {
                result.map_err(kernel(format!("deleting rule `{rule}`")))?;
            }
        }
        Ok(())
    }

    /// Makes `fwmark MARK lookup TABLE` a rule (`ip rule add fwmark MARK lookup TABLE`),
    /// deleting any there already first, so that doing it again (a restart after a crash) does
    /// not stack duplicates. The kernel gives it the priority just before the first rule after
    /// `lookup local`, as `ip rule add` without a priority does.
    ///
    /// Used for transparent interception: packets the firewall marks are looked up in a table
    /// whose only route delivers them locally ([`Netlink::replace_local_default_route`]).
    pub async fn replace_mark_rule(&self, mark: u32, table: u32) -> Result<(), NetlinkError> {
        self.delete_mark_rule(mark, table).await?;
        let mut request = self
            .handle
            .rule()
            .add()
            .v4()
            .fw_mark(mark)
            .action(KernelRuleAction::ToTable)
            .table_id(table);
        request
            .message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RULE_PROTOCOL));
        request.execute().await.map_err(kernel(format!(
            "adding rule `fwmark {mark:#x} lookup {table}`"
        )))
    }

    /// Deletes every `fwmark MARK lookup TABLE` rule (`ip rule del fwmark MARK lookup TABLE`,
    /// until none is left). None there is not an error.
    pub async fn delete_mark_rule(&self, mark: u32, table: u32) -> Result<(), NetlinkError> {
        let mut request = RuleMessage::default();
        request.header.family = AddressFamily::Inet;
        request.header.action = KernelRuleAction::ToTable;
        request.attributes.push(RuleAttribute::FwMark(mark));
        request.attributes.push(RuleAttribute::Table(table));
        loop {
            let result = self.handle.rule().del(request.clone()).execute().await;
            if failed_with(&result, &[Errno::ENOENT]) {
                return Ok(());
            }
            result.map_err(kernel(format!(
                "deleting rule `fwmark {mark:#x} lookup {table}`"
            )))?;
        }
    }

    /// Makes `local 0.0.0.0/0 dev DEV table TABLE` the table's route (`ip route replace local
    /// 0.0.0.0/0 dev DEV table TABLE`): every IPv4 packet that looks this table up is delivered
    /// to this host, whatever its destination. TPROXY needs it for the packets it hands to a
    /// local socket.
    pub async fn replace_local_default_route(
        &self,
        table: u32,
        dev: &str,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .kind(RouteType::Local)
            .scope(RouteScope::Host);
        let what = format!("replacing local 0.0.0.0/0 dev {dev} table {table}");
        self.replace_route(table, dev, route, what).await
    }

    /// The link called `name`, as the kernel describes it.
    async fn link(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
            return Err(NetlinkError::NoSuchLink(name.to_owned()));
        }
        let mut links = pin!(self.handle.link().get().match_name(name).execute());
        match links.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(NetlinkError::NoSuchLink(name.to_owned())),
            Err(error) if kernel_errno(&error) == Some(Errno::ENODEV) => {
                Err(NetlinkError::NoSuchLink(name.to_owned()))
            }
            Err(source) => Err(NetlinkError::Kernel {
                what: format!("looking up link {name}"),
                source,
            }),
        }
    }

    /// Every address (both families) on the link with this index.
    async fn address_messages(
        &self,
        name: &str,
        index: u32,
    ) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(kernel(format!("listing addresses of {name}")))
    }

    /// Every IPv4 route in the table.
    async fn ipv4_routes(&self, table: u32) -> Result<Vec<RouteMessage>, NetlinkError> {
        // A dump of all IPv4 tables, filtered here: without NETLINK_GET_STRICT_CHK the kernel
        // ignores the table in the request.
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(kernel(format!("listing routes of table {table}")))?;
        Ok(routes
            .into_iter()
            .filter(|route| route_table(route) == table)
            .collect())
    }

    /// Every IPv4 rule, as the kernel describes it.
    async fn rule_messages(&self) -> Result<Vec<RuleMessage>, NetlinkError> {
        self.handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(kernel("listing rules"))
    }
}

/// Whether a link can carry packets: administratively up, and operationally up. A driver that
/// does not report an operational state (`UNKNOWN`, e.g. loopback, tun) counts as up when it
/// has a carrier (`LOWER_UP`).
fn link_message_is_up(link: &LinkMessage) -> bool {
    let flags = link.header.flags;
    let operational = find_attribute!(link.attributes, LinkAttribute::OperState(state) => *state);
    flags.contains(LinkFlags::Up)
        && match operational {
            Some(State::Up) => true,
            Some(State::Unknown) | None => flags.contains(LinkFlags::LowerUp),
            Some(_) => false,
        }
}

/// The link's name (`IFLA_IFNAME`).
fn link_message_name(link: &LinkMessage) -> Option<String> {
    find_attribute!(link.attributes, LinkAttribute::IfName(name) => name.clone())
}

/// The address and prefix length of an address the appliance manages (not IPv6 link-local,
/// not host scope).
fn managed_address(message: &AddressMessage) -> Option<(IpAddr, u8)> {
    if message.header.scope == AddressScope::Host {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links, and the only one IPv6 sends.
    let local = find_attribute!(message.attributes, AddressAttribute::Local(address) => *address);
    let address = local.or_else(
        || find_attribute!(message.attributes, AddressAttribute::Address(address) => *address),
    )?;
    if is_ipv6_link_local(address) {
        return None;
    }
    Some((address, message.header.prefix_len))
}

fn is_ipv6_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V6(address) => address.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    }
}

/// The route's table: `RTA_TABLE` when present (tables above 255 only fit there), else the
/// header's.
fn route_table(route: &RouteMessage) -> u32 {
    find_attribute!(route.attributes, RouteAttribute::Table(table) => *table)
        .unwrap_or(u32::from(route.header.table))
}

/// The kernel's rule as a [`PolicyRule`], or `None` if it has selectors or an action a
/// `PolicyRule` cannot express (such a rule must never compare equal to one).
fn policy_rule(message: &RuleMessage) -> Option<PolicyRule> {
    let header = &message.header;
    if header.family != AddressFamily::Inet
        || header.dst_len != 0
        || header.src_len != 0
        || header.tos != 0
        || header.flags.contains(RuleFlags::Invert)
    {
        return None;
    }
    let mut priority = 0; // the kernel leaves out FRA_PRIORITY when it is 0
    let mut input_interface = None;
    let table = rule_table(message);
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(value) => priority = *value,
            RuleAttribute::Iifname(name) => input_interface = Some(name.clone()),
            RuleAttribute::Table(_) => {}
            // Present but meaning "not set".
            RuleAttribute::Protocol(_) => {}
            RuleAttribute::FwMark(0) | RuleAttribute::FwMask(0) => {}
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            RuleAttribute::L3MDev(false) => {}
            // Any other attribute selects packets or acts in a way a PolicyRule cannot say.
            _ => return None,
        }
    }
    let action = match header.action {
        KernelRuleAction::ToTable => RuleAction::Lookup(table),
        KernelRuleAction::Prohibit => RuleAction::Prohibit,
        KernelRuleAction::Unreachable => RuleAction::Unreachable,
        _ => return None,
    };
    Some(PolicyRule {
        priority,
        input_interface,
        action,
    })
}

/// The request that deletes the rule `message` describes: the description itself, with the
/// priority always set (the kernel leaves out priority 0, and a request without one matches
/// every priority).
fn rule_delete_request(message: &RuleMessage) -> RuleMessage {
    let mut request = message.clone();
    if !request
        .attributes
        .iter()
        .any(|attribute| matches!(attribute, RuleAttribute::Priority(_)))
    {
        request.attributes.push(RuleAttribute::Priority(0));
    }
    request
}

/// Whether the kernel would take `candidate` for the rule a delete `request` (made by
/// [`rule_delete_request`] for a rule [`policy_rule`] understands) asks for. Mirrors the
/// kernel's `rule_find()` for the fields such a request can set: action, table, priority,
/// input interface and protocol; each only when set, everything else is "any".
fn kernel_rule_matches(request: &RuleMessage, candidate: &RuleMessage) -> bool {
    let priority = |message: &RuleMessage| find_attribute!(message.attributes, RuleAttribute::Priority(priority) => *priority);
    let input_interface = |message: &RuleMessage| find_attribute!(message.attributes, RuleAttribute::Iifname(name) => name.clone());
    let protocol = |message: &RuleMessage| find_attribute!(message.attributes, RuleAttribute::Protocol(protocol) => *protocol);
    let request_table = rule_table(request);
    let request_protocol = protocol(request).filter(|protocol| *protocol != RouteProtocol::Unspec);
    (request.header.action == KernelRuleAction::Unspec
        || candidate.header.action == request.header.action)
        && (request_table == 0 || rule_table(candidate) == request_table)
        && priority(request).is_none_or(|wanted| priority(candidate).unwrap_or(0) == wanted)
        && input_interface(request).is_none_or(|wanted| input_interface(candidate) == Some(wanted))
        && request_protocol.is_none_or(|wanted| protocol(candidate) == Some(wanted))
}

/// The rule's table: `FRA_TABLE` when present, else the header's.
fn rule_table(message: &RuleMessage) -> u32 {
    find_attribute!(message.attributes, RuleAttribute::Table(table) => *table)
        .unwrap_or(u32::from(message.header.table))
}

/// A rule the [`PolicyRule`] model may not express, for error messages.
fn describe_rule(message: &RuleMessage) -> String {
    let selectors: Vec<String> = message
        .attributes
        .iter()
        .filter(|attribute| !matches!(attribute, RuleAttribute::Table(_)))
        .map(|attribute| format!("{attribute:?}"))
        .collect();
    format!(
        "the rule with action {:?}, table {} and {}",
        message.header.action,
        rule_table(message),
        selectors.join(", ")
    )
}

/// A change of a link, for the daemon's watch loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed (state, flags, name, any attribute). `up` is what
    /// [`Netlink::link_is_up`] would answer now. The kernel sends these often and not only
    /// for state changes: compare with what you knew.
    Changed {
        /// The link's name.
        name: String,
        /// The link's index.
        index: u32,
        /// Administratively and operationally up.
        up: bool,
    },
    /// The link disappeared (deleted, unplugged, moved to another namespace).
    Removed {
        /// The link's name.
        name: String,
        /// The link's index.
        index: u32,
    },
    /// The kernel dropped notifications because they were not read fast enough (its socket
    /// buffer overflowed). The watcher has read every link again: the events right after this
    /// one are a `Removed` for each link that vanished unseen and a `Changed` for every link
    /// there is, so a consumer that handles those needs to do nothing more here.
    Lost,
}

/// The stream of [`LinkEvent`]s from [`watch_links`]. Dropping it stops its tasks.
#[derive(Debug)]
pub struct LinkEvents {
    events: mpsc::UnboundedReceiver<LinkEvent>,
    /// The netlink connection, and the task that turns its messages into events.
    tasks: [JoinHandle<()>; 2],
}

impl LinkEvents {
    /// The next event; `None` once the netlink socket is closed.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }
}

impl Stream for LinkEvents {
    type Item = LinkEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LinkEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Subscribes to link changes (the `RTNLGRP_LINK` multicast group) in the namespace of the
/// calling thread. Subscribe first, then read the current state: a change between the two is
/// then seen as an event, never lost.
///
/// Changes are not missed later either: if the kernel drops notifications because they were
/// not read fast enough (its socket buffer overflowed), the watcher says so
/// ([`LinkEvent::Lost`]), reads every link again and reports each as [`LinkEvent::Changed`],
/// and those that vanished meanwhile as [`LinkEvent::Removed`].
pub async fn watch_links() -> Result<LinkEvents, NetlinkError> {
    let (mut connection, handle, messages) = rtnetlink::new_connection()?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, LINK_GROUP_BIT))?;
    let connection = tokio::spawn(connection);
    // The links present now (read after subscribing), so that a resynchronisation can tell
    // which ones disappeared.
    let links = match link_messages(&handle).await {
        Ok(links) => links,
        Err(error) => {
            connection.abort();
            return Err(error);
        }
    };
    let mut known = HashMap::new();
    resynchronise(&mut known, &links);
    let (sender, events) = mpsc::unbounded_channel();
    let forward = tokio::spawn(forward_link_events(handle, messages, known, sender));
    Ok(LinkEvents {
        events,
        tasks: [connection, forward],
    })
}

/// Turns the multicast messages into events until the socket or the receiver closes.
/// `known`: the links seen so far, by index.
async fn forward_link_events(
    handle: rtnetlink::Handle,
    mut messages: impl Stream<
        Item = (
            NetlinkMessage<RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    > + Unpin,
    mut known: HashMap<u32, String>,
    sender: mpsc::UnboundedSender<LinkEvent>,
) {
    while let Some((message, _)) = messages.next().await {
        let events = if let NetlinkPayload::Overrun(_) = message.payload {
            tracing::warn!("link notifications were lost; reading every link again");
            match link_messages(&handle).await {
                Ok(links) => std::iter::once(LinkEvent::Lost)
                    .chain(resynchronise(&mut known, &links))
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the links after losing notifications");
                    vec![LinkEvent::Lost]
                }
            }
        } else {
            let event = link_event(message);
            match &event {
                Some(LinkEvent::Changed { name, index, .. }) => {
                    known.insert(*index, name.clone());
                }
                Some(LinkEvent::Removed { index, .. }) => {
                    known.remove(index);
                }
                Some(LinkEvent::Lost) | None => {}
            }
            event.into_iter().collect()
        };
        for event in events {
            if sender.send(event).is_err() {
                return;
            }
        }
    }
}

/// Every link, as the kernel describes it.
async fn link_messages(handle: &rtnetlink::Handle) -> Result<Vec<LinkMessage>, NetlinkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(kernel("listing links"))
}

/// The events that bring a watcher who knew the links `known` up to date with `links` (the
/// kernel's full list): `Removed` for each known link that is gone, then `Changed` for every
/// link. `known` becomes `links`.
fn resynchronise(known: &mut HashMap<u32, String>, links: &[LinkMessage]) -> Vec<LinkEvent> {
    let current: HashMap<u32, String> = links
        .iter()
        .filter_map(|link| Some((link.header.index, link_message_name(link)?)))
        .collect();
    let mut gone: Vec<(u32, String)> = known
        .drain()
        .filter(|(index, _)| !current.contains_key(index))
        .collect();
    gone.sort();
    let mut events: Vec<LinkEvent> = gone
        .into_iter()
        .map(|(index, name)| LinkEvent::Removed { name, index })
        .collect();
    events.extend(links.iter().filter_map(|link| {
        Some(LinkEvent::Changed {
            name: link_message_name(link)?,
            index: link.header.index,
            up: link_message_is_up(link),
        })
    }));
    *known = current;
    events
}

/// The event an `RTM_NEWLINK` or `RTM_DELLINK` notification means, if any.
fn link_event(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    let (link, removed) = match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => (link, false),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => (link, true),
        _ => return None,
    };
    // Per-family notifications (bridge ports) repeat what the plain one says.
    if link.header.interface_family != AddressFamily::Unspec {
        return None;
    }
    let name = link_message_name(&link)?;
    let index = link.header.index;
    Some(if removed {
        LinkEvent::Removed { name, index }
    } else {
        LinkEvent::Changed {
            name,
            index,
            up: link_message_is_up(&link),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rtnetlink::packet_route::link::LinkHeader;

    fn link_message(flags: LinkFlags, state: Option<State>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index: 7,
            flags,
            ..LinkHeader::default()
        };
        link.attributes
            .push(LinkAttribute::IfName("card0".to_owned()));
        if let Some(state) = state {
            link.attributes.push(LinkAttribute::OperState(state));
        }
        link
    }

    #[test]
    fn a_link_is_up_when_admin_and_operational_state_say_so() {
        let up = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        assert!(link_message_is_up(&link_message(up, Some(State::Up))));
        // Driver without operational state: carrier decides.
        assert!(link_message_is_up(&link_message(up, Some(State::Unknown))));
        assert!(!link_message_is_up(&link_message(
            LinkFlags::Up,
            Some(State::Unknown)
        )));
        // veth whose peer is down; cable unplugged; administratively down.
        assert!(!link_message_is_up(&link_message(
            LinkFlags::Up,
            Some(State::LowerLayerDown)
        )));
        assert!(!link_message_is_up(&link_message(
            LinkFlags::Up,
            Some(State::Down)
        )));
        assert!(!link_message_is_up(&link_message(
            LinkFlags::LowerUp,
            Some(State::Down)
        )));
    }

    #[test]
    fn link_notifications_become_events() {
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let new = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link_message(
            up,
            Some(State::Up),
        )));
        assert_eq!(
            link_event(new),
            Some(LinkEvent::Changed {
                name: "card0".to_owned(),
                index: 7,
                up: true
            })
        );
        let deleted = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link_message(
            LinkFlags::empty(),
            Some(State::Down),
        )));
        assert_eq!(
            link_event(deleted),
            Some(LinkEvent::Removed {
                name: "card0".to_owned(),
                index: 7
            })
        );
        let mut bridge_port = link_message(up, Some(State::Up));
        bridge_port.header.interface_family = AddressFamily::Bridge;
        let bridge_port = NetlinkMessage::from(RouteNetlinkMessage::NewLink(bridge_port));
        assert_eq!(link_event(bridge_port), None);
        let overrun = NetlinkMessage::new(
            rtnetlink::packet_core::NetlinkHeader::default(),
            NetlinkPayload::Overrun(Vec::new()),
        );
        assert_eq!(link_event(overrun), None);
    }

    #[test]
    fn resynchronising_reports_every_link_and_the_vanished_ones() {
        let named = |index: u32, name: &str, up: bool| {
            let mut link = link_message(
                if up {
                    LinkFlags::Up | LinkFlags::LowerUp
                } else {
                    LinkFlags::empty()
                },
                Some(if up { State::Up } else { State::Down }),
            );
            link.header.index = index;
            link.attributes = vec![
                LinkAttribute::IfName(name.to_owned()),
                LinkAttribute::OperState(if up { State::Up } else { State::Down }),
            ];
            link
        };
        let mut known = HashMap::new();
        let first = resynchronise(&mut known, &[named(1, "lo", true), named(7, "card0", true)]);
        assert_eq!(first.len(), 2);
        assert_eq!(known.len(), 2);
        // card0 went away and came back with a new index; eth0 appeared.
        let events = resynchronise(
            &mut known,
            &[
                named(1, "lo", true),
                named(9, "card0", false),
                named(3, "eth0", true),
            ],
        );
        assert_eq!(
            events,
            vec![
                LinkEvent::Removed {
                    name: "card0".to_owned(),
                    index: 7
                },
                LinkEvent::Changed {
                    name: "lo".to_owned(),
                    index: 1,
                    up: true
                },
                LinkEvent::Changed {
                    name: "card0".to_owned(),
                    index: 9,
                    up: false
                },
                LinkEvent::Changed {
                    name: "eth0".to_owned(),
                    index: 3,
                    up: true
                },
            ]
        );
        assert_eq!(known.get(&9).map(String::as_str), Some("card0"));
        assert!(!known.contains_key(&7));
    }

    fn rule_message(action: KernelRuleAction, attributes: Vec<RuleAttribute>) -> RuleMessage {
        let mut message = RuleMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.action = action;
        message.attributes = attributes;
        message
    }

    #[test]
    fn kernel_rules_become_policy_rules() {
        let lookup = rule_message(
            KernelRuleAction::ToTable,
            vec![
                RuleAttribute::Table(100),
                RuleAttribute::Priority(1000),
                RuleAttribute::Iifname("inside".to_owned()),
                RuleAttribute::SuppressPrefixLen(u32::MAX),
            ],
        );
        assert_eq!(
            policy_rule(&lookup),
            Some(PolicyRule {
                priority: 1000,
                input_interface: Some("inside".to_owned()),
                action: RuleAction::Lookup(100),
            })
        );
        // `0: from all lookup local`: no FRA_PRIORITY, table only in the header.
        let mut local = rule_message(KernelRuleAction::ToTable, vec![]);
        local.header.table = 255;
        assert_eq!(
            policy_rule(&local),
            Some(PolicyRule {
                priority: 0,
                input_interface: None,
                action: RuleAction::Lookup(255),
            })
        );
        let prohibit = rule_message(
            KernelRuleAction::Prohibit,
            vec![RuleAttribute::Priority(1001)],
        );
        assert_eq!(
            policy_rule(&prohibit).map(|rule| rule.action),
            Some(RuleAction::Prohibit)
        );
    }

    #[test]
    fn rules_with_other_selectors_are_not_policy_rules() {
        let with = |attribute: RuleAttribute| {
            rule_message(
                KernelRuleAction::ToTable,
                vec![
                    RuleAttribute::Priority(5),
                    RuleAttribute::Table(100),
                    attribute,
                ],
            )
        };
        for attribute in [
            RuleAttribute::FwMark(1),
            RuleAttribute::Oifname("outside".to_owned()),
            RuleAttribute::Source(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0))),
            RuleAttribute::SuppressPrefixLen(0),
        ] {
            assert_eq!(policy_rule(&with(attribute.clone())), None, "{attribute:?}");
        }
        let mut inverted = with(RuleAttribute::Iifname("inside".to_owned()));
        inverted.header.flags = RuleFlags::Invert;
        assert_eq!(policy_rule(&inverted), None);
        // Detached (the interface does not exist yet) is still the same rule.
        let mut detached = with(RuleAttribute::Iifname("inside".to_owned()));
        detached.header.flags = RuleFlags::IifDetached;
        assert!(policy_rule(&detached).is_some());
        let mut sourced = with(RuleAttribute::Protocol(
            rtnetlink::packet_route::route::RouteProtocol::Boot,
        ));
        assert!(policy_rule(&sourced).is_some());
        sourced.header.src_len = 8;
        assert_eq!(policy_rule(&sourced), None);
        assert_eq!(
            policy_rule(&rule_message(KernelRuleAction::Goto, vec![])),
            None
        );
    }

    #[test]
    fn delete_requests_match_like_the_kernel() {
        use rtnetlink::packet_route::route::RouteProtocol;
        let rule = |priority: u32, protocol: RouteProtocol, extra: Vec<RuleAttribute>| {
            let mut attributes = vec![
                RuleAttribute::Table(100),
                RuleAttribute::Priority(priority),
                RuleAttribute::Protocol(protocol),
            ];
            attributes.extend(extra);
            rule_message(KernelRuleAction::ToTable, attributes)
        };
        let iif = || RuleAttribute::Iifname("x0".to_owned());
        let ours = rule_delete_request(&rule(1000, RULE_PROTOCOL, vec![iif()]));
        // A hand-made rule with more selectors: told apart by its protocol.
        let by_hand = rule(
            1000,
            RouteProtocol::Unspec,
            vec![iif(), RuleAttribute::FwMark(1)],
        );
        assert!(!kernel_rule_matches(&ours, &by_hand));
        // The same with our protocol: the kernel cannot tell them apart.
        let lookalike = rule(1000, RULE_PROTOCOL, vec![iif(), RuleAttribute::FwMark(1)]);
        assert!(kernel_rule_matches(&ours, &lookalike));
        assert!(!kernel_rule_matches(
            &ours,
            &rule(1001, RULE_PROTOCOL, vec![iif()])
        ));
        assert!(!kernel_rule_matches(
            &ours,
            &rule(1000, RULE_PROTOCOL, vec![])
        ));
        // No interface in the request: any interface matches.
        let from_all = rule_delete_request(&rule(1000, RULE_PROTOCOL, vec![]));
        assert!(kernel_rule_matches(
            &from_all,
            &rule(1000, RULE_PROTOCOL, vec![iif()])
        ));
        // Refusing rules have no table: any table matches, the action must.
        let prohibit = rule_delete_request(&rule_message(
            KernelRuleAction::Prohibit,
            vec![RuleAttribute::Priority(5)],
        ));
        assert!(kernel_rule_matches(
            &prohibit,
            &rule_message(
                KernelRuleAction::Prohibit,
                vec![RuleAttribute::Priority(5), RuleAttribute::Table(7)]
            )
        ));
        assert!(!kernel_rule_matches(
            &prohibit,
            &rule(5, RULE_PROTOCOL, vec![])
        ));
        // Priority 0 is left out of the kernel's description; the request names it.
        let local = rule_message(KernelRuleAction::ToTable, vec![RuleAttribute::Table(255)]);
        let request = rule_delete_request(&local);
        assert!(request.attributes.contains(&RuleAttribute::Priority(0)));
        assert!(kernel_rule_matches(&request, &local));
        assert!(!kernel_rule_matches(
            &request,
            &rule_message(
                KernelRuleAction::ToTable,
                vec![RuleAttribute::Table(255), RuleAttribute::Priority(9)]
            )
        ));
    }

    #[test]
    fn the_fail_closed_pair_looks_up_then_prohibits() {
        let [lookup, prohibit] = PolicyRule::fail_closed_pair("inside", 100, 1000);
        assert_eq!(lookup.to_string(), "1000: iif inside lookup 100");
        assert_eq!(prohibit.to_string(), "1001: iif inside prohibit");
    }

    #[test]
    fn routes_report_their_full_table() {
        let mut route = RouteMessage::default();
        route.header.table = 252; // RT_TABLE_COMPAT: the real id is in RTA_TABLE
        route.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(route_table(&route), 1000);
        let mut main = RouteMessage::default();
        main.header.table = RouteHeader::RT_TABLE_MAIN;
        assert_eq!(route_table(&main), 254);
    }

    #[test]
    fn managed_addresses_skip_link_local_and_host_scope() {
        let message = |address: IpAddr, scope: AddressScope, local: bool| {
            let mut message = AddressMessage::default();
            message.header.prefix_len = 24;
            message.header.scope = scope;
            message.attributes.push(AddressAttribute::Address(address));
            if local {
                message.attributes.push(AddressAttribute::Local(address));
            }
            message
        };
        let v4: IpAddr = "172.31.77.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let link_local: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(
            managed_address(&message(v4, AddressScope::Universe, true)),
            Some((v4, 24))
        );
        assert_eq!(
            managed_address(&message(v6, AddressScope::Universe, false)),
            Some((v6, 24))
        );
        assert_eq!(
            managed_address(&message(link_local, AddressScope::Link, false)),
            None
        );
        assert_eq!(
            managed_address(&message(v4, AddressScope::Host, true)),
            None
        );
    }
}
