//! The card's inspection CA on the card page: its certificate to download (PEM for Linux and
//! Firefox, DER for Windows and macOS) and a plain page with its fingerprint and how to trust
//! it. Public like the certificate itself, so no login: a browser needs it before it can load
//! an inspected site, and the key never leaves the store ([`crate::inspect::ca`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::inspect::CardCa;

/// `GET /inspection-ca`: the fingerprint and short install steps, as text.
pub(super) async fn page(State(state): State<Arc<AdminState>>) -> Response {
    with_ca(&state, |ca| {
        let text = format!(
            "The card's TLS inspection CA\n\n\
             SHA-256 fingerprint: {fingerprint}\n\
             Compare it with what your system shows before you trust the certificate.\n\
             Only sites an `inspect` rule names are inspected; after a re-key, install the new one.\n\n\
             Download: /inspection-ca.pem (PEM) or /inspection-ca.crt (DER)\n\n\
             Linux (Debian, Ubuntu): copy the PEM to /usr/local/share/ca-certificates/cardwall.crt,\n\
               then run `sudo update-ca-certificates`. Chromium on Linux: Settings > Privacy and\n\
               security > Security > Manage certificates > Authorities > Import.\n\
             Windows: open the .crt, Install Certificate > Local Machine > Place all certificates\n\
               in: Trusted Root Certification Authorities.\n\
             macOS: open the .crt in Keychain Access (System keychain), open the certificate,\n\
               Trust > When using this certificate: Always Trust.\n\
             Firefox (its own store, every system): Settings > Privacy & Security > Certificates >\n\
               View Certificates > Authorities > Import, tick \"Trust this CA to identify websites\".\n",
            fingerprint = ca.fingerprint()
        );
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    })
}

/// `GET /inspection-ca.pem`.
pub(super) async fn pem(State(state): State<Arc<AdminState>>) -> Response {
    with_ca(&state, |ca| {
        download(
            "application/x-pem-file",
            "attachment; filename=\"cardwall-ca.pem\"",
            ca.cert_pem().into_bytes(),
        )
    })
}

/// `GET /inspection-ca.crt`.
pub(super) async fn der(State(state): State<Arc<AdminState>>) -> Response {
    with_ca(&state, |ca| {
        download(
            "application/pkix-cert",
            "attachment; filename=\"cardwall-ca.crt\"",
            ca.cert_der().to_vec(),
        )
    })
}

fn with_ca(state: &AdminState, answer: impl FnOnce(&CardCa) -> Response) -> Response {
    match state.firewall.inspection.get() {
        Some(inspection) => answer(&inspection.ca()),
        None => (
            StatusCode::NOT_FOUND,
            "This card has no inspection CA (it is made at start on a card with a store).\n",
        )
            .into_response(),
    }
}

fn download(content_type: &'static str, disposition: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}
