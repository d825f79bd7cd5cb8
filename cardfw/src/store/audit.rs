//! The audit log: who did what when. The whole log is one sealed file (`audit.sealed`), holding
//! at most [`CAPACITY`] entries; the oldest is dropped when a new one would exceed it. Entries
//! hold event kinds and numbers only, so no PIN or PUK can end up in the log.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CAPACITY: usize = 256;
const ENTRY_LEN: usize = 8 + 1 + 8;

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Whoever typed the PIN (or tried to).
    Admin,
    /// Whoever typed the PUK.
    PukHolder,
    /// The card itself (first start, factory reset).
    Card,
    /// Whoever holds the setup code (the card's label, or its reader).
    Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    /// First start: device key, setup code and rules v1 created.
    Created,
    LoginOk,
    LoginFailed {
        tries_left: u8,
    },
    /// A login attempt while the PIN was blocked (no try spent, nothing checked).
    LoginWhileBlocked,
    RulesChanged {
        version: u64,
    },
    RolledBack {
        version: u64,
    },
    PinChanged,
    Unblocked,
    UnblockFailed {
        tries_left: u8,
    },
    /// Everything wiped and created anew (this is the first entry of the new log).
    FactoryReset,
    /// Enrolled with a policy server: the rule editor is now read-only.
    Enrolled,
    Unenrolled,
    /// A bundle signed by the policy key was installed (the bundle's version).
    BundleInstalled {
        version: u64,
    },
    /// First setup: the PIN chosen with the setup code, a PUK made and shown once.
    SetUp,
    SetupFailed {
        tries_left: u8,
    },
    PukChanged,
    PukChangeFailed {
        tries_left: u8,
    },
    /// The card's inspection CA got a new key and certificate (browsers must trust the new one).
    InspectionCaRekeyed,
    /// The owner added CAs to trust for upstream servers (how many the card holds now).
    OwnerCaAdded {
        count: u64,
    },
    /// The owner removed an added CA (how many the card holds now).
    OwnerCaRemoved {
        count: u64,
    },
    /// The owner stored a client certificate (replacing any before).
    ClientCertStored,
    /// The owner removed the client certificate.
    ClientCertRemoved,
    /// The owner unlocked the client certificate with the PIN.
    ClientCertUnlocked,
    /// The owner unlocked a VPN's key with the PIN (see `crate::vpn`).
    VpnUnlocked,
    /// An overlay signed by the policy key was installed: the rules approved for this card
    /// alone (the overlay's version).
    OverlayInstalled {
        version: u64,
    },
    /// The owner added a VPN on the card page (see `crate::vpn::added`).
    VpnAdded,
    /// The owner removed a VPN added on the card page.
    VpnRemoved,
}

impl AuditEvent {
    pub fn actor(self) -> Actor {
        match self {
            AuditEvent::Created
            | AuditEvent::FactoryReset
            | AuditEvent::BundleInstalled { .. }
            | AuditEvent::OverlayInstalled { .. } => Actor::Card,
            AuditEvent::Unblocked
            | AuditEvent::UnblockFailed { .. }
            | AuditEvent::PukChanged
            | AuditEvent::PukChangeFailed { .. } => Actor::PukHolder,
            AuditEvent::SetUp | AuditEvent::SetupFailed { .. } => Actor::Owner,
            _ => Actor::Admin,
        }
    }

    fn code(self) -> (u8, u64) {
        match self {
            AuditEvent::Created => (1, 0),
            AuditEvent::LoginOk => (2, 0),
            AuditEvent::LoginFailed { tries_left } => (3, tries_left.into()),
            AuditEvent::LoginWhileBlocked => (4, 0),
            AuditEvent::RulesChanged { version } => (5, version),
            AuditEvent::RolledBack { version } => (6, version),
            AuditEvent::PinChanged => (7, 0),
            AuditEvent::Unblocked => (8, 0),
            AuditEvent::UnblockFailed { tries_left } => (9, tries_left.into()),
            AuditEvent::FactoryReset => (10, 0),
            AuditEvent::Enrolled => (11, 0),
            AuditEvent::Unenrolled => (12, 0),
            AuditEvent::BundleInstalled { version } => (13, version),
            AuditEvent::SetUp => (14, 0),
            AuditEvent::SetupFailed { tries_left } => (15, tries_left.into()),
            AuditEvent::PukChanged => (16, 0),
            AuditEvent::PukChangeFailed { tries_left } => (17, tries_left.into()),
            AuditEvent::InspectionCaRekeyed => (18, 0),
            AuditEvent::OwnerCaAdded { count } => (19, count),
            AuditEvent::OwnerCaRemoved { count } => (20, count),
            AuditEvent::ClientCertStored => (21, 0),
            AuditEvent::ClientCertRemoved => (22, 0),
            AuditEvent::ClientCertUnlocked => (23, 0),
            AuditEvent::VpnUnlocked => (24, 0),
            AuditEvent::OverlayInstalled { version } => (25, version),
            AuditEvent::VpnAdded => (26, 0),
            AuditEvent::VpnRemoved => (27, 0),
        }
    }

