//! Network-namespace topologies: the one library behind every end-to-end test and `./x lab`.
//!
//! A [`Lab`] creates namespaces, veth links between them, addresses and routes, and starts
//! processes inside namespaces. It owns everything it creates: dropping it (also while a test
//! panics) stops the processes and deletes the links and namespaces.
//!
//! Names never clash between labs that run at the same time, in one process or in many: every
//! namespace name starts with `cw-<tag>-<pid>-<counter>-`. Interfaces are created directly
//! inside the lab's namespaces (never in the caller's namespace), so their names only have to be
//! unique within one namespace and fit the kernel's 15-byte limit.
//!
//! Building topologies shells out to `ip` (iproute2): this is test and lab tooling, where a
//! failed command with its stderr is the clearest possible error. The appliance daemon itself
//! talks rtnetlink.
//!
//! Code that must run *inside* a namespace without a separate process (in-process test servers,
//! clients) uses [`Netns::enter`]: a new thread that joins the namespace first; every socket it
//! (or a runtime it builds) creates lives in that namespace.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Where `ip netns add` puts the namespace files.
const NETNS_DIR: &str = "/run/netns";
/// Linux limit for interface names (IFNAMSIZ minus the terminating NUL).
const MAX_INTERFACE_NAME: usize = 15;
/// Tags are cut to this length so namespace names stay readable in `ip netns list`.
const MAX_TAG: usize = 8;
/// Time a process gets between SIGTERM and SIGKILL when a lab stops it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Labs created so far by this process: the counter in the name prefix.
static LABS_CREATED: AtomicU32 = AtomicU32::new(0);

/// What went wrong while building or tearing down a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A command could not be started at all (typically: the program is not installed).
    #[error("cannot run `{command}`: {source}")]
    Launch {
        /// The command line, as it would be typed.
        command: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// A name or address given to the lab is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of name (`lab tag`, `namespace name`, `interface name`, ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A file operation of the lab itself failed (log directory, log file, sysctl file).
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A thread that was to run inside a namespace could not join it or failed there.
    #[error("in namespace {namespace}: {message}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What went wrong.
        message: String,
    },
    /// `Lab::stop` or `Lab::log_path` was given a pid the lab did not start.
    #[error("process {0} was not started by this lab")]
    UnknownProcess(u32),
    /// Waiting for something in the lab took too long.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
    },
}

/// Result of topology operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A set of namespaces, links and processes that is removed as a whole when dropped.
///
/// Drop order: processes (SIGTERM to their process group, SIGKILL after 2 s), then links, then
/// namespaces, then the log directory. The log directory is kept, and its path printed, when the
/// lab is dropped during a panic, so a failing test leaves its logs behind.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<Netns>,
    links: Vec<(Netns, String)>,
    processes: Vec<Process>,
}

#[derive(Debug)]
struct Process {
    child: Child,
    command: String,
    log: PathBuf,
}

