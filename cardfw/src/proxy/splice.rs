//! Moving bytes between the client and the upstream once a connection is allowed: both ways
//! for tunnels ([`splice`]), and one decided HTTP body at a time socket to socket inside the
//! kernel ([`Pipe::relay`]), so a large download is never copied through the card's memory.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

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

/// Bytes asked of the kernel per `splice(2)` call: the default pipe capacity.
const PIPE_CHUNK: usize = 64 * 1024;

/// A pipe through which `splice(2)` moves socket data without copying it to user space. One
/// per client connection, made when its first body needs it; it is empty between relays.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Moves up to `max` bytes from `from` to `to`, stopping early only when `from` ends;
    /// returns how many moved. Each wait for either socket is bounded by `idle`. After an
    /// error the pipe may hold bytes, so the caller must drop it with the connection.
    pub async fn relay(
        &self,
        from: &TcpStream,
        to: &TcpStream,
        max: u64,
        idle: Duration,
    ) -> io::Result<u64> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let mut moved = 0;
        while moved < max {
            let want = (max - moved).min(PIPE_CHUNK as u64) as usize;
            let filled = when_ready(from, Interest::READABLE, idle, || {
                nix::fcntl::splice(from, None, &self.write, None, want, flags)
            })
            .await?;
            if filled == 0 {
                break;
            }
            let mut left = filled;
            while left > 0 {
                left -= when_ready(to, Interest::WRITABLE, idle, || {
                    nix::fcntl::splice(&self.read, None, to, None, left, flags)
                })
                .await?;
            }
            moved += filled as u64;
        }
        Ok(moved)
    }
}

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

    #[tokio::test]
    async fn a_pipe_relays_exactly_what_is_asked_and_stops_at_the_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut source, (from, _)) =
            tokio::try_join!(TcpStream::connect(addr), listener.accept()).unwrap();
        let (to, (mut sink, _)) =
            tokio::try_join!(TcpStream::connect(addr), listener.accept()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            source.write_all(&data).await.unwrap();
            source.shutdown().await.unwrap();
            data
        });
        let pipe = Pipe::new().unwrap();
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
