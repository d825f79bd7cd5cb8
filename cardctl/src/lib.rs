//! `cardctl`'s link to the card: the cardwall application ([`apdu::app`]) through PC/SC.
//!
//! A [`Card`] holds the card in exclusive mode, and resets it when dropped: the PIN presented
//! in one `cardctl` run never serves another program on the host.

use std::ffi::{CStr, CString};

use apdu::app::{self, CardStatus};
use apdu::{Command, Response, StatusWord};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("PC/SC: {0} (is pcscd running?)")]
    Pcsc(#[from] pcsc::Error),
    #[error("no reader has a cardwall card in it (readers: {0})")]
    NoCard(String),
    #[error("no reader named {0:?}")]
    NoReader(String),
    #[error("{command}: the card answered {sw}: {}", sw.meaning())]
    Refused {
        command: &'static str,
        sw: StatusWord,
    },
    #[error("wrong {what} ({sw}): {tries} tries left")]
    Wrong {
        what: &'static str,
        sw: StatusWord,
        tries: u8,
    },
    #[error("the {what} is blocked ({sw}){hint}")]
    Blocked {
        what: &'static str,
        sw: StatusWord,
        hint: &'static str,
    },
    #[error("the card refused the rule file ({sw}), the running rules stay:\n{why}")]
    RulesRefused { sw: StatusWord, why: String },
    #[error("the card's answer is not understood: {0}")]
    Garbled(&'static str),
    #[error("{0}")]
    Usage(&'static str),
}

/// The card in a reader, the cardwall application selected.
pub struct Card {
    card: Option<pcsc::Card>,
    reader: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("reader", &self.reader)
            .finish()
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            let _ = card.disconnect(pcsc::Disposition::ResetCard);
        }
    }
}

impl Card {
    /// Connects to `reader`, or to the first reader whose card has the cardwall application.
    pub fn connect(reader: Option<&str>) -> Result<Card, CardError> {
        let context = pcsc::Context::establish(pcsc::Scope::User)?;
        let readers: Vec<CString> = match context.list_readers_owned() {
            Ok(readers) => readers,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let names = readers
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        if let Some(wanted) = reader {
            let name = readers
                .iter()
                .find(|r| r.to_bytes() == wanted.as_bytes())
                .ok_or_else(|| CardError::NoReader(wanted.to_owned()))?;
            return Card::open(&context, name);
        }
        for name in &readers {
            if let Ok(card) = Card::open(&context, name) {
                return Ok(card);
            }
        }
        Err(CardError::NoCard(if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }))
    }

    fn open(context: &pcsc::Context, reader: &CStr) -> Result<Card, CardError> {
        let card = context.connect(reader, pcsc::ShareMode::Exclusive, pcsc::Protocols::ANY)?;
        let mut card = Card {
            card: Some(card),
            reader: reader.to_string_lossy().into_owned(),
        };
        card.expect_ok(
            "SELECT",
            Command::new(0, app::INS_SELECT, 0x04, 0x0C).with_data(app::AID),
        )?;
        Ok(card)
    }

    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Sends one command and returns the card's response, whatever its status word.
    pub fn transmit(&mut self, command: &Command) -> Result<Response, CardError> {
        self.transmit_raw(&command.emit())
    }

