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

/// The largest frame the link carries (an Ethernet frame with a VLAN tag, and headroom).
pub const MAX_FRAME: usize = 1600;
/// Bytes waiting to go either way, at most: about 40 full frames. More is dropped, as a
/// full link drops.
pub const MAX_QUEUED: usize = 64 * 1024;

/// Frame boundaries on the Peer I/O byte stream. Peer I/O itself only moves bytes (seed 003
/// §7.5: "the protocol stack above Peer I/O … can identify the beginning and the end of a
/// frame"); for Ethernet frames, which do not delimit themselves, that layer puts a two-byte
/// big-endian length before each frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Length prefixes too large to be a frame: the stream was broken and was dropped.
    pub resyncs: u64,
}

impl FrameReader {
    /// Takes the next bytes of the stream; returns the frames they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let wanted = match self.buffer.as_slice() {
                [hi, lo, ..] => 2 + usize::from(u16::from_be_bytes([*hi, *lo])),
                _ => 2,
            };
            let take = (wanted - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if let [hi, lo, ..] = self.buffer.as_slice() {
                let length = usize::from(u16::from_be_bytes([*hi, *lo]));
                if length == 0 || length > MAX_FRAME {
                    // Not a frame: nothing after it can be trusted to be aligned.
                    self.resyncs += 1;
                    self.buffer.clear();
                    return frames;
                }
                if self.buffer.len() == 2 + length {
                    frames.push(self.buffer[2..].to_vec());
                    self.buffer.clear();
                }
            }
        }
        frames
    }
}

/// Appends `frame` with its length to `queue`; false (and nothing queued) when the frame is
/// empty or too large, or the queue is full.
pub fn queue_frame(queue: &mut std::collections::VecDeque<u8>, frame: &[u8]) -> bool {
    if frame.is_empty() || frame.len() > MAX_FRAME || queue.len() + 2 + frame.len() > MAX_QUEUED {
        return false;
    }
    queue.extend((frame.len() as u16).to_be_bytes());
    queue.extend(frame);
    true
}

/// The card's side (seed 003 §7.5, figure 10). The upper layer (the card's TAP bridge) calls
/// [`Client::write`] and [`Client::read`]; the server's commands arrive in [`Client::handle`].
#[derive(Debug, Default)]
pub struct Client {
    state: ClientState,
    outgoing: std::collections::VecDeque<u8>,
    incoming: FrameReader,
    received: std::collections::VecDeque<Vec<u8>>,
    /// Frames dropped because a queue was full.
    pub dropped: u64,
}

/// The client's states, named as in the seed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    #[default]
    Initial,
    /// Waiting for the upper layer to read or write.
    WaitUpper,
    /// The card has bytes to send, announced with 6Cxx; waiting for GET_PACKET.
    WaitServerReadyWrite,
    /// Nothing to send (9000 answered); waiting for PUT_PACKET or the next POLL.
    WaitServerReadyRead,
}

/// Frames received and not yet read by the upper layer, at most.
const MAX_RECEIVED: usize = 64;

impl Client {
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The upper layer writes a frame (a write instruction): it goes out at the next POLL.
    pub fn write(&mut self, frame: &[u8]) -> bool {
        let queued = queue_frame(&mut self.outgoing, frame);
        if queued {
            self.state = ClientState::WaitServerReadyWrite;
        } else {
            self.dropped += 1;
        }
        queued
    }

