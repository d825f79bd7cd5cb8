//! The VPNs that come and go while the card runs: those the owner adds on the card page
//! (`page-vpns.sealed`, checked here by [`check_page_vpn`]) and those the policy server pushes
//! (`crate::managed::vpns`); the file's `[vpn.NAME]` only at start. [`start_added`] makes the
//! running set the file's ∪ the page's ∪ the pushed, after each change and at start. Each
//! name has one source: a page VPN never takes a file or pushed VPN's name (refused when it is
//! added), and an overlay pushing a page VPN's name, or networks overlapping one's, is refused
//! like one pushing a file VPN's name (`PushedVpnError::PageName`, `PushedVpnError::Overlap`).
//!
//! A VPN added is started locked, one removed is locked and its interface goes (a kernel
//! link is deleted, a TUN device closes with its last handle, and its routes go with it), one
//! whose settings changed is both, so it comes back locked with the new settings and the same
//! key.
//!
//! Fail closed while that happens: a changed VPN needs its interface name back before it can
//! be made again, so for a moment it has no interface and no routes. Its networks and names
//! must not become ordinary destinations then, so the decisions first see a locked stand-in
//! for every VPN leaving ([`super::Vpn::closed_stand_in`]), and only the finished set after the new
//! ones are up; when starting them fails, the stand-ins stay and keep refusing.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use proto::policy::{MAX_MANAGED_VPNS, ManagedVpn};

use super::{VpnError, Vpns};
use crate::config::{self, Config};
use crate::store::Store;

/// Why a VPN from the card page is refused. Every word of it may be shown on the page (through
/// its escaping): the fields are the attacker's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageVpnError {
    #[error(
        "a VPN's name is 1 to 12 of a-z, 0-9 and `-` (it names the card's interface and rules' `via`)"
    )]
    Name,
    #[error("the card already has a VPN called {0} ({1}): choose another name")]
    Taken(String, &'static str),
    /// A field of the page's form that does not read: which, and why.
    #[error("{0}: {1}")]
    Field(&'static str, String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "its network {mine} overlaps {theirs} of the VPN {other}: an address belongs to one VPN at most"
    )]
    Overlap {
        mine: String,
        other: String,
        theirs: String,
    },
    #[error("the card page keeps at most {MAX_MANAGED_VPNS} VPNs")]
    TooMany,
}

/// Where a VPN the card has comes from, as the page says it.
pub const FROM_FILE: &str = "from the configuration file";
pub const FROM_POLICY_SERVER: &str = "pushed by the policy server";
pub const FROM_PAGE: &str = "added on this page";

