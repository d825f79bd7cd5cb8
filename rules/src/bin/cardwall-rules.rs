//! `cardwall-rules`: check rule files, explain decisions, and sign and verify policy bundles.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Parser, Subcommand};

use rules::bundle::{self, Bundle, Trust};
use rules::{LocalTime, Protocol, Request, Response, RuleSet};

#[derive(Parser)]
#[command(version, about = "cardwall rule files: check, explain, sign, verify")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a rule file and the list files it names; exit 1 and print every error if any.
    Check { file: PathBuf },
    /// Print a rule file in its canonical form (lists, rules, default).
    Print { file: PathBuf },
    /// Show how a rule file decides one request, connection or DNS question, and why.
    Explain(ExplainArgs),
    /// Make an Ed25519 signing key: writes PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign a rule file (and its list files) into a bundle.
    Sign(SignArgs),
    /// Verify a bundle as a card would; exit 1 with the reason if it is refused.
    Verify(VerifyArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("query").required(true).args(["url", "dns", "tcp"])))]
struct ExplainArgs {
    file: PathBuf,
    /// An http:// or https:// URL. For https only the name and port are visible to the card.
    #[arg(long)]
    url: Option<String>,
    /// A DNS question for this name.
    #[arg(long, value_name = "NAME")]
    dns: Option<String>,
    /// A plain TCP connection to ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    tcp: Option<SocketAddr>,
    /// HTTP method (with --url http://…).
    #[arg(long, default_value = "GET")]
    method: String,
    /// The destination address, when the URL names a host.
    #[arg(long)]
    dst: Option<IpAddr>,
    /// Local time to decide at, as `Mon 09:30`; default now.
    #[arg(long, value_parser = parse_local_time)]
    at: Option<LocalTime>,
    /// Also decide the response: its Content-Type.
    #[arg(long)]
    content_type: Option<String>,
    /// Also decide the response: its body length in bytes.
    #[arg(long)]
    body_len: Option<u64>,
}

