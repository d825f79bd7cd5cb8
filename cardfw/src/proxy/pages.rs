//! The small HTML pages the proxy answers with instead of the page asked for: blocked by a
//! rule, upstream unreachable, request refused. Each says what happened and why.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
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

fn page(status: StatusCode, title: &str, body_html: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         h1{{font-size:1.4rem}}code{{background:#eee;padding:.1rem .3rem;border-radius:3px;word-break:break-all}}</style>\
         </head><body><h1>{title}</h1>{body_html}<p><small>cardwall card firewall</small></p></body></html>\n"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(
            Full::new(Bytes::from(html))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static headers are valid")
}

/// 403: a rule denied the request. Names the rule so the user can ask for the right change.
pub fn blocked(target: &str, rule: &rules::RuleInfo) -> Response<ProxyBody> {
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
pub fn upstream_failed(target: &str, error: &UpstreamError) -> Response<ProxyBody> {
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
pub fn refused(status: StatusCode, why: &str) -> Response<ProxyBody> {
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

    #[tokio::test]
    async fn block_page_names_the_rule() {
        let info = rules::RuleInfo {
            id: "no-ads".into(),
            location: "r.rules:1".into(),
            action: rules::Action::Deny,
            text: "deny http host ads.example".into(),
            allow_ech: false,
        };
        let response = blocked("http://ads.example/<b>", &info);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("Rule <strong>no-ads</strong> (r.rules:1)"),
            "{text}"
        );
        assert!(text.contains("http://ads.example/&lt;b&gt;"), "{text}");
    }
}
