//! Plain TCP on the other intercepted ports: decided on destination address and port, then
//! spliced from the card's outside address, or closed at once.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::{splice, upstream};
use crate::firewall::{Ask, Firewall, canonical};

/// Serves intercepted TCP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, firewall: Arc<Firewall>) -> std::io::Result<()> {
    super::accept_each(listener, firewall, connection).await
}

async fn connection(client: TcpStream, peer: SocketAddr, firewall: Arc<Firewall>) {
    let Some(_slot) = firewall.admit(peer) else {
        refuse(client);
        return;
    };
    let Ok(dst) = client.local_addr() else { return };
    let dst = SocketAddr::new(canonical(dst.ip()), dst.port());
    let target = dst.to_string();
    let ask = Ask::tcp(peer.ip(), &target, dst);
    if !firewall.decide(&firewall.rules(), &ask).allows() {
        refuse(client);
        return;
    }
    let upstream = match upstream::connect(&firewall, dst).await {
        Ok(stream) => stream,
        Err(e) => {
            upstream::count_failure(&firewall, peer, &target, &e);
            refuse(client);
            return;
        }
    };
    splice::splice(&client, &upstream, firewall.config.limits.idle_timeout()).await;
}

/// Closes with a reset, so the client's connect or first read fails at once instead of
/// seeing a clean end of stream it might take for an empty answer.
fn refuse(client: TcpStream) {
    let _ = client.set_zero_linger();
}
