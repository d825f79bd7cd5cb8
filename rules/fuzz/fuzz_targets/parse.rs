//! Any text: the parser must return rules or errors, never panic; a list file likewise; and
//! whatever parses must print and parse back to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rules::read_list_file("fuzz.txt", text, |_| {});
    if let Ok(policy) = rules::parse("fuzz.rules", text) {
        let printed = policy.to_string();
        let reparsed = rules::parse("fuzz.rules", &printed).expect("printed rules parse");
        assert_eq!(reparsed.to_string(), printed);
        let _ = rules::RuleSet::compile("fuzz.rules", &policy, &rules::NoFiles);
    }
});
