//! The small HTML pages the proxy answers with instead of the page asked for: blocked by a
//! rule, upstream unreachable, request refused. Each says what happened and why.

use http::StatusCode;
use web::askama::Template;
use web::proxy::{AskForm, ProxyPage, Reason};

use crate::firewall::Verdict;
use crate::proxy::upstream::UpstreamError;

/// A page the proxy answers with, ready to be written as a whole HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
    /// A `Content-Security-Policy` other than the one in [`HEADERS`]: a block page with the
    /// "ask for access" form may post to the card page.
    pub content_security_policy: Option<String>,
}

/// The header fields of every page besides its length: HTML that runs no script and is never
/// cached (a block page must not stand in for the site once the rules change).
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/html; charset=utf-8"),
    (
        "Content-Security-Policy",
        web::proxy::CONTENT_SECURITY_POLICY,
    ),
    ("Cache-Control", "no-store"),
];

impl Page {
    /// The response bytes. `close` says the connection ends after it; `with_body` is false
    /// for an answer to HEAD, which has the headers of the page but not the page.
    pub fn to_http(&self, close: bool, with_body: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
        );
        for (name, value) in HEADERS {
            let value = match (&self.content_security_policy, name) {
                (Some(policy), "Content-Security-Policy") => policy.as_str(),
                _ => value,
            };
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", self.html.len()));
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if with_body {
            out.extend_from_slice(self.html.as_bytes());
        }
        out
    }
}

/// Renders the page (the `web` crate's template escapes every text in it).
fn page(status: StatusCode, reason: Reason<'_>) -> Page {
    let content_security_policy = match &reason {
        Reason::Blocked {
            ask: Some(form), ..
        } => Some(form.content_security_policy()),
        _ => None,
    };
    let page = ProxyPage { reason };
    let html = page.render().unwrap_or_else(|error| {
        // Only a failing formatter gets here; the status still says what happened.
        tracing::error!(%error, "rendering a proxy page");
        page.title().to_owned()
    });
    Page {
        status,
        html,
        content_security_policy,
    }
}

/// 403: a rule denied the request. Names the rule so the user can ask for the right change.
pub fn blocked(target: &str, rule: &rules::RuleInfo) -> Page {
    blocked_asking(target, rule, None)
}

/// [`blocked`], with the managed card's "ask for access" form when there is one.
pub fn blocked_asking(target: &str, rule: &rules::RuleInfo, ask: Option<&AskForm>) -> Page {
    page(
        StatusCode::FORBIDDEN,
        Reason::Blocked {
            target,
            rule_id: &rule.id,
            rule_location: &rule.location,
            rule_text: &rule.text,
            ask,
        },
    )
}

/// The page for a request the core did not let through: the block page of the rule that
/// denied it, or the refusal and why. (Given an allow, it names the rule like a denial: a
/// caller shows this page only for what the core refused.)
pub fn not_allowed(target: &str, verdict: &Verdict<'_>) -> Page {
    not_allowed_asking(target, verdict, |_| None)
}

/// [`not_allowed`]; a denial by a rule gets the form `ask` makes for the rule's id, if any
/// (a refusal is not the rules' doing, and no approval would change it).
pub fn not_allowed_asking(
    target: &str,
    verdict: &Verdict<'_>,
    ask: impl FnOnce(&str) -> Option<AskForm>,
) -> Page {
    match verdict {
        Verdict::Deny(decision) => {
            let form = ask(&decision.rule.id);
            blocked_asking(target, decision.rule, form.as_ref())
        }
        Verdict::Allow(decision) => blocked(target, decision.rule),
        Verdict::Refuse(refusal) => refused(StatusCode::FORBIDDEN, refusal.reason()),
        Verdict::NeverConnect { ip, why } => refused(
            StatusCode::FORBIDDEN,
            &format!("the card does not connect to {ip}: {why}"),
        ),
    }
}

/// 502 or 504: the request was allowed but the destination could not be reached.
pub fn upstream_failed(target: &str, error: &UpstreamError) -> Page {
    let timed_out = error.is_timeout();
    let status = if timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    page(
        status,
        Reason::Unreachable {
            target,
            error: &error.to_string(),
            timed_out,
        },
    )
}

/// 400, or another client error: the request itself cannot be handled.
pub fn refused(status: StatusCode, why: &str) -> Page {
    page(status, Reason::Refused { why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_page_names_the_rule() {
        let info = rules::RuleInfo {
            id: "no-ads".into(),
            location: "r.rules:1".into(),
            action: rules::Action::Deny,
            text: "deny http host ads.example".into(),
            allow_ech: false,
            allow_private: false,
            inspect: false,
            client_cert: false,
            via: None,
        };
        let page = blocked("http://ads.example/<b>", &info);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(
            page.html
                .contains("Rule <strong>no-ads</strong> (r.rules:1)"),
            "{}",
            page.html
        );
        assert!(
            page.html.contains("http://ads.example/&#60;b&#62;"),
            "{}",
            page.html
        );
        assert!(!page.html.contains("<b>"), "{}", page.html);
        let http = String::from_utf8(page.to_http(true, true)).unwrap();
        assert!(http.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{http}");
        assert!(http.contains(&format!("Content-Length: {}\r\n", page.html.len())));
        assert!(
            http.contains("Content-Security-Policy: default-src 'none'; "),
            "{http}"
        );
        assert!(http.contains("Connection: close\r\n\r\n<!DOCTYPE html>"));
        let head_only = page.to_http(false, false);
        assert!(head_only.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn a_timeout_is_504_and_says_so() {
        let addr = "203.0.113.99:80".parse().unwrap();
        let timeout = UpstreamError::Timeout(addr, std::time::Duration::from_secs(1));
        let page = upstream_failed("http://203.0.113.99/", &timeout);
        assert_eq!(page.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            page.html.contains(
                "<code>http://203.0.113.99/</code> was allowed, but: \
                 203.0.113.99:80 did not answer within 1s."
            ),
            "{}",
            page.html
        );
        let refused = UpstreamError::Refused(addr);
        let page = upstream_failed("http://203.0.113.99/", &refused);
        assert_eq!(page.status, StatusCode::BAD_GATEWAY);
        assert!(
            page.html.contains("<h1>The site could not be reached</h1>"),
            "{}",
            page.html
        );
    }
}
