//! The proxies, one module per protocol: front ends over the [`Firewall`] core. Each reads
//! what its protocol says about a request, asks the core (which decides and records), and
//! passes the traffic on or refuses in its protocol's own terms.
//!
//! [`Firewall`]: crate::firewall::Firewall

mod aia;
pub mod dns;
pub mod http;
mod inspect;
pub mod pages;
pub mod splice;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::firewall::Firewall;

/// Accepts connections on `listener` for ever, handing each to `handle` on its own task:
/// the one accept loop ([`crate::accept::serve`]), which outlasts running out of descriptors.
pub(crate) async fn accept_each<F, Fut>(
    listener: TcpListener,
    firewall: Arc<Firewall>,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, Arc<Firewall>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ports = &firewall.config.ports;
    let name = match listener.local_addr() {
        Ok(addr) if addr.port() == ports.transparent_http => "transparent HTTP",
        Ok(addr) if addr.port() == ports.transparent_https => "transparent HTTPS",
        Ok(addr) if addr.port() == ports.transparent_tcp => "transparent TCP",
        Ok(addr) if addr.port() == ports.explicit_proxy => "explicit proxy",
        _ => "proxy",
    };
    match crate::accept::serve(listener, name, None, move |stream, peer| {
        handle(stream, peer, firewall.clone())
    })
    .await {}
}
