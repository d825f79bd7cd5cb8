//! The card's rule store: the rule set, the PIN state and the audit log, each sealed
//! (ChaCha20-Poly1305) under a device key created at first start.
//!
//! Reading the rules needs nothing (the firewall must run). Every change needs an
//! [`AdminSession`], which only [`Store::login`] makes, and only for the right PIN.
//!
//! # Files in the data directory (0700, every file 0600)
//!
//! | file | content |
//! |---|---|
//! | `device.key` | 32 random bytes. A card without it is a new card: see [`Store::open_or_create`]. |
//! | `pin.sealed` | [`pin::PinRecord`]: before the first setup the setup code; after it Argon2id hashes of PIN and PUK; the retry counters |
//! | `rules.sealed` | the current rule set: version, saved-at, text |
//! | `rules.prev.sealed` | the version before it (for rollback, and used when the current one fails to verify) |
//! | `audit.sealed` | the last [`audit::CAPACITY`] audit entries |
//! | `inspect-ca.sealed` | the card's TLS inspection CA: its certificate and private key, one record so a re-key replaces both at once (see [`crate::inspect::ca`]) |
//! | `owner-cas.sealed` | the CAs the owner added on the card page for upstream servers, PEM (see [`crate::inspect::owner_cas`]) |
//! | `client-cert.sealed` | the user's client certificate chain and its private key, PEM; the key is read only to unlock it with the PIN (see [`crate::inspect::client_cert`]) |
//! | `managed-cas.sealed` | the CAs the installed policy bundle carries for upstream servers, PEM, as signed (see [`Store::install_bundle`]); absent when it carries none |
//! | `vpn-keys.sealed` | the card's WireGuard keys, one line per VPN: `NAME PUBLIC PRIVATE` (base64); made by the card, the private key read only to unlock the VPN with the PIN (see [`crate::vpn`]) |
//! | `managed.sealed` | present when enrolled with a policy server: the pinned CA, policy key, group, the card's certificate and key, the installed bundle version (see the `managed` front end) |
//! | `overlay.sealed` | a managed card's overlay: the rules approved for it alone, in force before the group's, and its version (see [`overlay`]) |
//! | `page-vpns.sealed` | the VPNs the owner added on the card page, JSON of [`proto::policy::ManagedVpns`] (the pushed VPNs' type); one atomic write per change (see [`crate::vpn::added`]) |
//! | `requests.sealed` | a managed card's access requests and their states (see [`requests`]) |
//! | `lists/` | the list files rule files name (`list NAME file F`): plain names only, see [`check_list_name`] |
//!
//! A new card has no PIN and no PUK, only a random setup code ([`Store::setup_code`]): the card
//! prints it on its console at every start until it is set up, and gives it over its reader
//! (physical presence); on real hardware it is also on the card's label. [`Store::setup`] takes
//! it and the owner's first PIN, makes a PUK and returns it: the PUK is shown that once and
//! kept only as a hash. (Earlier firmware wrote the PUK to `puk.txt`; it is deleted at open.)
//!
//! Every write is a temp file in the same directory, written, fsynced, renamed over the old
//! file, then the directory fsynced: a power cut leaves the old file or the new one. The store
//! assumes one process owns the directory; within it, changes are serialised by a mutex.
//!
//! The sealed format is [`sealed`]; each file's name is bound as associated data, so files
//! cannot be swapped between purposes.

pub mod audit;
mod enrolment;
pub mod overlay;
pub mod pin;
pub mod requests;
pub mod sealed;
pub mod tls;
mod vpn_keys;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

pub use audit::{Actor, AuditEntry, AuditEvent};
pub use enrolment::Enrolment;
pub use pin::{PinCost, format_setup_code};

/// The line the card writes to its console (standard error) at every start while it is not set
/// up, followed by the code grouped by four: `cardwall setup code: 1234-5678-9012`.
pub const SETUP_CODE_LOG: &str = "cardwall setup code: ";
use pin::{Hash, HashError, PinRecord, Secrets};
pub use sealed::WireError;

const KEY_FILE: &str = "device.key";
const PIN_FILE: &str = "pin.sealed";
const RULES_FILE: &str = "rules.sealed";
const PREVIOUS_RULES_FILE: &str = "rules.prev.sealed";
const AUDIT_FILE: &str = "audit.sealed";
/// The clear PUK file of earlier firmware: removed wherever it is found.
const LEGACY_PUK_FILE: &str = "puk.txt";
const MANAGED_FILE: &str = "managed.sealed";
const INSPECTION_CA_FILE: &str = "inspect-ca.sealed";
const OWNER_CAS_FILE: &str = "owner-cas.sealed";
const CLIENT_CERT_FILE: &str = "client-cert.sealed";
const MANAGED_CAS_FILE: &str = "managed-cas.sealed";
const VPN_KEYS_FILE: &str = "vpn-keys.sealed";
const REQUESTS_FILE: &str = "requests.sealed";
const OVERLAY_FILE: &str = "overlay.sealed";
const PAGE_VPNS_FILE: &str = "page-vpns.sealed";
const ALL_FILES: [&str; 15] = [
    KEY_FILE,
    PIN_FILE,
    RULES_FILE,
    PREVIOUS_RULES_FILE,
    AUDIT_FILE,
    LEGACY_PUK_FILE,
    MANAGED_FILE,
    INSPECTION_CA_FILE,
    OWNER_CAS_FILE,
    CLIENT_CERT_FILE,
    MANAGED_CAS_FILE,
    VPN_KEYS_FILE,
    REQUESTS_FILE,
    OVERLAY_FILE,
    PAGE_VPNS_FILE,
];
/// The folder list files live in, inside the store.
pub const LISTS_DIR: &str = "lists";
/// The largest list file read (a big public blocklist is a few MiB).
const MAX_LIST_FILE: u64 = 32 * 1024 * 1024;

