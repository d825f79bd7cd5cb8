//! Encrypted Client Hello, handled where DNS filters handle it: in DNS.
//!
//! Browsers put a GREASE ECH extension in every ClientHello. GREASE is built to look exactly
//! like real ECH, so the extension tells the card nothing: a hello is decided on its outer
//! SNI like any other (a GREASE hello's outer SNI is the real name). Real ECH needs an ECH
//! config, and a browser gets it from a DNS `HTTPS`/`SVCB` answer. The card's DNS removes the
//! `ech` SvcParam from every such answer it hands the inside, keeping the rest of the record,
//! and remembers the `public_name` of every config it removed: the cover name (for example
//! `cloudflare-ech.com`) that real ECH would have put in the outer SNI. A hello naming a cover
//! name is refused unless the rule that allows the name says `allow-ech`.
//!
//! The `ECHConfigList` codec is written here: it is a few length-prefixed fields
//! (draft-ietf-tls-esni, section 4), and hickory hands the list over as raw bytes.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::svcb::{Mandatory, SVCB, SvcParamKey, SvcParamValue};

/// Cover names remembered at most; the oldest is forgotten first.
pub const MAX_COVER_NAMES: usize = 512;
/// The ECH config version browsers use (draft 13 onwards, RFC 9849).
const ECH_VERSION: u16 = 0xfe0d;

/// Cover names the card has seen in ECH configs it stripped.
#[derive(Debug)]
pub struct CoverNames {
    names: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Default for CoverNames {
    fn default() -> CoverNames {
        let covers = CoverNames {
            names: Mutex::new((HashSet::new(), VecDeque::new())),
        };
        // Cloudflare's: the one most ECH traffic carries. Known before any answer is seen, so
        // a browser that learnt a config elsewhere (before the card) is refused as well.
        covers.remember("cloudflare-ech.com");
        covers
    }
}

impl CoverNames {
    /// Remembers `name` (any case, trailing dot or not).
    pub fn remember(&self, name: &str) {
        let name = normalized(name);
        let mut guard = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if set.contains(&name) {
            return;
        }
        if order.len() >= MAX_COVER_NAMES
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        set.insert(name.clone());
        order.push_back(name);
    }

    pub fn contains(&self, name: &str) -> bool {
        let guard = self.names.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.contains(&normalized(name))
    }

    pub fn len(&self) -> usize {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Removes the `ech` SvcParam from every `HTTPS` and `SVCB` record of `answer` (answers,
/// authorities, additionals), remembering each stripped config's public name in `covers`.
/// Returns how many records were changed.
pub fn strip(answer: &mut Message, covers: &CoverNames) -> usize {
    let mut changed = 0;
    for record in answer
        .answers
        .iter_mut()
        .chain(&mut answer.authorities)
        .chain(&mut answer.additionals)
    {
        let svcb = match &mut record.data {
            RData::HTTPS(https) => &mut https.0,
            RData::SVCB(svcb) => svcb,
            _ => continue,
        };
        if strip_params(svcb, covers) {
            changed += 1;
        }
    }
    changed
}

/// Strips one record's `ech` parameter (and its mention in `mandatory`, which would otherwise
/// make the record invalid). True if anything was removed.
fn strip_params(svcb: &mut SVCB, covers: &CoverNames) -> bool {
    let before = svcb.svc_params.len();
    svcb.svc_params.retain(|(key, value)| {
        if *key != SvcParamKey::EchConfigList {
            return true;
        }
        if let SvcParamValue::EchConfigList(list) = value {
            for name in public_names(&list.0) {
                covers.remember(&name);
            }
        }
        false
    });
    if svcb.svc_params.len() == before {
        return false;
    }
    svcb.svc_params.retain_mut(|(key, value)| {
        if let (SvcParamKey::Mandatory, SvcParamValue::Mandatory(Mandatory(keys))) = (key, value) {
            keys.retain(|k| *k != SvcParamKey::EchConfigList);
            return !keys.is_empty();
        }
        true
    });
    true
}

/// The public names of the configs in an `ECHConfigList` (with its 2-byte length prefix).
/// Configs of other versions are skipped; bytes that do not parse end the list.
pub fn public_names(list: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut input = Reader(list);
    let Some(mut configs) = input.vector16() else {
        return names;
    };
    while let (Some(version), Some(contents)) = (configs.u16(), configs.vector16()) {
        if version != ECH_VERSION {
            continue;
        }
        if let Some(name) = config_public_name(contents) {
            names.push(name);
        }
    }
    names
}

/// `ECHConfigContents`: key config, then maximum name length, then the public name.
fn config_public_name(contents: Reader<'_>) -> Option<String> {
    let mut c = contents;
    c.u8()?; // config_id
    c.u16()?; // kem_id
    c.vector16()?; // public_key
    c.vector16()?; // cipher_suites
    c.u8()?; // maximum_name_length
    let name = c.vector8()?;
    let name = std::str::from_utf8(name.0).ok()?;
    // A DNS name in text form; anything else is not a name a hello can carry.
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
    .then(|| normalized(name))
}

/// A cursor over length-prefixed TLS structures; every read is bounds-checked.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vector8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Reader)
    }

    fn vector16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Reader)
    }
}

