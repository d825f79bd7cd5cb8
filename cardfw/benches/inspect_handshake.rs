//! The card's side of an inspected TLS 1.3 handshake, for issue 14's target "the leaf cache
//! keeps a repeat handshake to the same name under 1 ms of card CPU".
//! Run: `cargo bench -p cardfw --bench inspect_handshake`.
//!
//! Both ends run in this thread over in-memory buffers (no sockets, no scheduler), so a figure
//! is the CPU of both sides: client and card. `cached` handshakes to one name (the leaf comes
//! from the cache, no signing of a certificate); `minted` asks for a new name every time (a
//! new leaf key and a certificate signature on the card first).

use std::hint::black_box;
use std::sync::Arc;

use cardfw::inspect::{CardCa, LeafCache, leaf};
use cardfw::store::{PinCost, Store};
use criterion::Criterion;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

/// Sends everything `from` has to say to `to`, and lets `to` process it.
fn deliver(from: &mut Connection, to: &mut Connection, buffer: &mut Vec<u8>) {
    buffer.clear();
    while from.wants_write() {
        from.write_tls(buffer).unwrap();
    }
    let mut records = &buffer[..];
    while !records.is_empty() {
        to.read_tls(&mut records).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn complete_handshake(client: &mut Connection, server: &mut Connection) {
    let mut buffer = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        deliver(client, server, &mut buffer);
        deliver(server, client, &mut buffer);
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_or_create(dir.path(), "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let ca = CardCa::load_or_create(&store).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let leaves = Arc::new(LeafCache::new(Arc::new(ca), leaf::CACHE_CAPACITY));
    let server_config = leaves
        .server_config(None, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
        .unwrap();
    let handshake = |name: String| {
        let name = ServerName::try_from(name).unwrap();
        let mut client =
            Connection::from(ClientConnection::new(client_config.clone(), name).unwrap());
        let mut server = Connection::from(ServerConnection::new(server_config.clone()).unwrap());
        complete_handshake(&mut client, &mut server);
        black_box((client, server));
    };

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("inspect_tls13_handshake");
    group.bench_function("cached", |b| b.iter(|| handshake("a.example".into())));
    let before = leaves.minted();
    let mut next = 0u64;
    group.bench_function("minted", |b| {
        b.iter(|| {
            next += 1;
            handshake(format!("n{next}.example"))
        })
    });
    group.finish();
    assert!(
        leaves.minted() - before >= next,
        "every `minted` name signed a leaf"
    );
    criterion.final_summary();
}
