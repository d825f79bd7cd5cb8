//! The firewall core: the one place a request is decided *and recorded*.
//!
//! [`Firewall`] owns the configuration, the sealed store (when the card has one), the rule set
//! in force, the connection slots and what is recorded (counters and recent decisions). The
//! front ends sit on it side by side and never reach into each other: the proxies
//! (`proxy::{http, tls, dns, tcp}`) ask it about traffic, the card page (`admin`), the APDU
//! face (`iso7816`) and the policy poller (`managed`) reach the store through
//! [`Firewall::store`] and swap rules in with [`Firewall::reload`], and `status` reads what
//! it recorded.
//!
//! A request's way through it:
//!
//! ```text
//! front end ── Ask { client, target, rules::Request, TLS hello } ──► Firewall::decide
//!                 1. the card's own and local addresses: never      → Verdict::NeverConnect
//!                 2. the DoH canary name                            → Verdict::Refuse
//!                 3. RuleSet::decide                                → Verdict::Deny
//!                 4. a TLS hello naming an ECH cover name or another
//!                    host than CONNECT did                          → Verdict::Refuse
//!                                                                   → Verdict::Allow
//!              every verdict: one log line with the rule id or the refusal code, a counter,
//!              a place in the recent-decisions ring (the status page and the card page)
//! ```
//!
//! A name is decided before it is resolved ([`Firewall::check`]: only a refusal is final),
//! then each address it resolves to ([`Firewall::decide_addresses`]), and the allow is
//! recorded for the address the card connected to ([`Firewall::record_connected`]).
//! Refusals a front end finds in the traffic itself (cleartext HTTP/2, a body over its
//! limit, a rebinding DNS answer) are recorded with [`Firewall::refuse`].

pub mod asking;
pub mod destination;
mod events;
mod loaded;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rules::{Action, Decision, Protocol, RuleInfo};

pub use destination::{Candidates, canonical, never_connect};
pub use events::{Counters, DecisionRecord, Events, RECENT_DECISIONS, Refusal};
pub use loaded::{LoadedRules, RulesStamp, unix_now};
// Connection slots are the serving layer's (its accept loop caps listeners with them too).
pub use serve::slots::{MAX_CLIENTS, Refused, Slot, Slots};

use crate::config::Config;
use crate::ech::CoverNames;
use crate::inspect::Inspection;
use crate::store::Store;
use crate::vpn::Vpns;

/// Browsers ask for this name before switching to DNS over HTTPS on their own; NXDOMAIN tells
/// them not to, so their lookups stay where the rules see them.
pub const DOH_CANARY: &str = "use-application-dns.net";

/// The core every front end shares, behind one `Arc`.
#[derive(Debug)]
pub struct Firewall {
    pub config: Config,
    pub events: Events,
    pub slots: Slots,
    /// SHA-256 of the card web page's certificate, once it has one: the appliance shows it, so
    /// a user can check what the browser is shown.
    pub tls_fingerprint: OnceLock<String>,
    /// Public names of the ECH configs the DNS forwarder stripped: hellos naming them are
    /// refused unless a rule says `allow-ech`.
    pub ech_covers: CoverNames,
    /// What `inspect` rules terminate TLS with (the card's CA, its leaves, the upstream
    /// trust), set at start on a card with a store; without it such rules are refused. Shared
    /// with the card page, which re-keys the CA and changes the trust in place.
    pub inspection: OnceLock<Arc<Inspection>>,
    /// The card's VPNs (`crate::vpn`): the file's `[vpn.*]`, set at start, and those the
    /// policy server pushes, replaced while the card runs (`crate::managed::vpns`). A rule's
    /// `via` naming none of them is refused; with none, no destination belongs to a VPN.
    pub vpns: ArcSwap<Vpns>,
    /// The rule set in force. A reload swaps it in one step; a connection that already took
    /// its snapshot keeps deciding with it, so nothing in flight is dropped.
    rules: ArcSwap<LoadedRules>,
    /// Where the rules live when the card has a store; without one they come from the file
    /// `config.rules`.
    store: Option<Arc<Store>>,
    /// Seals the block page's "ask for access" forms (managed cards only).
    pub asking: asking::AskKey,
}

