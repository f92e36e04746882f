//! `aigw-mock-model`: an OpenAI-compatible model server for tests and
//! `make bench` (a stand-in for vLLM, Ollama or a LiteLLM proxy behind the
//! gateway). Not shipped in the packages.
//!
//! Replies are deterministic functions of the request so tests can assert on
//! them; latency, pacing and faults are set per process (flags / `AIGW_MOCK_*`)
//! and per request (`x-mock-*` headers, `MOCK_*:` directive lines), so one
//! process serves many test cases. Once bound it prints one line,
//! `{"listening":"ADDR"}`, to stdout; logs go to stderr.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "aigw_mock_model/knobs.rs"]
mod knobs;
#[path = "aigw_mock_model/observe.rs"]
mod observe;
#[path = "aigw_mock_model/render.rs"]
mod render;
#[path = "aigw_mock_model/reply.rs"]
mod reply;
#[path = "aigw_mock_model/routes.rs"]
mod routes;
#[path = "aigw_mock_model/stream.rs"]
mod stream;

use std::{io::Write, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpSocket};

/// OpenAI-compatible mock model server for aigw tests and benchmarks.
#[derive(Parser, Debug)]
#[command(name = "aigw-mock-model", version)]
struct Cli {
    /// Address to listen on (port 0: any free port, announced on stdout).
    #[arg(long, env = "AIGW_MOCK_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[command(flatten)]
    knobs: knobs::Knobs,
    /// With `--fault`: inject it into the first N model requests only, then
    /// answer normally (a model server that recovers; retry tests).
    #[arg(long, env = "AIGW_MOCK_FAULT_TIMES")]
    fault_times: Option<u64>,
    /// How many requests `GET /_mock/requests` keeps (0: none).
    #[arg(long, env = "AIGW_MOCK_RECORD", default_value_t = 100)]
    record: usize,
    /// On SIGTERM/SIGINT, how long open responses may finish before exit.
    #[arg(long, env = "AIGW_MOCK_DRAIN_MS", default_value_t = 1000)]
    drain_ms: u64,
    /// Also speak HTTP/2 (h2c, prior knowledge). Off by default: model servers
    /// speak HTTP/1.1, and a connection costs ~20 KiB instead of ~30 KiB.
    #[arg(long, env = "AIGW_MOCK_HTTP2")]
    http2: bool,
    /// Log filter (tracing-subscriber syntax), e.g. `debug`.
    #[arg(long, env = "AIGW_MOCK_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Hung requests still hold tasks: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Ten thousand open streams need more descriptors than the usual soft limit.
fn raise_nofile() {
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // Benchmarks open thousands of connections at once.
    socket.listen(8192)
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut shutdown = std::pin::pin!(shutdown_signal()?);
    let listener = bind(cli.listen).map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let line = serde_json::json!({"listening": addr.to_string()});
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot announce the address on stdout: {e}"))?;
    }
    tracing::info!(%addr, knobs = ?cli.knobs, "listening");

    let state = Arc::new(routes::AppState {
        defaults: cli.knobs,
        fault_budget: cli.fault_times.map(std::sync::atomic::AtomicU64::new),
        observe: Arc::new(observe::Observe::new(cli.record)),
    });
    let app = routes::router(state);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).keep_alive(true);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1().timer(TokioTimer::new()).keep_alive(true);
    auto.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100_000);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let io = TokioIo::new(stream);
                let svc = TowerToHyperService::new(app.clone());
                if cli.http2 {
                    tokio::spawn(drive(graceful.watch(auto.serve_connection(io, svc).into_owned())));
                } else {
                    tokio::spawn(drive(graceful.watch(h1.serve_connection(io, svc))));
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drain = Duration::from_millis(cli.drain_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("drain timed out; closing open connections");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn drive<E: std::fmt::Display>(conn: impl Future<Output = Result<(), E>>) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Installs the SIGTERM/SIGINT handlers now (a test may signal as soon as it
/// reads the address) and resolves on the first signal.
fn shutdown_signal() -> Result<impl Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
