//! Properties over random rule sets: printing then parsing changes nothing, and the indexed
//! matcher decides exactly like a plain first-match scan of the rules.

use proptest::prelude::*;

use rules::{
    Action, HostPattern, ListSource, LocalTime, NoFiles, Policy, Protocol, Request, Response, Rule,
    RuleSet,
};

const HOSTS: [&str; 6] = [
    "a.example",
    "b.a.example",
    "c.b.a.example",
    "example",
    "x.test",
    "y.x.test",
];
const IPS: [&str; 5] = [
    "10.0.0.1",
    "10.1.2.3",
    "192.168.1.1",
    "2001:db8::1",
    "fd00::5",
];
const CIDRS: [&str; 7] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.0.0.1",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "2001:db8::/32",
    "::/0",
];
const PORTS: [&str; 6] = ["80", "443", "1-1024", "8000-8100", "53", "65535"];
const QUERY_PORTS: [u16; 6] = [80, 443, 1024, 8050, 53, 65535];
const METHODS: [&str; 3] = ["GET", "POST", "HEAD"];
const PATHS: [&str; 4] = ["/", "/a", "/a/", "/b/c"];
const QUERY_PATHS: [&str; 5] = ["/", "/a", "/a/x", "/b/c/d", "/a/../b/c"];
const TYPES: [&str; 3] = ["text/html", "text/*", "video/*"];
const QUERY_TYPES: [&str; 3] = ["text/html", "text/plain", "video/mp4"];
const TIMES: [&str; 4] = ["Mon-Fri 08:00-18:00", "Sat,Sun", "22:00-06:00", "Wed"];

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(items)
}

fn some_of(items: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::sample::subsequence(items, 1..=max.min(items.len())).prop_map(|v| v.join(","))
}

fn host_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&HOSTS).prop_map(str::to_string),
        pick(&HOSTS).prop_map(|h| format!("*.{h}")),
        pick(&["@l1", "@l2"]).prop_map(str::to_string),
    ]
}

/// One rule line built from valid pieces, with conditions its protocol allows.
fn rule_line() -> impl Strategy<Value = String> {
    let protocol = pick(&["http", "https", "dns", "tcp", "any"]);
    let action = pick(&["allow", "deny"]);
    (
        action,
        protocol,
        prop::collection::vec(host_pattern(), 0..3),
        prop::option::of(some_of(&CIDRS, 2)),
        prop::option::of(some_of(&PORTS, 2)),
        prop::option::of(some_of(&METHODS, 2)),
        prop::option::of(some_of(&PATHS, 2)),
        prop::option::of(some_of(&TYPES, 2)),
        prop::option::of(pick(&["1K", "10M", "1500"])),
        prop::option::of(pick(&TIMES)),
    )
        .prop_map(
            |(action, protocol, hosts, dst, port, method, path, ct, size, time)| {
                let mut line = format!("{action} {protocol}");
                let http = protocol == "http";
                if !hosts.is_empty() && protocol != "tcp" {
                    line += &format!(" host {}", hosts.join(","));
                }
                if protocol != "dns" {
                    if let Some(v) = dst {
                        line += &format!(" dst {v}");
                    }
                    if let Some(v) = port {
                        line += &format!(" port {v}");
                    }
                }
                if http {
                    if let Some(v) = method {
                        line += &format!(" method {v}");
                    }
                    if let Some(v) = path {
                        line += &format!(" path {v}");
                    }
                    if let Some(v) = ct {
                        line += &format!(" content-type {v}");
                    }
                    if let (Some(v), "deny") = (size, action) {
                        line += &format!(" max-body {v}");
                    }
                }
                if let Some(v) = time {
                    line += &format!(" time {v}");
                }
                line
            },
        )
}

fn rule_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(rule_line(), 0..12),
        prop::option::of(pick(&["allow", "deny"])),
        prop::collection::vec(pick(&HOSTS), 0..3),
        prop::collection::vec(pick(&HOSTS), 0..3),
        any::<bool>(),
    )
        .prop_map(|(rules, default, l1, l2, named)| {
            let mut text = String::new();
            text += &format!("list l1 = {}\n", l1.join(" "));
            let l2: Vec<String> = l2.iter().map(|h| format!("*.{h}")).collect();
            text += &format!("list l2 = {}\n", l2.join(" "));
            for (i, rule) in rules.iter().enumerate() {
                if named && i % 2 == 0 {
                    text += &format!("r{i}: ");
                }
                text += rule;
                text += "\n";
            }
            if let Some(d) = default {
                text += &format!("default {d}\n");
            }
            text
        })
}

fn without_lines(mut policy: Policy) -> Policy {
    policy.default = policy.default.map(|(a, _)| (a, 0));
    policy.lists.iter_mut().for_each(|l| l.line = 0);
    policy.rules.iter_mut().for_each(|r| r.line = 0);
    policy
}

/// A query drawn from the same small pools the rules use, so rules often match.
#[derive(Debug, Clone)]
struct Query {
    protocol: Protocol,
    host: Option<&'static str>,
    dst: Option<&'static str>,
    port: Option<u16>,
    method: &'static str,
    path: &'static str,
    time: (u8, u8),
    content_type: Option<&'static str>,
    body_len: Option<u64>,
}

fn query() -> impl Strategy<Value = Query> {
    (
        pick(&Protocol::ALL),
        prop::option::of(pick(&HOSTS)),
        prop::option::of(pick(&IPS)),
        prop::option::of(pick(&QUERY_PORTS)),
        pick(&METHODS),
        pick(&QUERY_PATHS),
        (0u8..7, 0u8..24),
        prop::option::of(pick(&QUERY_TYPES)),
        prop::option::of(pick(&[0u64, 1024, 1025, 10 << 20, (10 << 20) + 1])),
    )
        .prop_map(
            |(protocol, host, dst, port, method, path, time, content_type, body_len)| Query {
                protocol,
                host,
                dst,
                port,
                method,
                path,
                time,
                content_type,
                body_len,
            },
        )
}

