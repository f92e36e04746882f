//! The command line: `aigw` (serve), `aigw check-config`, `aigw keygen`,
//! `aigw dev-token`, `aigw docs-index build|check`.
//!
//! Flags override the environment; the environment variables keep the
//! upstream gateway's names and are listed in `--help` next to each flag.
//! The serving flags belong to `serve` and `check-config` (before or after
//! the subcommand's name), never to `keygen` or `dev-token`.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::{CliOverrides, Config, DEV_KEY_FILE, Env, SecretSource};

#[derive(Parser, Debug)]
#[command(
    name = "aigw",
    version,
    about = "GitLab AI Gateway and Duo Agent Platform service in one binary",
    long_about = "Serves the GitLab AI Gateway HTTP API (default :5052), the Duo Workflow gRPC \
service (default :50052) and Prometheus metrics (:8082, :8083), configured with the same \
environment variables as GitLab's container image. Without a subcommand, `aigw` serves."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve all listeners (the default).
    Serve(ServeArgs),
    /// Validate the environment and every file it names; print the effective
    /// configuration with secrets redacted. Exits non-zero on any error.
    CheckConfig(ServeArgs),
    /// Write a new RSA 2048 signing key (PKCS#8 PEM, mode 0600).
    Keygen(KeygenArgs),
    /// DEVELOPMENT ONLY: print a token that a gateway started with `--dev`
    /// (`make run`) from this directory accepts, for trying the API by hand.
    DevToken,
    /// Build or check the documentation search index (Duo Chat's GitLab
    /// documentation answers), offline.
    #[command(subcommand)]
    DocsIndex(DocsIndexCommand),
    /// Print the man page (roff) generated from this command line definition.
    #[command(hide = true)]
    Manpage,
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Default, Clone, PartialEq)]
pub struct ServeArgs {
    /// AI Gateway HTTP bind address [env: AIGW_FASTAPI__API_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub api_host: Option<IpAddr>,
    /// AI Gateway HTTP port [env: AIGW_FASTAPI__API_PORT] [default: 5052]
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Duo Workflow gRPC bind address [env: DUO_WORKFLOW_SERVICE_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub grpc_host: Option<IpAddr>,
    /// Duo Workflow gRPC port [env: DUO_WORKFLOW_SERVICE_PORT, or PORT as upstream] [default: 50052]
    #[arg(long, value_name = "PORT")]
    pub grpc_port: Option<u16>,
    /// AI Gateway metrics bind address [env: AIGW_FASTAPI__METRICS_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub metrics_host: Option<IpAddr>,
    /// AI Gateway metrics port [env: AIGW_FASTAPI__METRICS_PORT] [default: 8082]
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Duo Workflow metrics bind address; enables that listener [env: PROMETHEUS_METRICS__ADDR]
    #[arg(long, value_name = "IP")]
    pub workflow_metrics_addr: Option<IpAddr>,
    /// Duo Workflow metrics port; enables that listener [env: PROMETHEUS_METRICS__PORT] [default: 8083]
    #[arg(long, value_name = "PORT")]
    pub workflow_metrics_port: Option<u16>,
    /// Log level or tracing filter [env: AIGW_LOGGING__LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Seconds to drain connections on SIGTERM [env: AIGW_SHUTDOWN_GRACE_PERIOD_S or DUO_WORKFLOW_SHUTDOWN_GRACE_PERIOD_S] [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace_period: Option<f64>,
    /// Development: sign tokens with the development key tmp/aigw-dev.key (created when missing) when none is configured; `aigw dev-token` mints one (never in production)
    #[arg(long)]
    pub dev: bool,
}

impl ServeArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            api_host: self.api_host,
            api_port: self.api_port,
            grpc_host: self.grpc_host,
            grpc_port: self.grpc_port,
            metrics_host: self.metrics_host,
            metrics_port: self.metrics_port,
            workflow_metrics_addr: self.workflow_metrics_addr,
            workflow_metrics_port: self.workflow_metrics_port,
            log_level: self.log_level.clone(),
            shutdown_grace_period: self.shutdown_grace_period,
            dev_mode: self.dev,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DocsIndexCommand {
    /// Build the index from the GitLab docs of your version: a GitLab source
    /// checkout, its `doc/` directory, or a .zip or .tar.gz of either (such as
    /// GitLab's `gitlab-<tag>.zip?path=doc` download). Replaces the index
    /// atomically: a running gateway picks it up at its next search.
    Build(DocsBuildArgs),
    /// Show what an index holds (pages, version, layout) and run a sample
    /// query. Exits non-zero when it is missing or unusable.
    Check(DocsCheckArgs),
}

#[derive(Args, Debug)]
pub struct DocsBuildArgs {
    /// The docs: a directory, a .zip or a .tar.gz
    #[arg(long, value_name = "DIR|ARCHIVE")]
    pub from: PathBuf,
    /// The index file to write [default: $AIGW_DOCS_SEARCH__DB_PATH, else ./tmp/docs.db]
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// The GitLab version these docs belong to, stored with every page, e.g.
    /// v18.6.0-ee [default: read from a `gitlab-<tag>` folder in the archive]
    #[arg(long, value_name = "TAG")]
    pub version: Option<String>,
}

#[derive(Args, Debug)]
pub struct DocsCheckArgs {
    /// The index file [default: $AIGW_DOCS_SEARCH__DB_PATH, else ./tmp/docs.db]
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// The sample query
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "How do I create a merge request?"
    )]
    pub query: String,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key; `-` writes it to standard output
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

