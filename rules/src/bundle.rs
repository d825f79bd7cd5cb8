//! Signed policy bundles: the rule file (and its list files) with a version, a validity
//! period and a target group, signed with Ed25519 by the policy server's key.
//!
//! A bundle on the wire is an envelope around the exact bytes that were signed:
//!
//! ```text
//! cardwall-bundle 1
//! key: <base64 public key that signed>
//! signature: <base64 Ed25519 signature over the payload bytes>
//!
//! <payload>
//! ```
//!
//! and the payload is
//!
//! ```text
//! cardwall-policy 1
//! version: 7
//! group: laptops
//! issued-at: 2026-11-25T22:00:00Z
//! expires-at: 2026-12-25T22:00:00Z
//! file: rules.txt 1234
//! file: ads.txt 56789
//! trusted-cas: 2345
//!
//! <1234 bytes of rules.txt><56789 bytes of ads.txt><2345 bytes of PEM>
//! ```
//!
//! The signature is checked over the payload bytes as received, before any of them is parsed:
//! there is no canonical form to get wrong. The first file is the rule file; the others are
//! the list files it names.
//!
//! # Trusted CAs
//!
//! The `trusted-cas` header is optional and comes last (a bundle without it, as every bundle
//! before it had, still verifies): its bytes follow the files and are PEM text of CA
//! certificates the card trusts for upstream servers of inspected sites, beside Mozilla's
//! roots (a company's TLS-inspecting proxy or internal CA). The text may hold nothing but
//! `CERTIFICATE` blocks and blank lines, at most [`MAX_TRUSTED_CAS`] of them in at most
//! [`MAX_TRUSTED_CAS_BYTES`]; see [`check_trusted_cas`]. A bundle never carries a private key:
//! a `PRIVATE KEY` block of any kind is refused with [`BundleError::PrivateKey`], so a key
//! pasted by mistake is never sent to a fleet of cards. Whether each certificate is a usable
//! CA (X.509, basic constraints) is the card's check, where the X.509 parser lives.
//!
//! # VPNs
//!
//! The `vpns` header is optional too and comes after `trusted-cas` (or last without it): its
//! bytes follow everything else and are the peer settings of the VPNs the policy server
//! pushes to one card, in a card's own overlay bundle (`proto::policy::ManagedVpns` as JSON).
//! This crate only carries them under the signature, like the rules: their meaning is the
//! card's check, made before anything is installed. They never hold a private key: the card
//! makes its own and reports only the public one.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};

use crate::{Diagnostics, RuleSet};

/// The key types callers hold: the signer's private key and the pinned public key.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

const ENVELOPE_MAGIC: &str = "cardwall-bundle 1";
const PAYLOAD_MAGIC: &str = "cardwall-policy 1";
const TRUSTED_CAS_HEADER: &str = "trusted-cas: ";
const VPNS_HEADER: &str = "vpns: ";

/// The most CA certificates a bundle may carry (the card page allows as many added CAs).
pub const MAX_TRUSTED_CAS: usize = 32;
/// The largest PEM text of CAs a bundle may carry: a CA certificate is one or two kilobytes.
pub const MAX_TRUSTED_CAS_BYTES: usize = 64 * 1024;

/// How far a card's clock may run behind the signer's before a fresh bundle counts as "not
/// yet valid". Cards without a battery-backed clock set their time over the network; five
/// minutes covers the drift between syncs.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Why a bundle was refused. Each failure has its own variant so the card can log and
/// report exactly what happened.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a cardwall bundle: {0}")]
    Malformed(String),
    #[error("signed by key {signed_by}, but this card trusts only {pinned}")]
    WrongKey { signed_by: String, pinned: String },
    #[error("signature does not verify: the bundle was altered or not signed by its key")]
    BadSignature,
    #[error("bundle is not valid before {issued_at} (card time {now})")]
    NotYetValid {
        issued_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("bundle expired at {expires_at} (card time {now})")]
    Expired {
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error(
        "bundle version {offered} is not newer than installed version {installed} (rollback or replay)"
    )]
    NotNewer { offered: u64, installed: u64 },
    #[error("bundle is for group `{bundle}`, this card is in group `{card}`")]
    WrongGroup { bundle: String, card: String },
    #[error("bundle rules do not parse:\n{0}")]
    Rules(Diagnostics),
    #[error("the bundle's trusted CAs hold a `{label}` block: a bundle never carries private keys")]
    PrivateKey { label: String },
    #[error("the bundle's trusted CAs are refused: {0}")]
    TrustedCas(String),
}