    /// The upper layer reads a frame the server put.
    pub fn read(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// Answers one Peer I/O command (class [`CLA`]).
    pub fn handle(&mut self, command: &Command) -> crate::Response {
        use crate::Response;
        if command.p1p2() != 0 {
            return Response::status(StatusWord::INCORRECT_P1P2);
        }
        match command.ins {
            INS_POLL if command.data.len() == 1 => Response::status(self.announce()),
            INS_PUT_PACKET if !command.data.is_empty() && command.le.is_none() => {
                for frame in self.incoming.push(&command.data) {
                    if self.received.len() < MAX_RECEIVED {
                        self.received.push_back(frame);
                    } else {
                        self.dropped += 1;
                    }
                }
                self.state = ClientState::WaitUpper;
                Response::status(self.announce())
            }
            INS_GET_PACKET if command.data.is_empty() => {
                let Some(wanted) = command.le else {
                    return Response::status(StatusWord::WRONG_LENGTH);
                };
                let count = wanted.min(MAX_GET).min(self.outgoing.len());
                let data: Vec<u8> = self.outgoing.drain(..count).collect();
                if self.outgoing.is_empty() {
                    self.state = ClientState::WaitUpper;
                }
                Response {
                    data,
                    sw: self.announce(),
                }
            }
            INS_POLL | INS_PUT_PACKET | INS_GET_PACKET => {
                Response::status(StatusWord::WRONG_LENGTH)
            }
            _ => Response::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    /// READY-WRITE with what is waiting, or NO-DATA.
    fn announce(&mut self) -> StatusWord {
        if self.outgoing.is_empty() {
            self.state = ClientState::WaitServerReadyRead;
            StatusWord::OK
        } else {
            self.state = ClientState::WaitServerReadyWrite;
            ready_write(self.outgoing.len().min(MAX_GET))
        }
    }
}

/// The host's side (seed 003 §7.5, figure 9). [`Server::step`] makes one exchange with the
/// card; the host's bridge ("RAS" in the seed) gives frames with [`Server::send`] and gets the
/// card's from what `step` returns.
#[derive(Debug, Default)]
pub struct Server {
    state: ServerState,
    to_card: std::collections::VecDeque<u8>,
    from_card: FrameReader,
    /// Frames dropped because the queue to the card was full.
    pub dropped: u64,
}

/// The server's states, named as in the seed (Initial is [`ServerState::Polling`]: the server
/// always starts by polling).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    #[default]
    Polling,
    /// The card announced this many bytes.
    GettingFromCard(usize),
    /// The card is ready to receive: does the host have bytes for it?
    CheckingHost,
    PuttingToCard,
}

/// What [`Server::step`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Frames from the card, complete.
    pub frames: Vec<Vec<u8>>,
    /// Nothing moved either way: the caller may wait a little before the next step.
    pub idle: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError<E: std::error::Error> {
    #[error("the card answered a Peer I/O command with {0}")]
    Refused(StatusWord),
    #[error(transparent)]
    Transport(E),
}

impl Server {
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The host has a frame for the card.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        let queued = queue_frame(&mut self.to_card, frame);
        if !queued {
            self.dropped += 1;
        }
        queued
    }

    /// One command to the card and its answer, through `transmit`.
    pub fn step<E: std::error::Error>(
        &mut self,
        mut transmit: impl FnMut(&Command) -> Result<crate::Response, E>,
    ) -> Result<Step, LinkError<E>> {
        let mut step = Step::default();
        if self.state == ServerState::CheckingHost {
            self.state = if self.to_card.is_empty() {
                ServerState::Polling
            } else {
                ServerState::PuttingToCard
            };
        }
        let (command, put) = match self.state {
            ServerState::Polling => (poll(), 0),
            ServerState::GettingFromCard(len) => (get_packet(len), 0),
            ServerState::PuttingToCard | ServerState::CheckingHost => {
                let count = self.to_card.len().min(MAX_PUT);
                let (head, tail) = self.to_card.as_slices();
                let mut chunk = Vec::with_capacity(count);
                chunk.extend(head.iter().chain(tail).take(count));
                (put_packet(&chunk), count)
            }
        };
        let response = transmit(&command).map_err(LinkError::Transport)?;
        let polled_idle = self.state == ServerState::Polling;
        if let Some(len) = as_ready_write(response.sw) {
            self.state = ServerState::GettingFromCard(len);
        } else if response.sw.is_ok() {
            self.state = ServerState::CheckingHost;
        } else {
            // The card refused: start again from polling; what was not taken stays queued.
            self.state = ServerState::Polling;
            return Err(LinkError::Refused(response.sw));
        }
        self.to_card.drain(..put);
        step.frames = self.from_card.push(&response.data);
        step.idle = polled_idle && response.sw.is_ok() && self.to_card.is_empty();
        Ok(step)
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// A server and a client, talking through APDU bytes: frames of any length cross both ways.
    #[test]
    fn frames_of_any_length_cross_both_ways() {
        let mut server = Server::default();
        let mut client = Client::default();
        let frames: Vec<Vec<u8>> = [1usize, 60, 255, 256, 257, 1500, MAX_FRAME]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        for frame in &frames {
            assert!(server.send(frame));
            assert!(client.write(frame));
        }
        assert_eq!(client.state(), ClientState::WaitServerReadyWrite);
        let mut from_card = Vec::new();
        let mut steps = 0;
        while from_card.len() < frames.len() || !server.to_card.is_empty() {
            let step = server
                .step(|command| {
                    let bytes = command.emit();
                    let parsed = Command::parse(&bytes).unwrap();
                    Ok::<_, std::io::Error>(client.handle(&parsed))
                })
                .unwrap();
            from_card.extend(step.frames);
            steps += 1;
            assert!(steps < 1000, "stuck in {:?}", server.state());
        }
        let mut to_card = Vec::new();
        while let Some(frame) = client.read() {
            to_card.push(frame);
        }
        assert_eq!(from_card, frames);
        assert_eq!(to_card, frames);
        // Idle now: a poll moves nothing.
        let step = server
            .step(|c| Ok::<_, std::io::Error>(client.handle(c)))
            .unwrap();
        let step = if step.idle {
            step
        } else {
            server
                .step(|c| Ok::<_, std::io::Error>(client.handle(c)))
                .unwrap()
        };
        assert!(step.idle && step.frames.is_empty());
        assert_eq!(client.state(), ClientState::WaitServerReadyRead);
    }

    #[test]
    fn client_refusals_and_bounds() {
        let mut client = Client::default();
        let sw = |c: &mut Client, command: Command| c.handle(&command).sw;
        assert_eq!(
            sw(&mut client, Command::new(CLA, INS_POLL, 0, 0)),
            StatusWord::WRONG_LENGTH
        );
        assert_eq!(
            sw(
                &mut client,
                Command::new(CLA, INS_POLL, 1, 0).with_data([0])
            ),
            StatusWord::INCORRECT_P1P2
        );
        assert_eq!(
            sw(&mut client, Command::new(CLA, 0x99, 0, 0)),
            StatusWord::INS_NOT_SUPPORTED
        );
        assert_eq!(
            sw(&mut client, Command::new(CLA, INS_GET_PACKET, 0, 0)),
            StatusWord::WRONG_LENGTH
        );
        assert!(!client.write(&[]));
        assert!(!client.write(&vec![0; MAX_FRAME + 1]));
        // A length prefix that is no frame resynchronises the stream.
        let mut reader = FrameReader::default();
        assert!(reader.push(&[0xFF, 0xFF, 1, 2]).is_empty());
        assert_eq!(reader.resyncs, 1);
        assert_eq!(reader.push(&[0, 2, 9, 9]), vec![vec![9, 9]]);
    }
}
