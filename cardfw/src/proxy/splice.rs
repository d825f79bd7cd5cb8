//! Moving bytes between the client and the upstream once a connection is allowed: both ways
//! for tunnels ([`splice`]), one decided HTTP body at a time ([`Pipe::relay`]). Either way the
//! bytes go socket to pipe to socket inside the kernel (`splice(2)`): a download is never
//! copied through the card's memory, and an open tunnel holds no buffer of its own.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

/// Moves bytes both ways until both sides have closed, or nothing moved either way for
/// `idle`. A half-close is passed on: when one side stops sending, the other side's write
/// half is shut down and the opposite direction keeps going.
pub async fn splice(client: &TcpStream, upstream: &TcpStream, idle: Duration) -> Moved {
    let started = Instant::now();
    // Milliseconds since `started` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);
    let up = pump(client, upstream, idle, started, &last_activity);
    let down = pump(upstream, client, idle, started, &last_activity);
    let (client_to_upstream, upstream_to_client) = tokio::join!(up, down);
    Moved {
        client_to_upstream,
        upstream_to_client,
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    started: Instant,
    last: &AtomicU64,
) -> u64 {
    let mut moved = 0u64;
    if let Ok(mut pipe) = Pipe::new() {
        loop {
            match pipe.relay_once(from, to, PIPE_CHUNK, idle).await {
                Ok(0) => break,
                Ok(n) => {
                    moved += n as u64;
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    // Idle this way; carry on while the other way is busy.
                    let quiet_for =
                        started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    if quiet_for >= idle.as_millis() as u64 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
    moved
}

/// Bytes asked of the kernel per `splice(2)` call: the default pipe capacity.
const PIPE_CHUNK: usize = 64 * 1024;

/// A pipe through which `splice(2)` moves socket data without copying it to user space. One
/// per direction of a tunnel, or per client connection for HTTP bodies, made when needed.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe not yet written out (a write that timed out leaves some).
    pending: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Pipe {
            read,
            write,
            pending: 0,
        })
    }

    /// Moves up to `max` bytes from `from` to `to`, stopping early only when `from` ends;
    /// returns how many were taken from `from`.
    pub async fn relay(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        max: u64,
        idle: Duration,
    ) -> io::Result<u64> {
        let mut moved = 0;
        while moved < max {
            let want = (max - moved).min(PIPE_CHUNK as u64) as usize;
            match self.relay_once(from, to, want, idle).await? {
                0 => break,
                n => moved += n as u64,
            }
        }
        Ok(moved)
    }

    /// Waits for bytes from `from` and passes up to `max` of them (at most a pipe-full) to
    /// `to`; 0 means `from` has ended. Each wait is bounded by `idle`; after a timeout the
    /// bytes still in the pipe go out first on the next call.
    pub async fn relay_once(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        max: usize,
        idle: Duration,
    ) -> io::Result<usize> {
        self.drain(to, idle).await?;
        let want = max.min(PIPE_CHUNK);
        let filled = when_ready(from, Interest::READABLE, idle, || {
            nix::fcntl::splice(from, None, &self.write, None, want, SPLICE_FLAGS)
        })
        .await?;
        self.pending = filled;
        self.drain(to, idle).await?;
        Ok(filled)
    }

    async fn drain(&mut self, to: &TcpStream, idle: Duration) -> io::Result<()> {
        while self.pending > 0 {
            self.pending -= when_ready(to, Interest::WRITABLE, idle, || {
                nix::fcntl::splice(&self.read, None, to, None, self.pending, SPLICE_FLAGS)
            })
            .await?;
        }
        Ok(())
    }
}

/// The pipe is non-blocking too, and pages are moved rather than copied where the kernel can.
const SPLICE_FLAGS: SpliceFFlags =
    SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Runs the non-blocking `call` once `socket` is ready for it, waiting at most `idle`.
async fn when_ready(
    socket: &TcpStream,
    interest: Interest,
    idle: Duration,
    mut call: impl FnMut() -> nix::Result<usize>,
) -> io::Result<usize> {
    let wait = async {
        loop {
            socket.ready(interest).await?;
            match socket.try_io(interest, || call().map_err(io::Error::from)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return done,
            }
        }
    };
    tokio::time::timeout(idle, wait)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (near, (far, _)) =
            tokio::try_join!(TcpStream::connect(addr), listener.accept()).unwrap();
        (near, far)
    }

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client_peer, client) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let task =
            tokio::spawn(async move { splice(&client, &upstream, Duration::from_secs(5)).await });
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

    #[tokio::test]
    async fn idle_connections_are_closed_but_busy_ones_are_not() {
        let (_client_peer, client) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let idle = Duration::from_millis(400);
        let task = tokio::spawn(async move { splice(&client, &upstream, idle).await });
        // Traffic one way only, for three idle periods, keeps the whole connection open.
        for _ in 0..12 {
            upstream_peer.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!task.is_finished());
        let moved = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("closed once quiet")
            .unwrap();
        assert_eq!(moved.upstream_to_client, 12);
    }

    #[tokio::test]
    async fn a_pipe_relays_exactly_what_is_asked_and_stops_at_the_end() {
        let (mut source, from) = pair().await;
        let (to, mut sink) = pair().await;
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            source.write_all(&data).await.unwrap();
            source.shutdown().await.unwrap();
            data
        });
        let mut pipe = Pipe::new().unwrap();
        let idle = Duration::from_secs(5);
        assert_eq!(
            pipe.relay(&from, &to, 200_000, idle).await.unwrap(),
            200_000
        );
        // Asking for more than is left stops where the sender ended.
        assert_eq!(
            pipe.relay(&from, &to, u64::MAX, idle).await.unwrap(),
            100_000
        );
        drop(to);
        let mut got = Vec::new();
        sink.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, writer.await.unwrap());
    }
}
