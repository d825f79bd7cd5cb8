//! The one accept loop every listener runs (the card's proxies, DNS over TCP, its status
//! endpoint and web page; the policy server; the appliance's status page), and the descriptor
//! limit it relies on.
//!
//! A listener ending is not a process ending: [`serve`] never returns. When the process is
//! out of file descriptors (`EMFILE`, `ENFILE`) or kernel memory (`ENOBUFS`, `ENOMEM`), accept
//! keeps failing while the listener stays readable, so the loop backs off (sleeping a little
//! longer each time, up to [`MAX_BACKOFF`]) instead of spinning, warns once per burst, tells
//! its [`Events`] of every failure, and accepts again as soon as descriptors come back. Errors
//! that concern one connection only (the peer reset it before it was accepted) are skipped.
//!
//! A listener may have its own connection cap ([`Cap`]): past it a connection is accepted and
//! closed at once, so a client that holds connections open cannot fill the kernel's backlog
//! and leave others waiting unanswered.
//!
//! [`raise_descriptor_limit`] runs once at start: it lifts the soft `RLIMIT_NOFILE` towards
//! what the caller's connection caps need, so the caps, which refuse cleanly, are reached
//! before the descriptor limit, which refuses everyone.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::slots::Slots;

/// First pause after an accept failed for lack of resources; doubled on each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause: how late a listener may notice that descriptors came back.
pub const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What an accept loop tells its owner, who decides what to count (the card shows both on its
/// status document). Both default to doing nothing.
pub trait Events: Send + Sync + 'static {
    /// Accepting failed for lack of descriptors or memory.
    fn backoff(&self, _listener: &'static str) {}
    /// A connection from `client` was closed at once: the listener's [`Cap`] was full.
    fn refused_at_cap(&self, _listener: &'static str, _client: SocketAddr) {}
}

/// Nothing counted.
impl Events for () {}

/// Both events counted, for a status page.
#[derive(Debug, Default)]
pub struct Counters {
    backoffs: AtomicU64,
    refused_at_cap: AtomicU64,
}

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            backoffs: AtomicU64::new(0),
            refused_at_cap: AtomicU64::new(0),
        }
    }

    /// Accept failures for lack of descriptors or memory so far.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    /// Connections refused by a listener's own cap so far.
    pub fn refused_at_cap(&self) -> u64 {
        self.refused_at_cap.load(Ordering::Relaxed)
    }
}

impl Events for Counters {
    fn backoff(&self, _listener: &'static str) {
        self.backoffs.fetch_add(1, Ordering::Relaxed);
    }

    fn refused_at_cap(&self, _listener: &'static str, _client: SocketAddr) {
        self.refused_at_cap.fetch_add(1, Ordering::Relaxed);
    }
}

/// A listener's own connection cap: this many at once, all clients together, and this many
/// per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub total: usize,
    pub per_client: usize,
}

/// How one listener is run: its name in the logs, its cap, who hears of its events.
#[derive(Clone)]
pub struct Listener {
    name: &'static str,
    cap: Option<Cap>,
    events: Arc<dyn Events>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener called `name` in the logs, with no cap and nothing counted.
    pub fn new(name: &'static str) -> Listener {
        Listener {
            name,
            cap: None,
            events: Arc::new(()),
        }
    }

    /// At most `cap` connections at once.
    pub fn cap(self, cap: Cap) -> Listener {
        Listener {
            cap: Some(cap),
            ..self
        }
    }

    /// Tells `events` of back-offs and refusals.
    pub fn events(self, events: Arc<dyn Events>) -> Listener {
        Listener { events, ..self }
    }

    /// The name in the logs.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What an accept error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Out of descriptors or kernel memory: it lasts until something is closed.
    Exhausted,
    /// About one connection only (reset before it was accepted, say): the next may be fine.
    OneConnection,
    /// Anything else: unexpected, and maybe lasting.
    Other,
}

fn classify(error: &io::Error) -> Failure {
    use nix::errno::Errno;
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => Failure::Exhausted,
        Some(
            Errno::ECONNABORTED
            | Errno::ECONNRESET
            | Errno::EINTR
            | Errno::EAGAIN
            | Errno::EPROTO
            | Errno::EPERM
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH,
        ) => Failure::OneConnection,
        _ => Failure::Other,
    }
}

