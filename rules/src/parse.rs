//! The rule-file parser: one line at a time, every error collected with its line and column.
//! The grammar is written down for people in `rules/README.md`.

use std::collections::HashMap;

use crate::diagnostic::{Diagnostics, ErrorKind, Reporter};
use crate::host::HostPattern;
use crate::policy::{Action, ListDef, ListSource, Policy, Protocol, Rule};
use crate::time::TimeWindow;
use crate::value::{
    Cidr, MediaRange, PortRange, ValueError, check_name, parse_method, parse_path, parse_size,
};

/// Let a TLS hello that hides its real name with Encrypted Client Hello through (denied by
/// default, since the name decided would be the cover name).
const ALLOW_ECH: &str = "allow-ech";
const ALLOW_PRIVATE: &str = "allow-private";
/// Terminate the TLS connections the rule allows, so the requests inside are decided like
/// plain HTTP ones.
const INSPECT: &str = "inspect";
/// Present the user's client certificate (kept on the card) on the card's own TLS connection
/// to the sites the rule inspects.
const CLIENT_CERT: &str = "client-cert";
/// Flags a rule may end with.
const FLAGS: [&str; 4] = [ALLOW_ECH, ALLOW_PRIVATE, INSPECT, CLIENT_CERT];

const CONDITIONS: [&str; 9] = [
    "host",
    "dst",
    "port",
    "method",
    "path",
    "content-type",
    "max-body",
    "time",
    VIA,
];
/// `via NAME`: an allowed connection's upstream goes through the card's VPN `NAME` (not a
/// condition to match: where the allowed connection goes).
const VIA: &str = "via";

/// A word of a line and its 1-based character column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub col: u32,
    pub text: &'a str,
}

/// Splits a line into words, dropping a `#` comment.
pub(crate) fn tokenize(line: &str) -> Vec<Token<'_>> {
    let code = line.split('#').next().unwrap_or("");
    let mut tokens = Vec::new();
    let mut start: Option<(usize, u32)> = None;
    let mut col = 0u32;
    for (i, c) in code.char_indices() {
        col += 1;
        if c.is_whitespace() {
            if let Some((s, s_col)) = start.take() {
                tokens.push(Token {
                    col: s_col,
                    text: &code[s..i],
                });
            }
        } else if start.is_none() {
            start = Some((i, col));
        }
    }
    if let Some((s, s_col)) = start {
        tokens.push(Token {
            col: s_col,
            text: &code[s..],
        });
    }
    tokens
}

/// Column just past the end of a line's code: where a missing word would go.
pub(crate) fn end_col(line: &str) -> u32 {
    line.split('#')
        .next()
        .unwrap_or("")
        .trim_end()
        .chars()
        .count() as u32
        + 1
}

/// A word within `max` edits of `word`, to offer as "did you mean".
fn suggestion<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&word.to_ascii_lowercase(), k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn unknown(word: &str, what: &str, known: &[&str]) -> String {
    let hint = match suggestion(word, known) {
        Some(k) => format!("did you mean `{k}`?"),
        None => format!("expected one of: {}", known.join(", ")),
    };
    format!("unknown {what} `{word}`; {hint}")
}

/// A use of `@list`, checked once every list is known (a list may be defined after its use).
#[derive(Debug)]
struct ListUse {
    name: String,
    line_no: u32,
    col: u32,
    line: String,
}

struct Parser<'a> {
    report: Reporter<'a>,
    policy: Policy,
    rule_names: HashMap<String, u32>,
    list_uses: Vec<ListUse>,
}

/// Parses a rule file. `file` names it in errors. List files are not read here:
/// [`crate::RuleSet::compile`] reads them.
pub fn parse(file: &str, text: &str) -> Result<Policy, Diagnostics> {
    let mut parser = Parser {
        report: Reporter::new(file),
        policy: Policy::default(),
        rule_names: HashMap::new(),
        list_uses: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        parser.line(line_no, line);
    }
    parser.check_list_uses();
    if parser.report.found.is_empty() {
        Ok(parser.policy)
    } else {
        Err(Diagnostics(parser.report.found))
    }
}

