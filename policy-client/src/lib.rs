//! The HTTPS client that cards (`cardfw`'s managed mode), the load generator and the admin
//! commands (`policyd`) use to talk to the policy server: the server checked against one
//! pinned CA, optionally a client certificate. The connection is kept for the next request (a
//! card's report goes on the connection its bundle came on, and the next poll too), so a fleet
//! does not redo thousands of TLS handshakes after each publish. Also the card's key and
//! certificate request.
//!
//! A crate of its own so the card links the transport and not the server: what travels on it
//! is the documents of `proto::policy` and `proto::policy_admin`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use proto::policy::{ErrorBody, JSON_MEDIA_TYPE};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a policy server address: write https://HOST:PORT")]
    BadUrl(String),
    #[error("bad certificate or key: {0}")]
    Pem(String),
    #[error("cannot reach {server}: {error}")]
    Connect { server: String, error: String },
    #[error("TLS with {server} failed: {error}")]
    Tls { server: String, error: String },
    #[error("HTTP with {server} failed: {error}")]
    Http { server: String, error: String },
    #[error("{server} took longer than {seconds} s")]
    Timeout { server: String, seconds: u64 },
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot make a key or request: {0}")]
    Key(String),
    #[error("the policy server answered {status}: {error}")]
    Refused { status: StatusCode, error: String },
    #[error("the policy server's answer is not understood: {0}")]
    Answer(String),
}

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(..)")
    }
}

/// One policy server, trusted through one CA.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    authority: String,
    host: ServerName<'static>,
    connect_to: String,
    tls: Arc<rustls::ClientConfig>,
    /// The connection of the last request, if the server kept it open.
    idle: Arc<Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The error text of a JSON error answer, or the body as text.
    pub fn error_text(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned())
    }

    /// The answer if its status is a success; otherwise the status and error text as
    /// [`ClientError::Refused`].
    pub fn success(self) -> Result<Answer, ClientError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ClientError::Refused {
                status: self.status,
                error: self.error_text(),
            })
        }
    }

    /// The body read as the JSON document `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Answer(e.to_string()))
    }
}

impl Client {
    /// `server` is `https://HOST:PORT`; `ca_pem` the only CA accepted for it; `identity` the
    /// client certificate, if the calls need one.
    pub fn new(
        server: &str,
        ca_pem: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<Client, ClientError> {
        let bad = || ClientError::BadUrl(server.to_string());
        let uri: http::Uri = server.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host_text = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = ServerName::try_from(host_text.to_string()).map_err(|_| bad())?;
        let port = authority.port_u16().unwrap_or(443);
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| ClientError::Pem(format!("CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Pem(format!("CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Pem("no CA certificate".into()));
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Pem(e.to_string()))?
        .with_root_certificates(roots);
        let tls = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientError::Pem(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                    .map_err(|e| ClientError::Pem(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Pem(e.to_string()))?
            }
        };
        Ok(Client {
            server: server.trim_end_matches('/').to_string(),
            authority: authority.to_string(),
            host,
            connect_to: format!("{}:{port}", authority.host()),
            tls: Arc::new(tls),
            idle: Arc::new(Mutex::new(None)),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// One request on a new connection. `timeout` covers connecting, the TLS handshake and the
    /// whole answer (a long poll passes its hold time plus a margin). Bodies larger than
    /// `max_body` are refused.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, ClientError> {
        tokio::time::timeout(
            timeout,
            self.request_inner(method, path, headers, body, max_body),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            server: self.server.clone(),
            seconds: timeout.as_secs(),
        })?
    }

    /// A `POST` of `body` as JSON: [`Client::request`] for the calls whose body is a
    /// document of [`proto::policy`] or [`proto::policy_admin`].
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &impl Serialize,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, ClientError> {
        let body = serde_json::to_vec(body).expect("plain data serialises");
        self.request(
            Method::POST,
            path,
            headers,
            Some((JSON_MEDIA_TYPE, body)),
            timeout,
            max_body,
        )
        .await
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        max_body: usize,
    ) -> Result<Answer, ClientError> {
        let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut sender) = kept
            && sender.ready().await.is_ok()
        {
            let request = self.build(method.clone(), path, headers, body.clone())?;
            // The server may close a kept connection just as a request goes out: then once
            // more on a new one (a poll and a report are both safe to repeat).
            if let Ok(answer) = self.exchange(sender, request, max_body).await {
                return Ok(answer);
            }
        }
        let sender = self.connect().await?;
        let request = self.build(method, path, headers, body)?;
        self.exchange(sender, request, max_body).await
    }

    fn http_error(&self, error: &dyn std::fmt::Display) -> ClientError {
        ClientError::Http {
            server: self.server.clone(),
            error: error.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let server = || self.server.clone();
        let tcp = TcpStream::connect(&self.connect_to)
            .await
            .map_err(|e| ClientError::Connect {
                server: server(),
                error: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.host.clone(), tcp)
            .await
            .map_err(|e| ClientError::Tls {
                server: server(),
                error: e.to_string(),
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.http_error(&e))?;
        // Ends by itself when the sender is dropped or the server closes.
        tokio::spawn(connection);
        Ok(sender)
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match body {
            Some((content_type, bytes)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| self.http_error(&e))
    }

    /// Sends one request and reads the whole answer; keeps the connection if it stays open.
    async fn exchange(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, ClientError> {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http_error(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::TooLarge(max_body)
                } else {
                    self.http_error(&e)
                }
            })?
            .to_bytes();
        if !sender.is_closed() {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A new key pair for a card (ECDSA P-256, made on the card; the private key never leaves it)
/// and the certificate request for it. Returns (key PEM, CSR PEM).
pub fn new_key_and_csr() -> Result<(String, String), ClientError> {
    let key = rcgen::KeyPair::generate().map_err(|e| ClientError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| ClientError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cardwall card");
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| ClientError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), csr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_https_host_port() {
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        assert!(Client::new("https://10.0.0.1:8443", &ca, None).is_ok());
        assert!(Client::new("https://policy.example", &ca, None).is_ok());
        for bad in [
            "http://10.0.0.1:8443",
            "10.0.0.1:8443",
            "https://x/path",
            "https://",
        ] {
            assert!(
                matches!(Client::new(bad, &ca, None), Err(ClientError::BadUrl(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Client::new("https://x:1", "not a pem", None),
            Err(ClientError::Pem(_))
        ));
    }
}