/// Accepts connections on `listener` for ever, handing each to `handle` on its own task
/// (within the listener's cap, when it has one).
pub async fn serve<F, Fut>(listener: TcpListener, how: Listener, mut handle: F) -> Infallible
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Listener { name, cap, events } = how;
    let slots = cap.map(|cap| Arc::new(Slots::new(cap.total, cap.per_client)));
    let mut backoff = FIRST_BACKOFF;
    // Failures in the current burst; a burst ends with the next connection accepted.
    let mut failed: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if failed > 0 {
                    tracing::info!(
                        listener = name,
                        failed,
                        "accepting connections again after running out of resources"
                    );
                    failed = 0;
                    backoff = FIRST_BACKOFF;
                }
                let connection = handle(stream, peer);
                match &slots {
                    None => {
                        tokio::spawn(connection);
                    }
                    Some(slots) => {
                        let slots = Arc::clone(slots);
                        let events = Arc::clone(&events);
                        tokio::spawn(async move {
                            // Dropping `connection` unpolled drops the stream: closed at once.
                            let Ok(_slot) = slots.acquire(peer.ip()) else {
                                events.refused_at_cap(name, peer);
                                tracing::debug!(listener = name, client = %peer, "connection refused: the listener's cap is full");
                                return;
                            };
                            connection.await;
                        });
                    }
                }
            }
            Err(error) => match classify(&error) {
                Failure::OneConnection => {
                    tracing::debug!(listener = name, %error, "a connection failed before it was accepted");
                }
                Failure::Exhausted => {
                    events.backoff(name);
                    if failed == 0 {
                        tracing::warn!(
                            listener = name,
                            %error,
                            "cannot accept: out of file descriptors or memory; new connections wait until some close"
                        );
                    }
                    failed += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Failure::Other => {
                    if failed == 0 {
                        tracing::warn!(listener = name, %error, "accept failed; going on");
                    }
                    failed += 1;
                    tokio::time::sleep(FIRST_BACKOFF).await;
                }
            },
        }
    }
}

/// What [`raise_descriptor_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorLimit {
    /// The soft limit already covered what is needed.
    Enough { soft: u64 },
    /// The soft limit was raised to this.
    Raised { from: u64, to: u64 },
    /// The hard limit is below what is needed: the soft limit is now the hard one, and at it
    /// accepting waits (see [`serve`]) until descriptors come back.
    Short { soft: u64, needed: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot read the descriptor limit: {0}")]
    Get(nix::errno::Errno),
    #[error("cannot raise the descriptor limit from {from} to {to}: {source}")]
    Set {
        from: u64,
        to: u64,
        source: nix::errno::Errno,
    },
}

/// Raises the soft `RLIMIT_NOFILE` to `needed` descriptors, as far as the hard limit allows,
/// and logs what it did (`needed_for` says what they are for, in the warning when short).
/// `None` asks for as many as the hard limit allows.
pub fn raise_descriptor_limit(
    needed: Option<u64>,
    needed_for: &str,
) -> Result<DescriptorLimit, LimitError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitError::Get)?;
    let needed = needed.unwrap_or(hard);
    if soft >= needed {
        tracing::info!(soft, needed, "descriptor limit is enough for {needed_for}");
        return Ok(DescriptorLimit::Enough { soft });
    }
    let to = needed.min(hard);
    if to > soft {
        setrlimit(Resource::RLIMIT_NOFILE, to, hard).map_err(|source| LimitError::Set {
            from: soft,
            to,
            source,
        })?;
    }
    if to < needed {
        tracing::warn!(
            soft = to,
            hard,
            needed,
            "the descriptor limit is below what {needed_for} needs: at the limit, new connections wait until some close"
        );
        Ok(DescriptorLimit::Short { soft: to, needed })
    } else {
        tracing::info!(from = soft, to, "descriptor limit raised for {needed_for}");
        Ok(DescriptorLimit::Raised { from: soft, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_told_from_one_bad_connection() {
        use nix::errno::Errno;
        let error = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        for errno in [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM] {
            assert_eq!(classify(&error(errno)), Failure::Exhausted, "{errno}");
        }
        for errno in [Errno::ECONNABORTED, Errno::EPERM, Errno::EPROTO] {
            assert_eq!(classify(&error(errno)), Failure::OneConnection, "{errno}");
        }
        assert_eq!(classify(&error(Errno::EBADF)), Failure::Other);
        assert_eq!(classify(&io::Error::other("no errno")), Failure::Other);
    }

    #[tokio::test]
    async fn a_cap_closes_connections_past_it_and_others_are_served() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cap = Cap {
            total: 2,
            per_client: 2,
        };
        let counters = Arc::new(Counters::new());
        let how = Listener::new("test").cap(cap).events(counters.clone());
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, how, move |mut stream, _| {
            let mut release = release_rx.clone();
            async move {
                let _ = stream.write_all(b"hi").await;
                let _ = release.wait_for(|r| *r).await;
            }
        }));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).await.unwrap();
            held.push(s);
        }
        let before = counters.refused_at_cap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let _ = third.read_to_end(&mut buf).await;
        assert!(buf.is_empty(), "the third is closed without a greeting");
        assert!(counters.refused_at_cap() > before);
        release_tx.send(true).unwrap();
        drop(held);
        // Slots come back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 2];
            if s.read_exact(&mut buf).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
