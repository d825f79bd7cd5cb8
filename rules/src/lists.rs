//! Named host lists kept in their own files, and where those files come from (a directory
//! next to the rule file, or the attachments of a signed bundle).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::diagnostic::{Diagnostic, ErrorKind, Reporter};
use crate::host::HostPattern;
use crate::parse::{Token, end_col, tokenize};

/// Reads the list files a rule file names.
pub trait ListLoader {
    fn load(&self, path: &str) -> std::io::Result<String>;
}

/// Reads list files relative to a directory (the rule file's own).
#[derive(Debug, Clone)]
pub struct DirLoader(pub PathBuf);

impl ListLoader for DirLoader {
    fn load(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

/// List files held in memory, by name: a bundle's attachments, or tests.
impl ListLoader for HashMap<String, String> {
    fn load(&self, path: &str) -> std::io::Result<String> {
        self.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the bundle")
        })
    }
}

/// A loader for rule text that names no list files.
#[derive(Debug, Clone, Copy)]
pub struct NoFiles;

impl ListLoader for NoFiles {
    fn load(&self, _path: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "list files cannot be used here",
        ))
    }
}

/// Names a hosts file maps to the local machine; blocking them would block nothing real.
const HOSTS_FILE_LOCAL_NAMES: [&str; 11] = [
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

/// Reads a list file: one `name` or `*.name` per line, `#` comments, or hosts-file lines
/// (`0.0.0.0 name [name…]`), the form most public blocklists come in. Calls `each` for every
/// pattern and returns the errors, each `file:line:col`.
pub fn read_list_file(
    file: &str,
    text: &str,
    mut each: impl FnMut(HostPattern),
) -> Vec<Diagnostic> {
    let mut report = Reporter::new(file);
    let mut add = |report: &mut Reporter<'_>, line_no: u32, line: &str, token: Token<'_>| {
        match HostPattern::parse(token.text, false) {
            Ok(pattern) => each(pattern),
            Err(e) => report.error(
                e.kind,
                line_no,
                token.col + e.offset as u32,
                line,
                e.message,
            ),
        }
    };
    for (index, line) in text.lines().enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let tokens = tokenize(line);
        let Some(&first) = tokens.first() else {
            continue;
        };
        if first.text.parse::<IpAddr>().is_err() {
            add(&mut report, line_no, line, first);
            if let Some(extra) = tokens.get(1) {
                report.error(
                    ErrorKind::UnexpectedToken,
                    line_no,
                    extra.col,
                    line,
                    "one name per line (or a hosts-file line: address then names)",
                );
            }
            continue;
        }
        if tokens.len() == 1 {
            let msg = "a hosts-file line needs a name after the address";
            report.error(ErrorKind::MissingValue, line_no, end_col(line), line, msg);
        }
        for &token in &tokens[1..] {
            let local = HOSTS_FILE_LOCAL_NAMES.contains(&token.text)
                || token.text.parse::<IpAddr>().is_ok();
            if !local {
                add(&mut report, line_no, line, token);
            }
        }
    }
    report.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<String>, Vec<(ErrorKind, u32, u32)>) {
        let mut names = Vec::new();
        let errors = read_list_file("ads.txt", text, |p| names.push(p.to_string()));
        (
            names,
            errors.iter().map(|d| (d.kind, d.line, d.col)).collect(),
        )
    }

    #[test]
    fn plain_and_hosts_file_lines() {
        let (names, errors) = read(
            "# a blocklist\nads.example\n*.Tracker.example.\n\n0.0.0.0 a.example b.example # two\n127.0.0.1 localhost\n0.0.0.0 0.0.0.0\n::1 ip6-localhost\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            names,
            vec!["ads.example", "*.tracker.example", "a.example", "b.example"]
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        let (names, errors) =
            read("good.example\n  bad..example\nx.example y.example\n0.0.0.0\n@nested\n");
        assert_eq!(names, vec!["good.example", "x.example"]);
        assert_eq!(
            errors,
            vec![
                (ErrorKind::BadHost, 2, 7),
                (ErrorKind::UnexpectedToken, 3, 11),
                (ErrorKind::MissingValue, 4, 8),
                (ErrorKind::BadHost, 5, 1),
            ]
        );
    }
}
