//! The sealed-file format: every file of the store except the device key itself.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "CWSL"
//! 4       1     format version (1)
//! 5       12    nonce, random for every write
//! 17      n+16  ChaCha20-Poly1305 ciphertext followed by its 16-byte tag
//! ```
//!
//! The associated data is the 17 header bytes followed by the file's name (its purpose, e.g.
//! `pin.sealed`), so a file sealed for one purpose does not open as another: a PIN file copied
//! over the rules file is refused like any tampered file.
//!
//! Shaped like smoltcp's `wire` modules: [`SealedFile`] is a view over bytes whose lengths are
//! checked once by [`SealedFile::new_checked`]; the accessors after that cannot go out of bounds.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use zeroize::Zeroizing;

pub const MAGIC: [u8; 4] = *b"CWSL";
pub const FORMAT_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 4 + 1 + NONCE_LEN;
/// A sealed file is never shorter than this: a header and the tag of an empty message.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
pub const KEY_LEN: usize = 32;

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const NONCE: Range<usize> = 5..17;
    pub const HEADER: Range<usize> = 0..17;
    pub const BODY: usize = 17;
}

/// Why bytes are not a sealed file (before any cryptography is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a header and a tag.
    Truncated { len: usize },
    /// Does not start with "CWSL".
    BadMagic,
    /// A format version this firmware does not know.
    UnsupportedVersion(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { len } => {
                write!(f, "{len} bytes, shorter than the {MIN_LEN}-byte minimum")
            }
            WireError::BadMagic => f.write_str("not a sealed store file (bad magic)"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A checked view over the bytes of a sealed file.
#[derive(Debug, Clone, Copy)]
pub struct SealedFile<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SealedFile<T> {
    /// Checks length, magic and version; after this the accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < MIN_LEN {
            return Err(WireError::Truncated { len: bytes.len() });
        }
        if bytes[field::MAGIC] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if bytes[field::VERSION] != FORMAT_VERSION {
            return Err(WireError::UnsupportedVersion(bytes[field::VERSION]));
        }
        Ok(SealedFile { buffer })
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&self.buffer.as_ref()[field::NONCE]);
        nonce
    }

    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER]
    }

    /// Ciphertext and tag.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
}

/// Why a sealed file did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    Malformed(WireError),
    /// The tag did not verify: wrong key, wrong name (purpose), or changed bytes.
    Tampered,
}

fn associated_data(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Seals `plaintext` as the file called `name`, with the given nonce (which must never repeat
/// under one key: callers pass a fresh random one).
pub fn seal(key: &[u8; KEY_LEN], name: &str, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_LEN + plaintext.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    let aad = associated_data(&out[field::HEADER], name);
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // ChaCha20-Poly1305 refuses only messages of 256 GiB and more.
        .expect("a store file is far below ChaCha20-Poly1305's length limit");
    out.extend_from_slice(&sealed);
    out
}

/// Opens the file called `name`; the plaintext is wiped when dropped.
pub fn open(
    key: &[u8; KEY_LEN],
    name: &str,
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let file = SealedFile::new_checked(bytes).map_err(OpenError::Malformed)?;
    let aad = associated_data(file.header(), name);
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(
            &Nonce::from(file.nonce()),
            Payload {
                msg: file.body(),
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

    #[test]
    fn round_trip() {
        let bytes = seal(&KEY, "rules.sealed", NONCE, b"deny any\n");
        assert_eq!(bytes.len(), MIN_LEN + 9);
        let view = SealedFile::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.version(), FORMAT_VERSION);
        assert_eq!(view.nonce(), NONCE);
        assert_eq!(view.body().len(), 9 + TAG_LEN);
        assert_eq!(
            &open(&KEY, "rules.sealed", &bytes).unwrap()[..],
            b"deny any\n"
        );
    }

    #[test]
    fn empty_plaintext_is_the_minimum_length() {
        let bytes = seal(&KEY, "x", NONCE, b"");
        assert_eq!(bytes.len(), MIN_LEN);
        assert!(open(&KEY, "x", &bytes).unwrap().is_empty());
    }

    #[test]
    fn truncated_files_are_malformed_at_every_length() {
        let bytes = seal(&KEY, "x", NONCE, b"");
        for len in 0..MIN_LEN {
            assert_eq!(
                SealedFile::new_checked(&bytes[..len]).unwrap_err(),
                WireError::Truncated { len }
            );
            assert_eq!(
                open(&KEY, "x", &bytes[..len]).unwrap_err(),
                OpenError::Malformed(WireError::Truncated { len })
            );
        }
    }

    #[test]
    fn bad_magic_and_unknown_version() {
        let mut bytes = seal(&KEY, "x", NONCE, b"abc");
        bytes[0] = b'X';
        assert_eq!(
            SealedFile::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadMagic
        );
        let mut bytes = seal(&KEY, "x", NONCE, b"abc");
        bytes[4] = 2;
        assert_eq!(
            SealedFile::new_checked(&bytes[..]).unwrap_err(),
            WireError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn any_flipped_byte_is_tampering() {
        let bytes = seal(&KEY, "x", NONCE, b"allow host example.com\n");
        for i in 5..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            assert_eq!(
                open(&KEY, "x", &changed).unwrap_err(),
                OpenError::Tampered,
                "byte {i}"
            );
        }
    }

    #[test]
    fn the_name_and_the_key_are_bound() {
        let bytes = seal(&KEY, "pin.sealed", NONCE, b"secret");
        assert_eq!(
            open(&KEY, "rules.sealed", &bytes).unwrap_err(),
            OpenError::Tampered
        );
        assert_eq!(
            open(&[8; KEY_LEN], "pin.sealed", &bytes).unwrap_err(),
            OpenError::Tampered
        );
    }
}
