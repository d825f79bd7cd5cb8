//! "Ask for access" (issue 16, seed 000 section 5.2): on a managed card the block page offers
//! the user a form to ask the policy server's administrator for what was blocked.
//!
//! The form is posted to the card page (`POST /access-requests`) by whoever sits at the
//! protected computer, who is not the card's owner and has no session. What the card queues
//! must be something it really blocked, not whatever a page (or a user) types into the
//! fields: the block page's hidden fields carry a MAC over what was blocked, made with a key
//! drawn at each start and never stored ([`AskKey`]). The card page accepts a request only
//! with a MAC that checks, and only for a block less than [`TICKET_LIFETIME`] old, so a
//! request cannot be made up, nor a ticket kept for later. The user adds only a reason.
//!
//! Only a managed card offers the form; the requests go through the card's queue in the store
//! (`store::requests`) and the managed sender (`managed::requests`).

use std::time::Duration;

use proto::policy::{AccessRequest, Blocked};
use ring::hmac;

/// How long a block page's form stays good.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(3600);

/// The per-start secret the block page's forms are sealed with.
pub struct AskKey {
    /// `None` when the system gave no randomness at start: then no form is offered and none
    /// is taken (fail closed), the firewall runs on.
    key: Option<hmac::Key>,
    /// Wakes the sender when a request is queued, so it goes out at once.
    pub queued: tokio::sync::Notify,
}

impl std::fmt::Debug for AskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AskKey(…)")
    }
}

impl Default for AskKey {
    fn default() -> AskKey {
        AskKey::new()
    }
}

/// Why a posted form is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("this form was not made by the card's block page (or was changed)")]
    BadMac,
    #[error("this block page is too old: load the page again and ask from the new one")]
    Expired,
}

/// The message the MAC is over: the block's JSON (serde writes the fields in their declared
/// order, so the card reads the same bytes it wrote).
fn message(blocked: &Blocked) -> Vec<u8> {
    serde_json::to_vec(blocked).expect("plain data serialises")
}

impl AskKey {
    /// A new random key. Without randomness there is no key, and asking is off until the next
    /// start (a guessable key would let anyone make up requests).
    pub fn new() -> AskKey {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        let key = match getrandom::fill(secret.as_mut()) {
            Ok(()) => Some(hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref())),
            Err(error) => {
                tracing::error!(%error, "no random key for the block page's forms: asking for access is off");
                None
            }
        };
        AskKey {
            key,
            queued: tokio::sync::Notify::new(),
        }
    }

    /// The MAC the block page carries for `blocked`, hex; `None` without a key.
    fn seal(&self, blocked: &Blocked) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(hex_encode(hmac::sign(key, &message(blocked)).as_ref()))
    }

    /// Whether `mac` was made by [`AskKey::seal`] for `blocked` this start, and is fresh at
    /// `now` (Unix seconds). Compared in constant time by `ring`.
    pub fn check(&self, blocked: &Blocked, mac: &str, now: i64) -> Result<(), TicketError> {
        let key = self.key.as_ref().ok_or(TicketError::BadMac)?;
        let mac = hex_decode(mac).ok_or(TicketError::BadMac)?;
        hmac::verify(key, &message(blocked), &mac).map_err(|_| TicketError::BadMac)?;
        let age = now.saturating_sub(blocked.at);
        if !(-60..=TICKET_LIFETIME.as_secs() as i64).contains(&age) {
            return Err(TicketError::Expired);
        }
        Ok(())
    }

    /// The block page's form for `blocked`, posting to `action`; `None` when what was blocked
    /// could not be asked for anyway (the request's own checks refuse it).
    pub fn form(&self, blocked: Blocked, action: String) -> Option<web::proxy::AskForm> {
        let probe = AccessRequest {
            id: "0".repeat(32),
            blocked,
            reason: None,
        };
        probe.check().ok()?;
        let blocked = probe.blocked;
        let mac = self.seal(&blocked)?;
        let mut fields = vec![
            ("protocol", blocked.protocol.as_str().to_string()),
            ("host", blocked.host),
            ("port", blocked.port.to_string()),
            ("rule", blocked.rule),
            ("at", blocked.at.to_string()),
            ("mac", mac),
        ];
        if let Some(path) = blocked.path {
            fields.push(("path", path));
        }
        Some(web::proxy::AskForm { action, fields })
    }
}

