//! The card's status document.
//!
//! - **Writer:** the card firmware (`cardfw`, `status::render`), as pretty-printed JSON.
//! - **Reader:** the appliance daemon (`appliance::daemon`), which polls it to decide whether
//!   the card is present and to fill its status page (rules version, fingerprint, counters,
//!   recent blocks).
//! - **Where:** `GET http://<card inside address>:8081/status` (`ports.status`). The card
//!   answers only the appliance's card-link address: the recent decisions name other clients
//!   and what they asked for.
//!
//! The JSON field names are the wire format; tests and the lab read them by name, so renaming
//! a field here is a change of contract, not a refactor.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Everything `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardStatus {
    /// `cardfw <version>`.
    pub firmware: String,
    /// The version line of the rule file in force.
    pub rules_version: String,
    /// The card web page's certificate fingerprint (SHA-256), when the card has a store and
    /// so a page.
    pub tls_fingerprint: Option<String>,
    /// When the rules in force were loaded, in seconds since the Unix epoch.
    pub rules_loaded_at: u64,
    /// How many rules are in force.
    pub rules: usize,
    pub uptime_secs: u64,
    pub connections_open: usize,
    pub counters: CounterSnapshot,
    /// Accept failures for lack of descriptors or memory since start. Beside `counters`, not in
    /// it, because the accept loop keeps it for every listener of the process.
    pub accept_backoffs: u64,
    /// Connections a listener's own cap refused since start (the status endpoint's).
    pub refused_at_listener_cap: u64,
    /// The last decisions, oldest first (at most 100).
    pub recent: Vec<Decision>,
    /// The card's VPNs: their state, never a key. Missing (an older card) reads as none.
    #[serde(default)]
    pub vpns: Vec<VpnStatus>,
}

/// One VPN of the card as the appliance's page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnStatus {
    /// The `[vpn.NAME]` name.
    pub name: String,
    /// The WireGuard implementation it runs on (`kernel`, `userspace ...`).
    pub backend: String,
    /// Unlocked with the PIN and up; locked, its networks and names are refused.
    pub unlocked: bool,
    /// The peer's `host:port`.
    pub endpoint: String,
    /// Seconds since the last completed handshake, while unlocked and after the first.
    pub handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The card's counters at one moment; each only ever goes up while the card runs.
///
/// A counter the reader does not find reads as 0, so an appliance can read a card that is one
/// counter older than itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterSnapshot {
    pub connections: u64,
    pub refused_at_capacity: u64,
    pub allowed: u64,
    pub denied: u64,
    pub malformed: u64,
    pub header_timeouts: u64,
    pub upstream_failures: u64,
    pub bodies_cut: u64,
    pub dns_queries: u64,
    pub dns_cache_hits: u64,
    /// TLS hellos that carried an ECH extension, decided on their outer name.
    pub ech_hellos: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Access requests (managed cards) the card page refused: a form not made by the block
    /// page, too old, over the card's limit.
    pub access_requests_refused: u64,
}

/// One decision: a rule's, or a refusal the card makes whatever the rules say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub client: IpAddr,
    /// `http`, `https`, `dns`, `tcp`.
    pub protocol: String,
    /// What was asked for: `host:port`, `https://host/path`, a DNS name. At most 128 bytes.
    pub target: String,
    pub action: Action,
    /// The deciding rule's id, or the refusal's code (`ech-public-name`, …).
    pub rule: String,
}

/// What a decision did to the connection or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// The name the JSON carries: `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CardStatus {
        CardStatus {
            firmware: "cardfw 0.1.0".into(),
            rules_version: "2026-11-30 office".into(),
            tls_fingerprint: Some("ab:cd".into()),
            rules_loaded_at: 1_764_000_000,
            rules: 12,
            uptime_secs: 3600,
            connections_open: 3,
            counters: CounterSnapshot {
                connections: 40,
                allowed: 30,
                denied: 10,
                ech_hellos: 7,
                ..CounterSnapshot::default()
            },
            accept_backoffs: 1,
            refused_at_listener_cap: 2,
            recent: vec![
                Decision {
                    at: 1_764_000_100,
                    client: "10.0.0.2".parse().unwrap(),
                    protocol: "https".into(),
                    target: "example.com:443".into(),
                    action: Action::Allow,
                    rule: "web".into(),
                },
                Decision {
                    at: 1_764_000_101,
                    client: "fd00::2".parse().unwrap(),
                    protocol: "dns".into(),
                    target: "ads.example".into(),
                    action: Action::Deny,
                    rule: "no-ads".into(),
                },
            ],
            vpns: vec![VpnStatus {
                name: "corp".into(),
                backend: "kernel".into(),
                unlocked: true,
                endpoint: "198.51.100.7:51820".into(),
                handshake_age_secs: Some(12),
                rx_bytes: 2048,
                tx_bytes: 1024,
            }],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let status = sample();
        let json = serde_json::to_vec_pretty(&status).unwrap();
        let back: CardStatus = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, status);
    }

    /// The names other readers (tests, the lab) look up in the JSON.
    #[test]
    fn keeps_the_wire_names() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["counters"]["ech_hellos"], 7);
        assert_eq!(json["accept_backoffs"], 1);
        assert_eq!(json["refused_at_listener_cap"], 2);
        assert_eq!(json["recent"][1]["action"], "deny");
        assert_eq!(json["recent"][1]["client"], "fd00::2");
        assert_eq!(json["tls_fingerprint"], "ab:cd");
        assert_eq!(json["recent"][0]["action"], Action::Allow.as_str());
        assert_eq!(json["vpns"][0]["unlocked"], true);
    }

    /// An appliance newer than its card reads a status without `vpns` as a card without VPNs.
    #[test]
    fn a_card_without_vpns_reads_as_none() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("vpns");
        let status: CardStatus = serde_json::from_value(json).unwrap();
        assert!(status.vpns.is_empty());
    }

    #[test]
    fn a_missing_counter_reads_as_zero() {
        let counters: CounterSnapshot = serde_json::from_str(r#"{"allowed": 3}"#).unwrap();
        assert_eq!(counters.allowed, 3);
        assert_eq!(counters.ech_hellos, 0);
    }
}
