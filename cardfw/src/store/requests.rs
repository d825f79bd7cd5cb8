//! The access-request queue (issue 16): what users of a managed card asked the policy server's
//! administrator for, and what became of it, in `requests.sealed`.
//!
//! Written without a PIN: the user asking is not the card's owner, and a request changes no
//! rule; the only way in is the card page's `POST /access-requests`, which takes only what
//! the card blocked ([`crate::firewall::asking`]). The record is bounded: at most
//! [`MAX_OPEN_REQUESTS_PER_CARD`] open requests (a further one is refused), at most
//! [`MAX_KEPT`] in all (the oldest decided ones go first). The same block asked for again
//! while its request is open makes no second request. The managed sender
//! (`managed::requests`) sends the unsent ones and writes back their states.

use proto::policy::{
    AccessRequest, AccessRequestError, AccessRequestList, AccessState, Blocked,
    MAX_OPEN_REQUESTS_PER_CARD,
};
use serde::{Deserialize, Serialize};

use super::{REQUESTS_FILE, Store, StoreError};

/// Requests kept in all, decided ones included (the card page shows them).
pub const MAX_KEPT: usize = 50;

/// One request on the card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Queued {
    pub request: AccessRequest,
    /// The server has it (it answered the send).
    pub sent: bool,
    pub state: AccessState,
}

impl Queued {
    /// The same target, by the same rule: what counts as asking twice.
    fn same_block(&self, blocked: &Blocked) -> bool {
        let mine = &self.request.blocked;
        (mine.protocol, &mine.host, mine.port, &mine.path, &mine.rule)
            == (
                blocked.protocol,
                &blocked.host,
                blocked.port,
                &blocked.path,
                &blocked.rule,
            )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    requests: Vec<Queued>,
}

/// What [`Store::ask_access`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Queued under this id.
    New(String),
    /// The same block has an open request already: this id.
    Already(String),
}

/// Why a request is not queued.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the request is refused: {0}")]
    Invalid(#[from] AccessRequestError),
    #[error(
        "this card has {MAX_OPEN_REQUESTS_PER_CARD} requests waiting already: wait for an answer"
    )]
    Full,
    #[error("the card is not managed by a policy server: ask the card's owner")]
    NotManaged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn random_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Store {
    fn read_requests(&self) -> Result<Record, StoreError> {
        match self.read_sealed_if_present(REQUESTS_FILE)? {
            None => Ok(Record::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| StoreError::Unreadable {
                file: REQUESTS_FILE.into(),
            }),
        }
    }

    fn write_requests(&self, record: &Record) -> Result<(), StoreError> {
        self.write_sealed(
            REQUESTS_FILE,
            &serde_json::to_vec(record).expect("plain data serialises"),
        )
    }

    /// Every request on the card, oldest first.
    pub fn access_requests(&self) -> Result<Vec<Queued>, StoreError> {
        Ok(self.read_requests()?.requests)
    }

    /// Queues a request for `blocked` (checked by the caller as something the card blocked)
    /// with the user's `reason`.
    pub fn ask_access(&self, blocked: Blocked, reason: Option<String>) -> Result<Asked, AskError> {
        if !self.is_managed() {
            return Err(AskError::NotManaged);
        }
        let reason = reason
            .map(|r| r.replace("\r\n", "\n").trim().to_string())
            .filter(|r| !r.is_empty());
        let _guard = self.lock();
        let mut record = self.read_requests()?;
        if let Some(open) = record
            .requests
            .iter()
            .find(|q| q.state == AccessState::Open && q.same_block(&blocked))
        {
            return Ok(Asked::Already(open.request.id.clone()));
        }
        let request = AccessRequest {
            id: random_id()?,
            blocked,
            reason,
        };
        request.check()?;
        let open = record
            .requests
            .iter()
            .filter(|q| q.state == AccessState::Open)
            .count();
        if open >= MAX_OPEN_REQUESTS_PER_CARD {
            return Err(AskError::Full);
        }
        // Room for one more: the oldest decided request goes (an open one never does: at most
        // MAX_OPEN_REQUESTS_PER_CARD of them, fewer than MAX_KEPT).
        while record.requests.len() >= MAX_KEPT {
            let Some(oldest) = record
                .requests
                .iter()
                .position(|q| q.state != AccessState::Open)
            else {
                break;
            };
            record.requests.remove(oldest);
        }
        let id = request.id.clone();
        record.requests.push(Queued {
            request,
            sent: false,
            state: AccessState::Open,
        });
        self.write_requests(&record)?;
        Ok(Asked::New(id))
    }

    /// Marks the request `id` as received by the server.
    pub fn mark_request_sent(&self, id: &str) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut record = self.read_requests()?;
        match record.requests.iter_mut().find(|q| q.request.id == id) {
            Some(queued) if !queued.sent => queued.sent = true,
            _ => return Ok(()),
        }
        self.write_requests(&record)
    }

    /// Takes the states the server reports for this card's requests; returns whether any
    /// changed. Ids the card does not hold are ignored (it dropped them, or the server
    /// has requests from before a factory reset).
    pub fn update_request_states(&self, list: &AccessRequestList) -> Result<bool, StoreError> {
        let _guard = self.lock();
        let mut record = self.read_requests()?;
        let mut changed = false;
        for status in &list.requests {
            if let Some(queued) = record
                .requests
                .iter_mut()
                .find(|q| q.request.id == status.id)
                && (queued.state != status.state || !queued.sent)
            {
                queued.state = status.state.clone();
                queued.sent = true;
                changed = true;
            }
        }
        if changed {
            self.write_requests(&record)?;
        }
        Ok(changed)
    }
}
