//! The compiled rule set: where every connection, request and DNS question is decided.
//!
//! Each rule is filed under one index, by its most selective condition: its host names, else
//! its destination blocks, else its ports; rules with none of those sit in a short list per
//! protocol. A query collects the few candidate rules from the indexes, and the lowest rule
//! number among the candidates that fully match wins, which is exactly first-match order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::diagnostic::{Diagnostic, Diagnostics, ErrorKind};
use crate::host::{HostHit, HostIndex, HostPattern, MAX_NAME_LEN, query_name};
use crate::index::{PortIndex, PrefixIndex};
use crate::lists::{ListLoader, read_list_file};
use crate::policy::{Action, ListDef, ListSource, Policy, Protocol, Rule};
use crate::sets::RuleSets;
use crate::time::{LocalTime, TimeWindow};
use crate::value::{Cidr, MediaRange, PortRange, format_size, normalize_path};

/// The port an `https` rule without a `port` condition holds for.
pub const HTTPS_PORT: u16 = 443;

/// What the proxy knows about a connection or request when it asks for a decision.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub protocol: Protocol,
    /// HTTP `Host`, TLS SNI, CONNECT host, or the DNS question name.
    pub host: Option<&'a str>,
    /// Destination address, when known.
    pub dst: Option<IpAddr>,
    pub port: Option<u16>,
    pub method: Option<&'a str>,
    /// The request target's path as sent; the matcher normalises it (see
    /// [`crate::normalize_path`]).
    pub path: Option<&'a str>,
    pub time: LocalTime,
}

impl<'a> Request<'a> {
    pub fn new(protocol: Protocol, time: LocalTime) -> Self {
        Request {
            protocol,
            host: None,
            dst: None,
            port: None,
            method: None,
            path: None,
            time,
        }
    }

    pub fn host(mut self, host: &'a str) -> Self {
        self.host = Some(host);
        self
    }

    pub fn dst(mut self, dst: IpAddr) -> Self {
        self.dst = Some(dst);
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn method(mut self, method: &'a str) -> Self {
        self.method = Some(method);
        self
    }

    pub fn path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }
}

/// What is known of an HTTP response when its headers arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Response<'a> {
    pub content_type: Option<&'a str>,
    /// From `Content-Length`; `None` for chunked or close-delimited bodies.
    pub body_len: Option<u64>,
}

/// How a rule is reported: on block pages, in the log, in `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's name, or `file:line` when it has none; `default` for the default.
    pub id: String,
    /// `file:line` (for an absent `default` line, `file` alone).
    pub location: String,
    pub action: Action,
    /// The rule as text, for block pages and logs.
    pub text: String,
    /// The rule lets a TLS hello naming an Encrypted Client Hello cover name through
    /// (`allow-ech`): the card refuses hellos naming the public name of an ECH config it
    /// stripped from DNS unless the deciding rule says this.
    pub allow_ech: bool,
    /// The rule lets DNS answers with private, loopback or link-local addresses through
    /// (`allow-private`); otherwise the card refuses them as DNS rebinding.
    pub allow_private: bool,
    /// The card terminates the TLS connections this rule allows (`inspect`) and decides each
    /// HTTP request inside them as a plain `http` request.
    pub inspect: bool,
    /// On an inspected connection the card presents the user's client certificate to the
    /// site (`client-cert`).
    pub client_cert: bool,
    /// The card's VPN the allowed connection goes through (`via NAME`).
    pub via: Option<String>,
}

impl fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id == self.location {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{} ({})", self.id, self.location)
        }
    }
}

/// A verdict and the rule that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'r> {
    pub action: Action,
    pub rule: &'r RuleInfo,
    /// Only from [`RuleSet::decide`]: the request may go ahead, but a rule before the deciding
    /// one looks at the response, so the proxy must call [`RuleSet::decide_response`] when
    /// the response headers arrive.
    pub response_check: bool,
    /// Only from [`RuleSet::decide_response`] when the body length is unknown: cut the body
    /// and close the connection once it exceeds this many bytes; the rule is the one to log.
    pub body_limit: Option<(u64, &'r RuleInfo)>,
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.action, self.rule)?;
        if self.response_check {
            f.write_str(", pending the response")?;
        }
        if let Some((limit, rule)) = self.body_limit {
            write!(f, ", body cut after {} by {rule}", format_size(limit))?;
        }
        Ok(())
    }
}