/// Names the rules text in parse diagnostics.
const RULES_NAME: &str = "rules";

/// Set to a hook name, makes the process abort at that point; unset (always, outside the
/// crash tests) the hooks do nothing. They exist so tests can prove, with a real killed
/// process, that a try is spent even when the check never finishes: `after-pin-decrement`
/// (PIN counter durable, PIN not yet checked) and `after-puk-decrement`.
pub const CRASH_HOOK_ENV: &str = "CARDFW_STORE_CRASH_AT";

fn crash_hook(point: &str) {
    if std::env::var_os(CRASH_HOOK_ENV).is_some_and(|v| v == point) {
        std::process::abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong PIN, {tries_left} tries left")]
    WrongPin { tries_left: u8 },
    #[error("the PIN is blocked: unblock it with the PUK")]
    Blocked,
    #[error("wrong PUK, {tries_left} tries left")]
    WrongPuk { tries_left: u8 },
    #[error(
        "the PUK is blocked: only a factory reset (which wipes the rules) makes the card usable"
    )]
    PukBlocked,
    #[error("{0}")]
    BadPin(&'static str),
    #[error("{0}")]
    BadPuk(&'static str),
    #[error("the card is not set up yet: choose its first PIN with the setup code")]
    NotSetUp,
    #[error("the card is already set up")]
    AlreadySetUp,
    #[error("wrong setup code, {tries_left} tries left")]
    WrongSetupCode { tries_left: u8 },
    #[error(
        "the setup code was entered wrongly too often: a factory reset over the card's reader or console makes a new one"
    )]
    SetupBlocked,
    #[error("{file} failed to verify: it was changed, damaged, or sealed for another purpose")]
    Tampered { file: String },
    #[error("{file} is not a sealed store file: {error}")]
    Malformed { file: String, error: WireError },
    #[error("{file} verified but its content is not understood by this firmware")]
    Unreadable { file: String },
    /// The page's VPNs refused a change (a name kept already, too many).
    #[error("{0}")]
    PageVpn(String),
    #[error("{file} is missing")]
    Missing { file: String },
    #[error("the rules are managed by the policy server {server}: change them there")]
    Managed { server: String },
    #[error("the policy bundle cannot be installed: {0}")]
    Bundle(String),
    #[error("there is no previous rule set to roll back to")]
    NoPreviousVersion,
    #[error("the rule set was refused:\n{0}")]
    Rules(rules::Diagnostics),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("no randomness from the system: {0}")]
    Random(getrandom::Error),
    #[error("Argon2: {0}")]
    Argon2(argon2::Error),
}

impl From<HashError> for StoreError {
    fn from(error: HashError) -> StoreError {
        match error {
            HashError::Random(e) => StoreError::Random(e),
            HashError::Argon2(e) => StoreError::Argon2(e),
        }
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

/// Which file the rules came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesSource {
    Current,
    /// The current file failed to verify (or is missing); this is the version before it.
    PreviousFallback,
}

/// One version of the rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVersion {
    pub version: u64,
    pub saved_at: SystemTime,
    pub text: String,
    pub source: RulesSource,
}

impl RuleVersion {
    fn emit(&self) -> Vec<u8> {
        let secs = self
            .saved_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::with_capacity(16 + self.text.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&secs.to_be_bytes());
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    fn parse(bytes: &[u8], source: RulesSource) -> Option<RuleVersion> {
        let version = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let secs = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(RuleVersion {
            version,
            saved_at: UNIX_EPOCH + Duration::from_secs(secs),
            text: String::from_utf8(bytes[16..].to_vec()).ok()?,
            source,
        })
    }
}

/// What the login page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinState {
    pub tries_left: u8,
    pub blocked: bool,
    pub puk_tries_left: u8,
    pub puk_blocked: bool,
    /// A new card: no PIN yet, only the setup code.
    pub needs_setup: bool,
    pub setup_tries_left: u8,
}

/// Why a list file name is refused: a list file is a plain file name in the store's `lists/`
/// folder, never a path, a hidden file, or the name of one of the store's own files (so that
/// neither a rule file nor a policy bundle can make the card read or overwrite them).
pub fn check_list_name(name: &str) -> Result<(), &'static str> {
    const REFUSED: &str = "a list file is a plain file name in the card's list folder \
         (no `/`, no leading `.`, not one of the store's own files)";
    let reserved = ALL_FILES.contains(&name)
        || [tls::KEY_FILE, tls::CERT_FILE, LISTS_DIR].contains(&name)
        || name.ends_with(".sealed")
        || name.ends_with(".tmp")
        || name.ends_with(".key");
    if name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
        || reserved
    {
        return Err(REFUSED);
    }
    Ok(())
}

/// Reads list files from the store's `lists/` folder, by plain name only
/// ([`check_list_name`]), never following a symbolic link.
#[derive(Debug, Clone)]
pub struct ListDir(PathBuf);

impl rules::ListLoader for ListDir {
    fn load(&self, name: &str) -> io::Result<String> {
        check_list_name(name).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let path = self.0.join(name);
        if !fs::symlink_metadata(&path)?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut text = String::new();
        io::Read::read_to_string(
            &mut io::Read::take(File::open(&path)?, MAX_LIST_FILE),
            &mut text,
        )?;
        Ok(text)
    }
}

