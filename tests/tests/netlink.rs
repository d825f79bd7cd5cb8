//! `netconf::netlink` against a real kernel: every call runs inside a lab namespace (a netlink
//! socket opened on a thread that joined the namespace lives there), and every effect is read
//! back with `ip`, independently of the code under test.
//!
//! Every test starts with `e2e::require_root()`: without root they skip, except under CI=true
//! where they fail.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::origin;
use e2e::topology::{Lab, Netns, panic_message};
use netconf::netlink::{
    self, LinkEvent, LinkEvents, Netlink, NetlinkError, PolicyRule, RuleAction,
};

/// How long a link event may take to arrive.
const EVENT_DEADLINE: Duration = Duration::from_secs(1);

/// Runs `f` on a thread inside `ns`, on a fresh single-threaded tokio runtime, and waits for it.
fn in_namespace<T, F, Fut>(ns: &Netns, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    ns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(f())
    })
    .join()
    .map_err(|panic| anyhow!("thread in namespace: {}", panic_message(&*panic)))?
}

/// A lab with namespaces `a` and `b` joined by `x0` (in `a`) and `y0` (in `b`).
fn pair(tag: &str, x0: &[&str], y0: &[&str]) -> Result<(Lab, Netns, Netns)> {
    let mut lab = Lab::new(tag)?;
    let a = lab.namespace("a")?;
    let b = lab.namespace("b")?;
    lab.link(&a, "x0", x0, &b, "y0", y0)?;
    Ok((lab, a, b))
}

fn cidr(text: &str) -> (IpAddr, u8) {
    let (address, prefix) = text.split_once('/').expect("CIDR");
    (
        address.parse().expect("address"),
        prefix.parse().expect("prefix"),
    )
}

fn sorted(mut addresses: Vec<(IpAddr, u8)>) -> Vec<(IpAddr, u8)> {
    addresses.sort();
    addresses
}

/// The non-empty lines of `ip`'s output, trimmed.
fn lines(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn set_addresses_adds_missing_removes_stale_and_is_idempotent() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, _b) = pair(
        "nladdr",
        &["10.9.0.1/24", "10.9.0.5/24", "10.9.9.1/24", "fd00:9::9/64"],
        &["10.9.0.2/24"],
    )?;
    let wanted = vec![
        cidr("10.9.0.1/24"),
        cidr("10.9.1.1/24"),
        cidr("fd00:9::1/64"),
    ];
    let before = a.run_ok("ip", &["-brief", "addr", "show", "x0"])?;

    let (first, second) = in_namespace(&a, {
        let wanted = wanted.clone();
        move || async move {
            let netlink = Netlink::connect().await?;
            netlink.set_addresses("x0", &wanted).await?;
            let first = netlink.addresses("x0").await?;
            netlink.set_addresses("x0", &wanted).await?;
            let second = netlink.addresses("x0").await?;
            Ok((first, second))
        }
    })?;
    assert_eq!(sorted(first), sorted(wanted.clone()));
    assert_eq!(sorted(second), sorted(wanted));

    let after = a.run_ok("ip", &["-brief", "addr", "show", "x0"])?;
    for present in ["10.9.0.1/24", "10.9.1.1/24", "fd00:9::1/64"] {
        assert!(after.contains(present), "{present} missing: {after}");
    }
    for stale in ["10.9.0.5/", "10.9.9.1/", "fd00:9::9/"] {
        assert!(!after.contains(stale), "{stale} left behind: {after}");
    }
    // The kernel's IPv6 link-local address is not the daemon's business.
    if before.contains("fe80::") {
        assert!(after.contains("fe80::"), "link-local removed: {after}");
    }
    // Added without DAD: usable at once, never "tentative".
    let v6 = a.run_ok("ip", &["-6", "addr", "show", "dev", "x0"])?;
    let ours = v6
        .lines()
        .find(|line| line.contains("fd00:9::1/64"))
        .unwrap_or_default();
    assert!(
        ours.contains("nodad") && !ours.contains("tentative"),
        "{v6}"
    );

    // Emptying the list removes every managed address.
    let left = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        netlink.set_addresses("x0", &[]).await?;
        Ok(netlink.addresses("x0").await?)
    })?;
    assert!(left.is_empty(), "{left:?}");
    let after = a.run_ok("ip", &["-4", "-brief", "addr", "show", "x0"])?;
    assert!(!after.contains("10.9."), "{after}");
    Ok(())
}

