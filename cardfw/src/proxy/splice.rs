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
    match splice_checked(client, upstream, idle, None, None).await {
        Ok(moved) | Err((_, moved)) => moved,
    }
}

/// A test the first bytes one way must pass before any of them is passed on (a TLS tunnel:
/// what follows the hello must be TLS records, both ways).
#[derive(Debug, Clone, Copy)]
pub struct FirstBytes {
    /// Bytes the test looks at; fewer are judged as they come.
    pub len: usize,
    /// Whether these first bytes (possibly fewer than `len`) may start this direction.
    pub ok: fn(&[u8]) -> bool,
}

/// The direction whose first bytes failed their test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

/// Like [`splice`], but each direction's first bytes must pass its test, looked at before
/// they leave the kernel (`MSG_PEEK`). On a failure both connections are shut down at once
/// and the failing direction is returned, with what moved before it.
pub async fn splice_checked(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    up_first: Option<FirstBytes>,
    down_first: Option<FirstBytes>,
) -> Result<Moved, (Direction, Moved)> {
    let started = Instant::now();
    // Milliseconds since `started` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);
    let up = pump(client, upstream, idle, started, &last_activity, up_first);
    let down = pump(upstream, client, idle, started, &last_activity, down_first);
    let ((client_to_upstream, up_ok), (upstream_to_client, down_ok)) = tokio::join!(up, down);
    let moved = Moved {
        client_to_upstream,
        upstream_to_client,
    };
    match (up_ok, down_ok) {
        (false, _) => Err((Direction::ClientToUpstream, moved)),
        (_, false) => Err((Direction::UpstreamToClient, moved)),
        _ => Ok(moved),
    }
}

/// What the first bytes of one direction turned out to be.
enum First {
    Pass,
    Fail,
    /// The stream ended, failed or stayed silent for `idle` before enough bytes came.
    End,
}

async fn check_first(from: &TcpStream, check: FirstBytes, idle: Duration) -> First {
    let deadline = tokio::time::Instant::now() + idle;
    let mut buf = [0u8; 16];
    let want = check.len.clamp(1, buf.len());
    loop {
        match tokio::time::timeout_at(deadline, from.peek(&mut buf[..want])).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return First::End,
            Ok(Ok(n)) if !(check.ok)(&buf[..n]) => return First::Fail,
            Ok(Ok(n)) if n >= want => return First::Pass,
            // Some of them: good so far. Peeking leaves the socket readable, so wait a little
            // for the rest rather than on readiness.
            Ok(Ok(_)) => {
                if tokio::time::Instant::now() >= deadline {
                    return First::End;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Moves one direction until it ends; false if its first bytes failed `first`.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    started: Instant,
    last: &AtomicU64,
    first: Option<FirstBytes>,
) -> (u64, bool) {
    let mut moved = 0u64;
    let checked = match first {
        None => First::Pass,
        Some(check) => check_first(from, check, idle).await,
    };
    match checked {
        First::Pass => {}
        First::Fail => {
            // Nothing of it is passed on, and the other direction stops too.
            let _ = socket2::SockRef::from(from).shutdown(Shutdown::Both);
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Both);
            return (0, false);
        }
        First::End => {
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return (0, true);
        }
    }
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
    (moved, true)
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
    async fn first_bytes_that_fail_their_test_are_not_passed_on() {
        let tls = FirstBytes {
            len: 3,
            ok: |b| b.first().is_none_or(|&t| t == 0x17),
        };
        // The client's first bytes are not what the test wants: nothing reaches upstream,
        // and both connections end.
        let (mut client_peer, client) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let task = tokio::spawn(async move {
            splice_checked(&client, &upstream, Duration::from_secs(5), Some(tls), None).await
        });
        client_peer
            .write_all(b"HELO smtp.example\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"");
        let result = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap();
        assert_eq!(result.unwrap().unwrap_err().0, Direction::ClientToUpstream);
        let mut back = Vec::new();
        let _ = client_peer.read_to_end(&mut back).await;
        assert_eq!(back, b"");

        // First bytes that pass, even one at a time, go through whole.
        let (mut client_peer, client) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let task = tokio::spawn(async move {
            splice_checked(
                &client,
                &upstream,
                Duration::from_secs(5),
                Some(tls),
                Some(tls),
            )
            .await
        });
        client_peer.write_all(&[0x17]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        client_peer.write_all(&[3, 3, 0, 1, b'x']).await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0x17, 3, 3, 0, 1, b'x']);
        // The upstream's first bytes fail: the client gets none of them.
        upstream_peer
            .write_all(b"220 smtp.example\r\n")
            .await
            .unwrap();
        let mut back = Vec::new();
        let _ = client_peer.read_to_end(&mut back).await;
        assert_eq!(back, b"");
        let result = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap();
        assert_eq!(result.unwrap().unwrap_err().0, Direction::UpstreamToClient);
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
