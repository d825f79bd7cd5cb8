//! Store behaviour, including crash tests that kill a real child process: the child is this
//! test binary run again with `CHILD_ENV` set, running only [`child_process`].

use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

const RULES_V1: &str = "deny any\n";
const RULES_V2: &str = "allow https host example.com\ndeny any\n";
const BAD_RULES: &str = "this is not a rule\n";
const NEW_PIN: &str = "4711";

fn open(dir: &Path) -> Store {
    Store::open_or_create(dir, RULES_V1, PinCost::INSECURE_FAST_FOR_TESTS).unwrap()
}

/// Sets a new card up with [`NEW_PIN`]; returns the PUK it showed.
fn set_up(store: &Store) -> String {
    let code = store
        .setup_code()
        .unwrap()
        .expect("a new card has a setup code");
    store.setup(&code, NEW_PIN).unwrap().to_string()
}

/// A store set up with [`NEW_PIN`].
fn ready(dir: &Path) -> Store {
    let store = open(dir);
    set_up(&store);
    store
}

#[test]
fn first_start_creates_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let rules = store.rules().unwrap();
    assert_eq!((rules.version, rules.text.as_str()), (1, RULES_V1));
    assert_eq!(rules.source, RulesSource::Current);
    assert_eq!(
        store.pin_state().unwrap(),
        PinState {
            tries_left: 3,
            blocked: false,
            puk_tries_left: 10,
            puk_blocked: false,
            needs_setup: true,
            setup_tries_left: pin::SETUP_TRIES,
        }
    );
    use std::os::unix::fs::PermissionsExt;
    for name in [KEY_FILE, PIN_FILE, RULES_FILE, AUDIT_FILE] {
        let mode = fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let mode = fs::metadata(dir.path().join(LISTS_DIR))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // Reopening keeps everything, the setup code too.
    let code = store.setup_code().unwrap().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.rules().unwrap().text, RULES_V1);
    assert_eq!(store.audit().unwrap()[0].event, AuditEvent::Created);
    assert_eq!(store.setup_code().unwrap().unwrap(), code);
    assert_eq!(Store::read_setup_code(dir.path()).unwrap().unwrap(), code);
}

/// Issue 13.9: a new card takes no PIN at all (no default `1234`) until it is set up with its
/// setup code; a wrong code costs one of its tries; the PUK is returned once, kept hashed.
#[test]
fn a_new_card_is_set_up_only_with_its_setup_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for pin in ["1234", "0000", NEW_PIN] {
        assert!(
            matches!(store.login(pin), Err(StoreError::NotSetUp)),
            "{pin}"
        );
    }
    let code = store.setup_code().unwrap().unwrap();
    assert_eq!(code.len(), pin::SETUP_CODE_DIGITS);
    assert!(matches!(
        store.setup("000000000000", NEW_PIN),
        Err(StoreError::WrongSetupCode { tries_left: 9 })
    ));
    assert!(matches!(
        store.setup(&code, "12"),
        Err(StoreError::BadPin(_))
    ));
    // Typed as the label shows it.
    let shown = pin::format_setup_code(&code);
    let puk = store.setup(&shown, NEW_PIN).unwrap();
    assert!(pin::check_puk_format(&puk).is_ok());
    assert!(store.setup_code().unwrap().is_none(), "the code is gone");
    assert!(Store::read_setup_code(dir.path()).unwrap().is_none());
    assert!(matches!(
        store.setup(&code, "2468"),
        Err(StoreError::AlreadySetUp)
    ));
    store.login(NEW_PIN).unwrap();
    // Issue 13.8: nothing in the directory holds the PUK or the code in clear.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let bytes = fs::read(entry.path()).unwrap();
            for secret in [puk.as_str(), code.as_str()] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in {:?}",
                    entry.file_name()
                );
            }
        }
    }
    // Kept as a hash only: the sealed record has no PUK digits either.
    let plain = store.read_sealed(PIN_FILE).unwrap();
    assert!(!plain.windows(puk.len()).any(|w| w == puk.as_bytes()));
}

