//! The one accept loop every cardfw listener runs (the proxies, DNS over TCP, the status
//! endpoint, the card's web page), and the descriptor budget it relies on.
//!
//! A listener ending is not a firewall ending: [`serve`] never returns. When the process is
//! out of file descriptors (`EMFILE`, `ENFILE`) or kernel memory (`ENOBUFS`, `ENOMEM`), accept
//! keeps failing while the listener stays readable, so the loop backs off (sleeping a little
//! longer each time, up to [`MAX_BACKOFF`]) instead of spinning, warns once per burst, counts
//! every failure in [`backoffs`], and accepts again as soon as descriptors come back. Errors
//! that concern one connection only (the peer reset it before it was accepted) are skipped.
//!
//! A listener may have its own connection cap ([`Cap`]): past it a connection is accepted and
//! closed at once, so a client that holds connections open cannot fill the kernel's backlog
//! and leave others waiting unanswered.
//!
//! [`raise_descriptor_limit`] runs once at start: it lifts the soft `RLIMIT_NOFILE` towards
//! what `limits.max_connections` needs ([`descriptors_needed`]), so the connection caps, which
//! refuse cleanly, are reached before the descriptor limit, which refuses everyone.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Limits;
use crate::firewall::Slots;

/// First pause after an accept failed for lack of resources; doubled on each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause: how late a listener may notice that descriptors came back.
pub const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// Accept failures for lack of descriptors or memory since start, every listener together.
/// Process-wide because the resource is: a descriptor limit is the process's, not a listener's.
static BACKOFFS: AtomicU64 = AtomicU64::new(0);
/// Connections accepted and closed at once because their listener's [`Cap`] was full.
static REFUSED_AT_CAP: AtomicU64 = AtomicU64::new(0);

/// Accept failures for lack of descriptors or memory since start (the status endpoint shows it).
pub fn backoffs() -> u64 {
    BACKOFFS.load(Ordering::Relaxed)
}

/// Connections refused by a listener's own cap since start.
pub fn refused_at_cap() -> u64 {
    REFUSED_AT_CAP.load(Ordering::Relaxed)
}

/// A listener's own connection cap: this many at once, all clients together, and this many
/// per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub total: usize,
    pub per_client: usize,
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
/// (within `cap`, when there is one). `name` says which listener in the logs.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    cap: Option<Cap>,
    mut handle: F,
) -> Infallible
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
                        tokio::spawn(async move {
                            // Dropping `connection` unpolled drops the stream: closed at once.
                            let Ok(_slot) = slots.acquire(peer.ip()) else {
                                REFUSED_AT_CAP.fetch_add(1, Ordering::Relaxed);
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
                    BACKOFFS.fetch_add(1, Ordering::Relaxed);
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

/// Descriptors one proxied connection may hold: the client's socket, the upstream socket, and
/// a pipe (two descriptors) each way while bytes are spliced.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 6;
/// Descriptors beyond the connections: listeners, the runtime, the store's files, DNS over UDP
/// queries in flight (each with its upstream socket), the web page's and status endpoint's
/// connections, and `nft`/`ip` children at start.
pub const DESCRIPTOR_MARGIN: u64 = 512;

/// The descriptors `limits` needs at most.
pub fn descriptors_needed(limits: &Limits) -> u64 {
    (limits.max_connections as u64)
        .saturating_mul(DESCRIPTORS_PER_CONNECTION)
        .saturating_add(DESCRIPTOR_MARGIN)
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

/// Raises the soft `RLIMIT_NOFILE` to what `limits` needs, as far as the hard limit allows,
/// and logs what it did.
pub fn raise_descriptor_limit(limits: &Limits) -> Result<DescriptorLimit, LimitError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = descriptors_needed(limits);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitError::Get)?;
    if soft >= needed {
        tracing::info!(
            soft,
            needed,
            "descriptor limit is enough for the connection caps"
        );
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
            max_connections = limits.max_connections,
            "the descriptor limit is below what limits.max_connections needs: at the limit, new connections wait until some close"
        );
        Ok(DescriptorLimit::Short { soft: to, needed })
    } else {
        tracing::info!(
            from = soft,
            to,
            "descriptor limit raised for the connection caps"
        );
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

    #[test]
    fn the_budget_follows_the_connection_cap() {
        let limits = Limits {
            max_connections: 100,
            ..Limits::default()
        };
        assert_eq!(descriptors_needed(&limits), 100 * 6 + 512);
        assert_eq!(
            descriptors_needed(&Limits::default()),
            1024 * 6 + DESCRIPTOR_MARGIN
        );
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
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, "test", Some(cap), move |mut stream, _| {
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
        let before = refused_at_cap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let _ = third.read_to_end(&mut buf).await;
        assert!(buf.is_empty(), "the third is closed without a greeting");
        assert!(refused_at_cap() > before);
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
