//! Response APDUs: the response data, then SW1 SW2.

use std::fmt;

/// SW1 SW2, as one big-endian number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const OK: StatusWord = StatusWord(0x9000);
    /// Fewer bytes than Ne were left before the end of the file.
    pub const END_OF_FILE: StatusWord = StatusWord(0x6282);
    /// The card's storage failed (the sealed store could not be read or written).
    pub const MEMORY_FAILURE: StatusWord = StatusWord(0x6581);
    pub const WRONG_LENGTH: StatusWord = StatusWord(0x6700);
    pub const LOGICAL_CHANNEL_NOT_SUPPORTED: StatusWord = StatusWord(0x6881);
    pub const CHAINING_NOT_SUPPORTED: StatusWord = StatusWord(0x6884);
    pub const SECURITY_STATUS_NOT_SATISFIED: StatusWord = StatusWord(0x6982);
    pub const AUTHENTICATION_BLOCKED: StatusWord = StatusWord(0x6983);
    pub const CONDITIONS_NOT_SATISFIED: StatusWord = StatusWord(0x6985);
    pub const NO_CURRENT_FILE: StatusWord = StatusWord(0x6986);
    pub const INCORRECT_DATA: StatusWord = StatusWord(0x6A80);
    pub const FILE_NOT_FOUND: StatusWord = StatusWord(0x6A82);
    pub const NOT_ENOUGH_MEMORY: StatusWord = StatusWord(0x6A84);
    pub const INCORRECT_P1P2: StatusWord = StatusWord(0x6A86);
    pub const DATA_NOT_FOUND: StatusWord = StatusWord(0x6A88);
    /// Wrong parameters: an offset outside the file.
    pub const WRONG_P1P2: StatusWord = StatusWord(0x6B00);
    pub const INS_NOT_SUPPORTED: StatusWord = StatusWord(0x6D00);
    pub const CLA_NOT_SUPPORTED: StatusWord = StatusWord(0x6E00);
    pub const UNKNOWN_ERROR: StatusWord = StatusWord(0x6F00);

    /// 63Cx: verification failed, `tries` (at most 15) left.
    pub fn tries_left(tries: u8) -> StatusWord {
        StatusWord(0x63C0 | u16::from(tries.min(15)))
    }

    /// The tries left when this is a 63Cx.
    pub fn as_tries_left(self) -> Option<u8> {
        (self.0 & 0xFFF0 == 0x63C0).then_some((self.0 & 0x0F) as u8)
    }

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    pub fn is_ok(self) -> bool {
        self == StatusWord::OK
    }

    /// What the status means, for people.
    pub fn meaning(self) -> &'static str {
        match self {
            StatusWord::OK => "done",
            StatusWord::END_OF_FILE => "end of file reached",
            StatusWord::MEMORY_FAILURE => "the card's storage failed",
            StatusWord::WRONG_LENGTH => "wrong length",
            StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED => "logical channel not supported",
            StatusWord::CHAINING_NOT_SUPPORTED => "command chaining not supported here",
            StatusWord::SECURITY_STATUS_NOT_SATISFIED => "the PIN has not been presented",
            StatusWord::AUTHENTICATION_BLOCKED => "blocked",
            StatusWord::CONDITIONS_NOT_SATISFIED => {
                "conditions of use not satisfied (is the card not set up yet?)"
            }
            StatusWord::NO_CURRENT_FILE => "no file selected",
            StatusWord::INCORRECT_DATA => "incorrect data",
            StatusWord::FILE_NOT_FOUND => "file or application not found",
            StatusWord::NOT_ENOUGH_MEMORY => "too large for the card",
            StatusWord::INCORRECT_P1P2 => "incorrect parameters P1-P2",
            StatusWord::DATA_NOT_FOUND => "referenced data not found",
            StatusWord::WRONG_P1P2 => "wrong parameters (offset outside the file)",
            StatusWord::INS_NOT_SUPPORTED => "instruction not supported",
            StatusWord::CLA_NOT_SUPPORTED => "class not supported",
            sw if sw.as_tries_left().is_some() => "verification failed",
            sw if sw.sw1() == 0x6C => "the card has this many bytes ready",
            _ => "error",
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// A response APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn status(sw: StatusWord) -> Response {
        Response {
            data: Vec::new(),
            sw,
        }
    }

    pub fn ok(data: Vec<u8>) -> Response {
        Response {
            data,
            sw: StatusWord::OK,
        }
    }

    /// A response is its data then two status bytes; fewer than two bytes is not a response.
    pub fn parse(bytes: &[u8]) -> Option<Response> {
        let split = bytes.len().checked_sub(2)?;
        let (data, sw) = bytes.split_at(split);
        Some(Response {
            data: data.to_vec(),
            sw: StatusWord(u16::from_be_bytes([sw[0], sw[1]])),
        })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.0.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tries() {
        let r = Response {
            data: vec![1, 2],
            sw: StatusWord::tries_left(2),
        };
        assert_eq!(r.emit(), [1, 2, 0x63, 0xC2]);
        assert_eq!(Response::parse(&r.emit()), Some(r));
        assert_eq!(StatusWord(0x63C2).as_tries_left(), Some(2));
        assert_eq!(StatusWord::OK.as_tries_left(), None);
        assert_eq!(Response::parse(&[0x90]), None);
    }
}