impl Parser<'_> {
    /// Reports a value error at its place inside `token`.
    fn value_error(
        &mut self,
        e: ValueError,
        line_no: u32,
        token: Token<'_>,
        offset_in_token: usize,
        line: &str,
    ) {
        let col = token.col + (offset_in_token + e.offset) as u32;
        self.report.error(e.kind, line_no, col, line, e.message);
    }

    fn line(&mut self, line_no: u32, line: &str) {
        let tokens = tokenize(line);
        let Some(first) = tokens.first() else {
            return;
        };
        match first.text {
            "default" => self.default_line(line_no, line, &tokens),
            "list" => self.list_line(line_no, line, &tokens),
            _ => self.rule_line(line_no, line, &tokens),
        }
    }

    fn default_line(&mut self, line_no: u32, line: &str, tokens: &[Token<'_>]) {
        let action = match tokens.get(1) {
            None => {
                self.report.error(
                    ErrorKind::MissingValue,
                    line_no,
                    end_col(line),
                    line,
                    "`default` needs `allow` or `deny`",
                );
                return;
            }
            Some(t) => match parse_action(t.text) {
                Some(a) => a,
                None => {
                    let msg = unknown(t.text, "default", &["allow", "deny"]);
                    self.report
                        .error(ErrorKind::UnknownKeyword, line_no, t.col, line, msg);
                    return;
                }
            },
        };
        if let Some(extra) = tokens.get(2) {
            self.report.error(
                ErrorKind::UnexpectedToken,
                line_no,
                extra.col,
                line,
                "nothing may follow `default allow|deny`",
            );
            return;
        }
        if let Some((_, first_line)) = self.policy.default {
            let msg = format!("`default` given twice; the first is on line {first_line}");
            self.report
                .error(ErrorKind::Duplicate, line_no, tokens[0].col, line, msg);
            return;
        }
        self.policy.default = Some((action, line_no));
    }

    fn list_line(&mut self, line_no: u32, line: &str, tokens: &[Token<'_>]) {
        let Some(name) = tokens.get(1) else {
            self.report.error(
                ErrorKind::MissingValue,
                line_no,
                end_col(line),
                line,
                "`list` needs a name: `list ads = a.example b.example` or `list ads file ads.txt`",
            );
            return;
        };
        if let Err(e) = check_name(name.text) {
            self.value_error(e, line_no, *name, 0, line);
            return;
        }
        let source = match tokens.get(2).map(|t| t.text) {
            Some("=") => {
                let mut patterns = Vec::new();
                for token in &tokens[3..] {
                    match HostPattern::parse(token.text, false) {
                        Ok(p) => patterns.push(p),
                        Err(e) => self.value_error(e, line_no, *token, 0, line),
                    }
                }
                ListSource::Inline(patterns)
            }
            Some("file") => match tokens.get(3) {
                None => {
                    self.report.error(
                        ErrorKind::MissingValue,
                        line_no,
                        end_col(line),
                        line,
                        "`file` needs the list file's path",
                    );
                    return;
                }
                Some(path) => {
                    if let Some(extra) = tokens.get(4) {
                        self.report.error(
                            ErrorKind::UnexpectedToken,
                            line_no,
                            extra.col,
                            line,
                            "a list file path is one word; nothing may follow it",
                        );
                    }
                    ListSource::File(path.text.to_string())
                }
            },
            Some(other) => {
                let msg = format!("expected `=` or `file` after the list name, found `{other}`");
                self.report
                    .error(ErrorKind::UnknownKeyword, line_no, tokens[2].col, line, msg);
                return;
            }
            None => {
                self.report.error(
                    ErrorKind::MissingValue,
                    line_no,
                    end_col(line),
                    line,
                    "expected `=` and names, or `file` and a path",
                );
                return;
            }
        };
        if crate::builtin::list(name.text).is_some() {
            let msg = format!(
                "`{0}` is a built-in list (use it as `@{0}`); give your own list another name",
                name.text
            );
            self.report
                .error(ErrorKind::DuplicateName, line_no, name.col, line, msg);
            return;
        }
        if let Some(previous) = self.policy.lists.iter().find(|l| l.name == name.text) {
            let msg = format!(
                "list `{}` is already defined on line {}",
                name.text, previous.line
            );
            self.report
                .error(ErrorKind::DuplicateName, line_no, name.col, line, msg);
            return;
        }
        self.policy.lists.push(ListDef {
            name: name.text.to_string(),
            source,
            line: line_no,
        });
    }

    fn rule_line(&mut self, line_no: u32, line: &str, tokens: &[Token<'_>]) {
        let errors_before = self.report.found.len();
        let mut rest = tokens;
        let mut name = None;
        if let Some(label) = rest[0].text.strip_suffix(':') {
            match check_name(label) {
                Err(e) => self.value_error(e, line_no, rest[0], 0, line),
                Ok(()) => match self.rule_names.get(label) {
                    Some(first) => {
                        let msg = format!("rule name `{label}` is already used on line {first}");
                        self.report.error(
                            ErrorKind::DuplicateName,
                            line_no,
                            rest[0].col,
                            line,
                            msg,
                        );
                    }
                    None => {
                        self.rule_names.insert(label.to_string(), line_no);
                        name = Some(label.to_string());
                    }
                },
            }
            rest = &rest[1..];
        }
        let Some(action_token) = rest.first() else {
            self.report.error(
                ErrorKind::MissingValue,
                line_no,
                end_col(line),
                line,
                "a rule needs `allow` or `deny` after its name",
            );
            return;
        };
        let Some(action) = parse_action(action_token.text) else {
            let msg = unknown(
                action_token.text,
                "keyword",
                &["allow", "deny", "default", "list"],
            );
            self.report.error(
                ErrorKind::UnknownKeyword,
                line_no,
                action_token.col,
                line,
                msg,
            );
            return;
        };
        let Some(protocol_token) = rest.get(1) else {
            self.report.error(
                ErrorKind::MissingValue,
                line_no,
                end_col(line),
                line,
                format!("`{action}` needs a protocol: http, https, dns, tcp or any"),
            );
            return;
        };
        let protocol = match protocol_token.text {
            "any" => None,
            text => match Protocol::ALL.iter().find(|p| p.name() == text) {
                Some(p) => Some(*p),
                None => {
                    let msg = unknown(text, "protocol", &["http", "https", "dns", "tcp", "any"]);
                    self.report.error(
                        ErrorKind::UnknownKeyword,
                        line_no,
                        protocol_token.col,
                        line,
                        msg,
                    );
                    return;
                }
            },
        };
        let mut rule = Rule {
            name,
            action,
            protocol,
            hosts: Vec::new(),
            dst: Vec::new(),
            ports: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
            content_types: Vec::new(),
            max_body: None,
            time: None,
            allow_ech: false,
            allow_private: false,
            inspect: false,
            client_cert: false,
            via: None,
            line: line_no,
        };
        let mut client_cert_col = None;
        let mut seen: Vec<&str> = Vec::new();
        let mut i = 2;
        while i < rest.len() {
            let keyword = rest[i];
            i += 1;
            if FLAGS.contains(&keyword.text) {
                let flag = match keyword.text {
                    ALLOW_ECH => &mut rule.allow_ech,
                    ALLOW_PRIVATE => &mut rule.allow_private,
                    CLIENT_CERT => &mut rule.client_cert,
                    _ => &mut rule.inspect,
                };
                if *flag {
                    let msg = format!("`{}` given twice", keyword.text);
                    self.report
                        .error(ErrorKind::Duplicate, line_no, keyword.col, line, msg);
                } else if let Some(why) = misfit(keyword.text, protocol, action) {
                    let kind = if action == Action::Deny {
                        ErrorKind::NotForAction
                    } else {
                        ErrorKind::NotForProtocol
                    };
                    self.report.error(kind, line_no, keyword.col, line, why);
                } else {
                    *flag = true;
                    if keyword.text == CLIENT_CERT {
                        client_cert_col = Some(keyword.col);
                    }
                }
                continue;
            }
            if !CONDITIONS.contains(&keyword.text) {
                let known: Vec<&str> = CONDITIONS.iter().copied().chain(FLAGS).collect();
                let msg = unknown(keyword.text, "condition", &known);
                self.report
                    .error(ErrorKind::UnknownKeyword, line_no, keyword.col, line, msg);
                // Skip its value too, so one typo gives one error.
                i += 1;
                continue;
            }
            let Some(value) = rest.get(i).copied() else {
                let msg = format!("`{}` needs a value", keyword.text);
                self.report
                    .error(ErrorKind::MissingValue, line_no, end_col(line), line, msg);
                break;
            };
            i += 1;
            if seen.contains(&keyword.text) {
                let msg = format!(
                    "`{0}` given twice; list all values in one: `{0} a,b`",
                    keyword.text
                );
                self.report
                    .error(ErrorKind::Duplicate, line_no, keyword.col, line, msg);
                continue;
            }
            seen.push(keyword.text);
            if let Some(why) = misfit(keyword.text, protocol, action) {
                let kind = if (keyword.text == "max-body" && action == Action::Allow)
                    || (keyword.text == VIA && action == Action::Deny)
                {
                    ErrorKind::NotForAction
                } else {
                    ErrorKind::NotForProtocol
                };
                self.report.error(kind, line_no, keyword.col, line, why);
                continue;
            }
            match keyword.text {
                "host" => {
                    rule.hosts = self.values(line_no, line, value, |t| HostPattern::parse(t, true));
                    for (offset, pattern) in value_offsets(value.text).zip(&rule.hosts) {
                        if let HostPattern::List(list) = pattern {
                            self.list_uses.push(ListUse {
                                name: list.clone(),
                                line_no,
                                col: value.col + offset as u32,
                                line: line.to_string(),
                            });
                        }
                    }
                }
                "dst" => rule.dst = self.values(line_no, line, value, Cidr::parse),
                "port" => rule.ports = self.values(line_no, line, value, PortRange::parse),
                "method" => rule.methods = self.values(line_no, line, value, parse_method),
                "path" => rule.paths = self.values(line_no, line, value, parse_path),
                "content-type" => {
                    rule.content_types = self.values(line_no, line, value, MediaRange::parse)
                }
                "max-body" => match parse_size(value.text) {
                    Ok(size) => rule.max_body = Some(size),
                    Err(e) => self.value_error(e, line_no, value, 0, line),
                },
                "time" => {
                    let second = rest.get(i).copied();
                    match TimeWindow::parse(value.text, second.map(|t| t.text)) {
                        Ok((window, used)) => {
                            rule.time = Some(window);
                            i += used - 1;
                        }
                        Err((e, which)) => {
                            let token = if which == 0 {
                                value
                            } else {
                                second.unwrap_or(value)
                            };
                            i += which;
                            self.value_error(e, line_no, token, 0, line);
                        }
                    }
                }
                VIA => match parse_vpn_name(value.text) {
                    Ok(name) => rule.via = Some(name),
                    Err(e) => self.value_error(e, line_no, value, 0, line),
                },
                _ => unreachable!("every keyword in CONDITIONS is handled"),
            }
        }
        // Only the card's own TLS connection can carry the certificate: a spliced one is the
        // computer's.
        if let Some(col) = client_cert_col
            && !rule.inspect
        {
            let msg = format!(
                "`{CLIENT_CERT}` needs `{INSPECT}` on the same rule: the card presents the certificate on its own TLS connection to the site"
            );
            self.report
                .error(ErrorKind::NotForProtocol, line_no, col, line, msg);
        }
        if self.report.found.len() == errors_before {
            self.policy.rules.push(rule);
        }
    }

    /// Parses a comma-separated value, reporting each bad element at its own column.
    fn values<T>(
        &mut self,
        line_no: u32,
        line: &str,
        token: Token<'_>,
        parse_one: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (offset, part) in value_offsets(token.text).zip(token.text.split(',')) {
            match parse_one(part) {
                Ok(v) => out.push(v),
                Err(e) => self.value_error(e, line_no, token, offset, line),
            }
        }
        out
    }

    fn check_list_uses(&mut self) {
        for used in std::mem::take(&mut self.list_uses) {
            let defined = self.policy.lists.iter().any(|l| l.name == used.name);
            if !defined && crate::builtin::list(&used.name).is_none() {
                let known: Vec<&str> = self.policy.lists.iter().map(|l| l.name.as_str()).collect();
                let hint = match suggestion(&used.name, &known) {
                    Some(k) => format!("; did you mean `@{k}`?"),
                    None => {
                        String::from("; define it with `list NAME = …` or `list NAME file PATH`")
                    }
                };
                let msg = format!("no list named `{}`{hint}", used.name);
                self.report.error(
                    ErrorKind::UnknownList,
                    used.line_no,
                    used.col,
                    &used.line,
                    msg,
                );
            }
        }
    }
}

/// Character offsets of each comma-separated element of a value.
fn value_offsets(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut offset = 0;
    text.split(',').map(move |part| {
        let at = offset;
        offset += part.chars().count() + 1;
        at
    })
}

fn parse_action(text: &str) -> Option<Action> {
    match text {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        _ => None,
    }
}

/// Why a condition cannot be used on a rule of this protocol and action, if it cannot.
/// A VPN's name as the card's configuration allows it (`[vpn.NAME]`): 1 to 12 of a-z, 0-9, `-`.
fn parse_vpn_name(text: &str) -> Result<String, ValueError> {
    let fits = !text.is_empty()
        && text.len() <= 12
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if fits {
        Ok(text.to_string())
    } else {
        Err(ValueError::at(
            ErrorKind::BadName,
            0,
            format!("`{text}` is not a VPN name (1 to 12 of a-z, 0-9 and `-`, as in `[vpn.NAME]`)"),
        ))
    }
}

fn misfit(keyword: &str, protocol: Option<Protocol>, action: Action) -> Option<String> {
    let proto = protocol.map_or("any", Protocol::name);
    match keyword {
        "host" if protocol == Some(Protocol::Tcp) => Some(
            "a plain tcp connection carries no host name; match its address with `dst`, or use `https` for TLS".into(),
        ),
        "dst" | "port" if protocol == Some(Protocol::Dns) => Some(format!(
            "`{keyword}` does not apply to dns rules: they match the name asked for, with `host`"
        )),
        "method" | "path" | "content-type" | "max-body" if protocol != Some(Protocol::Http) => Some(format!(
            "`{keyword}` is only visible in plain http, not in `{proto}` rules (TLS hides it)"
        )),
        ALLOW_ECH if protocol.is_some_and(|p| p != Protocol::Https) => Some(format!(
            "`{ALLOW_ECH}` is about TLS hellos, so it only fits `https` or `any` rules"
        )),
        ALLOW_ECH if action == Action::Deny => Some(format!(
            "`{ALLOW_ECH}` lets hellos with a hidden name through, so it belongs on an allow rule"
        )),
        ALLOW_PRIVATE if protocol.is_some_and(|p| p != Protocol::Dns) => Some(format!(
            "`{ALLOW_PRIVATE}` is about DNS answers, so it only fits `dns` or `any` rules"
        )),
        ALLOW_PRIVATE if action == Action::Deny => Some(format!(
            "`{ALLOW_PRIVATE}` lets private addresses through in DNS answers, so it belongs on an allow rule"
        )),
        // Only an https rule: a rule for `any` would terminate TLS on every port it matches,
        // which nobody means by one word.
        INSPECT if protocol != Some(Protocol::Https) => Some(format!(
            "`{INSPECT}` terminates TLS, so it only fits `https` rules"
        )),
        CLIENT_CERT if protocol != Some(Protocol::Https) => Some(format!(
            "`{CLIENT_CERT}` is presented in TLS, so it only fits `https` rules"
        )),
        INSPECT | CLIENT_CERT if action == Action::Deny => Some(format!(
            "`{keyword}` is about connections the rule lets through, so it belongs on an allow rule"
        )),
        VIA if protocol == Some(Protocol::Dns) => Some(format!(
            "`{VIA}` does not apply to dns rules: a VPN's names (`names` of `[vpn.NAME]`) are resolved through it"
        )),
        VIA if action == Action::Deny => Some(format!(
            "`{VIA}` names the tunnel an allowed connection takes, so it belongs on an allow rule"
        )),
        "max-body" if action == Action::Allow => Some(
            "`max-body` matches responses larger than the size, so it belongs on a deny rule".into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Diagnostics {
        parse("rules.txt", text).expect_err("should not parse")
    }

    /// (kind, line, col) of every error.
    fn places(text: &str) -> Vec<(ErrorKind, u32, u32)> {
        errors(text)
            .iter()
            .map(|d| (d.kind, d.line, d.col))
            .collect()
    }

    #[test]
    fn via_names_a_vpn_on_allow_rules() {
        let policy = parse("r", "allow https host *.corp.example via corp\n").unwrap();
        assert_eq!(policy.rules[0].via.as_deref(), Some("corp"));
        assert_eq!(
            policy.rules[0].to_string(),
            "allow https host *.corp.example via corp"
        );
        assert_eq!(
            places("deny http via corp\nallow http via Corp!\nallow any via\nallow dns via corp\n"),
            [
                (ErrorKind::NotForAction, 1, 11),
                (ErrorKind::BadName, 2, 16),
                (ErrorKind::MissingValue, 3, 14),
                (ErrorKind::NotForProtocol, 4, 11),
            ]
        );
    }

    #[test]
    fn a_full_rule_parses_into_every_condition() {
        let policy = parse(
            "rules.txt",
            "docs: allow http host docs.rs,*.docs.rs dst 10.0.0.0/8 port 80,8000-8100 method get,HEAD path /a/,/b time Mon-Fri 08:00-18:00 # c\n\
             deny http content-type video/*,text/html max-body 10M\n\
             default allow\n",
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 2);
        let rule = &policy.rules[0];
        assert_eq!(rule.name.as_deref(), Some("docs"));
        assert_eq!(rule.hosts.len(), 2);
        assert_eq!(rule.methods, vec!["GET", "HEAD"]);
        assert_eq!(
            rule.to_string(),
            "docs: allow http host docs.rs,*.docs.rs dst 10.0.0.0/8 port 80,8000-8100 method GET,HEAD path /a/,/b time Mon-Fri 08:00-18:00"
        );
        assert_eq!(policy.rules[1].max_body, Some(10 << 20));
        assert_eq!(policy.default, Some((Action::Allow, 3)));
    }

    #[test]
    fn empty_file_denies() {
        let policy = parse("r", "# nothing\n\n   \n").unwrap();
        assert!(policy.rules.is_empty());
        assert_eq!(policy.default_action(), Action::Deny);
    }

    #[test]
    fn every_error_in_the_file_is_reported_with_line_and_column() {
        let text = "alow http\n\
                    allow htp\n\
                    allow http hots example.com\n\
                    allow tcp port 0\n\
                    allow tcp port 80,70000\n\
                    allow any dst 10.0.0.1/8\n\
                    allow dns host a..b\n";
        assert_eq!(
            places(text),
            vec![
                (ErrorKind::UnknownKeyword, 1, 1),
                (ErrorKind::UnknownKeyword, 2, 7),
                (ErrorKind::UnknownKeyword, 3, 12),
                (ErrorKind::BadPort, 4, 16),
                (ErrorKind::BadPort, 5, 19),
                (ErrorKind::BadAddress, 6, 15),
                (ErrorKind::BadHost, 7, 18),
            ]
        );
        let all = errors(text);
        assert!(
            all.0[0].message.contains("did you mean `allow`"),
            "{}",
            all.0[0]
        );
        assert!(all.0[1].message.contains("did you mean `http`"));
        assert!(all.0[2].message.contains("did you mean `host`"));
        assert!(
            all.to_string()
                .starts_with("rules.txt:1:1: unknown keyword `alow`")
        );
        assert!(all.to_string().ends_with("7 errors"));
    }

    #[test]
    fn names_and_lists_are_checked() {
        let text = "a: allow http\n\
                    a: deny http\n\
                    deny any host @ads,@missing\n\
                    list ads = x.example\n\
                    list ads = y.example\n\
                    b/c: allow http\n";
        assert_eq!(
            places(text),
            vec![
                (ErrorKind::DuplicateName, 2, 1),
                (ErrorKind::DuplicateName, 5, 6),
                (ErrorKind::BadName, 6, 2),
                (ErrorKind::UnknownList, 3, 20),
            ]
        );
        let e = errors("deny any host @adz\nlist ads = x.example\n");
        assert!(e.0[0].message.contains("did you mean `@ads`"), "{}", e.0[0]);
    }

    #[test]
    fn built_in_lists_are_known_and_cannot_be_redefined() {
        assert!(parse("t", "deny any host @doh\n").is_ok());
        assert_eq!(
            places("list doh = x.example\n"),
            vec![(ErrorKind::DuplicateName, 1, 6)]
        );
    }

    #[test]
    fn conditions_a_protocol_cannot_see_are_refused() {
        assert_eq!(
            errors("allow tcp host example.com\nallow https path /x\nallow any method GET\nallow dns port 53\ndeny dns dst 10.0.0.0/8\n").kinds(),
            vec![ErrorKind::NotForProtocol; 5]
        );
        assert_eq!(
            errors("allow tcp allow-ech\ndeny https allow-ech\nallow https allow-ech allow-ech\n")
                .kinds(),
            vec![
                ErrorKind::NotForProtocol,
                ErrorKind::NotForAction,
                ErrorKind::Duplicate
            ]
        );
        assert_eq!(
            errors("allow http allow-private\ndeny dns allow-private\n").kinds(),
            vec![ErrorKind::NotForProtocol, ErrorKind::NotForAction]
        );
        let private = parse("r", "allow dns host nas.example allow-private\n").unwrap();
        assert!(private.rules[0].allow_private);
        assert_eq!(
            private.rules[0].to_string(),
            "allow dns host nas.example allow-private"
        );
        assert_eq!(
            errors("allow http inspect\nallow any inspect\ndeny https inspect\nallow https inspect inspect\n")
                .kinds(),
            vec![
                ErrorKind::NotForProtocol,
                ErrorKind::NotForProtocol,
                ErrorKind::NotForAction,
                ErrorKind::Duplicate
            ]
        );
        assert_eq!(
            places("allow https\nallow tcp inspect\n"),
            vec![(ErrorKind::NotForProtocol, 2, 11)],
            "the flag's own line and column"
        );
        let inspect = parse("r", "allow https host x.example inspect\n").unwrap();
        assert!(inspect.rules[0].inspect && !inspect.rules[0].allow_ech);
        assert_eq!(
            inspect.rules[0].to_string(),
            "allow https host x.example inspect"
        );
        assert_eq!(
            places(
                "allow https host x.example client-cert\nallow http client-cert\ndeny https inspect client-cert\n"
            ),
            vec![
                (ErrorKind::NotForProtocol, 1, 28),
                (ErrorKind::NotForProtocol, 2, 12),
                (ErrorKind::NotForAction, 3, 12),
                (ErrorKind::NotForAction, 3, 20),
            ],
            "client-cert needs inspect, https and allow"
        );
        let presenting = parse("r", "allow https host x.example inspect client-cert\n").unwrap();
        assert!(presenting.rules[0].inspect && presenting.rules[0].client_cert);
        assert_eq!(
            presenting.rules[0].to_string(),
            "allow https host x.example inspect client-cert"
        );
        let ech = parse("r", "allow https host x.example allow-ech\n").unwrap();
        assert!(ech.rules[0].allow_ech);
        assert_eq!(
            ech.rules[0].to_string(),
            "allow https host x.example allow-ech"
        );
        assert_eq!(
            errors("allow http max-body 1M\n").kinds(),
            vec![ErrorKind::NotForAction]
        );
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(
            places(
                "allow\ndefault\ndefault maybe\ndefault deny\ndefault allow\ndefault deny now\nallow http host\nallow http port 80 port 81\nlist\nlist x\nlist x ~ y\nlist y file\nlist z file a b\nx:\nlist w = *..x\ndeny http max-body 10Q\nallow http time Mon Tue\n"
            ),
            vec![
                (ErrorKind::MissingValue, 1, 6),
                (ErrorKind::MissingValue, 2, 8),
                (ErrorKind::UnknownKeyword, 3, 9),
                (ErrorKind::Duplicate, 5, 1),
                (ErrorKind::UnexpectedToken, 6, 14),
                (ErrorKind::MissingValue, 7, 16),
                (ErrorKind::Duplicate, 8, 20),
                (ErrorKind::MissingValue, 9, 5),
                (ErrorKind::MissingValue, 10, 7),
                (ErrorKind::UnknownKeyword, 11, 8),
                (ErrorKind::MissingValue, 12, 12),
                (ErrorKind::UnexpectedToken, 13, 15),
                (ErrorKind::MissingValue, 14, 3),
                (ErrorKind::BadHost, 15, 12),
                (ErrorKind::BadSize, 16, 20),
                (ErrorKind::UnknownKeyword, 17, 21),
            ]
        );
    }

    #[test]
    fn bad_values_of_every_kind() {
        for (text, kind, col) in [
            ("allow http method GE/T", ErrorKind::BadMethod, 21),
            ("allow http path admin", ErrorKind::BadPath, 17),
            (
                "deny http content-type video",
                ErrorKind::BadContentType,
                24,
            ),
            ("allow any time Mon 9:00-10:00", ErrorKind::BadTime, 20),
            ("allow any dst fe80::/200", ErrorKind::BadAddress, 22),
            (
                "allow any host @ads\nlist ads = @other",
                ErrorKind::BadHost,
                12,
            ),
        ] {
            let found = places(text);
            assert_eq!(
                found.last().map(|p| (p.0, p.2)),
                Some((kind, col)),
                "{text}: {found:?}"
            );
        }
    }

    #[test]
    fn tabs_and_comments() {
        let policy = parse("r", "\tallow\thttp\thost a.example # trailing # more\n").unwrap();
        assert_eq!(
            policy.rules[0].hosts,
            vec![HostPattern::Exact("a.example".into())]
        );
        assert_eq!(
            places("\tallow\ttcp\tport 0"),
            vec![(ErrorKind::BadPort, 1, 17)]
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(suggestion("hots", &CONDITIONS), Some("host"));
        assert_eq!(suggestion("frobnicate", &CONDITIONS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