/// What a bundle carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub version: u64,
    pub group: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The rule file: name and text.
    pub rules: (String, String),
    /// List files the rule file names, by the name it uses.
    pub list_files: Vec<(String, String)>,
    /// PEM text of CA certificates the card trusts for inspected sites (see "Trusted CAs"
    /// above); `None` in a bundle without the `trusted-cas` header.
    pub trusted_cas: Option<String>,
    /// The peer settings of the VPNs pushed to one card (see "VPNs" above); `None` in a
    /// bundle without the `vpns` header.
    pub vpns: Option<String>,
}

/// What the card checks a bundle against.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The policy key pinned at enrolment.
    pub key: &'a VerifyingKey,
    /// The version the card runs now (0 when it runs none).
    pub installed_version: u64,
    /// The group the card is enrolled in.
    pub group: &'a str,
    pub now: DateTime<Utc>,
}

/// A bundle that passed every check, with its rules compiled and ready to install.
#[derive(Debug)]
pub struct Verified {
    pub bundle: Bundle,
    pub rules: RuleSet,
}

impl Bundle {
    /// The payload bytes, as signed.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str(PAYLOAD_MAGIC);
        out.push('\n');
        out.push_str(&format!("version: {}\n", self.version));
        out.push_str(&format!("group: {}\n", self.group));
        out.push_str(&format!("issued-at: {}\n", rfc3339(self.issued_at)));
        out.push_str(&format!("expires-at: {}\n", rfc3339(self.expires_at)));
        for (name, text) in self.files() {
            out.push_str(&format!("file: {name} {}\n", text.len()));
        }
        if let Some(cas) = &self.trusted_cas {
            out.push_str(&format!("{TRUSTED_CAS_HEADER}{}\n", cas.len()));
        }
        if let Some(vpns) = &self.vpns {
            out.push_str(&format!("{VPNS_HEADER}{}\n", vpns.len()));
        }
        out.push('\n');
        for (_, text) in self.files() {
            out.push_str(text);
        }
        for section in [&self.trusted_cas, &self.vpns].into_iter().flatten() {
            out.push_str(section);
        }
        out.into_bytes()
    }

    fn files(&self) -> impl Iterator<Item = (&String, &String)> {
        std::iter::once((&self.rules.0, &self.rules.1))
            .chain(self.list_files.iter().map(|(n, t)| (n, t)))
    }

    /// Signs the payload and wraps it in the envelope.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let payload = self.to_payload();
        let signature = key.sign(&payload);
        let mut out = format!(
            "{ENVELOPE_MAGIC}\nkey: {}\nsignature: {}\n\n",
            key_id(&key.verifying_key()),
            BASE64.encode(signature.to_bytes())
        )
        .into_bytes();
        out.extend_from_slice(&payload);
        out
    }

    /// Reads payload bytes. Only called on bytes whose signature has been verified.
    fn from_payload(payload: &[u8]) -> Result<Bundle, BundleError> {
        let malformed = |what: &str| BundleError::Malformed(format!("payload: {what}"));
        let mut rest = payload;
        let mut header = |name: &str| -> Result<String, BundleError> {
            let line =
                take_line(&mut rest).ok_or_else(|| malformed(&format!("missing `{name}`")))?;
            let value = if name.is_empty() {
                (line == PAYLOAD_MAGIC).then_some(line)
            } else {
                line.strip_prefix(name).and_then(|l| l.strip_prefix(": "))
            };
            value
                .map(str::to_string)
                .ok_or_else(|| malformed(&format!("expected `{name}`, found `{line}`")))
        };
        header("")?;
        let version = header("version")?
            .parse()
            .map_err(|_| malformed("version is not a number"))?;
        let group = header("group")?;
        let issued_at =
            parse_time(&header("issued-at")?).ok_or_else(|| malformed("bad issued-at"))?;
        let expires_at =
            parse_time(&header("expires-at")?).ok_or_else(|| malformed("bad expires-at"))?;
        let mut sizes = Vec::new();
        let mut trusted_cas_len = None;
        let mut vpns_len = None;
        loop {
            let line = take_line(&mut rest)
                .ok_or_else(|| malformed("missing blank line after headers"))?;
            if line.is_empty() {
                break;
            }
            if vpns_len.is_some() {
                return Err(malformed(&format!(
                    "`vpns` must be the last header, found `{line}` after it"
                )));
            }
            if let Some(len) = line.strip_prefix(VPNS_HEADER) {
                vpns_len = Some(
                    len.parse::<usize>()
                        .map_err(|_| malformed("vpns length is not a number"))?,
                );
                continue;
            }
            if trusted_cas_len.is_some() {
                return Err(malformed(&format!(
                    "`trusted-cas` comes after the files, found `{line}` after it"
                )));
            }
            if let Some(len) = line.strip_prefix(TRUSTED_CAS_HEADER) {
                trusted_cas_len = Some(
                    len.parse::<usize>()
                        .map_err(|_| malformed("trusted-cas length is not a number"))?,
                );
                continue;
            }
            let (name, len) = line
                .strip_prefix("file: ")
                .and_then(|l| l.split_once(' '))
                .ok_or_else(|| {
                    malformed(&format!("expected `file: NAME LENGTH`, found `{line}`"))
                })?;
            let len: usize = len
                .parse()
                .map_err(|_| malformed("file length is not a number"))?;
            sizes.push((name.to_string(), len));
        }
        let mut take = |len: usize, what: &str| -> Result<String, BundleError> {
            if len > rest.len() {
                return Err(malformed(&format!("{what} is cut short")));
            }
            let (body, tail) = rest.split_at(len);
            let text = std::str::from_utf8(body)
                .map_err(|_| malformed(&format!("{what} is not UTF-8")))?;
            rest = tail;
            Ok(text.to_string())
        };
        let mut files = Vec::new();
        for (name, len) in sizes {
            let text = take(len, &format!("file `{name}`"))?;
            files.push((name, text));
        }
        let trusted_cas = trusted_cas_len
            .map(|len| take(len, "the trusted CAs"))
            .transpose()?;
        let vpns = vpns_len.map(|len| take(len, "the VPNs")).transpose()?;
        if !rest.is_empty() {
            return Err(malformed("bytes after the last file"));
        }
        let mut files = files.into_iter();
        let rules = files.next().ok_or_else(|| malformed("no rule file"))?;
        Ok(Bundle {
            version,
            group,
            issued_at,
            expires_at,
            rules,
            list_files: files.collect(),
            trusted_cas,
            vpns,
        })
    }
}

