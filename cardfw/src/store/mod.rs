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
//! | `pin.sealed` | [`pin::PinRecord`]: Argon2id hashes of PIN and PUK, both retry counters, must-change flag |
//! | `rules.sealed` | the current rule set: version, saved-at, text |
//! | `rules.prev.sealed` | the version before it (for rollback, and used when the current one fails to verify) |
//! | `audit.sealed` | the last [`audit::CAPACITY`] audit entries |
//! | `managed.sealed` | present when enrolled with a policy server: the pinned CA, policy key, group, the card's certificate and key, the installed bundle version (see [`crate::managed`]) |
//! | `puk.txt` | the PUK in clear, written at first start and at factory reset for the owner to note; [`Store::take_puk_notice`] reads and deletes it |
//!
//! Every write is a temp file in the same directory, written, fsynced, renamed over the old
//! file, then the directory fsynced: a power cut leaves the old file or the new one. The store
//! assumes one process owns the directory; within it, changes are serialised by a mutex.
//!
//! The sealed format is [`sealed`]; each file's name is bound as associated data, so files
//! cannot be swapped between purposes.

pub mod audit;
pub mod pin;
pub mod sealed;
pub mod tls;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

pub use audit::{Actor, AuditEntry, AuditEvent};
pub use pin::PinCost;
use pin::{Hash, HashError, PinRecord};
pub use sealed::WireError;

const KEY_FILE: &str = "device.key";
const PIN_FILE: &str = "pin.sealed";
const RULES_FILE: &str = "rules.sealed";
const PREVIOUS_RULES_FILE: &str = "rules.prev.sealed";
const AUDIT_FILE: &str = "audit.sealed";
const PUK_NOTICE_FILE: &str = "puk.txt";
const MANAGED_FILE: &str = "managed.sealed";
const ALL_FILES: [&str; 7] = [
    KEY_FILE,
    PIN_FILE,
    RULES_FILE,
    PREVIOUS_RULES_FILE,
    AUDIT_FILE,
    PUK_NOTICE_FILE,
    MANAGED_FILE,
];

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
    #[error("the default PIN must be changed before anything else")]
    MustChangePin,
    #[error("{file} failed to verify: it was changed, damaged, or sealed for another purpose")]
    Tampered { file: String },
    #[error("{file} is not a sealed store file: {error}")]
    Malformed { file: String, error: WireError },
    #[error("{file} verified but its content is not understood by this firmware")]
    Unreadable { file: String },
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
    pub must_change: bool,
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
    key: DeviceKey,
    cost: PinCost,
    /// Serialises read-modify-write of the PIN record, the rules and the audit log.
    lock: Mutex<()>,
}