#[test]
fn setup_code_tries_run_out_and_a_factory_reset_makes_a_new_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let code = store.setup_code().unwrap().unwrap();
    for _ in 1..pin::SETUP_TRIES {
        assert!(matches!(
            store.setup("111122223333", NEW_PIN),
            Err(StoreError::WrongSetupCode { .. })
        ));
    }
    assert!(matches!(
        store.setup("111122223333", NEW_PIN),
        Err(StoreError::SetupBlocked)
    ));
    assert!(matches!(
        store.setup(&code, NEW_PIN),
        Err(StoreError::SetupBlocked)
    ));
    store.factory_reset().unwrap();
    let new_code = store.setup_code().unwrap().unwrap();
    assert_ne!(new_code, code);
    store.setup(&new_code, NEW_PIN).unwrap();
}

/// Issue 13.8: a card of earlier firmware (default PIN, PUK in `puk.txt`) is upgraded at open:
/// the clear PUK file goes, and a card whose default PIN was never changed needs setup.
#[test]
fn earlier_firmware_files_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cost = PinCost::INSECURE_FAST_FOR_TESTS;
    let mut v1 = vec![1, 3, 10, 1];
    v1.extend_from_slice(&{
        let mut hashes = Vec::new();
        for secret in ["1234", "123456789012"] {
            let record = PinRecord {
                tries_left: 3,
                puk_tries_left: 10,
                setup_tries_left: 0,
                secrets: Secrets::Set {
                    pin: Hash::new(secret, cost).unwrap(),
                    puk: Hash::new(secret, cost).unwrap(),
                },
            };
            hashes.extend_from_slice(&record.emit()[5..5 + 60]);
        }
        hashes
    });
    store.write_sealed(PIN_FILE, &v1).unwrap();
    fs::write(
        dir.path().join("puk.txt"),
        "cardwall card PUK: 123456789012\n",
    )
    .unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(!dir.path().join("puk.txt").exists());
    assert!(matches!(store.login("1234"), Err(StoreError::NotSetUp)));
    assert!(store.setup_code().unwrap().is_some());
}

#[test]
fn bad_initial_rules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        Store::open_or_create(dir.path(), BAD_RULES, PinCost::INSECURE_FAST_FOR_TESTS).unwrap_err();
    assert!(matches!(error, StoreError::Rules(_)), "{error:?}");
    assert!(!dir.path().join(KEY_FILE).exists());
}

#[test]
fn puk_changes_with_its_own_counter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let puk = set_up(&store);
    assert!(matches!(
        store.change_puk("000000000000", "24682468"),
        Err(StoreError::WrongPuk { tries_left: 9 })
    ));
    assert!(matches!(
        store.change_puk(&puk, "123"),
        Err(StoreError::BadPuk(_))
    ));
    assert_eq!(
        store.pin_state().unwrap().tries_left,
        3,
        "the PIN's counter is apart"
    );
    store.change_puk(&puk, "2468-2468").unwrap();
    assert_eq!(store.pin_state().unwrap().puk_tries_left, 10);
    assert!(matches!(
        store.unblock(&puk, "2580"),
        Err(StoreError::WrongPuk { .. })
    ));
    store.unblock("24682468", "2580").unwrap();
    store.login("2580").unwrap();
}

#[test]
fn pin_format_is_checked_without_spending_a_try() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    for bad in ["", "123", "12345678901234567", "12a4", "1234 "] {
        assert!(
            matches!(store.login(bad), Err(StoreError::BadPin(_))),
            "{bad:?}"
        );
    }
    assert_eq!(store.pin_state().unwrap().tries_left, 3);
    let session = store.login(NEW_PIN).unwrap();
    assert!(matches!(
        session.change_pin("12"),
        Err(StoreError::BadPin(_))
    ));
    assert!(matches!(
        session.change_pin("abcd"),
        Err(StoreError::BadPin(_))
    ));
    session.change_pin("1234567890123456").unwrap();
}