/// Checks a bundle, in this order: envelope, key, signature (over the raw payload), then the
/// payload's group, dates and version, then the trusted CAs' text ([`check_trusted_cas`]), and
/// last whether the rules compile.
pub fn verify(bytes: &[u8], trust: &Trust<'_>) -> Result<Verified, BundleError> {
    let malformed = |what: &str| BundleError::Malformed(format!("envelope: {what}"));
    let mut rest = bytes;
    if take_line(&mut rest) != Some(ENVELOPE_MAGIC) {
        return Err(malformed(&format!(
            "does not start with `{ENVELOPE_MAGIC}`"
        )));
    }
    let signed_by = take_line(&mut rest)
        .and_then(|l| l.strip_prefix("key: "))
        .ok_or_else(|| malformed("missing `key:`"))?;
    let signature = take_line(&mut rest)
        .and_then(|l| l.strip_prefix("signature: "))
        .ok_or_else(|| malformed("missing `signature:`"))?;
    if take_line(&mut rest) != Some("") {
        return Err(malformed("missing blank line before the payload"));
    }
    let pinned = key_id(trust.key);
    if signed_by != pinned {
        return Err(BundleError::WrongKey {
            signed_by: signed_by.to_string(),
            pinned,
        });
    }
    let signature: [u8; 64] = BASE64
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("signature is not 64 bytes of base64"))?;
    trust
        .key
        .verify_strict(rest, &Signature::from_bytes(&signature))
        .map_err(|_| BundleError::BadSignature)?;

    let bundle = Bundle::from_payload(rest)?;
    if bundle.group != trust.group {
        return Err(BundleError::WrongGroup {
            bundle: bundle.group,
            card: trust.group.to_string(),
        });
    }
    if bundle.issued_at.timestamp() > trust.now.timestamp() + CLOCK_SKEW_SECS {
        return Err(BundleError::NotYetValid {
            issued_at: bundle.issued_at,
            now: trust.now,
        });
    }
    if bundle.expires_at <= trust.now {
        return Err(BundleError::Expired {
            expires_at: bundle.expires_at,
            now: trust.now,
        });
    }
    if bundle.version <= trust.installed_version {
        return Err(BundleError::NotNewer {
            offered: bundle.version,
            installed: trust.installed_version,
        });
    }
    if let Some(cas) = &bundle.trusted_cas {
        check_trusted_cas(cas)?;
    }
    let lists: HashMap<String, String> = bundle.list_files.iter().cloned().collect();
    let rules =
        RuleSet::from_text(&bundle.rules.0, &bundle.rules.1, &lists).map_err(BundleError::Rules)?;
    Ok(Verified { bundle, rules })
}

