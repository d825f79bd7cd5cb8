//! What the appliance knows about itself at a moment: its links, whether the card is there
//! and what it runs, traffic history. The daemon writes it; the status page and `/api/status`
//! read it. Bounded: the traffic history keeps a fixed number of samples.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// Samples of traffic kept for the graph (one every few seconds: ten minutes at 5 s).
pub const HISTORY: usize = 120;
/// Recent blocked requests shown, newest first.
pub const RECENT_BLOCKS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Inside,
    Outside,
    Card,
}

impl Role {
    pub fn label(&self) -> &'static str {
        match self {
            Role::Inside => "inside (protected computer)",
            Role::Outside => "outside (untrusted network)",
            Role::Card => "card",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub role: Role,
    /// Interface name; empty while the card link has not been found.
    pub name: String,
    pub up: bool,
    /// CIDR strings, e.g. `192.168.77.1/24`.
    pub addresses: Vec<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One blocked request, as the card reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub at: u64,
    pub client: String,
    pub protocol: String,
    pub target: String,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CardState {
    /// The card link is up and the card answers its status endpoint: traffic flows.
    pub present: bool,
    /// Unix time of the last change of `present`.
    pub since: u64,
    /// Why the card counts as absent, when it does.
    pub absent_reason: Option<String>,
    pub rules_version: Option<String>,
    pub firmware: Option<String>,
    /// SHA-256 of the card web page's certificate, as the card reports it.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    pub allowed: u64,
    pub denied: u64,
    pub recent_blocks: Vec<Block>,
    /// The card's VPNs as it reports them (state only, never a key).
    #[serde(default)]
    pub vpns: Vec<proto::VpnStatus>,
}

/// Bytes each way on one link at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSample {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Counters of every link at one moment, in the order of `Snapshot::links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSample {
    pub at: u64,
    pub links: Vec<LinkSample>,
}

/// Everything the status page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hostname: String,
    pub uptime_secs: u64,
    /// Inside, outside, card, in that order.
    pub links: Vec<LinkState>,
    pub card: CardState,
    /// Oldest first, at most [`HISTORY`].
    pub history: Vec<TrafficSample>,
}

/// The shared, current snapshot.
#[derive(Debug)]
pub struct ApplianceState(RwLock<Snapshot>);

impl ApplianceState {
    pub fn new(snapshot: Snapshot) -> ApplianceState {
        ApplianceState(RwLock::new(snapshot))
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the snapshot in place.
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records the links' current counters as one sample, dropping the oldest beyond
    /// [`HISTORY`].
    pub fn sample_traffic(&self, at: u64) {
        self.update(|s| {
            let links = s
                .links
                .iter()
                .map(|l| LinkSample {
                    rx_bytes: l.rx_bytes,
                    tx_bytes: l.tx_bytes,
                })
                .collect();
            s.history.push(TrafficSample { at, links });
            if s.history.len() > HISTORY {
                let excess = s.history.len() - HISTORY;
                s.history.drain(..excess);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            hostname: "cardwall".into(),
            uptime_secs: 0,
            links: vec![LinkState {
                role: Role::Inside,
                name: "lan0".into(),
                up: true,
                addresses: vec!["192.168.77.1/24".into()],
                rx_bytes: 0,
                tx_bytes: 0,
            }],
            card: CardState::default(),
            history: Vec::new(),
        }
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let state = ApplianceState::new(snapshot());
        for at in 0..(HISTORY as u64 + 10) {
            state.update(|s| s.links[0].rx_bytes = at * 100);
            state.sample_traffic(at);
        }
        let s = state.snapshot();
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history[0].at, 10);
        assert_eq!(
            s.history.last().unwrap().links[0].rx_bytes,
            (HISTORY as u64 + 9) * 100
        );
    }
}