#[test]
fn three_wrong_pins_block_then_puk_unblocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let puk = set_up(&store);
    assert!(matches!(
        store.login("0000"),
        Err(StoreError::WrongPin { tries_left: 2 })
    ));
    assert!(matches!(
        store.login("0000"),
        Err(StoreError::WrongPin { tries_left: 1 })
    ));
    // A right PIN resets the counter.
    store.login(NEW_PIN).unwrap();
    assert_eq!(store.pin_state().unwrap().tries_left, 3);
    for _ in 0..2 {
        let _ = store.login("0000");
    }
    assert!(matches!(store.login("0000"), Err(StoreError::Blocked)));
    let state = store.pin_state().unwrap();
    assert!(state.blocked && state.tries_left == 0);
    assert!(
        matches!(store.login(NEW_PIN), Err(StoreError::Blocked)),
        "the right PIN is refused too"
    );

    assert!(matches!(
        store.unblock("00000000", "2468"),
        Err(StoreError::WrongPuk { tries_left: 9 })
    ));
    assert!(matches!(
        store.unblock("0000000", "2468"),
        Err(StoreError::BadPuk(_))
    ));
    assert!(matches!(
        store.unblock(&puk, "12"),
        Err(StoreError::BadPin(_))
    ));
    store.unblock(&puk, "2468").unwrap();
    let state = store.pin_state().unwrap();
    assert_eq!(
        (state.tries_left, state.puk_tries_left, state.blocked),
        (3, 10, false)
    );
    assert!(matches!(
        store.login(NEW_PIN),
        Err(StoreError::WrongPin { .. })
    ));
    assert_eq!(
        store.login("2468").unwrap().save_rules(RULES_V2).unwrap(),
        2
    );
}

#[test]
fn ten_wrong_puks_block_until_factory_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let puk = set_up(&store);
    store.login(NEW_PIN).unwrap().save_rules(RULES_V2).unwrap();
    for _ in 0..3 {
        let _ = store.login("0000");
    }
    for tries_left in (1..10).rev() {
        assert!(matches!(
            store.unblock("99999999", "2468"),
            Err(StoreError::WrongPuk { tries_left: t }) if t == tries_left
        ));
    }
    assert!(matches!(
        store.unblock("99999999", "2468"),
        Err(StoreError::PukBlocked)
    ));
    assert!(
        matches!(store.unblock(&puk, "2468"), Err(StoreError::PukBlocked)),
        "even the right PUK"
    );
    assert!(matches!(store.login(NEW_PIN), Err(StoreError::PukBlocked)));
    assert!(store.pin_state().unwrap().puk_blocked);
    // The firewall keeps running on the rules.
    assert_eq!(store.rules().unwrap().text, RULES_V2);

    let old_key = fs::read(dir.path().join(KEY_FILE)).unwrap();
    store.factory_reset().unwrap();
    assert_ne!(fs::read(dir.path().join(KEY_FILE)).unwrap(), old_key);
    let rules = store.rules().unwrap();
    assert_eq!((rules.version, rules.text.as_str()), (1, RULES_V1));
    assert!(store.previous_rules().unwrap().is_none());
    assert!(store.pin_state().unwrap().needs_setup);
    let events: Vec<_> = store
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, [AuditEvent::FactoryReset]);
    assert!(matches!(store.login(NEW_PIN), Err(StoreError::NotSetUp)));
    assert_ne!(set_up(&store), puk);
    store.login(NEW_PIN).unwrap();
    // The store reopens with the new key.
    drop(store);
    open(dir.path()).login(NEW_PIN).unwrap();
}

#[test]
fn bad_rules_never_replace_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    let session = store.login(NEW_PIN).unwrap();
    let Err(StoreError::Rules(diagnostics)) = session.save_rules(BAD_RULES) else {
        panic!("bad rules accepted");
    };
    assert!(!diagnostics.is_empty());
    assert_eq!(store.rules().unwrap().text, RULES_V1);
    assert_eq!(store.version().unwrap(), 1);
}

#[test]
fn versions_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    let session = store.login(NEW_PIN).unwrap();
    assert!(matches!(
        session.rollback(),
        Err(StoreError::NoPreviousVersion)
    ));
    assert_eq!(session.save_rules(RULES_V2).unwrap(), 2);
    assert_eq!(store.previous_rules().unwrap().unwrap().text, RULES_V1);
    assert_eq!(session.rollback().unwrap(), 3);
    let rules = store.rules().unwrap();
    assert_eq!((rules.version, rules.text.as_str()), (3, RULES_V1));
    assert_eq!(session.rollback().unwrap(), 4);
    assert_eq!(store.rules().unwrap().text, RULES_V2);
}

