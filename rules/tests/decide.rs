//! Every condition of the matcher, through the public API the card uses.

use std::collections::HashMap;

use rules::{Action, ErrorKind, LocalTime, NoFiles, Protocol, Request, Response, RuleSet};

fn compile(text: &str) -> RuleSet {
    RuleSet::from_text("t.rules", text, &NoFiles).unwrap_or_else(|e| panic!("{e}"))
}

fn monday_noon() -> LocalTime {
    LocalTime::new(0, 12, 0).unwrap()
}

fn http(host: &str) -> Request<'_> {
    Request::new(Protocol::Http, monday_noon())
        .host(host)
        .port(80)
        .method("GET")
        .path("/")
}

/// The id of the rule that decided, and the action.
fn decided(rules: &RuleSet, request: &Request<'_>) -> (Action, String) {
    let d = rules.decide(request);
    (d.action, d.rule.id.clone())
}

#[test]
fn first_match_wins_and_default_applies_last() {
    let rules = compile(
        "a: deny http host x.example\nb: allow http host x.example\nc: allow http\ndefault deny\n",
    );
    assert_eq!(
        decided(&rules, &http("x.example")),
        (Action::Deny, "a".into())
    );
    assert_eq!(
        decided(&rules, &http("y.example")),
        (Action::Allow, "c".into())
    );
    let dns = Request::new(Protocol::Dns, monday_noon()).host("x.example");
    assert_eq!(decided(&rules, &dns), (Action::Deny, "default".into()));
    let open = compile("default allow\n");
    assert_eq!(decided(&open, &dns).0, Action::Allow);
    let closed = compile("# no default line\n");
    assert_eq!(decided(&closed, &dns).0, Action::Deny);
}

#[test]
fn unnamed_rules_are_known_by_file_and_line() {
    let rules = compile("\n\nallow http host x.example\n");
    let d = rules.decide(&http("x.example"));
    assert_eq!(d.rule.id, "t.rules:3");
    assert_eq!(d.rule.location, "t.rules:3");
    assert_eq!(d.rule.text, "allow http host x.example");
    assert_eq!(d.to_string(), "allow by t.rules:3");
}

#[test]
fn protocols() {
    let rules = compile(
        "allow https\nallow tcp port 22\nallow dns host ok.example\nallow any host any.example\n",
    );
    let at = monday_noon();
    assert_eq!(
        rules
            .decide(
                &Request::new(Protocol::Https, at)
                    .host("a.example")
                    .port(443)
            )
            .action,
        Action::Allow
    );
    assert_eq!(rules.decide(&http("a.example")).action, Action::Deny);
    assert_eq!(
        rules
            .decide(&Request::new(Protocol::Dns, at).host("ok.example"))
            .action,
        Action::Allow
    );
    assert_eq!(
        rules
            .decide(&Request::new(Protocol::Dns, at).host("no.example"))
            .action,
        Action::Deny
    );
    let tcp = |port| {
        Request::new(Protocol::Tcp, at)
            .dst("10.0.0.1".parse().unwrap())
            .port(port)
    };
    assert_eq!(rules.decide(&tcp(22)).action, Action::Allow);
    assert_eq!(rules.decide(&tcp(23)).action, Action::Deny);
    for protocol in [Protocol::Http, Protocol::Https, Protocol::Dns] {
        let request = Request::new(protocol, at).host("any.example");
        assert_eq!(rules.decide(&request).action, Action::Allow, "{protocol}");
    }
}

#[test]
fn an_https_rule_without_a_port_holds_for_443_only() {
    let rules = compile(
        "web: allow https host a.example\ndot: allow https host dns.example port 853\nany: allow any host b.example\n",
    );
    let tls = |host, port| {
        Request::new(Protocol::Https, monday_noon())
            .host(host)
            .port(port)
    };
    assert_eq!(decided(&rules, &tls("a.example", 443)).1, "web");
    // A TLS hello (or CONNECT) to another port is not what `https` names.
    assert_eq!(decided(&rules, &tls("a.example", 25)).1, "default");
    assert_eq!(decided(&rules, &tls("a.example", 853)).1, "default");
    assert_eq!(
        decided(
            &rules,
            &Request::new(Protocol::Https, monday_noon()).host("a.example")
        )
        .1,
        "default",
        "a port that is not known is not 443"
    );
    // DNS over TLS passes only where a rule names its port.
    assert_eq!(decided(&rules, &tls("dns.example", 853)).1, "dot");
    assert_eq!(decided(&rules, &tls("dns.example", 443)).1, "default");
    // `any` is every protocol on every port, as before.
    assert_eq!(decided(&rules, &tls("b.example", 8443)).1, "any");
}

