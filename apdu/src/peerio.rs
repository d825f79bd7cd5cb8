//! Peer I/O (seed 003, §7.3): network frames carried in APDUs of class 12.
//!
//! The server (the host) sends PUT_PACKET with up to 255 bytes of the byte stream going to the
//! card, POLL with one arbitrary byte to ask whether the card has something, and GET_PACKET
//! with Le = xx after the card answered 6Cxx (xx bytes ready; 00 means 256). 9000 means the
//! card has nothing to send and is ready to receive.
//!
//! The seed's ACK byte (the INS echoed first) is the T=0 procedure byte: PC/SC consumes it
//! below the APDU level, so responses here are data and status word only.

use crate::{Command, StatusWord};

pub const CLA: u8 = 0x12;
pub const INS_POLL: u8 = 0xE8;
pub const INS_PUT_PACKET: u8 = 0xEA;
pub const INS_GET_PACKET: u8 = 0xEC;
/// The most data one PUT_PACKET carries (one-byte Lc).
pub const MAX_PUT: usize = 255;
/// The most data one GET_PACKET returns (Le 00).
pub const MAX_GET: usize = 256;

/// READY-WRITE: the card has `len` (1..=256) bytes to send.
pub fn ready_write(len: usize) -> StatusWord {
    StatusWord(0x6C00 | (len % 256) as u16)
}

/// The bytes a READY-WRITE announces, or `None` for any other status word.
pub fn as_ready_write(sw: StatusWord) -> Option<usize> {
    (sw.sw1() == 0x6C).then(|| {
        if sw.sw2() == 0 {
            256
        } else {
            usize::from(sw.sw2())
        }
    })
}

pub fn poll() -> Command {
    Command::new(CLA, INS_POLL, 0, 0).with_data(vec![0])
}

pub fn put_packet(data: &[u8]) -> Command {
    Command::new(CLA, INS_PUT_PACKET, 0, 0).with_data(data[..data.len().min(MAX_PUT)].to_vec())
}

pub fn get_packet(len: usize) -> Command {
    Command::new(CLA, INS_GET_PACKET, 0, 0).with_le(len.clamp(1, MAX_GET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_write_lengths() {
        assert_eq!(ready_write(5), StatusWord(0x6C05));
        assert_eq!(as_ready_write(ready_write(256)), Some(256));
        assert_eq!(as_ready_write(StatusWord::OK), None);
        assert_eq!(get_packet(256).emit(), [0x12, 0xEC, 0, 0, 0]);
    }
}