#[test]
fn tampered_rules_fall_back_to_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    store.login(NEW_PIN).unwrap().save_rules(RULES_V2).unwrap();
    let path = dir.path().join(RULES_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let error = store
        .read_rules_file(RULES_FILE, RulesSource::Current)
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { file } if file == RULES_FILE),
        "{error:?}"
    );
    assert!(error.to_string().contains(RULES_FILE));
    let rules = store.rules().unwrap();
    assert_eq!((rules.version, rules.text.as_str()), (1, RULES_V1));
    assert_eq!(rules.source, RulesSource::PreviousFallback);
    // Saving from there works and heals the current file.
    assert_eq!(
        store.login(NEW_PIN).unwrap().save_rules(RULES_V2).unwrap(),
        2
    );
    assert_eq!(store.rules().unwrap().source, RulesSource::Current);

    // Both bad: the error names the current file.
    fs::write(dir.path().join(PREVIOUS_RULES_FILE), b"garbage").unwrap();
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.rules(), Err(StoreError::Tampered { file }) if file == RULES_FILE));
}

#[test]
fn tampered_pin_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    let path = dir.path().join(PIN_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[sealed::HEADER_LEN + 1] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.login(NEW_PIN), Err(StoreError::Tampered { file }) if file == PIN_FILE));
    fs::write(&path, b"CWSL").unwrap();
    assert!(matches!(
        store.pin_state(),
        Err(StoreError::Malformed { file, error: WireError::Truncated { len: 4 } }) if file == PIN_FILE
    ));
}

#[test]
fn files_swapped_between_purposes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    store.login(NEW_PIN).unwrap().save_rules(RULES_V2).unwrap();
    let d = dir.path();
    // The previous rules as current (a downgrade by file copy) is refused...
    fs::copy(d.join(PREVIOUS_RULES_FILE), d.join(RULES_FILE)).unwrap();
    assert!(matches!(
        store.read_rules_file(RULES_FILE, RulesSource::Current),
        Err(StoreError::Tampered { .. })
    ));
    // ...and so is the PIN file as the rules, and the rules as the PIN file.
    fs::copy(d.join(PIN_FILE), d.join(PREVIOUS_RULES_FILE)).unwrap();
    assert!(matches!(store.rules(), Err(StoreError::Tampered { file }) if file == RULES_FILE));
    fs::copy(d.join(AUDIT_FILE), d.join(PIN_FILE)).unwrap();
    assert!(matches!(store.pin_state(), Err(StoreError::Tampered { file }) if file == PIN_FILE));
    // A file from another card (another key) does not open either.
    let other = tempfile::tempdir().unwrap();
    let _other_store = open(other.path());
    fs::copy(other.path().join(RULES_FILE), d.join(RULES_FILE)).unwrap();
    assert!(matches!(store.rules(), Err(StoreError::Tampered { .. })));
}

#[test]
fn audit_log_records_events_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let puk = set_up(&store);
    let _ = store.login("9999");
    store.login(NEW_PIN).unwrap().save_rules(RULES_V2).unwrap();
    for _ in 0..3 {
        let _ = store.login("9999");
    }
    for _ in 0..5 {
        let _ = store.login(NEW_PIN);
    }
    store.unblock(&puk, "2468").unwrap();
    let events: Vec<_> = store
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    use AuditEvent::*;
    assert_eq!(
        events,
        [
            Created,
            SetUp,
            LoginFailed { tries_left: 2 },
            LoginOk,
            RulesChanged { version: 2 },
            LoginFailed { tries_left: 2 },
            LoginFailed { tries_left: 1 },
            LoginFailed { tries_left: 0 },
            LoginWhileBlocked,
            Unblocked,
        ]
    );
    assert_eq!(store.audit().unwrap()[9].actor(), Actor::PukHolder);
    assert_eq!(store.audit().unwrap()[1].actor(), Actor::Owner);
    // The plaintext of the log holds kinds and numbers only.
    let plain = store.read_sealed(AUDIT_FILE).unwrap();
    for secret in ["1234", NEW_PIN, "9999", "2468", puk.as_str()] {
        assert!(
            !plain.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret}"
        );
    }
    // Bounded.
    let session = store.login("2468").unwrap();
    for _ in 0..audit::CAPACITY {
        session.rollback().unwrap();
    }
    assert_eq!(store.audit().unwrap().len(), audit::CAPACITY);
}

// ---- crash tests ----