/// An `ECHConfigList` as a server publishes it.
#[cfg(test)]
pub(crate) fn config_list(public_name: &str) -> Vec<u8> {
    let mut contents = vec![7u8]; // config_id
    contents.extend_from_slice(&0x0020u16.to_be_bytes()); // DHKEM(X25519, HKDF-SHA256)
    contents.extend_from_slice(&32u16.to_be_bytes());
    contents.extend_from_slice(&[0x42; 32]); // public key
    contents.extend_from_slice(&4u16.to_be_bytes());
    contents.extend_from_slice(&[0x00, 0x01, 0x00, 0x01]); // HKDF-SHA256, AES-128-GCM
    contents.push(0); // maximum_name_length
    contents.push(u8::try_from(public_name.len()).expect("short name"));
    contents.extend_from_slice(public_name.as_bytes());
    contents.extend_from_slice(&0u16.to_be_bytes()); // no extensions
    let mut config = ECH_VERSION.to_be_bytes().to_vec();
    config.extend_from_slice(&u16::try_from(contents.len()).expect("short").to_be_bytes());
    config.extend_from_slice(&contents);
    let mut list = u16::try_from(config.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    list.extend_from_slice(&config);
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::rdata::HTTPS;
    use hickory_proto::rr::rdata::svcb::{Alpn, EchConfigList, IpHint};
    use hickory_proto::rr::{Name, Record};
    fn https_record(params: Vec<(SvcParamKey, SvcParamValue)>) -> Record {
        Record::from_rdata(
            Name::from_ascii("shop.example.").unwrap(),
            300,
            RData::HTTPS(HTTPS(SVCB::new(1, Name::root(), params))),
        )
    }

    fn ech(name: &str) -> (SvcParamKey, SvcParamValue) {
        (
            SvcParamKey::EchConfigList,
            SvcParamValue::EchConfigList(EchConfigList(config_list(name))),
        )
    }

    #[test]
    fn public_names_are_read_from_a_config_list() {
        assert_eq!(
            public_names(&config_list("Cover.Example.")),
            ["cover.example"]
        );
        // Two configs, the first of an unknown version, then garbage after a good one.
        let good = config_list("second.example");
        let mut two = vec![0xfe, 0x0a, 0x00, 0x02, 0xaa, 0xbb];
        two.extend_from_slice(&good[2..]);
        two.extend_from_slice(&[0xfe, 0x0d, 0xff]);
        let mut list = u16::try_from(two.len()).unwrap().to_be_bytes().to_vec();
        list.extend_from_slice(&two);
        assert_eq!(public_names(&list), ["second.example"]);
        for cut in 0..good.len() {
            let _ = public_names(&good[..cut]);
        }
        assert!(public_names(&config_list("bad name")).is_empty());
    }

    #[test]
    fn ech_is_stripped_and_the_rest_of_the_record_kept() {
        let covers = CoverNames::default();
        let mut answer = Message::query();
        let alpn = (
            SvcParamKey::Alpn,
            SvcParamValue::Alpn(Alpn(vec!["h2".into(), "http/1.1".into()])),
        );
        let hint = (
            SvcParamKey::Ipv4Hint,
            SvcParamValue::Ipv4Hint(IpHint(vec![A::new(203, 0, 113, 10)])),
        );
        let mandatory = (
            SvcParamKey::Mandatory,
            SvcParamValue::Mandatory(Mandatory(vec![SvcParamKey::EchConfigList])),
        );
        answer.answers.push(https_record(vec![
            mandatory,
            alpn.clone(),
            hint.clone(),
            ech("cover.example"),
        ]));
        answer.additionals.push(https_record(vec![alpn.clone()]));
        assert_eq!(strip(&mut answer, &covers), 1);
        let RData::HTTPS(https) = &answer.answers[0].data else {
            panic!("still an HTTPS record");
        };
        assert_eq!(https.0.svc_params, vec![alpn.clone(), hint]);
        assert!(covers.contains("COVER.example."));
        assert!(!covers.contains("shop.example"));
        // The encoded answer decodes again: nothing half-removed.
        let bytes = answer.to_vec().unwrap();
        assert_eq!(Message::from_vec(&bytes).unwrap().answers, answer.answers);
    }

    #[test]
    fn cover_names_are_bounded_and_forget_the_oldest() {
        let covers = CoverNames::default();
        assert!(covers.contains("cloudflare-ech.com"));
        for i in 0..MAX_COVER_NAMES + 10 {
            covers.remember(&format!("c{i}.example"));
        }
        assert_eq!(covers.len(), MAX_COVER_NAMES);
        assert!(!covers.contains("c0.example"));
        assert!(covers.contains(&format!("c{}.example", MAX_COVER_NAMES + 9)));
    }
}