/// Checks a VPN from the card page as a `[vpn.NAME]` of the file ([`Config::check_vpn`], the
/// same function), and against the card's other VPNs (`others`, by name, with where each
/// comes from): its name must be free and its networks must not overlap theirs. Returns it as
/// the card runs it.
pub fn check_page_vpn(
    config: &Config,
    others: &BTreeMap<String, (config::Vpn, &'static str)>,
    vpn: &ManagedVpn,
) -> Result<config::Vpn, PageVpnError> {
    // First, so no later message carries a name that is not one.
    if !proto::policy::valid_vpn_name(&vpn.name) {
        return Err(PageVpnError::Name);
    }
    if let Some((_, from)) = others.get(&vpn.name) {
        return Err(PageVpnError::Taken(vpn.name.clone(), from));
    }
    if config.vpn.contains_key(&vpn.name) {
        return Err(PageVpnError::Taken(vpn.name.clone(), FROM_FILE));
    }
    let running = config::Vpn::from_managed(vpn).map_err(PageVpnError::Invalid)?;
    config
        .check_vpn(&vpn.name, &running)
        .map_err(PageVpnError::Invalid)?;
    let file = config.vpn.iter();
    let rest = others.iter().map(|(name, (vpn, _))| (name, vpn));
    for (name, other) in file.chain(rest) {
        if let Some((mine, theirs)) = running.overlap(other) {
            return Err(PageVpnError::Overlap {
                mine: cidr(mine),
                other: name.clone(),
                theirs: cidr(theirs),
            });
        }
    }
    Ok(running)
}

fn cidr(network: rules::Cidr) -> String {
    format!("{}/{}", network.addr(), network.prefix())
}

/// The page's kept VPNs as the card runs them: each checked again against the file it runs
/// with now and those before it; one that no longer fits (the file changed since) is left
/// out, with a log line, and the others run.
pub fn page_vpns(config: &Config, kept: &[ManagedVpn]) -> BTreeMap<String, config::Vpn> {
    let mut checked = BTreeMap::new();
    for vpn in kept.iter().take(MAX_MANAGED_VPNS) {
        match check_page_vpn(config, &checked, vpn) {
            Ok(running) => {
                checked.insert(vpn.name.clone(), (running, FROM_PAGE));
            }
            Err(error) => {
                tracing::error!(vpn = %vpn.name, %error, "a VPN added on the card page no longer fits this card's configuration: it does not run");
            }
        }
    }
    checked
        .into_iter()
        .map(|(name, (vpn, _))| (name, vpn))
        .collect()
}

/// Why pushed VPNs are refused, and the overlay that carries them with them.
#[derive(Debug, thiserror::Error)]
pub enum PushedVpnError {
    #[error("the VPN settings do not read: {0}")]
    Unreadable(String),
    #[error("more than {MAX_MANAGED_VPNS} VPNs are pushed")]
    TooMany,
    #[error("the VPN `{0}` is pushed twice")]
    Twice(String),
    #[error(
        "the VPN `{0}` is one of the card's own (`[vpn.{0}]` in its configuration): a pushed VPN never replaces it"
    )]
    OwnName(String),
    #[error(
        "the VPN `{0}` was added on the card page by its owner: a pushed VPN never replaces it"
    )]
    PageName(String),
    #[error(
        "the VPN `{pushed}` has networks overlapping those of `{page}`, added on the card page: an address belongs to one VPN at most"
    )]
    Overlap { pushed: String, page: String },
    #[error("{0}")]
    Invalid(String),
}

/// Pushed `vpns` (`crate::managed::vpns`) as the card runs them, by name, once each passed the file's checks and took
/// nothing of the page's VPNs (`page`, see [`page_vpns`]).
pub fn check_pushed(
    config: &Config,
    page: &BTreeMap<String, config::Vpn>,
    vpns: &[ManagedVpn],
) -> Result<BTreeMap<String, config::Vpn>, PushedVpnError> {
    if vpns.len() > MAX_MANAGED_VPNS {
        return Err(PushedVpnError::TooMany);
    }
    let mut by_name = BTreeMap::new();
    for pushed in vpns {
        if config.vpn.contains_key(&pushed.name) {
            return Err(PushedVpnError::OwnName(pushed.name.clone()));
        }
        if page.contains_key(&pushed.name) {
            return Err(PushedVpnError::PageName(pushed.name.clone()));
        }
        let vpn = config::Vpn::from_managed(pushed).map_err(PushedVpnError::Invalid)?;
        config
            .check_vpn(&pushed.name, &vpn)
            .map_err(PushedVpnError::Invalid)?;
        if let Some(name) = page
            .iter()
            .find_map(|(name, mine)| vpn.overlap(mine).map(|_| name))
        {
            return Err(PushedVpnError::Overlap {
                pushed: pushed.name.clone(),
                page: name.clone(),
            });
        }
        if by_name.insert(pushed.name.clone(), vpn).is_some() {
            return Err(PushedVpnError::Twice(pushed.name.clone()));
        }
    }
    Ok(by_name)
}

/// Why the added VPNs could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the stored VPNs do not read: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Vpn(#[from] VpnError),
}

