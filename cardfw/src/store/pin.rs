//! The PIN record: the setup code of a new card, or Argon2id hashes of the PIN and the PUK,
//! and the three retry counters. It is stored sealed in `pin.sealed`; this module only knows its bytes.

use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

pub const PIN_TRIES: u8 = 3;
pub const PUK_TRIES: u8 = 10;
/// Digits in a generated PUK (the issue asks for 8 or more; 12 leaves 10 guesses no chance).
pub const PUK_DIGITS: usize = 12;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const RECORD_VERSION: u8 = 2;

/// The cost of the Argon2id hash of a new PIN or PUK. The cost used is stored with each hash,
/// so a card keeps verifying old hashes if the default changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinCost {
    /// Memory in KiB (at least 8).
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PinCost {
    /// What the card uses: Argon2's recommended defaults (19 MiB, 2 passes, 1 lane), well
    /// under a second on a Raspberry Pi Zero 2 W.
    pub const PRODUCTION: PinCost = PinCost {
        memory_kib: Params::DEFAULT_M_COST,
        iterations: Params::DEFAULT_T_COST,
        parallelism: Params::DEFAULT_P_COST,
    };

    /// The cheapest Argon2 allows. Only for tests, which hash hundreds of PINs: a store made
    /// with it is as easy to brute-force offline as an unhashed one.
    pub const INSECURE_FAST_FOR_TESTS: PinCost = PinCost {
        memory_kib: Params::MIN_M_COST,
        iterations: 1,
        parallelism: 1,
    };
}

/// A secret the owner types, checked for format before any try is spent.
pub fn check_pin_format(pin: &str) -> Result<(), &'static str> {
    check_digits(pin, 4, 16, "the PIN must be 4 to 16 digits")
}

pub fn check_puk_format(puk: &str) -> Result<(), &'static str> {
    check_digits(puk, 8, 16, "the PUK must be 8 to 16 digits")
}

fn check_digits(
    s: &str,
    min: usize,
    max: usize,
    message: &'static str,
) -> Result<(), &'static str> {
    if (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(message)
    }
}

/// A salted Argon2id hash with the cost that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hash {
    cost: PinCost,
    salt: [u8; SALT_LEN],
    hash: Zeroizing<[u8; HASH_LEN]>,
}

impl Hash {
    pub fn new(secret: &str, cost: PinCost) -> Result<Hash, HashError> {
        let mut salt = [0; SALT_LEN];
        getrandom::fill(&mut salt).map_err(HashError::Random)?;
        let hash = derive(secret, &salt, cost)?;
        Ok(Hash { cost, salt, hash })
    }

    /// Recomputes and compares in constant time.
    pub fn verify(&self, secret: &str) -> Result<bool, HashError> {
        let candidate = derive(secret, &self.salt, self.cost)?;
        Ok(bool::from(candidate[..].ct_eq(&self.hash[..])))
    }

    const LEN: usize = 12 + SALT_LEN + HASH_LEN;

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cost.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.cost.iterations.to_be_bytes());
        out.extend_from_slice(&self.cost.parallelism.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.hash[..]);
    }

    fn parse(bytes: &[u8]) -> Hash {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&bytes[12..12 + SALT_LEN]);
        let mut hash = Zeroizing::new([0; HASH_LEN]);
        hash.copy_from_slice(&bytes[12 + SALT_LEN..Self::LEN]);
        Hash {
            cost: PinCost {
                memory_kib: word(0),
                iterations: word(4),
                parallelism: word(8),
            },
            salt,
            hash,
        }
    }
}

#[derive(Debug)]
pub enum HashError {
    Random(getrandom::Error),
    Argon2(argon2::Error),
}