/// Where the card sends a DNS question: from which of its addresses, to which resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolver {
    pub from: IpAddr,
    pub server: SocketAddr,
    /// A VPN's resolver, through its tunnel.
    pub vpn: bool,
}

/// What a front end asks the core about one request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub client: IpAddr,
    /// What was asked for, as logged and shown: `host:port`, a URL, a DNS name.
    pub target: &'a str,
    /// What the rules decide on; its protocol is the one recorded.
    pub request: rules::Request<'a>,
    /// A TLS hello's own facts, when the request is one.
    pub hello: Option<Hello<'a>>,
}

impl<'a> Ask<'a> {
    /// Plain TCP to `dst`, decided on its address and port.
    pub fn tcp(client: IpAddr, target: &'a str, dst: SocketAddr) -> Ask<'a> {
        Ask {
            client,
            target,
            request: rules::Request::new(Protocol::Tcp, rules::LocalTime::now())
                .dst(dst.ip())
                .port(dst.port()),
            hello: None,
        }
    }
}

/// What a TLS hello says beyond the rules' request.
#[derive(Debug, Clone, Copy)]
pub struct Hello<'a> {
    /// The name it carries (SNI), if any.
    pub server_name: Option<&'a str>,
    /// Inside a CONNECT tunnel: the host CONNECT named, which the hello must name too.
    pub connect_host: Option<&'a str>,
}

