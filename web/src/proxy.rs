//! The pages the card's proxy answers with instead of the page asked for: blocked by a rule,
//! the site could not be reached, the request refused. Each says what happened and why.
//!
//! The proxy serves them in the name of whatever site was asked for, to anyone on the
//! protected computer: they link nothing (not even the card's stylesheet, which that site does
//! not have), carry a small inline style, and every text in them comes from the request or the
//! rules, so askama escapes it.

use askama::Template;

/// The `Content-Security-Policy` these pages are served with: their inline style and nothing
/// else, so text that slipped past escaping could still run no script nor load anything.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The block page's "ask for access" form: it posts `fields` (hidden) and the user's reason
/// to the card page at `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskForm {
    pub action: String,
    pub fields: Vec<(&'static str, String)>,
}

impl AskForm {
    /// The `Content-Security-Policy` of a page with this form: [`CONTENT_SECURITY_POLICY`]
    /// letting forms post to the card page, and nowhere else.
    pub fn content_security_policy(&self) -> String {
        let origin = self
            .action
            .strip_suffix(ACCESS_REQUESTS_PATH)
            .unwrap_or(&self.action);
        CONTENT_SECURITY_POLICY.replace("form-action 'none'", &format!("form-action {origin}"))
    }
}

/// Where the card page takes access requests.
pub const ACCESS_REQUESTS_PATH: &str = "/access-requests";

/// One proxy answer page.
#[derive(Debug, Clone, Template)]
#[template(path = "card/proxy.html")]
pub struct ProxyPage<'a> {
    pub reason: Reason<'a>,
}

/// What happened to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason<'a> {
    /// A rule denied it. The rule is named, so the user can ask for the right change.
    Blocked {
        target: &'a str,
        rule_id: &'a str,
        /// `file:line`.
        rule_location: &'a str,
        rule_text: &'a str,
        /// On a managed card: the form that asks the policy server's administrator for
        /// access.
        ask: Option<&'a AskForm>,
    },
    /// The request was allowed but its destination could not be reached.
    Unreachable {
        target: &'a str,
        /// Why, as one clause: `203.0.113.12:80 refused the connection`.
        error: &'a str,
        timed_out: bool,
    },
    /// The request itself cannot be handled.
    Refused { why: &'a str },
}

impl ProxyPage<'_> {
    /// The heading, also the window title.
    pub fn title(&self) -> &'static str {
        match self.reason {
            Reason::Blocked { .. } => "Blocked by the card's rules",
            Reason::Unreachable {
                timed_out: true, ..
            } => "The site did not answer in time",
            Reason::Unreachable { .. } => "The site could not be reached",
            Reason::Refused { .. } => "Request refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert('x')</script>&\"";
    const ESCAPED: &str = "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;&#38;&#34;";

    fn render(reason: Reason<'_>) -> String {
        ProxyPage { reason }.render().unwrap()
    }

    #[test]
    fn every_kind_of_page_escapes_what_it_is_told() {
        let pages = [
            render(Reason::Blocked {
                target: HOSTILE,
                rule_id: HOSTILE,
                rule_location: HOSTILE,
                rule_text: HOSTILE,
                ask: None,
            }),
            render(Reason::Unreachable {
                target: HOSTILE,
                error: HOSTILE,
                timed_out: false,
            }),
            render(Reason::Refused { why: HOSTILE }),
        ];
        for html in pages {
            assert!(!html.contains("<script>"), "{html}");
            assert!(html.contains(ESCAPED), "{html}");
        }
    }

    #[test]
    fn pages_are_standalone_accessible_and_titled() {
        let html = render(Reason::Unreachable {
            target: "http://203.0.113.99/",
            error: "203.0.113.99:80 did not answer within 1s",
            timed_out: true,
        });
        assert!(
            html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"),
            "{html}"
        );
        assert!(html.contains("name=\"viewport\""), "{html}");
        assert!(
            html.contains("<title>The site did not answer in time · cardwall</title>"),
            "{html}"
        );
        assert_eq!(html.matches("<h1>").count(), 1, "{html}");
        assert!(
            html.contains("<h1>The site did not answer in time</h1>"),
            "{html}"
        );
        assert!(html.contains("<style>"), "{html}");
        // Served under the name of any site: nothing may point at the card's own files.
        assert!(
            !html.contains("<link") && !html.contains("/static/"),
            "{html}"
        );
        assert!(!html.contains(" src=") && !html.contains("href="), "{html}");
    }

    /// Issue 16: a managed card's block page asks with a plain form (no script), its hidden
    /// fields escaped, the reason labelled and bounded; its CSP lets it post to the card only.
    #[test]
    fn the_ask_form_posts_to_the_card_page_only() {
        let form = AskForm {
            action: "https://172.31.77.2/access-requests".into(),
            fields: vec![("host", HOSTILE.into()), ("mac", "ab".into())],
        };
        let page = render(Reason::Blocked {
            target: "http://blocked.test/x",
            rule_id: "r",
            rule_location: "rules:3",
            rule_text: "deny any",
            ask: Some(&form),
        });
        assert!(
            page.contains(r#"action="https://172.31.77.2/access-requests""#),
            "{page}"
        );
        assert!(
            page.contains(&format!(r#"name="host" value="{ESCAPED}""#)),
            "{page}"
        );
        assert!(page.contains(r#"<label for="reason">"#), "{page}");
        assert!(page.contains(r#"maxlength="500""#), "{page}");
        assert!(!page.contains("<script"), "{page}");
        assert_eq!(
            form.content_security_policy(),
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
             form-action https://172.31.77.2; frame-ancestors 'none'"
        );
    }
}
