//! The application over a real store in a temporary directory: every command, its status
//! words, and that the store's PIN counter and rules are the ones the web page uses.

use apdu::app::{self, CardStatus};
use apdu::{Command, StatusWord};

use super::vpcd::{self, Icc};
use super::*;
use crate::store::PinCost;

const RULES: &str = "deny any\n";
const NEW_RULES: &str = "allow https host example.com\ndeny any\n";
const PIN: &str = "4711";

/// A card set up with [`PIN`], and its PUK.
fn store_and_puk(dir: &std::path::Path) -> (Store, String) {
    let store = Store::open_or_create(dir, RULES, PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let code = store.setup_code().unwrap().unwrap();
    let puk = store.setup(&code, PIN).unwrap().to_string();
    (store, puk)
}

fn store(dir: &std::path::Path) -> Store {
    store_and_puk(dir).0
}

fn get_data(tag: u16) -> Command {
    let [p1, p2] = tag.to_be_bytes();
    Command::new(0, app::INS_GET_DATA, p1, p2).with_le(256)
}

fn sw(app: &mut Application<'_>, command: Command) -> StatusWord {
    app.transmit(&command.emit()).sw
}

fn verify(pin: &str) -> Command {
    Command::new(0, app::INS_VERIFY, 0, app::PIN_REFERENCE).with_data(pin.as_bytes())
}

fn select_rules() -> Command {
    Command::new(0, app::INS_SELECT, 2, 0x0C).with_data(app::RULES_FID)
}

fn read(offset: u16, le: usize) -> Command {
    let [p1, p2] = offset.to_be_bytes();
    Command::new(0, app::INS_READ_BINARY, p1, p2).with_le(le)
}

fn update(data: &[u8], chained: bool) -> Command {
    let cla = if chained { apdu::CLA_CHAINING } else { 0 };
    Command::new(cla, app::INS_UPDATE_BINARY, 0, 0).with_data(data)
}

fn status(app: &mut Application<'_>) -> CardStatus {
    let response = app.transmit(&Command::new(0, app::INS_GET_DATA, 1, 1).with_le(256).emit());
    assert_eq!(response.sw, StatusWord::OK);
    CardStatus::parse(&response.data).unwrap()
}

#[test]
fn wrong_pin_counts_down_then_blocks_and_the_puk_unblocks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, puk) = store_and_puk(dir.path());
    let mut app = Application::new(&store);
    assert_eq!(sw(&mut app, verify("0000")), StatusWord(0x63C2));
    assert_eq!(sw(&mut app, verify("0000")), StatusWord(0x63C1));
    // The web page's counter is the same one.
    assert_eq!(store.pin_state().unwrap().tries_left, 1);
    assert_eq!(
        sw(&mut app, verify("0000")),
        StatusWord::AUTHENTICATION_BLOCKED
    );
    assert_eq!(
        sw(&mut app, verify(PIN)),
        StatusWord::AUTHENTICATION_BLOCKED
    );
    assert!(store.login(PIN).is_err(), "blocked for the web page too");
    let ask = Command::new(0, app::INS_VERIFY, 0, app::PIN_REFERENCE);
    assert_eq!(
        sw(&mut app, ask.clone()),
        StatusWord::AUTHENTICATION_BLOCKED
    );

    let unblock = |puk: &str, pin: &str| {
        Command::new(0, app::INS_RESET_RETRY_COUNTER, 0, app::PIN_REFERENCE)
            .with_data(app::secret_pair(puk, pin).unwrap())
    };
    assert_eq!(
        sw(&mut app, unblock("000000000000", "5555")),
        StatusWord(0x63C9)
    );
    assert_eq!(sw(&mut app, unblock(&puk, "5555")), StatusWord::OK);
    assert_eq!(sw(&mut app, ask), StatusWord(0x63C3));
    assert_eq!(sw(&mut app, verify("5555")), StatusWord::OK);
    assert!(status(&mut app).verified);
}