/// One change of the running set at a time (the page and the policy server's poller).
static REPLACING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes the running VPNs (`running`) the file's, the page's and those of the installed
/// overlay, all kept in `store`: at start, after each overlay installed and after each change
/// on the page.
pub async fn start_added(
    running: &ArcSwap<Vpns>,
    config: &Config,
    store: &Store,
) -> Result<(), StartError> {
    let _one = REPLACING.lock().await;
    let page = page_vpns(config, &store.page_vpns()?);
    let installed = store
        .overlay()?
        .map(|overlay| overlay.vpns)
        .unwrap_or_default();
    let pushed = check_pushed(config, &page, &installed).unwrap_or_else(|error| {
        // The card's file or page changed since the push (a `[vpn.NAME]` took a pushed
        // name, an address moved into a pushed VPN's networks): the card's own win, and
        // the pushed VPNs wait for a push that fits.
        tracing::error!(%error, "the pushed VPNs no longer fit this card's configuration: none runs");
        BTreeMap::new()
    });
    let mut added = page;
    added.extend(pushed);
    Vpns::replace_added(running, config, store, &added).await?;
    Ok(())
}

impl Vpns {
    /// Makes the VPNs in `running` the file's (`config.vpn`, untouched) and `added` (the
    /// page's and the pushed), checked by the caller against `config` (see the module
    /// documentation for the order).
    pub async fn replace_added(
        running: &ArcSwap<Vpns>,
        config: &Config,
        store: &Store,
        added: &BTreeMap<String, config::Vpn>,
    ) -> Result<(), VpnError> {
        let old = running.load_full();
        let mut kept = BTreeMap::new();
        let mut gone = Vec::new();
        for (name, vpn) in &old.by_name {
            if config.vpn.contains_key(name) || added.get(name) == Some(&vpn.config) {
                kept.insert(name.clone(), vpn.clone());
            } else {
                gone.push(vpn.clone());
            }
        }
        let new: BTreeMap<String, config::Vpn> = added
            .iter()
            .filter(|(name, _)| !kept.contains_key(*name))
            .map(|(name, vpn)| (name.clone(), vpn.clone()))
            .collect();
        if gone.is_empty() && new.is_empty() {
            return Ok(());
        }
        let mut meanwhile = kept.clone();
        for vpn in &gone {
            meanwhile.insert(vpn.name.clone(), Arc::new(vpn.closed_stand_in()));
        }
        running.store(Arc::new(Vpns { by_name: meanwhile }));
        drop(old);
        for vpn in gone {
            vpn.take_down("it was removed or changed").await;
            tracing::info!(vpn = %vpn.name, interface = %vpn.interface, "VPN taken off the card");
        }
        // `Vpns::start` for the new ones alone: the same key, interface and routes as a
        // `[vpn.NAME]` of the file gets.
        let started = Vpns::start(
            &Config {
                vpn: new,
                ..config.clone()
            },
            store,
        )
        .await?;
        kept.extend(started.by_name);
        running.store(Arc::new(Vpns { by_name: kept }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arc_swap::ArcSwap;

    use crate::config::{Config, ConfigFile};
    use crate::store::{PinCost, Store};
    use crate::vpn::Vpns;

    /// The attack on a replacement: while a changed VPN's interface is made again, a
    /// connection to its networks must not be decided as an ordinary destination (it would
    /// leave in clear). Here the new one cannot start (its key cannot be written): its
    /// networks and names stay refused as locked, never released.
    #[tokio::test]
    async fn a_vpn_that_cannot_come_back_stays_refused() {
        let with_corp = Config::parse("c.toml", crate::vpn::tests::CORP).unwrap();
        let running = ArcSwap::from_pointee(Vpns::unrouted_for_tests(&with_corp, &["corp"]));
        let mut changed = with_corp.vpn["corp"].clone();
        changed.endpoint = "198.51.100.8:51820".parse().unwrap();
        let file_without_vpns = Config::parse("c.toml", "store = \"/nonexistent\"\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(
            &dir.path().join("store"),
            "deny any\n",
            PinCost::INSECURE_FAST_FOR_TESTS,
        )
        .unwrap();
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();

        let outcome = Vpns::replace_added(
            &running,
            &file_without_vpns,
            &store,
            &BTreeMap::from([("corp".to_owned(), changed)]),
        )
        .await;
        assert!(outcome.is_err(), "the new key cannot be written");
        let vpns = running.load();
        let by_address = vpns.covering("10.20.3.4".parse().unwrap());
        let by_name = vpns.owning("intranet.corp.example");
        for vpn in [by_address, by_name] {
            let vpn = vpn.expect("still a VPN's, refused as locked");
            assert!(!vpn.is_unlocked());
        }
    }
}