const CHILD_ENV: &str = "CARDFW_STORE_TEST_CHILD";
const DIR_ENV: &str = "CARDFW_STORE_TEST_DIR";

/// Runs only in the child (when `CHILD_ENV` is set); in a normal test run it does nothing.
#[test]
fn child_process() {
    let Some(role) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).unwrap());
    let store = open(&dir);
    match role.to_str().unwrap() {
        "login-wrong-pin" => {
            let _ = store.login("0000");
            unreachable!("the crash hook aborts before the PIN is checked");
        }
        "unblock-wrong-puk" => {
            let _ = store.unblock("00000000", "2468");
            unreachable!("the crash hook aborts before the PUK is checked");
        }
        "save-loop" => {
            let session = store.login(NEW_PIN).unwrap();
            // The parent's random delay starts from here, not from a start-up whose length
            // depends on how loaded the machine is.
            println!("saving");
            loop {
                // Each text names the version it becomes, so the parent can check the pair.
                let next = store.version().unwrap() + 1;
                assert_eq!(session.save_rules(&saved_text(next)).unwrap(), next);
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

fn saved_text(version: u64) -> String {
    format!("# version {version}\nallow https host example.com\ndeny any\n")
}

fn child(role: &str, dir: &Path, crash_at: Option<&str>) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "store::tests::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env(DIR_ENV, dir)
        .env_remove(CRASH_HOOK_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(point) = crash_at {
        command.env(CRASH_HOOK_ENV, point);
    }
    command
}

#[test]
fn a_try_is_spent_even_when_the_check_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    for expected in [2, 1] {
        let status = child("login-wrong-pin", dir.path(), Some("after-pin-decrement"))
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(6),
            "the child aborted at the hook: {status:?}"
        );
        assert_eq!(store.pin_state().unwrap().tries_left, expected);
    }
    // The audit log has no entry for the killed attempts, but the counter is what protects.
    store.login(NEW_PIN).unwrap();
    assert_eq!(store.pin_state().unwrap().tries_left, 3);

    let status = child("unblock-wrong-puk", dir.path(), Some("after-puk-decrement"))
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(6), "{status:?}");
    assert_eq!(store.pin_state().unwrap().puk_tries_left, 9);
}

#[test]
fn rules_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    drop(store);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut last_version = 1;
    let mut runs_that_saved = 0;
    for run in 0..200 {
        // xorshift: a spread of delays from 0 to 30 ms, the same every run of the test.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 30_000);
        let mut process = child("save-loop", dir.path(), None)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut output = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        while !line.trim_end().ends_with("saving") {
            line.clear();
            if output.read_line(&mut line).unwrap() == 0 {
                panic!("run {run}: the child ended before saving");
            }
        }
        std::thread::sleep(delay);
        process.kill().unwrap();
        let status = process.wait().unwrap();
        assert!(
            status.signal() == Some(9) || !status.success(),
            "run {run}: {status:?}"
        );

        let store = open(dir.path());
        let rules = store.rules().unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(rules.source, RulesSource::Current, "run {run}");
        assert!(
            rules.version >= last_version,
            "run {run}: went back from {last_version}"
        );
        let ok = (rules.version == 1 && rules.text == RULES_V1)
            || rules.text == saved_text(rules.version);
        assert!(
            ok,
            "run {run}: version {} has text {:?}",
            rules.version, rules.text
        );
        rules::parse("rules", &rules.text).unwrap();
        if let Some(previous) = store.previous_rules().unwrap() {
            assert!(previous.version + 1 >= rules.version, "run {run}");
        }
        store.pin_state().unwrap();
        store.audit().unwrap();
        runs_that_saved += usize::from(rules.version > last_version);
        last_version = rules.version;
    }
    // Most children are killed mid-save; a few before their first save completes.
    assert!(
        runs_that_saved >= 50,
        "only {runs_that_saved} of 200 children saved anything"
    );
}