/// Diagnostics for a user who may not read the list files: what is wrong and where
/// (`file:line:col`), never the line itself or a word from it. A list file could be any file
/// the card can read, so echoing it would print it.
pub fn redact_list_diagnostics(
    rules_name: &str,
    diagnostics: rules::Diagnostics,
) -> rules::Diagnostics {
    use rules::ErrorKind;
    rules::Diagnostics(
        diagnostics
            .0
            .into_iter()
            .map(|mut d| {
                if d.file != rules_name {
                    d.message = match d.kind {
                        ErrorKind::BadHost => "not a host name or `*.name` pattern",
                        ErrorKind::UnexpectedToken => {
                            "one name per line (or a hosts-file line: address then names)"
                        }
                        ErrorKind::MissingValue => {
                            "a hosts-file line needs a name after the address"
                        }
                        _ => "this line is not understood",
                    }
                    .to_owned();
                    d.source_line.clear();
                }
                d
            })
            .collect(),
    )
}

struct DeviceKey(Zeroizing<[u8; sealed::KEY_LEN]>);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// The open store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Replaced only by a factory reset.
    key: std::sync::RwLock<DeviceKey>,
    cost: PinCost,
    /// The rule set of a new card, for a factory reset.
    initial_rules: String,
    /// Serialises read-modify-write of the PIN record, the rules and the audit log.
    lock: Mutex<()>,
}

impl Store {
    /// Opens the store in `dir`, or makes a new card there when it has no `device.key`: a new
    /// device key, a random setup code (no PIN, no PUK until [`Store::setup`]), and
    /// `initial_rules` as version 1.
    ///
    /// `cost` is the Argon2id cost of new PIN hashes: [`PinCost::PRODUCTION`] on the card; tests
    /// pass [`PinCost::INSECURE_FAST_FOR_TESTS`] so hundreds of logins stay fast.
    ///
    /// The key is written last, so a first start cut short is simply done again. A directory
    /// without `device.key` holds nothing readable, so nothing is lost by starting over.
    pub fn open_or_create(
        dir: &Path,
        initial_rules: &str,
        cost: PinCost,
    ) -> Result<Store, StoreError> {
        match read_key(dir) {
            Ok(key) => {
                let store = Store {
                    dir: dir.to_path_buf(),
                    key: std::sync::RwLock::new(key),
                    cost,
                    initial_rules: initial_rules.to_owned(),
                    lock: Mutex::new(()),
                };
                store.remove_stale_temp_files();
                store.upgrade()?;
                Ok(store)
            }
            Err(StoreError::Missing { .. }) => {
                rules::parse(RULES_NAME, initial_rules).map_err(StoreError::Rules)?;
                let store = Store {
                    dir: dir.to_path_buf(),
                    key: std::sync::RwLock::new(DeviceKey(Zeroizing::new([0; sealed::KEY_LEN]))),
                    cost,
                    initial_rules: initial_rules.to_owned(),
                    lock: Mutex::new(()),
                };
                store.initialise(AuditEvent::Created)?;
                Ok(store)
            }
            Err(error) => Err(error),
        }
    }

    /// The setup code of the card in `dir` while it is not set up, read without changing
    /// anything there: for another process than the card's own (a lab, a test) that has the
    /// right to read the store's files (it reads `device.key`). The card's console prints the
    /// same code at start ([`SETUP_CODE_LOG`]).
    pub fn read_setup_code(dir: &Path) -> Result<Option<Zeroizing<String>>, StoreError> {
        let store = Store {
            dir: dir.to_path_buf(),
            key: std::sync::RwLock::new(read_key(dir)?),
            cost: PinCost::PRODUCTION,
            initial_rules: String::new(),
            lock: Mutex::new(()),
        };
        store.setup_code()
    }