/// Checks the PEM text of a bundle's trusted CAs and returns how many certificates it holds:
/// only `CERTIFICATE` blocks with base64 bodies and blank lines between them, at least one, at
/// most [`MAX_TRUSTED_CAS`] in at most [`MAX_TRUSTED_CAS_BYTES`]. Text outside the blocks is
/// refused too, rather than skipped as PEM readers do: nothing in a bundle goes unchecked, and
/// a key cannot hide there. The signer runs the same check before signing, so an
/// administrator learns of a mistake at publish time rather than from every card.
pub fn check_trusted_cas(text: &str) -> Result<usize, BundleError> {
    let refused = |why: String| BundleError::TrustedCas(why);
    if text.len() > MAX_TRUSTED_CAS_BYTES {
        return Err(refused(format!(
            "{} bytes, more than the {} KiB allowed",
            text.len(),
            MAX_TRUSTED_CAS_BYTES / 1024
        )));
    }
    let mut count = 0;
    // The label of the block being read, and its base64 so far.
    let mut open: Option<(&str, String)> = None;
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end())) {
        if let Some(label) = pem_boundary(line, "-----BEGIN ") {
            if label.contains("PRIVATE KEY") {
                return Err(BundleError::PrivateKey {
                    label: label.to_string(),
                });
            }
            if open.is_some() {
                return Err(refused(format!("line {number}: BEGIN inside a block")));
            }
            if label != "CERTIFICATE" {
                return Err(refused(format!(
                    "line {number}: a `{label}` block; only CERTIFICATE blocks are allowed"
                )));
            }
            open = Some((label, String::new()));
        } else if let Some(label) = pem_boundary(line, "-----END ") {
            let Some((begun, body)) = open.take() else {
                return Err(refused(format!("line {number}: END without BEGIN")));
            };
            if label != begun {
                return Err(refused(format!(
                    "line {number}: END {label} closes a {begun} block"
                )));
            }
            if BASE64.decode(&body).map_or(true, |der| der.is_empty()) {
                return Err(refused(format!(
                    "the block ending on line {number} is not base64"
                )));
            }
            count += 1;
            if count > MAX_TRUSTED_CAS {
                return Err(refused(format!("more than {MAX_TRUSTED_CAS} certificates")));
            }
        } else if let Some((_, body)) = &mut open {
            body.push_str(line.trim_start());
        } else if !line.trim().is_empty() {
            return Err(refused(format!(
                "line {number}: text outside a CERTIFICATE block"
            )));
        }
    }
    if open.is_some() {
        return Err(refused("the last block has no END line".into()));
    }
    if count == 0 {
        return Err(refused("no CERTIFICATE block".into()));
    }
    Ok(count)
}