#[test]
fn unknown_links_are_named_in_the_error() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, _b) = pair("nlnone", &[], &[])?;
    let errors = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        Ok(vec![
            netlink.link_index("nope0").await.map(drop),
            netlink.link_up("nope0").await,
            netlink.set_addresses("nope0", &[]).await,
            netlink
                .replace_default_route(100, Ipv4Addr::new(10, 0, 0, 1), "nope0")
                .await,
            // Longer than the kernel's 15 bytes: refused, never truncated into another name.
            netlink.link_index("x0-and-much-more").await.map(drop),
        ])
    })?;
    for error in errors {
        match error {
            Err(NetlinkError::NoSuchLink(name)) => {
                assert!(name == "nope0" || name == "x0-and-much-more", "{name}")
            }
            other => bail!("expected NoSuchLink, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn link_up_and_link_is_up_follow_the_kernel() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, b) = pair("nlup", &[], &[])?;
    a.run_ok("ip", &["link", "set", "x0", "down"])?;
    let ifindex: u32 = a
        .run_ok("cat", &["/sys/class/net/x0/ifindex"])?
        .trim()
        .parse()?;

    let (index, before, after) = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        let index = netlink.link_index("x0").await?;
        let before = netlink.link_is_up("x0").await?;
        netlink.link_up("x0").await?;
        let after = wait_for_state(&netlink, "x0", true).await?;
        Ok((index, before, after))
    })?;
    assert_eq!(index, ifindex);
    assert!(!before, "x0 was down");
    assert!(after, "x0 did not come up");
    let shown = a.run_ok("ip", &["-brief", "link", "show", "x0"])?;
    assert!(shown.contains("UP"), "{shown}");

    // The peer going down takes the carrier: administratively up is not enough.
    b.run_ok("ip", &["link", "set", "y0", "down"])?;
    let peer_down = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        wait_for_state(&netlink, "x0", false).await
    })?;
    assert!(!peer_down, "x0 reported up while its peer is down");

    b.run_ok("ip", &["link", "set", "y0", "up"])?;
    let down = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        ensure!(
            wait_for_state(&netlink, "x0", true).await?,
            "x0 not up again"
        );
        netlink.link_down("x0").await?;
        wait_for_state(&netlink, "x0", false).await
    })?;
    assert!(!down);
    let shown = a.run_ok("ip", &["-brief", "link", "show", "x0"])?;
    assert!(shown.contains("DOWN"), "{shown}");
    Ok(())
}

