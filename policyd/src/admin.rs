//! The administrator's side: the calls behind
//! `policyd token|publish|upload|status|revoke|requests|approve|decline`,
//! made over HTTPS to a running policyd with the admin token, and reading a rule file with
//! the list files it names.

use std::path::Path;
use std::time::Duration;

use http::Method;
use proto::policy::{BUNDLE_MEDIA_TYPE, JSON_MEDIA_TYPE};
use proto::policy_admin::{
    self, FleetStatus, PublishRequest, PublishResponse, TokensRequest, TokensResponse,
};

use policy_client::{Answer, Client, ClientError};

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not reached, refused, or answered with something else than the call's document.
    #[error(transparent)]
    Client(#[from] ClientError),
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

    /// One call with the admin token; an answer other than a success is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, AdminError> {
        let answer = self
            .client
            .request(method, path, &self.headers(), body, TIMEOUT, MAX_ANSWER)
            .await?;
        Ok(answer.success()?)
    }

    /// A `POST` of the JSON document `request`, answered with the JSON document `T`.
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        request: &impl serde::Serialize,
    ) -> Result<T, AdminError> {
        let answer = self
            .client
            .post_json(path, &self.headers(), request, TIMEOUT, MAX_ANSWER)
            .await?;
        Ok(answer.success()?.json()?)
    }

    fn headers(&self) -> [(&str, &str); 1] {
        [("authorization", self.authorization.as_str())]
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
        let answer: TokensResponse = self.post_json(policy_admin::TOKENS_PATH, &request).await?;
        Ok(answer.tokens)
    }

    pub async fn publish(
        &self,
        group: &str,
        files: RuleFiles,
        trusted_cas: Option<String>,
        expires_in: Duration,
    ) -> Result<u64, AdminError> {
        let request = PublishRequest {
            group: group.to_string(),
            rules_name: files.name,
            rules_text: files.text,
            lists: files.lists,
            expires_in_secs: expires_in.as_secs(),
            trusted_cas,
        };
        let answer: PublishResponse = self.post_json(policy_admin::PUBLISH_PATH, &request).await?;
        Ok(answer.version)
    }

    pub async fn upload(&self, group: &str, bundle: Vec<u8>) -> Result<u64, AdminError> {
        let answer = self
            .call(
                Method::POST,
                &format!("{}?group={group}", policy_admin::UPLOAD_PATH),
                Some((BUNDLE_MEDIA_TYPE, bundle)),
            )
            .await?;
        Ok(answer.json::<PublishResponse>()?.version)
    }

    pub async fn status(&self) -> Result<FleetStatus, AdminError> {
        let answer = self
            .call(Method::GET, policy_admin::CARDS_PATH, None)
            .await?;
        Ok(answer.json()?)
    }

    pub async fn revoke(&self, card_id: &str) -> Result<(), AdminError> {
        self.call(
            Method::POST,
            &policy_admin::revoke_path(card_id),
            // The server takes admin POSTs only as JSON (no form a browser could forge).
            Some((JSON_MEDIA_TYPE, b"{}".to_vec())),
        )
        .await
        .map(drop)
    }

    /// The fleet's open access requests.
    pub async fn requests(&self) -> Result<policy_admin::OpenRequests, AdminError> {
        let answer = self
            .call(Method::GET, policy_admin::ACCESS_REQUESTS_PATH, None)
            .await?;
        Ok(answer.json()?)
    }

    /// Approves a request; returns the card's overlay version that carries it.
    pub async fn approve(&self, request: &policy_admin::ApproveRequest) -> Result<u64, AdminError> {
        let answer: policy_admin::ApproveResponse =
            self.post_json(policy_admin::APPROVE_PATH, request).await?;
        Ok(answer.overlay_version)
    }

    /// Pushes a VPN to a card; returns the card's overlay version that carries it.
    pub async fn set_vpn(&self, request: &policy_admin::SetVpnRequest) -> Result<u64, AdminError> {
        let answer: policy_admin::VpnResponse =
            self.post_json(policy_admin::VPN_SET_PATH, request).await?;
        Ok(answer.overlay_version)
    }

    /// Takes a VPN off a card; returns the card's overlay version without it.
    pub async fn remove_vpn(
        &self,
        request: &policy_admin::RemoveVpnRequest,
    ) -> Result<u64, AdminError> {
        let answer: policy_admin::VpnResponse = self
            .post_json(policy_admin::VPN_REMOVE_PATH, request)
            .await?;
        Ok(answer.overlay_version)
    }

    /// Declines a request with a message for the user.
    pub async fn decline(&self, request: &policy_admin::DeclineRequest) -> Result<(), AdminError> {
        let body = serde_json::to_vec(request).expect("plain data serialises");
        self.call(
            Method::POST,
            policy_admin::DECLINE_PATH,
            Some((JSON_MEDIA_TYPE, body)),
        )
        .await
        .map(drop)
    }
}