/// The core's answer, already recorded when it is final.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'r> {
    /// A rule allowed it.
    Allow(Decision<'r>),
    /// A rule denied it; the block page names the rule.
    Deny(Decision<'r>),
    /// Refused whatever the rules say (recorded with the refusal's code).
    Refuse(Refusal),
    /// The destination is one the card never connects to (recorded as
    /// [`Refusal::CardAddress`]).
    NeverConnect { ip: IpAddr, why: &'static str },
}

impl Verdict<'_> {
    /// Whether the request may go on.
    pub fn allows(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }
}

impl Firewall {
    /// A firewall running `rules`; with a `store` it reloads from the store, else from the
    /// rule file `config.rules`.
    pub fn new(config: Config, rules: LoadedRules, store: Option<Store>) -> Arc<Firewall> {
        let slots = Slots::new(config.limits.max_connections, config.limits.max_per_client);
        Arc::new(Firewall {
            config,
            events: Events::default(),
            slots,
            tls_fingerprint: OnceLock::new(),
            ech_covers: CoverNames::default(),
            inspection: OnceLock::new(),
            vpns: ArcSwap::default(),
            rules: ArcSwap::from_pointee(rules),
            store: store.map(Arc::new),
            asking: asking::AskKey::new(),
        })
    }

    /// The block page's "ask for access" form for `blocked`, when the card is managed (only
    /// its policy server can grant anything). It posts to the card page on the inside address.
    pub fn ask_form(&self, blocked: proto::policy::Blocked) -> Option<web::proxy::AskForm> {
        if !self.store.as_ref()?.is_managed() {
            return None;
        }
        let host = match self.config.inside_address {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let port = match self.config.ports.admin {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let action = format!("https://{host}{port}{}", web::proxy::ACCESS_REQUESTS_PATH);
        self.asking.form(blocked, action)
    }

    /// The sealed store, if the card has one (the card page, the APDU face and the policy
    /// poller work on it).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Makes the running VPNs the file's, the page's and the pushed ones, as kept in the store
    /// ([`crate::vpn::added::start_added`]); without a store there are none to add.
    pub async fn start_added_vpns(&self) -> Result<(), crate::vpn::added::StartError> {
        match self.store() {
            Some(store) => crate::vpn::added::start_added(&self.vpns, &self.config, store).await,
            None => Ok(()),
        }
    }

    /// The rule set in force. A connection takes it once and decides everything about one
    /// request with it, so a reload meanwhile cannot split a request between two rule sets.
    pub fn rules(&self) -> Arc<LoadedRules> {
        self.rules.load_full()
    }

    /// Swaps `rules` in.
    pub fn replace_rules(&self, rules: LoadedRules) {
        self.rules.store(Arc::new(rules));
    }

    /// What changes when the rules do (see [`RulesStamp`]), for a caller that watches.
    pub fn rules_stamp(&self) -> RulesStamp {
        RulesStamp::of(&self.config, self.store.as_deref())
    }

    /// Loads the rules again and swaps them in; on any error the running rules stay.
    pub fn reload(&self) {
        match LoadedRules::load(&self.config, self.store.as_deref()) {
            Ok(rules) => {
                tracing::info!(version = %rules.version, rules = rules.rules.stats().rules, "rules reloaded");
                self.replace_rules(rules);
                Counters::bump(&self.events.counters.reloads);
            }
            Err(e) => {
                Counters::bump(&self.events.counters.reload_failures);
                tracing::error!("rules not reloaded, the previous ones stay in force:\n{e}");
            }
        }
    }

    /// Counts a new connection and gives it a slot, or counts and logs why it gets none.
    pub fn admit(&self, client: SocketAddr) -> Option<Slot<'_>> {
        Counters::bump(&self.events.counters.connections);
        match self.slots.acquire(client.ip()) {
            Ok(slot) => Some(slot),
            Err(_) => {
                Counters::bump(&self.events.counters.refused_at_capacity);
                tracing::info!(client = %client, "connection refused: at capacity");
                None
            }
        }
    }

    /// Decides `ask` with `rules` (the snapshot the connection holds) and records the verdict.
    pub fn decide<'r>(&self, rules: &'r LoadedRules, ask: &Ask<'_>) -> Verdict<'r> {
        let verdict = self.judge(rules, ask);
        self.record(ask, &verdict);
        verdict
    }

    /// Like [`Firewall::decide`], but an allow is not recorded: for a name about to be
    /// resolved (each address is decided next, and the allow recorded for the one connected
    /// to), and for a second look inside a CONNECT tunnel whose allow is recorded already.
    pub fn check<'r>(&self, rules: &'r LoadedRules, ask: &Ask<'_>) -> Verdict<'r> {
        let verdict = self.judge(rules, ask);
        if !verdict.allows() {
            self.record(ask, &verdict);
        }
        verdict
    }

    /// Decides each of `addresses` (what `ask`'s name resolved to) with `ask`, its `dst` set
    /// to the address. When none is allowed, the refusal is recorded and returned: a rule's
    /// denial first, then a hello's refusal, then the card's own addresses. Otherwise the
    /// allowed ones come back in the resolver's order, to connect to and then to pass to
    /// [`Firewall::record_connected`].
    pub fn decide_addresses<'r>(
        &self,
        rules: &'r LoadedRules,
        ask: &Ask<'_>,
        addresses: &[IpAddr],
    ) -> Result<Candidates<'r>, Verdict<'r>> {
        let mut candidates =
            Candidates::decide(&self.config, &rules.rules, &ask.request, addresses);
        let mut refused = None;
        candidates.allowed.retain(|(ip, decision)| {
            let reason = ask
                .hello
                .and_then(|hello| hello_refusal(hello, decision.rule, &self.ech_covers))
                .or_else(|| self.vpn_refusal(&ask.request, Some(*ip), decision.rule));
            refused = refused.or(reason);
            reason.is_none()
        });
        if !candidates.allowed.is_empty() {
            return Ok(candidates);
        }
        let verdict = match (candidates.denied, refused, candidates.refused) {
            (Some((_, decision)), _, _) => Verdict::Deny(decision),
            (None, Some(refusal), _) => Verdict::Refuse(refusal),
            (None, None, Some((ip, why))) => Verdict::NeverConnect { ip, why },
            (None, None, None) => unreachable!("a name resolves to at least one address"),
        };
        self.record(ask, &verdict);
        Err(verdict)
    }

    /// Records the allow of the address the card connected to for `ask`.
    pub fn record_connected(&self, ask: &Ask<'_>, candidates: &Candidates<'_>, ip: IpAddr) {
        if let Some(decision) = candidates.decision_for(ip) {
            self.record(ask, &Verdict::Allow(decision));
        }
    }

    /// Decides an HTTP response once its head arrived, for a request whose decision asked
    /// for it (`response_check`); a denial is recorded.
    pub fn check_response<'r>(
        &self,
        rules: &'r LoadedRules,
        ask: &Ask<'_>,
        response: &rules::Response<'_>,
    ) -> Decision<'r> {
        let decision = rules.rules.decide_response(&ask.request, response);
        if decision.action == Action::Deny {
            self.record(ask, &Verdict::Deny(decision));
        }
        decision
    }

    /// Where the card resolves `name`: a VPN's name at the VPN's resolver from its tunnel
    /// address (split DNS: the outside never sees it), every other name at the configured
    /// resolver from the outside address. (The configuration check makes every VPN with
    /// names name a resolver too.)
    pub fn resolver_for(&self, name: &str) -> Resolver {
        let vpns = self.vpns.load();
        let vpn = vpns.owning(name);
        match vpn.and_then(|vpn| Some((vpn.config.address, vpn.config.resolver?))) {
            Some((from, server)) => Resolver {
                from: IpAddr::V4(from),
                server,
                vpn: true,
            },
            None => Resolver {
                from: self.config.outside_address,
                server: self.config.dns.upstream,
                vpn: false,
            },
        }
    }

    /// Records a refusal a front end found in the traffic itself (see [`Refusal`]).
    pub fn refuse(&self, client: IpAddr, protocol: Protocol, target: &str, refusal: Refusal) {
        self.events.refusal(client, protocol, target, refusal);
    }

    /// The verdict, recorded nowhere.
    fn judge<'r>(&self, rules: &'r LoadedRules, ask: &Ask<'_>) -> Verdict<'r> {
        let request = &ask.request;
        if let Some(dst) = request.dst
            && let Some(why) = never_connect(&self.config, dst)
        {
            return Verdict::NeverConnect {
                ip: canonical(dst),
                why,
            };
        }
        if request.protocol == Protocol::Dns
            && self.config.dns.block_doh_canary
            && request.host == Some(DOH_CANARY)
        {
            return Verdict::Refuse(Refusal::DohCanary);
        }
        let decision = rules.rules.decide(request);
        match decision.action {
            Action::Deny => Verdict::Deny(decision),
            Action::Allow => match ask
                .hello
                .and_then(|hello| hello_refusal(hello, decision.rule, &self.ech_covers))
                .or_else(|| self.vpn_refusal(request, request.dst, decision.rule))
            {
                Some(refusal) => Verdict::Refuse(refusal),
                None => Verdict::Allow(decision),
            },
        }
    }

    /// Why a request the rules allowed may not go out, as far as the VPNs go: it belongs to a
    /// VPN (the rule's `via`, else a VPN owning the name, else one covering `dst`) that is
    /// locked, unknown, or does not reach `dst`. Everything else is `None` (the outside).
    fn vpn_refusal(
        &self,
        request: &rules::Request<'_>,
        dst: Option<IpAddr>,
        allowed_by: &RuleInfo,
    ) -> Option<Refusal> {
        let vpns = self.vpns.load();
        let host = request.host.filter(|host| host.parse::<IpAddr>().is_err());
        let vpn = match &allowed_by.via {
            Some(name) => Some(vpns.get(name).ok_or(Refusal::VpnUnknown)),
            None => host
                .and_then(|host| vpns.owning(host))
                .or_else(|| dst.and_then(|ip| vpns.covering(canonical(ip))))
                .map(Ok),
        }?;
        let vpn = match vpn {
            Ok(vpn) => vpn,
            Err(refusal) => return Some(refusal),
        };
        if !vpn.is_unlocked() {
            return Some(Refusal::VpnLocked);
        }
        // A name is resolved through the VPN only when the VPN owns it (`names`): a DNS
        // question another VPN's `via` sends would reach the outside resolver in clear.
        if request.protocol == Protocol::Dns && !host.is_some_and(|h| vpn.config.owns_name(h)) {
            return Some(Refusal::VpnNotRouted);
        }
        if let Some(ip) = dst
            && !vpn.config.covers(canonical(ip))
        {
            return Some(Refusal::VpnNotRouted);
        }
        None
    }

    fn record(&self, ask: &Ask<'_>, verdict: &Verdict<'_>) {
        let (client, protocol, target) = (ask.client, ask.request.protocol, ask.target);
        match verdict {
            Verdict::Allow(decision) | Verdict::Deny(decision) => {
                self.events.decision(client, protocol, target, decision);
            }
            Verdict::Refuse(refusal) => self.events.refusal(client, protocol, target, *refusal),
            Verdict::NeverConnect { ip, why } => {
                tracing::info!(client = %client, target, address = %ip, reason = why,
                    "the card does not connect there");
                self.events
                    .refusal(client, protocol, target, Refusal::CardAddress);
            }
        }
    }
}

