//! What the firewall records: counters that only go up, and the ring of recent decisions.
//! Both have a fixed size; every verdict, a rule's or a [`Refusal`], lands here once.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rules::{Action, Decision, Protocol};

use super::loaded::unix_now;

/// How many recent decisions the status endpoint shows.
pub const RECENT_DECISIONS: usize = 100;

/// Counters the status endpoint reports; each only ever goes up.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub refused_at_capacity: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub malformed: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub bodies_cut: AtomicU64,
    pub dns_queries: AtomicU64,
    pub dns_cache_hits: AtomicU64,
    /// TLS hellos that carried an ECH extension (browsers send a GREASE one in every hello),
    /// decided on their outer name.
    pub ech_hellos: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Access requests the card page refused (see `firewall::asking`).
    pub access_requests_refused: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter's value now, for the status document. Each is read on its own, so the
    /// snapshot is not one instant; every counter only goes up, so no value is ever stale
    /// by more than the reads in flight.
    pub fn snapshot(&self) -> proto::CounterSnapshot {
        // Destructured so that a counter added here and not to the document fails to compile.
        let Counters {
            connections,
            refused_at_capacity,
            allowed,
            denied,
            malformed,
            header_timeouts,
            upstream_failures,
            bodies_cut,
            dns_queries,
            dns_cache_hits,
            ech_hellos,
            reloads,
            reload_failures,
            access_requests_refused,
        } = self;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        proto::CounterSnapshot {
            connections: load(connections),
            refused_at_capacity: load(refused_at_capacity),
            allowed: load(allowed),
            denied: load(denied),
            malformed: load(malformed),
            header_timeouts: load(header_timeouts),
            upstream_failures: load(upstream_failures),
            bodies_cut: load(bodies_cut),
            dns_queries: load(dns_queries),
            dns_cache_hits: load(dns_cache_hits),
            ech_hellos: load(ech_hellos),
            reloads: load(reloads),
            reload_failures: load(reload_failures),
            access_requests_refused: load(access_requests_refused),
        }
    }
}

/// One decision as the ring keeps it: fixed size, so the ring never allocates. The status
/// document carries it as a [`proto::Decision`].
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub at: u64,
    pub client: IpAddr,
    pub protocol: &'static str,
    /// What was asked for: `host:port`, `https://host/path`, a DNS name. Cut at 128 bytes.
    pub target: heapless::String<128>,
    pub action: proto::Action,
    pub rule: heapless::String<64>,
    /// A rule decided it (not a [`Refusal`], which no rule can change).
    pub by_rule: bool,
}

impl From<&DecisionRecord> for proto::Decision {
    fn from(record: &DecisionRecord) -> Self {
        proto::Decision {
            at: record.at,
            client: record.client,
            protocol: record.protocol.to_owned(),
            target: record.target.as_str().to_owned(),
            action: record.action,
            rule: record.rule.as_str().to_owned(),
        }
    }
}

/// Counters plus the last [`RECENT_DECISIONS`] decisions.
#[derive(Debug, Default)]
pub struct Events {
    pub counters: Counters,
    recent: Mutex<heapless::HistoryBuf<DecisionRecord, RECENT_DECISIONS>>,
}

impl Events {
    /// Records a decision: one log line at info with the rule id, a counter, and a place in
    /// the recent-decisions ring. Only the core calls it, so nothing is recorded twice or
    /// in another way.
    pub(super) fn decision(
        &self,
        client: IpAddr,
        protocol: Protocol,
        target: &str,
        decision: &Decision<'_>,
    ) {
        let action = match decision.action {
            Action::Allow => proto::Action::Allow,
            Action::Deny => proto::Action::Deny,
        };
        tracing::info!(
            verdict = action.as_str(),
            rule = %decision.rule.id,
            client = %client,
            protocol = protocol.name(),
            target,
            "decision"
        );
        Counters::bump(match decision.action {
            Action::Allow => &self.counters.allowed,
            Action::Deny => &self.counters.denied,
        });
        self.remember(DecisionRecord {
            at: unix_now(),
            client,
            protocol: protocol.name(),
            target: truncated(target),
            action,
            rule: truncated(&decision.rule.id),
            by_rule: true,
        });
    }

    /// Records a refusal that no rule made (see [`Refusal`]) exactly like a rule's denial: one
    /// log line with the refusal's code in place of the rule id, the `denied` counter, and a
    /// place in the recent-decisions ring, so the status page and the counters agree.
    pub(super) fn refusal(
        &self,
        client: IpAddr,
        protocol: Protocol,
        target: &str,
        refusal: Refusal,
    ) {
        tracing::info!(
            verdict = "deny",
            rule = refusal.code(),
            reason = refusal.reason(),
            client = %client,
            protocol = protocol.name(),
            target,
            "decision"
        );
        Counters::bump(&self.counters.denied);
        self.remember(DecisionRecord {
            at: unix_now(),
            client,
            protocol: protocol.name(),
            target: truncated(target),
            action: proto::Action::Deny,
            rule: truncated(refusal.code()),
            by_rule: false,
        });
    }

    fn remember(&self, record: DecisionRecord) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(record);
    }

    /// The recent decisions, oldest first.
    pub fn recent(&self) -> Vec<DecisionRecord> {
        let ring = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        ring.oldest_ordered().cloned().collect()
    }
}