#[derive(Args)]
struct SignArgs {
    /// The rule file; list files it names are read from beside it and signed with it.
    rules: PathBuf,
    #[arg(long, value_name = "PRIVATE_KEY_PEM")]
    key: PathBuf,
    #[arg(long)]
    version: u64,
    #[arg(long)]
    group: String,
    /// When the bundle stops being valid: a duration from now (`30d`, `12h`) or an RFC 3339 time.
    #[arg(long, default_value = "30d")]
    expires: String,
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    bundle: PathBuf,
    /// The pinned public key.
    #[arg(long, value_name = "PUBLIC_KEY_PEM")]
    key: PathBuf,
    #[arg(long)]
    group: String,
    /// The version installed now; the bundle must be newer.
    #[arg(long, default_value_t = 0)]
    installed: u64,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { file } => Ok(match load(&file)? {
            Ok(rules) => {
                let stats = rules.stats();
                println!(
                    "{}: ok, {} rules, {} names indexed, default {}",
                    file.display(),
                    stats.rules,
                    stats.indexed_names,
                    rules.default_action()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        }),
        Command::Print { file } => {
            let text = read(&file)?;
            match rules::parse(&file.display().to_string(), &text) {
                Ok(policy) => {
                    print!("{policy}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Explain(args) => explain(args),
        Command::Keygen { out } => keygen(&out),
        Command::Sign(args) => sign(args),
        Command::Verify(args) => verify(args),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Loads a rule file: the outer error is I/O on the file itself, the inner one its contents.
fn load(path: &Path) -> Result<Result<RuleSet, rules::Diagnostics>> {
    match RuleSet::from_path(path) {
        Ok(rules) => Ok(Ok(rules)),
        Err(rules::LoadError::Invalid(errors)) => Ok(Err(errors)),
        Err(e) => Err(e.into()),
    }
}

fn parse_local_time(text: &str) -> Result<LocalTime, String> {
    LocalTime::parse(text).map_err(|e| e.message)
}

fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let rules = match load(&args.file)? {
        Ok(rules) => rules,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let time = args.at.unwrap_or_else(LocalTime::now);
    let uri: http::Uri;
    let mut note = None;
    let mut request = if let Some(url) = &args.url {
        uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        let (protocol, default_port) = match uri.scheme_str() {
            Some("http") => (Protocol::Http, 80),
            Some("https") => (Protocol::Https, 443),
            _ => bail!("`{url}`: only http:// and https:// URLs can be explained"),
        };
        let host = uri
            .host()
            .context("the URL has no host")?
            .trim_matches(['[', ']']);
        let mut request = Request::new(protocol, time).port(uri.port_u16().unwrap_or(default_port));
        match host.parse::<IpAddr>() {
            Ok(ip) => request = request.dst(ip),
            Err(_) => request = request.host(host),
        }
        if protocol == Protocol::Http {
            request = request.method(&args.method).path(uri.path());
        } else {
            note = Some("https: the card sees the name (SNI) and port, not the method or path");
        }
        request
    } else if let Some(name) = &args.dns {
        Request::new(Protocol::Dns, time).host(name)
    } else if let Some(addr) = args.tcp {
        Request::new(Protocol::Tcp, time)
            .dst(addr.ip())
            .port(addr.port())
    } else {
        unreachable!("clap requires one of --url, --dns, --tcp");
    };
    if let Some(dst) = args.dst {
        request = request.dst(dst);
    }
    if let Some(note) = note {
        println!("note: {note}");
    }
    println!("at: {time}");
    let explanation = rules.explain(&request, None);
    print!("request: {explanation}");
    let response_asked = args.content_type.is_some() || args.body_len.is_some();
    if response_asked || explanation.decision.response_check {
        let response = Response {
            content_type: args.content_type.as_deref(),
            body_len: args.body_len,
        };
        if !response_asked {
            println!(
                "(the answer depends on the response: give --content-type and --body-len to see it)"
            );
        }
        print!("response: {}", rules.explain(&request, Some(&response)));
    }
    Ok(ExitCode::SUCCESS)
}

fn keygen(prefix: &Path) -> Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let key = bundle::generate_key()?;
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet)",
                private.display()
            )
        })?;
    file.write_all(bundle::signing_key_to_pem(&key).as_bytes())?;
    file.sync_all()?;
    std::fs::write(&public, bundle::public_key_to_pem(&key.verifying_key()))
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "wrote {} (keep it secret) and {}",
        private.display(),
        public.display()
    );
    println!("key id: {}", bundle::key_id(&key.verifying_key()));
    Ok(ExitCode::SUCCESS)
}

fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().with_context(|| {
        format!("`{text}`: write a duration (`30d`, `12h`) or an RFC 3339 time")
    })?;
    let duration = match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        _ => bail!("`{text}`: a duration ends in d, h or m"),
    };
    Ok(now + duration)
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let key = bundle::signing_key_from_pem(&read(&args.key)?)?;
    let rules_name = args
        .rules
        .file_name()
        .context("the rule file has no file name")?
        .to_string_lossy()
        .into_owned();
    let text = read(&args.rules)?;
    let policy = match rules::parse(&rules_name, &text) {
        Ok(policy) => policy,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let dir = args.rules.parent().unwrap_or(Path::new("."));
    let mut list_files = Vec::new();
    for list in &policy.lists {
        if let rules::ListSource::File(path) = &list.source {
            list_files.push((path.clone(), read(&dir.join(path))?));
        }
    }
    let now = Utc::now();
    let bundle = Bundle {
        version: args.version,
        group: args.group,
        issued_at: now,
        expires_at: parse_expiry(&args.expires, now)?,
        rules: (rules_name, text),
        list_files,
        trusted_cas: None,
        vpns: None,
    };
    // Refuse to sign what a card would refuse to install.
    let lists: std::collections::HashMap<String, String> =
        bundle.list_files.iter().cloned().collect();
    if let Err(errors) = RuleSet::compile(&bundle.rules.0, &policy, &lists) {
        eprintln!("{errors}");
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(&args.out, bundle.sign(&key))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("signed {bundle} into {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let key = bundle::public_key_from_pem(&read(&args.key)?)?;
    let bytes = std::fs::read(&args.bundle)
        .with_context(|| format!("cannot read {}", args.bundle.display()))?;
    let trust = Trust {
        key: &key,
        installed_version: args.installed,
        group: &args.group,
        now: Utc::now(),
    };
    match bundle::verify(&bytes, &trust) {
        Ok(verified) => {
            println!("ok: {}", verified.bundle);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