/// Polls `link_is_up` until it answers `wanted` (operational state follows the carrier a
/// moment later) or 2 s have passed; returns the last answer.
async fn wait_for_state(netlink: &Netlink, name: &str, wanted: bool) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let up = netlink.link_is_up(name).await?;
        if up == wanted || tokio::time::Instant::now() >= deadline {
            return Ok(up);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn default_routes_are_replaced_and_tables_flushed() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new("nlroute")?;
    let a = lab.namespace("a")?;
    let b = lab.namespace("b")?;
    lab.link(&a, "x0", &["10.9.0.1/24"], &b, "y0", &["10.9.0.2/24"])?;
    lab.link(&a, "x1", &["10.8.0.1/24"], &b, "y1", &["10.8.0.2/24"])?;
    let main_before = a.run_ok("ip", &["route", "show"])?;

    let answers = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        let empty = netlink.table_has_default(100).await?;
        netlink
            .replace_default_route(100, Ipv4Addr::new(10, 9, 0, 2), "x0")
            .await?;
        // Replace semantics: the same route again is no error.
        netlink
            .replace_default_route(100, Ipv4Addr::new(10, 9, 0, 2), "x0")
            .await?;
        // A table id above 255 (only fits the RTA_TABLE attribute).
        netlink
            .replace_default_route(1000, Ipv4Addr::new(10, 8, 0, 2), "x1")
            .await?;
        let filled = netlink.table_has_default(100).await?;
        let other = netlink.table_has_default(101).await?;
        let big = netlink.table_has_default(1000).await?;
        Ok((empty, filled, other, big))
    })?;
    assert_eq!(answers, (false, true, false, true));
    let table = lines(&a.run_ok("ip", &["route", "show", "table", "100"])?);
    assert_eq!(table.len(), 1, "{table:?}");
    assert!(
        table[0].starts_with("default via 10.9.0.2 dev x0"),
        "{table:?}"
    );
    let big = lines(&a.run_ok("ip", &["route", "show", "table", "1000"])?);
    assert_eq!(big.len(), 1, "{big:?}");
    assert!(big[0].starts_with("default via 10.8.0.2 dev x1"), "{big:?}");

    // Replacing moves the route to the other link, still one route.
    in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        Ok(netlink
            .replace_default_route(100, Ipv4Addr::new(10, 8, 0, 2), "x1")
            .await?)
    })?;
    let table = lines(&a.run_ok("ip", &["route", "show", "table", "100"])?);
    assert_eq!(table.len(), 1, "{table:?}");
    assert!(
        table[0].starts_with("default via 10.8.0.2 dev x1"),
        "{table:?}"
    );

    // A second, non-default route in the table goes with the flush too.
    a.run_ok(
        "ip",
        &[
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "10.9.0.2",
            "table",
            "100",
        ],
    )?;
    let (after_flush, big_after) = in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        netlink.flush_table(100).await?;
        // Flushing an empty table is no error either.
        netlink.flush_table(100).await?;
        Ok((
            netlink.table_has_default(100).await?,
            netlink.table_has_default(1000).await?,
        ))
    })?;
    assert!(!after_flush);
    assert!(big_after, "flushing table 100 touched table 1000");
    let table = a.run_ok("ip", &["route", "show", "table", "100"])?;
    assert!(table.trim().is_empty(), "{table}");
    assert_eq!(
        a.run_ok("ip", &["route", "show"])?,
        main_before,
        "the main table changed"
    );
    Ok(())
}

#[test]
fn rules_are_ensured_once_listed_and_deleted_exactly() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, _b) = pair("nlrule", &[], &[])?;
    let [lookup, prohibit] = PolicyRule::fail_closed_pair("x0", 100, 1000);
    let unreachable = PolicyRule {
        priority: 2000,
        input_interface: None,
        action: RuleAction::Unreachable,
    };
    // A rule for a link that does not exist (yet): the kernel keeps it, detached.
    let detached = PolicyRule {
        priority: 3000,
        input_interface: Some("inside".to_owned()),
        action: RuleAction::Lookup(100),
    };
    let ambiguous = PolicyRule {
        priority: 1500,
        input_interface: Some("x0".to_owned()),
        action: RuleAction::Lookup(100),
    };
    // Same priority, interface and table as ours, plus a selector: not "identical". The first
    // is made by hand (proto unspec); the second looks like one of ours (proto static).
    a.run_ok(
        "ip",
        &[
            "rule", "add", "priority", "1000", "iif", "x0", "fwmark", "1", "lookup", "100",
        ],
    )?;
    a.run_ok(
        "ip",
        &[
            "rule", "add", "priority", "1500", "iif", "x0", "fwmark", "2", "lookup", "100",
            "protocol", "static",
        ],
    )?;

    let ours = [
        lookup.clone(),
        prohibit.clone(),
        unreachable.clone(),
        detached.clone(),
        ambiguous.clone(),
    ];
    let listed = in_namespace(&a, {
        let ours = ours.clone();
        move || async move {
            let netlink = Netlink::connect().await?;
            for rule in ours.iter().chain(&ours) {
                netlink.ensure_rule(rule).await?;
            }
            Ok(netlink.rules().await?)
        }
    })?;
    for rule in &ours {
        let count = listed.iter().filter(|listed| *listed == rule).count();
        assert_eq!(count, 1, "{rule} listed {count} times: {listed:?}");
    }
    // The kernel's own rules are read back too; the fwmark rules are not PolicyRules.
    for (priority, table) in [(0, 255), (32766, 254), (32767, 253)] {
        let default = PolicyRule {
            priority,
            input_interface: None,
            action: RuleAction::Lookup(table),
        };
        assert!(listed.contains(&default), "{default} missing: {listed:?}");
    }
    assert_eq!(
        listed.len(),
        ours.len() + 3,
        "unexpected rules (the fwmark ones must be left out): {listed:?}"
    );

    let shown = lines(&a.run_ok("ip", &["rule", "show"])?);
    let count = |needle: &str| shown.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("1000:\tfrom all iif x0 lookup 100"), 1, "{shown:?}");
    assert_eq!(
        count("1000:\tfrom all fwmark 0x1 iif x0 lookup 100"),
        1,
        "{shown:?}"
    );
    assert_eq!(count("1001:\tfrom all iif x0 prohibit"), 1, "{shown:?}");
    assert_eq!(count("1500:\tfrom all iif x0 lookup 100"), 1, "{shown:?}");
    assert_eq!(count("2000:\tfrom all unreachable"), 1, "{shown:?}");
    assert_eq!(
        count("3000:\tfrom all iif inside [detached] lookup 100"),
        1,
        "{shown:?}"
    );
    let detailed = a.run_ok("ip", &["-d", "rule", "show", "priority", "1001"])?;
    assert!(detailed.contains("proto static"), "{detailed}");

    // Deleting removes exactly our rule, not the hand-made one before it at the same priority,
    // and again is fine. Where the kernel cannot tell ours from an earlier rule, nothing goes.
    let refused = in_namespace(&a, {
        let (lookup, detached, ambiguous) = (lookup.clone(), detached.clone(), ambiguous.clone());
        move || async move {
            let netlink = Netlink::connect().await?;
            netlink.delete_rule(&lookup).await?;
            netlink.delete_rule(&lookup).await?;
            netlink.delete_rule(&detached).await?;
            Ok(netlink.delete_rule(&ambiguous).await)
        }
    })?;
    match refused {
        Err(NetlinkError::AmbiguousRule { rule, other }) => {
            assert_eq!(rule, ambiguous);
            assert!(other.contains("FwMark(2)"), "{other}");
        }
        other => bail!("expected AmbiguousRule, got {other:?}"),
    }
    let shown = lines(&a.run_ok("ip", &["rule", "show"])?);
    let count = |needle: &str| shown.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(
        count("1000:\tfrom all fwmark 0x1 iif x0 lookup 100"),
        1,
        "{shown:?}"
    );
    assert_eq!(count("1000:\tfrom all iif x0 lookup 100"), 0, "{shown:?}");
    assert_eq!(count("iif inside"), 0, "{shown:?}");
    assert_eq!(count("1001:\tfrom all iif x0 prohibit"), 1, "{shown:?}");
    assert_eq!(count("1500:"), 2, "{shown:?}");
    Ok(())
}