/// Why a hello the rules allowed is still refused, if it is: it names the public name of an
/// ECH config the card stripped from DNS (a cover name) and the rule does not say
/// `allow-ech`; or (in a CONNECT tunnel) it names another host than the one CONNECT asked
/// for, which is domain fronting. The ECH extension itself decides nothing: browsers send a
/// GREASE one in every hello (see [`crate::ech`]).
fn hello_refusal(hello: Hello<'_>, allowed_by: &RuleInfo, covers: &CoverNames) -> Option<Refusal> {
    let sni = hello.server_name;
    if sni.is_some_and(|name| covers.contains(name)) && !allowed_by.allow_ech {
        return Some(Refusal::EchCoverName);
    }
    if let (Some(expected), Some(sni)) = (hello.connect_host, sni)
        && !sni
            .trim_end_matches('.')
            .eq_ignore_ascii_case(expected.trim_end_matches('.'))
    {
        return Some(Refusal::DomainFronting);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::{LocalTime, NoFiles, RuleSet};

    fn hello<'a>(server_name: Option<&'a str>, connect_host: Option<&'a str>) -> Hello<'a> {
        Hello {
            server_name,
            connect_host,
        }
    }

    #[test]
    fn hello_refusals() {
        let rules = RuleSet::from_text(
            "t.rules",
            "ech-ok: allow https host cover.example allow-ech\nallow https\n",
            &NoFiles,
        )
        .unwrap();
        let allowed_by = |name: &str| {
            let at = LocalTime::new(0, 12, 0).unwrap();
            let request = rules::Request::new(Protocol::Https, at)
                .host(name)
                .port(443);
            rules.decide(&request).rule.clone()
        };
        let covers = CoverNames::default();
        covers.remember("cover.example");
        covers.remember("other-cover.example");
        let plain = allowed_by("plain.example");
        // An ordinary outer name (with a GREASE ECH extension or none): decided on that name.
        assert_eq!(
            hello_refusal(hello(Some("plain.example"), None), &plain, &covers),
            None
        );
        // A cover name: refused unless its rule says allow-ech.
        let other = allowed_by("other-cover.example");
        assert_eq!(
            hello_refusal(hello(Some("Other-Cover.example."), None), &other, &covers),
            Some(Refusal::EchCoverName)
        );
        let allow_ech = allowed_by("cover.example");
        assert_eq!(
            hello_refusal(hello(Some("cover.example"), None), &allow_ech, &covers),
            None
        );
        assert_eq!(
            hello_refusal(hello(Some("cloudflare-ech.com"), None), &plain, &covers),
            Some(Refusal::EchCoverName),
            "known before any DNS answer"
        );
        let fronted = hello(Some("evil.example"), Some("plain.example"));
        assert_eq!(
            hello_refusal(fronted, &plain, &covers),
            Some(Refusal::DomainFronting)
        );
        let same = hello(Some("PLAIN.example."), Some("plain.example"));
        assert_eq!(hello_refusal(same, &plain, &covers), None);
        let nameless = hello(None, Some("plain.example"));
        assert_eq!(hello_refusal(nameless, &plain, &covers), None);
    }

    fn firewall(text: &str) -> Arc<Firewall> {
        let rules = LoadedRules {
            rules: RuleSet::from_text("t.rules", text, &NoFiles).unwrap(),
            version: "test".into(),
            loaded_at: 0,
        };
        Firewall::new(Config::default(), rules, None)
    }

    #[test]
    fn every_verdict_is_recorded_once_and_an_allow_by_name_waits_for_its_address() {
        let firewall = firewall("private: deny any dst 10.0.0.0/8\nallow http\ndefault deny\n");
        let rules = firewall.rules();
        let client: IpAddr = "192.168.77.10".parse().unwrap();
        let at = LocalTime::new(0, 12, 0).unwrap();
        let ask = |target, request| Ask {
            client,
            target,
            request,
            hello: None,
        };
        let by_name = ask(
            "two.test:80",
            rules::Request::new(Protocol::Http, at)
                .host("two.test")
                .port(80),
        );
        assert!(matches!(
            firewall.check(&rules, &by_name),
            Verdict::Allow(_)
        ));
        assert!(firewall.events.recent().is_empty(), "not final yet");
        let addresses = ["10.1.2.3".parse().unwrap(), "203.0.113.7".parse().unwrap()];
        let candidates = firewall
            .decide_addresses(&rules, &by_name, &addresses)
            .unwrap();
        firewall.record_connected(&by_name, &candidates, addresses[1]);
        let card_itself = ask(
            "127.0.0.1:80",
            rules::Request::new(Protocol::Tcp, at)
                .dst("127.0.0.1".parse().unwrap())
                .port(80),
        );
        assert!(matches!(
            firewall.decide(&rules, &card_itself),
            Verdict::NeverConnect { .. }
        ));
        let canary = ask(
            DOH_CANARY,
            rules::Request::new(Protocol::Dns, at).host(DOH_CANARY),
        );
        assert!(matches!(
            firewall.decide(&rules, &canary),
            Verdict::Refuse(Refusal::DohCanary)
        ));
        let private_only = firewall
            .decide_addresses(&rules, &by_name, &addresses[..1])
            .unwrap_err();
        assert!(matches!(private_only, Verdict::Deny(d) if d.rule.id == "private"));
        let recorded: Vec<(String, String)> = firewall
            .events
            .recent()
            .iter()
            .map(|r| (r.target.to_string(), r.rule.to_string()))
            .collect();
        let expected = [
            ("two.test:80", "t.rules:2"),
            ("127.0.0.1:80", "card-address"),
            (DOH_CANARY, "doh-canary"),
            ("two.test:80", "private"),
        ]
        .map(|(t, r)| (t.to_string(), r.to_string()));
        assert_eq!(recorded, expected);
    }

    #[test]
    fn a_vpns_destinations_go_only_through_it_and_are_refused_while_it_is_locked() {
        let text = "deny-path: deny http host intranet.corp.example path /secret\n\
                    allow http\n\
                    via-lab: allow tcp port 22 via lab\n\
                    allow tcp port 2222 via corp\n\
                    allow dns\n";
        let load = || LoadedRules {
            rules: RuleSet::from_text("t.rules", text, &NoFiles).unwrap(),
            version: "test".into(),
            loaded_at: 0,
        };
        let config =
            <Config as crate::config::ConfigFile>::parse("c.toml", crate::vpn::tests::CORP)
                .unwrap();
        let at = LocalTime::new(0, 12, 0).unwrap();
        let client: IpAddr = "192.168.77.10".parse().unwrap();
        let corp_ip: IpAddr = "10.20.0.80".parse().unwrap();
        let outside_ip: IpAddr = "203.0.113.7".parse().unwrap();
        let http = |host, path| {
            rules::Request::new(Protocol::Http, at)
                .host(host)
                .port(80)
                .path(path)
        };
        let ask = |request| Ask {
            client,
            target: "t",
            request,
            hello: None,
        };
        for unlocked in [false, true] {
            let firewall = Firewall::new(config.clone(), load(), None);
            let names: &[&str] = if unlocked { &["corp"] } else { &[] };
            firewall
                .vpns
                .store(Arc::new(Vpns::unrouted_for_tests(&config, names)));
            let rules = firewall.rules();
            let by_name = ask(http("intranet.corp.example", "/"));
            let check = firewall.check(&rules, &by_name);
            let by_address = firewall.decide_addresses(&rules, &by_name, &[corp_ip]);
            let by_ip = ask(rules::Request::new(Protocol::Tcp, at)
                .dst(corp_ip)
                .port(2222));
            let elsewhere = firewall.decide_addresses(&rules, &by_name, &[outside_ip]);
            if unlocked {
                assert!(check.allows());
                assert!(by_address.is_ok());
                assert!(firewall.decide(&rules, &by_ip).allows());
                // A corporate name at an address outside the VPN would leave in clear.
                assert!(matches!(
                    elsewhere,
                    Err(Verdict::Refuse(Refusal::VpnNotRouted))
                ));
            } else {
                assert!(matches!(check, Verdict::Refuse(Refusal::VpnLocked)));
                assert!(matches!(
                    by_address,
                    Err(Verdict::Refuse(Refusal::VpnLocked))
                ));
                assert!(matches!(
                    firewall.decide(&rules, &by_ip),
                    Verdict::Refuse(Refusal::VpnLocked)
                ));
            }
            // The rules keep applying inside the tunnel.
            let secret = ask(http("intranet.corp.example", "/secret/x"));
            assert!(
                matches!(firewall.check(&rules, &secret), Verdict::Deny(d) if d.rule.id == "deny-path")
            );
            // Not the VPN's: the outside, untouched.
            let plain = ask(http("allowed.test", "/"));
            assert!(firewall.check(&rules, &plain).allows());
            // `via` a VPN the card does not have.
            let lab = ask(rules::Request::new(Protocol::Tcp, at)
                .dst(outside_ip)
                .port(22));
            assert!(matches!(
                firewall.decide(&rules, &lab),
                Verdict::Refuse(Refusal::VpnUnknown)
            ));
            // A VPN's name is resolved through it: refused while it is locked, and never
            // asked of the outside resolver.
            let dns = ask(rules::Request::new(Protocol::Dns, at).host("intranet.corp.example"));
            let dns_verdict = firewall.decide(&rules, &dns);
            assert_eq!(dns_verdict.allows(), unlocked, "{dns_verdict:?}");
            let resolver = firewall.resolver_for("intranet.corp.example");
            assert_eq!(resolver.server, "10.20.0.53:53".parse().unwrap());
            assert_eq!(resolver.from, IpAddr::from([10, 20, 255, 2]));
            assert!(!firewall.resolver_for("allowed.test").vpn);
            let codes: Vec<String> = firewall
                .events
                .recent()
                .iter()
                .map(|r| r.rule.to_string())
                .collect();
            assert!(codes.iter().any(|c| c == "vpn-unknown"), "{codes:?}");
        }
    }
}
