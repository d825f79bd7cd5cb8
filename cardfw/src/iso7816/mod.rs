//! The card's ISO 7816-4 face: the PIN and the rule file over APDUs (seed 000 §3.1:
//! "command-oriented access conditions"), reached through PC/SC.
//!
//! - [`Application`]: the cardwall application (commands in [`apdu::app`]) over the same
//!   [`Store`] as the web page: the same PIN counter, decremented before the check, the same
//!   [`AdminSession`] needed for every change, the same parser refusing a bad rule set.
//! - [`vpcd`]: the virtual-ICC side of vsmartcard's `vpcd` reader driver, so `pcscd` shows
//!   the card as a reader with a card in it.
//! - [`peerio`]: the Peer I/O client (class 12): network frames over the same connection.
//!
//! # Security status
//!
//! A correct VERIFY opens an [`AdminSession`] that lasts until the card is powered off or
//! reset, the application is selected again, a VERIFY fails, or VERIFY with P1 = FF resets
//! it: ISO 7816's security status. The PIN itself is never kept. Host tools connect in
//! exclusive mode and reset the card when they disconnect (`cardctl` does), so no other
//! program on the host inherits a verified state. READ BINARY needs the PIN too: the web page
//! shows the rules only after login as well.

pub mod peerio;
#[cfg(test)]
mod tests;
pub mod vpcd;

use apdu::app::{self, CardStatus};
use apdu::{Command, Response, StatusWord};
use zeroize::Zeroizing;

use crate::store::{AdminSession, Store, StoreError};

/// The largest rule file UPDATE BINARY accepts (the web page's form limit too).
pub const MAX_RULE_FILE: usize = 256 * 1024;
/// The longest response data one command returns (a vpcd message is at most 65535 bytes,
/// the status word included).
const MAX_RESPONSE_DATA: usize = u16::MAX as usize - 2;
/// The classes of the cardwall application: interindustry, no secure messaging, channel 0,
/// with or without the chaining bit.
const CLA_PLAIN: u8 = 0x00;

/// The cardwall application of one card session (from power on to power off or reset).
#[derive(Debug)]
pub struct Application<'store> {
    store: &'store Store,
    /// The security status: present after a correct VERIFY.
    session: Option<AdminSession<'store>>,
    rules_selected: bool,
    /// An UPDATE BINARY chain being received.
    chain: Option<Zeroizing<Vec<u8>>>,
    /// The rule text READ BINARY serves, taken at offset 0 so a file read in pieces is one
    /// version even if the rules change meanwhile.
    snapshot: Option<Zeroizing<Vec<u8>>>,
    last_refusal: String,
    refused: u32,
}