fn derive(
    secret: &str,
    salt: &[u8],
    cost: PinCost,
) -> Result<Zeroizing<[u8; HASH_LEN]>, HashError> {
    let params = Params::new(
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        Some(HASH_LEN),
    )
    .map_err(HashError::Argon2)?;
    let mut out = Zeroizing::new([0; HASH_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(secret.as_bytes(), salt, &mut out[..])
        .map_err(HashError::Argon2)?;
    Ok(out)
}

/// A fresh random PUK of [`PUK_DIGITS`] decimal digits (uniform: bytes of 250 and more are
/// drawn again so no digit is favoured).
pub fn generate_puk() -> Result<Zeroizing<String>, getrandom::Error> {
    let mut puk = Zeroizing::new(String::with_capacity(PUK_DIGITS));
    let mut pool = [0u8; 32];
    while puk.len() < PUK_DIGITS {
        getrandom::fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < 250) {
            if puk.len() < PUK_DIGITS {
                puk.push(char::from(b'0' + b % 10));
            }
        }
    }
    pool.zeroize();
    Ok(puk)
}

/// The setup code: what a new card asks for before its first PIN is set, so that nobody but
/// whoever holds the card (its label, its console, its reader) chooses it.
pub const SETUP_CODE_DIGITS: usize = 12;
/// Wrong setup codes before the web page's (and every other) setup is refused; a factory reset
/// (physical presence) makes a new code.
pub const SETUP_TRIES: u8 = 10;

/// A fresh setup code of [`SETUP_CODE_DIGITS`] digits.
pub fn generate_setup_code() -> Result<Zeroizing<String>, getrandom::Error> {
    // The same uniform digits as a PUK; only the length differs.
    let mut code = generate_puk()?;
    code.truncate(SETUP_CODE_DIGITS);
    Ok(code)
}

/// The code as typed (`1234-5678-9012`, spaces or dashes anywhere), as digits only.
pub fn normalise_setup_code(typed: &str) -> Zeroizing<String> {
    Zeroizing::new(typed.chars().filter(|c| !matches!(c, '-' | ' ')).collect())
}

/// The code grouped by four for reading aloud or printing on a label: `1234-5678-9012`.
pub fn format_setup_code(code: &str) -> Zeroizing<String> {
    group_digits(code)
}

/// Digits grouped by four with dashes, as a setup code or a PUK is shown.
pub fn group_digits(code: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(code.len() + code.len() / 4));
    for (i, c) in code.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// The secrets of a card: before the first setup only the setup code, after it the PIN and
/// the PUK, as hashes. The PUK is never kept in clear: it is shown once, at setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secrets {
    /// A new card. The code must be readable by the card (it prints it and answers it over
    /// its reader), so it is kept as it is, sealed like every store file.
    Setup {
        code: Zeroizing<String>,
    },
    Set {
        pin: Hash,
        puk: Hash,
    },
}

/// The content of `pin.sealed`.
///
/// ```text
/// version 2: 02 pin-tries puk-tries setup-tries kind
///            kind 00: code-len code…        (not set up)
///            kind 01: pin-hash puk-hash     (Hash::LEN each)
/// version 1 (read only): 01 pin-tries puk-tries must-change pin-hash puk-hash
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    pub tries_left: u8,
    pub puk_tries_left: u8,
    pub setup_tries_left: u8,
    pub secrets: Secrets,
}

/// What a version-1 record (default PIN, PUK in a clear file) becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Current(PinRecord),
    /// A card whose default PIN was never changed: it is set up again from a new code.
    LegacyDefaultPin,
}

impl PinRecord {
    pub fn new_card(code: Zeroizing<String>) -> PinRecord {
        PinRecord {
            tries_left: PIN_TRIES,
            puk_tries_left: PUK_TRIES,
            setup_tries_left: SETUP_TRIES,
            secrets: Secrets::Setup { code },
        }
    }

    pub fn emit(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(5 + 2 * Hash::LEN));
        out.extend_from_slice(&[
            RECORD_VERSION,
            self.tries_left,
            self.puk_tries_left,
            self.setup_tries_left,
        ]);
        match &self.secrets {
            Secrets::Setup { code } => {
                out.push(0);
                out.push(u8::try_from(code.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&code.as_bytes()[..code.len().min(255)]);
            }
            Secrets::Set { pin, puk } => {
                out.push(1);
                pin.emit(&mut out);
                puk.emit(&mut out);
            }
        }
        out
    }