/// The point of the rule pair: with the card route gone, traffic from the inside is refused
/// instead of leaking out through the main table's default route.
///
/// ```text
/// pc (10.77.0.2) --- inside | appliance | card --- card (172.31.77.2, 203.0.113.7 on lo)
///                           |           | outside --- world (10.99.0.2, 203.0.113.7 on lo)
/// ```
///
/// Both the card and the world answer on 203.0.113.7:9000, each with its own echo server, so
/// the test sees which one the pc reached.
/// The card's interception: `fwmark M lookup T` and `local 0.0.0.0/0 dev lo table T`, made
/// again without stacking, and removed, as `ip` shows them.
#[test]
fn mark_rules_and_the_local_route_are_replaced_and_removed() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new("nlmark")?;
    let a = lab.namespace("a")?;
    in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        for _ in 0..2 {
            netlink.replace_mark_rule(0xca7d, 0xca7d).await?;
            netlink.replace_local_default_route(0xca7d, "lo").await?;
        }
        Ok(())
    })?;
    let rules = lines(&a.run_ok("ip", &["rule", "show"])?);
    let marked: Vec<&String> = rules
        .iter()
        .filter(|rule| rule.contains("fwmark"))
        .collect();
    assert_eq!(marked.len(), 1, "{rules:?}");
    assert!(
        marked[0].contains("from all fwmark 0xca7d lookup 51837"),
        "{rules:?}"
    );
    let table = lines(&a.run_ok("ip", &["route", "show", "table", "51837"])?);
    assert_eq!(table.len(), 1, "{table:?}");
    assert!(table[0].starts_with("local default dev lo"), "{table:?}");

    in_namespace(&a, || async {
        let netlink = Netlink::connect().await?;
        netlink.delete_mark_rule(0xca7d, 0xca7d).await?;
        // Gone already: not an error.
        netlink.delete_mark_rule(0xca7d, 0xca7d).await?;
        netlink.flush_table(0xca7d).await?;
        Ok(())
    })?;
    let rules = a.run_ok("ip", &["rule", "show"])?;
    assert!(!rules.contains("fwmark"), "{rules}");
    let table = a.run_ok("ip", &["route", "show", "table", "51837"])?;
    assert!(table.trim().is_empty(), "{table}");
    Ok(())
}

