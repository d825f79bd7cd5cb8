//! The card's ISO 7816 face through the real stack: `cardctl` → libpcsclite → `pcscd` →
//! `vpcd` → TCP → `cardfw`'s virtual card → the sealed store. See `e2e::pcsc` for how each
//! test gets its own `pcscd`.

use std::process::Output;

use e2e::pcsc::{self, CardReader};
use lab::topology::Lab;

const FIRST_RULES: &str = "deny any\n";
const PIN: &str = "4711";

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(reader: &CardReader, args: &[&str], stdin: &str) -> String {
    let output = reader.cardctl(args, stdin).expect("cardctl runs");
    assert!(
        output.status.success(),
        "cardctl {args:?}: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn refused(reader: &CardReader, args: &[&str], stdin: &str) -> String {
    let output = reader.cardctl(args, stdin).expect("cardctl runs");
    assert!(
        !output.status.success(),
        "cardctl {args:?} should fail: {}",
        text(&output)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// `cardctl send` each APDU; the status word of each response, in order.
fn status_words(reader: &CardReader, apdus: &[&str]) -> Vec<String> {
    let mut args = vec!["send"];
    args.extend_from_slice(apdus);
    ok(reader, &args, "")
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap_or("").to_owned())
        .collect()
}

/// A new card set up over its reader with [`PIN`]; its PUK is in `PUK_OF`.
fn setup(tag: &str) -> Option<(Lab, CardReader)> {
    setup_with_puk(tag).map(|(lab, reader, _)| (lab, reader))
}

fn setup_with_puk(tag: &str) -> Option<(Lab, CardReader, String)> {
    if !pcsc::require_pcsc() {
        return None;
    }
    let mut lab = Lab::new(tag).expect("lab");
    let ns = lab.namespace("card").expect("namespace");
    let reader = pcsc::start(&mut lab, &ns, FIRST_RULES).expect("pcscd and the card");
    assert!(ok(&reader, &["status"], "").contains("not set up"));
    // Issue 13.9: no default PIN; the setup code comes from the card's reader (or its console).
    assert!(refused(&reader, &["verify"], "1234\n").contains("6985"));
    let code = ok(&reader, &["setup-code"], "");
    let from_store = cardfw::store::Store::read_setup_code(&reader.store)
        .unwrap()
        .unwrap();
    assert_eq!(code.trim().replace('-', ""), *from_store);
    let puk = reader.set_up(PIN).expect("cardctl setup");
    assert!(refused(&reader, &["setup-code"], "").contains("set up"));
    Some((lab, reader, puk))
}

#[test]
fn wrong_pin_counts_down_blocks_after_three_and_the_puk_unblocks() {
    let Some((_lab, reader, puk)) = setup_with_puk("apdupin") else {
        return;
    };
    ok(&reader, &["verify"], &format!("{PIN}\n"));
    let first = refused(&reader, &["verify"], "0000\n");
    assert!(
        first.contains("63C2") && first.contains("2 tries left"),
        "{first}"
    );
    let second = refused(&reader, &["verify"], "0000\n");
    assert!(
        second.contains("63C1") && second.contains("1 tries left"),
        "{second}"
    );
    let third = refused(&reader, &["verify"], "0000\n");
    assert!(
        third.contains("6983") && third.contains("blocked"),
        "{third}"
    );
    // Blocked means blocked: the right PIN is refused too, and costs nothing more.
    let right = refused(&reader, &["verify"], &format!("{PIN}\n"));
    assert!(right.contains("6983"), "{right}");
    assert!(ok(&reader, &["status"], "").contains("PIN: blocked"));
    assert!(refused(&reader, &["rules", "get"], &format!("{PIN}\n")).contains("6983"));

    let wrong_puk = refused(&reader, &["unblock"], "000000000000\n2468\n");
    assert!(
        wrong_puk.contains("63C9") && wrong_puk.contains("PUK"),
        "{wrong_puk}"
    );
    ok(&reader, &["unblock"], &format!("{puk}\n2468\n"));
    let status = ok(&reader, &["status"], "");
    assert!(
        status.contains("PIN: 3 tries left") && status.contains("PUK: 10 tries left"),
        "{status}"
    );
    ok(&reader, &["verify"], "2468\n");
    assert!(refused(&reader, &["verify"], &format!("{PIN}\n")).contains("63C2"));
}

#[test]
fn rules_round_trip_and_every_refusal_changes_nothing() {
    let Some((lab, reader)) = setup("apdurules") else {
        return;
    };
    // Longer than one APDU each way: sent as a chain, read in pieces.
    let mut rules = String::new();
    for i in 0..60 {
        rules.push_str(&format!("allow https host site{i}.example.com\n"));
    }
    rules.push_str("deny any\n");
    assert!(rules.len() > 1000);
    let file = lab.dir().join("new.rules");
    std::fs::write(&file, &rules).unwrap();
    let put = ok(
        &reader,
        &["rules", "put", &file.to_string_lossy()],
        &format!("{PIN}\n"),
    );
    assert!(put.contains("version 2"), "{put}");
    assert_eq!(ok(&reader, &["rules", "get"], &format!("{PIN}\n")), rules);

    // No PIN: reading and updating are refused with 6982 (security status not satisfied).
    let select_rules = "00A4020C025253";
    let words = status_words(
        &reader,
        &[select_rules, "00B0000000", "00D6000009616C6C6F7720616E79"],
    );
    assert_eq!(words, ["9000", "6982", "6982"]);

    // A rule file that does not parse: refused with the parser's message, nothing changes.
    let bad = lab.dir().join("bad.rules");
    std::fs::write(
        &bad,
        "allow https host ok.example.com\nallow sometimes maybe\n",
    )
    .unwrap();
    let why = refused(
        &reader,
        &["rules", "put", &bad.to_string_lossy()],
        &format!("{PIN}\n"),
    );
    assert!(why.contains("6A80") && why.contains("rules:2:"), "{why}");
    assert_eq!(ok(&reader, &["rules", "get"], &format!("{PIN}\n")), rules);
    assert!(ok(&reader, &["status"], "").contains("rules: version 2,"));

    // A wrong PIN on put costs a try and writes nothing.
    let wrong = refused(&reader, &["rules", "put", &bad.to_string_lossy()], "9999\n");
    assert!(wrong.contains("63C2"), "{wrong}");
    assert!(ok(&reader, &["status"], "").contains("PIN: 2 tries left"));
}

#[test]
fn garbage_apdus_each_get_their_status_word_and_the_card_lives_on() {
    let Some((lab, reader)) = setup("apdujunk") else {
        return;
    };
    let long_mismatch = format!("00D60000FF{}", "AB".repeat(300));
    let extended_mismatch = format!("00D6000000FFFF{}", "CD".repeat(20));
    let cases: &[(&str, &str)] = &[
        ("00B0", "6700"),                         // shorter than a header
        ("00A404", "6700"),                       // three bytes
        ("002000810531", "6700"),                 // Lc 5, one data byte
        ("00B000000000", "6700"),                 // extended Le cut short
        (&long_mismatch, "6700"),                 // Lc FF, 300 data bytes
        (&extended_mismatch, "6700"),             // extended Lc FFFF, 20 data bytes
        ("00420000", "6D00"),                     // unknown instruction
        ("FFA40400", "6E00"),                     // invalid class
        ("80CA010100", "6E00"),                   // proprietary class
        ("01CA010100", "6881"),                   // logical channel 1
        ("10CA010100", "6884"),                   // chaining on GET DATA
        ("00A4040009F0636172647761AAAA", "6A82"), // unknown application
        ("00A4020C023F00", "6A82"),               // unknown file
        ("00A4070000", "6A86"),                   // bad SELECT parameters
        ("00B0850000", "6A82"),                   // READ BINARY of SFI 5
        ("00CA7F7F00", "6A88"),                   // unknown data object
        ("00200082023131", "6A88"),               // unknown PIN reference
        ("0020008102C328", "6A80"),               // not UTF-8
        ("00D6000001AA", "6986"),                 // UPDATE with no file selected
        ("00A4020C025253", "9000"),
        ("00B0000000", "6982"), // and still no PIN
    ];
    let apdus: Vec<&str> = cases.iter().map(|(apdu, _)| *apdu).collect();
    let expected: Vec<&str> = cases.iter().map(|(_, sw)| *sw).collect();
    assert_eq!(status_words(&reader, &apdus), expected);
    // Nothing of that cost a try or stopped the card; the refusals were counted.
    let status = ok(&reader, &["status"], "");
    assert!(status.contains("PIN: 3 tries left"), "{status}");
    assert!(
        // 20 here, and 2 in `setup`: the default PIN and the setup code once set up.
        status.contains("refused since the card was powered: 22"),
        "{status}"
    );
    ok(&reader, &["verify"], &format!("{PIN}\n"));
    let log = lab.log_of(reader.card);
    assert!(
        log.contains("apdu: refused") && !log.contains("panicked"),
        "{log}"
    );
}

/// Issue 13.8 and 13.10: the PUK changes over the reader, and a factory reset over the reader
/// makes the card new (a new setup code, the first rules).
#[test]
fn puk_change_and_factory_reset_over_the_reader() {
    let Some((_lab, reader, puk)) = setup_with_puk("apdureset") else {
        return;
    };
    let wrong = refused(&reader, &["puk", "change"], "000000000000\n1357913579\n");
    assert!(wrong.contains("63C9"), "{wrong}");
    ok(&reader, &["puk", "change"], &format!("{puk}\n1357913579\n"));
    for _ in 0..3 {
        let _ = reader.cardctl(&["verify"], "0000\n");
    }
    ok(&reader, &["unblock"], "1357-9135-79\n2468\n");
    ok(&reader, &["verify"], "2468\n");
    assert!(refused(&reader, &["reset"], "").contains("--yes"));
    ok(&reader, &["reset", "--yes"], "");
    assert!(ok(&reader, &["status"], "").contains("not set up"));
    assert!(refused(&reader, &["verify"], "2468\n").contains("6985"));
    reader.set_up(PIN).expect("set up again");
    ok(&reader, &["verify"], &format!("{PIN}\n"));
}
