//! Copying bytes both ways between the client and the upstream once a connection is allowed,
//! with an idle timeout that counts traffic in either direction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

const BUFFER: usize = 32 * 1024;

/// Copies until both sides have closed, or nothing moved either way for `idle`.
/// A half-close is passed on: when one side stops sending, the other side's write half is
/// shut down and the opposite direction keeps going.
pub async fn splice<C, U>(client: C, upstream: U, idle: Duration) -> Moved
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Milliseconds since `started` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = pump(
        &mut client_read,
        &mut upstream_write,
        idle,
        started,
        &last_activity,
    );
    let down = pump(
        &mut upstream_read,
        &mut client_write,
        idle,
        started,
        &last_activity,
    );
    let (client_to_upstream, upstream_to_client) = tokio::join!(up, down);
    Moved {
        client_to_upstream,
        upstream_to_client,
    }
}

async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    idle: Duration,
    started: Instant,
    last: &AtomicU64,
) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut moved = 0u64;
    loop {
        let read = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(read) => read,
            Err(_) => {
                // Idle this way; carry on while the other way is busy.
                let quiet_for = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if quiet_for < idle.as_millis() as u64 {
                    continue;
                }
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                moved += n as u64;
            }
        }
    }
    let _ = to.shutdown().await;
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (client, mut client_peer) = duplex(1024);
        let (upstream, mut upstream_peer) = duplex(1024);
        let task = tokio::spawn(splice(client, upstream, Duration::from_secs(5)));
        client_peer.write_all(b"request").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        upstream_peer.write_all(b"a longer response").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"a longer response");
        let moved = task.await.unwrap();
        assert_eq!(
            moved,
            Moved {
                client_to_upstream: 7,
                upstream_to_client: 17
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_but_busy_ones_are_not() {
        let (client, _client_peer) = duplex(1024);
        let (upstream, mut upstream_peer) = duplex(1 << 20);
        let task = tokio::spawn(splice(client, upstream, Duration::from_secs(10)));
        // Traffic one way only for 30 s keeps the whole connection open.
        for _ in 0..30 {
            upstream_peer.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(25)).await;
        let moved = task.await.unwrap();
        assert_eq!(moved.upstream_to_client, 30);
    }
}
