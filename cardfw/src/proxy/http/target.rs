//! Where an HTTP request goes, as the rules see it: host, port and path read from an
//! absolute-form URL or the Host field, refused when a site could read them another way.

use std::net::{IpAddr, SocketAddr};

use rules::{LocalTime, Protocol};

use super::Mode;
use crate::firewall::canonical;
use crate::wire::http1::RequestHead;

/// Where a request goes, as the rules see it.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    /// `/path?query`, sent upstream in origin-form.
    pub(super) path_and_query: String,
}

impl Target {
    pub(super) fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path_and_query)
    }

    /// The Host header for the origin: the port only when it is not the default.
    pub(super) fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Reads host, port and path from an absolute-form target or the Host header. Refuses a
    /// Host that could be read two ways, an absolute-form URL that names another host than
    /// the Host field, and a path an origin could read otherwise than the rules do.
    pub(super) fn of(
        request: &RequestHead,
        mode: Mode,
        original_dst: SocketAddr,
    ) -> Result<Target, String> {
        let uri: http::Uri = request
            .target
            .parse()
            .map_err(|_| "the request target is not a valid URL or path".to_string())?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let host_field = request.host().map_err(|e| e.to_string())?;
        let host_field = match host_field {
            Some(value) => Some(
                value
                    .parse::<http::uri::Authority>()
                    .map_err(|_| "the Host header is not a host name".to_string())?,
            ),
            None => None,
        };
        if let Some(why) = ambiguous_path(&path_and_query) {
            return Err(format!(
                "the path holds {why}, which sites read in different ways; ask for the path \
                 it stands for"
            ));
        }
        if let Some(authority) = uri.authority() {
            if uri.scheme_str() != Some("http") {
                return Err(
                    "only http:// URLs go through this port; HTTPS goes through CONNECT".into(),
                );
            }
            let (host, port) = (bare_host(authority), authority.port_u16().unwrap_or(80));
            // The card sends the URL's host upstream (RFC 9112 3.2.2); a Host field naming
            // another is a request meant to be read two ways.
            if let Some(field) = &host_field
                && (bare_host(field) != host || field.port_u16().unwrap_or(80) != port)
            {
                return Err("the Host header names another host than the URL".into());
            }
            return Ok(Target {
                host,
                port,
                path_and_query,
            });
        }
        if !path_and_query.starts_with('/') {
            return Err("the request target must be a path starting with /".into());
        }
        if mode == Mode::Explicit {
            return Err("this is a proxy: send the full URL (absolute-form), or CONNECT".into());
        }
        let host = match host_field {
            Some(authority) => bare_host(&authority),
            // HTTP/1.0 without Host: the address the client connected to is all there is.
            None => original_dst.ip().to_string(),
        };
        Ok(Target {
            host,
            port: original_dst.port(),
            path_and_query,
        })
    }
}

pub(super) fn rules_request(protocol: Protocol, host: &str, port: u16) -> rules::Request<'_> {
    let request = rules::Request::new(protocol, LocalTime::now()).port(port);
    match host.parse::<IpAddr>() {
        Ok(ip) => request.dst(canonical(ip)),
        Err(_) => request.host(host),
    }
}

/// What in a request path an origin could read otherwise than the rules do, if anything.
///
/// The rules compare a cleaned path ([`rules::normalize_path`]: escapes of unreserved
/// characters decoded, `//` collapsed, `.` and `..` resolved). Origins differ on exactly those
/// steps and on a few more (`%2F` decoded to a separator or not, `\` taken for `/` or not), so
/// `/x/..%2Fadmin` passes a rule on `/admin` and reaches `/admin` on a server that decodes
/// first. Such a path is refused, not rewritten: the card never sends a request the client
/// did not write, and browsers do not send these forms (they resolve dot segments
/// themselves). What is left differs from its cleaned form only by escapes every server
/// decodes the same way, so the origin sees the path the rules saw.
fn ambiguous_path(path_and_query: &str) -> Option<&'static str> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%5c") {
        return Some("a backslash");
    }
    if lower.contains("%2f") {
        return Some("an encoded slash (%2F)");
    }
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        // Only a trailing slash may leave an empty segment (`/dir/`), and only at the end.
        if segment.is_empty() && i + 1 < segments.len() {
            return Some("an empty segment (//)");
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Some("a dot segment (. or ..)");
        }
    }
    None
}

pub(super) fn bare_host(authority: &http::uri::Authority) -> String {
    authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sites_read_in_different_ways_are_named() {
        for (path, why) in [
            ("/x/..%2Fadmin", "an encoded slash (%2F)"),
            ("/x%2fadmin", "an encoded slash (%2F)"),
            ("/x\\..\\admin", "a backslash"),
            ("/x%5Cadmin", "a backslash"),
            ("/x/%2e%2e/admin", "a dot segment (. or ..)"),
            ("/x/%2E/admin", "a dot segment (. or ..)"),
            ("/x/../admin", "a dot segment (. or ..)"),
            ("/./admin", "a dot segment (. or ..)"),
            ("//admin", "an empty segment (//)"),
            ("/a//b?x", "an empty segment (//)"),
        ] {
            assert_eq!(ambiguous_path(path), Some(why), "{path}");
        }
        for path in [
            "/",
            "/a/b/",
            "/%61dmin",
            "/a%20b",
            "/a.b/..c",
            "/x?next=/../a//b",
            "/a/...",
            "*",
        ] {
            assert_eq!(ambiguous_path(path), None, "{path}");
            // What is left means the same to the rules and to a site that decodes it.
            if path.starts_with('/') {
                let cleaned = rules::normalize_path(path);
                assert!(
                    !cleaned.contains("/../") && !cleaned.contains("//"),
                    "{path}"
                );
            }
        }
    }
}