/// A refusal the rule file did not make: the card refuses these whatever the rules say. Each
/// has a stable code, recorded where a rule decision records its rule id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `use-application-dns.net`: NXDOMAIN tells browsers to keep DNS on the card.
    DohCanary,
    /// A hello naming the public name of an ECH config the card stripped, without `allow-ech`.
    EchCoverName,
    /// A hello inside CONNECT naming another host than CONNECT did (domain fronting).
    DomainFronting,
    /// Cleartext HTTP/2 (`h2c`, by prior knowledge or `Upgrade: h2c`): later requests on the
    /// connection would pass unseen by path rules.
    CleartextHttp2,
    /// A response body longer than the `max-body` of the rule that allowed it.
    BodyOverLimit,
    /// Every address of the destination is one the card never connects to: itself, the
    /// appliance, loopback, link-local and the like (`firewall::destination`).
    CardAddress,
    /// An outside DNS answer puts the name at a private, loopback or link-local address, and
    /// the rule that allowed the name does not say `allow-private` (DNS rebinding).
    DnsRebinding,
    /// A rule says `inspect`, but the card has no sealed store and so no CA to inspect with.
    InspectWithoutCa,
    /// An inspected site's server certificate did not pass the card's check; the code is
    /// [`crate::inspect::CertReason::code`] (`cert-expired`, `cert-wrong-name`, …).
    UpstreamCertificate(&'static str),
    /// The rule says `client-cert`, and the user's certificate is stored but locked.
    ClientCertLocked,
    /// The rule says `client-cert`, and no client certificate is stored on the card.
    ClientCertMissing,
    /// The destination belongs to one of the card's VPNs (its networks, its names, or the
    /// rule's `via`), and that VPN is locked: never sent on the outside network in clear.
    VpnLocked,
    /// A rule says `via NAME`, and the card has no VPN of that name.
    VpnUnknown,
    /// The connection must go through a VPN (its name, or `via`), but the address it
    /// resolved to is outside the VPN's networks: it would leave in clear.
    VpnNotRouted,
}

impl Refusal {
    /// The stable code: shown as the rule on the status page, and in the log.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::DohCanary => "doh-canary",
            Refusal::EchCoverName => "ech-cover-name",
            Refusal::DomainFronting => "domain-fronting",
            Refusal::CleartextHttp2 => "h2c",
            Refusal::BodyOverLimit => "max-body",
            Refusal::CardAddress => "card-address",
            Refusal::DnsRebinding => "dns-rebinding",
            Refusal::InspectWithoutCa => "inspect-without-ca",
            Refusal::UpstreamCertificate(code) => code,
            Refusal::ClientCertLocked => "client-cert-locked",
            Refusal::ClientCertMissing => "client-cert-missing",
            Refusal::VpnLocked => "vpn-locked",
            Refusal::VpnUnknown => "vpn-unknown",
            Refusal::VpnNotRouted => "vpn-not-routed",
        }
    }

    /// What a person reads in the log and on a refusal page.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DohCanary => "browsers are told not to switch to DNS over HTTPS",
            Refusal::EchCoverName => {
                "the name is an Encrypted Client Hello cover name; a rule must say allow-ech"
            }
            Refusal::DomainFronting => "TLS name differs from the CONNECT host",
            Refusal::CleartextHttp2 => {
                "cleartext HTTP/2 (h2c) would hide later requests from the rules"
            }
            Refusal::BodyOverLimit => "the body is larger than the rule allows",
            Refusal::CardAddress => "the card does not connect to itself or to local addresses",
            Refusal::DnsRebinding => {
                "an outside name answered with a private address; a rule must say allow-private"
            }
            Refusal::InspectWithoutCa => {
                "a rule says inspect, but this card has no store to keep an inspection CA in"
            }
            Refusal::UpstreamCertificate(_) => {
                "the site's certificate did not pass the card's check"
            }
            Refusal::ClientCertLocked => {
                "the site needs your client certificate, which is locked: unlock it on the card page (Inspection)"
            }
            Refusal::ClientCertMissing => {
                "the site needs a client certificate, and none is stored on the card: upload it on the card page (Inspection)"
            }
            Refusal::VpnLocked => {
                "the VPN is locked: this destination is reached only through the card's VPN; unlock it with the PIN on the card page. Nothing was sent in clear"
            }
            Refusal::VpnUnknown => "the rule names a VPN this card does not have",
            Refusal::VpnNotRouted => {
                "the destination must go through the card's VPN, but its address is outside the VPN's networks"
            }
        }
    }
}

/// The longest prefix of `text` that fits, cut on a character boundary.
fn truncated<const N: usize>(text: &str) -> heapless::String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = heapless::String::new();
    // Cannot fail: `end` is at most the capacity.
    let _ = out.push_str(&text[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::RuleSet;

    #[test]
    fn recent_decisions_keep_the_last_hundred() {
        let rules = RuleSet::from_text("t", "deny any\n", &rules::NoFiles).unwrap();
        let request = rules::Request::new(Protocol::Dns, rules::LocalTime::new(0, 0, 0).unwrap());
        let decision = rules.decide(&request);
        let events = Events::default();
        for i in 0..150 {
            events.decision(
                "10.0.0.1".parse().unwrap(),
                Protocol::Dns,
                &format!("n{i}.example"),
                &decision,
            );
        }
        let recent = events.recent();
        assert_eq!(recent.len(), RECENT_DECISIONS);
        assert_eq!(recent[0].target.as_str(), "n50.example");
        assert_eq!(recent[99].target.as_str(), "n149.example");
        assert_eq!(events.counters.denied.load(Ordering::Relaxed), 150);
        let long = "é".repeat(100);
        assert_eq!(truncated::<128>(&long).len(), 128);
    }
}