    /// Makes a new card in the directory: a new key, the setup code, the first rules. Every
    /// file of the old card is removed first, the key before the rest.
    fn initialise(&self, event: AuditEvent) -> Result<(), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error(format!("creating {}", self.dir.display())))?;
        for name in ALL_FILES {
            match fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(format!("wiping {name}"))(e)),
            }
        }
        match fs::remove_dir_all(self.lists_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("wiping {LISTS_DIR}"))(e)),
        }
        self.sync_dir()?;
        self.remove_stale_temp_files();
        let mut key = Zeroizing::new([0u8; sealed::KEY_LEN]);
        getrandom::fill(&mut key[..]).map_err(StoreError::Random)?;
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = DeviceKey(key);
        let code = pin::generate_setup_code().map_err(StoreError::Random)?;
        self.write_pin_record(&PinRecord::new_card(code))?;
        self.write_rules_file(
            RULES_FILE,
            &RuleVersion {
                version: 1,
                saved_at: SystemTime::now(),
                text: self.initial_rules.clone(),
                source: RulesSource::Current,
            },
        )?;
        self.write_sealed(AUDIT_FILE, &audit::emit(&[AuditEntry::now(event)]))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(self.lists_dir())
            .map_err(io_error(format!("creating {LISTS_DIR}")))?;
        let key = self.key.read().unwrap_or_else(|e| e.into_inner());
        self.write_durably(KEY_FILE, &key.0[..])
    }

    /// What earlier firmware left: the PUK in clear in `puk.txt` (deleted), and a record
    /// still holding the default PIN (the card is set up again from a new setup code).
    fn upgrade(&self) -> Result<(), StoreError> {
        match fs::remove_file(self.dir.join(LEGACY_PUK_FILE)) {
            Ok(()) => self.sync_dir()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("removing {LEGACY_PUK_FILE}"))(e)),
        }
        let bytes = self.read_sealed(PIN_FILE)?;
        if PinRecord::parse(&bytes) == Some(pin::Parsed::LegacyDefaultPin) {
            let code = pin::generate_setup_code().map_err(StoreError::Random)?;
            self.write_pin_record(&PinRecord::new_card(code))?;
        }
        Ok(())
    }

    /// Wipes the rules, the PIN and PUK, the list files, the audit log and the device key,
    /// and starts a new card as at first start (a new setup code, the first rules as
    /// version 1). It needs no PIN: it is what remains when the PUK is used up, and it
    /// destroys what a PIN protects. Only the card's reader and console offer it (physical
    /// presence), never the web page.
    pub fn factory_reset(&self) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.initialise(AuditEvent::FactoryReset)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder list files are read from.
    pub fn lists_dir(&self) -> PathBuf {
        self.dir.join(LISTS_DIR)
    }

    /// The loader for the list files rules name: plain names in [`Store::lists_dir`] only.
    pub fn lists(&self) -> ListDir {
        ListDir(self.lists_dir())
    }

    /// Compiles rule text as the firewall would, with the store's list files. Errors in a list
    /// file say where and what, never the line itself ([`redact_list_diagnostics`]).
    pub fn compile(&self, name: &str, text: &str) -> Result<rules::RuleSet, rules::Diagnostics> {
        rules::RuleSet::from_text(name, text, &self.lists())
            .map_err(|diagnostics| redact_list_diagnostics(name, diagnostics))
    }

    /// The current rule set, with no PIN. When the current file fails to verify, the previous
    /// version is returned if it verifies (with [`RulesSource::PreviousFallback`]); the error
    /// for the current file is returned only when neither verifies.
    pub fn rules(&self) -> Result<RuleVersion, StoreError> {
        match self.read_rules_file(RULES_FILE, RulesSource::Current) {
            Ok(rules) => Ok(rules),
            Err(
                error @ (StoreError::Tampered { .. }
                | StoreError::Malformed { .. }
                | StoreError::Unreadable { .. }
                | StoreError::Missing { .. }),
            ) => self
                .read_rules_file(PREVIOUS_RULES_FILE, RulesSource::PreviousFallback)
                .map_err(|_| error),
            Err(error) => Err(error),
        }
    }

    /// The version of the rule set [`Store::rules`] returns: what the firewall polls to know
    /// when to reload.
    pub fn version(&self) -> Result<u64, StoreError> {
        self.rules().map(|rules| rules.version)
    }

    /// The version kept for rollback, if there is one that verifies.
    pub fn previous_rules(&self) -> Result<Option<RuleVersion>, StoreError> {
        match self.read_rules_file(PREVIOUS_RULES_FILE, RulesSource::PreviousFallback) {
            Ok(rules) => Ok(Some(rules)),
            Err(StoreError::Missing { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub fn pin_state(&self) -> Result<PinState, StoreError> {
        let record = self.read_pin_record()?;
        Ok(PinState {
            tries_left: record.tries_left,
            blocked: record.tries_left == 0,
            puk_tries_left: record.puk_tries_left,
            puk_blocked: record.puk_tries_left == 0,
            needs_setup: matches!(record.secrets, Secrets::Setup { .. }),
            setup_tries_left: record.setup_tries_left,
        })
    }

    /// The setup code (digits only; [`pin::format_setup_code`] groups them for reading) while
    /// the card is not set up; `None` after. Only the card's console and its reader show it:
    /// they are what only the owner reaches.
    pub fn setup_code(&self) -> Result<Option<Zeroizing<String>>, StoreError> {
        Ok(match self.read_pin_record()?.secrets {
            Secrets::Setup { code } => Some(code),
            Secrets::Set { .. } => None,
        })
    }

    /// First setup: with the card's setup code, sets the first PIN, and makes the PUK, which is
    /// returned to be shown to the owner this once (only its hash is kept). A wrong code costs
    /// one of [`pin::SETUP_TRIES`] tries, spent durably before the check, like a PIN's.
    pub fn setup(&self, code: &str, new_pin: &str) -> Result<Zeroizing<String>, StoreError> {
        check_new_pin(new_pin)?;
        let code = pin::normalise_setup_code(code);
        let _guard = self.lock();
        let mut record = self.read_pin_record()?;
        let Secrets::Setup { code: expected } = record.secrets.clone() else {
            return Err(StoreError::AlreadySetUp);
        };
        if record.setup_tries_left == 0 {
            return Err(StoreError::SetupBlocked);
        }
        record.setup_tries_left -= 1;
        self.write_pin_record(&record)?;
        crash_hook("after-setup-decrement");
        let matches = code.len() == expected.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                code.as_bytes(),
                expected.as_bytes(),
            ));
        if !matches {
            let tries_left = record.setup_tries_left;
            self.append_audit(AuditEvent::SetupFailed { tries_left })?;
            return Err(if tries_left == 0 {
                StoreError::SetupBlocked
            } else {
                StoreError::WrongSetupCode { tries_left }
            });
        }
        let puk = pin::generate_puk().map_err(StoreError::Random)?;
        let record = PinRecord {
            tries_left: pin::PIN_TRIES,
            puk_tries_left: pin::PUK_TRIES,
            setup_tries_left: 0,
            secrets: Secrets::Set {
                pin: Hash::new(new_pin, self.cost)?,
                puk: Hash::new(&puk, self.cost)?,
            },
        };
        self.write_pin_record(&record)?;
        self.append_audit(AuditEvent::SetUp)?;
        Ok(puk)
    }

    /// Opens an admin session. The retry counter is decremented and made durable before the
    /// PIN is checked, and reset only after it matched: killing the process mid-check still
    /// costs a try. A PIN that is not 4–16 digits cannot match and costs nothing.
    pub fn login(&self, pin: &str) -> Result<AdminSession<'_>, StoreError> {
        pin::check_pin_format(pin).map_err(StoreError::BadPin)?;
        let _guard = self.lock();
        let mut record = self.read_pin_record()?;
        let Secrets::Set { pin: pin_hash, .. } = &record.secrets else {
            return Err(StoreError::NotSetUp);
        };
        let pin_hash = pin_hash.clone();
        if record.tries_left == 0 {
            // One entry for a run of attempts: repeated tries on a blocked card must not push
            // the history out of the bounded log.
            let last = self
                .audit()
                .ok()
                .and_then(|log| log.last().map(|e| e.event));
            if last != Some(AuditEvent::LoginWhileBlocked) {
                self.append_audit(AuditEvent::LoginWhileBlocked)?;
            }
            return Err(if record.puk_tries_left == 0 {
                StoreError::PukBlocked
            } else {
                StoreError::Blocked
            });
        }
        record.tries_left -= 1;
        self.write_pin_record(&record)?;
        crash_hook("after-pin-decrement");
        if pin_hash.verify(pin)? {
            record.tries_left = pin::PIN_TRIES;
            self.write_pin_record(&record)?;
            self.append_audit(AuditEvent::LoginOk)?;
            Ok(AdminSession { store: self })
        } else {
            let tries_left = record.tries_left;
            self.append_audit(AuditEvent::LoginFailed { tries_left })?;
            Err(if tries_left == 0 {
                StoreError::Blocked
            } else {
                StoreError::WrongPin { tries_left }
            })
        }
    }

    /// Checks the PUK with its own retry counter, decremented durably before the check and
    /// reset after a match; on a match `change` makes the new record.
    fn with_puk(
        &self,
        puk: &str,
        ok: AuditEvent,
        failed: fn(u8) -> AuditEvent,
        change: impl FnOnce(&mut PinRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // The PUK is shown grouped (`1234-5678-9012`): typed so, it is the same PUK.
        let puk = pin::normalise_setup_code(puk);
        let puk = puk.as_str();
        pin::check_puk_format(puk).map_err(StoreError::BadPuk)?;
        let _guard = self.lock();
        let mut record = self.read_pin_record()?;
        let Secrets::Set { puk: puk_hash, .. } = &record.secrets else {
            return Err(StoreError::NotSetUp);
        };
        let puk_hash = puk_hash.clone();
        if record.puk_tries_left == 0 {
            return Err(StoreError::PukBlocked);
        }
        record.puk_tries_left -= 1;
        self.write_pin_record(&record)?;
        crash_hook("after-puk-decrement");
        if puk_hash.verify(puk)? {
            record.puk_tries_left = pin::PUK_TRIES;
            change(&mut record)?;
            self.write_pin_record(&record)?;
            self.append_audit(ok)
        } else {
            let tries_left = record.puk_tries_left;
            self.append_audit(failed(tries_left))?;
            Err(if tries_left == 0 {
                StoreError::PukBlocked
            } else {
                StoreError::WrongPuk { tries_left }
            })
        }
    }

    /// Unblocks (or resets) the PIN with the PUK and sets `new_pin`. The PUK counter is
    /// decremented durably before the check, like the PIN's. Offered over the card's reader
    /// only (physical presence), never on the web page.
    pub fn unblock(&self, puk: &str, new_pin: &str) -> Result<(), StoreError> {
        check_new_pin(new_pin)?;
        let cost = self.cost;
        self.with_puk(
            puk,
            AuditEvent::Unblocked,
            |tries_left| AuditEvent::UnblockFailed { tries_left },
            |record| {
                record.tries_left = pin::PIN_TRIES;
                if let Secrets::Set { pin, .. } = &mut record.secrets {
                    *pin = Hash::new(new_pin, cost)?;
                }
                Ok(())
            },
        )
    }

    /// Replaces the PUK with one the owner chooses (8–16 digits), given the current one. A
    /// wrong PUK costs a PUK try.
    pub fn change_puk(&self, puk: &str, new_puk: &str) -> Result<(), StoreError> {
        let new_puk = pin::normalise_setup_code(new_puk);
        let new_puk = new_puk.as_str();
        pin::check_puk_format(new_puk).map_err(StoreError::BadPuk)?;
        let cost = self.cost;
        self.with_puk(
            puk,
            AuditEvent::PukChanged,
            |tries_left| AuditEvent::PukChangeFailed { tries_left },
            |record| {
                if let Secrets::Set { puk, .. } = &mut record.secrets {
                    *puk = Hash::new(new_puk, cost)?;
                }
                Ok(())
            },
        )
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let bytes = self.read_sealed(AUDIT_FILE)?;
        audit::parse(&bytes).ok_or_else(|| StoreError::Unreadable {
            file: AUDIT_FILE.into(),
        })
    }

    /// The policy server enrolment record (the `managed` front end reads it), if enrolled.
    pub fn managed_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.read_sealed(MANAGED_FILE) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::Missing { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The inspection CA record ([`crate::inspect::ca`] reads it), made with `make` and kept
    /// when none opens: missing (first use), or sealed under another device key or damaged. A
    /// CA that no longer opens cannot sign anything, and whoever could damage the file could
    /// delete it too; the new CA's fingerprint differs, which is what the owner checks.
    pub fn inspection_ca_record_or_create(
        &self,
        make: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, StoreError>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let _guard = self.lock();
        match self.read_sealed(INSPECTION_CA_FILE) {
            Ok(record) => return Ok(record),
            Err(StoreError::Missing { .. }) => {}
            Err(error @ (StoreError::Tampered { .. } | StoreError::Malformed { .. })) => {
                tracing::warn!(%error, "the inspection CA does not open: making a new one");
            }
            Err(error) => return Err(error),
        }
        let record = make()?;
        self.write_sealed(INSPECTION_CA_FILE, &record)?;
        Ok(record)
    }

    /// The owner's added CAs ([`crate::inspect::owner_cas`] reads them), if any were added.
    pub fn owner_cas_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.read_sealed_if_present(OWNER_CAS_FILE)
    }

    /// The CAs the installed policy bundle carries (PEM, [`crate::inspect`] trusts them), if
    /// it carries any.
    pub fn managed_cas_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.read_sealed_if_present(MANAGED_CAS_FILE)
    }

    /// The user's client certificate record, if one is stored; at start only its certificate
    /// is read from it (for the page). The key is used only after
    /// [`AdminSession::unlock_client_cert_record`].
    pub(crate) fn client_cert_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.read_sealed_if_present(CLIENT_CERT_FILE)
    }

    /// The card's public WireGuard key for the VPN `name`. When the card has none for that
    /// name yet, it makes 32 random bytes as the private key, `public_of` derives the public
    /// one, and both are kept. The private key leaves the store only through
    /// [`AdminSession::unlock_vpn_key`].
    pub fn vpn_public_key_or_create(
        &self,
        name: &str,
        public_of: impl FnOnce(&[u8; 32]) -> [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        let _guard = self.lock();
        let record = self
            .read_sealed_if_present(VPN_KEYS_FILE)?
            .unwrap_or_default();
        let keys = vpn_keys::parse(&record).ok_or_else(|| StoreError::Unreadable {
            file: VPN_KEYS_FILE.into(),
        })?;
        if let Some(entry) = keys.iter().find(|entry| entry.name == name) {
            return Ok(entry.public);
        }
        let mut private = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut private[..]).map_err(StoreError::Random)?;
        let public = public_of(&private);
        let mut record = Zeroizing::new(record.to_vec());
        vpn_keys::append(&mut record, name, &public, &private);
        self.write_sealed(VPN_KEYS_FILE, &record)?;
        Ok(public)
    }

    /// The VPNs the owner added on the card page, as kept (none when none was added). Each
    /// was checked like a `[vpn.NAME]` of the file when it was added; the caller checks them
    /// again against the file it runs with.
    pub fn page_vpns(&self) -> Result<Vec<proto::policy::ManagedVpn>, StoreError> {
        match self.read_sealed_if_present(PAGE_VPNS_FILE)? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice::<proto::policy::ManagedVpns>(&bytes)
                .map(|set| set.vpns)
                .map_err(|_| StoreError::Unreadable {
                    file: PAGE_VPNS_FILE.into(),
                }),
        }
    }

    /// Removes the sealed file `name` durably (none there is no error); `doing` names the
    /// step in an error.
    fn remove_sealed(&self, name: &str, doing: &'static str) -> Result<(), StoreError> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(doing)(e)),
        }
        self.sync_dir()
    }

    fn read_sealed_if_present(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.read_sealed(name) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::Missing { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Installs rules from a verified policy bundle as the next store version, with no PIN:
    /// the policy key's signature is the authority. The list files go beside the rules
    /// (where local rules read theirs too), then the bundle's trusted CAs (or, for a bundle
    /// without any, the removal of those an earlier bundle brought), then the rules, then
    /// `record` (the new installed version). The record is written last because it is what
    /// says the bundle is in: a crash before it leaves the card asking for the same bundle
    /// again, which writes every part again, so no crash leaves CAs of one version with the
    /// record of another, and none skips a bundle.
    pub fn install_bundle(
        &self,
        verified: &rules::bundle::Verified,
        record: &[u8],
    ) -> Result<u64, StoreError> {
        let bundle = &verified.bundle;
        // Every name is checked before anything is written: a bundle is installed whole or not.
        for (name, _) in &bundle.list_files {
            if let Err(why) = check_list_name(name) {
                return Err(StoreError::Bundle(format!(
                    "list file name `{name}`: {why}"
                )));
            }
        }
        let lists = self.lists_dir();
        if !bundle.list_files.is_empty() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&lists)
                .map_err(io_error(format!("creating {}", lists.display())))?;
        }
        for (name, text) in &bundle.list_files {
            write_durably_in(&lists, name, text.as_bytes())?;
        }
        let _guard = self.lock();
        match &bundle.trusted_cas {
            Some(cas) => self.write_sealed(MANAGED_CAS_FILE, cas.as_bytes())?,
            None => self.remove_sealed(MANAGED_CAS_FILE, "removing the policy server's CAs")?,
        }
        let current = self.rules()?;
        let version = current.version + 1;
        self.write_rules_file(PREVIOUS_RULES_FILE, &current)?;
        self.write_rules_file(
            RULES_FILE,
            &RuleVersion {
                version,
                saved_at: SystemTime::now(),
                text: bundle.rules.1.clone(),
                source: RulesSource::Current,
            },
        )?;
        self.write_sealed(MANAGED_FILE, record)?;
        self.append_audit(AuditEvent::BundleInstalled {
            version: bundle.version,
        })?;
        Ok(version)
    }

    /// Refuses local rule changes while a policy server manages the rules.
    /// Whether the card is enrolled with a policy server, by the record's presence alone (a
    /// cheap check for every block page; what the record says is read where it is used).
    pub fn is_managed(&self) -> bool {
        self.dir.join(MANAGED_FILE).exists()
    }

    fn check_not_managed(&self) -> Result<(), StoreError> {
        if let Some(record) = self.managed_record()? {
            return Err(StoreError::Managed {
                server: Enrolment::parse(&record)
                    .map_or_else(|| "(unreadable record)".into(), |e| e.server),
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is on disk and every write is atomic: a panic elsewhere cannot have
        // left it half-changed, so a poisoned lock is still good.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A log that fails to verify is started afresh rather than blocking logins: an attacker
    /// who can change files could delete it anyway, and the PIN counter matters more.
    fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let mut entries = self.audit().unwrap_or_default();
        audit::push_bounded(&mut entries, AuditEntry::now(event));
        self.write_sealed(AUDIT_FILE, &audit::emit(&entries))
    }

    fn read_pin_record(&self) -> Result<PinRecord, StoreError> {
        let bytes = self.read_sealed(PIN_FILE)?;
        match PinRecord::parse(&bytes) {
            Some(pin::Parsed::Current(record)) => Ok(record),
            // Upgraded at open; seen here only if the file was put back since.
            Some(pin::Parsed::LegacyDefaultPin) | None => Err(StoreError::Unreadable {
                file: PIN_FILE.into(),
            }),
        }
    }

    fn write_pin_record(&self, record: &PinRecord) -> Result<(), StoreError> {
        self.write_sealed(PIN_FILE, &record.emit())
    }

    fn read_rules_file(&self, name: &str, source: RulesSource) -> Result<RuleVersion, StoreError> {
        let bytes = self.read_sealed(name)?;
        RuleVersion::parse(&bytes, source)
            .ok_or_else(|| StoreError::Unreadable { file: name.into() })
    }

    fn write_rules_file(&self, name: &str, rules: &RuleVersion) -> Result<(), StoreError> {
        self.write_sealed(name, &rules.emit())
    }

    fn write_page_vpns(&self, vpns: Vec<proto::policy::ManagedVpn>) -> Result<(), StoreError> {
        let record = serde_json::to_vec(&proto::policy::ManagedVpns { vpns })
            .expect("plain data serialises");
        self.write_sealed(PAGE_VPNS_FILE, &record)
    }

    fn read_sealed(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { file: name.into() });
            }
            Err(e) => return Err(io_error(format!("reading {}", path.display()))(e)),
        };
        let key = self.key.read().unwrap_or_else(|e| e.into_inner());
        sealed::open(&key.0, name, &bytes).map_err(|error| match error {
            sealed::OpenError::Malformed(error) => StoreError::Malformed {
                file: name.into(),
                error,
            },
            sealed::OpenError::Tampered => StoreError::Tampered { file: name.into() },
        })
    }

    fn write_sealed(&self, name: &str, plaintext: &[u8]) -> Result<(), StoreError> {
        let mut nonce = [0u8; sealed::NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
        let bytes = {
            let key = self.key.read().unwrap_or_else(|e| e.into_inner());
            sealed::seal(&key.0, name, nonce, plaintext)
        };
        self.write_durably(name, &bytes)
    }

    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_durably_in(&self.dir, name, bytes)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        sync_dir(&self.dir)
    }

    /// Temp files left by a process killed mid-write: never renamed, so never in use.
    fn remove_stale_temp_files(&self) {
        for name in ALL_FILES {
            let _ = fs::remove_file(self.dir.join(temp_name(name)));
        }
    }
}

