//! The PIN record: Argon2id hashes of the PIN and the PUK, the two retry counters and the
//! must-change flag. It is stored sealed in `pin.sealed`; this module only knows its bytes.

use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

pub const PIN_TRIES: u8 = 3;
pub const PUK_TRIES: u8 = 10;
pub const DEFAULT_PIN: &str = "1234";
/// Digits in a generated PUK (the issue asks for 8 or more; 12 leaves 10 guesses no chance).
pub const PUK_DIGITS: usize = 12;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const RECORD_VERSION: u8 = 1;

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

/// The content of `pin.sealed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    pub tries_left: u8,
    pub puk_tries_left: u8,
    pub must_change: bool,
    pub pin: Hash,
    pub puk: Hash,
}

impl PinRecord {
    const LEN: usize = 4 + 2 * Hash::LEN;

    pub fn emit(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(Self::LEN));
        out.extend_from_slice(&[
            RECORD_VERSION,
            self.tries_left,
            self.puk_tries_left,
            u8::from(self.must_change),
        ]);
        self.pin.emit(&mut out);
        self.puk.emit(&mut out);
        out
    }

    /// `None` when the bytes are not a record this firmware wrote (they were authenticated,
    /// so this means a format from another firmware version).
    pub fn parse(bytes: &[u8]) -> Option<PinRecord> {
        if bytes.len() != Self::LEN || bytes[0] != RECORD_VERSION || bytes[3] > 1 {
            return None;
        }
        Some(PinRecord {
            tries_left: bytes[1].min(PIN_TRIES),
            puk_tries_left: bytes[2].min(PUK_TRIES),
            must_change: bytes[3] == 1,
            pin: Hash::parse(&bytes[4..4 + Hash::LEN]),
            puk: Hash::parse(&bytes[4 + Hash::LEN..]),
        })
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
            must_change: true,
            pin: Hash::new("1234", cost).unwrap(),
            puk: Hash::new("123456789012", cost).unwrap(),
        };
        let bytes = record.emit();
        assert_eq!(PinRecord::parse(&bytes), Some(record));
        assert_eq!(PinRecord::parse(&bytes[..bytes.len() - 1]), None);
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(PinRecord::parse(&other_version), None);
    }
}
