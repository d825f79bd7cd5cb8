//! Parse errors as a person reads them: `file:line:col: message`, the offending line, a caret.

use std::fmt;

/// What kind of mistake a [`Diagnostic`] reports. Tests and tools match on this; people read
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A word where a keyword was expected that is not one (`alow`, `hots`).
    UnknownKeyword,
    /// A keyword without the value it needs, or a line that stops too early.
    MissingValue,
    /// A value after the last thing a line can hold.
    UnexpectedToken,
    /// A host name or pattern that is not a valid DNS name.
    BadHost,
    /// An address or CIDR that does not parse, or has host bits set.
    BadAddress,
    /// A port of 0, above 65535, or a reversed range.
    BadPort,
    /// An HTTP method that is not a token.
    BadMethod,
    /// A path prefix that does not start with `/`.
    BadPath,
    /// A content type that is not `type/subtype` or `type/*`.
    BadContentType,
    /// A size that is not a number with an optional K, M or G suffix.
    BadSize,
    /// A day or time of day that does not parse, or an empty window.
    BadTime,
    /// A rule or list name with characters outside `A-Z a-z 0-9 _ . -`.
    BadName,
    /// Two rules, or two lists, with the same name.
    DuplicateName,
    /// The same condition twice in one rule, or `default` twice in a file.
    Duplicate,
    /// `@name` where no list of that name is defined.
    UnknownList,
    /// A condition the rule's protocol can never see (a host on `tcp`, a path on `https`).
    NotForProtocol,
    /// `max-body` on an allow rule: it matches bodies larger than the size, so only deny fits.
    NotForAction,
    /// A list file that cannot be read.
    ListFile,
}

/// One error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub file: String,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
    pub message: String,
    /// The whole offending line, without its newline, so the error stands on its own.
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        writeln!(f, "    | {}", self.source_line)?;
        // Copy the line's own tabs into the caret line so the caret lands under the right
        // character whatever the terminal's tab width.
        let pad: String = self
            .source_line
            .chars()
            .take(self.col.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "    | {pad}^")
    }
}

/// Every error found in a rule file and the list files it loads: parsing does not stop at
/// the first one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// The kinds, in order: what tests compare against.
    pub fn kinds(&self) -> Vec<ErrorKind> {
        self.0.iter().map(|d| d.kind).collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    pub file: &'a str,
    pub found: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a str) -> Self {
        Reporter {
            file,
            found: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        kind: ErrorKind,
        line_no: u32,
        col: u32,
        line: &str,
        message: impl Into<String>,
    ) {
        self.found.push(Diagnostic {
            kind,
            file: self.file.to_string(),
            line: line_no,
            col,
            message: message.into(),
            source_line: line.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_sits_under_the_column_even_after_tabs() {
        let d = Diagnostic {
            kind: ErrorKind::BadPort,
            file: "rules.txt".into(),
            line: 3,
            col: 16,
            message: "port 0 is not a port".into(),
            source_line: "\tallow tcp port 0".into(),
        };
        let text = d.to_string();
        assert_eq!(
            text,
            "rules.txt:3:16: port 0 is not a port\n    | \tallow tcp port 0\n    | \t              ^"
        );
    }

    #[test]
    fn summary_counts_errors() {
        let d = Diagnostic {
            kind: ErrorKind::BadHost,
            file: "f".into(),
            line: 1,
            col: 1,
            message: "m".into(),
            source_line: "x".into(),
        };
        let all = Diagnostics(vec![d.clone(), d]);
        assert!(all.to_string().ends_with("2 errors"));
    }
}
