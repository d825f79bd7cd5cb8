//! The appliance's status page: is the card there (in big letters), the links with their
//! traffic, what the card runs and what it blocked lately.

use askama::Template;
#[cfg(feature = "axum")]
use askama_web::WebTemplate;

use crate::format;
use crate::graph::TrafficGraph;

/// `GET /` on the appliance.
#[derive(Debug, Clone, Template)]
#[cfg_attr(feature = "axum", derive(WebTemplate))]
#[template(path = "appliance/status.html")]
pub struct StatusPage {
    pub hostname: String,
    pub uptime_secs: u64,
    pub card: CardView,
    /// Inside, outside, card.
    pub links: Vec<LinkView>,
    /// Newest first.
    pub blocks: Vec<BlockView>,
}

/// The card as the appliance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardView {
    /// Traffic flows (through the card) only when this is true.
    pub present: bool,
    /// Unix time `present` last changed, if known.
    pub since: Option<u64>,
    pub absent_reason: Option<String>,
    pub rules_version: Option<String>,
    pub firmware: Option<String>,
    /// SHA-256 of the card web page's certificate, to compare with what the browser shows.
    pub tls_fingerprint: Option<String>,
    pub allowed: u64,
    pub denied: u64,
    /// The card's VPNs, as the card reports them.
    pub vpns: Vec<VpnView>,
}

/// One VPN of the card: locked or up, and its tunnel's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnView {
    pub name: String,
    /// The WireGuard implementation (`kernel`, `userspace ...`).
    pub backend: String,
    pub unlocked: bool,
    pub endpoint: String,
    pub handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl VpnView {
    /// One line: `locked`, or `connected to host:port (kernel), last handshake 12 s ago, …`.
    fn summary(&self) -> String {
        if !self.unlocked {
            return format!(
                "locked ({}): its networks and names are refused",
                self.backend
            );
        }
        let handshake = match self.handshake_age_secs {
            Some(age) => format!("last handshake {age} s ago"),
            None => "no handshake yet".to_owned(),
        };
        format!(
            "unlocked, to {} ({}), {handshake}, received {}, sent {}",
            self.endpoint,
            self.backend,
            format::bytes(self.rx_bytes),
            format::bytes(self.tx_bytes)
        )
    }
}

/// One network link of the appliance.
#[derive(Debug, Clone)]
pub struct LinkView {
    /// What the link is for, e.g. `inside (protected computer)`.
    pub role: String,
    /// Interface name; empty while not found.
    pub name: String,
    pub up: bool,
    pub addresses: Vec<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// This link's traffic, one panel.
    pub graph: TrafficGraph,
}

/// One request the card blocked. Every text field is untrusted (the card reports what clients
/// asked for); the templates escape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    pub at: u64,
    pub client: String,
    pub protocol: String,
    pub target: String,
    pub rule: String,
}

impl CardView {
    /// The sentence at the top of the page.
    pub fn headline(&self) -> &'static str {
        if self.present {
            "CARD PRESENT — traffic is filtered"
        } else {
            "CARD ABSENT — nothing passes"
        }
    }

    fn allowed_text(&self) -> String {
        format::count(self.allowed)
    }

    fn denied_text(&self) -> String {
        format::count(self.denied)
    }

    fn since_iso(&self) -> String {
        self.since.map(format::iso).unwrap_or_default()
    }

    fn since_text(&self) -> String {
        self.since.map(format::date_time).unwrap_or_default()
    }
}

impl StatusPage {
    /// The window title: the status first, so a tab or a bookmark list shows it.
    pub fn title(&self) -> String {
        let status = if self.card.present {
            "Card present"
        } else {
            "CARD ABSENT"
        };
        format!("{status} · {}", self.hostname)
    }

    fn uptime(&self) -> String {
        format::duration(self.uptime_secs)
    }
}

impl LinkView {
    fn rx(&self) -> String {
        format::bytes(self.rx_bytes)
    }

    fn tx(&self) -> String {
        format::bytes(self.tx_bytes)
    }
}

impl BlockView {
    fn clock(&self) -> String {
        format::clock(self.at)
    }

    fn iso(&self) -> String {
        format::iso(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Panel;

    fn page(present: bool) -> StatusPage {
        StatusPage {
            hostname: "cardwall-7".into(),
            uptime_secs: 3725,
            card: CardView {
                present,
                since: Some(1_764_079_329),
                absent_reason: (!present).then(|| "card link down".to_owned()),
                rules_version: Some("2026-11-25.3".into()),
                firmware: Some("cardfw 0.1.0".into()),
                tls_fingerprint: None,
                allowed: 1234,
                denied: 56,
                vpns: vec![
                    VpnView {
                        name: "corp".into(),
                        backend: "kernel".into(),
                        unlocked: true,
                        endpoint: "198.51.100.7:51820".into(),
                        handshake_age_secs: Some(12),
                        rx_bytes: 2_500,
                        tx_bytes: 900,
                    },
                    VpnView {
                        name: "lab".into(),
                        backend: "kernel".into(),
                        unlocked: false,
                        endpoint: "198.51.100.8:51820".into(),
                        handshake_age_secs: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    },
                ],
            },
            links: vec![LinkView {
                role: "inside (protected computer)".into(),
                name: "lan0".into(),
                up: true,
                addresses: vec!["192.168.77.1/24".into()],
                rx_bytes: 1_234_567,
                tx_bytes: 89,
                graph: TrafficGraph::new("graph-0", "Traffic on lan0", &[Panel::default()], false),
            }],
            blocks: vec![BlockView {
                at: 1_764_079_329,
                client: "192.168.77.20".into(),
                protocol: "https".into(),
                target: "<script>alert(1)</script>.example".into(),
                rule: "deny *.example".into(),
            }],
        }
    }

    #[test]
    fn renders_status_links_and_blocks() {
        let html = page(true).render().unwrap();
        assert!(
            html.contains("CARD PRESENT — traffic is filtered"),
            "{html}"
        );
        assert!(html.contains("1.23 MB") && html.contains("89 B"), "{html}");
        assert!(html.contains("1 h 2 min"), "{html}");
        assert!(html.contains("<dd>1,234</dd>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;.example"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("<dt>VPN corp</dt><dd>unlocked, to 198.51.100.7:51820 (kernel), last handshake 12 s ago, received 2.50 kB, sent 900 B</dd>"),
            "{html}"
        );
        assert!(
            html.contains("<dt>VPN lab</dt><dd>locked (kernel)"),
            "{html}"
        );
        let absent = page(false).render().unwrap();
        assert!(absent.contains("CARD ABSENT — nothing passes"), "{absent}");
        assert!(absent.contains("card link down"), "{absent}");
    }
}
