//! The administrator's side: the calls behind `policyd token|publish|upload|status|revoke`,
//! made over HTTPS to a running policyd with the admin token, and reading a rule file with
//! the list files it names.

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::client::{Answer, Client, ClientError};
use crate::server::{FleetStatus, PublishRequest, PublishResponse, TokensRequest, TokensResponse};

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("policyd answered {status}: {error}")]
    Refused { status: StatusCode, error: String },
    #[error("policyd answered something unexpected: {0}")]
    Answer(String),
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0}")]
    Rules(rules::Diagnostics),
}

/// The rule file, its name, and the list files it names (read from beside it).
#[derive(Debug, Clone)]
pub struct RuleFiles {
    pub name: String,
    pub text: String,
    pub lists: Vec<(String, String)>,
}

impl RuleFiles {
    /// Reads and parses `path`; parse errors come back as `file:line:col` diagnostics.
    pub fn read(path: &Path) -> Result<RuleFiles, AdminError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| AdminError::Read {
                path: path.display().to_string(),
                error,
            })
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rules.txt".into());
        let text = read(path)?;
        let policy = rules::parse(&name, &text).map_err(AdminError::Rules)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut lists = Vec::new();
        for list in &policy.lists {
            if let rules::ListSource::File(file) = &list.source {
                lists.push((file.clone(), read(&dir.join(file))?));
            }
        }
        Ok(RuleFiles { name, text, lists })
    }
}

/// A running policyd, called with the admin token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: Client,
    authorization: String,
}

impl AdminClient {
    /// `dir` is policyd's data directory (for `ca.pem` and `admin.token`).
    pub fn from_dir(server: &str, dir: &Path) -> Result<AdminClient, AdminError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| AdminError::Read {
                path: path.display().to_string(),
                error,
            })
        };
        let client = Client::new(server, &read(crate::fleet::CA_CERT)?, None)?;
        Ok(AdminClient {
            client,
            authorization: format!("Bearer {}", read(crate::fleet::ADMIN_TOKEN)?.trim()),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, AdminError> {
        let answer = self
            .client
            .request(
                method,
                path,
                &[("authorization", &self.authorization)],
                body,
                TIMEOUT,
                MAX_ANSWER,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(AdminError::Refused {
                status: answer.status,
                error: answer.error_text(),
            });
        }
        Ok(answer)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, AdminError> {
        let answer = self
            .call(method, path, body.map(|b| ("application/json", b)))
            .await?;
        serde_json::from_slice(&answer.body).map_err(|e| AdminError::Answer(e.to_string()))
    }

    pub async fn tokens(
        &self,
        group: &str,
        count: usize,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, AdminError> {
        let request = TokensRequest {
            group: group.to_string(),
            count,
            ttl_secs: ttl.map(|t| t.as_secs()),
        };
        let answer: TokensResponse = self
            .json(
                Method::POST,
                "/v1/admin/tokens",
                Some(serde_json::to_vec(&request).expect("serialisable")),
            )
            .await?;
        Ok(answer.tokens)
    }

    pub async fn publish(
        &self,
        group: &str,
        files: RuleFiles,
        expires_in: Duration,
    ) -> Result<u64, AdminError> {
        let request = PublishRequest {
            group: group.to_string(),
            rules_name: files.name,
            rules_text: files.text,
            lists: files.lists,
            expires_in_secs: expires_in.as_secs(),
        };
        let answer: PublishResponse = self
            .json(
                Method::POST,
                "/v1/admin/publish",
                Some(serde_json::to_vec(&request).expect("serialisable")),
            )
            .await?;
        Ok(answer.version)
    }

    pub async fn upload(&self, group: &str, bundle: Vec<u8>) -> Result<u64, AdminError> {
        let answer = self
            .call(
                Method::POST,
                &format!("/v1/admin/upload?group={group}"),
                Some(("application/vnd.cardwall.bundle", bundle)),
            )
            .await?;
        let answer: PublishResponse =
            serde_json::from_slice(&answer.body).map_err(|e| AdminError::Answer(e.to_string()))?;
        Ok(answer.version)
    }

    pub async fn status(&self) -> Result<FleetStatus, AdminError> {
        self.json(Method::GET, "/v1/admin/cards", None).await
    }

    pub async fn revoke(&self, card_id: &str) -> Result<(), AdminError> {
        self.call(
            Method::POST,
            &format!("/v1/admin/cards/{card_id}/revoke"),
            // The server takes admin POSTs only as JSON (no form a browser could forge).
            Some(("application/json", b"{}".to_vec())),
        )
        .await
        .map(drop)
    }
}