/// Reads the device key of the store in `dir`; [`StoreError::Missing`] for a new card.
fn read_key(dir: &Path) -> Result<DeviceKey, StoreError> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let key: [u8; sealed::KEY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Unreadable {
                        file: KEY_FILE.into(),
                    })?;
            Ok(DeviceKey(Zeroizing::new(key)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing {
            file: KEY_FILE.into(),
        }),
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

/// Temp file in the same directory, write, fsync, rename over `name`, fsync the directory.
fn write_durably_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = dir.join(temp_name(name));
    let what = || format!("writing {}", temp.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(what()))?;
    file.write_all(bytes).map_err(io_error(what()))?;
    file.sync_all().map_err(io_error(what()))?;
    drop(file);
    let target = dir.join(name);
    fs::rename(&temp, &target).map_err(io_error(format!(
        "renaming {} to {}",
        temp.display(),
        target.display()
    )))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(format!("syncing {}", dir.display())))
}

fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

fn check_new_pin(new_pin: &str) -> Result<(), StoreError> {
    pin::check_pin_format(new_pin).map_err(StoreError::BadPin)
}

/// Proof of a correct PIN: the only way to change anything in the store. Made only by
/// [`Store::login`], which a card not yet set up refuses.
#[derive(Debug)]
pub struct AdminSession<'store> {
    store: &'store Store,
}