/// A decision with the reasons behind it, one line each.
#[derive(Debug, Clone)]
pub struct Explanation<'r> {
    pub decision: Decision<'r>,
    pub reasons: Vec<String>,
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.decision)?;
        writeln!(f, "  rule: {}", self.decision.rule.text)?;
        for reason in &self.reasons {
            writeln!(f, "  - {reason}")?;
        }
        Ok(())
    }
}

/// Sizes of a compiled rule set, for status pages and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub rules: usize,
    pub indexed_names: usize,
    /// Approximate heap use of the host index (arena plus table).
    pub host_index_bytes: usize,
}

#[derive(Debug)]
struct CompiledRule {
    info: RuleInfo,
    protocol: Option<Protocol>,
    hosts: Vec<HostPattern>,
    dst: Vec<Cidr>,
    ports: Vec<PortRange>,
    methods: Vec<String>,
    paths: Vec<String>,
    content_types: Vec<MediaRange>,
    max_body: Option<u64>,
    time: Option<TimeWindow>,
}

/// How far a rule fits what is known so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    No,
    Yes,
    /// Every request condition holds; the rule's response conditions are not known yet.
    Pending,
    /// Every condition but `max-body` holds and the body length is unknown: the rule fires
    /// if the body grows past this size.
    OverLimit(u64),
}

/// The facts of one query, normalised once.
struct Facts<'q> {
    request: &'q Request<'q>,
    host: Option<&'q str>,
    path: Option<Cow<'q, str>>,
    response: Option<&'q Response<'q>>,
}

impl CompiledRule {
    /// Checks every condition except the host, which the host index already checked: a rule
    /// with hosts is only ever a candidate through that index.
    fn fit(&self, facts: &Facts<'_>) -> Fit {
        let request = facts.request;
        if self.protocol.is_some_and(|p| p != request.protocol) {
            return Fit::No;
        }
        if !self.dst.is_empty()
            && !request
                .dst
                .is_some_and(|ip| self.dst.iter().any(|c| c.contains(ip)))
        {
            return Fit::No;
        }
        if !self.ports.is_empty()
            && !request
                .port
                .is_some_and(|p| self.ports.iter().any(|r| r.contains(p)))
        {
            return Fit::No;
        }
        // `https` means TLS where TLS is expected: without a `port` condition, port 443 only.
        if self.ports.is_empty()
            && self.protocol == Some(Protocol::Https)
            && request.port != Some(HTTPS_PORT)
        {
            return Fit::No;
        }
        if !self.methods.is_empty()
            && !request
                .method
                .is_some_and(|m| self.methods.iter().any(|want| want.eq_ignore_ascii_case(m)))
        {
            return Fit::No;
        }
        if !self.paths.is_empty()
            && !facts.path.as_deref().is_some_and(|p| {
                self.paths
                    .iter()
                    .any(|prefix| p.starts_with(prefix.as_str()))
            })
        {
            return Fit::No;
        }
        if self.time.is_some_and(|w| !w.contains(request.time)) {
            return Fit::No;
        }
        if self.content_types.is_empty() && self.max_body.is_none() {
            return Fit::Yes;
        }
        let Some(response) = facts.response else {
            return Fit::Pending;
        };
        if !self.content_types.is_empty()
            && !response
                .content_type
                .is_some_and(|ct| self.content_types.iter().any(|m| m.matches(ct)))
        {
            return Fit::No;
        }
        match (self.max_body, response.body_len) {
            (None, _) => Fit::Yes,
            (Some(max), Some(len)) if len > max => Fit::Yes,
            (Some(_), Some(_)) => Fit::No,
            (Some(max), None) => Fit::OverLimit(max),
        }
    }
}

/// A compiled, immutable rule set. Build it once per policy change; decide from many threads.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    default: RuleInfo,
    sets: RuleSets,
    hosts: HostIndex,
    v4: PrefixIndex,
    v6: PrefixIndex,
    ports: PortIndex,
    /// Rules with no host, address or port condition, by protocol (`Protocol` order, then
    /// `any` last).
    unindexed: [Vec<u32>; 5],
}

fn protocol_slot(protocol: Option<Protocol>) -> usize {
    match protocol {
        Some(Protocol::Http) => 0,
        Some(Protocol::Https) => 1,
        Some(Protocol::Dns) => 2,
        Some(Protocol::Tcp) => 3,
        None => 4,
    }
}

