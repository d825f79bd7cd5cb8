//! The cardwall card application: its identifiers and data encodings, known to the card and
//! to the host tools alike.
//!
//! | command | CLA INS P1 P2 | data | needs |
//! |---|---|---|---|
//! | SELECT application | 00 A4 04 00/0C | [`AID`] | — |
//! | SELECT rule file | 00 A4 02 0C (or 00 0C) | [`RULES_FID`] | — |
//! | VERIFY | 00 20 00 [`PIN_REFERENCE`] | the PIN's digits (none: ask the tries left) | — |
//! | VERIFY reset | 00 20 FF [`PIN_REFERENCE`] | — (forget the PIN presented) | — |
//! | CHANGE REFERENCE DATA | 00 24 00 [`PIN_REFERENCE`] | [`secret_pair`] old PIN, new PIN | — (the old PIN costs a try if wrong) |
//! | CHANGE REFERENCE DATA | 00 24 00 [`PUK_REFERENCE`] | [`secret_pair`] old PUK, new PUK | — (the old PUK costs a PUK try if wrong) |
//! | first setup | 00 24 00 [`SETUP_REFERENCE`] | [`secret_pair`] setup code, first PIN | a card not set up; answers the new PUK (digits), shown this once |
//! | RESET RETRY COUNTER | 00 2C 00 [`PIN_REFERENCE`] | [`secret_pair`] PUK, new PIN | — (the PUK costs a try if wrong) |
//! | factory reset | 00 E4 00 00 (DELETE FILE) | [`AID`] | — (wipes everything; a new setup code) |
//! | READ BINARY | 00 B0 offset (15 bits), or P1 = 80+SFI, P2 = offset | — | PIN |
//! | READ BINARY (odd) | 00 B1 00 00 | 54 len offset | PIN |
//! | UPDATE BINARY | 00/10 D6 00 00 (or 80+SFI 00) | the whole new rule file, chained | PIN |
//! | GET DATA | 00 CA [`TAG_STATUS`] | — | — |
//! | GET DATA | 00 CA [`TAG_LAST_REFUSAL`] | — | PIN |
//! | GET DATA | 00 CA [`TAG_SETUP_CODE`] | — | a card not set up (6A88 after) |
//!
//! The reader is the card's physical-presence channel: whoever reaches the card's reader holds
//! the card. So the setup code, the PUK unblock and the factory reset are offered here and on
//! the card's console, never on the card's web page, which every computer on the inside
//! reaches.
//!
//! UPDATE BINARY always replaces the whole file, because a rule set is only accepted whole,
//! after it parses: a file longer than one command is sent as a command chain (CLA bit 10 on
//! every command but the last), each with P1-P2 0000, and the card saves it when the last
//! command arrives. A file that does not parse is refused (6A80) and the running one stays;
//! GET DATA [`TAG_LAST_REFUSAL`] then gives the parser's messages.

/// The application identifier: F0 (a proprietary, unregistered RID) then "cardwall".
pub const AID: [u8; 9] = [0xF0, b'c', b'a', b'r', b'd', b'w', b'a', b'l', b'l'];
/// The rule file's file identifier ("RS") and short file identifier.
pub const RULES_FID: [u8; 2] = [0x52, 0x53];
pub const RULES_SFI: u8 = 1;
/// P2 of VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER: the application's PIN.
pub const PIN_REFERENCE: u8 = 0x81;
/// P2 of CHANGE REFERENCE DATA for the PUK.
pub const PUK_REFERENCE: u8 = 0x82;
/// P2 of CHANGE REFERENCE DATA for a new card's first setup (the setup code is the "old"
/// reference data, the first PIN the new one).
pub const SETUP_REFERENCE: u8 = 0x83;

pub const INS_SELECT: u8 = 0xA4;
pub const INS_VERIFY: u8 = 0x20;
pub const INS_CHANGE_REFERENCE_DATA: u8 = 0x24;
pub const INS_RESET_RETRY_COUNTER: u8 = 0x2C;
pub const INS_READ_BINARY: u8 = 0xB0;
pub const INS_READ_BINARY_ODD: u8 = 0xB1;
pub const INS_UPDATE_BINARY: u8 = 0xD6;
pub const INS_GET_DATA: u8 = 0xCA;
/// DELETE FILE of the application ([`AID`] as data): the factory reset.
pub const INS_DELETE_FILE: u8 = 0xE4;

/// GET DATA tag (P1-P2) of the card's status, a [`CardStatus`].
pub const TAG_STATUS: u16 = 0x0101;
/// GET DATA tag of why the last UPDATE BINARY was refused (UTF-8 text; empty if none). Needs
/// the PIN; cleared when the card is reset.
pub const TAG_LAST_REFUSAL: u16 = 0x0102;
/// GET DATA tag of a new card's setup code (ASCII digits), only until the card is set up.
pub const TAG_SETUP_CODE: u16 = 0x0103;
/// The offset data object of READ BINARY with the odd instruction.
pub const TAG_OFFSET: u8 = 0x54;

/// Each secret in a [`secret_pair`] takes this many bytes, padded with FF.
pub const SECRET_BLOCK: usize = 16;
const PADDING: u8 = 0xFF;