impl Lab {
    /// Creates an empty lab. `tag` (ASCII letters and digits; cut to 8 characters) names it in
    /// `ip netns list` and in its log directory.
    pub fn new(tag: &str) -> Result<Lab> {
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::InvalidName {
                what: "lab tag",
                value: tag.to_owned(),
                reason: "use ASCII letters and digits only",
            });
        }
        let tag: String = tag.chars().take(MAX_TAG).collect();
        let counter = LABS_CREATED.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("cw-{tag}-{}-{counter}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cardwall-lab-{}", &prefix[3..]));
        // A directory left by an earlier process with the same pid is stale: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "creating lab directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            links: Vec::new(),
            processes: Vec::new(),
        })
    }

    /// The prefix of every namespace name in this lab (`cw-<tag>-<pid>-<counter>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's own directory: process logs, and a place for tests to put files (CA
    /// certificates, configs). Removed with the lab unless the lab is dropped during a panic.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the namespace `<prefix>-<name>` with its loopback interface up.
    pub fn namespace(&mut self, name: &str) -> Result<Netns> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidName {
                what: "namespace name",
                value: name.to_owned(),
                reason: "use ASCII letters, digits, '-' and '_' only",
            });
        }
        let netns = Netns::new(format!("{}-{name}", self.prefix));
        if self.namespaces.iter().any(|n| n.name == netns.name) {
            return Err(Error::InvalidName {
                what: "namespace name",
                value: name.to_owned(),
                reason: "this lab already has a namespace with that name",
            });
        }
        ip(&["netns", "add", &netns.name])?;
        // Recorded before the next command, so a failure below still removes the namespace.
        self.namespaces.push(netns.clone());
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Connects two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b`, each with the
    /// given addresses (CIDR, e.g. `"10.1.0.1/24"` or `"fd00::1/64"`), both ends up.
    ///
    /// IPv6 addresses are added with `nodad`, so they are usable at once.
    pub fn link(
        &mut self,
        a: &Netns,
        a_if: &str,
        a_addrs: &[&str],
        b: &Netns,
        b_if: &str,
        b_addrs: &[&str],
    ) -> Result<()> {
        check_interface_name(a_if)?;
        check_interface_name(b_if)?;
        for address in a_addrs.iter().chain(b_addrs) {
            check_cidr(address)?;
        }
        // Created inside `a` with its peer directly in `b`: nothing ever appears in the caller's
        // namespace, so concurrent labs cannot collide on interface names.
        ip(&[
            "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ])?;
        self.links.push((a.clone(), a_if.to_owned()));
        for (netns, interface, addresses) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
            for address in addresses {
                let mut args = vec!["-n", &netns.name, "addr", "add", address, "dev", interface];
                if address.contains(':') {
                    args.push("nodad");
                }
                ip(&args)?;
            }
            ip(&["-n", &netns.name, "link", "set", interface, "up"])?;
        }
        Ok(())
    }

    /// Starts `ip netns exec <ns> program args...` in its own process group, with stdout and
    /// stderr going to a log file in [`Lab::dir`] (see [`Lab::log_of`]). Returns the pid, which
    /// is the program's own pid (`ip netns exec` execs it). The process is stopped when the
    /// lab is dropped, or by [`Lab::stop`].
    pub fn spawn(&mut self, ns: &Netns, program: impl AsRef<Path>, args: &[&str]) -> Result<u32> {
        let program = program.as_ref();
        let base = program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned();
        let log = self.dir.join(format!(
            "{}-{}-{base}.log",
            self.processes.len(),
            ns.short_name(&self.prefix)
        ));
        let file = File::create(&log).map_err(|source| Error::Io {
            what: "creating log file",
            path: log.clone(),
            source,
        })?;
        let stderr = file.try_clone().map_err(|source| Error::Io {
            what: "duplicating log file",
            path: log.clone(),
            source,
        })?;
        let mut command = ns.command(program.as_os_str(), args);
        let line = describe(&command);
        command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Launch {
            command: line.clone(),
            source,
        })?;
        let pid = child.id();
        self.processes.push(Process {
            child,
            command: line,
            log,
        });
        Ok(pid)
    }

    /// The log file of a process started by [`Lab::spawn`].
    pub fn log_path(&self, pid: u32) -> Option<&Path> {
        self.process(pid).map(|p| p.log.as_path())
    }

    /// The command line and log of a process started by [`Lab::spawn`], for assertion messages.
    pub fn log_of(&self, pid: u32) -> String {
        match self.process(pid) {
            Some(p) => match std::fs::read_to_string(&p.log) {
                Ok(text) => format!("--- {} (pid {pid}) ---\n{text}--- end ---", p.command),
                Err(e) => format!("--- {} (pid {pid}): log unreadable: {e}", p.command),
            },
            None => format!("(process {pid} was not started by this lab)"),
        }
    }

    /// Stops a process started by [`Lab::spawn`] (SIGTERM to its process group, SIGKILL after
    /// 2 s) and returns how it exited. Its log stays readable.
    pub fn stop(&mut self, pid: u32) -> Result<ExitStatus> {
        let process = self
            .processes
            .iter_mut()
            .find(|p| p.child.id() == pid)
            .ok_or(Error::UnknownProcess(pid))?;
        let status = stop_all(std::slice::from_mut(process))
            .pop()
            .flatten()
            .ok_or_else(|| Error::Timeout {
                what: format!("process {pid} to exit after SIGKILL"),
                after: STOP_GRACE,
            })?;
        Ok(status)
    }

    fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().find(|p| p.child.id() == pid)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Best effort all the way: a failure to remove one thing must not keep the rest.
        stop_all(&mut self.processes);
        for (netns, interface) in self.links.drain(..).rev() {
            let _ = ip_quiet(&["-n", &netns.name, "link", "del", interface.as_str()]);
        }
        for netns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip_quiet(&["netns", "del", &netns.name]) {
                eprintln!("lab cleanup: {e}");
            }
        }
        if thread::panicking() {
            eprintln!("lab {}: logs kept in {}", self.prefix, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends SIGTERM to every still-running process group, waits up to [`STOP_GRACE`] in total,
/// then SIGKILLs the rest. Returns each process's exit status (None if it could not be reaped).
fn stop_all(processes: &mut [Process]) -> Vec<Option<ExitStatus>> {
    let mut statuses: Vec<Option<ExitStatus>> = processes
        .iter_mut()
        .map(|p| p.child.try_wait().ok().flatten())
        .collect();
    for (process, status) in processes.iter().zip(&statuses) {
        if status.is_none() {
            let _ = killpg(process_group(&process.child), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while statuses.iter().any(Option::is_none) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        for (process, status) in processes.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = process.child.try_wait().ok().flatten();
            }
        }
    }
    for (process, status) in processes.iter_mut().zip(statuses.iter_mut()) {
        if status.is_none() {
            let _ = killpg(process_group(&process.child), Signal::SIGKILL);
            *status = process.child.wait().ok();
        }
    }
    statuses
}

/// The process group a spawned child leads (it was started with `process_group(0)`).
fn process_group(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// A named network namespace (`/run/netns/<name>`). A cheap handle: the [`Lab`] that created it
/// owns the namespace itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(name: String) -> Netns {
        let path = Path::new(NETNS_DIR).join(&name);
        Netns { name, path }
    }

    /// The full name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name without the lab prefix (for file names and messages).
    fn short_name<'a>(&'a self, prefix: &str) -> &'a str {
        self.name
            .strip_prefix(prefix)
            .map(|rest| rest.trim_start_matches('-'))
            .unwrap_or(&self.name)
    }

    /// Whether the namespace still exists (it is gone once its lab is dropped). Servers running
    /// inside it poll this to stop with the lab.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Runs `ip netns exec <name> program args...` and waits for it. A program that runs and
    /// fails is not an error here: look at the returned status (or use [`Netns::run_ok`]).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut command = self.command(OsStr::new(program), args);
        command.stdin(Stdio::null());
        command.output().map_err(|source| Error::Launch {
            command: describe(&command),
            source,
        })
    }

    /// Like [`Netns::run`], but a non-zero exit is an error naming the command and its
    /// stderr; returns stdout. A missing program shows up as `ip`'s "exec of ... failed".
    pub fn run_ok(&self, program: &str, args: &[&str]) -> Result<String> {
        let output = self.run(program, args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: describe(&self.command(OsStr::new(program), args)),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Runs `ip netns exec <name> sh -c script` and waits for it.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.run("sh", &["-c", script])
    }

    /// Runs `f` on a new thread that first joins this namespace; sockets created by `f` (or by a
    /// runtime it builds, whose threads inherit the namespace) live here. If the thread cannot
    /// join the namespace it panics with the reason, which `join()` reports.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let netns = self.clone();
        thread::Builder::new()
            .name(format!("netns {}", self.name))
            .spawn(move || {
                if let Err(e) = join_namespace(&netns) {
                    panic!("{e}");
                }
                f()
            })
            .expect("the OS refused to start a thread")
    }

    /// Sets a sysctl in this namespace, e.g. `("net.ipv4.ip_forward", "1")`. Keys may also be
    /// written with `/` (`net/ipv4/conf/eth0.100/forwarding`) when a part contains a dot.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let invalid = |reason| Error::InvalidName {
            what: "sysctl key",
            value: key.to_owned(),
            reason,
        };
        if key.is_empty()
            || key
                .split(['.', '/'])
                .any(|part| part.is_empty() || part == "..")
        {
            return Err(invalid("expected dotted parts like net.ipv4.ip_forward"));
        }
        let relative = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let path = Path::new("/proc/sys").join(relative);
        let value = value.to_owned();
        // /proc/sys/net shows the namespace of the thread that opens it: write from inside.
        let result = self
            .enter({
                let path = path.clone();
                move || std::fs::write(&path, value)
            })
            .join()
            .map_err(|panic| Error::Namespace {
                namespace: self.name.clone(),
                message: panic_message(&panic),
            })?;
        result.map_err(|source| Error::Io {
            what: "writing sysctl",
            path,
            source,
        })
    }

    /// Adds a route: `ip -n <name> route add <spec>`, e.g. `"default via 10.1.0.1"`.
    pub fn route(&self, spec: &str) -> Result<()> {
        let mut args = vec!["-n", self.name.as_str(), "route", "add"];
        args.extend(spec.split_whitespace());
        ip(&args).map(drop)
    }

    /// Waits until a TCP connection from this namespace to `addr` succeeds (a server started
    /// with [`Lab::spawn`] is ready), trying every 50 ms until `timeout`.
    pub fn wait_for_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let ready = self
            .enter(move || {
                let deadline = Instant::now() + timeout;
                loop {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return true;
                    }
                    if Instant::now() >= deadline {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
            .join()
            .map_err(|panic| Error::Namespace {
                namespace: self.name.clone(),
                message: panic_message(&panic),
            })?;
        if ready {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: format!("{addr} to accept connections in {}", self.name),
                after: timeout,
            })
        }
    }

    fn command(&self, program: &OsStr, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        command
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Moves the calling thread into `netns`. The one place the lab calls setns; nix's wrapper is
/// safe, and only this thread changes namespace (threads it starts later inherit it).
fn join_namespace(netns: &Netns) -> Result<()> {
    let file = File::open(&netns.path).map_err(|source| Error::Io {
        what: "opening namespace",
        path: netns.path.clone(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Namespace {
        namespace: netns.name.clone(),
        message: format!("setns failed: {errno}"),
    })
}

/// Text of a panic payload, for errors about threads that panicked.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "thread panicked".to_owned()
    }
}

fn check_interface_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        Some("interface names are 1 to 15 bytes")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        Some("interface names cannot contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what: "interface name",
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_cidr(address: &str) -> Result<()> {
    let valid = address.split_once('/').is_some_and(|(ip, len)| {
        match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(len)) => len <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(len)) => len <= 128,
            _ => false,
        }
    });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "address",
            value: address.to_owned(),
            reason: "expected CIDR like 10.1.0.1/24 or fd00::1/64",
        })
    }
}

/// Runs `ip args...`; a non-zero exit is an error with the command line and stderr.
fn ip(args: &[&str]) -> Result<Output> {
    let mut command = Command::new("ip");
    command.args(args).stdin(Stdio::null());
    let output = command.output().map_err(|source| Error::Launch {
        command: describe(&command),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: describe(&command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Like [`ip`], for cleanup: same error, no output kept.
fn ip_quiet(args: &[&str]) -> Result<()> {
    ip(args).map(drop)
}

/// A command line as a user would type it, for error messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_longer_than_15_bytes_are_refused() {
        assert!(check_interface_name("eth0").is_ok());
        assert!(check_interface_name("a23456789012345").is_ok());
        let error = check_interface_name("a234567890123456").unwrap_err();
        assert!(error.to_string().contains("1 to 15 bytes"), "{error}");
        assert!(check_interface_name("").is_err());
        assert!(check_interface_name("a/b").is_err());
        assert!(check_interface_name("a b").is_err());
    }

    #[test]
    fn addresses_must_be_cidr() {
        assert!(check_cidr("10.1.0.1/24").is_ok());
        assert!(check_cidr("fd00::1/64").is_ok());
        for bad in [
            "10.1.0.1",
            "10.1.0.1/33",
            "fd00::1/129",
            "host/24",
            "10.1.0.1/x",
        ] {
            assert!(check_cidr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn labs_get_distinct_prefixes_with_tag_pid_and_counter() {
        let a = Lab::new("unit").unwrap();
        let b = Lab::new("unit").unwrap();
        assert_ne!(a.prefix(), b.prefix());
        let pid = std::process::id().to_string();
        assert!(
            a.prefix().starts_with(&format!("cw-unit-{pid}-")),
            "{}",
            a.prefix()
        );
        assert!(a.dir().is_dir());
        let long = Lab::new("averyveryverylongtag").unwrap();
        assert!(
            long.prefix().starts_with("cw-averyver-"),
            "{}",
            long.prefix()
        );
        assert!(Lab::new("bad tag").is_err());
        assert!(Lab::new("").is_err());
    }

    #[test]
    fn dropping_a_lab_removes_its_directory() {
        let lab = Lab::new("unit").unwrap();
        let dir = lab.dir().to_owned();
        drop(lab);
        assert!(!dir.exists());
    }

    #[test]
    fn short_names_drop_the_prefix() {
        let netns = Netns::new("cw-t-1-0-inside".to_owned());
        assert_eq!(netns.short_name("cw-t-1-0"), "inside");
        assert_eq!(netns.short_name("other"), "cw-t-1-0-inside");
    }
}