/// Entry point behind `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(
        cli.command,
        None | Some(Command::Serve(_) | Command::CheckConfig(_))
    );
    if !serving && cli.serve != ServeArgs::default() {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "the serving flags (--api-port, --dev, ...) apply to `aigw`, `aigw serve` and `aigw check-config` only",
            )
            .exit();
    }
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&merge(&cli.serve, args)),
        Some(Command::CheckConfig(args)) => check_config(&merge(&cli.serve, args)),
        Some(Command::Keygen(args)) => keygen(&args),
        Some(Command::DevToken) => dev_token(),
        Some(Command::DocsIndex(DocsIndexCommand::Build(args))) => docs_index_build(&args),
        Some(Command::DocsIndex(DocsIndexCommand::Check(args))) => docs_index_check(&args),
        Some(Command::Manpage) => manpage(),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "aigw", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Global flags may come before or after the subcommand.
fn merge(outer: &ServeArgs, inner: ServeArgs) -> ServeArgs {
    ServeArgs {
        api_host: inner.api_host.or(outer.api_host),
        api_port: inner.api_port.or(outer.api_port),
        grpc_host: inner.grpc_host.or(outer.grpc_host),
        grpc_port: inner.grpc_port.or(outer.grpc_port),
        metrics_host: inner.metrics_host.or(outer.metrics_host),
        metrics_port: inner.metrics_port.or(outer.metrics_port),
        workflow_metrics_addr: inner.workflow_metrics_addr.or(outer.workflow_metrics_addr),
        workflow_metrics_port: inner.workflow_metrics_port.or(outer.workflow_metrics_port),
        log_level: inner.log_level.or_else(|| outer.log_level.clone()),
        shutdown_grace_period: inner.shutdown_grace_period.or(outer.shutdown_grace_period),
        dev: inner.dev || outer.dev,
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(&Env::from_process(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aigw: configuration error: {e}");
            crate::systemd::status(&format!("configuration error: {e}"));
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config.logging);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "aigw starting");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aigw: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("aigw: {e}");
            crate::systemd::status(&format!("startup failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `aigw check-config`: one JSON report on stdout whatever went wrong, with
/// `valid`, `errors` and `notes` always present (and the effective
/// configuration when the environment could be read), each error repeated on
/// stderr, exit status 1 for any error.
fn check_config(args: &ServeArgs) -> ExitCode {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut report = match Config::load(&Env::from_process(), &args.overrides()) {
        Ok(config) => check_files(&config, &mut errors, &mut notes),
        Err(e) => {
            errors.push(format!("configuration error: {e}"));
            json!({})
        }
    };
    report["valid"] = errors.is_empty().into();
    report["errors"] = errors.clone().into();
    report["notes"] = notes.into();
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
    );
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("aigw: {e}");
        }
        ExitCode::FAILURE
    }
}

/// Reads every file the configuration names, as startup would; returns the
/// redacted configuration with what was actually loaded filled in.
fn check_files(config: &Config, errors: &mut Vec<String>, notes: &mut Vec<String>) -> Value {
    let mut report = config.redacted();
    match crate::trust::TrustStore::load(&config.ca) {
        Ok(t) => {
            // The file (or the compiled-in set) actually used, not the rule.
            report["ca_bundle"]["source"] = t.source().into();
            report["ca_bundle"]["anchors"] = t.len().into();
            report["oidc_issuers"] = oidc_issuers(config, &t);
        }
        Err(e) => errors.push(format!("CA bundle: {e}")),
    }
    if config.dev_mode {
        notes.push(format!(
            "development mode (--dev): services without a signing key use the development key {DEV_KEY_FILE}"
        ));
    }
    for (name, auth, section) in [
        ("AI Gateway", &config.gateway_auth, "gateway_auth"),
        ("Duo Workflow", &config.workflow_auth, "workflow_auth"),
    ] {
        let signing = auth.signing_key_or_dev(config.dev_mode);
        if let Some(s @ SecretSource::DevKey { path }) = &signing {
            report[section]["signing_key"] = format!("<redacted: {}>", s.describe()).into();
            if !path.exists() {
                notes.push(format!(
                    "{name}: the development key {} does not exist yet; `aigw --dev` creates it",
                    path.display()
                ));
                continue;
            }
        }
        match crate::keys::LocalKeys::load(signing.as_ref(), auth.validation_key.as_ref()) {
            Err(e) => errors.push(format!("{name} key: {e}")),
            Ok(_) if signing.is_none() => {
                notes.push(format!("{name}: no signing key configured"));
            }
            Ok(_) => {}
        }
    }
    for (files, cert_var, key_var) in [
        (
            &config.http.tls,
            "AIGW_FASTAPI__TLS__CERT_FILE",
            "AIGW_FASTAPI__TLS__KEY_FILE",
        ),
        (
            &config.grpc.tls,
            "DUO_WORKFLOW_TLS__CERT_FILE",
            "DUO_WORKFLOW_TLS__KEY_FILE",
        ),
    ] {
        if let Some(f) = files
            && let Err(e) = crate::tls::load_certified_key(f, cert_var, key_var)
        {
            errors.push(format!("TLS: {e}"));
        }
    }
    let db = &config.docs_search_db;
    match crate::docs_search::inspect(db) {
        Ok(info) => {
            if info.is_none() {
                notes.push(format!(
                    "documentation search: no index at {} (questions get no results; `aigw docs-index build` makes one)",
                    db.display()
                ));
            }
            report["docs_search"]["exists"] = info.is_some().into();
            report["docs_search"]["pages"] = info.map(|i| i.pages).into();
        }
        Err(e) => errors.push(format!("documentation index {}: {e}", db.display())),
    }
    report
}

/// How long `check-config` waits for the OIDC issuers, all of them together.
const ISSUER_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every OIDC issuer of both services, each fetched once now (concurrently,
/// within [`ISSUER_PROBE`]) as the service would: whether its keys could be
/// fetched, how many, the `iss` it announces. An issuer that does not answer is
/// reported, not an error: the service starts before GitLab and retries.
fn oidc_issuers(config: &Config, trust: &crate::trust::TrustStore) -> serde_json::Value {
    use crate::server::issuer_urls;
    let sides = [
        ("AI Gateway", issuer_urls(&config.gateway_auth)),
        ("Duo Workflow", issuer_urls(&config.workflow_auth)),
    ];
    let all: Vec<_> = sides.iter().flat_map(|(_, urls)| urls.clone()).collect();
    let timing = crate::jwks::JwksTiming::default();
    let statuses = crate::jwks::http_client(trust, &timing).and_then(|client| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let cache = crate::jwks::JwksCache::new(&all, client, timing, None);
        runtime.block_on(cache.fetch_all_once(ISSUER_PROBE));
        // A name lookup still running must not hold the exit.
        runtime.shutdown_background();
        Ok(cache.statuses())
    });
    let statuses = match statuses {
        Ok(s) => s,
        Err(e) => return serde_json::json!({ "error": e }),
    };
    let services = |url: &str| -> Vec<&str> {
        sides
            .iter()
            .filter(|(_, urls)| {
                urls.iter()
                    .any(|(_, u)| crate::jwks::issuer_id(u.as_str()) == crate::jwks::issuer_id(url))
            })
            .map(|(name, _)| *name)
            .collect()
    };
    statuses
        .iter()
        .map(|s| {
            serde_json::json!({
                "url": s.url,
                "kind": s.label,
                "services": services(&s.url),
                "keys_fetched": s.keys > 0,
                "keys": s.keys,
                "announced_issuer": s.announced_issuer,
                "error": s.last_error,
            })
        })
        .collect()
}

/// Packaging: `aigw manpage > aigw.1`.
fn manpage() -> ExitCode {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aigw: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(args: &KeygenArgs) -> ExitCode {
    if args.path.as_os_str() == "-" {
        return match crate::keys::new_key_pem() {
            Ok(pem) => {
                use std::io::Write;
                match std::io::stdout().write_all(pem.as_bytes()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("aigw: cannot write the key to standard output: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("aigw: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match crate::keys::write_new_key(&args.path, args.force) {
        Ok(()) => {
            eprintln!(
                "aigw: wrote RSA 2048 key to {} (mode 0600)",
                args.path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aigw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `aigw dev-token`: a token signed with the development key, carrying
/// every unit primitive the HTTP API checks. Refused when the environment
/// configures a real signing key (a gateway would not use the development
/// key then) or when no `--dev` gateway has created the key here yet.
fn dev_token() -> ExitCode {
    let overrides = CliOverrides {
        dev_mode: true,
        ..CliOverrides::default()
    };
    let config = match Config::load(&Env::from_process(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aigw: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = &config.gateway_auth;
    let source = match auth.signing_key_or_dev(true) {
        Some(s @ SecretSource::DevKey { .. }) => s,
        Some(configured) => {
            eprintln!(
                "aigw: dev-token: a signing key is configured ({}): a gateway with it never uses the development key and would refuse this token. dev-token is for `aigw --dev` (make run) without signing keys.",
                configured.describe()
            );
            return ExitCode::FAILURE;
        }
        None => return ExitCode::FAILURE,
    };
    let path = std::path::Path::new(DEV_KEY_FILE);
    if !path.exists() {
        let here = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".into());
        eprintln!(
            "aigw: dev-token: no development key at {DEV_KEY_FILE} (in {here}): start the gateway with `aigw --dev` (`make run`) in this directory first"
        );
        return ExitCode::FAILURE;
    }
    let key = match crate::keys::SigningKey::load(&source) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("aigw: dev-token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scopes = match dev_scopes(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aigw: dev-token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let authority = crate::tokens::TokenAuthority::new(&auth.service_name, Some(key));
    match authority.mint_dev(&scopes) {
        Ok(minted) => {
            println!("{}", minted.token);
            eprintln!(
                "aigw: DEVELOPMENT ONLY: a token signed with {DEV_KEY_FILE}, valid for one hour, accepted only by a gateway started with --dev in this directory. Send it as `Authorization: Bearer <token>` with `X-Gitlab-Authentication-Type: oidc`."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aigw: dev-token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every unit primitive the HTTP API checks: code suggestions, Duo Chat and
/// its tools and context categories, and every prompt's.
fn dev_scopes(config: &Config) -> Result<Vec<String>, String> {
    let prompts = crate::prompts::PromptRegistry::load(
        config.models.prompts_dir.as_deref(),
        crate::prompts::PromptSettings {
            default_timeout: config.models.request_timeout,
            chat_max_tokens: config.models.chat_max_tokens,
        },
    )?;
    let mut scopes: BTreeSet<String> = [
        "complete_code",
        "generate_code",
        "duo_chat",
        "duo_classic_chat",
    ]
    .into_iter()
    .chain(prompts.unit_primitives())
    .chain(crate::chat::tools::TOOLS.iter().map(|t| t.unit_primitive))
    .map(str::to_string)
    .collect();
    scopes.extend(
        crate::chat::context::CATEGORIES
            .iter()
            .map(|c| crate::chat::context::unit_primitive(c)),
    );
    Ok(scopes.into_iter().collect())
}

fn docs_index_build(args: &DocsBuildArgs) -> ExitCode {
    use std::io::{IsTerminal, Write};

    use crate::docs_search::{BuildOptions, Progress};

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::config::docs_search_db(&Env::from_process()));
    let terminal = std::io::stderr().is_terminal();
    let mut last_shown: Option<std::time::Instant> = None;
    let mut line_open = false;
    let mut progress = |p: Progress| {
        let mut err = std::io::stderr().lock();
        match p {
            Progress::Root { root, version } => {
                let version = version.map_or(String::new(), |v| format!(" (GitLab {v})"));
                let _ = writeln!(err, "aigw: reading the docs under {root}{version}");
            }
            Progress::Page { pages, bytes } => {
                if terminal && last_shown.is_none_or(|t| t.elapsed().as_millis() >= 100) {
                    last_shown = Some(std::time::Instant::now());
                    let _ = write!(
                        err,
                        "\r\x1b[Kaigw: {}, {}",
                        count(pages, "page"),
                        megabytes(bytes)
                    );
                    line_open = true;
                }
            }
            Progress::Skipped { filename, reason } => {
                let clear = if line_open { "\r\x1b[K" } else { "" };
                line_open = false;
                let (filename, reason) = (
                    crate::docs_search::printable(filename),
                    crate::docs_search::printable(reason),
                );
                let _ = writeln!(err, "{clear}aigw: warning: skipped {filename}: {reason}");
            }
        }
    };
    let result = crate::docs_search::build(
        &BuildOptions {
            from: &args.from,
            out: &out,
            version: args.version.as_deref(),
        },
        &mut progress,
    );
    if terminal {
        eprint!("\r\x1b[K");
    }
    match result {
        Ok(s) => {
            let skipped = match s.skipped {
                0 => String::new(),
                1 => "; 1 page skipped (warning above)".into(),
                n => format!("; {n} pages skipped (warnings above)"),
            };
            println!(
                "aigw: indexed {} ({} of markdown) into {} ({}) in {:.1} s{skipped}",
                count(s.pages, "page"),
                megabytes(s.bytes),
                s.out.display(),
                megabytes(s.index_bytes),
                s.elapsed.as_secs_f64(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let kept = if out.exists() {
                format!("{} is left as it was", out.display())
            } else {
                "nothing was written".to_string()
            };
            eprintln!("aigw: docs-index build: {e}; {kept}");
            ExitCode::FAILURE
        }
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn docs_index_check(args: &DocsCheckArgs) -> ExitCode {
    let path = args
        .path
        .clone()
        .unwrap_or_else(|| crate::config::docs_search_db(&Env::from_process()));
    let info = match crate::docs_search::inspect(&path) {
        Ok(Some(info)) => info,
        Ok(None) => {
            eprintln!(
                "aigw: docs-index check: no index at {}: documentation questions get no results \
                 (build one with `aigw docs-index build --from <docs>`)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("aigw: docs-index check: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    println!("index: {} ({})", path.display(), megabytes(info.file_bytes));
    println!("pages: {}", info.pages);
    let versions: Vec<String> = info
        .versions
        .iter()
        .map(|(v, n)| format!("{} ({n} pages)", v.as_deref().unwrap_or("not recorded")))
        .collect();
    println!("version: {}", versions.join(", "));
    let mut ok = true;
    if info.layout_ok {
        println!(
            "layout: doc_index(processed, content, metadata), porter trigram, user_version {} (upstream's)",
            info.user_version
        );
    } else {
        ok = false;
        println!(
            "layout: NOT the documentation index layout: {}",
            info.schema
        );
    }
    if info.user_version != crate::docs_search::layout::USER_VERSION {
        println!(
            "note: user_version is {}, upstream writes {}",
            info.user_version,
            crate::docs_search::layout::USER_VERSION
        );
    }
    if info.pages == 0 {
        ok = false;
        println!("error: the index has no pages");
    }
    let started = std::time::Instant::now();
    match crate::docs_search::search_file(&path, &args.query, 4) {
        Ok(results) => {
            println!(
                "sample query {:?}: {} results in {:.1} ms",
                args.query,
                results.len(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            for (i, r) in results.iter().enumerate() {
                println!("  {}. {}", i + 1, r.id);
            }
        }
        Err(e) => {
            ok = false;
            println!("sample query {:?}: error: {e}", args.query);
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
