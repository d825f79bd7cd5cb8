//! The card's side of the serving layer's accept loop ([`serve::accept`]): what it counts
//! (back-offs and refusals at a listener's cap, shown on the status document) and the
//! descriptor budget `limits.max_connections` needs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use tokio::net::{TcpListener, TcpStream};

pub use serve::accept::{Cap, DescriptorLimit, LimitError};

use crate::config::Limits;

/// Accept failures and refusals at a cap since start, every listener together. Process-wide
/// because the resource is: a descriptor limit is the process's, not a listener's.
static COUNTERS: LazyLock<Arc<serve::accept::Counters>> = LazyLock::new(Default::default);

/// Accept failures for lack of descriptors or memory since start (the status endpoint shows it).
pub fn backoffs() -> u64 {
    COUNTERS.backoffs()
}

/// Connections refused by a listener's own cap since start.
pub fn refused_at_cap() -> u64 {
    COUNTERS.refused_at_cap()
}

/// Accepts connections on `listener` for ever, handing each to `handle` on its own task
/// (within `cap`, when there is one), counted for the status document. `name` says which
/// listener in the logs.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    cap: Option<Cap>,
    handle: F,
) -> Infallible
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve::accept::serve(listener, counted(name, cap), handle).await
}

/// How a card listener is run: counted for the status document.
pub fn counted(name: &'static str, cap: Option<Cap>) -> serve::accept::Listener {
    let listener = serve::accept::Listener::new(name).events(COUNTERS.clone());
    match cap {
        Some(cap) => listener.cap(cap),
        None => listener,
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

/// Raises the soft `RLIMIT_NOFILE` to what `limits` needs, as far as the hard limit allows,
/// and logs what it did.
pub fn raise_descriptor_limit(limits: &Limits) -> Result<DescriptorLimit, LimitError> {
    serve::accept::raise_descriptor_limit(
        Some(descriptors_needed(limits)),
        "limits.max_connections",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
