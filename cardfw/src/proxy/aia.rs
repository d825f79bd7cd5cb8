//! Missing intermediates fetched from a server certificate's AIA "CA Issuers" URL, for an
//! inspected site that sent its certificate without the intermediate
//! ([`crate::inspect::upstream`] explains how such a chain is recognised and how a fetched
//! certificate is used: as a path to a trusted root, never as trust).
//!
//! The fetch is an HTTP request the card makes on the user's behalf, so it is decided by the
//! rules like one the user made: an `http` request for the URL's host, port and path, from the
//! user's address, recorded as any other (a rule denying `http` to that host leaves the site
//! refused as an incomplete chain, with the page saying why nothing was fetched). Only `http:`
//! URLs (what CAs publish; the certificate is signed, so it needs no TLS); the answer must be
//! one DER or PEM CA certificate of at most [`MAX_BYTES`], within [`TIMEOUT`]. PKCS#7
//! bundles (`.p7c`) are not read: no crate here reads them, and the public CAs that matter
//! publish DER.

use std::net::IpAddr;
use std::time::Duration;

use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rules::Protocol;
use rustls::pki_types::CertificateDer;

use super::http::rules_request;
use super::upstream;
use crate::firewall::{Ask, Firewall};

/// A CA certificate is one or two kilobytes.
pub const MAX_BYTES: usize = 16 * 1024;
/// For the whole fetch, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why no intermediate came from the URL: said on the site's page after the chain's reason.
#[derive(Debug, thiserror::Error)]
pub enum AiaError {
    #[error("its URL {0} is not an http: URL")]
    NotHttp(String),
    #[error("the rules do not allow {0}")]
    NotAllowed(String),
    #[error("{0}")]
    Upstream(#[from] upstream::UpstreamError),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("the answer from {0} is not one CA certificate (DER or PEM, at most 16 KiB)")]
    NotCertificate(String),
    #[error("fetching {url}: {why}")]
    Http { url: String, why: String },
}

/// The certificate at `url`, fetched for `client` (whose request needed it) if the rules
/// allow it, checked to be a CA certificate.
pub async fn fetch(
    firewall: &Firewall,
    client: IpAddr,
    url: &str,
) -> Result<CertificateDer<'static>, AiaError> {
    tokio::time::timeout(TIMEOUT, fetch_within(firewall, client, url))
        .await
        .map_err(|_| AiaError::Timeout(url.to_owned()))?
}

async fn fetch_within(
    firewall: &Firewall,
    client: IpAddr,
    url: &str,
) -> Result<CertificateDer<'static>, AiaError> {
    let uri: Uri = url.parse().map_err(|_| AiaError::NotHttp(url.to_owned()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(AiaError::NotHttp(url.to_owned()));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // Named as the HTTP proxy names what it decides, so the status page reads the same.
    let target = format!("http://{host}:{port}{path}");
    let rules = firewall.rules();
    let ask = Ask {
        client,
        target: &target,
        request: rules_request(Protocol::Http, host, port)
            .method("GET")
            .path(path),
        hello: None,
    };
    if !firewall.check(&rules, &ask).allows() {
        return Err(AiaError::NotAllowed(url.to_owned()));
    }
    let addresses = upstream::resolve(firewall, host).await?;
    let candidates = firewall
        .decide_addresses(&rules, &ask, &addresses)
        .map_err(|_| AiaError::NotAllowed(url.to_owned()))?;
    let (stream, used) = upstream::connect_first(firewall, &candidates.addresses(), port).await?;
    firewall.record_connected(&ask, &candidates, used.ip());

    let failed = |why: String| AiaError::Http {
        url: url.to_owned(),
        why,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if response.status() != StatusCode::OK {
        return Err(AiaError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|_| AiaError::NotCertificate(url.to_owned()))?
        .to_bytes();
    certificate(&body).ok_or_else(|| AiaError::NotCertificate(url.to_owned()))
}

/// `body` as one certificate: DER, or a PEM `CERTIFICATE` block. Whether it is a CA is
/// checked where it is kept ([`crate::inspect::Intermediates::insert`]).
fn certificate(body: &[u8]) -> Option<CertificateDer<'static>> {
    let der = match pem::parse(body) {
        Ok(block) if block.tag() == "CERTIFICATE" => block.into_contents(),
        Ok(_) => return None,
        Err(_) => body.to_vec(),
    };
    let (rest, _) = x509_parser::parse_x509_certificate(&der).ok()?;
    rest.is_empty().then(|| CertificateDer::from(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_certificate_is_taken_from_an_answer_der_or_pem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(certificate(&der).unwrap().as_ref(), &der[..], "DER");
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        assert_eq!(certificate(pem.as_bytes()).unwrap().as_ref(), &der[..]);
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(certificate(&trailing).is_none(), "bytes after it");
        assert!(certificate(b"<html>not found</html>").is_none());
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(certificate(key.as_bytes()).is_none());
    }
}
