//! The `vpn-keys.sealed` record: one line per VPN, `NAME PUBLIC PRIVATE`, the keys in
//! standard base64 as `wg` writes them. Text, so a record is readable when debugging a card
//! with its device key; sealed like every other file, so the private keys are not.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// One VPN's key pair as the record holds it.
pub struct VpnKeyEntry {
    pub name: String,
    pub public: [u8; 32],
    pub private: Zeroizing<[u8; 32]>,
}

/// The entries of `record`; `None` when any line is malformed (the record is the card's own
/// writing, so a bad line means damage, and guessing would hand out a wrong key).
pub fn parse(record: &[u8]) -> Option<Vec<VpnKeyEntry>> {
    let text = std::str::from_utf8(record).ok()?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut fields = line.split(' ');
            let name = fields.next()?.to_string();
            let public = key(fields.next()?)?;
            let private = key(fields.next()?)?;
            if fields.next().is_some() {
                return None;
            }
            Some(VpnKeyEntry {
                name,
                public: *public,
                private,
            })
        })
        .collect()
}

/// Appends the line for `name` to `record`.
pub fn append(record: &mut Zeroizing<Vec<u8>>, name: &str, public: &[u8; 32], private: &[u8; 32]) {
    let line = Zeroizing::new(format!(
        "{name} {} {}\n",
        STANDARD.encode(public),
        STANDARD.encode(private)
    ));
    record.extend_from_slice(line.as_bytes());
}

fn key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(STANDARD.decode(text).ok()?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut record = Zeroizing::new(Vec::new());
        append(&mut record, "corp", &[1; 32], &[2; 32]);
        append(&mut record, "lab", &[3; 32], &[4; 32]);
        let entries = parse(&record).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, "lab");
        assert_eq!(entries[1].public, [3; 32]);
        assert_eq!(*entries[1].private, [4; 32]);
        assert!(parse(b"corp AAAA AAAA\n").is_none(), "short keys");
        assert!(parse(b"corp\n").is_none());
        assert!(parse(&[0xff, 0xfe]).is_none());
        assert!(parse(b"").unwrap().is_empty());
    }
}
