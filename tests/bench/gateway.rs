//! `make bench`: startup time, memory, binary size and authenticated request
//! latency/throughput of the real binary, against loopback peers.
//!
//! The binary measured is `$AIGW_BENCH_BIN` (make bench points it at the
//! static musl build that ships) or the bench profile's own build. The load
//! generator runs in this process on the same 2-core machine as the gateway,
//! so both compete for the CPUs: the numbers are conservative.
//! Results are printed as Markdown for BENCHMARKS.md.

#[path = "../common/cloud.rs"]
mod cloud;
#[path = "cloud_overhead.rs"]
mod cloud_overhead;
#[path = "../common/mod.rs"]
mod common;
#[path = "docs_search.rs"]
mod docs_search;
#[path = "model_overhead.rs"]
mod model_overhead;

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;

const RUN_FOR: Duration = Duration::from_secs(5);

/// `AIGW_BENCH_ONLY=model,streams` runs only the named sections (startup,
/// token, model, chat, throughput, paced, streams, cloud, docs); unset runs
/// them all.
fn section(name: &str) -> bool {
    match std::env::var("AIGW_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn bench_binary() -> PathBuf {
    std::env::var("AIGW_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| binary())
}

fn raise_nofile() {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

struct Started {
    child: std::process::Child,
    ready_after: Duration,
    http: String,
    grpc: String,
}

/// Starts the gateway as systemd would and measures exec -> READY=1.
// The child is handed to the caller, which kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start(gitlab_url: &str) -> Started {
    start_with(gitlab_url, &[])
}

/// [`start`] with more environment variables.
#[allow(clippy::zombie_processes)]
fn start_with(gitlab_url: &str, extra: &[(String, String)]) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let builder = GatewayBuilder::new()
        .gitlab(gitlab_url)
        .env("AIGW_CUSTOM_MODELS__ENABLED", "true")
        .env("AIGW_LOGGING__LEVEL", "warn");
    let builder = extra.iter().fold(builder, |b, (k, v)| b.env(k, v));
    // The harness's environment, but the binary under test.
    let template = builder.command();
    let mut cmd = Command::new(bench_binary());
    cmd.env_clear().env("NOTIFY_SOCKET", &sock_path);
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    // Allocator experiments (`MIMALLOC_PURGE_DELAY=...`) reach the gateway.
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")) {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.lines().any(|l| l == "READY=1") {
            let ready_after = t0.elapsed();
            let status = msg
                .lines()
                .find_map(|l| l.strip_prefix("STATUS="))
                .unwrap_or_default()
                .to_string();
            let field = |name: &str| {
                status
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            return Started {
                child,
                ready_after,
                http: field("http"),
                grpc: field("grpc"),
            };
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

struct LoadResult {
    requests: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
}

async fn http_load(url: &str, token: &str, concurrency: usize) -> LoadResult {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let headers = rails_headers(token);
    let deadline = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url: hyper::Uri = url.parse().unwrap();
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let mut req = http::Request::post(url.clone());
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                let req = req.body(Empty::new()).unwrap();
                let t = Instant::now();
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    collect(tasks).await
}

async fn grpc_load(url: &str, token: &str, concurrency: usize) -> LoadResult {
    use aigw::grpc::proto::{GenerateTokenRequest, duo_workflow_client::DuoWorkflowClient};
    let channels: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..concurrency.clamp(1, 16) {
            v.push(
                tonic::transport::Endpoint::from_shared(url.to_string())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let headers = Arc::new(rails_headers(token));
    let deadline = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = DuoWorkflowClient::new(channels[i % channels.len()].clone());
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let mut req = tonic::Request::new(GenerateTokenRequest::default());
                for (k, v) in headers.iter() {
                    req.metadata_mut().insert(*k, v.parse().unwrap());
                }
                let t = Instant::now();
                match client.generate_token(req).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    collect(tasks).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, usize)>>) -> LoadResult {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    LoadResult {
        requests: all.len(),
        errors,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        rps: all.len() as f64 / RUN_FOR.as_secs_f64(),
    }
}

fn main() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bin = bench_binary();
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        let file = Command::new("file").arg(&bin).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
        let token = gitlab_key().rails_token(json!({}));

        // Startup: ten cold starts.
        let mut starts = Vec::new();
        for _ in 0..if section("startup") { 10 } else { 0 } {
            let mut s = start(&gitlab.url);
            starts.push(s.ready_after);
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        starts.sort();
        let mut gw = start(&gitlab.url);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_kib(gw.child.id());

        // Wait until the JWKS is in.
        let http_url = format!("http://{}/v1/code/user_access_token", gw.http);
        let c = client();
        for _ in 0..200 {
            let r = with_headers(c.post(&http_url), &rails_headers(&token)).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        println!("## aigw benchmarks\n");
        println!("binary: `{}`  \n`{file}`  \nsize: {:.1} MB ({size} bytes)\n", bin.display(), size as f64 / 1e6);
        if section("startup") {
            println!("| metric | value |\n|---|---|");
            println!("| exec -> READY=1, median of 10 | {:.1} ms |", starts[5].as_secs_f64() * 1000.0);
            println!("| exec -> READY=1, max of 10 | {:.1} ms |", starts[9].as_secs_f64() * 1000.0);
            println!("| idle RSS, both services, 1 s after READY | {:.1} MiB |\n", idle_rss as f64 / 1024.0);
        }

        if section("token") {
            println!("| endpoint | concurrency | requests | errors | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|");
            for conc in [1, 64, 1024] {
                let r = http_load(&http_url, &token, conc).await;
                println!("| HTTP POST /v1/code/user_access_token | {conc} | {} | {} | {:.0} | {:.3} | {:.3} |", r.requests, r.errors, r.rps, r.p50_ms, r.p99_ms);
            }
            let grpc_url = format!("http://{}", gw.grpc);
            for conc in [1, 64, 1024] {
                let r = grpc_load(&grpc_url, &token, conc).await;
                println!("| gRPC GenerateToken | {conc} | {} | {} | {:.0} | {:.3} | {:.3} |", r.requests, r.errors, r.rps, r.p50_ms, r.p99_ms);
            }
            println!("\nRSS after the load runs: {:.1} MiB", rss_kib(gw.child.id()) as f64 / 1024.0);
        }

        model_overhead::run(&gw.http, &token, RUN_FOR, section).await;
        if section("streams") {
            model_overhead::streams_section(&gw.http, &token, gw.child.id()).await;
        }
        if section("cloud") {
            let fake = cloud_overhead::fake().await;
            let dir = tempfile::tempdir().unwrap();
            let mut cgw = start_with(&gitlab.url, &cloud_overhead::env(&fake.url, dir.path()));
            cloud_overhead::run(&cgw.http, &token, &fake, RUN_FOR).await;
            let _ = cgw.child.kill();
            let _ = cgw.child.wait();
        }
        if section("docs") {
            // The section builds the index under this gateway, as an
            // administrator would under the running service.
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("docs.db");
            let env = [("AIGW_DOCS_SEARCH__DB_PATH".to_string(), db.display().to_string())];
            let mut dgw = start_with(&gitlab.url, &env);
            docs_search::run(&bin, &dgw.http, &db).await;
            let _ = dgw.child.kill();
            let _ = dgw.child.wait();
        }
        unsafe {
            libc::kill(gw.child.id() as i32, libc::SIGTERM);
        }
        let _ = gw.child.wait();
    });
}
