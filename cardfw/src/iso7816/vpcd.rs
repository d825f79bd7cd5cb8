//! The virtual-ICC end of vsmartcard's `vpcd` reader driver: `pcscd` loads `vpcd`, which
//! listens on TCP (35963 for its first reader by default) for a virtual card to connect.
//! Then `pcscd` shows a reader with a card in it, and every host program reaches the card
//! through PC/SC as it would a real one.
//!
//! Each message either way is a two-byte big-endian length, then that many bytes. From the
//! reader, a one-byte message is a control ([`POWER_OFF`], [`POWER_ON`], [`RESET`],
//! [`GET_ATR`]; only [`GET_ATR`] is answered, with the [`ATR`]); a longer one is a command
//! APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use apdu::{Command, Response, StatusWord};

use crate::firewall::Firewall;

use super::Application;
use super::peerio::PeerLink;

pub const POWER_OFF: u8 = 0;
pub const POWER_ON: u8 = 1;
pub const RESET: u8 = 2;
pub const GET_ATR: u8 = 4;

/// The answer to reset: direct convention, T=1 only, no historical bytes, with its check
/// byte (T0 = 80: TD1 follows; TD1 = 01: T=1; TCK = 80 xor 01).
pub const ATR: [u8; 4] = [0x3B, 0x80, 0x01, 0x81];

/// How long to wait before connecting again after the reader went away or was not there.
const RECONNECT: Duration = Duration::from_secs(1);

/// What sits in the virtual reader.
pub trait Icc {
    /// Power off, power on and reset: the card session starts afresh.
    fn reset(&mut self);
    /// One command APDU in, its response APDU out.
    fn transmit(&mut self, command: &[u8]) -> Vec<u8>;
}

/// The card in the reader: the cardwall application (if the card has a store), and the Peer
/// I/O client if the card has a Peer I/O link (class 12 goes there; everything else to the
/// application).
#[derive(Debug)]
pub struct Card<'store, 'link> {
    pub application: Option<Application<'store>>,
    pub peer: Option<&'link mut PeerLink>,
}

impl Icc for Card<'_, '_> {
    fn reset(&mut self) {
        if let Some(application) = self.application.as_mut() {
            application.reset();
        }
        if let Some(peer) = self.peer.as_deref_mut() {
            peer.reset();
        }
    }

    fn transmit(&mut self, bytes: &[u8]) -> Vec<u8> {
        if let Some(peer) = self.peer.as_deref_mut()
            && bytes.first() == Some(&apdu::peerio::CLA)
            && let Ok(command) = Command::parse(bytes)
        {
            return peer.handle(&command).emit();
        }
        match self.application.as_mut() {
            Some(application) => application.transmit(bytes).emit(),
            // A card with no store speaks only Peer I/O.
            None => Response::status(StatusWord::CLA_NOT_SUPPORTED).emit(),
        }
    }
}

/// Serves `icc` on one connection to the reader until the reader closes it. A message that
/// cannot be read ends the connection (the stream is lost); a message's content never does.
pub fn serve_connection(stream: &mut (impl Read + Write), icc: &mut impl Icc) -> io::Result<()> {
    let mut message = Vec::with_capacity(512);
    loop {
        let mut length = [0u8; 2];
        match stream.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        message.resize(usize::from(u16::from_be_bytes(length)), 0);
        stream.read_exact(&mut message)?;
        match message.as_slice() {
            [] => {}
            [POWER_OFF | POWER_ON | RESET] => icc.reset(),
            [GET_ATR] => write_message(stream, &ATR)?,
            [other] => tracing::debug!(control = other, "vpcd: unknown control message ignored"),
            command => {
                let response = icc.transmit(command);
                write_message(stream, &response)?;
            }
        }
    }
}

fn write_message(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let length = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "vpcd message too long"))?;
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(payload);
    stream.write_all(&out)?;
    stream.flush()
}

/// Connects to the reader at `reader` and serves the cardwall application over `firewall`'s
/// store if it has one (and the Peer I/O client, with `peer`), again and again: when the
/// reader goes away the card waits and reconnects, like a card pulled out and put back.
/// Blocking: run it on its own thread ([`spawn`]).
pub fn run(reader: SocketAddr, firewall: Arc<Firewall>, mut peer: Option<PeerLink>) -> ! {
    let mut reported = false;
    loop {
        match TcpStream::connect(reader) {
            Ok(mut stream) => {
                reported = false;
                let _ = stream.set_nodelay(true);
                tracing::info!(%reader, "vpcd: in the reader");
                if let Some(peer) = peer.as_mut() {
                    peer.reset();
                }
                let mut card = Card {
                    application: firewall.store().map(|store| Application::new(store)),
                    peer: peer.as_mut(),
                };
                match serve_connection(&mut QuickAck(&mut stream), &mut card) {
                    Ok(()) => tracing::info!(%reader, "vpcd: the reader closed the connection"),
                    Err(error) => tracing::warn!(%reader, %error, "vpcd: connection lost"),
                }
            }
            Err(error) if !reported => {
                reported = true;
                tracing::warn!(%reader, %error, "vpcd: no reader yet; trying every second");
            }
            Err(_) => {}
        }
        std::thread::sleep(RECONNECT);
    }
}

/// The reader sends a message's length and its payload in two writes, and its socket has
/// Nagle on: without an immediate ACK of the first, the second waits for the delayed-ACK
/// timer (40 ms), once per APDU. Quick ACK is a one-shot flag, so it is set after every read.
struct QuickAck<'a>(&'a mut TcpStream);

impl Read for QuickAck<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.0.read(buf)?;
        let _ = socket2::SockRef::from(&*self.0).set_tcp_quickack(true);
        Ok(read)
    }
}

impl Write for QuickAck<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Starts [`run`] on a thread of its own (APDUs are one at a time, and the store's PIN check
/// blocks for the Argon2 hash).
pub fn spawn(
    reader: SocketAddr,
    firewall: Arc<Firewall>,
    peer: Option<PeerLink>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("vpcd".into())
        .spawn(move || run(reader, firewall, peer))
        .map(drop)
}
