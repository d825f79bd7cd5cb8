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

/// Accepts connections on `listener` for ever, handing each to `handle` on its own task:
/// the one accept loop ([`crate::accept::serve`]), which outlasts running out of descriptors.
pub(crate) async fn accept_each<F, Fut>(
    listener: tokio::net::TcpListener,
    card: std::sync::Arc<crate::card::Card>,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, std::sync::Arc<crate::card::Card>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let name = match listener.local_addr() {
        Ok(addr) if addr.port() == card.config.ports.transparent_http => "transparent HTTP",
        Ok(addr) if addr.port() == card.config.ports.transparent_https => "transparent HTTPS",
        Ok(addr) if addr.port() == card.config.ports.transparent_tcp => "transparent TCP",
        Ok(addr) if addr.port() == card.config.ports.explicit_proxy => "explicit proxy",
        _ => "proxy",
    };
    match crate::accept::serve(listener, name, None, move |stream, peer| {
        handle(stream, peer, card.clone())
    })
    .await {}
}