    /// Sends bytes as they are, even when they are not a valid command APDU.
    pub fn transmit_raw(&mut self, bytes: &[u8]) -> Result<Response, CardError> {
        let card = self
            .card
            .as_ref()
            .ok_or(CardError::Garbled("disconnected"))?;
        let mut buffer = Zeroizing::new(vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED]);
        let bytes = card.transmit(bytes, &mut buffer)?;
        Response::parse(bytes).ok_or(CardError::Garbled("a response shorter than two bytes"))
    }

    fn expect_ok(&mut self, name: &'static str, command: Command) -> Result<Vec<u8>, CardError> {
        let response = self.transmit(&command)?;
        if response.sw.is_ok() {
            Ok(response.data)
        } else {
            Err(CardError::Refused {
                command: name,
                sw: response.sw,
            })
        }
    }

    pub fn status(&mut self) -> Result<CardStatus, CardError> {
        let [p1, p2] = app::TAG_STATUS.to_be_bytes();
        let data = self.expect_ok(
            "GET DATA",
            Command::new(0, app::INS_GET_DATA, p1, p2).with_le(256),
        )?;
        CardStatus::parse(&data).ok_or(CardError::Garbled("the status data"))
    }

    /// Presents the PIN: a wrong one costs a try, as on the card's web page.
    pub fn verify(&mut self, pin: &str) -> Result<(), CardError> {
        let command = Command::new(0, app::INS_VERIFY, 0, app::PIN_REFERENCE).with_data(pin);
        let response = self.transmit(&command)?;
        pin_outcome("VERIFY", "PIN", response.sw)
    }

    pub fn change_pin(&mut self, old: &str, new: &str) -> Result<(), CardError> {
        let data = Zeroizing::new(
            app::secret_pair(old, new).ok_or(CardError::Usage("a PIN has at most 16 digits"))?,
        );
        let command = Command::new(0, app::INS_CHANGE_REFERENCE_DATA, 0, app::PIN_REFERENCE)
            .with_data(data.to_vec());
        let response = self.transmit(&command)?;
        pin_outcome("CHANGE REFERENCE DATA", "PIN", response.sw)
    }

    pub fn unblock(&mut self, puk: &str, new_pin: &str) -> Result<(), CardError> {
        let puk: Zeroizing<String> =
            Zeroizing::new(puk.chars().filter(|c| !matches!(c, '-' | ' ')).collect());
        let data = Zeroizing::new(app::secret_pair(&puk, new_pin).ok_or(CardError::Usage(
            "the PUK and the PIN have at most 16 digits",
        ))?);
        let command = Command::new(0, app::INS_RESET_RETRY_COUNTER, 0, app::PIN_REFERENCE)
            .with_data(data.to_vec());
        let response = self.transmit(&command)?;
        pin_outcome("RESET RETRY COUNTER", "PUK", response.sw)
    }

    /// A new card's setup code (digits), or `None` once the card is set up. The reader is the
    /// card's physical-presence channel: whoever reaches it holds the card.
    pub fn setup_code(&mut self) -> Result<Option<Zeroizing<String>>, CardError> {
        let [p1, p2] = app::TAG_SETUP_CODE.to_be_bytes();
        let response = self.transmit(&Command::new(0, app::INS_GET_DATA, p1, p2).with_le(256))?;
        match response.sw {
            StatusWord::OK => Ok(Some(Zeroizing::new(
                String::from_utf8_lossy(&response.data).into_owned(),
            ))),
            StatusWord::DATA_NOT_FOUND => Ok(None),
            sw => Err(CardError::Refused {
                command: "GET DATA",
                sw,
            }),
        }
    }

    /// First setup: the setup code and the first PIN; returns the PUK, which the card shows
    /// this once.
    pub fn setup(&mut self, code: &str, pin: &str) -> Result<Zeroizing<String>, CardError> {
        let code: String = code.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        let data = Zeroizing::new(app::secret_pair(&code, pin).ok_or(CardError::Usage(
            "the setup code and the PIN have at most 16 digits",
        ))?);
        let command = Command::new(0, app::INS_CHANGE_REFERENCE_DATA, 0, app::SETUP_REFERENCE)
            .with_data(data.to_vec())
            .with_le(256);
        let response = self.transmit(&command)?;
        pin_outcome("CHANGE REFERENCE DATA", "setup code", response.sw)?;
        Ok(Zeroizing::new(
            String::from_utf8_lossy(&response.data).into_owned(),
        ))
    }

    /// Replaces the PUK; a wrong current PUK costs a PUK try.
    pub fn change_puk(&mut self, old: &str, new: &str) -> Result<(), CardError> {
        let strip = |s: &str| -> Zeroizing<String> {
            Zeroizing::new(s.chars().filter(|c| !matches!(c, '-' | ' ')).collect())
        };
        let (old, new) = (strip(old), strip(new));
        let data = Zeroizing::new(
            app::secret_pair(&old, &new).ok_or(CardError::Usage("a PUK has at most 16 digits"))?,
        );
        let command = Command::new(0, app::INS_CHANGE_REFERENCE_DATA, 0, app::PUK_REFERENCE)
            .with_data(data.to_vec());
        let response = self.transmit(&command)?;
        pin_outcome("CHANGE REFERENCE DATA", "PUK", response.sw)
    }

    /// The factory reset: everything on the card is wiped and it gets a new setup code.
    pub fn factory_reset(&mut self) -> Result<(), CardError> {
        self.expect_ok(
            "DELETE FILE",
            Command::new(0, app::INS_DELETE_FILE, 0, 0).with_data(app::AID),
        )
        .map(drop)
    }

    fn select_rules(&mut self) -> Result<(), CardError> {
        self.expect_ok(
            "SELECT rule file",
            Command::new(0, app::INS_SELECT, 0x02, 0x0C).with_data(app::RULES_FID),
        )
        .map(drop)
    }

    /// The rule file (the PIN must have been presented).
    pub fn read_rules(&mut self) -> Result<Vec<u8>, CardError> {
        self.select_rules()?;
        let mut file = Vec::new();
        loop {
            let command = match u16::try_from(file.len()) {
                Ok(offset) if offset <= 0x7FFF => {
                    let [p1, p2] = offset.to_be_bytes();
                    Command::new(0, app::INS_READ_BINARY, p1, p2).with_le(256)
                }
                _ => {
                    let offset = (file.len() as u32).to_be_bytes();
                    Command::new(0, app::INS_READ_BINARY_ODD, 0, 0)
                        .with_data([app::TAG_OFFSET, 3, offset[1], offset[2], offset[3]])
                        .with_le(256)
                }
            };
            let response = self.transmit(&command)?;
            match response.sw {
                StatusWord::OK if !response.data.is_empty() => file.extend(response.data),
                StatusWord::END_OF_FILE => {
                    file.extend(response.data);
                    return Ok(file);
                }
                sw => {
                    return Err(CardError::Refused {
                        command: "READ BINARY",
                        sw,
                    });
                }
            }
        }
    }

    /// Replaces the rule file, as one command chain; returns the new rule version.
    pub fn write_rules(&mut self, text: &[u8]) -> Result<u64, CardError> {
        self.select_rules()?;
        let pieces: Vec<&[u8]> = if text.is_empty() {
            vec![&[][..]]
        } else {
            text.chunks(255).collect()
        };
        for (index, piece) in pieces.iter().enumerate() {
            let last = index + 1 == pieces.len();
            let cla = if last { 0 } else { apdu::CLA_CHAINING };
            let response =
                self.transmit(&Command::new(cla, app::INS_UPDATE_BINARY, 0, 0).with_data(*piece))?;
            match response.sw {
                StatusWord::OK => {}
                StatusWord::INCORRECT_DATA if last => {
                    let [p1, p2] = app::TAG_LAST_REFUSAL.to_be_bytes();
                    let why = self
                        .expect_ok(
                            "GET DATA",
                            Command::new(0, app::INS_GET_DATA, p1, p2).with_le(65536),
                        )
                        .map(|why| String::from_utf8_lossy(&why).into_owned())
                        .unwrap_or_default();
                    return Err(CardError::RulesRefused {
                        sw: response.sw,
                        why,
                    });
                }
                sw => {
                    return Err(CardError::Refused {
                        command: "UPDATE BINARY",
                        sw,
                    });
                }
            }
        }
        Ok(self.status()?.rules_version)
    }
}

fn pin_outcome(command: &'static str, what: &'static str, sw: StatusWord) -> Result<(), CardError> {
    if sw.is_ok() {
        return Ok(());
    }
    if let Some(tries) = sw.as_tries_left() {
        return Err(CardError::Wrong { what, sw, tries });
    }
    if sw == StatusWord::AUTHENTICATION_BLOCKED {
        return Err(CardError::Blocked {
            what,
            sw,
            hint: match what {
                "PIN" => ": unblock it with `cardctl unblock` and the PUK",
                "setup code" => {
                    ": a factory reset (`cardctl reset`) gives the card a new setup code"
                }
                _ => ": only a factory reset (`cardctl reset`) makes the card usable again",
            },
        });
    }
    Err(CardError::Refused { command, sw })
}
