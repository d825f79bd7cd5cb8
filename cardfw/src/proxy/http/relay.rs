//! HTTP/1 messages on the wire, for both sides of the relay: a message head read within its
//! time limits, and a body passed on as it came (framing included) with an optional cap on
//! its payload. A body of known length moves socket to socket in the kernel ([`Pipe::relay`]).

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::splice::Pipe;
use crate::wire::http1::{self, ChunkedTracker, Framing, HeadError, ParseHead};

/// Bytes first read from a buffer that was empty; a head larger than this grows it.
const READ_CHUNK: usize = 4096;

/// A socket and the bytes read from it that are not used yet.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
}

/// Why no head was read.
pub(super) enum HeadRead {
    /// The peer closed (or reset) before sending a byte of it: the normal end of keep-alive.
    Closed,
    /// The head did not arrive in time; `partial` if some of it did.
    TimedOut {
        partial: bool,
    },
    TooLarge,
    Malformed(HeadError),
    /// The peer closed in the middle of the head.
    Cut,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub(super) async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads one message head of at most `max` bytes. Its first byte may take up to `idle`
    /// (a kept-alive connection waiting for its next request); from then on the whole head
    /// must arrive within `header_timeout`, however slowly it trickles in.
    pub(super) async fn read_head<T>(
        &mut self,
        parse: ParseHead<T>,
        max: usize,
        idle: Duration,
        header_timeout: Duration,
    ) -> Result<T, HeadRead> {
        if self.buf.is_empty() {
            match tokio::time::timeout(idle, self.stream.readable()).await {
                Err(_) => return Err(HeadRead::TimedOut { partial: false }),
                Ok(Err(_)) => return Err(HeadRead::Closed),
                Ok(Ok(())) => {}
            }
        }
        let deadline = Instant::now() + header_timeout;
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(Some((head, len))) => {
                        self.buf.advance(len);
                        return Ok(head);
                    }
                    Ok(None) if self.buf.len() >= max => return Err(HeadRead::TooLarge),
                    Ok(None) => {}
                    Err(e) => return Err(HeadRead::Malformed(e)),
                }
            }
            let partial = !self.buf.is_empty();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err(HeadRead::TimedOut { partial }),
                Ok(Ok(0)) | Ok(Err(_)) if !partial => return Err(HeadRead::Closed),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadRead::Cut),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Gives the buffer's memory back while the connection waits for its next message.
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// Why moving a body stopped early.
pub(super) enum RelayError {
    Io(io::Error),
    Malformed(http1::ChunkError),
    /// More payload than a `max-body` rule allows.
    OverLimit,
}

/// Writes `head`, then passes one body from `from` to `to` as `framing` says, framing bytes
/// included. The first body bytes already buffered go out with the head in one write; the
/// rest of a body of known length moves through `pipe` without being copied here. `limit`
/// caps the payload; past it the relay stops with [`RelayError::OverLimit`].
pub(super) async fn relay_body(
    from: &mut Conn,
    to: &TcpStream,
    pipe: &mut Option<Pipe>,
    framing: Framing,
    limit: Option<u64>,
    mut head: Vec<u8>,
    idle: Duration,
) -> Result<u64, RelayError> {
    let limit = limit.unwrap_or(u64::MAX);
    let (total, buffered) = match framing {
        Framing::Empty => (0, 0),
        Framing::Length(n) => (n, n.min(from.buf.len() as u64)),
        Framing::UntilClose => (u64::MAX, from.buf.len() as u64),
        Framing::Chunked => return relay_chunked(from, to, limit, head, idle).await,
    };
    if buffered > limit {
        return Err(RelayError::OverLimit);
    }
    head.extend_from_slice(&from.buf[..buffered as usize]);
    from.buf.advance(buffered as usize);
    write_all(to, &head, idle).await?;
    let rest = total - buffered;
    if rest == 0 {
        return Ok(buffered);
    }
    let pipe = match pipe {
        Some(pipe) => pipe,
        None => pipe.insert(Pipe::new().map_err(RelayError::Io)?),
    };
    // One byte over the limit is enough to know the body is too large.
    let allowed = rest.min((limit - buffered).saturating_add(1));
    let moved = pipe
        .relay(&from.stream, to, allowed, idle)
        .await
        .map_err(RelayError::Io)?;
    if buffered + moved > limit {
        return Err(RelayError::OverLimit);
    }
    if framing != Framing::UntilClose && moved < rest {
        return Err(RelayError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buffered + moved)
}

/// A chunked body, passed on as it comes through a [`ChunkedTracker`] that finds its end.
async fn relay_chunked(
    from: &mut Conn,
    to: &TcpStream,
    limit: u64,
    mut pending: Vec<u8>,
    idle: Duration,
) -> Result<u64, RelayError> {
    let mut tracker = ChunkedTracker::default();
    let mut payload = 0u64;
    loop {
        if !from.buf.is_empty() {
            let advance = tracker.advance(&from.buf).map_err(RelayError::Malformed)?;
            payload += advance.payload;
            if payload > limit {
                return Err(RelayError::OverLimit);
            }
            pending.extend_from_slice(&from.buf[..advance.consumed]);
            from.buf.advance(advance.consumed);
        }
        if !pending.is_empty() {
            write_all(to, &pending, idle).await?;
            pending.clear();
        }
        if tracker.is_done() {
            return Ok(payload);
        }
        match tokio::time::timeout(idle, from.read_more()).await {
            Ok(Ok(0)) => return Err(RelayError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RelayError::Io(e)),
            Err(_) => return Err(RelayError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
}

/// `write_all` on a shared reference (the relay borrows both sockets), bounded by `idle`.
pub(super) async fn write_all(
    to: &TcpStream,
    mut bytes: &[u8],
    idle: Duration,
) -> Result<(), RelayError> {
    while !bytes.is_empty() {
        let wait = async {
            loop {
                to.writable().await?;
                match to.try_write(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(idle, wait).await {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(RelayError::Io(e)),
            Err(_) => return Err(RelayError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
    Ok(())
}
