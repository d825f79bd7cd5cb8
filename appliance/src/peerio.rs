//! The appliance's end of Peer I/O (seed 003 §7): for a card that speaks only ISO 7816, the
//! appliance runs the Peer I/O server through PC/SC and bridges the frames to a TAP device,
//! which then stands for the card link (the CDC-EEM interface of a USB networking card).
//!
//! The server state machine is [`apdu::peerio::Server`]; this module only drives it: one
//! command at a time through `pcscd`, frames from the TAP queued for the card, frames from the
//! card written to the TAP (both checked by [`apdu::tap`]). When the card is absent or stops
//! answering, nothing crosses the link: the via-card routes have no next hop, so traffic is
//! blocked, as when an EEM card is pulled.

use std::ffi::CString;
use std::time::Duration;

use apdu::peerio::{LinkError, Server};
use apdu::tap::LinkEnd;
use apdu::{Command, Response};

/// Pause after a poll that moved nothing, so an idle link does not keep `pcscd` busy.
const IDLE_WAIT: Duration = Duration::from_millis(1);
/// Pause before connecting to the card again.
const RECONNECT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    #[error("PC/SC: {0}")]
    Pcsc(#[from] pcsc::Error),
    #[error("the card's response is shorter than a status word")]
    Short,
}

fn transmit(card: &pcsc::Card, command: &Command) -> Result<Response, TransmitError> {
    let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE];
    let bytes = card.transmit(&command.emit(), &mut buffer)?;
    Response::parse(bytes).ok_or(TransmitError::Short)
}

/// Serves the Peer I/O link of the card in `reader` to `link`, for ever (blocking: run it on
/// a thread of its own). A card (or `pcscd`) that goes away is waited for.
pub fn run(reader: &str, mut link: LinkEnd) -> anyhow::Result<()> {
    let reader = CString::new(reader)?;
    let mut reported = false;
    loop {
        let connected = pcsc::Context::establish(pcsc::Scope::User).and_then(|context| {
            context.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        });
        let card = match connected {
            Ok(card) => card,
            Err(error) => {
                if !reported {
                    tracing::warn!(%error, reader = ?reader, "peer I/O: no card (or no pcscd); the link stays down");
                    reported = true;
                }
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        reported = false;
        tracing::info!(reader = ?reader, "peer I/O: link up");
        let mut server = Server::default();
        loop {
            while let Ok(frame) = link.from_tap.try_recv() {
                server.send(&frame);
            }
            match server.step(|command| transmit(&card, command)) {
                Ok(step) => {
                    for frame in step.frames {
                        // A full TAP queue drops the frame, like a full link.
                        let _ = link.to_tap.try_send(frame);
                    }
                    if step.idle {
                        std::thread::sleep(IDLE_WAIT);
                    }
                }
                Err(LinkError::Refused(sw)) => {
                    tracing::warn!(%sw, "peer I/O: the card refused a command; polling again");
                    std::thread::sleep(RECONNECT);
                }
                Err(LinkError::Transport(error)) => {
                    tracing::warn!(%error, "peer I/O: link down");
                    break;
                }
            }
        }
        std::thread::sleep(RECONNECT);
    }
}