/// What a denial in the recent-decisions ring blocked, for the card page's "ask" forms (a
/// blocked HTTPS, DNS or TCP request has no block page of its own). `None` for an allow, a
/// refusal no rule made, or a target that does not read back.
pub fn blocked_from_record(record: &super::DecisionRecord) -> Option<Blocked> {
    if record.action != proto::Action::Deny || !record.by_rule {
        return None;
    }
    let protocol = proto::policy::AccessProtocol::parse(record.protocol)?;
    let target = record.target.as_str();
    let host_port = |text: &str| -> Option<(String, u16)> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some((host.to_string(), port.parse().ok()?))
    };
    let (host, port, path) = match protocol {
        proto::policy::AccessProtocol::Dns => (target.trim_end_matches('.').to_string(), 53, None),
        proto::policy::AccessProtocol::Http => {
            let rest = target.strip_prefix("http://")?;
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, "/"),
            };
            let (host, port) = host_port(authority).unwrap_or((authority.to_string(), 80));
            let path = path.split('?').next().unwrap_or("/").to_string();
            (host, port, Some(path))
        }
        proto::policy::AccessProtocol::Https | proto::policy::AccessProtocol::Tcp => {
            let (host, port) = host_port(target)?;
            (host, port, None)
        }
    };
    Some(Blocked {
        protocol,
        host,
        port,
        path,
        rule: record.rule.as_str().to_string(),
        at: i64::try_from(record.at).ok()?,
    })
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::policy::AccessProtocol;

    fn blocked(at: i64) -> Blocked {
        Blocked {
            protocol: AccessProtocol::Http,
            host: "blocked.test".into(),
            port: 80,
            path: Some("/x".into()),
            rule: "rules:3".into(),
            at,
        }
    }

    #[test]
    fn only_what_the_card_blocked_this_start_and_recently_can_be_asked_for() {
        let key = AskKey::new();
        let now = 1_800_000_000;
        let mac = key.seal(&blocked(now)).unwrap();
        assert_eq!(key.check(&blocked(now), &mac, now + 5), Ok(()));
        let mut other = blocked(now);
        other.host = "elsewhere.test".into();
        assert_eq!(key.check(&other, &mac, now), Err(TicketError::BadMac));
        assert_eq!(
            key.check(&blocked(now), &mac, now + 3601),
            Err(TicketError::Expired)
        );
        assert_eq!(
            AskKey::new().check(&blocked(now), &mac, now),
            Err(TicketError::BadMac),
            "a restart makes old forms worthless"
        );
        for garbage in ["", "zz", &"é".repeat(32), &"0".repeat(64)] {
            assert_eq!(
                key.check(&blocked(now), garbage, now),
                Err(TicketError::BadMac)
            );
        }
    }

    #[test]
    fn a_recent_denial_reads_back_as_what_was_blocked() {
        let record =
            |protocol: &'static str, target: &str, by_rule: bool| super::super::DecisionRecord {
                at: 9,
                client: std::net::IpAddr::from([172, 31, 77, 1]),
                protocol,
                target: heapless::String::try_from(target).unwrap(),
                action: proto::Action::Deny,
                rule: heapless::String::try_from("rules:3").unwrap(),
                by_rule,
            };
        let read = |protocol, target| {
            blocked_from_record(&record(protocol, target, true))
                .map(|b| (b.protocol.as_str(), b.host, b.port, b.path))
        };
        assert_eq!(
            read("http", "http://blocked.test:80/x?secret=1"),
            Some(("http", "blocked.test".into(), 80, Some("/x".into())))
        );
        assert_eq!(
            read("https", "blocked.test:443"),
            Some(("https", "blocked.test".into(), 443, None))
        );
        assert_eq!(
            read("tcp", "[2001:db8::1]:5432"),
            Some(("tcp", "2001:db8::1".into(), 5432, None))
        );
        assert_eq!(
            read("dns", "blocked.test."),
            Some(("dns", "blocked.test".into(), 53, None))
        );
        assert_eq!(read("https", "no port"), None);
        assert!(blocked_from_record(&record("https", "a.test:443", false)).is_none());
    }

    #[test]
    fn the_form_carries_the_block_and_its_mac() {
        let key = AskKey::new();
        let form = key
            .form(blocked(7), "https://172.31.77.2/access-requests".into())
            .unwrap();
        let field = |name| {
            form.fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("path"), "/x");
        assert_eq!(key.check(&blocked(7), &field("mac"), 8), Ok(()));
        let mut odd = blocked(7);
        odd.host = "a b".into();
        assert!(key.form(odd, String::new()).is_none());
    }
}
