//! The daemons the appliance relies on and does not re-implement: dnsmasq (DHCP for the
//! protected computer, DNS forwarding for the card) and busybox `udhcpc` (the outside
//! address). The appliance writes their configuration, starts them, and restarts them if they
//! die.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;

use crate::config::Config;

/// dnsmasq's configuration for these interfaces.
pub fn dnsmasq_config(config: &Config, card_interface: &str) -> String {
    let inside = &config.inside;
    let run = config.paths.run_dir.display();
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(inside.prefix))
            .unwrap_or(0),
    );
    format!(
        "# Written by the cardwall appliance daemon; changes are overwritten.
keep-in-foreground
log-facility=-
no-hosts
pid-file=
# DNS: only for the card (the protected computer asks the card, which asks here).
resolv-file={run}/resolv.conf
interface={card_interface}
listen-address={card_address}
bind-dynamic
no-dhcp-interface={card_interface}
# DHCP: for the protected computer, whose router is the appliance and whose resolver is the card.
interface={inside_if}
dhcp-range={inside_if},{first},{last},{mask},{lease}
dhcp-option={inside_if},option:router,{address}
dhcp-option={inside_if},option:dns-server,{card_dns}
dhcp-authoritative
dhcp-leasefile={run}/dnsmasq.leases
",
        card_address = config.card.address,
        inside_if = inside.interface,
        first = inside.dhcp_first,
        last = inside.dhcp_last,
        lease = inside.dhcp_lease,
        address = inside.address,
        card_dns = config.card.inside_address,
    )
}

/// The script udhcpc runs on each DHCP event: it only reports, into `outside.lease`, and the
/// daemon applies the lease itself (over netlink), so nothing else touches the interface.
pub fn udhcpc_script(run_dir: &Path) -> String {
    let lease = run_dir.join("outside.lease");
    let lease = lease.display();
    format!(
        "#!/bin/sh
# Written by the cardwall appliance daemon.
case \"$1\" in
    bound|renew)
        printf 'ip=%s\\nmask=%s\\nrouter=%s\\ndns=%s\\n' \"$ip\" \"$mask\" \"$router\" \"$dns\" > {lease}.tmp
        mv {lease}.tmp {lease}
        ;;
    deconfig|leasefail|nak)
        rm -f {lease}
        ;;
esac
exit 0
"
    )
}

/// What the outside DHCP server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// Reads a lease file written by [`udhcpc_script`]; `None` if absent or unusable.
pub fn read_lease(path: &Path) -> Option<Lease> {
    let text = std::fs::read_to_string(path).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or("")
    };
    let address = field("ip").parse().ok()?;
    let prefix = match field("mask") {
        m if m.contains('.') => m
            .parse::<Ipv4Addr>()
            .ok()
            .map(|m| u32::from(m).count_ones() as u8)?,
        m => m.parse().ok()?,
    };
    let addresses = |text: &str| {
        text.split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect::<Vec<Ipv4Addr>>()
    };
    Some(Lease {
        address,
        prefix,
        router: addresses(field("router")).first().copied(),
        dns: addresses(field("dns")),
    })
}

/// The resolvers dnsmasq forwards the card's queries to.
pub fn write_resolvers(run_dir: &Path, servers: &[Ipv4Addr]) -> std::io::Result<()> {
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    write_atomically(&run_dir.join("resolv.conf"), text.as_bytes())
}

/// Writes a file so that readers see the old or the new contents, never half of either.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs a program, and runs it again a second after it exits, until `stop` says so.
pub async fn supervise(
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let spawned = Command::new(&program)
            .args(&args)
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                tracing::info!(service = name, pid = child.id(), "started");
                tokio::select! {
                    status = child.wait() => {
                        tracing::warn!(service = name, status = ?status, "exited; restarting in 1 s");
                    }
                    _ = stop.changed() => {
                        let _ = child.kill().await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(service = name, program = %program.display(), error = %e, "cannot start; retrying in 1 s")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_serves_dhcp_inside_and_dns_to_the_card_only() {
        let text = dnsmasq_config(&Config::default(), "card0");
        assert!(
            text.contains("dhcp-range=lan0,192.168.77.100,192.168.77.200,255.255.255.0,12h"),
            "{text}"
        );
        assert!(
            text.contains("dhcp-option=lan0,option:dns-server,172.31.77.2"),
            "the card resolves for the inside"
        );
        assert!(text.contains("listen-address=172.31.77.1"));
        assert!(text.contains("no-dhcp-interface=card0"));
    }

    #[test]
    fn leases_parse_from_the_script_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outside.lease");
        std::fs::write(
            &path,
            "ip=10.200.0.57\nmask=24\nrouter=10.200.0.1 10.200.0.2\ndns=10.200.0.1 9.9.9.9\n",
        )
        .unwrap();
        assert_eq!(
            read_lease(&path),
            Some(Lease {
                address: "10.200.0.57".parse().unwrap(),
                prefix: 24,
                router: Some("10.200.0.1".parse().unwrap()),
                dns: vec!["10.200.0.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
            })
        );
        std::fs::write(&path, "ip=10.0.0.9\nmask=255.255.252.0\nrouter=\ndns=\n").unwrap();
        assert_eq!(read_lease(&path).unwrap().prefix, 22);
        std::fs::write(&path, "ip=\n").unwrap();
        assert_eq!(read_lease(&path), None);
        assert_eq!(read_lease(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_script_reports_and_clears_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, udhcpc_script(dir.path())).unwrap();
        let run = |event: &str| {
            std::process::Command::new("sh")
                .arg(&script)
                .arg(event)
                .env("ip", "10.1.2.3")
                .env("mask", "24")
                .env("router", "10.1.2.1")
                .env("dns", "10.1.2.1")
                .status()
                .unwrap()
        };
        assert!(run("bound").success());
        assert_eq!(
            read_lease(&dir.path().join("outside.lease"))
                .unwrap()
                .address,
            "10.1.2.3".parse::<Ipv4Addr>().unwrap()
        );
        assert!(run("deconfig").success());
        assert!(!dir.path().join("outside.lease").exists());
    }
}