/// Issue 13.7: `list NAME file F` reads only plain names in the store's `lists/` folder, never
/// the store's own files or anything outside; a list file's lines are located, never quoted.
#[test]
fn list_files_stay_in_the_list_folder_and_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    let lists = dir.path().join(LISTS_DIR);
    fs::write(lists.join("ads.txt"), "ads.example\nsecret-word here\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join(PIN_FILE), lists.join("link.txt")).unwrap();
    fs::write(dir.path().join("beside.txt"), "x.example\n").unwrap();
    for name in [
        "device.key",
        "pin.sealed",
        "tls.crt",
        "tls.key.sealed",
        "puk.txt",
        "../beside.txt",
        "../pin.sealed",
        "/etc/passwd",
        ".hidden",
        "link.txt",
        "beside.txt",
    ] {
        let text = format!("list p file {name}\ndeny any host @p\ndefault allow\n");
        let errors = store.compile(RULES_NAME, &text).unwrap_err();
        assert_eq!(errors.kinds(), [rules::ErrorKind::ListFile], "{name}");
        assert_eq!(
            errors.0[0].file, RULES_NAME,
            "{name}: located in the rule file"
        );
    }
    let text = "list p file ads.txt\ndeny any host @p\ndefault allow\n";
    let errors = store.compile(RULES_NAME, text).unwrap_err();
    let shown = errors.to_string();
    assert!(shown.contains("ads.txt:2:"), "{shown}");
    assert!(!shown.contains("secret-word"), "{shown}");
    // Saving compiles with the list files too: the same refusal, nothing saved.
    let session = store.login(NEW_PIN).unwrap();
    match session.save_rules(text) {
        Err(StoreError::Rules(errors)) => assert!(!errors.to_string().contains("secret-word")),
        other => panic!("{other:?}"),
    }
    fs::write(lists.join("ads.txt"), "ads.example\n").unwrap();
    assert_eq!(session.save_rules(text).unwrap(), 2);
    // What the firewall loads: the saved text compiles with its lists.
    let saved = store.rules().unwrap();
    store.compile(RULES_NAME, &saved.text).unwrap();
}