    fn from_code(kind: u8, arg: u64) -> Option<AuditEvent> {
        let tries_left = u8::try_from(arg).ok();
        Some(match kind {
            1 => AuditEvent::Created,
            2 => AuditEvent::LoginOk,
            3 => AuditEvent::LoginFailed {
                tries_left: tries_left?,
            },
            4 => AuditEvent::LoginWhileBlocked,
            5 => AuditEvent::RulesChanged { version: arg },
            6 => AuditEvent::RolledBack { version: arg },
            7 => AuditEvent::PinChanged,
            8 => AuditEvent::Unblocked,
            9 => AuditEvent::UnblockFailed {
                tries_left: tries_left?,
            },
            10 => AuditEvent::FactoryReset,
            11 => AuditEvent::Enrolled,
            12 => AuditEvent::Unenrolled,
            13 => AuditEvent::BundleInstalled { version: arg },
            14 => AuditEvent::SetUp,
            15 => AuditEvent::SetupFailed {
                tries_left: tries_left?,
            },
            16 => AuditEvent::PukChanged,
            17 => AuditEvent::PukChangeFailed {
                tries_left: tries_left?,
            },
            18 => AuditEvent::InspectionCaRekeyed,
            19 => AuditEvent::OwnerCaAdded { count: arg },
            20 => AuditEvent::OwnerCaRemoved { count: arg },
            21 => AuditEvent::ClientCertStored,
            22 => AuditEvent::ClientCertRemoved,
            23 => AuditEvent::ClientCertUnlocked,
            24 => AuditEvent::VpnUnlocked,
            25 => AuditEvent::OverlayInstalled { version: arg },
            26 => AuditEvent::VpnAdded,
            27 => AuditEvent::VpnRemoved,
            _ => return None,
        })
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditEvent::Created => f.write_str("card initialised"),
            AuditEvent::LoginOk => f.write_str("login ok"),
            AuditEvent::LoginFailed { tries_left } => {
                write!(f, "login failed, {tries_left} tries left")
            }
            AuditEvent::LoginWhileBlocked => f.write_str("login refused: PIN blocked"),
            AuditEvent::RulesChanged { version } => write!(f, "rules changed to version {version}"),
            AuditEvent::RolledBack { version } => {
                write!(f, "rules rolled back (now version {version})")
            }
            AuditEvent::PinChanged => f.write_str("PIN changed"),
            AuditEvent::Unblocked => f.write_str("PIN unblocked with the PUK"),
            AuditEvent::UnblockFailed { tries_left } => {
                write!(f, "unblock failed, {tries_left} PUK tries left")
            }
            AuditEvent::FactoryReset => f.write_str("factory reset"),
            AuditEvent::Enrolled => f.write_str("enrolled with a policy server"),
            AuditEvent::Unenrolled => f.write_str("left the policy server"),
            AuditEvent::BundleInstalled { version } => {
                write!(f, "policy bundle version {version} installed")
            }
            AuditEvent::VpnAdded => f.write_str("VPN added on the card page"),
            AuditEvent::VpnRemoved => f.write_str("VPN removed on the card page"),
            AuditEvent::OverlayInstalled { version } => {
                write!(
                    f,
                    "policy overlay version {version} installed (rules approved for this card)"
                )
            }
            AuditEvent::SetUp => f.write_str("first setup: PIN chosen, PUK shown"),
            AuditEvent::SetupFailed { tries_left } => {
                write!(
                    f,
                    "setup refused: wrong setup code, {tries_left} tries left"
                )
            }
            AuditEvent::PukChanged => f.write_str("PUK changed"),
            AuditEvent::PukChangeFailed { tries_left } => {
                write!(f, "PUK change failed, {tries_left} PUK tries left")
            }
            AuditEvent::InspectionCaRekeyed => f.write_str("inspection CA re-keyed"),
            AuditEvent::OwnerCaAdded { count } => {
                write!(f, "trusted CA added ({count} added CAs now)")
            }
            AuditEvent::OwnerCaRemoved { count } => {
                write!(f, "trusted CA removed ({count} added CAs now)")
            }
            AuditEvent::ClientCertStored => f.write_str("client certificate stored"),
            AuditEvent::ClientCertRemoved => f.write_str("client certificate removed"),
            AuditEvent::ClientCertUnlocked => f.write_str("client certificate unlocked"),
            AuditEvent::VpnUnlocked => f.write_str("VPN unlocked"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: SystemTime,
    pub event: AuditEvent,
}

impl AuditEntry {
    pub fn now(event: AuditEvent) -> AuditEntry {
        AuditEntry {
            at: SystemTime::now(),
            event,
        }
    }

    pub fn actor(&self) -> Actor {
        self.event.actor()
    }
}

/// Serialises the entries, oldest first: per entry 8 bytes of seconds since 1970, one kind
/// byte, 8 bytes of argument (a version or a try count).
pub fn emit(entries: &[AuditEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for entry in entries {
        let secs = entry
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (kind, arg) = entry.event.code();
        out.extend_from_slice(&secs.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(&arg.to_be_bytes());
    }
    out
}

/// `None` when the bytes are not a log this firmware wrote.
pub fn parse(bytes: &[u8]) -> Option<Vec<AuditEntry>> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) || bytes.len() / ENTRY_LEN > CAPACITY {
        return None;
    }
    bytes
        .chunks_exact(ENTRY_LEN)
        .map(|chunk| {
            let secs = u64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let arg = u64::from_be_bytes(chunk[9..17].try_into().ok()?);
            Some(AuditEntry {
                at: UNIX_EPOCH + Duration::from_secs(secs),
                event: AuditEvent::from_code(chunk[8], arg)?,
            })
        })
        .collect()
}

/// Appends, dropping the oldest entries beyond [`CAPACITY`].
pub fn push_bounded(entries: &mut Vec<AuditEntry>, entry: AuditEntry) {
    entries.push(entry);
    if entries.len() > CAPACITY {
        let excess = entries.len() - CAPACITY;
        entries.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_event() {
        let events = [
            AuditEvent::Created,
            AuditEvent::LoginOk,
            AuditEvent::LoginFailed { tries_left: 2 },
            AuditEvent::LoginWhileBlocked,
            AuditEvent::RulesChanged { version: 7 },
            AuditEvent::RolledBack { version: 8 },
            AuditEvent::PinChanged,
            AuditEvent::Unblocked,
            AuditEvent::UnblockFailed { tries_left: 9 },
            AuditEvent::FactoryReset,
        ];
        let entries: Vec<_> = events
            .iter()
            .map(|&event| AuditEntry {
                at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                event,
            })
            .collect();
        assert_eq!(parse(&emit(&entries)), Some(entries));
    }

    #[test]
    fn malformed_logs() {
        let one = emit(&[AuditEntry::now(AuditEvent::LoginOk)]);
        assert_eq!(parse(&one[..ENTRY_LEN - 1]), None);
        let mut unknown = one.clone();
        unknown[8] = 99;
        assert_eq!(parse(&unknown), None);
        let mut too_many_tries =
            emit(&[AuditEntry::now(AuditEvent::LoginFailed { tries_left: 1 })]);
        too_many_tries[9] = 1;
        assert_eq!(parse(&too_many_tries), None);
    }

    #[test]
    fn bounded() {
        let mut entries = Vec::new();
        for version in 0..(CAPACITY as u64 + 10) {
            push_bounded(
                &mut entries,
                AuditEntry::now(AuditEvent::RulesChanged { version }),
            );
        }
        assert_eq!(entries.len(), CAPACITY);
        assert_eq!(entries[0].event, AuditEvent::RulesChanged { version: 10 });
    }
}
