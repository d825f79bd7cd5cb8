//! Any bytes as what the vpcd reader sends the card: length-prefixed messages, each a control
//! byte or a command APDU. The card here has no store (no application) and a Peer I/O link
//! whose TAP side already holds two frames, as `cardfw` runs on a card that speaks only
//! ISO 7816.
//!
//! `serve_connection` never panics, and answers exactly as the framing says, checked against
//! a model written from the protocol: a stream that ends inside a message is an error, one
//! that ends between messages is not; each power or reset control resets the card; GET_ATR is
//! answered with the ATR; each command (two bytes or more) gets one answer, the one the Peer
//! I/O client gives it directly (class 12) or CLA NOT SUPPORTED; nothing else is written.
//! The frames the link hands the TAP are the ones the model's client gives its reader.
#![no_main]

use std::io::{self, Read, Write};
use std::sync::Arc;

use apdu::peerio::{CLA, Client};
use apdu::tap::{Counters, LinkEnd};
use apdu::{Command, Response, StatusWord};
use cardfw::iso7816::peerio::PeerLink;
use cardfw::iso7816::vpcd::{self, ATR, GET_ATR, POWER_OFF, POWER_ON, RESET};
use libfuzzer_sys::fuzz_target;
use tokio::sync::mpsc;

/// Frames the TAP offers before the first command.
const FROM_TAP: [&[u8]; 2] = [&[0xAA; 60], &[0x55; 300]];

/// The reader's side of the connection: the input to read, what the card wrote.
struct Reader<'a> {
    input: &'a [u8],
    written: Vec<u8>,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Reader<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The Peer I/O client as the link should drive it, and what its reader got.
#[derive(Default)]
struct Model {
    client: Client,
    offered: bool,
    to_tap: Vec<Vec<u8>>,
    answers: Vec<u8>,
}

impl Model {
    fn answer(&mut self, payload: &[u8]) {
        self.answers
            .extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        self.answers.extend_from_slice(payload);
    }

    fn command(&mut self, bytes: &[u8]) {
        let response = match Command::parse(bytes) {
            Ok(command) if bytes[0] == CLA => {
                if !self.offered {
                    self.offered = true;
                    for frame in FROM_TAP {
                        self.client.write(frame);
                    }
                }
                let response = self.client.handle(&command);
                while let Some(frame) = self.client.read() {
                    self.to_tap.push(frame);
                }
                response
            }
            _ => Response::status(StatusWord::CLA_NOT_SUPPORTED),
        };
        self.answer(&response.emit());
    }

    /// Runs the stream; true if it ended inside a message.
    fn run(&mut self, mut input: &[u8]) -> bool {
        loop {
            let [high, low, rest @ ..] = input else {
                return false;
            };
            let length = usize::from(u16::from_be_bytes([*high, *low]));
            if rest.len() < length {
                return true;
            }
            let (message, rest) = rest.split_at(length);
            input = rest;
            match message {
                [] => {}
                [POWER_OFF | POWER_ON | RESET] => {
                    // The link's client starts afresh; what the TAP offered was taken.
                    self.client = Client::default();
                }
                [GET_ATR] => self.answer(&ATR),
                [_] => {}
                command => self.command(command),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (tap_tx, from_tap) = mpsc::channel(FROM_TAP.len());
    for frame in FROM_TAP {
        tap_tx.try_send(frame.to_vec()).unwrap();
    }
    let (to_tap, mut tap_rx) = mpsc::channel(data.len() + 1);
    let mut link = PeerLink::new(LinkEnd {
        from_tap,
        to_tap,
        counters: Arc::new(Counters::default()),
    });
    let mut card = vpcd::Card {
        application: None,
        peer: Some(&mut link),
    };
    let mut reader = Reader {
        input: data,
        written: Vec::new(),
    };
    let served = vpcd::serve_connection(&mut reader, &mut card);

    let mut model = Model::default();
    let cut_short = model.run(data);
    match served {
        Ok(()) => assert!(!cut_short, "a stream cut inside a message ended cleanly"),
        Err(error) => {
            assert!(cut_short, "{error}");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
    assert_eq!(reader.written, model.answers);
    let mut to_tap = Vec::new();
    while let Ok(frame) = tap_rx.try_recv() {
        to_tap.push(frame);
    }
    assert_eq!(to_tap, model.to_tap);
});