    /// `None` when the bytes are not a record this firmware understands (they were
    /// authenticated, so this means a format from another firmware version).
    pub fn parse(bytes: &[u8]) -> Option<Parsed> {
        match bytes {
            [1, tries, puk_tries, must_change @ 0..=1, hashes @ ..]
                if hashes.len() == 2 * Hash::LEN =>
            {
                if *must_change == 1 {
                    return Some(Parsed::LegacyDefaultPin);
                }
                Some(Parsed::Current(PinRecord {
                    tries_left: (*tries).min(PIN_TRIES),
                    puk_tries_left: (*puk_tries).min(PUK_TRIES),
                    setup_tries_left: 0,
                    secrets: Secrets::Set {
                        pin: Hash::parse(&hashes[..Hash::LEN]),
                        puk: Hash::parse(&hashes[Hash::LEN..]),
                    },
                }))
            }
            [
                RECORD_VERSION,
                tries,
                puk_tries,
                setup_tries,
                kind,
                rest @ ..,
            ] => {
                let secrets = match (kind, rest) {
                    (0, [len, code @ ..]) if code.len() == usize::from(*len) => Secrets::Setup {
                        code: Zeroizing::new(String::from_utf8(code.to_vec()).ok()?),
                    },
                    (1, hashes) if hashes.len() == 2 * Hash::LEN => Secrets::Set {
                        pin: Hash::parse(&hashes[..Hash::LEN]),
                        puk: Hash::parse(&hashes[Hash::LEN..]),
                    },
                    _ => return None,
                };
                Some(Parsed::Current(PinRecord {
                    tries_left: (*tries).min(PIN_TRIES),
                    puk_tries_left: (*puk_tries).min(PUK_TRIES),
                    setup_tries_left: (*setup_tries).min(SETUP_TRIES),
                    secrets,
                }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_format() {
        for good in ["1234", "0000", "1234567890123456"] {
            assert!(check_pin_format(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "123",
            "12345678901234567",
            "12a4",
            " 1234",
            "１２３４",
            "-123",
        ] {
            assert!(check_pin_format(bad).is_err(), "{bad}");
        }
        assert!(check_puk_format("12345678").is_ok());
        assert!(check_puk_format("1234567").is_err());
    }

    #[test]
    fn generated_puks_are_valid_and_differ() {
        let a = generate_puk().unwrap();
        let b = generate_puk().unwrap();
        assert!(check_puk_format(&a).is_ok());
        assert_eq!(a.len(), PUK_DIGITS);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_verifies_only_the_secret() {
        let hash = Hash::new("4711", PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
        assert!(hash.verify("4711").unwrap());
        assert!(!hash.verify("4712").unwrap());
        assert!(!hash.verify("47110").unwrap());
    }

    #[test]
    fn record_round_trip_and_malformed() {
        let cost = PinCost::INSECURE_FAST_FOR_TESTS;
        let record = PinRecord {
            tries_left: 2,
            puk_tries_left: 9,
            setup_tries_left: 0,
            secrets: Secrets::Set {
                pin: Hash::new("2580", cost).unwrap(),
                puk: Hash::new("123456789012", cost).unwrap(),
            },
        };
        let bytes = record.emit();
        assert_eq!(PinRecord::parse(&bytes), Some(Parsed::Current(record)));
        assert_eq!(PinRecord::parse(&bytes[..bytes.len() - 1]), None);
        let mut other_version = bytes.clone();
        other_version[0] = 3;
        assert_eq!(PinRecord::parse(&other_version), None);

        let new = PinRecord::new_card(generate_setup_code().unwrap());
        let bytes = new.emit();
        assert_eq!(PinRecord::parse(&bytes), Some(Parsed::Current(new)));
        assert_eq!(PinRecord::parse(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn version_one_records_are_read() {
        let cost = PinCost::INSECURE_FAST_FOR_TESTS;
        let mut v1 = vec![1, 3, 10, 1];
        Hash::new("1234", cost).unwrap().emit(&mut v1);
        Hash::new("123456789012", cost).unwrap().emit(&mut v1);
        assert_eq!(PinRecord::parse(&v1), Some(Parsed::LegacyDefaultPin));
        v1[3] = 0;
        let Some(Parsed::Current(record)) = PinRecord::parse(&v1) else {
            panic!("a set-up version-1 record reads");
        };
        let Secrets::Set { pin, .. } = record.secrets else {
            panic!("set up");
        };
        assert!(pin.verify("1234").unwrap());
    }

    #[test]
    fn setup_codes_are_digits_and_read_back_grouped() {
        let code = generate_setup_code().unwrap();
        assert_eq!(code.len(), SETUP_CODE_DIGITS);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let shown = format_setup_code(&code);
        assert_eq!(shown.len(), 14);
        assert_eq!(normalise_setup_code(&shown), code);
        assert_eq!(&*normalise_setup_code(" 1234 5678-9012"), "123456789012");
    }
}