/// The label of a PEM boundary line `-----BEGIN LABEL-----` (with `marker` "-----BEGIN ").
fn pem_boundary<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.trim()
        .strip_prefix(marker)
        .and_then(|rest| rest.strip_suffix("-----"))
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not an Ed25519 key in PEM (PKCS#8 private key or SubjectPublicKeyInfo public key): {0}"
    )]
    Pem(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A fresh signing key from the operating system's random source.
pub fn generate_key() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// PEM forms, the same `openssl pkey` reads and writes.
pub fn signing_key_to_pem(key: &SigningKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes")
        .to_string()
}

pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))
}

pub fn public_key_to_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes")
}

pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))
}

/// How a key is named in envelopes and errors: its 32 bytes in base64.
pub fn key_id(key: &VerifyingKey) -> String {
    BASE64.encode(key.to_bytes())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Takes one `\n`-terminated UTF-8 line off the front of `rest`.
fn take_line<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..end]).ok()?;
    *rest = &rest[end + 1..];
    Some(line)
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} for group `{}`, valid {} to {}, {} ({} list file{})",
            self.version,
            self.group,
            rfc3339(self.issued_at),
            rfc3339(self.expires_at),
            self.rules.0,
            self.list_files.len(),
            if self.list_files.len() == 1 { "" } else { "s" }
        )?;
        match self.trusted_cas.as_deref().map(check_trusted_cas) {
            None => {}
            Some(Ok(count)) => write!(
                f,
                ", {count} trusted CA{}",
                if count == 1 { "" } else { "s" }
            )?,
            Some(Err(_)) => write!(f, ", trusted CAs that do not pass the check")?,
        }
        if self.vpns.is_some() {
            write!(f, ", VPN settings")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn now() -> DateTime<Utc> {
        parse_time("2026-11-25T12:00:00Z").unwrap()
    }

    fn bundle() -> Bundle {
        Bundle {
            version: 5,
            group: "laptops".into(),
            issued_at: now() - Duration::hours(1),
            expires_at: now() + Duration::days(30),
            rules: (
                "rules.txt".into(),
                "deny any host @ads\nallow any\nlist ads file ads.txt\n".into(),
            ),
            list_files: vec![("ads.txt".into(), "ads.example\n*.tracker.example\n".into())],
            trusted_cas: None,
            vpns: None,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn check(bytes: &[u8], installed: u64) -> Result<Verified, BundleError> {
        let pinned = key(1).verifying_key();
        verify(
            bytes,
            &Trust {
                key: &pinned,
                installed_version: installed,
                group: "laptops",
                now: now(),
            },
        )
    }

    #[test]
    fn a_good_bundle_verifies_and_its_rules_decide() {
        let verified = check(&bundle().sign(&key(1)), 4).unwrap();
        assert_eq!(verified.bundle, bundle());
        let request = crate::Request::new(
            crate::Protocol::Dns,
            crate::LocalTime::new(0, 9, 0).unwrap(),
        )
        .host("x.tracker.example");
        assert_eq!(verified.rules.decide(&request).action, crate::Action::Deny);
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let good = bundle().sign(&key(1));
        assert!(matches!(
            check(&bundle().sign(&key(2)), 0),
            Err(BundleError::WrongKey { .. })
        ));

        let mut tampered = good.clone();
        let last = tampered.len() - 3;
        tampered[last] ^= 0x20;
        assert!(matches!(
            check(&tampered, 0),
            Err(BundleError::BadSignature)
        ));

        // A signature made by the other key but presented under the pinned key's name.
        let forged_sig = bundle().sign(&key(2));
        let forged_line = forged_sig.split(|&b| b == b'\n').nth(2).unwrap().to_vec();
        let mut lines: Vec<Vec<u8>> = good.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        lines[2] = forged_line;
        assert!(matches!(
            check(&lines.join(&b'\n'), 0),
            Err(BundleError::BadSignature)
        ));

        let mut future = bundle();
        future.issued_at = now() + Duration::hours(1);
        assert!(matches!(
            check(&future.sign(&key(1)), 0),
            Err(BundleError::NotYetValid { .. })
        ));
        let mut slightly_ahead = bundle();
        slightly_ahead.issued_at = now() + Duration::seconds(CLOCK_SKEW_SECS - 1);
        assert!(check(&slightly_ahead.sign(&key(1)), 0).is_ok());

        let mut old = bundle();
        old.expires_at = now();
        assert!(matches!(
            check(&old.sign(&key(1)), 0),
            Err(BundleError::Expired { .. })
        ));

        assert!(matches!(
            check(&good, 5),
            Err(BundleError::NotNewer {
                offered: 5,
                installed: 5
            })
        ));
        assert!(matches!(check(&good, 9), Err(BundleError::NotNewer { .. })));

        let mut other_group = bundle();
        other_group.group = "servers".into();
        assert!(matches!(
            check(&other_group.sign(&key(1)), 0),
            Err(BundleError::WrongGroup { .. })
        ));

        let mut broken = bundle();
        broken.rules.1 = "allow htp\n".into();
        match check(&broken.sign(&key(1)), 0) {
            Err(BundleError::Rules(d)) => assert_eq!(d.0[0].file, "rules.txt"),
            other => panic!("expected a rules error, got {other:?}"),
        }
        let mut missing_list = bundle();
        missing_list.list_files.clear();
        assert!(matches!(
            check(&missing_list.sign(&key(1)), 0),
            Err(BundleError::Rules(_))
        ));
    }

    #[test]
    fn malformed_envelopes_and_payloads_are_refused_not_panicked_on() {
        let good = bundle().sign(&key(1));
        for cut in [0, 5, 20, 80, good.len() - 1] {
            assert!(check(&good[..cut], 0).is_err(), "cut at {cut}");
        }
        assert!(matches!(check(b"hello", 0), Err(BundleError::Malformed(_))));
        let mut extra = good.clone();
        extra.push(b'x');
        // Extra bytes are under the signature, so they fail it first.
        assert!(matches!(check(&extra, 0), Err(BundleError::BadSignature)));
        for payload in [
            "cardwall-policy 2\n",
            "cardwall-policy 1\nversion: x\n",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: yesterday\n",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\n\n",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 10\n\nshort",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\n\nab",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile r 1\n\na",
        ] {
            assert!(
                matches!(
                    Bundle::from_payload(payload.as_bytes()),
                    Err(BundleError::Malformed(_))
                ),
                "{payload}"
            );
        }
    }

    /// A PEM block with `label` around a body that is base64 (the card checks the X.509).
    fn block(label: &str, body: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            BASE64.encode(body)
        )
    }

    fn with_cas(text: &str) -> Bundle {
        Bundle {
            trusted_cas: Some(text.into()),
            ..bundle()
        }
    }

    #[test]
    fn trusted_cas_round_trip_under_the_signature() {
        let cas = format!(
            "{}\n{}",
            block("CERTIFICATE", b"first ca"),
            block("CERTIFICATE", b"second ca")
        );
        let signed = with_cas(&cas).sign(&key(1));
        let verified = check(&signed, 0).unwrap();
        assert_eq!(verified.bundle.trusted_cas.as_deref(), Some(cas.as_str()));
        assert_eq!(verified.bundle, with_cas(&cas));
        assert_eq!(check_trusted_cas(&cas).unwrap(), 2);
        assert!(verified.bundle.to_string().ends_with(", 2 trusted CAs"));
        let payload = with_cas(&cas).to_payload();
        let text = String::from_utf8(payload).unwrap();
        assert!(text.contains(&format!("\ntrusted-cas: {}\n\n", cas.len())));
        assert!(text.ends_with(&cas));
    }

    /// Bundles signed before trusted CAs existed: the same bytes still verify.
    #[test]
    fn a_bundle_in_the_old_format_still_verifies() {
        let payload = "cardwall-policy 1\nversion: 3\ngroup: laptops\n\
            issued-at: 2026-11-25T11:00:00Z\nexpires-at: 2026-12-25T12:00:00Z\n\
            file: rules.txt 10\n\nallow any\n";
        let signature = key(1).sign(payload.as_bytes());
        let bytes = format!(
            "{ENVELOPE_MAGIC}\nkey: {}\nsignature: {}\n\n{payload}",
            key_id(&key(1).verifying_key()),
            BASE64.encode(signature.to_bytes())
        );
        let verified = check(bytes.as_bytes(), 0).unwrap();
        assert_eq!(verified.bundle.trusted_cas, None);
        assert_eq!(verified.bundle.rules.1, "allow any\n");
        // And a bundle without CAs is written in that format, byte for byte.
        assert!(
            !String::from_utf8(bundle().to_payload())
                .unwrap()
                .contains("trusted-cas")
        );
    }

    #[test]
    fn a_private_key_in_the_trusted_cas_is_refused_with_its_own_error() {
        let ca = block("CERTIFICATE", b"a ca");
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ] {
            let cas = format!("{ca}{}", block(label, b"secret"));
            match check(&with_cas(&cas).sign(&key(1)), 0) {
                Err(BundleError::PrivateKey { label: found }) => assert_eq!(found, label),
                other => panic!("{label}: expected a private key refusal, got {other:?}"),
            }
            let message = check_trusted_cas(&cas).unwrap_err().to_string();
            assert!(message.contains("never carries private keys"), "{message}");
        }
    }

    #[test]
    fn trusted_cas_hold_only_certificates_within_the_limits() {
        let ca = block("CERTIFICATE", b"a ca");
        let refused = |text: &str| match check(&with_cas(text).sign(&key(1)), 0) {
            Err(BundleError::TrustedCas(why)) => why,
            other => panic!("expected a trusted-CA refusal of {text:?}, got {other:?}"),
        };
        assert!(refused("").contains("no CERTIFICATE"));
        assert!(refused(&block("PUBLIC KEY", b"k")).contains("PUBLIC KEY"));
        assert!(refused(&format!("Subject: CN=x\n{ca}")).contains("outside"));
        assert!(refused("-----BEGIN CERTIFICATE-----\nAAAA\n").contains("no END"));
        assert!(
            refused("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
                .contains("not base64")
        );
        assert!(refused(&ca.repeat(MAX_TRUSTED_CAS + 1)).contains("more than 32"));
        assert_eq!(check_trusted_cas(&ca.repeat(MAX_TRUSTED_CAS)).unwrap(), 32);
        let large = block("CERTIFICATE", &vec![7u8; MAX_TRUSTED_CAS_BYTES]);
        assert!(refused(&large).contains("KiB"));
        // CRLF line ends and blank lines between blocks are fine.
        assert_eq!(
            check_trusted_cas(&format!("\n{ca}\r\n{ca}").replace('\n', "\r\n")).unwrap(),
            2
        );
    }

    #[test]
    fn tampered_trusted_cas_fail_the_signature() {
        let ca = block("CERTIFICATE", b"a ca");
        let good = with_cas(&ca).sign(&key(1));
        let mut tampered = good.clone();
        let at = tampered.len() - 30;
        tampered[at] ^= 0x01;
        assert!(matches!(
            check(&tampered, 0),
            Err(BundleError::BadSignature)
        ));
        // Dropping the CAs (header and bytes) from a signed bundle is tampering too.
        let text = String::from_utf8(good).unwrap();
        let stripped = text
            .replace(&format!("trusted-cas: {}\n", ca.len()), "")
            .replace(&ca, "");
        assert!(matches!(
            check(stripped.as_bytes(), 0),
            Err(BundleError::BadSignature)
        ));
        // A `trusted-cas` header that is not last, or says too much, is malformed.
        for payload in [
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\ntrusted-cas: 0\nfile: r 1\n\na",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\ntrusted-cas: 9\n\nab",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\ntrusted-cas: x\n\na",
        ] {
            assert!(
                matches!(
                    Bundle::from_payload(payload.as_bytes()),
                    Err(BundleError::Malformed(_))
                ),
                "{payload}"
            );
        }
    }

    /// A card's VPN settings travel under the signature, after the CAs; the bytes are not
    /// this crate's to read, but not one of them can change, go or come unsigned.
    #[test]
    fn vpns_travel_under_the_signature() {
        let vpns = r#"{"vpns":[{"name":"corp"}]}"#;
        let ca = block("CERTIFICATE", b"a ca");
        let both = Bundle {
            vpns: Some(vpns.into()),
            ..with_cas(&ca)
        };
        let signed = both.sign(&key(1));
        let verified = check(&signed, 0).unwrap();
        assert_eq!(verified.bundle, both);
        assert!(verified.bundle.to_string().ends_with(", VPN settings"));
        let text = String::from_utf8(signed.clone()).unwrap();
        assert!(text.contains(&format!(
            "trusted-cas: {}\nvpns: {}\n\n",
            ca.len(),
            vpns.len()
        )));
        assert!(text.ends_with(&format!("{ca}{vpns}")));
        let alone = Bundle {
            vpns: Some(vpns.into()),
            ..bundle()
        };
        assert_eq!(check(&alone.sign(&key(1)), 0).unwrap().bundle, alone);

        // Changed, dropped, or signed by another key: refused before a byte is read.
        let changed = text.replace("corp", "evil");
        assert!(matches!(
            check(changed.as_bytes(), 0),
            Err(BundleError::BadSignature)
        ));
        let dropped = text
            .replace(&format!("vpns: {}\n", vpns.len()), "")
            .replace(vpns, "");
        assert!(matches!(
            check(dropped.as_bytes(), 0),
            Err(BundleError::BadSignature)
        ));
        assert!(matches!(
            check(&alone.sign(&key(2)), 0),
            Err(BundleError::WrongKey { .. })
        ));
        // `vpns` is the last header, and says how much follows.
        for payload in [
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\nvpns: 1\ntrusted-cas: 0\n\nab",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nvpns: 0\nfile: r 1\n\na",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\nvpns: 9\n\nab",
            "cardwall-policy 1\nversion: 1\ngroup: g\nissued-at: 2026-01-01T00:00:00Z\nexpires-at: 2027-01-01T00:00:00Z\nfile: r 1\nvpns: -1\n\na",
        ] {
            assert!(
                matches!(
                    Bundle::from_payload(payload.as_bytes()),
                    Err(BundleError::Malformed(_))
                ),
                "{payload}"
            );
        }
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let signing = generate_key().unwrap();
        let pem = signing_key_to_pem(&signing);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            signing_key_from_pem(&pem).unwrap().to_bytes(),
            signing.to_bytes()
        );
        let public = public_key_to_pem(&signing.verifying_key());
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(
            public_key_from_pem(&public).unwrap(),
            signing.verifying_key()
        );
        assert!(public_key_from_pem(&pem).is_err());
        assert!(signing_key_from_pem("junk").is_err());
        assert_ne!(generate_key().unwrap().to_bytes(), signing.to_bytes());
    }
}
