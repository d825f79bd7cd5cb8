//! The proxies, one module per protocol. Each takes its listener and the shared [`Card`],
//! and decides every connection with `card.policy.current().rules.decide(..)`.
//!
//! [`Card`]: crate::card::Card

pub mod destination;
pub mod dns;
pub mod http;
pub mod pages;
pub mod splice;
pub mod tcp;
pub mod tls;
pub mod upstream;

/// Accepts connections on `listener` until the task is dropped, handing each to `handle` on
/// its own task. An accept error (out of file descriptors, say) refuses that one connection
/// and the loop goes on after a short pause, rather than ending the listener.
pub(crate) async fn accept_each<F, Fut>(
    listener: tokio::net::TcpListener,
    card: std::sync::Arc<crate::card::Card>,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, std::sync::Arc<crate::card::Card>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer, card.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
