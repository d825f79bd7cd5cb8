//! The card's end of the Peer I/O link (seed 003 §7): the server's class-12 commands arrive
//! on the vpcd connection, and the frames they carry go to and from the card's TAP device,
//! which stands in for the card's network link when the card speaks only ISO 7816.

use apdu::peerio::Client;
use apdu::tap::LinkEnd;
use apdu::{Command, Response};

/// The Peer I/O client and its TAP bridge.
#[derive(Debug)]
pub struct PeerLink {
    client: Client,
    link: LinkEnd,
}

impl PeerLink {
    pub fn new(link: LinkEnd) -> PeerLink {
        PeerLink {
            client: Client::default(),
            link,
        }
    }

    /// Power off or reset: a frame half sent either way is dropped, the stream starts afresh.
    pub fn reset(&mut self) {
        self.client = Client::default();
    }

    /// One command of class 12. Frames the TAP gave meanwhile are the upper layer's writes;
    /// frames the server completed are its reads.
    pub fn handle(&mut self, command: &Command) -> Response {
        while let Ok(frame) = self.link.from_tap.try_recv() {
            self.client.write(&frame);
        }
        let response = self.client.handle(command);
        while let Some(frame) = self.client.read() {
            if self.link.to_tap.try_send(frame).is_err() {
                self.client.dropped += 1;
            }
        }
        response
    }
}