impl RuleSet {
    /// Parses and compiles a rule file; list files are read through `lists`.
    pub fn from_text(
        file: &str,
        text: &str,
        lists: &dyn ListLoader,
    ) -> Result<RuleSet, Diagnostics> {
        let policy = crate::parse(file, text)?;
        RuleSet::compile(file, &policy, lists)
    }

    /// Reads, parses and compiles a rule file from disk, with list files beside it.
    pub fn from_path(path: &std::path::Path) -> Result<RuleSet, crate::LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Ok(RuleSet::from_text(
            &path.display().to_string(),
            &text,
            &crate::DirLoader(dir),
        )?)
    }

    /// Compiles a parsed policy. List files are read and checked here; their errors come
    /// back as `listfile:line:col`.
    pub fn compile(
        file: &str,
        policy: &Policy,
        lists: &dyn ListLoader,
    ) -> Result<RuleSet, Diagnostics> {
        let mut errors = Vec::new();
        let mut list_texts: HashMap<&str, Option<String>> = HashMap::new();
        let mut sets = RuleSets::new();
        let mut hosts = HostIndex::new();
        let mut v4 = PrefixIndex::default();
        let mut v6 = PrefixIndex::default();
        let mut port_ranges = Vec::new();
        let mut unindexed: [Vec<u32>; 5] = Default::default();

        for (number, rule) in policy.rules.iter().enumerate() {
            let number = u32::try_from(number).expect("fewer than 2^32 rules");
            if !rule.hosts.is_empty() {
                for pattern in &rule.hosts {
                    let mut add = |p: HostPattern| match p {
                        HostPattern::Exact(name) => hosts.insert(&mut sets, &name, false, number),
                        HostPattern::Subdomains(name) => {
                            hosts.insert(&mut sets, &name, true, number)
                        }
                        HostPattern::List(_) => unreachable!("lists hold no list references"),
                    };
                    let HostPattern::List(list_name) = pattern else {
                        add(pattern.clone());
                        continue;
                    };
                    let Some(list) = policy.lists.iter().find(|l| &l.name == list_name) else {
                        crate::builtin::patterns(list_name)
                            .expect("the parser checked every list reference")
                            .into_iter()
                            .for_each(&mut add);
                        continue;
                    };
                    match &list.source {
                        ListSource::Inline(patterns) => patterns.iter().cloned().for_each(&mut add),
                        ListSource::File(path) => {
                            let first_use = !list_texts.contains_key(path.as_str());
                            let text =
                                list_texts
                                    .entry(path)
                                    .or_insert_with(|| match lists.load(path) {
                                        Ok(text) => Some(text),
                                        Err(e) => {
                                            errors.push(list_file_error(file, list, &e));
                                            None
                                        }
                                    });
                            if let Some(text) = text {
                                let found = read_list_file(path, text, &mut add);
                                if first_use {
                                    errors.extend(found);
                                }
                            }
                        }
                    }
                }
            } else if !rule.dst.is_empty() {
                for cidr in &rule.dst {
                    let index = if cidr.addr().is_ipv4() {
                        &mut v4
                    } else {
                        &mut v6
                    };
                    index.insert(&mut sets, *cidr, number);
                }
            } else if !rule.ports.is_empty() {
                port_ranges.extend(rule.ports.iter().map(|r| (*r, number)));
            } else {
                unindexed[protocol_slot(rule.protocol)].push(number);
            }
        }
        if !errors.is_empty() {
            return Err(Diagnostics(errors));
        }
        hosts.shrink_to_fit();
        let ports = PortIndex::build(&mut sets, &port_ranges);
        let rules = policy.rules.iter().map(|r| compile_rule(file, r)).collect();
        let default = match policy.default {
            Some((action, line)) => RuleInfo {
                id: "default".into(),
                location: format!("{file}:{line}"),
                action,
                text: format!("default {action}"),
                allow_ech: false,
                allow_private: false,
                inspect: false,
                client_cert: false,
                via: None,
            },
            None => RuleInfo {
                id: "default".into(),
                location: file.to_string(),
                action: Action::Deny,
                text: "default deny (no default line)".into(),
                allow_ech: false,
                allow_private: false,
                inspect: false,
                client_cert: false,
                via: None,
            },
        };
        Ok(RuleSet {
            rules,
            default,
            sets,
            hosts,
            v4,
            v6,
            ports,
            unindexed,
        })
    }

    /// Decides a request, connection or DNS question. A rule with response conditions that
    /// precedes the deciding rule makes the answer provisional (`response_check`).
    pub fn decide<'r>(&'r self, request: &Request<'_>) -> Decision<'r> {
        self.evaluate(request, None).0
    }

    /// Decides again once the response headers are known, in the same first-match order.
    pub fn decide_response<'r>(
        &'r self,
        request: &Request<'_>,
        response: &Response<'_>,
    ) -> Decision<'r> {
        self.evaluate(request, Some(response)).0
    }

    /// Like `decide` / `decide_response`, with the reasons: which conditions of the deciding
    /// rule held, and why the answer is provisional or has a body limit.
    pub fn explain<'r>(
        &'r self,
        request: &Request<'_>,
        response: Option<&Response<'_>>,
    ) -> Explanation<'r> {
        let (decision, winner, pending) = self.evaluate(request, response);
        let mut reasons = Vec::new();
        match winner {
            Some(number) => self.explain_rule(number, request, response, &mut reasons),
            None => reasons.push(format!(
                "no rule matched, so the default applies: {} ({})",
                self.default.text, self.default.location
            )),
        }
        for number in pending {
            let rule = &self.rules[number as usize];
            reasons.push(format!(
                "earlier {} rule {} depends on the response; its request conditions hold",
                rule.info.action, rule.info
            ));
        }
        if let Some((limit, rule)) = decision.body_limit {
            reasons.push(format!(
                "body length unknown: {rule} cuts it after {}",
                format_size(limit)
            ));
        }
        Explanation { decision, reasons }
    }

    pub fn default_action(&self) -> Action {
        self.default.action
    }

    pub fn stats(&self) -> Stats {
        Stats {
            rules: self.rules.len(),
            indexed_names: self.hosts.names(),
            host_index_bytes: self.hosts.heap_bytes(),
        }
    }

    /// The core of every decision. Returns the decision, the deciding rule's number (`None`
    /// for the default), and the pending rules that came before it.
    fn evaluate<'r>(
        &'r self,
        request: &Request<'_>,
        response: Option<&Response<'_>>,
    ) -> (Decision<'r>, Option<u32>, Vec<u32>) {
        let mut name_buf = [0u8; MAX_NAME_LEN];
        let facts = Facts {
            request,
            host: request.host.and_then(|h| query_name(h, &mut name_buf)),
            path: request.path.map(normalize_path),
            response,
        };
        let none = self.rules.len() as u32;
        let mut best = none;
        // Rules before `best` that are pending or set a body limit; short in practice.
        let mut conditional: Vec<(u32, Fit)> = Vec::new();
        self.for_each_candidate_set(&facts, |candidates| {
            for &number in candidates {
                if number >= best {
                    break;
                }
                match self.rules[number as usize].fit(&facts) {
                    Fit::Yes => {
                        best = number;
                        break;
                    }
                    Fit::No => {}
                    other => conditional.push((number, other)),
                }
            }
        });
        conditional.retain(|(number, _)| *number < best);
        conditional.sort_unstable_by_key(|(number, _)| *number);
        conditional.dedup_by_key(|(number, _)| *number);

        let deciding = if best == none {
            &self.default
        } else {
            &self.rules[best as usize].info
        };
        let winner = (best != none).then_some(best);
        let mut decision = Decision {
            action: deciding.action,
            rule: deciding,
            response_check: false,
            body_limit: None,
        };
        let mut pending = Vec::new();
        for (number, fit) in conditional {
            let info = &self.rules[number as usize].info;
            match fit {
                Fit::Pending if info.action != deciding.action => {
                    pending.push(number);
                    decision.response_check = true;
                    // An earlier allow that may match the response must let the request
                    // through to find out; the first such rule is the one reported.
                    if info.action == Action::Allow && decision.action == Action::Deny {
                        decision.action = Action::Allow;
                        decision.rule = info;
                    }
                }
                Fit::OverLimit(limit)
                    if info.action != deciding.action
                        && decision
                            .body_limit
                            .is_none_or(|(current, _)| limit < current) =>
                {
                    decision.body_limit = Some((limit, info));
                }
                _ => {}
            }
        }
        (decision, winner, pending)
    }

    /// Calls `visit` with each sorted slice of candidate rule numbers for this query.
    fn for_each_candidate_set(&self, facts: &Facts<'_>, mut visit: impl FnMut(&[u32])) {
        let request = facts.request;
        if let Some(host) = facts.host {
            self.hosts.lookup(host, |set, _| visit(self.sets.get(set)));
        }
        if let Some(ip) = request.dst {
            let index = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
            index.lookup(ip, |set, _| visit(self.sets.get(set)));
        }
        if let Some(port) = request.port {
            visit(self.sets.get(self.ports.lookup(port)));
        }
        visit(&self.unindexed[protocol_slot(Some(request.protocol))]);
        visit(&self.unindexed[protocol_slot(None)]);
    }

    fn explain_rule(
        &self,
        number: u32,
        request: &Request<'_>,
        response: Option<&Response<'_>>,
        reasons: &mut Vec<String>,
    ) {
        let rule = &self.rules[number as usize];
        reasons.push(match rule.protocol {
            Some(p) => format!("protocol {p} matches"),
            None => format!("protocol any matches {}", request.protocol),
        });
        if !rule.hosts.is_empty() {
            let mut buf = [0u8; MAX_NAME_LEN];
            let host = request
                .host
                .and_then(|h| query_name(h, &mut buf))
                .unwrap_or("");
            let mut hit = None;
            self.hosts.lookup(host, |set, how| {
                if hit.is_none() && self.sets.get(set).contains(&number) {
                    hit = Some(how);
                }
            });
            let how = match hit {
                Some(HostHit::Exact(name)) => format!("is {name}"),
                Some(HostHit::Subdomain(parent)) => format!("matches *.{parent}"),
                None => "matches".into(),
            };
            let from = join(&rule.hosts);
            reasons.push(format!("host {host} {how} (rule hosts: {from})"));
        }
        if let (false, Some(ip)) = (rule.dst.is_empty(), request.dst) {
            let block = rule
                .dst
                .iter()
                .find(|c| c.contains(ip))
                .map(|c| c.to_string())
                .unwrap_or_default();
            reasons.push(format!("destination {ip} is in {block}"));
        }
        if let (false, Some(port)) = (rule.ports.is_empty(), request.port) {
            reasons.push(format!("port {port} is in {}", join(&rule.ports)));
        }
        if let (false, Some(method)) = (rule.methods.is_empty(), request.method) {
            reasons.push(format!(
                "method {method} is one of {}",
                rule.methods.join(",")
            ));
        }
        if let (false, Some(path)) = (rule.paths.is_empty(), request.path) {
            let path = normalize_path(path);
            let prefix = rule
                .paths
                .iter()
                .find(|p| path.starts_with(p.as_str()))
                .cloned()
                .unwrap_or_default();
            reasons.push(format!("path {path} starts with {prefix}"));
        }
        if let Some(window) = rule.time {
            reasons.push(format!("local time {} is within {window}", request.time));
        }
        if let (false, Some(ct)) = (
            rule.content_types.is_empty(),
            response.and_then(|r| r.content_type),
        ) {
            reasons.push(format!(
                "content type {ct} is one of {}",
                join(&rule.content_types)
            ));
        }
        if let (Some(max), Some(len)) = (rule.max_body, response.and_then(|r| r.body_len)) {
            reasons.push(format!(
                "body of {len} bytes is over max-body {}",
                format_size(max)
            ));
        }
    }
}