impl Query {
    fn request(&self) -> Request<'static> {
        let mut r = Request::new(
            self.protocol,
            LocalTime::new(self.time.0, self.time.1, 30).unwrap(),
        );
        r.host = self.host;
        r.dst = self.dst.map(|ip| ip.parse().unwrap());
        r.port = self.port;
        r.method = Some(self.method);
        r.path = Some(self.path);
        r
    }

    fn response(&self) -> Response<'static> {
        Response {
            content_type: self.content_type,
            body_len: self.body_len,
        }
    }
}

/// How one rule relates to a query, judged straight from the syntax tree.
#[derive(Debug, PartialEq)]
enum NaiveFit {
    No,
    Yes,
    /// Request conditions hold; response conditions unknown.
    Pending,
}

fn naive_host(policy: &Policy, pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(n) => host == n,
        HostPattern::Subdomains(n) => host.ends_with(&format!(".{n}")),
        HostPattern::List(name) => {
            let list = policy.lists.iter().find(|l| &l.name == name).unwrap();
            let ListSource::Inline(patterns) = &list.source else {
                unreachable!()
            };
            patterns.iter().any(|p| naive_host(policy, p, host))
        }
    }
}

fn naive_fit(policy: &Policy, rule: &Rule, q: &Query, response: Option<&Response<'_>>) -> NaiveFit {
    let request = q.request();
    let holds = rule.protocol.is_none_or(|p| p == q.protocol)
        && (rule.hosts.is_empty()
            || q.host
                .is_some_and(|h| rule.hosts.iter().any(|p| naive_host(policy, p, h))))
        && (rule.dst.is_empty()
            || request
                .dst
                .is_some_and(|ip| rule.dst.iter().any(|c| c.contains(ip))))
        && (rule.ports.is_empty()
            || q.port
                .is_some_and(|p| rule.ports.iter().any(|r| r.contains(p))))
        && (!rule.ports.is_empty()
            || rule.protocol != Some(Protocol::Https)
            || q.port == Some(443))
        && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == q.method))
        && (rule.paths.is_empty()
            || rule
                .paths
                .iter()
                .any(|p| rules::normalize_path(q.path).starts_with(p.as_str())))
        && rule.time.is_none_or(|w| w.contains(request.time));
    if !holds {
        return NaiveFit::No;
    }
    if !rule.has_response_conditions() {
        return NaiveFit::Yes;
    }
    let Some(response) = response else {
        return NaiveFit::Pending;
    };
    let type_ok = rule.content_types.is_empty()
        || response
            .content_type
            .is_some_and(|ct| rule.content_types.iter().any(|m| m.matches(ct)));
    let size_ok = rule
        .max_body
        .is_none_or(|max| response.body_len.is_some_and(|len| len > max));
    if type_ok && size_ok {
        NaiveFit::Yes
    } else {
        NaiveFit::No
    }
}

fn rule_id(rule: &Rule) -> String {
    rule.name
        .clone()
        .unwrap_or_else(|| format!("t.rules:{}", rule.line))
}

/// First match by scanning every rule in order; for the request phase, a provisional allow
/// when an earlier pending allow rule may still match the response.
fn naive_decide(
    policy: &Policy,
    q: &Query,
    response: Option<&Response<'_>>,
) -> (Action, String, bool) {
    let mut pending = Vec::new();
    for rule in &policy.rules {
        match naive_fit(policy, rule, q, response) {
            NaiveFit::No => {}
            NaiveFit::Pending => pending.push(rule),
            NaiveFit::Yes => {
                let differs = pending.iter().any(|p| p.action != rule.action);
                if rule.action == Action::Deny
                    && let Some(allow) = pending.iter().find(|p| p.action == Action::Allow)
                {
                    return (Action::Allow, rule_id(allow), true);
                }
                return (rule.action, rule_id(rule), differs);
            }
        }
    }
    let default = policy.default_action();
    match (default, pending.iter().find(|p| p.action == Action::Allow)) {
        (Action::Deny, Some(allow)) => (Action::Allow, rule_id(allow), true),
        _ => (
            default,
            "default".into(),
            pending.iter().any(|p| p.action != default),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printed_then_parsed_is_equal(text in rule_file()) {
        let parsed = rules::parse("t.rules", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let printed = parsed.to_string();
        let reparsed = rules::parse("t.rules", &printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        prop_assert_eq!(without_lines(reparsed.clone()), without_lines(parsed));
        prop_assert_eq!(reparsed.to_string(), printed);
    }

    #[test]
    fn indexed_matcher_agrees_with_a_linear_scan(text in rule_file(), queries in prop::collection::vec(query(), 16)) {
        let policy = rules::parse("t.rules", &text).unwrap();
        let compiled = RuleSet::compile("t.rules", &policy, &NoFiles).unwrap();
        for q in &queries {
            let request = q.request();
            let d = compiled.decide(&request);
            prop_assert_eq!(
                (d.action, d.rule.id.clone(), d.response_check),
                naive_decide(&policy, q, None),
                "request phase, query {:?}\n{}", q, text
            );
            let response = q.response();
            let d = compiled.decide_response(&request, &response);
            let (action, id, _) = naive_decide(&policy, q, Some(&response));
            prop_assert_eq!((d.action, d.rule.id.clone()), (action, id), "response phase, query {:?}\n{}", q, text);
        }
    }
}
