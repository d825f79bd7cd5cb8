//! An axum router served over the [`accept`] loop: HTTP/1.1 in clear ([`http`]) or over
//! rustls ([`https`]), with a handshake and a header timeout so an idle client cannot hold a
//! connection, and the security headers every page sends ([`SecurityHeaders`]).
//!
//! Every request carries, as extensions, the client's address (axum's [`ConnectInfo`]) and,
//! over TLS when the client presented one, its certificate ([`ClientCertificate`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::accept;

/// Time a client has to finish the TLS handshake, then to send each request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The first certificate the client presented in the TLS handshake (rustls has checked its
/// chain against the server's client verifier).
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub CertificateDer<'static>);

/// Serves `app` over TLS with `tls` on every connection `listener` accepts, for ever.
pub async fn https(
    listener: TcpListener,
    how: accept::Listener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
) -> Infallible {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let name = how.name();
    accept::serve(listener, how, move |tcp, peer| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        async move {
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(listener = name, client = %peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|certificate| ClientCertificate(certificate.clone().into_owned()));
            connection(stream, peer, certificate, app).await;
        }
    })
    .await
}

/// Serves `app` in clear on every connection `listener` accepts, for ever.
pub async fn http(listener: TcpListener, how: accept::Listener, app: Router) -> Infallible {
    accept::serve(listener, how, move |tcp, peer| {
        connection(tcp, peer, None, app.clone())
    })
    .await
}

async fn connection<I>(io: I, peer: SocketAddr, certificate: Option<ClientCertificate>, app: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        app.clone().oneshot(request)
    });
    // Errors here are the client going away or timing out: nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

// The service `connection` builds must never fail: a router answers every request.
const _: fn() = || {
    fn infallible<S: tower::Service<http::Request<Incoming>, Error = Infallible>>() {}
    infallible::<Router>();
};

/// The headers every response of a page gets: its content security policy, no sniffing, no
/// framing, no referrer, HSTS when served over HTTPS, and no caching unless the handler chose
/// otherwise (pages show rules, logs and tokens).
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    pub content_security_policy: &'static str,
    /// Served over HTTPS only: browsers are told to keep to it.
    pub https: bool,
}

/// A year, the usual HSTS lifetime.
const HSTS: &str = "max-age=31536000";

impl SecurityHeaders {
    /// `router` with these headers on every response it gives.
    pub fn on<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(axum::middleware::map_response(
            move |response: Response| async move { self.apply(response) },
        ))
    }

    /// `response` with these headers.
    pub fn apply(self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(self.content_security_policy),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if self.https {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(HSTS),
            );
        }
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        response
    }
}

/// A file built into the binary (a stylesheet, a script): it changes only with the program,
/// so a few minutes of caching are safe.
pub fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn every_response_gets_the_headers_and_static_files_keep_their_cache() {
        let headers = SecurityHeaders {
            content_security_policy: "default-src 'self'",
            https: true,
        };
        let app = headers.on(Router::new()
            .route("/", get(|| async { "page" }))
            .route("/s.css", get(|| async { static_file("text/css", "") })));
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap();
                app.oneshot(request).await.unwrap()
            }
        };
        for path in ["/", "/s.css", "/missing"] {
            let response = get(path).await;
            let h = response.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], "default-src 'self'");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], HSTS);
        }
        assert_eq!(get("/").await.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            get("/s.css").await.headers()[header::CACHE_CONTROL],
            "max-age=300"
        );
    }
}
