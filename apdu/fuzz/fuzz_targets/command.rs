//! Any bytes from the reader: parsed or refused, never a panic; what parses emits back to a
//! command that parses the same.
#![no_main]

use apdu::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(command) = Command::parse(bytes) {
        assert_eq!(Command::parse(&command.emit()), Ok(command));
    }
});
