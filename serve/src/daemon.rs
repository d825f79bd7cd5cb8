//! What every daemon binary (the card, the appliance, the policy server) does before it
//! serves: log to stderr as `RUST_LOG` says, start a runtime, and read its TOML configuration
//! into a typed value whose errors name the file.

use std::path::Path;
use std::process::ExitCode;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): the init system keeps stderr.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// A multi-threaded tokio runtime; when there is none, the reason is on stderr and the
/// binary exits with the code returned.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// A configuration read from a TOML file: the types say most of what is valid, [`check`]
/// the rest (ranges, addresses inside their networks).
///
/// [`check`]: ConfigFile::check
pub trait ConfigFile: serde::de::DeserializeOwned {
    /// Checks what the types alone cannot; the error is one sentence.
    fn check(&self) -> Result<(), String>;

    /// Reads and checks the file at `path`.
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks `text`, naming `path` in the error.
    fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let config: Self = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.check().map_err(invalid)?;
        Ok(config)
    }
}

/// Why a configuration file was not taken. Both name the file; `Invalid` carries TOML's own
/// `line, column` and message, or the [`ConfigFile::check`] sentence.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        port: u16,
    }

    impl ConfigFile for Sample {
        fn check(&self) -> Result<(), String> {
            if self.port == 0 {
                return Err("port must not be 0".into());
            }
            Ok(())
        }
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        assert_eq!(Sample::parse("a.toml", "port = 8").unwrap().port, 8);
        let invalid = Sample::parse("a.toml", "port = 0").unwrap_err().to_string();
        assert_eq!(invalid, "a.toml: port must not be 0");
        let syntax = Sample::parse("a.toml", "port = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            syntax.starts_with("a.toml: ") && syntax.contains("line 1"),
            "{syntax}"
        );
        let missing = Sample::load(Path::new("/nonexistent/a.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    }
}