#[test]
fn list_names() {
    for good in ["ads.txt", "hosts", "a-b_c.list", "UPPER.TXT"] {
        assert!(check_list_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/x",
        ".x",
        "x\\y",
        "a\nb",
        "device.key",
        "pin.sealed",
        "rules.sealed",
        "x.sealed",
        "tls.crt",
        "tls.key.sealed",
        "managed.sealed",
        "puk.txt",
        "lists",
        ".x.tmp",
        "audit.sealed",
    ] {
        assert!(check_list_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn vpn_keys_are_made_once_and_the_private_one_needs_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    // The "public key" here is the private one reversed: the store only keeps what it is given.
    let derive = |private: &[u8; 32]| {
        let mut public = *private;
        public.reverse();
        public
    };
    let corp = store.vpn_public_key_or_create("corp", derive).unwrap();
    let again = store
        .vpn_public_key_or_create("corp", |_| panic!("made twice"))
        .unwrap();
    assert_eq!(corp, again, "kept across calls");
    let lab = store.vpn_public_key_or_create("lab", derive).unwrap();
    assert_ne!(corp, lab, "one key per VPN");
    let reopened = open(dir.path());
    let session = reopened.login(NEW_PIN).unwrap();
    let private = session.unlock_vpn_key("corp").unwrap().unwrap();
    assert_eq!(derive(&private), corp, "the pair belongs together");
    assert!(session.unlock_vpn_key("other").unwrap().is_none());
    let audit = reopened.audit().unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|entry| entry.event == AuditEvent::VpnUnlocked)
            .count(),
        1
    );
    // The sealed file never shows a key in clear.
    let sealed = std::fs::read(dir.path().join(VPN_KEYS_FILE)).unwrap();
    assert!(!sealed.windows(4).any(|w| w == b"corp"));
}

/// Issue 16: the access-request queue: only on a managed card, one open request per block,
/// at most 20 open, the states the server reports kept.
#[test]
fn access_requests_are_queued_once_bounded_and_updated() {
    use proto::policy::{
        AccessProtocol, AccessRequestList, AccessRequestStatus, AccessState, Blocked,
    };
    use requests::{AskError, Asked};

    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_or_create(dir.path(), "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let blocked = |n: u16| Blocked {
        protocol: AccessProtocol::Tcp,
        host: "db.test".into(),
        port: n,
        path: None,
        rule: "rules:1".into(),
        at: 1,
    };
    assert!(matches!(
        store.ask_access(blocked(1), None),
        Err(AskError::NotManaged)
    ));
    let code = store.setup_code().unwrap().unwrap();
    store.setup(&code, "12345678").unwrap();
    store
        .login("12345678")
        .unwrap()
        .set_managed(Some(b"{}"))
        .unwrap();
    let Asked::New(first) = store.ask_access(blocked(1), Some("  \r\n".into())).unwrap() else {
        panic!("a new request")
    };
    assert_eq!(
        store.ask_access(blocked(1), None).unwrap(),
        Asked::Already(first.clone())
    );
    assert_eq!(store.access_requests().unwrap()[0].request.reason, None);
    for n in 2..=20 {
        assert!(matches!(
            store.ask_access(blocked(n), None).unwrap(),
            Asked::New(_)
        ));
    }
    assert!(matches!(
        store.ask_access(blocked(21), None),
        Err(AskError::Full)
    ));
    store.mark_request_sent(&first).unwrap();
    let declined = AccessState::Declined {
        message: "no".into(),
    };
    let changed = store
        .update_request_states(&AccessRequestList {
            requests: vec![
                AccessRequestStatus {
                    id: first.clone(),
                    state: declined.clone(),
                },
                AccessRequestStatus {
                    id: "f".repeat(32),
                    state: AccessState::Open,
                },
            ],
        })
        .unwrap();
    assert!(changed);
    // Reopened from the disk: what the sender and the page read.
    let store =
        Store::open_or_create(dir.path(), "deny any\n", PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let kept = store.access_requests().unwrap();
    assert_eq!(kept.len(), 20);
    assert_eq!(kept[0].state, declined);
    assert!(kept[0].sent);
    // The declined one freed a place.
    assert!(matches!(
        store.ask_access(blocked(21), None).unwrap(),
        Asked::New(_)
    ));
}

/// The page's VPNs: kept sealed across a restart, each name once, at most
/// `MAX_MANAGED_VPNS`, removed by name; each change audited.
#[test]
fn page_vpns_round_trip() {
    let vpn = |name: &str, second: u8| proto::policy::ManagedVpn {
        name: name.into(),
        peer_public_key: "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=".into(),
        endpoint: "198.51.100.8:51820".parse().unwrap(),
        address: "10.30.255.2".parse().unwrap(),
        networks: vec![format!("10.{second}.0.0/16")],
        names: vec!["*.lab.example".into()],
        resolver: Some(format!("10.{second}.0.53:53").parse().unwrap()),
        idle_lock_secs: 600,
        keepalive_secs: 25,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = ready(dir.path());
    assert!(store.page_vpns().unwrap().is_empty());
    let admin = store.login(NEW_PIN).unwrap();
    admin.add_page_vpn(vpn("lab", 30)).unwrap();
    admin.add_page_vpn(vpn("home", 31)).unwrap();
    let error = admin.add_page_vpn(vpn("lab", 32)).unwrap_err();
    assert!(matches!(&error, StoreError::PageVpn(why) if why.contains("added already")));
    drop(store);

    let store = open(dir.path());
    assert_eq!(
        store.page_vpns().unwrap(),
        vec![vpn("lab", 30), vpn("home", 31)]
    );
    let admin = store.login(NEW_PIN).unwrap();
    assert!(admin.remove_page_vpn("lab").unwrap());
    assert!(!admin.remove_page_vpn("lab").unwrap());
    assert_eq!(store.page_vpns().unwrap(), vec![vpn("home", 31)]);
    for i in 0..proto::policy::MAX_MANAGED_VPNS - 1 {
        admin
            .add_page_vpn(vpn(&format!("v{i}"), 40 + i as u8))
            .unwrap();
    }
    let error = admin.add_page_vpn(vpn("onemore", 60)).unwrap_err();
    assert!(matches!(&error, StoreError::PageVpn(why) if why.contains("at most")));
    let audit: Vec<_> = store.audit().unwrap().iter().map(|e| e.event).collect();
    assert!(audit.contains(&AuditEvent::VpnAdded));
    assert!(audit.contains(&AuditEvent::VpnRemoved));

    // Sealed: changed bytes are refused, never read as another set.
    let path = dir.path().join(PAGE_VPNS_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert!(matches!(
        store.page_vpns(),
        Err(StoreError::Tampered { file }) if file == PAGE_VPNS_FILE
    ));
}
