//! The bridge between a Peer I/O end and a TAP device: frames read from the TAP go to the
//! link, frames from the link are written to the TAP, and every frame is checked with
//! `etherparse` on the way through both ways. A frame that is not a well-formed Ethernet frame
//! (with a well-formed IP, ARP or other payload header as far as etherparse reads it) is
//! dropped, counted and logged, never forwarded.
//!
//! The Peer I/O ends are blocking loops (PC/SC calls, the vpcd socket), so the bridge hands
//! them tokio channels they use without awaiting (`try_recv`, `try_send`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_tun::Tun;

use crate::peerio::MAX_FRAME;

/// Frames waiting each way, at most; more are dropped (as on a full link).
const CHANNEL_FRAMES: usize = 64;

/// The link's side of a bridge.
#[derive(Debug)]
pub struct LinkEnd {
    /// Frames read from the TAP, checked, for the link.
    pub from_tap: mpsc::Receiver<Vec<u8>>,
    /// Frames from the link, to be checked and written to the TAP.
    pub to_tap: mpsc::Sender<Vec<u8>>,
    pub counters: Arc<Counters>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub from_tap: AtomicU64,
    pub to_tap: AtomicU64,
    /// Frames refused by the check, either way.
    pub malformed: AtomicU64,
}

/// Whether `frame` is a well-formed Ethernet frame of a size the link carries.
pub fn check_frame(frame: &[u8]) -> Result<(), String> {
    if frame.len() > MAX_FRAME {
        return Err(format!("{} bytes, more than {MAX_FRAME}", frame.len()));
    }
    etherparse::SlicedPacket::from_ethernet(frame)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Opens TAP device `name` (created if needed, set up) and bridges it; the tasks run until
/// the runtime stops.
pub fn open(name: &str) -> std::io::Result<LinkEnd> {
    let tun = Tun::builder()
        .name(name)
        .tap()
        .up()
        .build()
        .map_err(std::io::Error::other)?
        .pop()
        .ok_or_else(|| std::io::Error::other("no TAP queue was created"))?;
    let tun = Arc::new(tun);
    let counters = Arc::new(Counters::default());
    let (from_tap_tx, from_tap) = mpsc::channel(CHANNEL_FRAMES);
    let (to_tap, mut to_tap_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_FRAMES);

    let reader = tun.clone();
    let reader_counters = counters.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65536];
        loop {
            let length = match reader.recv(&mut buffer).await {
                Ok(length) => length,
                Err(error) => {
                    tracing::error!(%error, "peer I/O: reading the TAP failed");
                    return;
                }
            };
            let frame = &buffer[..length];
            if let Err(why) = check_frame(frame) {
                reader_counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%why, "peer I/O: frame from the TAP dropped");
                continue;
            }
            reader_counters.from_tap.fetch_add(1, Ordering::Relaxed);
            if from_tap_tx.try_send(frame.to_vec()).is_err() && from_tap_tx.is_closed() {
                return;
            }
        }
    });
    let writer_counters = counters.clone();
    tokio::spawn(async move {
        while let Some(frame) = to_tap_rx.recv().await {
            if let Err(why) = check_frame(&frame) {
                writer_counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%why, "peer I/O: frame from the link dropped");
                continue;
            }
            match tun.send(&frame).await {
                Ok(_) => {
                    writer_counters.to_tap.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "peer I/O: writing the TAP failed"),
            }
        }
    });
    Ok(LinkEnd {
        from_tap,
        to_tap,
        counters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut frame, b"hello")
            .unwrap();
        assert!(check_frame(&frame).is_ok());
        assert!(
            check_frame(&frame[..10]).is_err(),
            "cut in the Ethernet header"
        );
        let mut bad_ip = frame.clone();
        bad_ip[14] = 0x4F; // IPv4 with a header longer than the packet
        assert!(check_frame(&bad_ip).is_err());
        assert!(check_frame(&vec![0; MAX_FRAME + 1]).is_err());
    }
}