#[test]
fn exact_and_subdomain_hosts() {
    let rules = compile("exact: allow http host example.com\nsub: allow http host *.example.org\n");
    assert_eq!(decided(&rules, &http("example.com")).1, "exact");
    assert_eq!(
        decided(&rules, &http("EXAMPLE.com.")).1,
        "exact",
        "case and trailing dot do not matter"
    );
    assert_eq!(decided(&rules, &http("www.example.com")).1, "default");
    assert_eq!(decided(&rules, &http("a.b.example.org")).1, "sub");
    assert_eq!(
        decided(&rules, &http("example.org")).1,
        "default",
        "*.x does not match x"
    );
    assert_eq!(
        decided(&rules, &http("badexample.org")).1,
        "default",
        "suffix match is by whole labels"
    );
    let no_host = Request::new(Protocol::Http, monday_noon()).port(80);
    assert_eq!(decided(&rules, &no_host).1, "default");
}

#[test]
fn lists_inline_and_from_files() {
    let files = HashMap::from([(
        "block.txt".to_string(),
        "bad.example\n*.worse.example\n0.0.0.0 tracker.example\n".to_string(),
    )]);
    let rules = RuleSet::from_text(
        "t.rules",
        "list blocked file block.txt\nlist inline = inline.example\nno: deny any host @blocked,@inline\nallow any\n",
        &files,
    )
    .unwrap();
    for host in [
        "bad.example",
        "x.worse.example",
        "tracker.example",
        "inline.example",
    ] {
        assert_eq!(
            decided(&rules, &http(host)),
            (Action::Deny, "no".into()),
            "{host}"
        );
    }
    assert_eq!(decided(&rules, &http("good.example")).0, Action::Allow);
}

#[test]
fn the_built_in_doh_list_names_public_resolvers() {
    let rules = compile("no-doh: deny any host @doh\nallow any\n");
    for host in [
        "dns.google",
        "cloudflare-dns.com",
        "mozilla.cloudflare-dns.com",
        "dns.quad9.net",
    ] {
        assert_eq!(
            decided(&rules, &http(host)),
            (Action::Deny, "no-doh".into()),
            "{host}"
        );
    }
    assert_eq!(decided(&rules, &http("google.com")).0, Action::Allow);
}

