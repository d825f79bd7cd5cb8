//! The card's VPNs on the card page, for the logged-in owner (`crate::vpn`): each VPN's state,
//! where it comes from, its handshake age, bytes and endpoint, the card's public key (never
//! the private one), and unlock (with the PIN) or lock (none needed: it only takes the key
//! out of use). The owner adds a VPN here and removes one added here, with the PIN
//! ([`crate::vpn::added`]: checked as a `[vpn.NAME]` of the file, kept in
//! `page-vpns.sealed`); the file's and the policy server's are changed where they come from.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use proto::policy::ManagedVpn;
use serde::Deserialize;
use serve::session::{Session, SessionForm};
use web::card::{VpnAddView, VpnPage, VpnView};

use super::{AdminState, ClientAddr, Secret, session_ended, with_pin};
use crate::config;
use crate::vpn::Vpn;
use crate::vpn::added::{FROM_FILE, FROM_PAGE, FROM_POLICY_SERVER, PageVpnError, check_page_vpn};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct VpnForm {
    name: String,
    pin: Secret,
}

/// The "Add a VPN" form: every field as typed (the attacker's), the PIN apart.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AddVpnForm {
    name: String,
    peer_public_key: String,
    endpoint: String,
    address: String,
    networks: String,
    names: String,
    resolver: String,
    idle_lock_minutes: String,
    keepalive_secs: String,
    pin: Secret,
}

/// A field longer than this is refused before it is read (a network list of 32 is ~600).
const MAX_FIELD: usize = 2048;
/// At most this many networks, and as many names, in one VPN.
const MAX_ITEMS: usize = 32;
/// The idle lock, at most a week.
const MAX_IDLE_MINUTES: u64 = 7 * 24 * 60;

impl AddVpnForm {
    /// The values to show again on the form (never the PIN).
    fn kept(&self) -> VpnAddView {
        VpnAddView {
            name: self.name.clone(),
            peer_public_key: self.peer_public_key.clone(),
            endpoint: self.endpoint.clone(),
            address: self.address.clone(),
            networks: self.networks.clone(),
            names: self.names.clone(),
            resolver: self.resolver.clone(),
            idle_lock_minutes: self.idle_lock_minutes.clone(),
            keepalive_secs: self.keepalive_secs.clone(),
        }
    }

    /// The VPN the form describes, in the type the policy server pushes one in (the page's
    /// are kept as a list of it); what it means for the card is checked after, by
    /// [`check_page_vpn`].
    fn to_managed(&self) -> Result<ManagedVpn, PageVpnError> {
        let field = |what: &'static str, why: String| PageVpnError::Field(what, why);
        for (what, text) in [
            ("name", &self.name),
            ("the peer's public key", &self.peer_public_key),
            ("endpoint", &self.endpoint),
            ("the card's tunnel address", &self.address),
            ("networks", &self.networks),
            ("names", &self.names),
            ("resolver", &self.resolver),
            ("idle lock", &self.idle_lock_minutes),
            ("keepalive", &self.keepalive_secs),
        ] {
            if text.len() > MAX_FIELD {
                return Err(field(what, format!("longer than {MAX_FIELD} characters")));
            }
        }
        // The name is checked first by `check_page_vpn`, before any message may carry it.
        let name = self.name.trim().to_owned();
        let endpoint = socket_addr(&self.endpoint).map_err(|why| field("endpoint", why))?;
        let address = self.address.trim();
        let address: Ipv4Addr = address.parse().map_err(|_| {
            field(
                "the card's tunnel address",
                format!("{} is not an IPv4 address", shown(address)),
            )
        })?;
        let networks = items(&self.networks);
        if networks.len() > MAX_ITEMS {
            return Err(field("networks", format!("more than {MAX_ITEMS}")));
        }
        let names = items(&self.names);
        if names.len() > MAX_ITEMS {
            return Err(field("names", format!("more than {MAX_ITEMS}")));
        }
        let resolver = match self.resolver.trim() {
            "" => None,
            text => Some(socket_addr(text).map_err(|why| field("resolver", why))?),
        };
        let idle_minutes = number(&self.idle_lock_minutes, 30)
            .filter(|minutes| (1..=MAX_IDLE_MINUTES).contains(minutes))
            .ok_or_else(|| {
                field(
                    "idle lock",
                    format!("a number of minutes from 1 to {MAX_IDLE_MINUTES}"),
                )
            })?;
        let keepalive_secs = number(&self.keepalive_secs, 0)
            .and_then(|secs| u16::try_from(secs).ok())
            .ok_or_else(|| field("keepalive", "a number of seconds from 0 to 65535".into()))?;
        Ok(ManagedVpn {
            name,
            peer_public_key: self.peer_public_key.trim().to_owned(),
            endpoint,
            address,
            networks,
            names,
            resolver,
            idle_lock_secs: idle_minutes * 60,
            keepalive_secs,
        })
    }
}