impl<'store> Application<'store> {
    pub fn new(store: &'store Store) -> Application<'store> {
        Application {
            store,
            session: None,
            rules_selected: false,
            chain: None,
            snapshot: None,
            last_refusal: String::new(),
            refused: 0,
        }
    }

    /// Power off or reset: everything of the session goes.
    pub fn reset(&mut self) {
        self.session = None;
        self.rules_selected = false;
        self.chain = None;
        self.snapshot = None;
        // It may quote the rules: it is for whoever presented the PIN, in this session only.
        self.last_refusal.clear();
    }

    /// Commands refused since power on.
    pub fn refused(&self) -> u32 {
        self.refused
    }

    /// Answers one command APDU (its raw bytes). Never panics on any input: a malformed
    /// command gets its status word, is counted, and is logged.
    pub fn transmit(&mut self, bytes: &[u8]) -> Response {
        let response = match Command::parse(bytes) {
            Ok(command) => self.handle(&command),
            Err(error) => {
                tracing::debug!(%error, "apdu: malformed command");
                Response::status(StatusWord::WRONG_LENGTH)
            }
        };
        if !response.sw.is_ok() && response.sw != StatusWord::END_OF_FILE {
            self.refused = self.refused.saturating_add(1);
            tracing::info!(
                ins = format_args!("{:02X}", bytes.get(1).copied().unwrap_or(0)),
                sw = %response.sw,
                "apdu: refused ({})",
                response.sw.meaning()
            );
        }
        response
    }

    fn handle(&mut self, command: &Command) -> Response {
        if command.cla & !apdu::CLA_CHAINING != CLA_PLAIN {
            // Peer I/O's class (12) would read as channel 2 with chaining: it is not one.
            let other_channel = command.cla & 0xE0 == 0 && command.cla & 0x03 != 0;
            return Response::status(if other_channel && command.cla != apdu::peerio::CLA {
                StatusWord::LOGICAL_CHANNEL_NOT_SUPPORTED
            } else {
                StatusWord::CLA_NOT_SUPPORTED
            });
        }
        let continues_chain = command.ins == app::INS_UPDATE_BINARY && self.chain.is_some();
        if !continues_chain {
            self.chain = None;
        }
        if command.is_chained() && command.ins != app::INS_UPDATE_BINARY {
            return Response::status(StatusWord::CHAINING_NOT_SUPPORTED);
        }
        match command.ins {
            app::INS_SELECT => self.select(command),
            app::INS_VERIFY => self.verify(command),
            app::INS_CHANGE_REFERENCE_DATA => self.change_reference_data(command),
            app::INS_RESET_RETRY_COUNTER => self.unblock(command),
            app::INS_DELETE_FILE => self.factory_reset(command),
            app::INS_READ_BINARY | app::INS_READ_BINARY_ODD => self.read_binary(command),
            app::INS_UPDATE_BINARY => self.update_binary(command),
            app::INS_GET_DATA => self.get_data(command),
            _ => Response::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    fn select(&mut self, command: &Command) -> Response {
        match (command.p1, command.p2) {
            (0x04, 0x00 | 0x0C) => {
                if command.data != app::AID {
                    return Response::status(StatusWord::FILE_NOT_FOUND);
                }
                self.reset();
                Response::status(StatusWord::OK)
            }
            (0x00 | 0x02, 0x00 | 0x0C) => {
                if command.data.len() != 2 {
                    return Response::status(StatusWord::WRONG_LENGTH);
                }
                if command.data != app::RULES_FID {
                    return Response::status(StatusWord::FILE_NOT_FOUND);
                }
                self.rules_selected = true;
                Response::status(StatusWord::OK)
            }
            _ => Response::status(StatusWord::INCORRECT_P1P2),
        }
    }

    fn verify(&mut self, command: &Command) -> Response {
        if command.p2 != app::PIN_REFERENCE {
            return Response::status(StatusWord::DATA_NOT_FOUND);
        }
        match command.p1 {
            0xFF if command.data.is_empty() => {
                self.session = None;
                Response::status(StatusWord::OK)
            }
            0x00 if command.data.is_empty() => {
                // No PIN: the state of the PIN, at no cost (ISO 7816-4 §11.5.6).
                if self.session.is_some() {
                    return Response::status(StatusWord::OK);
                }
                match self.store.pin_state() {
                    Ok(state) if state.blocked => {
                        Response::status(StatusWord::AUTHENTICATION_BLOCKED)
                    }
                    Ok(state) => Response::status(StatusWord::tries_left(state.tries_left)),
                    Err(error) => store_failure(&error),
                }
            }
            0x00 => {
                self.session = None;
                let Ok(pin) = std::str::from_utf8(&command.data) else {
                    return Response::status(StatusWord::INCORRECT_DATA);
                };
                match self.store.login(pin) {
                    Ok(session) => {
                        self.session = Some(session);
                        Response::status(StatusWord::OK)
                    }
                    Err(error) => store_failure(&error),
                }
            }
            _ => Response::status(StatusWord::INCORRECT_P1P2),
        }
    }

    fn change_reference_data(&mut self, command: &Command) -> Response {
        if command.p1 != 0x00 {
            return Response::status(StatusWord::INCORRECT_P1P2);
        }
        let Some((old, new)) = app::split_secret_pair(&command.data) else {
            return Response::status(StatusWord::INCORRECT_DATA);
        };
        match command.p2 {
            app::PIN_REFERENCE => self.change_pin(old, new),
            app::PUK_REFERENCE => match self.store.change_puk(old, new) {
                Ok(()) => Response::status(StatusWord::OK),
                Err(error) => store_failure(&error),
            },
            app::SETUP_REFERENCE => {
                self.session = None;
                match self.store.setup(old, new) {
                    Ok(puk) => {
                        tracing::info!("apdu: the card is set up");
                        Response::ok(puk.as_bytes().to_vec())
                    }
                    Err(error) => store_failure(&error),
                }
            }
            _ => Response::status(StatusWord::DATA_NOT_FOUND),
        }
    }

    /// DELETE FILE of the application: the factory reset. Physical presence is the reader.
    fn factory_reset(&mut self, command: &Command) -> Response {
        if command.p1p2() != 0 {
            return Response::status(StatusWord::INCORRECT_P1P2);
        }
        if command.data != app::AID {
            return Response::status(StatusWord::FILE_NOT_FOUND);
        }
        self.reset();
        match self.store.factory_reset() {
            Ok(()) => {
                tracing::warn!("apdu: factory reset: the card is new");
                log_setup_code(self.store);
                Response::status(StatusWord::OK)
            }
            Err(error) => store_failure(&error),
        }
    }

    fn change_pin(&mut self, old: &str, new: &str) -> Response {
        self.session = None;
        let session = match self.store.login(old) {
            Ok(session) => session,
            Err(error) => return store_failure(&error),
        };
        match session.change_pin(new) {
            Ok(()) => {
                self.session = Some(session);
                Response::status(StatusWord::OK)
            }
            Err(error) => store_failure(&error),
        }
    }

    fn unblock(&mut self, command: &Command) -> Response {
        let (puk, new_pin) = match secret_pair(command) {
            Ok(pair) => pair,
            Err(refusal) => return refusal,
        };
        self.session = None;
        match self.store.unblock(puk, new_pin) {
            Ok(()) => Response::status(StatusWord::OK),
            Err(error) => store_failure(&error),
        }
    }

    /// The admin session if the PIN was presented and changes are allowed.
    fn authorised(&self) -> Result<&AdminSession<'store>, StatusWord> {
        match &self.session {
            None => Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED),
            Some(session) => Ok(session),
        }
    }

    /// Where a READ or UPDATE BINARY points: the rule file by SFI in P1, or the selected
    /// file. Returns the offset (P2 with an SFI, P1-P2 otherwise).
    fn binary_target(&mut self, command: &Command) -> Result<usize, StatusWord> {
        if command.p1 & 0x80 != 0 {
            if command.p1 & 0x60 != 0 {
                return Err(StatusWord::INCORRECT_P1P2);
            }
            if command.p1 & 0x1F != app::RULES_SFI {
                return Err(StatusWord::FILE_NOT_FOUND);
            }
            self.rules_selected = true;
            Ok(usize::from(command.p2))
        } else if self.rules_selected {
            Ok(usize::from(command.p1p2()))
        } else {
            Err(StatusWord::NO_CURRENT_FILE)
        }
    }

    fn read_binary(&mut self, command: &Command) -> Response {
        let offset = if command.ins == app::INS_READ_BINARY_ODD {
            if command.p1p2() != 0 {
                return Response::status(StatusWord::INCORRECT_P1P2);
            }
            if !self.rules_selected {
                return Response::status(StatusWord::NO_CURRENT_FILE);
            }
            match parse_offset(&command.data) {
                Some(offset) => offset,
                None => return Response::status(StatusWord::INCORRECT_DATA),
            }
        } else {
            if !command.data.is_empty() {
                return Response::status(StatusWord::WRONG_LENGTH);
            }
            match self.binary_target(command) {
                Ok(offset) => offset,
                Err(sw) => return Response::status(sw),
            }
        };
        let Some(ne) = command.le else {
            return Response::status(StatusWord::WRONG_LENGTH);
        };
        if let Err(sw) = self.authorised() {
            return Response::status(sw);
        }
        if offset == 0 || self.snapshot.is_none() {
            match self.store.rules() {
                Ok(rules) => self.snapshot = Some(Zeroizing::new(rules.text.into_bytes())),
                Err(error) => return store_failure(&error),
            }
        }
        let file = self.snapshot.as_deref().map_or(&[][..], |v| v.as_slice());
        if offset > file.len() {
            return Response::status(StatusWord::WRONG_P1P2);
        }
        let wanted = ne.min(MAX_RESPONSE_DATA);
        let end = file.len().min(offset + wanted);
        Response {
            data: file[offset..end].to_vec(),
            sw: if end - offset < wanted {
                StatusWord::END_OF_FILE
            } else {
                StatusWord::OK
            },
        }
    }

    fn update_binary(&mut self, command: &Command) -> Response {
        let offset = match self.binary_target(command) {
            Ok(offset) => offset,
            Err(sw) => {
                self.chain = None;
                return Response::status(sw);
            }
        };
        if offset != 0 {
            // The file is only ever replaced whole: see the table in `apdu::app`.
            self.chain = None;
            return Response::status(StatusWord::WRONG_P1P2);
        }
        if let Err(sw) = self.authorised() {
            self.chain = None;
            return Response::status(sw);
        }
        let mut text = self.chain.take().unwrap_or_default();
        if text.len() + command.data.len() > MAX_RULE_FILE {
            return Response::status(StatusWord::NOT_ENOUGH_MEMORY);
        }
        text.extend_from_slice(&command.data);
        if command.is_chained() {
            self.chain = Some(text);
            return Response::status(StatusWord::OK);
        }
        let Ok(text) = std::str::from_utf8(&text) else {
            self.last_refusal = "the rule file is not UTF-8 text".into();
            return Response::status(StatusWord::INCORRECT_DATA);
        };
        let saved = match self.authorised() {
            Ok(session) => session.save_rules(text),
            Err(sw) => return Response::status(sw),
        };
        match saved {
            Ok(version) => {
                self.last_refusal.clear();
                self.snapshot = None;
                tracing::info!(version, "rules saved over APDU");
                Response::status(StatusWord::OK)
            }
            Err(error) => {
                if let StoreError::Rules(diagnostics) = &error {
                    self.last_refusal = diagnostics.to_string();
                }
                store_failure(&error)
            }
        }
    }

    fn get_data(&mut self, command: &Command) -> Response {
        if !command.data.is_empty() {
            return Response::status(StatusWord::WRONG_LENGTH);
        }
        match command.p1p2() {
            app::TAG_STATUS => {
                let (rules, pin) = match (self.store.rules(), self.store.pin_state()) {
                    (Ok(rules), Ok(pin)) => (rules, pin),
                    (Err(error), _) | (_, Err(error)) => return store_failure(&error),
                };
                Response::ok(
                    CardStatus {
                        rules_version: rules.version,
                        rules_bytes: u32::try_from(rules.text.len()).unwrap_or(u32::MAX),
                        pin_tries_left: pin.tries_left,
                        puk_tries_left: pin.puk_tries_left,
                        needs_setup: pin.needs_setup,
                        verified: self.session.is_some(),
                        refused_commands: self.refused,
                    }
                    .emit(),
                )
            }
            app::TAG_LAST_REFUSAL => {
                if self.session.is_none() {
                    return Response::status(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let text = self.last_refusal.as_bytes();
                Response::ok(text[..text.len().min(MAX_RESPONSE_DATA)].to_vec())
            }
            app::TAG_SETUP_CODE => match self.store.setup_code() {
                Ok(Some(code)) => Response::ok(code.as_bytes().to_vec()),
                Ok(None) => Response::status(StatusWord::DATA_NOT_FOUND),
                Err(error) => store_failure(&error),
            },
            _ => Response::status(StatusWord::DATA_NOT_FOUND),
        }
    }
}

/// Prints the setup code of a card that is not set up on the card's console (standard error)
/// and in its log: what the owner reads at first start, as on a label.
pub fn log_setup_code(store: &Store) {
    if let Ok(Some(code)) = store.setup_code() {
        let shown = crate::store::format_setup_code(&code);
        eprintln!("{}{}", crate::store::SETUP_CODE_LOG, shown.as_str());
        tracing::warn!(
            "a new card: set it up on its web page or with `cardctl setup`, with the setup code printed above"
        );
    }
}

/// The two secrets of CHANGE REFERENCE DATA or RESET RETRY COUNTER (P1 00, the PIN).
fn secret_pair(command: &Command) -> Result<(&str, &str), Response> {
    if (command.p1, command.p2) != (0x00, app::PIN_REFERENCE) {
        return Err(Response::status(StatusWord::INCORRECT_P1P2));
    }
    app::split_secret_pair(&command.data).ok_or(Response::status(StatusWord::INCORRECT_DATA))
}

/// The offset data object of READ BINARY (B1): tag 54, one to three bytes of offset.
fn parse_offset(data: &[u8]) -> Option<usize> {
    match data {
        [app::TAG_OFFSET, len @ 1..=3, value @ ..] if value.len() == usize::from(*len) => {
            Some(value.iter().fold(0, |acc, &b| acc << 8 | usize::from(b)))
        }
        _ => None,
    }
}

/// The status word for a store refusal: the same refusals the web page shows, as ISO 7816
/// says them.
fn store_failure(error: &StoreError) -> Response {
    let sw = match error {
        StoreError::WrongPin { tries_left } | StoreError::WrongPuk { tries_left } => {
            StatusWord::tries_left(*tries_left)
        }
        StoreError::Blocked | StoreError::PukBlocked => StatusWord::AUTHENTICATION_BLOCKED,
        StoreError::WrongSetupCode { tries_left } => StatusWord::tries_left(*tries_left),
        StoreError::SetupBlocked => StatusWord::AUTHENTICATION_BLOCKED,
        StoreError::BadPin(_) | StoreError::BadPuk(_) | StoreError::Rules(_) => {
            StatusWord::INCORRECT_DATA
        }
        StoreError::NotSetUp | StoreError::AlreadySetUp => StatusWord::CONDITIONS_NOT_SATISFIED,
        // A managed card's rules change only by signed bundles from its policy server: the
        // same refusal the web page's read-only editor gives.
        StoreError::Managed { .. } => StatusWord::CONDITIONS_NOT_SATISFIED,
        StoreError::Bundle(_) | StoreError::PageVpn(_) => StatusWord::INCORRECT_DATA,
        StoreError::NoPreviousVersion => StatusWord::DATA_NOT_FOUND,
        StoreError::Tampered { .. }
        | StoreError::Malformed { .. }
        | StoreError::Unreadable { .. }
        | StoreError::Missing { .. }
        | StoreError::Io { .. } => {
            tracing::error!(%error, "apdu: the store failed");
            StatusWord::MEMORY_FAILURE
        }
        StoreError::Random(_) | StoreError::Argon2(_) => {
            tracing::error!(%error, "apdu: the store failed");
            StatusWord::UNKNOWN_ERROR
        }
    };
    Response::status(sw)
}