impl Store {
    /// Opens the store in `dir`, or makes a new card there when it has no `device.key`: a new
    /// device key, the default PIN "1234" (which must be changed at first login), a random PUK
    /// written to `puk.txt` for the owner, and `initial_rules` as version 1.
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
        match fs::read(dir.join(KEY_FILE)) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let key: [u8; sealed::KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Unreadable {
                            file: KEY_FILE.into(),
                        })?;
                let store = Store {
                    dir: dir.to_path_buf(),
                    key: DeviceKey(Zeroizing::new(key)),
                    cost,
                    lock: Mutex::new(()),
                };
                store.remove_stale_temp_files();
                Ok(store)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Store::create(dir, initial_rules, cost, AuditEvent::Created)
            }
            Err(e) => Err(io_error(format!(
                "reading {}",
                dir.join(KEY_FILE).display()
            ))(e)),
        }
    }

    fn create(
        dir: &Path,
        initial_rules: &str,
        cost: PinCost,
        event: AuditEvent,
    ) -> Result<Store, StoreError> {
        rules::parse(RULES_NAME, initial_rules).map_err(StoreError::Rules)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(format!("creating {}", dir.display())))?;
        let mut key = Zeroizing::new([0u8; sealed::KEY_LEN]);
        getrandom::fill(&mut key[..]).map_err(StoreError::Random)?;
        let store = Store {
            dir: dir.to_path_buf(),
            key: DeviceKey(key),
            cost,
            lock: Mutex::new(()),
        };
        store.remove_stale_temp_files();
        let puk = pin::generate_puk().map_err(StoreError::Random)?;
        let record = PinRecord {
            tries_left: pin::PIN_TRIES,
            puk_tries_left: pin::PUK_TRIES,
            must_change: true,
            pin: Hash::new(pin::DEFAULT_PIN, cost)?,
            puk: Hash::new(&puk, cost)?,
        };
        store.write_pin_record(&record)?;
        let _ = fs::remove_file(dir.join(PREVIOUS_RULES_FILE));
        store.write_rules_file(
            RULES_FILE,
            &RuleVersion {
                version: 1,
                saved_at: SystemTime::now(),
                text: initial_rules.to_owned(),
                source: RulesSource::Current,
            },
        )?;
        store.write_sealed(AUDIT_FILE, &audit::emit(&[AuditEntry::now(event)]))?;
        let notice = Zeroizing::new(format!(
            "cardwall card PUK: {}\nKeep it safe and delete this file: it unblocks the PIN.\n",
            puk.as_str()
        ));
        store.write_durably(PUK_NOTICE_FILE, notice.as_bytes())?;
        store.write_durably(KEY_FILE, &store.key.0[..])?;
        Ok(store)
    }

    /// Wipes the rules, the PIN, the audit log and the device key, and starts a new card as
    /// at first start (default PIN, a new PUK in `puk.txt`, `initial_rules` as version 1).
    /// It needs no PIN: it is what remains when the PUK is used up, and it destroys what a PIN
    /// protects. The card asks for physical presence (a button) before calling it.
    pub fn factory_reset(self, initial_rules: &str) -> Result<Store, StoreError> {
        rules::parse(RULES_NAME, initial_rules).map_err(StoreError::Rules)?;
        // The key goes first: once it is gone the other files are unreadable, whatever
        // happens next.
        for name in ALL_FILES {
            match fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(format!("wiping {name}"))(e)),
            }
        }
        self.sync_dir()?;
        Store::create(
            &self.dir,
            initial_rules,
            self.cost,
            AuditEvent::FactoryReset,
        )
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
            must_change: record.must_change,
        })
    }

    /// Opens an admin session. The retry counter is decremented and made durable before the
    /// PIN is checked, and reset only after it matched: killing the process mid-check still
    /// costs a try. A PIN that is not 4–16 digits cannot match and costs nothing.
    pub fn login(&self, pin: &str) -> Result<AdminSession<'_>, StoreError> {
        pin::check_pin_format(pin).map_err(StoreError::BadPin)?;
        let _guard = self.lock();
        let mut record = self.read_pin_record()?;
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
        if record.pin.verify(pin)? {
            record.tries_left = pin::PIN_TRIES;
            self.write_pin_record(&record)?;
            self.append_audit(AuditEvent::LoginOk)?;
            Ok(AdminSession {
                store: self,
                must_change: Cell::new(record.must_change),
            })
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

    /// Unblocks (or resets) the PIN with the PUK and sets `new_pin`. The PUK counter is
    /// decremented durably before the check, like the PIN's.
    pub fn unblock(&self, puk: &str, new_pin: &str) -> Result<(), StoreError> {
        pin::check_puk_format(puk).map_err(StoreError::BadPuk)?;
        check_new_pin(new_pin)?;
        let _guard = self.lock();
        let mut record = self.read_pin_record()?;
        if record.puk_tries_left == 0 {
            return Err(StoreError::PukBlocked);
        }
        record.puk_tries_left -= 1;
        self.write_pin_record(&record)?;
        crash_hook("after-puk-decrement");
        if record.puk.verify(puk)? {
            record.puk_tries_left = pin::PUK_TRIES;
            record.tries_left = pin::PIN_TRIES;
            record.must_change = false;
            record.pin = Hash::new(new_pin, self.cost)?;
            self.write_pin_record(&record)?;
            self.append_audit(AuditEvent::Unblocked)
        } else {
            let tries_left = record.puk_tries_left;
            self.append_audit(AuditEvent::UnblockFailed { tries_left })?;
            Err(if tries_left == 0 {
                StoreError::PukBlocked
            } else {
                StoreError::WrongPuk { tries_left }
            })
        }
    }

    /// Reads and deletes `puk.txt`: the PUK shown once to the owner. `None` once taken.
    pub fn take_puk_notice(&self) -> Result<Option<Zeroizing<String>>, StoreError> {
        let path = self.dir.join(PUK_NOTICE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("reading {}", path.display()))(e)),
        };
        fs::remove_file(&path).map_err(io_error(format!("removing {}", path.display())))?;
        self.sync_dir()?;
        let puk = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cardwall card PUK: "))
            .map(|puk| Zeroizing::new(puk.to_owned()));
        Ok(puk)
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let bytes = self.read_sealed(AUDIT_FILE)?;
        audit::parse(&bytes).ok_or_else(|| StoreError::Unreadable {
            file: AUDIT_FILE.into(),
        })
    }

    /// The policy server enrolment record ([`crate::managed`] reads it), if enrolled.
    pub fn managed_record(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.read_sealed(MANAGED_FILE) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::Missing { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Installs rules from a verified policy bundle as the next store version, with no PIN:
    /// the policy key's signature is the authority. The list files go beside the rules
    /// (where local rules read theirs too), then the rules, then `record` (the new installed
    /// version): a crash before the record leaves the card asking for the same bundle again,
    /// never skipping one.
    pub fn install_bundle(
        &self,
        verified: &rules::bundle::Verified,
        record: &[u8],
    ) -> Result<u64, StoreError> {
        let bundle = &verified.bundle;
        for (name, text) in &bundle.list_files {
            let plain = !name.is_empty()
                && !name.starts_with('.')
                && !name.contains('/')
                && !ALL_FILES.contains(&name.as_str())
                && !name.ends_with(".sealed");
            if !plain {
                return Err(StoreError::Bundle(format!(
                    "list file name `{name}` is not a plain file name"
                )));
            }
            self.write_durably(name, text.as_bytes())?;
        }
        let _guard = self.lock();
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
    fn check_not_managed(&self) -> Result<(), StoreError> {
        if let Some(record) = self.managed_record()? {
            return Err(StoreError::Managed {
                server: crate::managed::Enrolment::parse(&record)
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
        PinRecord::parse(&bytes).ok_or_else(|| StoreError::Unreadable {
            file: PIN_FILE.into(),
        })
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

    fn read_sealed(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { file: name.into() });
            }
            Err(e) => return Err(io_error(format!("reading {}", path.display()))(e)),
        };
        sealed::open(&self.key.0, name, &bytes).map_err(|error| match error {
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
        self.write_durably(name, &sealed::seal(&self.key.0, name, nonce, plaintext))
    }

    /// Temp file in the same directory, write, fsync, rename over `name`, fsync the directory.
    fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let temp = self.dir.join(temp_name(name));
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
        let target = self.dir.join(name);
        fs::rename(&temp, &target).map_err(io_error(format!(
            "renaming {} to {}",
            temp.display(),
            target.display()
        )))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(format!("syncing {}", self.dir.display())))
    }

    /// Temp files left by a process killed mid-write: never renamed, so never in use.
    fn remove_stale_temp_files(&self) {
        for name in ALL_FILES {
            let _ = fs::remove_file(self.dir.join(temp_name(name)));
        }
    }
}

fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

fn check_new_pin(new_pin: &str) -> Result<(), StoreError> {
    pin::check_pin_format(new_pin).map_err(StoreError::BadPin)?;
    if new_pin == pin::DEFAULT_PIN {
        return Err(StoreError::BadPin(
            "the new PIN must not be the default PIN",
        ));
    }
    Ok(())
}

/// Proof of a correct PIN: the only way to change anything in the store. Made only by
/// [`Store::login`]. Until the default PIN is changed, only [`AdminSession::change_pin`] works.
#[derive(Debug)]
pub struct AdminSession<'store> {
    store: &'store Store,
    must_change: Cell<bool>,
}

impl AdminSession<'_> {
    /// Whether the PIN is still the default one (everything but `change_pin` is refused).
    pub fn must_change_pin(&self) -> bool {
        self.must_change.get()
    }

    fn check_may_change(&self) -> Result<(), StoreError> {
        if self.must_change.get() {
            Err(StoreError::MustChangePin)
        } else {
            Ok(())
        }
    }

    /// Saves `text` as the next version; the current one becomes the previous. Text that does
    /// not parse is refused with its diagnostics: a bad rule set never replaces a good one.
    pub fn save_rules(&self, text: &str) -> Result<u64, StoreError> {
        self.check_may_change()?;
        self.store.check_not_managed()?;
        rules::parse(RULES_NAME, text).map_err(StoreError::Rules)?;
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
        self.check_may_change()?;
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

    /// Enrols the card with a policy server (`record` from [`crate::managed`]), or with
    /// `None` leaves it; both need the PIN. The rules in force stay until a bundle replaces them.
    pub fn set_managed(&self, record: Option<&[u8]>) -> Result<(), StoreError> {
        self.check_may_change()?;
        let store = self.store;
        let _guard = store.lock();
        match record {
            Some(record) => {
                store.write_sealed(MANAGED_FILE, record)?;
                store.append_audit(AuditEvent::Enrolled)
            }
            None => {
                match fs::remove_file(store.dir.join(MANAGED_FILE)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("removing the enrolment")(e)),
                }
                store.sync_dir()?;
                store.append_audit(AuditEvent::Unenrolled)
            }
        }
    }

    /// Sets a new PIN (4–16 digits, not the default). Also clears the must-change flag.
    pub fn change_pin(&self, new_pin: &str) -> Result<(), StoreError> {
        check_new_pin(new_pin)?;
        let store = self.store;
        let _guard = store.lock();
        let mut record = store.read_pin_record()?;
        record.pin = Hash::new(new_pin, store.cost)?;
        record.must_change = false;
        record.tries_left = pin::PIN_TRIES;
        store.write_pin_record(&record)?;
        self.must_change.set(false);
        store.append_audit(AuditEvent::PinChanged)
    }
}