#[test]
fn without_the_card_route_inside_traffic_is_refused_not_leaked() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new("nlfail")?;
    let pc = lab.namespace("pc")?;
    let appliance = lab.namespace("appliance")?;
    let card = lab.namespace("card")?;
    let world = lab.namespace("world")?;
    lab.link(
        &pc,
        "eth0",
        &["10.77.0.2/24"],
        &appliance,
        "inside",
        &["10.77.0.1/24"],
    )?;
    lab.link(
        &appliance,
        "card",
        &["172.31.77.1/29"],
        &card,
        "eth0",
        &["172.31.77.2/29"],
    )?;
    lab.link(
        &appliance,
        "outside",
        &["10.99.0.1/24"],
        &world,
        "eth0",
        &["10.99.0.2/24"],
    )?;
    pc.route("default via 10.77.0.1")?;
    card.route("default via 172.31.77.1")?;
    world.route("10.77.0.0/24 via 10.99.0.1")?;
    appliance.route("default via 10.99.0.2")?;
    appliance.sysctl("net.ipv4.ip_forward", "1")?;
    // Replies from the card come from addresses the main table routes outside.
    appliance.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    appliance.sysctl("net.ipv4.conf.card.rp_filter", "0")?;
    let target: SocketAddr = "203.0.113.7:9000".parse()?;
    for ns in [&card, &world] {
        ns.run_ok("ip", &["addr", "add", "203.0.113.7/32", "dev", "lo"])?;
    }
    let card_echo = origin::tcp_echo(&card, target)?;
    let world_echo = origin::tcp_echo(&world, target)?;

    // Control: with no rules, the main table sends the pc to the world. This is the leak.
    exchange(&pc, target).context("pc to the world through the main table")?;
    assert_eq!((card_echo.served(), world_echo.served()), (0, 1));

    let [lookup, prohibit] = PolicyRule::fail_closed_pair("inside", 100, 1000);
    in_namespace(&appliance, {
        let (lookup, prohibit) = (lookup.clone(), prohibit.clone());
        move || async move {
            let netlink = Netlink::connect().await?;
            netlink.ensure_rule(&lookup).await?;
            netlink.ensure_rule(&prohibit).await?;
            netlink
                .replace_default_route(100, Ipv4Addr::new(172, 31, 77, 2), "card")
                .await?;
            Ok(())
        }
    })?;
    exchange(&pc, target).context("pc to the card through table 100")?;
    assert_eq!((card_echo.served(), world_echo.served()), (1, 1));

    // The card goes away: its route is flushed, and the pc is refused, not sent outside.
    in_namespace(&appliance, || async {
        Ok(Netlink::connect().await?.flush_table(100).await?)
    })?;
    let refused = exchange(&pc, target);
    assert!(refused.is_err(), "the pc still got through: {refused:?}");
    assert_eq!((card_echo.served(), world_echo.served()), (1, 1));
    let route = appliance.run_ok(
        "ip",
        &[
            "route",
            "get",
            "203.0.113.7",
            "from",
            "10.77.0.2",
            "iif",
            "inside",
        ],
    );
    assert!(route.is_err(), "a route still exists: {route:?}");
    Ok(())
}

/// One echo exchange from `ns` to `target`.
fn exchange(ns: &Netns, target: SocketAddr) -> Result<()> {
    ns.enter(move || -> Result<()> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"ping")?;
        stream.shutdown(Shutdown::Write)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        ensure!(reply == b"ping", "echo answered {reply:?}");
        Ok(())
    })
    .join()
    .map_err(|panic| anyhow!("client thread: {}", panic_message(&*panic)))?
}