#[test]
fn list_file_problems_are_reported_where_they_are() {
    let files = HashMap::from([(
        "block.txt".to_string(),
        "ok.example\nbad..example\n".to_string(),
    )]);
    let e = RuleSet::from_text(
        "t.rules",
        "list b file block.txt\ndeny any host @b\n",
        &files,
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(
        (e.0[0].file.as_str(), e.0[0].line, e.0[0].col),
        ("block.txt", 2, 5)
    );
    let e = RuleSet::from_text(
        "t.rules",
        "list b file missing.txt\ndeny any host @b\n",
        &files,
    )
    .unwrap_err();
    assert_eq!(e.kinds(), vec![ErrorKind::ListFile]);
    assert_eq!((e.0[0].line, e.0[0].col), (1, 13));
    assert!(
        e.to_string()
            .contains("cannot read list file `missing.txt`"),
        "{e}"
    );
}

#[test]
fn destination_blocks_v4_and_v6() {
    let rules = compile(
        "lan: allow tcp dst 192.168.0.0/16,fd00::/8\nhost: deny tcp dst 192.168.1.1\none: allow tcp dst 2001:db8::1\n",
    );
    let tcp = |ip: &str| {
        Request::new(Protocol::Tcp, monday_noon())
            .dst(ip.parse().unwrap())
            .port(1)
    };
    assert_eq!(
        decided(&rules, &tcp("192.168.1.1")).1,
        "lan",
        "first match, not most specific"
    );
    assert_eq!(decided(&rules, &tcp("192.168.200.3")).1, "lan");
    assert_eq!(decided(&rules, &tcp("fd12::1")).1, "lan");
    assert_eq!(decided(&rules, &tcp("2001:db8::1")).1, "one");
    assert_eq!(decided(&rules, &tcp("10.0.0.1")).1, "default");
    assert_eq!(
        decided(&rules, &Request::new(Protocol::Tcp, monday_noon()).port(1)).1,
        "default"
    );
}

#[test]
fn ports_and_ranges() {
    let rules = compile("web: allow tcp port 80,443\nhigh: allow tcp port 8000-8999\n");
    let tcp = |port| {
        Request::new(Protocol::Tcp, monday_noon())
            .dst("10.0.0.1".parse().unwrap())
            .port(port)
    };
    assert_eq!(decided(&rules, &tcp(443)).1, "web");
    assert_eq!(decided(&rules, &tcp(8999)).1, "high");
    assert_eq!(decided(&rules, &tcp(9000)).1, "default");
    assert_eq!(decided(&rules, &tcp(1)).1, "default");
}

#[test]
fn conditions_combine_with_and() {
    let rules = compile("r: allow http host *.example.com dst 10.0.0.0/8 port 8080\n");
    let base = |dst: &str, port| {
        Request::new(Protocol::Http, monday_noon())
            .host("a.example.com")
            .dst(dst.parse().unwrap())
            .port(port)
    };
    assert_eq!(decided(&rules, &base("10.1.1.1", 8080)).1, "r");
    assert_eq!(decided(&rules, &base("11.1.1.1", 8080)).1, "default");
    assert_eq!(decided(&rules, &base("10.1.1.1", 80)).1, "default");
}

#[test]
fn methods_and_paths() {
    let rules = compile(
        "ro: allow http method GET,HEAD path /public/,/docs\nadmin: deny http path /admin\n",
    );
    let req =
        |method: &'static str, path: &'static str| http("h.example").method(method).path(path);
    assert_eq!(decided(&rules, &req("GET", "/public/a.html")).1, "ro");
    assert_eq!(
        decided(&rules, &req("get", "/docs/x")).1,
        "ro",
        "methods compare case-insensitively"
    );
    assert_eq!(
        decided(&rules, &req("GET", "/docsearch")).1,
        "ro",
        "a prefix is a plain prefix"
    );
    assert_eq!(decided(&rules, &req("POST", "/public/a")).1, "default");
    assert_eq!(
        decided(&rules, &req("GET", "/public")).1,
        "default",
        "/public/ needs the slash"
    );
    assert_eq!(
        decided(&rules, &req("GET", "/public/../admin/x")).1,
        "admin",
        "dot segments cannot dodge a rule"
    );
    assert_eq!(decided(&rules, &req("GET", "//%61dmin?q=1")).1, "admin");
}

#[test]
fn time_windows() {
    let rules = compile(
        "office: allow https time Mon-Fri 08:00-18:00\nnight: allow https time Sat 22:00-02:00\n",
    );
    let at = |day, hour| {
        Request::new(Protocol::Https, LocalTime::new(day, hour, 0).unwrap())
            .host("x.example")
            .port(443)
    };
    assert_eq!(decided(&rules, &at(2, 9)).1, "office");
    assert_eq!(decided(&rules, &at(2, 18)).1, "default");
    assert_eq!(decided(&rules, &at(5, 23)).1, "night");
    assert_eq!(
        decided(&rules, &at(6, 1)).1,
        "night",
        "Saturday night runs into Sunday"
    );
    assert_eq!(decided(&rules, &at(6, 23)).1, "default");
}

#[test]
fn response_rules_make_the_request_provisional() {
    let rules = compile(
        "html: allow http content-type text/html\nvideo: deny http content-type video/*\nbig: deny http max-body 1M\nweb: allow http host ok.example\n",
    );
    let ok = http("ok.example");
    let d = rules.decide(&ok);
    assert_eq!(
        (d.action, d.rule.id.as_str(), d.response_check),
        (Action::Allow, "web", true)
    );
    // A denied request goes ahead while an earlier allow rule may still match the response.
    let other = http("other.example");
    let d = rules.decide(&other);
    assert_eq!(
        (d.action, d.rule.id.as_str(), d.response_check),
        (Action::Allow, "html", true)
    );

    let respond = |request: &Request<'_>, ct: Option<&'static str>, len: Option<u64>| {
        let d = rules.decide_response(
            request,
            &Response {
                content_type: ct,
                body_len: len,
            },
        );
        (
            d.action,
            d.rule.id.clone(),
            d.body_limit.map(|(n, r)| (n, r.id.clone())),
        )
    };
    assert_eq!(
        respond(&ok, Some("video/mp4"), Some(10)),
        (Action::Deny, "video".into(), None)
    );
    assert_eq!(
        respond(&ok, Some("text/html; charset=utf-8"), Some(10 << 20)),
        (Action::Allow, "html".into(), None)
    );
    assert_eq!(
        respond(&ok, Some("image/png"), Some(2 << 20)),
        (Action::Deny, "big".into(), None)
    );
    assert_eq!(
        respond(&ok, Some("image/png"), Some(1 << 20)),
        (Action::Allow, "web".into(), None),
        "exactly the limit passes"
    );
    assert_eq!(
        respond(&ok, Some("image/png"), None),
        (Action::Allow, "web".into(), Some((1 << 20, "big".into())))
    );
    assert_eq!(
        respond(&ok, None, Some(5)),
        (Action::Allow, "web".into(), None)
    );
    assert_eq!(
        respond(&other, Some("image/png"), Some(5)),
        (Action::Deny, "default".into(), None)
    );
    assert_eq!(
        respond(&other, Some("text/html"), None),
        (Action::Allow, "html".into(), None)
    );
}

#[test]
fn no_pending_flag_when_the_response_cannot_change_the_verdict() {
    let rules = compile("deny http content-type video/*\ndeny http host bad.example\nallow http\n");
    let d = rules.decide(&http("bad.example"));
    assert_eq!((d.action, d.response_check), (Action::Deny, false));
    let later = compile("allow http host ok.example\ndeny http content-type video/*\n");
    assert!(
        !later.decide(&http("ok.example")).response_check,
        "rules after the decision do not matter"
    );
}

#[test]
fn the_smallest_earlier_limit_cuts_the_body() {
    let rules =
        compile("a: deny http max-body 10M\nb: deny http host x.example max-body 1M\nallow http\n");
    let unknown = Response {
        content_type: Some("a/b"),
        body_len: None,
    };
    let d = rules.decide_response(&http("x.example"), &unknown);
    assert_eq!(
        d.body_limit.map(|(n, r)| (n, r.id.as_str())),
        Some((1 << 20, "b"))
    );
    let d = rules.decide_response(&http("y.example"), &unknown);
    assert_eq!(
        d.body_limit.map(|(n, r)| (n, r.id.as_str())),
        Some((10 << 20, "a"))
    );
}

#[test]
fn explain_says_which_condition_matched() {
    let rules = compile(
        "list ads = ads.example\nads: deny any host @ads,*.track.example\nallow tcp dst 10.0.0.0/8 port 1-1024\n",
    );
    let e = rules.explain(
        &Request::new(Protocol::Dns, monday_noon()).host("a.track.example"),
        None,
    );
    assert_eq!(e.decision.rule.id, "ads");
    assert!(
        e.reasons.iter().any(|r| r
            == "host a.track.example matches *.track.example (rule hosts: @ads,*.track.example)"),
        "{e}"
    );
    let e = rules.explain(
        &Request::new(Protocol::Dns, monday_noon()).host("ads.example"),
        None,
    );
    assert!(
        e.reasons
            .iter()
            .any(|r| r.starts_with("host ads.example is ads.example")),
        "{e}"
    );
    let tcp = Request::new(Protocol::Tcp, monday_noon())
        .dst("10.9.9.9".parse().unwrap())
        .port(22);
    let e = rules.explain(&tcp, None);
    assert!(
        e.reasons
            .contains(&"destination 10.9.9.9 is in 10.0.0.0/8".to_string()),
        "{e}"
    );
    assert!(
        e.reasons.contains(&"port 22 is in 1-1024".to_string()),
        "{e}"
    );
    let e = rules.explain(&Request::new(Protocol::Tcp, monday_noon()), None);
    assert!(e.reasons[0].starts_with("no rule matched"), "{e}");
}

#[test]
fn odd_query_names_match_only_hostless_rules() {
    let rules = compile("deny any host x.example\nallow any\n");
    let long = "a.".repeat(200);
    for host in ["", "bücher.example", long.as_str()] {
        let request = Request::new(Protocol::Dns, monday_noon()).host(host);
        assert_eq!(rules.decide(&request).action, Action::Allow, "{host}");
    }
}
