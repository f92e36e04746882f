//! The command line: `aigw` (serve), `aigw check-config`, `aigw keygen`,
//! `aigw docs-index build|check`.
//!
//! Flags override the environment; the environment variables keep the
//! upstream gateway's names and are listed in `--help` next to each flag.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{CliOverrides, Config, Env};

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

#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// AI Gateway HTTP bind address [env: AIGW_FASTAPI__API_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP", global = true)]
    pub api_host: Option<IpAddr>,
    /// AI Gateway HTTP port [env: AIGW_FASTAPI__API_PORT] [default: 5052]
    #[arg(long, value_name = "PORT", global = true)]
    pub api_port: Option<u16>,
    /// Duo Workflow gRPC bind address [env: DUO_WORKFLOW_SERVICE_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP", global = true)]
    pub grpc_host: Option<IpAddr>,
    /// Duo Workflow gRPC port [env: DUO_WORKFLOW_SERVICE_PORT, or PORT as upstream] [default: 50052]
    #[arg(long, value_name = "PORT", global = true)]
    pub grpc_port: Option<u16>,
    /// AI Gateway metrics bind address [env: AIGW_FASTAPI__METRICS_HOST] [default: 0.0.0.0]
    #[arg(long, value_name = "IP", global = true)]
    pub metrics_host: Option<IpAddr>,
    /// AI Gateway metrics port [env: AIGW_FASTAPI__METRICS_PORT] [default: 8082]
    #[arg(long, value_name = "PORT", global = true)]
    pub metrics_port: Option<u16>,
    /// Duo Workflow metrics bind address; enables that listener [env: PROMETHEUS_METRICS__ADDR]
    #[arg(long, value_name = "IP", global = true)]
    pub workflow_metrics_addr: Option<IpAddr>,
    /// Duo Workflow metrics port; enables that listener [env: PROMETHEUS_METRICS__PORT] [default: 8083]
    #[arg(long, value_name = "PORT", global = true)]
    pub workflow_metrics_port: Option<u16>,
    /// Log level or tracing filter [env: AIGW_LOGGING__LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Seconds to drain connections on SIGTERM [env: AIGW_SHUTDOWN_GRACE_PERIOD_S or DUO_WORKFLOW_SHUTDOWN_GRACE_PERIOD_S] [default: 10]
    #[arg(long, value_name = "SECONDS", global = true)]
    pub shutdown_grace_period: Option<f64>,
    /// Development: sign tokens with a throwaway key when none is configured (never in production)
    #[arg(long, global = true)]
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
            dev_ephemeral_keys: self.dev,
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
    /// Where to write the key
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

/// Entry point behind `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&merge(&cli.serve, args)),
        Some(Command::CheckConfig(args)) => check_config(&merge(&cli.serve, args)),
        Some(Command::Keygen(args)) => keygen(&args),
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

fn check_config(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(&Env::from_process(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aigw: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = config.redacted();
    let mut problems = Vec::new();
    match crate::trust::TrustStore::load(&config.ca) {
        Ok(t) => {
            report["ca_bundle"]["anchors"] = t.len().into();
            report["oidc_issuers"] = oidc_issuers(&config, &t);
        }
        Err(e) => problems.push(format!("CA bundle: {e}")),
    }
    for (name, auth) in [
        ("AI Gateway", &config.gateway_auth),
        ("Duo Workflow", &config.workflow_auth),
    ] {
        if let Err(e) =
            crate::keys::LocalKeys::load(auth.signing_key.as_ref(), auth.validation_key.as_ref())
        {
            problems.push(format!("{name} key: {e}"));
        } else if auth.signing_key.is_none() {
            report["notes"]
                .as_array_mut()
                .map(|a| a.push(format!("{name}: no signing key configured").into()))
                .unwrap_or_else(|| {
                    report["notes"] =
                        serde_json::json!([format!("{name}: no signing key configured")])
                });
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
            problems.push(format!("TLS: {e}"));
        }
    }
    match crate::docs_search::inspect(&config.docs_search_db) {
        Ok(info) => {
            report["docs_search"]["exists"] = info.is_some().into();
            report["docs_search"]["pages"] = info.map(|i| i.pages).into();
        }
        Err(e) => problems.push(format!(
            "documentation index {}: {e}",
            config.docs_search_db.display()
        )),
    }
    report["valid"] = problems.is_empty().into();
    report["errors"] = problems.clone().into();
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("aigw: {p}");
        }
        ExitCode::FAILURE
    }
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