impl AdminSession<'_> {
    /// Saves `text` as the next version; the current one becomes the previous. Text that does
    /// not parse is refused with its diagnostics: a bad rule set never replaces a good one.
    pub fn save_rules(&self, text: &str) -> Result<u64, StoreError> {
        self.store.check_not_managed()?;
        self.store
            .compile(RULES_NAME, text)
            .map_err(StoreError::Rules)?;
        let store = self.store;
        let _guard = store.lock();
        let current = store.rules()?;
        let version = current.version + 1;
        self.replace(current, text.to_owned(), version)?;
        store.append_audit(AuditEvent::RulesChanged { version })?;
        Ok(version)
    }

    /// Makes the previous version current again, under a new version number (so the
    /// firewall sees a change); the replaced one becomes the previous, so a second rollback
    /// undoes the first.
    pub fn rollback(&self) -> Result<u64, StoreError> {
        self.store.check_not_managed()?;
        let store = self.store;
        let _guard = store.lock();
        let current = store.read_rules_file(RULES_FILE, RulesSource::Current)?;
        let previous =
            match store.read_rules_file(PREVIOUS_RULES_FILE, RulesSource::PreviousFallback) {
                Ok(previous) => previous,
                Err(StoreError::Missing { .. }) => return Err(StoreError::NoPreviousVersion),
                Err(error) => return Err(error),
            };
        let version = current.version + 1;
        self.replace(current, previous.text, version)?;
        store.append_audit(AuditEvent::RolledBack { version })?;
        Ok(version)
    }

    /// Previous := current, then current := new. A crash between the two leaves both equal
    /// to the old version: never a state that mixes or loses the running rules.
    fn replace(&self, current: RuleVersion, text: String, version: u64) -> Result<(), StoreError> {
        let store = self.store;
        store.write_rules_file(PREVIOUS_RULES_FILE, &current)?;
        store.write_rules_file(
            RULES_FILE,
            &RuleVersion {
                version,
                saved_at: SystemTime::now(),
                text,
                source: RulesSource::Current,
            },
        )
    }

    /// Enrols the card with a policy server (`record` from the `managed` front end), or with
    /// `None` leaves it; both need the PIN. The rules in force stay until a bundle replaces them.
    pub fn set_managed(&self, record: Option<&[u8]>) -> Result<(), StoreError> {
        let store = self.store;
        let _guard = store.lock();
        // An overlay belongs to one enrolment (its card id and version sequence): a new
        // enrolment, or none, starts without it.
        store.remove_sealed(OVERLAY_FILE, "removing the overlay")?;
        match record {
            Some(record) => {
                store.write_sealed(MANAGED_FILE, record)?;
                store.append_audit(AuditEvent::Enrolled)
            }
            None => {
                store.remove_sealed(MANAGED_FILE, "removing the enrolment")?;
                store.append_audit(AuditEvent::Unenrolled)
            }
        }
    }

    /// Replaces the inspection CA record (a re-key, [`crate::inspect::ca`]) in one atomic write.
    pub fn replace_inspection_ca_record(&self, record: &[u8]) -> Result<(), StoreError> {
        let store = self.store;
        let _guard = store.lock();
        store.write_sealed(INSPECTION_CA_FILE, record)?;
        store.append_audit(AuditEvent::InspectionCaRekeyed)
    }

    /// Replaces the owner's added CAs ([`crate::inspect::owner_cas`]) in one atomic write,
    /// audited as `event` (a CA added or removed).
    pub fn replace_owner_cas_record(
        &self,
        record: &[u8],
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let store = self.store;
        let _guard = store.lock();
        store.write_sealed(OWNER_CAS_FILE, record)?;
        store.append_audit(event)
    }

    /// Replaces the user's client certificate ([`crate::inspect::client_cert`]) in one atomic
    /// write, or with `None` removes it; audited as `event`.
    pub fn replace_client_cert_record(
        &self,
        record: Option<&[u8]>,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let store = self.store;
        let _guard = store.lock();
        match record {
            Some(record) => store.write_sealed(CLIENT_CERT_FILE, record)?,
            None => store.remove_sealed(CLIENT_CERT_FILE, "removing the client certificate")?,
        }
        store.append_audit(event)
    }

    /// The client certificate record for unlocking it, audited.
    pub fn unlock_client_cert_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let store = self.store;
        let record = store.client_cert_record()?;
        if record.is_some() {
            let _guard = store.lock();
            store.append_audit(AuditEvent::ClientCertUnlocked)?;
        }
        Ok(record)
    }

    /// The private WireGuard key of the VPN `name` for unlocking it, audited; `None` when the
    /// card has made none for that name.
    pub fn unlock_vpn_key(&self, name: &str) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        let store = self.store;
        let _guard = store.lock();
        let Some(record) = store.read_sealed_if_present(VPN_KEYS_FILE)? else {
            return Ok(None);
        };
        let keys = vpn_keys::parse(&record).ok_or_else(|| StoreError::Unreadable {
            file: VPN_KEYS_FILE.into(),
        })?;
        let Some(entry) = keys.into_iter().find(|entry| entry.name == name) else {
            return Ok(None);
        };
        store.append_audit(AuditEvent::VpnUnlocked)?;
        Ok(Some(entry.private))
    }

    /// Adds `vpn` to the page's VPNs ([`Store::page_vpns`]) in one atomic write, audited;
    /// refused when one of that name is kept already or there are
    /// [`proto::policy::MAX_MANAGED_VPNS`]. `vpn` was checked by the caller.
    pub fn add_page_vpn(&self, vpn: proto::policy::ManagedVpn) -> Result<(), StoreError> {
        let store = self.store;
        let _guard = store.lock();
        let mut vpns = store.page_vpns()?;
        if vpns.iter().any(|kept| kept.name == vpn.name) {
            return Err(StoreError::PageVpn(format!(
                "a VPN called {:?} was added already",
                vpn.name
            )));
        }
        if vpns.len() >= proto::policy::MAX_MANAGED_VPNS {
            return Err(StoreError::PageVpn(format!(
                "the card page keeps at most {} VPNs",
                proto::policy::MAX_MANAGED_VPNS
            )));
        }
        vpns.push(vpn);
        store.write_page_vpns(vpns)?;
        store.append_audit(AuditEvent::VpnAdded)
    }

    /// Removes the page's VPN `name` in one atomic write, audited; `false` when the page has
    /// none of that name (nothing written).
    pub fn remove_page_vpn(&self, name: &str) -> Result<bool, StoreError> {
        let store = self.store;
        let _guard = store.lock();
        let mut vpns = store.page_vpns()?;
        let before = vpns.len();
        vpns.retain(|kept| kept.name != name);
        if vpns.len() == before {
            return Ok(false);
        }
        store.write_page_vpns(vpns)?;
        store.append_audit(AuditEvent::VpnRemoved)?;
        Ok(true)
    }

    /// Replaces the PUK: [`Store::change_puk`], from the page's PIN-guarded form.
    pub fn change_puk(&self, puk: &str, new_puk: &str) -> Result<(), StoreError> {
        self.store.change_puk(puk, new_puk)
    }

    /// Sets a new PIN (4–16 digits).
    pub fn change_pin(&self, new_pin: &str) -> Result<(), StoreError> {
        check_new_pin(new_pin)?;
        let store = self.store;
        let _guard = store.lock();
        let mut record = store.read_pin_record()?;
        if let Secrets::Set { pin, .. } = &mut record.secrets {
            *pin = Hash::new(new_pin, store.cost)?;
        }
        record.tries_left = pin::PIN_TRIES;
        store.write_pin_record(&record)?;
        store.append_audit(AuditEvent::PinChanged)
    }
}
