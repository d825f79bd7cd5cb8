//! The small HTML pages the proxy answers with instead of the page asked for: blocked by a
//! rule, upstream unreachable, request refused. Each says what happened and why.

use http::StatusCode;

use crate::proxy::upstream::UpstreamError;

/// Escapes text for HTML, so a hostile host name or path cannot inject markup.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page the proxy answers with, ready to be written as a whole HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
}

impl Page {
    /// The response bytes. `close` says the connection ends after it; `with_body` is false
    /// for an answer to HEAD, which has the headers of the page but not the page.
    pub fn to_http(&self, close: bool, with_body: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Cache-Control: no-store\r\nContent-Length: {}\r\n{}\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.html.len(),
            if close { "Connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if with_body {
            out.extend_from_slice(self.html.as_bytes());
        }
        out
    }
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Page {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         h1{{font-size:1.4rem}}code{{background:#eee;padding:.1rem .3rem;border-radius:3px;word-break:break-all}}</style>\
         </head><body><h1>{title}</h1>{body_html}<p><small>cardwall card firewall</small></p></body></html>\n"
    );
    Page { status, html }
}

/// 403: a rule denied the request. Names the rule so the user can ask for the right change.
pub fn blocked(target: &str, rule: &rules::RuleInfo) -> Page {
    page(
        StatusCode::FORBIDDEN,
        "Blocked by the card's rules",
        &format!(
            "<p>The request for <code>{}</code> was denied.</p>\
             <p>Rule <strong>{}</strong> ({}):<br><code>{}</code></p>",
            escape(target),
            escape(&rule.id),
            escape(&rule.location),
            escape(&rule.text)
        ),
    )
}

/// 502 or 504: the request was allowed but the destination could not be reached.
pub fn upstream_failed(target: &str, error: &UpstreamError) -> Page {
    let (status, title) = if error.is_timeout() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "The site did not answer in time",
        )
    } else {
        (StatusCode::BAD_GATEWAY, "The site could not be reached")
    };
    page(
        status,
        title,
        &format!(
            "<p>The request for <code>{}</code> was allowed, but: {}.</p>",
            escape(target),
            escape(&error.to_string())
        ),
    )
}

/// 400, or another client error: the request itself cannot be handled.
pub fn refused(status: StatusCode, why: &str) -> Page {
    page(
        status,
        "Request refused",
        &format!("<p>{}</p>", escape(why)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(escape("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn block_page_names_the_rule() {
        let info = rules::RuleInfo {
            id: "no-ads".into(),
            location: "r.rules:1".into(),
            action: rules::Action::Deny,
            text: "deny http host ads.example".into(),
            allow_ech: false,
        };
        let page = blocked("http://ads.example/<b>", &info);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(
            page.html
                .contains("Rule <strong>no-ads</strong> (r.rules:1)"),
            "{}",
            page.html
        );
        assert!(page.html.contains("http://ads.example/&lt;b&gt;"));
        let http = String::from_utf8(page.to_http(true, true)).unwrap();
        assert!(http.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{http}");
        assert!(http.contains(&format!("Content-Length: {}\r\n", page.html.len())));
        assert!(http.contains("Connection: close\r\n\r\n<!doctype html>"));
        let head_only = page.to_http(false, false);
        assert!(head_only.ends_with(b"\r\n\r\n"));
    }
}
