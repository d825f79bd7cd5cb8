//! The whole system on one machine: the protected computer, the appliance, the card and the
//! outside world, each in its own network namespace, wired like the real thing. `./x lab`
//! (the `cardwall-lab` binary) runs it for people; the end-to-end tests start it the same way.
//!
//! ```text
//!  pc ──eth0/lan0── appliance ──wan0/w0── world (DHCP+DNS: dnsmasq; origins 203.0.113.10/.11)
//!  DHCP 192.168.77.x    │ card0
//!                       │ 172.31.77.1/29
//!                  usb0 │
//!                     card 172.31.77.2 + .3 (cardfw, ip_forward=0)
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::origin::{self, Server, TestCa};
use crate::topology::{Lab, Netns};

pub const ALLOWED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const BLOCKED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
pub const WORLD: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const APPLIANCE_INSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const CARD_INSIDE: Ipv4Addr = Ipv4Addr::new(172, 31, 77, 2);
pub const CARD_OUTSIDE: Ipv4Addr = Ipv4Addr::new(172, 31, 77, 3);

/// The demo rule set the lab's card runs.
pub const DEMO_RULES: &str = "\
# The lab's demo rules: try allowed.test and blocked.test from the protected computer.
no-blocked: deny any host blocked.test
no-doh:     deny any host @doh
no-admin:   deny http path /admin
no-video:   deny http content-type video/*
dns:        allow dns
web:        allow http
tls:        allow https host allowed.test,*.allowed.test
echo:       allow tcp dst 203.0.113.10 port 2222
default deny
";

/// How to start the lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the `cardfw` and `appliance` binaries are.
    pub bin_dir: PathBuf,
    /// A short tag for the namespace names.
    pub tag: String,
    pub rules: String,
    /// The card link is Peer I/O over PC/SC (a private `pcscd` and `vpcd` in the card
    /// namespace, a TAP at each end) instead of a veth pair standing for CDC-EEM.
    pub peer_io: bool,
}

/// A running lab; dropping it removes everything it created.
#[derive(Debug)]
pub struct SystemLab {
    // Drop order: servers and processes (in `lab`) before the namespaces (also in `lab`).
    servers: Vec<Server>,
    pub card_pid: Option<u32>,
    pub appliance_pid: Option<u32>,
    /// With [`Options::peer_io`]: the card's reader.
    pub pcscd: Option<crate::pcscd::Pcscd>,
    pub pc: Netns,
    pub appliance: Netns,
    pub card: Netns,
    pub world: Netns,
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub ca: TestCa,
    pub bin_dir: PathBuf,
    /// TOML appended to the card's `cardfw.toml` at its next start (tables such as `[vpn.x]`
    /// that a test adds); empty by default.
    pub card_extra_config: String,
    /// `/etc/netns/<pc>/`: the protected computer's resolv.conf, which `ip netns exec` shows it.
    pc_etc: PathBuf,
    pub lab: Lab,
}

impl SystemLab {
    pub fn start(options: &Options) -> Result<SystemLab> {
        let mut lab = Lab::new(&options.tag)?;
        let pc = lab.namespace("pc")?;
        let appliance = lab.namespace("appl")?;
        let card = lab.namespace("card")?;
        let world = lab.namespace("world")?;
        lab.link(&pc, "eth0", &[], &appliance, "lan0", &[])?;
        lab.link(
            &appliance,
            "wan0",
            &[],
            &world,
            "w0",
            &["10.200.0.1/24", "203.0.113.10/32", "203.0.113.11/32"],
        )?;
        let pcscd = if options.peer_io {
            // The appliance's end, TAP `card0`, is made by its daemon; the card's is made here
            // (as the card's own start-up would) so its addresses exist before cardfw binds.
            card.run_ok("ip", &["tuntap", "add", "dev", "usb0", "mode", "tap"])?;
            for address in ["172.31.77.2/29", "172.31.77.3/29"] {
                card.run_ok("ip", &["addr", "add", address, "dev", "usb0"])?;
            }
            card.run_ok("ip", &["link", "set", "usb0", "up"])?;
            Some(crate::pcscd::start(&mut lab, &card)?)
        } else {
            lab.link(
                &appliance,
                "card0",
                &[],
                &card,
                "usb0",
                &["172.31.77.2/29", "172.31.77.3/29"],
            )?;
            None
        };
        card.route("default via 172.31.77.1")?;
        card.sysctl("net.ipv4.ip_forward", "0")?;
        pc.sysctl("net.ipv6.conf.all.disable_ipv6", "0")?;

        let dir = lab.dir().to_path_buf();
        let ca = origin::test_ca();
        let ca_file = dir.join("ca.pem");
        ca.write_ca_pem(&ca_file)?;
        let servers = start_world(&mut lab, &world, "w0", &dir, &ca)?;

        let pc_etc = PathBuf::from("/etc/netns").join(pc.name());
        std::fs::create_dir_all(&pc_etc)?;
        std::fs::write(
            pc_etc.join("resolv.conf"),
            format!("nameserver {CARD_INSIDE}\n"),
        )?;

        let mut system = SystemLab {
            servers,
            card_pid: None,
            appliance_pid: None,
            pcscd,
            pc,
            appliance,
            card,
            world,
            dir,
            ca_file,
            ca,
            bin_dir: options.bin_dir.clone(),
            card_extra_config: String::new(),
            pc_etc,
            lab,
        };
        std::fs::write(system.dir.join("rules.txt"), &options.rules)?;
        system.start_card()?;
        system.start_appliance()?;
        system.wait_for(
            "the appliance to see the card",
            Duration::from_secs(15),
            |s| s.card_present(),
        )?;
        // The outside lease brings the resolvers the card's DNS goes through.
        system.wait_for("the outside DHCP lease", Duration::from_secs(15), |s| {
            s.appliance
                .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "wan0"])
                .is_ok_and(|a| a.contains("inet "))
        })?;
        system.pc_dhcp()?;
        Ok(system)
    }

    fn binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.exists() {
            bail!(
                "{} is missing: build it first (`cargo build --workspace --bins`)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Starts `cardfw` in the card namespace and waits for its status endpoint.
    pub fn start_card(&mut self) -> Result<()> {
        let config = self.dir.join("cardfw.toml");
        std::fs::write(
            &config,
            format!(
                "rules = \"{}\"\nstore = \"{}\"\ninside_address = \"{CARD_INSIDE}\"\noutside_address = \"{CARD_OUTSIDE}\"\nlink = \"usb0\"\n\
                 [ports]\ntcp = [2222]\n[dns]\nupstream = \"172.31.77.1:53\"\ntimeout_ms = 2000\n\
                 [inspect]\ntrusted_cas = \"{}\"\n{}{}",
                self.dir.join("rules.txt").display(),
                self.store_dir().display(),
                self.ca_file.display(),
                if self.pcscd.is_some() {
                    format!(
                        "[iso7816]\nvpcd = \"127.0.0.1:{}\"\npeer_io_tap = \"usb0\"\n",
                        crate::pcscd::VPCD_PORT
                    )
                } else {
                    String::new()
                },
                self.card_extra_config,
            ),
        )?;
        let binary = self.binary("cardfw")?;
        let pid = self.lab.spawn(
            &self.card,
            binary,
            &["--config", config.to_str().context("path")?],
        )?;
        self.card_pid = Some(pid);
        self.card
            .wait_for_tcp(
                SocketAddr::new(CARD_INSIDE.into(), 8081),
                Duration::from_secs(10),
            )
            .with_context(|| format!("cardfw did not start:\n{}", self.lab.log_of(pid)))?;
        Ok(())
    }

    /// The card's sealed store: created at the card's first start with the lab's rules as
    /// version 1, then changed on the card's web page like a real card's.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("card-store")
    }

    /// The card's status document, fetched as the appliance fetches it (from its card-link
    /// address; the card answers nobody else).
    pub fn card_status(&self) -> Result<serde_json::Value> {
        let text = self.appliance.run_ok(
            "curl",
            &[
                "-s",
                "--max-time",
                "3",
                &format!("http://{CARD_INSIDE}:8081/status"),
            ],
        )?;
        serde_json::from_str(&text).with_context(|| format!("the card's status: {text}"))
    }

    /// The card's recent decisions as (target, rule) pairs, oldest first.
    pub fn card_recent(&self) -> Result<Vec<(String, String)>> {
        let status = self.card_status()?;
        let recent = status["recent"]
            .as_array()
            .context("`recent` in the card status")?;
        Ok(recent
            .iter()
            .map(|d| {
                let field = |name: &str| d[name].as_str().unwrap_or_default().to_string();
                (field("target"), field("rule"))
            })
            .collect())
    }

    /// The card web page's certificate fingerprint (SHA-256), as `cardfw fingerprint` reads it
    /// from the card's store.
    pub fn card_page_fingerprint(&self) -> Option<String> {
        self.cardfw_says("fingerprint")
    }

    /// The card's TLS inspection CA certificate (PEM), as `cardfw inspection-ca` reads it from
    /// the card's store: what a browser behind the card trusts for inspected sites.
    pub fn card_inspection_ca(&self) -> Option<String> {
        self.cardfw_says("inspection-ca")
    }

    /// The one-time code that sets the card's first PIN, as `cardfw setup-code` reads it from
    /// the store (on a real card it is on the label); `None` once the card is set up.
    pub fn card_setup_code(&self) -> Option<String> {
        self.cardfw_says("setup-code")
    }

    /// What `cardfw --config <the lab's> <command>` prints, if it succeeds.
    fn cardfw_says(&self, command: &str) -> Option<String> {
        let output = std::process::Command::new(self.binary("cardfw").ok()?)
            .arg("--config")
            .arg(self.dir.join("cardfw.toml"))
            .arg(command)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Stops `cardfw` (SIGKILL when `hard`, as a crash would).
    pub fn stop_card(&mut self, hard: bool) -> Result<()> {
        let pid = self.card_pid.take();
        self.stop(pid, hard)
    }

    pub fn start_appliance(&mut self) -> Result<()> {
        let run_dir = self.dir.join("appliance-run");
        let config = self.dir.join("appliance.toml");
        std::fs::write(
            &config,
            format!(
                "[inside]\ninterface = \"lan0\"\n[outside]\ninterface = \"wan0\"\n[card]\ninterface = \"card0\"\n{}\
                 [paths]\nrun_dir = \"{}\"\n",
                if self.pcscd.is_some() {
                    format!("peer_io_reader = \"{}\"\n", crate::pcscd::READER)
                } else {
                    String::new()
                },
                run_dir.display()
            ),
        )?;
        let binary = self.binary("appliance")?;
        let binary = binary.to_str().context("path")?;
        let config = config.to_str().context("path")?;
        let pid = match &self.pcscd {
            // The daemon reaches the lab's own pcscd, not the system's.
            Some(pcscd) => self.lab.spawn(
                &self.appliance,
                "env",
                &[
                    &format!("PCSCLITE_CSOCK_NAME={}", pcscd.socket.display()),
                    binary,
                    "run",
                    "--config",
                    config,
                ],
            )?,
            None => self
                .lab
                .spawn(&self.appliance, binary, &["run", "--config", config])?,
        };
        self.appliance_pid = Some(pid);
        self.pc_reachable_status()?;
        Ok(())
    }

    /// Stops the appliance daemon (SIGKILL when `hard`: it gets no chance to clean up).
    pub fn stop_appliance(&mut self, hard: bool) -> Result<()> {
        let pid = self.appliance_pid.take();
        self.stop(pid, hard)
    }

    fn stop(&mut self, pid: Option<u32>, hard: bool) -> Result<()> {
        let Some(pid) = pid else { return Ok(()) };
        if hard {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.lab.stop(pid)?;
        Ok(())
    }

    fn pc_reachable_status(&self) -> Result<()> {
        self.appliance
            .wait_for_tcp(
                SocketAddr::new(APPLIANCE_INSIDE.into(), 80),
                Duration::from_secs(10),
            )
            .with_context(|| format!("the appliance did not start:\n{}", self.appliance_log()))
    }

    /// The protected computer asks for its address by DHCP, as a laptop would.
    fn pc_dhcp(&self) -> Result<()> {
        dhcp_client(&self.pc, "eth0", &self.dir)
            .with_context(|| format!("the appliance's log:\n{}", self.appliance_log()))
    }

    /// The protected computer's address (from DHCP).
    pub fn pc_address(&self) -> Option<Ipv4Addr> {
        let out = self
            .pc
            .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
            .ok()?;
        let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
        cidr.split('/').next()?.parse().ok()
    }

    /// The appliance's status page JSON, read from the protected computer's side.
    pub fn api_status(&self) -> Option<String> {
        let out = self
            .appliance
            .run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "2",
                    &format!("http://{APPLIANCE_INSIDE}/api/status"),
                ],
            )
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn card_present(&self) -> bool {
        self.api_status()
            .is_some_and(|s| s.contains("\"present\":true") || s.contains("\"present\": true"))
    }

    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&SystemLab) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        while !ready(self) {
            if started.elapsed() > timeout {
                bail!(
                    "timed out waiting for {what} after {timeout:?}\n{}",
                    self.appliance_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(started.elapsed())
    }

    pub fn appliance_log(&self) -> String {
        self.appliance_pid
            .map(|pid| self.lab.log_of(pid))
            .unwrap_or_default()
    }

    pub fn card_log(&self) -> String {
        self.card_pid
            .map(|pid| self.lab.log_of(pid))
            .unwrap_or_default()
    }

    /// What to try, printed by `cardwall-lab`.
    pub fn instructions(&self) -> String {
        let pc = self.pc.name();
        let ca = self.ca_file.display();
        format!(
            "The cardwall lab is running. The protected computer is namespace `{pc}` (address {addr} by DHCP).
Try, as root:
  ip netns exec {pc} curl http://allowed.test/                     # allowed: the origin answers
  ip netns exec {pc} curl http://blocked.test/                     # blocked: the card answers NXDOMAIN
  ip netns exec {pc} curl --resolve blocked.test:80:{BLOCKED} http://blocked.test/   # by address: the block page
  ip netns exec {pc} curl --cacert {ca} https://allowed.test/      # TLS allowed by its name
  ip netns exec {pc} curl --cacert {ca} --resolve blocked.test:443:{BLOCKED} https://blocked.test/   # TLS refused with an alert
  ip netns exec {pc} dig blocked.test                              # NXDOMAIN from the card
  ip netns exec {pc} curl http://{APPLIANCE_INSIDE}/               # the appliance status page
  ip netns exec {pc} curl http://{APPLIANCE_INSIDE}/api/status     # the same as JSON
The card's own web page (rules, PIN, recent decisions), from the protected computer:
  https://{CARD_INSIDE}/   certificate SHA-256 {fingerprint}
  ip netns exec {pc} chromium --no-sandbox https://{CARD_INSIDE}/   # any browser in the namespace browses through the card
  {first_pin}
The rules live in the card's sealed store ({store}), first from the lab's demo rules:
change them on the card's page and try the commands above again.
Pull the card: kill the cardfw process (pid {card_pid}) and watch traffic stop. Logs: {dir}
Ctrl-C stops the lab and removes everything it created.",
            addr = self.pc_address().map_or("?".to_string(), |a| a.to_string()),
            card_pid = self.card_pid.map_or("?".to_string(), |p| p.to_string()),
            store = self.store_dir().display(),
            fingerprint = self.card_page_fingerprint().unwrap_or_else(|| "?".into()),
            first_pin = match self.card_setup_code() {
                Some(code) => format!(
                    "First use: the page asks for the card's setup code {code} (a real card has it on its label; \
                     `cardctl setup-code` reads it too), then you choose the PIN and note the PUK it shows once."
                ),
                None => "The card is set up: log in with its PIN.".to_string(),
            },
            dir = self.dir.display(),
        )
    }

    /// Names the lab's servers answer, for tests.
    pub fn names() -> HashMap<&'static str, Ipv4Addr> {
        HashMap::from([("allowed.test", ALLOWED), ("blocked.test", BLOCKED)])
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }
}

impl Drop for SystemLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pc_etc);
    }
}

/// The directory of the running executable: where `cargo build` put its sibling binaries; or
/// `CARDWALL_BINARIES` when set (e.g. `target/release`, for benchmark figures).
pub fn sibling_binaries() -> PathBuf {
    // A benchmark runs the lab (a debug test) with release binaries of the devices.
    if let Some(dir) = std::env::var_os("CARDWALL_BINARIES") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Test binaries live one level down, in `deps/`.
    if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The `HTTPS` record (type 65) the world's DNS serves for `allowed.test`, as a site with
/// Encrypted Client Hello publishes it: priority 1, target `.`, `alpn=h2`, and `ech` holding
/// one ECH config (version 0xfe0d, X25519, AES-128-GCM) whose public name, the cover name, is
/// [`ECH_COVER_NAME`]. The card must hand it to the inside without `ech`.
pub const ECH_HTTPS_RR: &str = "00:01:00:00:01:00:03:02:68:32:00:05:00:47:00:45:fe:0d:00:41:07:00:20:00:20:\
    42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:42:\
    00:04:00:01:00:01:00:12:63:6f:76:65:72:2e:61:6c:6c:6f:77:65:64:2e:74:65:73:74:00:00";
/// The public name in [`ECH_HTTPS_RR`].
pub const ECH_COVER_NAME: &str = "cover.allowed.test";
/// The README of the git repository the world publishes.
pub const GIT_README: &str = "cloned through the card\n";

/// Makes `dir/files/repo.git`, a bare repository with one commit holding a README
/// ([`GIT_README`]), ready for git's "dumb" HTTP protocol (`update-server-info`). Returns
/// `dir/files`. Without git on the machine the folder stays empty.
fn publish_git_repository(dir: &Path) -> Result<PathBuf> {
    let files = dir.join("files");
    let work = dir.join("git-work");
    std::fs::create_dir_all(&files)?;
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("README"), GIT_README)?;
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args([
                "-c",
                "user.name=lab",
                "-c",
                "user.email=lab@example.test",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .output()
    };
    let (work_str, bare) = (work.to_str().context("path")?, files.join("repo.git"));
    let steps: [&[&str]; 5] = [
        &["init", "-q", work_str],
        &["-C", work_str, "add", "README"],
        &["-C", work_str, "commit", "-q", "-m", "first"],
        &[
            "clone",
            "-q",
            "--bare",
            work_str,
            bare.to_str().context("path")?,
        ],
        &["-C", bare.to_str().context("path")?, "update-server-info"],
    ];
    for step in steps {
        match git(step) {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!(
                "git {}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ),
            // No git here: the lab runs without the repository.
            Err(_) => break,
        }
    }
    Ok(files)
}

/// Starts the outside world in `world` (whose link `interface` holds [`WORLD`]/24, [`ALLOWED`]
/// and [`BLOCKED`]): HTTP and HTTPS origins on both addresses, a TCP echo on the allowed one,
/// and a real dnsmasq handing out DHCP leases (router and resolver [`WORLD`]) and answering
/// `allowed.test` / `blocked.test`, as a hotel network would. The processes belong to `lab`.
pub fn start_world(
    lab: &mut Lab,
    world: &Netns,
    interface: &str,
    dir: &Path,
    ca: &TestCa,
) -> Result<Vec<Server>> {
    let at = |ip: Ipv4Addr, port| SocketAddr::new(ip.into(), port);
    let servers = vec![
        origin::http_origin(world, at(ALLOWED, 80))?,
        origin::http_origin(world, at(BLOCKED, 80))?,
        origin::https_origin_with_files(
            world,
            at(ALLOWED, 443),
            ca,
            &["allowed.test"],
            Some(&publish_git_repository(dir)?),
        )?,
        origin::https_origin(world, at(BLOCKED, 443), ca, &["blocked.test"])?,
        origin::tcp_echo(world, at(ALLOWED, 2222))?,
    ];
    let world_conf = dir.join("world-dnsmasq.conf");
    std::fs::write(
        &world_conf,
        format!(
            "keep-in-foreground\nlog-facility=-\nno-hosts\nno-resolv\npid-file=\ninterface={interface}\nbind-interfaces\n\
             dhcp-range=10.200.0.50,10.200.0.60,255.255.255.0,1h\ndhcp-option=option:router,{WORLD}\n\
             dhcp-option=option:dns-server,{WORLD}\ndhcp-leasefile={}\n\
             address=/allowed.test/{ALLOWED}\naddress=/blocked.test/{BLOCKED}\naddress=/other.test/{BLOCKED}\n\
             address=/rebind.test/{APPLIANCE_INSIDE}\n\
             dns-rr=allowed.test,65,{ECH_HTTPS_RR}\ntxt-record=big.allowed.test,{big_txt}\n",
            dir.join("world.leases").display(),
            // Three 250-byte strings: an answer too large for 512-byte UDP.
            big_txt = ["a", "b", "c"]
                .map(|c| format!("\"{}\"", c.repeat(250)))
                .join(","),
        ),
    )?;
    lab.spawn(
        world,
        "dnsmasq",
        &[&format!("--conf-file={}", world_conf.display())],
    )?;
    Ok(servers)
}

/// Asks for an address on `interface` in `ns` by DHCP (busybox udhcpc, as a laptop would) and
/// applies it: address, default route. Fails if no lease comes within about 10 s.
pub fn dhcp_client(ns: &Netns, interface: &str, dir: &Path) -> Result<()> {
    let script = dir.join(format!("{}-udhcpc.script", ns.name()));
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  \
         ip route replace default via \"${router%% *}\" dev \"$interface\"\n;; esac\nexit 0\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = ns.run(
        "busybox",
        &[
            "udhcpc",
            "-i",
            interface,
            "-q",
            "-f",
            "-n",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            script.to_str().context("path")?,
        ],
    )?;
    if !out.status.success() {
        bail!(
            "{} got no DHCP lease on {interface}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