/// `text` for a message: quoted, and cut short.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    text.parse().map_err(|_| {
        format!(
            "{} is not an IP address and port (like 203.0.113.7:51820)",
            shown(text)
        )
    })
}

/// One a line or comma separated, blanks dropped.
fn items(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A whole number, or `default` for an empty field.
fn number(text: &str, default: u64) -> Option<u64> {
    match text.trim() {
        "" => Some(default),
        text => text.parse().ok(),
    }
}

/// The card's VPNs other than the file's, with where each comes from.
fn others(state: &AdminState) -> BTreeMap<String, (config::Vpn, &'static str)> {
    let page = page_names(state);
    state
        .firewall
        .vpns
        .load()
        .iter()
        .filter_map(|vpn| {
            let from = origin_in(state, &page, &vpn.name).filter(|from| *from != FROM_FILE)?;
            Some((vpn.name.clone(), (vpn.config.clone(), from)))
        })
        .collect()
}

fn page_names(state: &AdminState) -> Vec<String> {
    match state.store.page_vpns() {
        Ok(vpns) => vpns.into_iter().map(|vpn| vpn.name).collect(),
        Err(error) => {
            tracing::error!(%error, "the VPNs added on the card page do not read");
            Vec::new()
        }
    }
}

/// `POST /vpn/add`: checked as the file's, kept with the PIN, then started locked.
pub(super) async fn add(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<AddVpnForm>,
) -> Response {
    let kept = form.kept();
    let checked = form
        .to_managed()
        .and_then(|vpn| check_page_vpn(&state.firewall.config, &others(&state), &vpn).map(|_| vpn));
    let vpn = match checked {
        Ok(vpn) => vpn,
        Err(error) => {
            let error = format!("Nothing was added: {error}.");
            return render_with(&state, &session, None, Some(error), kept).await;
        }
    };
    let name = vpn.name.clone();
    let added = with_pin(&state, client, form.pin.0.clone(), move |admin| {
        admin.add_page_vpn(vpn)
    })
    .await;
    if let Err(error) = added {
        if let Some(response) = session_ended(&state, &session, &error) {
            return response;
        }
        let error = format!("Nothing was added: {error}.");
        return render_with(&state, &session, None, Some(error), kept).await;
    }
    tracing::info!(vpn = %name, "admin page: VPN added");
    match state.firewall.start_added_vpns().await {
        Ok(()) => {
            let notice = format!(
                "{name} is added and locked: give its peer the card's public key below, then unlock it with the PIN."
            );
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            let error = format!(
                "{name} is kept on the card but did not start ({error}); its networks and names are refused."
            );
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// `POST /vpn/remove`: only a VPN added on this page; locked and taken down.
pub(super) async fn remove(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<VpnForm>,
) -> Response {
    if let Some(from) = origin(&state, &form.name).filter(|from| *from != FROM_PAGE) {
        let name = &form.name;
        let error = format!("{name} is {from}: it is changed or removed there, not on this page.");
        return render(&state, &session, None, Some(error)).await;
    }
    let name = form.name.clone();
    let removing = name.clone();
    let removed = with_pin(&state, client, form.pin.0.clone(), move |admin| {
        admin.remove_page_vpn(&removing)
    })
    .await;
    match removed {
        Ok(true) => {}
        Ok(false) => return render(&state, &session, None, Some(unknown(&name))).await,
        Err(error) => {
            if let Some(response) = session_ended(&state, &session, &error) {
                return response;
            }
            let error = format!("{name} stays: {error}.");
            return render(&state, &session, None, Some(error)).await;
        }
    }
    tracing::info!(vpn = %name, "admin page: VPN removed");
    match state.firewall.start_added_vpns().await {
        Ok(()) => {
            let notice = format!(
                "{name} is removed: locked and taken down; its networks and names are ordinary destinations for the rules again."
            );
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            let error =
                format!("{name} is removed but the card's VPNs did not all restart: {error}.");
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// Where the card's VPN `name` comes from, when it has one of that name.
fn origin(state: &AdminState, name: &str) -> Option<&'static str> {
    origin_in(state, &page_names(state), name)
}

/// Where the card's VPN `name` comes from, `page` being the names the store keeps for the
/// page: the one place this is decided.
fn origin_in(state: &AdminState, page: &[String], name: &str) -> Option<&'static str> {
    if state.firewall.config.vpn.contains_key(name) {
        Some(FROM_FILE)
    } else if page.iter().any(|kept| kept == name) {
        Some(FROM_PAGE)
    } else if state.firewall.vpns.load().get(name).is_some() {
        Some(FROM_POLICY_SERVER)
    } else {
        None
    }
}

/// `GET /vpn`; without a session, back to the login.
pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    session: Option<Session>,
) -> Response {
    match session {
        Some(session) => render(&state, &session, None, None).await,
        None => Redirect::to("/").into_response(),
    }
}

/// `POST /vpn/unlock`: the key is read with the PIN (audited), then the tunnel comes up.
pub(super) async fn unlock(
    State(state): State<Arc<AdminState>>,
    client: ClientAddr,
    SessionForm { session, form }: SessionForm<VpnForm>,
) -> Response {
    let Some(vpn) = named(&state, &form.name) else {
        return render(&state, &session, None, Some(unknown(&form.name))).await;
    };
    let name = vpn.name.clone();
    let reading = vpn.clone();
    let key = with_pin(&state, client, form.pin.0.clone(), move |admin| {
        reading.read_key(admin)
    })
    .await;
    let result = match key {
        Ok(key) => vpn.unlock(key).await.map_err(super::Refusal::from),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            tracing::info!(vpn = %name, "admin page: VPN unlocked");
            let notice = format!(
                "{name} is unlocked: connections to its networks and names go through its tunnel."
            );
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            if let Some(response) = session_ended(&state, &session, &error) {
                return response;
            }
            let error = format!("{name} stays locked: {error}.");
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// `POST /vpn/lock`: no PIN, locking only takes the key out of use.
pub(super) async fn lock(
    State(state): State<Arc<AdminState>>,
    SessionForm { session, form }: SessionForm<VpnForm>,
) -> Response {
    let Some(vpn) = named(&state, &form.name) else {
        return render(&state, &session, None, Some(unknown(&form.name))).await;
    };
    let name = &vpn.name;
    match vpn.lock("the owner locked it").await {
        Ok(true) => {
            tracing::info!(vpn = %name, "admin page: VPN locked");
            let notice = format!(
                "{name} is locked: its networks and names are refused until you unlock it."
            );
            render(&state, &session, Some(notice), None).await
        }
        Ok(false) => {
            let notice = format!("{name} was already locked.");
            render(&state, &session, Some(notice), None).await
        }
        Err(error) => {
            let error = format!(
                "{name} is locked for the firewall (its networks and names are refused), but its tunnel did not stop: {error}."
            );
            render(&state, &session, None, Some(error)).await
        }
    }
}

/// The VPN the form names, when the card has one of that name.
fn named(state: &AdminState, name: &str) -> Option<Arc<Vpn>> {
    state.firewall.vpns.load().get(name).cloned()
}

fn unknown(name: &str) -> String {
    // The name came from the form: shown only through the template's escaping.
    format!("This card has no VPN called {name:?}: nothing was changed.")
}

async fn render(
    state: &AdminState,
    session: &Session,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    render_with(state, session, notice, error, VpnAddView::default()).await
}

async fn render_with(
    state: &AdminState,
    session: &Session,
    notice: Option<String>,
    error: Option<String>,
    add: VpnAddView,
) -> Response {
    let page = page_names(state);
    let mut views = Vec::new();
    for vpn in state.firewall.vpns.load_full().iter() {
        // A running VPN always has an origin; a push replacing the set meanwhile is the
        // policy server's.
        let from = origin_in(state, &page, &vpn.name).unwrap_or(FROM_POLICY_SERVER);
        views.push(view(vpn, from).await);
    }
    VpnPage {
        csrf: session.csrf().to_owned(),
        notice,
        error,
        vpns: views,
        add,
    }
    .into_response()
}

async fn view(vpn: &Vpn, from: &'static str) -> VpnView {
    let stats = vpn.stats().await.unwrap_or_default();
    let config = &vpn.config;
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    VpnView {
        name: vpn.name.clone(),
        origin: from.to_owned(),
        removable: from == FROM_PAGE,
        backend: vpn.backend().to_owned(),
        unlocked: vpn.is_unlocked(),
        idle_left_minutes: vpn
            .idle_left()
            .unwrap_or(Duration::ZERO)
            .as_secs()
            .div_ceil(60),
        idle_minutes: config.idle_lock_secs.div_ceil(60),
        public_key: vpn.public_key_base64(),
        endpoint: config.endpoint.to_string(),
        networks: list(
            config
                .networks
                .iter()
                .map(|n| format!("{}/{}", n.0.addr(), n.0.prefix()))
                .collect(),
        ),
        names: list(config.names.clone()),
        handshake: match stats.handshake_age {
            Some(age) => format!("{} s ago", age.as_secs()),
            None => "none yet".to_owned(),
        },
        received: bytes(stats.rx_bytes),
        sent: bytes(stats.tx_bytes),
    }
}

fn bytes(count: u64) -> String {
    match count {
        0..1024 => format!("{count} B"),
        1024..1_048_576 => format!("{:.1} KiB", count as f64 / 1024.0),
        _ => format!("{:.1} MiB", count as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigFile};

    /// A card with the file's `corp` (10.20.0.0/16, see `crate::vpn::tests::CORP`).
    fn card() -> Config {
        Config::parse("c.toml", crate::vpn::tests::CORP).unwrap()
    }

    /// A good form for a `lab` VPN beside `corp`.
    fn form() -> AddVpnForm {
        AddVpnForm {
            name: "lab".into(),
            peer_public_key: " CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg= ".into(),
            endpoint: "198.51.100.8:51820".into(),
            address: "10.30.255.2".into(),
            networks: "10.30.0.0/16,\r\n10.31.0.0/16\n".into(),
            names: "*.lab.example\nwiki.lab".into(),
            resolver: "10.30.0.53:53".into(),
            idle_lock_minutes: "10".into(),
            keepalive_secs: "".into(),
            pin: Secret::default(),
        }
    }

    /// The form through the page's whole check, as the handler runs it.
    fn check(
        form: &AddVpnForm,
        others: &BTreeMap<String, (config::Vpn, &'static str)>,
    ) -> Result<(ManagedVpn, config::Vpn), PageVpnError> {
        let managed = form.to_managed()?;
        let running = check_page_vpn(&card(), others, &managed)?;
        Ok((managed, running))
    }

    fn refused(change: impl FnOnce(&mut AddVpnForm)) -> String {
        let mut form = form();
        change(&mut form);
        check(&form, &BTreeMap::new())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_good_form_is_a_file_vpn() {
        let (managed, running) = check(&form(), &BTreeMap::new()).unwrap();
        assert_eq!(managed.name, "lab");
        assert_eq!(
            managed.networks,
            vec!["10.30.0.0/16".to_owned(), "10.31.0.0/16".to_owned()]
        );
        assert_eq!(managed.names, vec!["*.lab.example", "wiki.lab"]);
        assert_eq!(managed.idle_lock_secs, 600);
        assert_eq!(managed.keepalive_secs, 0);
        assert_eq!(
            managed.peer_public_key,
            "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg="
        );
        // The same `config::Vpn` a `[vpn.lab]` of the file would be.
        assert_eq!(running, config::Vpn::from_managed(&managed).unwrap());
        assert!(running.covers("10.31.2.3".parse().unwrap()));
        assert!(running.owns_name("intranet.lab.example"));
    }

    #[test]
    fn hostile_or_wrong_fields_are_refused_in_words() {
        for (change, needle) in [
            (
                Box::new(|f: &mut AddVpnForm| f.name = "<script>alert(1)</script>".into())
                    as Box<dyn FnOnce(&mut AddVpnForm)>,
                "a VPN's name is 1 to 12",
            ),
            (Box::new(|f| f.name = "".into()), "a VPN's name"),
            (Box::new(|f| f.name = "Corp".into()), "a VPN's name"),
            (
                Box::new(|f| f.name = "thirteen-char".into()),
                "a VPN's name",
            ),
            (
                Box::new(|f| f.name = "corp".into()),
                "already has a VPN called corp (from the configuration file)",
            ),
            (
                Box::new(|f| f.networks = "x".repeat(100_000)),
                "networks: longer than",
            ),
            (
                Box::new(|f| f.networks = "10.30.0.0/33".into()),
                "is not a network",
            ),
            (
                Box::new(|f| f.networks = "10.30.0.1/16".into()),
                "host bits",
            ),
            (Box::new(|f| f.networks = "fd00::/8".into()), "only IPv4"),
            (
                Box::new(|f| f.networks = " \n, ".into()),
                "networks is empty",
            ),
            (
                Box::new(|f| f.networks = (0..40).map(|i| format!("10.{i}.0.0/16\n")).collect()),
                "networks: more than 32",
            ),
            (
                Box::new(|f| f.resolver = "192.0.2.1:53".into()),
                "not in the VPN's networks",
            ),
            (Box::new(|f| f.resolver = "".into()), "no resolver"),
            (
                Box::new(|f| f.resolver = "10.30.0.53".into()),
                "resolver: \"10.30.0.53\" is not an IP address and port",
            ),
            (
                Box::new(|f| f.endpoint = "vpn.example.com:51820".into()),
                "endpoint: \"vpn.example.com:51820\" is not an IP address and port",
            ),
            (
                Box::new(|f| f.endpoint = "10.30.0.1:51820".into()),
                "tunnel cannot run through itself",
            ),
            (
                Box::new(|f| f.address = "10.30.255".into()),
                "tunnel address: \"10.30.255\" is not an IPv4 address",
            ),
            (
                Box::new(|f| f.peer_public_key = "<b>not a key</b>".into()),
                "peer_public_key: not base64",
            ),
            (Box::new(|f| f.names = "<script>".into()), "not a name"),
            (Box::new(|f| f.names = "*.*.lab".into()), "not a name"),
            (
                Box::new(|f| {
                    f.networks = "10.20.128.0/17".into();
                    f.resolver = "10.20.128.53:53".into();
                }),
                "overlaps 10.20.0.0/16 of the VPN corp",
            ),
            (
                Box::new(|f| f.networks = "10.0.0.0/8".into()),
                "its network 10.0.0.0/8 overlaps 10.20.0.0/16 of the VPN corp",
            ),
            (
                Box::new(|f| f.networks = "10.30.0.0/16, 172.31.77.0/24".into()),
                "own address",
            ),
            (Box::new(|f| f.idle_lock_minutes = "0".into()), "idle lock"),
            (
                Box::new(|f| f.idle_lock_minutes = "99999999999999999999999".into()),
                "idle lock",
            ),
            (Box::new(|f| f.keepalive_secs = "70000".into()), "keepalive"),
            (Box::new(|f| f.keepalive_secs = "-1".into()), "keepalive"),
        ] {
            let error = refused(change);
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
            // What comes back is bounded, whatever was sent.
            assert!(error.len() < 400, "{error}");
        }
    }

    #[test]
    fn a_name_or_network_of_a_pushed_or_page_vpn_is_refused() {
        let (_, lab) = check(&form(), &BTreeMap::new()).unwrap();
        let mut others = BTreeMap::new();
        others.insert("lab".to_owned(), (lab, FROM_POLICY_SERVER));
        let error = check(&form(), &others).unwrap_err().to_string();
        assert!(
            error.contains("already has a VPN called lab (pushed by the policy server)"),
            "{error}"
        );
        let mut other = form();
        other.name = "lab2".into();
        other.networks = "10.31.7.0/24".into();
        other.names = "".into();
        other.resolver = "".into();
        let error = check(&other, &others).unwrap_err().to_string();
        assert!(
            error.contains("10.31.7.0/24 overlaps 10.31.0.0/16 of the VPN lab"),
            "{error}"
        );
    }

    #[test]
    fn the_form_keeps_what_was_typed_but_never_the_pin() {
        let mut form = form();
        form.pin = Secret("4711".into());
        let kept = form.kept();
        assert_eq!(kept.name, "lab");
        assert_eq!(kept.networks, form.networks);
        assert!(!format!("{kept:?}").contains("4711"));
    }
}
