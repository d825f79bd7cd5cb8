//! The corporate network behind the world for the VPN tests: a `corp` namespace linked to the
//! world namespace, running the other end of the tunnel with Debian's `wireguard-go` and `wg`
//! (this machine's kernel has no WireGuard), an HTTP origin on [`CORP_WEB`] and a resolver
//! (dnsmasq) on [`CORP_DNS`] for `*.corp.example`, both reachable only through the tunnel.
//! Used by the namespace test (`tests/vpn.rs`, userspace path) and the QEMU image test
//! (kernel path).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lab::topology::{Lab, Netns};

/// The corporate web server, behind the tunnel.
pub const CORP_WEB: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 80);
/// The corporate resolver, behind the tunnel: `intranet.corp.example` is [`CORP_WEB`].
pub const CORP_DNS: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 53);
/// The corp namespace's address on its link to the world: the WireGuard endpoint.
pub const CORP_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
/// The card's address inside the tunnel.
pub const CARD_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 20, 255, 2);

/// The `corp` namespace: wireguard-go's interface, the origin and the resolver behind it.
#[derive(Debug)]
pub struct Corp {
    pub ns: Netns,
    /// wireguard-go's interface in `ns`.
    pub interface: String,
    _origin: lab::origin::Server,
    /// The corporate peer's public key (base64, as `wg` prints it).
    pub public_key: String,
    /// wireguard-go's process in `lab`.
    pub wireguard: u32,
}

impl Corp {
    /// Starts the corporate network linked to `world` (which forwards for it); files go in
    /// `dir`.
    pub fn start(lab: &mut Lab, world: &Netns, dir: &Path) -> anyhow::Result<Corp> {
        let ns = lab.namespace("corp")?;
        lab.link(
            world,
            "c0",
            &["10.250.0.1/30"],
            &ns,
            "c1",
            &["10.250.0.2/30"],
        )?;
        ns.route("default via 10.250.0.1")?;
        world.sysctl("net.ipv4.ip_forward", "1")?;
        let (wireguard, interface, key, public_key) = wireguard_go(lab, &ns, dir, "corp")?;
        ns.run_ok(
            "wg",
            &[
                "set",
                &interface,
                "private-key",
                &key,
                "listen-port",
                "51820",
            ],
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", lab.log_of(wireguard)))?;
        ns.run_ok("ip", &["addr", "add", "10.20.0.1/16", "dev", &interface])?;
        ns.run_ok("ip", &["link", "set", &interface, "up"])?;
        ns.run_ok("ip", &["link", "set", "lo", "up"])?;
        for address in [CORP_WEB, CORP_DNS] {
            ns.run_ok(
                "ip",
                &["addr", "add", &format!("{address}/32"), "dev", "lo"],
            )?;
        }
        let origin = lab::origin::http_origin(&ns, SocketAddr::new(CORP_WEB.into(), 80))?;
        let conf = dir.join("corp-dnsmasq.conf");
        std::fs::write(
            &conf,
            format!(
                "keep-in-foreground\nlog-facility=-\nlog-queries\nno-hosts\nno-resolv\npid-file=\n\
                 listen-address={CORP_DNS}\nbind-interfaces\naddress=/intranet.corp.example/{CORP_WEB}\n"
            ),
        )?;
        lab.spawn(
            &ns,
            "dnsmasq",
            &[&format!("--conf-file={}", conf.display())],
        )?;
        Ok(Corp {
            ns,
            interface,
            _origin: origin,
            public_key,
            wireguard,
        })
    }

    /// The card's `[vpn.corp]` for this peer, on `backend` (`userspace`, `kernel`, `auto`).
    pub fn card_config(&self, backend: &str) -> String {
        format!(
            "[vpn.corp]\npeer_public_key = \"{}\"\nendpoint = \"{CORP_ENDPOINT}:51820\"\n\
             address = \"{CARD_TUNNEL}\"\nnetworks = [\"10.20.0.0/16\"]\nnames = [\"*.corp.example\"]\n\
             resolver = \"{CORP_DNS}:53\"\nidle_lock_secs = 600\nbackend = \"{backend}\"\n",
            self.public_key
        )
    }

    /// A second client of the corporate peer for side-by-side figures: `wireguard-go` in
    /// its own namespace `name` linked to `world` over `link` (a /30, its first address the
    /// world's), with `address` inside the tunnel and a route for the corporate networks.
    pub fn reference_client(
        &self,
        lab: &mut Lab,
        world: &Netns,
        dir: &Path,
        name: &str,
        link: [Ipv4Addr; 2],
        address: Ipv4Addr,
    ) -> anyhow::Result<Netns> {
        let ns = lab.namespace(name)?;
        lab.link(
            world,
            &format!("{name}0"),
            &[&format!("{}/30", link[0])],
            &ns,
            &format!("{name}1"),
            &[&format!("{}/30", link[1])],
        )?;
        ns.route(&format!("default via {}", link[0]))?;
        let (wireguard, interface, key, public_key) = wireguard_go(lab, &ns, dir, name)?;
        ns.run_ok(
            "wg",
            &[
                "set",
                &interface,
                "private-key",
                &key,
                "peer",
                &self.public_key,
                "endpoint",
                &format!("{CORP_ENDPOINT}:51820"),
                "allowed-ips",
                "10.20.0.0/16",
            ],
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", lab.log_of(wireguard)))?;
        ns.run_ok(
            "ip",
            &["addr", "add", &format!("{address}/32"), "dev", &interface],
        )?;
        ns.run_ok("ip", &["link", "set", &interface, "up"])?;
        ns.route(&format!("10.20.0.0/16 dev {interface}"))?;
        self.allow_peer(&public_key, address)?;
        Ok(ns)
    }

    /// Lets the peer with `public_key` (base64) in, from `address` inside the tunnel.
    pub fn allow_peer(&self, public_key: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        self.ns.run_ok(
            "wg",
            &[
                "set",
                &self.interface,
                "peer",
                public_key,
                "allowed-ips",
                &format!("{address}/32"),
            ],
        )?;
        Ok(())
    }
}

/// Starts `wireguard-go` in `ns` with a new key pair written in `dir`: its process, its
/// interface, the private key's file and the public key.
///
/// The interface name is unique on the machine, not only in `ns`: wireguard-go's control
/// socket (`/var/run/wireguard/NAME.sock`, what `wg` talks to) is not per namespace, so two
/// instances both called `wg0` would have `wg` configure the first one twice.
fn wireguard_go(
    lab: &mut Lab,
    ns: &Netns,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(u32, String, String, String)> {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let interface = format!(
        "wg{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    );
    let key_file = dir.join(format!("{name}.key"));
    let made = ns.sh(&format!(
        "umask 077; wg genkey > {0}; wg pubkey < {0}",
        key_file.display()
    ))?;
    anyhow::ensure!(made.status.success(), "wg genkey: {made:?}");
    let public_key = String::from_utf8(made.stdout)?.trim().to_owned();
    let wireguard = lab.spawn(ns, "wireguard-go", &["-f", &interface])?;
    for _ in 0..50 {
        if ns.run_ok("ip", &["link", "show", &interface]).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = key_file.to_str().expect("a UTF-8 path").to_owned();
    Ok((wireguard, interface, key, public_key))
}
