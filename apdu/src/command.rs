//! Command APDUs (ISO 7816-3 §12.1.3, ISO 7816-4 §5.1).
//!
//! ```text
//! case 1   CLA INS P1 P2
//! case 2S  CLA INS P1 P2 Le                       Le 00 means 256
//! case 3S  CLA INS P1 P2 Lc data                  Lc 01..FF
//! case 4S  CLA INS P1 P2 Lc data Le
//! case 2E  CLA INS P1 P2 00 Le1 Le2               Le 0000 means 65536
//! case 3E  CLA INS P1 P2 00 Lc1 Lc2 data          Lc 0001..FFFF
//! case 4E  CLA INS P1 P2 00 Lc1 Lc2 data Le1 Le2
//! ```
//!
//! A command whose length bytes do not match its length is refused as a whole
//! ([`ParseError`]); the card answers it with 6700 (wrong length).

/// Bit of CLA that says more commands of the same chain follow (ISO 7816-4 §5.4.1).
pub const CLA_CHAINING: u8 = 0x10;

/// A parsed command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// The command data (empty for cases 1 and 2).
    pub data: Vec<u8>,
    /// Ne, the most response bytes expected (1..=65536), or `None` when no Le field (cases 1
    /// and 3).
    pub le: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a command APDU has at least 4 bytes, this one {0}")]
    TooShort(usize),
    #[error("the length fields do not match the command's {0} bytes")]
    LengthMismatch(usize),
}

impl Command {
    /// A command with no data and no Le (case 1).
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Command {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Command {
        self.data = data.into();
        self
    }

    /// Sets Ne (1..=65536; larger values are clamped when emitted).
    pub fn with_le(mut self, le: usize) -> Command {
        self.le = Some(le);
        self
    }

    /// P1 and P2 as one big-endian number.
    pub fn p1p2(&self) -> u16 {
        u16::from_be_bytes([self.p1, self.p2])
    }

    /// Whether CLA says this command is not the last of a chain.
    pub fn is_chained(&self) -> bool {
        self.cla & CLA_CHAINING != 0
    }

    pub fn parse(bytes: &[u8]) -> Result<Command, ParseError> {
        let len = bytes.len();
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(ParseError::TooShort(len));
        };
        let mismatch = ParseError::LengthMismatch(len);
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(short_ne(*le))),
            [0, rest @ ..] if rest.len() >= 2 => {
                let first = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let rest = &rest[2..];
                if rest.is_empty() {
                    (&[][..], Some(extended_ne(first)))
                } else if first == 0 {
                    return Err(mismatch);
                } else if rest.len() == first {
                    (rest, None)
                } else if rest.len() == first + 2 {
                    let le = usize::from(u16::from_be_bytes([rest[first], rest[first + 1]]));
                    (&rest[..first], Some(extended_ne(le)))
                } else {
                    return Err(mismatch);
                }
            }
            [0, ..] => return Err(mismatch),
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    (rest, None)
                } else if rest.len() == lc + 1 {
                    (&rest[..lc], Some(short_ne(rest[lc])))
                } else {
                    return Err(mismatch);
                }
            }
        };
        Ok(Command {
            cla: *cla,
            ins: *ins,
            p1: *p1,
            p2: *p2,
            data: data.to_vec(),
            le,
        })
    }

    /// The bytes of this command: short lengths when data and Ne fit, extended otherwise.
    /// Data longer than 65535 bytes cannot be sent in one command: it is cut (callers chain).
    pub fn emit(&self) -> Vec<u8> {
        let data = &self.data[..self.data.len().min(usize::from(u16::MAX))];
        let le = self.le.map(|le| le.clamp(1, 65536));
        let extended = data.len() > 255 || le.is_some_and(|le| le > 256);
        let mut out = Vec::with_capacity(4 + 3 + data.len() + 2);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if extended {
            out.push(0);
            if !data.is_empty() {
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
            }
            if let Some(le) = le {
                // 65536 is written as 0000.
                out.extend_from_slice(&((le % 65536) as u16).to_be_bytes());
            }
        } else {
            if !data.is_empty() {
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            if let Some(le) = le {
                out.push((le % 256) as u8);
            }
        }
        out
    }
}

fn short_ne(le: u8) -> usize {
    if le == 0 { 256 } else { usize::from(le) }
}

fn extended_ne(le: usize) -> usize {
    if le == 0 { 65536 } else { le }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_four_short_cases() {
        let c = Command::parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((c.data.len(), c.le), (0, None));
        let c = Command::parse(&[0, 0xB0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0x20, 0, 0x81, 2, 1, 2]).unwrap();
        assert_eq!((c.data, c.le), (vec![1, 2], None));
        let c = Command::parse(&[0, 0xCA, 1, 1, 1, 9, 0x10]).unwrap();
        assert_eq!((c.data, c.le), (vec![9], Some(16)));
    }

    #[test]
    fn the_three_extended_cases() {
        let c = Command::parse(&[0, 0xB0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(65536));
        let c = Command::parse(&[0, 0xD6, 0, 0, 0, 0, 2, 7, 8]).unwrap();
        assert_eq!((c.data, c.le), (vec![7, 8], None));
        let c = Command::parse(&[0, 0xD6, 0, 0, 0, 0, 1, 7, 0x01, 0x00]).unwrap();
        assert_eq!((c.data, c.le), (vec![7], Some(256)));
    }

    #[test]
    fn lengths_that_do_not_match_are_refused() {
        for bytes in [
            &[][..],
            &[0],
            &[0, 0xB0, 0],
            &[0, 0x20, 0, 0x81, 3, 1, 2],
            &[0, 0x20, 0, 0x81, 1, 1, 2, 3],
            &[0, 0xB0, 0, 0, 0, 1],
            &[0, 0xD6, 0, 0, 0, 0, 0, 1],
            &[0, 0xD6, 0, 0, 0, 0, 3, 1],
            &[0, 0xD6, 0, 0, 0, 0, 1, 1, 2],
        ] {
            assert!(Command::parse(bytes).is_err(), "{bytes:02x?}");
        }
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_the_same_command(
            cla: u8, ins: u8, p1: u8, p2: u8,
            data in proptest::collection::vec(any::<u8>(), 0..600),
            le in proptest::option::of(1usize..=65536),
        ) {
            let command = Command { cla, ins, p1, p2, data, le };
            prop_assert_eq!(Command::parse(&command.emit()).unwrap(), command);
        }

        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(command) = Command::parse(&bytes) {
                prop_assert!(command.data.len() <= bytes.len());
            }
        }
    }
}