fn join<T: fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn compile_rule(file: &str, rule: &Rule) -> CompiledRule {
    let location = format!("{file}:{}", rule.line);
    CompiledRule {
        info: RuleInfo {
            id: rule.name.clone().unwrap_or_else(|| location.clone()),
            location,
            action: rule.action,
            text: rule.to_string(),
            allow_ech: rule.allow_ech,
            allow_private: rule.allow_private,
            inspect: rule.inspect,
            client_cert: rule.client_cert,
            via: rule.via.clone(),
        },
        protocol: rule.protocol,
        hosts: rule.hosts.clone(),
        dst: rule.dst.clone(),
        ports: rule.ports.clone(),
        methods: rule.methods.clone(),
        paths: rule.paths.clone(),
        content_types: rule.content_types.clone(),
        max_body: rule.max_body,
        time: rule.time,
    }
}

/// A list file that cannot be read is reported at the `list` line that names it (shown in
/// its printed form: the compiled policy no longer holds the original text).
fn list_file_error(file: &str, list: &ListDef, e: &std::io::Error) -> Diagnostic {
    let ListSource::File(path) = &list.source else {
        unreachable!("only file lists are read");
    };
    let line = list.to_string();
    let col = line
        .rfind(path.as_str())
        .map_or(1, |i| line[..i].chars().count() as u32 + 1);
    Diagnostic {
        kind: ErrorKind::ListFile,
        file: file.to_string(),
        line: list.line,
        col,
        message: format!("cannot read list file `{path}`: {e}"),
        source_line: line,
    }
}