#[test]
fn watch_links_sees_carrier_loss_and_removal_within_a_second() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, b) = pair("nlwatch", &[], &[])?;
    let events =
        in_namespace(&a, move || async move {
            // Subscribe first, then read the state: nothing can happen unseen in between.
            let mut events = netlink::watch_links().await?;
            let netlink = Netlink::connect().await?;
            let index = netlink.link_index("x0").await?;
            ensure!(netlink.link_is_up("x0").await?, "x0 not up at the start");
            let mut seen = Vec::new();

            b.run_ok("ip", &["link", "set", "y0", "down"])?;
            seen.push(
            next_matching(&mut events, |event| {
                matches!(event, LinkEvent::Changed { name, up: false, .. } if name == "x0")
            })
            .await
            .context("x0 losing its carrier")?,
        );

            b.run_ok("ip", &["link", "set", "y0", "up"])?;
            seen.push(
            next_matching(&mut events, |event| {
                matches!(event, LinkEvent::Changed { name, up: true, .. } if name == "x0")
            })
            .await
            .context("x0 getting its carrier back")?,
        );

            b.run_ok("ip", &["link", "del", "y0"])?;
            seen.push(
                next_matching(
                    &mut events,
                    |event| matches!(event, LinkEvent::Removed { name, .. } if name == "x0"),
                )
                .await
                .context("x0 deleted with its peer")?,
            );
            Ok((index, seen))
        })?;
    let (index, seen) = events;
    assert_eq!(
        seen,
        vec![
            LinkEvent::Changed {
                name: "x0".to_owned(),
                index,
                up: false
            },
            LinkEvent::Changed {
                name: "x0".to_owned(),
                index,
                up: true
            },
            LinkEvent::Removed {
                name: "x0".to_owned(),
                index
            },
        ]
    );
    Ok(())
}

/// The first event matching `wanted` within [`EVENT_DEADLINE`].
async fn next_matching(
    events: &mut LinkEvents,
    wanted: impl Fn(&LinkEvent) -> bool,
) -> Result<LinkEvent> {
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.next_event()).await {
            Ok(Some(event)) if wanted(&event) => return Ok(event),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the event stream ended"),
            Err(_) => bail!("no such event within {EVENT_DEADLINE:?}"),
        }
    }
}

#[test]
fn watch_links_recovers_from_lost_notifications() -> Result<()> {
    if !e2e::require_root() {
        return Ok(());
    }
    let (_lab, a, b) = pair("nlstorm", &[], &[])?;
    // A link that will vanish while nobody is listening.
    a.run_ok(
        "ip",
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    )?;
    let storm_in = a.clone();
    let (after_lost, removed) = in_namespace(&a, move || async move {
        let mut events = netlink::watch_links().await?;
        // This thread is busy while the storm runs, so nothing reads the socket: thousands of
        // notifications overflow its buffer, and the deletion of v0 is among those dropped.
        let storm = storm_in.sh(
            "{ seq 5000 | sed 's/.*/link set x0 alias storm&/'; echo 'link del v0'; } \
             | ip -batch -",
        )?;
        ensure!(storm.status.success(), "the storm failed: {storm:?}");
        // Read until quiet, keeping what comes after the first `Lost`.
        let mut after_lost: Option<Vec<LinkEvent>> = None;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(300), events.next_event()).await
        {
            match (&mut after_lost, event) {
                (None, LinkEvent::Lost) => after_lost = Some(Vec::new()),
                (Some(seen), event) => seen.push(event),
                (None, _) => {}
            }
        }
        // And the watch goes on.
        b.run_ok("ip", &["link", "del", "y0"])?;
        let removed = next_matching(
            &mut events,
            |event| matches!(event, LinkEvent::Removed { name, .. } if name == "x0"),
        )
        .await;
        Ok((after_lost, removed))
    })?;
    let after_lost = after_lost.context("no Lost event: the storm did not overflow the socket")?;
    let has = |wanted: &dyn Fn(&LinkEvent) -> bool| after_lost.iter().any(wanted);
    assert!(
        has(&|event| matches!(event, LinkEvent::Removed { name, .. } if name == "v0")),
        "v0 vanished unseen but no Removed followed: {after_lost:?}"
    );
    assert!(
        has(&|event| matches!(event, LinkEvent::Changed { name, up: true, .. } if name == "x0")),
        "no fresh state of x0: {after_lost:?}"
    );
    assert!(
        has(&|event| matches!(event, LinkEvent::Changed { name, .. } if name == "lo")),
        "the resynchronisation skipped lo: {after_lost:?}"
    );
    removed.context("after the storm")?;
    Ok(())
}