#[test]
fn rules_read_and_update_need_the_pin_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut app = Application::new(&store);
    assert_eq!(sw(&mut app, read(0, 256)), StatusWord::NO_CURRENT_FILE);
    assert_eq!(sw(&mut app, select_rules()), StatusWord::OK);
    assert_eq!(
        sw(&mut app, read(0, 256)),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    assert_eq!(
        sw(&mut app, update(NEW_RULES.as_bytes(), false)),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    assert_eq!(store.rules().unwrap().text, RULES);

    assert_eq!(sw(&mut app, verify(PIN)), StatusWord::OK);
    let response = app.transmit(&read(0, 256).emit());
    assert_eq!(
        (response.data.as_slice(), response.sw),
        (RULES.as_bytes(), StatusWord::END_OF_FILE)
    );
    assert_eq!(sw(&mut app, read(100, 1)), StatusWord::WRONG_P1P2);

    // A chained update of a file that does not parse: refused at the end, nothing changes.
    assert_eq!(
        sw(&mut app, update(b"allow https host ", true)),
        StatusWord::OK
    );
    assert_eq!(
        sw(&mut app, update(b"\nnonsense here\n", false)),
        StatusWord::INCORRECT_DATA
    );
    assert_eq!(store.rules().unwrap().version, 1);
    let why = app.transmit(&Command::new(0, app::INS_GET_DATA, 1, 2).with_le(256).emit());
    assert!(String::from_utf8(why.data).unwrap().contains("rules:"));

    // A good file, in pieces: saved as the next version.
    let (first, second) = NEW_RULES.as_bytes().split_at(10);
    assert_eq!(sw(&mut app, update(first, true)), StatusWord::OK);
    assert_eq!(sw(&mut app, update(second, false)), StatusWord::OK);
    let saved = store.rules().unwrap();
    assert_eq!((saved.version, saved.text.as_str()), (2, NEW_RULES));
    assert_eq!(status(&mut app).rules_version, 2);

    // Reading in pieces, with the SFI and with the odd instruction's offset object.
    let head = app.transmit(
        &Command::new(0, app::INS_READ_BINARY, 0x81, 0)
            .with_le(5)
            .emit(),
    );
    assert_eq!(
        (head.data.as_slice(), head.sw),
        (&NEW_RULES.as_bytes()[..5], StatusWord::OK)
    );
    let tail = app.transmit(
        &Command::new(0, app::INS_READ_BINARY_ODD, 0, 0)
            .with_data([app::TAG_OFFSET, 1, 5])
            .with_le(256)
            .emit(),
    );
    assert_eq!(tail.data, &NEW_RULES.as_bytes()[5..]);

    // A reset forgets the PIN.
    app.reset();
    assert_eq!(sw(&mut app, select_rules()), StatusWord::OK);
    assert_eq!(
        sw(&mut app, read(0, 256)),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

/// Issue 13.9: a new card has no PIN; its reader (physical presence) reads the setup code,
/// which sets the first PIN and returns the PUK, once.
#[test]
fn a_new_card_is_set_up_over_its_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_or_create(dir.path(), RULES, PinCost::INSECURE_FAST_FOR_TESTS).unwrap();
    let mut app = Application::new(&store);
    assert!(status(&mut app).needs_setup);
    assert_eq!(
        sw(&mut app, verify("1234")),
        StatusWord::CONDITIONS_NOT_SATISFIED,
        "no default PIN"
    );
    let code = app.transmit(&get_data(app::TAG_SETUP_CODE).emit());
    assert_eq!(code.sw, StatusWord::OK);
    let code = String::from_utf8(code.data).unwrap();
    assert_eq!(code, *store.setup_code().unwrap().unwrap());
    let setup = |code: &str, pin: &str| {
        Command::new(0, app::INS_CHANGE_REFERENCE_DATA, 0, app::SETUP_REFERENCE)
            .with_data(app::secret_pair(code, pin).unwrap())
            .with_le(256)
    };
    assert_eq!(sw(&mut app, setup("000000000000", PIN)), StatusWord(0x63C9));
    let answer = app.transmit(&setup(&code, PIN).emit());
    assert_eq!(answer.sw, StatusWord::OK);
    let puk = String::from_utf8(answer.data).unwrap();
    assert!(crate::store::pin::check_puk_format(&puk).is_ok(), "{puk}");
    assert!(!status(&mut app).needs_setup);
    assert_eq!(
        sw(&mut app, get_data(app::TAG_SETUP_CODE)),
        StatusWord::DATA_NOT_FOUND,
        "the code is gone once set up"
    );
    assert_eq!(
        sw(&mut app, setup(&code, "2468")),
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(sw(&mut app, verify(PIN)), StatusWord::OK);
    assert!(store.login(PIN).is_ok(), "the web page takes the PIN");

    // Change the PIN and the PUK (each with its own counter).
    let change = |reference: u8, old: &str, new: &str| {
        Command::new(0, app::INS_CHANGE_REFERENCE_DATA, 0, reference)
            .with_data(app::secret_pair(old, new).unwrap())
    };
    assert_eq!(
        sw(&mut app, change(app::PIN_REFERENCE, "9999", "2468")),
        StatusWord(0x63C2)
    );
    assert_eq!(
        sw(&mut app, change(app::PIN_REFERENCE, PIN, "2468")),
        StatusWord::OK
    );
    assert_eq!(
        sw(
            &mut app,
            change(app::PUK_REFERENCE, "000000000000", "1357913579")
        ),
        StatusWord(0x63C9)
    );
    assert_eq!(
        sw(&mut app, change(app::PUK_REFERENCE, &puk, "1357913579")),
        StatusWord::OK
    );
    store.unblock("1357913579", "8642").unwrap();
    assert_eq!(sw(&mut app, verify("8642")), StatusWord::OK);
}

/// Issue 13.10 and 13.11: the factory reset is over the reader; GET DATA of the last refusal
/// needs the PIN and is cleared when the card is reset.
#[test]
fn factory_reset_and_the_last_refusal_need_the_reader_and_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut app = Application::new(&store);
    assert_eq!(sw(&mut app, verify(PIN)), StatusWord::OK);
    assert_eq!(sw(&mut app, select_rules()), StatusWord::OK);
    assert_eq!(
        sw(
            &mut app,
            update(b"allow https hots secret-host.example\n", false)
        ),
        StatusWord::INCORRECT_DATA
    );
    let why = app.transmit(&get_data(app::TAG_LAST_REFUSAL).emit());
    assert_eq!(why.sw, StatusWord::OK);
    assert!(String::from_utf8_lossy(&why.data).contains("secret-host"));
    // Without the PIN: refused.
    let forget = Command::new(0, app::INS_VERIFY, 0xFF, app::PIN_REFERENCE);
    assert_eq!(sw(&mut app, forget), StatusWord::OK);
    assert_eq!(
        sw(&mut app, get_data(app::TAG_LAST_REFUSAL)),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // After a reset, even with the PIN: nothing left.
    app.reset();
    assert_eq!(sw(&mut app, verify(PIN)), StatusWord::OK);
    let why = app.transmit(&get_data(app::TAG_LAST_REFUSAL).emit());
    assert_eq!((why.sw, why.data.len()), (StatusWord::OK, 0));

    let reset = |data: &[u8]| Command::new(0, app::INS_DELETE_FILE, 0, 0).with_data(data);
    assert_eq!(sw(&mut app, reset(b"other")), StatusWord::FILE_NOT_FOUND);
    assert!(store.login(PIN).is_ok(), "nothing wiped");
    assert_eq!(sw(&mut app, reset(&app::AID)), StatusWord::OK);
    assert!(status(&mut app).needs_setup);
    assert!(!status(&mut app).verified);
    assert!(matches!(store.login(PIN), Err(StoreError::NotSetUp)));
}

#[test]
fn garbage_gets_its_status_word() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut app = Application::new(&store);
    for (bytes, expected) in [
        (&[][..], StatusWord::WRONG_LENGTH),
        (&[0x00, 0xA4], StatusWord::WRONG_LENGTH),
        (
            &[0x00, 0x20, 0x00, 0x81, 0x05, 0x31],
            StatusWord::WRONG_LENGTH,
        ),
        (
            &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x01],
            StatusWord::WRONG_LENGTH,
        ),
        (&[0x00, 0x42, 0x00, 0x00], StatusWord::INS_NOT_SUPPORTED),
        (&[0xFF, 0xA4, 0x04, 0x00], StatusWord::CLA_NOT_SUPPORTED),
        (
            &[0x80, 0xCA, 0x01, 0x01, 0x00],
            StatusWord::CLA_NOT_SUPPORTED,
        ),
        (
            &[0x01, 0xCA, 0x01, 0x01, 0x00],
            StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED,
        ),
        (
            &[0x12, 0xE8, 0x00, 0x00, 0x01, 0x00],
            StatusWord::CLA_NOT_SUPPORTED,
        ),
        (
            &[0x10, 0xCA, 0x01, 0x01, 0x00],
            StatusWord::CHAINING_NOT_SUPPORTED,
        ),
        (
            &[0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00],
            StatusWord::FILE_NOT_FOUND,
        ),
        (
            &[0x00, 0xA4, 0x02, 0x0C, 0x02, 0x3F, 0x00],
            StatusWord::FILE_NOT_FOUND,
        ),
        (&[0x00, 0xA4, 0x07, 0x00], StatusWord::INCORRECT_P1P2),
        (&[0x00, 0xB0, 0x85, 0x00, 0x00], StatusWord::FILE_NOT_FOUND),
        (&[0x00, 0xCA, 0x7F, 0x7F, 0x00], StatusWord::DATA_NOT_FOUND),
        (
            &[0x00, 0x20, 0x00, 0x82, 0x04, 0x31, 0x31, 0x31, 0x31],
            StatusWord::DATA_NOT_FOUND,
        ),
        (
            &[0x00, 0x20, 0x00, 0x81, 0x02, 0xC3, 0x28],
            StatusWord::INCORRECT_DATA,
        ),
        (
            &[0x00, 0x20, 0x00, 0x81, 0x02, 0x31, 0x31],
            StatusWord::INCORRECT_DATA,
        ),
        (
            &[0x00, 0x24, 0x00, 0x81, 0x01, 0x31],
            StatusWord::INCORRECT_DATA,
        ),
    ] {
        assert_eq!(app.transmit(bytes).sw, expected, "{bytes:02X?}");
    }
    // None of that cost a try (a PIN not of 4-16 digits cannot match), and all was counted.
    assert_eq!(store.pin_state().unwrap().tries_left, 3);
    assert_eq!(status(&mut app).refused_commands, 19);
}

/// The vpcd framing over an in-memory stream: controls, the ATR, an APDU, and the end.
#[test]
fn vpcd_messages() {
    struct Recorder(Vec<&'static str>);
    impl Icc for Recorder {
        fn reset(&mut self) {
            self.0.push("reset");
        }
        fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
            assert_eq!(command, [0, 0xA4, 4, 0]);
            self.0.push("apdu");
            vec![0x90, 0x00]
        }
    }
    let mut input = Vec::new();
    for message in [
        &[vpcd::POWER_ON][..],
        &[vpcd::GET_ATR],
        &[0, 0xA4, 4, 0],
        &[9],
        &[vpcd::RESET],
    ] {
        input.extend_from_slice(&(message.len() as u16).to_be_bytes());
        input.extend_from_slice(message);
    }
    let mut stream = Duplex {
        input: std::io::Cursor::new(input),
        output: Vec::new(),
    };
    let mut card = Recorder(Vec::new());
    vpcd::serve_connection(&mut stream, &mut card).unwrap();
    assert_eq!(card.0, ["reset", "apdu", "reset"]);
    assert_eq!(
        stream.output,
        [0, 4, 0x3B, 0x80, 0x01, 0x81, 0, 2, 0x90, 0x00]
    );
}

struct Duplex {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl std::io::Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