/// The data of CHANGE REFERENCE DATA and RESET RETRY COUNTER: two secrets (at most
/// [`SECRET_BLOCK`] digits each), each padded to [`SECRET_BLOCK`] bytes with FF, so the card
/// can tell where the first ends.
pub fn secret_pair(first: &str, second: &str) -> Option<Vec<u8>> {
    if first.len() > SECRET_BLOCK || second.len() > SECRET_BLOCK {
        return None;
    }
    let mut out = vec![PADDING; 2 * SECRET_BLOCK];
    out[..first.len()].copy_from_slice(first.as_bytes());
    out[SECRET_BLOCK..SECRET_BLOCK + second.len()].copy_from_slice(second.as_bytes());
    Some(out)
}

/// The two secrets of a [`secret_pair`], or `None` when the data is not one.
pub fn split_secret_pair(data: &[u8]) -> Option<(&str, &str)> {
    if data.len() != 2 * SECRET_BLOCK {
        return None;
    }
    fn unpad(block: &[u8]) -> Option<&str> {
        let end = block
            .iter()
            .position(|&b| b == PADDING)
            .unwrap_or(block.len());
        if block[end..].iter().any(|&b| b != PADDING) {
            return None;
        }
        std::str::from_utf8(&block[..end]).ok()
    }
    Some((unpad(&data[..SECRET_BLOCK])?, unpad(&data[SECRET_BLOCK..])?))
}

/// What GET DATA [`TAG_STATUS`] answers: simple TLVs (one-byte tag, one-byte length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardStatus {
    pub rules_version: u64,
    pub rules_bytes: u32,
    pub pin_tries_left: u8,
    pub puk_tries_left: u8,
    /// A new card, not set up: it has no PIN yet, only its setup code.
    pub needs_setup: bool,
    /// The PIN has been presented since the card was powered or reset.
    pub verified: bool,
    /// Commands refused since the card was powered.
    pub refused_commands: u32,
}

const T_VERSION: u8 = 0x80;
const T_BYTES: u8 = 0x81;
const T_PIN: u8 = 0x82;
const T_PUK: u8 = 0x83;
const T_FLAGS: u8 = 0x84;
const T_REFUSED: u8 = 0x85;
const FLAG_NEEDS_SETUP: u8 = 1;
const FLAG_VERIFIED: u8 = 2;

impl CardStatus {
    pub fn emit(&self) -> Vec<u8> {
        let flags =
            u8::from(self.needs_setup) * FLAG_NEEDS_SETUP + u8::from(self.verified) * FLAG_VERIFIED;
        let mut out = Vec::with_capacity(32);
        for (tag, value) in [
            (T_VERSION, &self.rules_version.to_be_bytes()[..]),
            (T_BYTES, &self.rules_bytes.to_be_bytes()),
            (T_PIN, &[self.pin_tries_left]),
            (T_PUK, &[self.puk_tries_left]),
            (T_FLAGS, &[flags]),
            (T_REFUSED, &self.refused_commands.to_be_bytes()),
        ] {
            out.push(tag);
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        out
    }

    /// Unknown tags are skipped (a newer card may say more); a missing one is `None`.
    pub fn parse(mut bytes: &[u8]) -> Option<CardStatus> {
        let mut status = CardStatus {
            rules_version: 0,
            rules_bytes: 0,
            pin_tries_left: 0,
            puk_tries_left: 0,
            needs_setup: false,
            verified: false,
            refused_commands: 0,
        };
        let mut seen = 0u8;
        while let [tag, len, rest @ ..] = bytes {
            let value = rest.get(..usize::from(*len))?;
            bytes = &rest[usize::from(*len)..];
            match (*tag, value.len()) {
                (T_VERSION, 8) => status.rules_version = u64::from_be_bytes(value.try_into().ok()?),
                (T_BYTES, 4) => status.rules_bytes = u32::from_be_bytes(value.try_into().ok()?),
                (T_PIN, 1) => status.pin_tries_left = value[0],
                (T_PUK, 1) => status.puk_tries_left = value[0],
                (T_FLAGS, 1) => {
                    status.needs_setup = value[0] & FLAG_NEEDS_SETUP != 0;
                    status.verified = value[0] & FLAG_VERIFIED != 0;
                }
                (T_REFUSED, 4) => {
                    status.refused_commands = u32::from_be_bytes(value.try_into().ok()?)
                }
                (T_VERSION..=T_REFUSED, _) => return None,
                _ => continue,
            }
            seen |= 1 << (tag - T_VERSION);
        }
        (bytes.is_empty() && seen == 0b11_1111).then_some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_pairs() {
        let data = secret_pair("1234", "987654321098").unwrap();
        assert_eq!(data.len(), 32);
        assert_eq!(split_secret_pair(&data), Some(("1234", "987654321098")));
        assert_eq!(secret_pair(&"1".repeat(17), "1"), None);
        assert_eq!(split_secret_pair(&data[..31]), None);
        let mut holed = data.clone();
        holed[10] = b'5';
        assert_eq!(split_secret_pair(&holed), None, "digits after the padding");
    }

    #[test]
    fn status_round_trip() {
        let status = CardStatus {
            rules_version: 7,
            rules_bytes: 1234,
            pin_tries_left: 2,
            puk_tries_left: 10,
            needs_setup: true,
            verified: false,
            refused_commands: 3,
        };
        let mut bytes = status.emit();
        assert_eq!(CardStatus::parse(&bytes), Some(status));
        bytes.extend_from_slice(&[0x99, 1, 0]);
        assert_eq!(
            CardStatus::parse(&bytes),
            Some(status),
            "unknown tag skipped"
        );
        assert_eq!(CardStatus::parse(&bytes[..bytes.len() - 4]), None);
        assert_eq!(CardStatus::parse(&bytes[3..]), None, "version missing");
    }
}
