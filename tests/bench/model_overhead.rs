//! What the gateway adds on top of a self-hosted model server: the same
//! completion sent straight to `aigw-mock-model` and through the gateway, side
//! by side, in one run (issue "Self-hosted model features", Benchmarks).
//!
//! The direct request is the exact one the gateway sends to the model server
//! (captured once from a recording mock), so the difference between the two
//! columns is the gateway's own cost: parsing and authenticating the GitLab
//! request, building the prompt, the extra loopback hop, and the answer's
//! translation back. The load generator shares the 2 CPUs with both servers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

use super::common::*;

/// One request, replayable.
#[derive(Clone)]
pub struct Probe {
    pub uri: hyper::Uri,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Probe {
    fn request(&self) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::post(self.uri.clone());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(Full::new(self.body.clone()))
            .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
    }
}

pub struct Stats {
    pub errors: usize,
    pub rps: f64,
    /// Whole response (headers and the complete body).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// First body bytes (streaming: the first delta).
    pub first_p50_ms: f64,
    pub first_p99_ms: f64,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn http1_client(pool: usize) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .build(connector)
}

/// `concurrency` closed-loop workers sending `probe` for `run_for`.
pub async fn load(probe: &Probe, concurrency: usize, run_for: Duration) -> Stats {
    let client = http1_client(concurrency);
    // Warm the pool so connection setup is not in the figures.
    let mut warm = Vec::new();
    for _ in 0..concurrency.min(256) {
        let (client, probe) = (client.clone(), probe.clone());
        warm.push(tokio::spawn(async move {
            if let Ok(resp) = client.request(probe.request()).await {
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    for w in warm {
        let _ = w.await;
    }
    let probe = Arc::new(probe.clone());
    let deadline = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, probe) = (client.clone(), probe.clone());
        tasks.push(tokio::spawn(async move {
            let (mut total, mut first, mut errors) = (Vec::new(), Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                let Ok(resp) = client.request(probe.request()).await else {
                    errors += 1;
                    continue;
                };
                if resp.status() != 200 {
                    errors += 1;
                    let _ = resp.into_body().collect().await;
                    continue;
                }
                let mut body = resp.into_body();
                let mut got_first = None;
                let mut ok = true;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if got_first.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) {
                                got_first = Some(t.elapsed());
                            }
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    errors += 1;
                    continue;
                }
                let done = t.elapsed();
                total.push(done.as_micros() as u64);
                first.push(got_first.unwrap_or(done).as_micros() as u64);
            }
            (total, first, errors)
        }));
    }
    let (mut total, mut first, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        if let Ok((a, b, e)) = t.await {
            total.extend(a);
            first.extend(b);
            errors += e;
        }
    }
    total.sort_unstable();
    first.sort_unstable();
    Stats {
        errors,
        rps: total.len() as f64 / run_for.as_secs_f64(),
        p50_ms: pct(&total, 0.50),
        p99_ms: pct(&total, 0.99),
        first_p50_ms: pct(&first, 0.50),
        first_p99_ms: pct(&first, 0.99),
    }
}

/// The v2 completion Rails sends (client spec §1.1). The prompt scripts the
/// mock: a short answer, as code completions are, and its pacing.
pub fn rails_completion(endpoint: &str, stream: bool, directives: &str) -> Value {
    json!({
        "current_file": {
            "file_name": "app/calc.py",
            "content_above_cursor": format!("# {directives}\nimport math\n\ndef area(r):\n    "),
            "content_below_cursor": "\n\nprint(area(2))\n",
        },
        "intent": "completion",
        "stream": stream,
        "project_path": "bench/project",
        "project_id": 1,
        "model_provider": "litellm",
        "prompt_version": 2,
        "prompt": null,
        "model_endpoint": endpoint,
        "model_name": "codestral",
        "model_api_key": "sk-bench",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
    })
}

/// A Duo Chat question as Rails sends it for a self-hosted model; the mock
/// answers with a one-step ReAct final answer of 24 words, streamed word by word.
pub fn rails_chat(endpoint: &str) -> Value {
    json!({
        "messages": [{
            "role": "user",
            "content": "How do I require approvals? MOCK_REPLY: Thought: I know this.\\nFinal Answer: \
                Open the project settings, choose merge requests, add an approval rule for the default \
                branch, set two required approvals and save the rule.",
            "context": null, "current_file": null, "additional_context": []
        }],
        "model_metadata": {"provider": "openai", "name": "mistral", "endpoint": endpoint,
                           "api_key": "sk-bench", "identifier": "custom_openai/Mistral-7B"},
        "unavailable_resources": ["Pipelines", "Vulnerabilities"],
    })
}

/// The gateway route of the code completion bodies above.
const COMPLETIONS: &str = "/v2/code/completions";
/// The gateway route of [`rails_chat`].
const CHAT: &str = "/v2/chat/agent";

fn gateway_probe(http: &str, token: &str, path: &str, body: &Value) -> Probe {
    let mut headers: Vec<(String, String)> = rails_headers(token)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    Probe {
        uri: format!("http://{http}{path}").parse().unwrap(),
        headers,
        body: Bytes::from(body.to_string()),
    }
}

/// Sends `body` through the gateway to a recording mock and returns the
/// model-server request the gateway made, replayable against `target`.
async fn captured_direct(
    http: &str,
    token: &str,
    path: &str,
    body_for: impl Fn(&str) -> Value,
    target: &MockModel,
) -> Probe {
    let recorder = MockModel::start(&[]);
    let probe = gateway_probe(http, token, path, &body_for(&recorder.endpoint()));
    let resp = http1_client(1)
        .request(probe.request())
        .await
        .expect("capture request");
    assert_eq!(resp.status(), 200, "capture through the gateway failed");
    let _ = resp.into_body().collect().await;
    let reqs = recorder.requests().await;
    let sent = reqs.last().expect("the gateway called the model");
    let path = sent["path"].as_str().unwrap_or("/v1/chat/completions");
    Probe {
        uri: format!("http://{}{path}", target.addr).parse().unwrap(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), "Bearer sk-bench".into()),
        ],
        body: Bytes::from(sent["body"].to_string()),
    }
}

fn row(name: &str, conc: usize, d: &Stats, g: &Stats, streaming: bool) {
    let (dp50, dp99, gp50, gp99) = if streaming {
        (
            d.first_p50_ms,
            d.first_p99_ms,
            g.first_p50_ms,
            g.first_p99_ms,
        )
    } else {
        (d.p50_ms, d.p99_ms, g.p50_ms, g.p99_ms)
    };
    println!(
        "| {name} | {conc} | {:.0} | {:.0} | {dp50:.3} / {dp99:.3} | {gp50:.3} / {gp99:.3} | **{:+.3}** | **{:+.3}** | {} |",
        d.rps,
        g.rps,
        gp50 - dp50,
        gp99 - dp99,
        d.errors + g.errors
    );
}

/// The model-overhead sections of BENCHMARKS.md.
pub async fn run(http: &str, token: &str, run_for: Duration, section: fn(&str) -> bool) {
    if !["model", "chat", "throughput", "paced"]
        .iter()
        .any(|s| section(s))
    {
        return;
    }
    let mock = MockModel::start(&["--record", "0"]);
    // Non-streaming: a one-line answer, no model delay (the mock answers at once).
    let plain =
        |endpoint: &str| rails_completion(endpoint, false, "MOCK_REPLY: return math.pi * r * r");
    // Streaming: 16 tokens, no pacing: every delta is forwarded as it comes.
    let streamed = |endpoint: &str| rails_completion(endpoint, true, "MOCK_TOKENS: 16");
    let direct_plain = captured_direct(http, token, COMPLETIONS, plain, &mock).await;
    let direct_stream = captured_direct(http, token, COMPLETIONS, streamed, &mock).await;
    let gw_plain = gateway_probe(http, token, COMPLETIONS, &plain(&mock.endpoint()));
    let gw_stream = gateway_probe(http, token, COMPLETIONS, &streamed(&mock.endpoint()));

    if section("model") {
        added_latency(
            &direct_plain,
            &direct_stream,
            &gw_plain,
            &gw_stream,
            run_for,
        )
        .await;
    }
    if section("chat") {
        chat(http, token, &mock, run_for).await;
    }
    if section("paced") {
        paced(http, token, &mock, run_for).await;
    }
    if section("throughput") {
        throughput(&direct_plain, &gw_plain).await;
    }
}

/// A streaming Duo Chat answer (`/v2/chat/agent`, NDJSON) vs the same
/// streamed chat completion straight from the mock.
async fn chat(http: &str, token: &str, mock: &MockModel, run_for: Duration) {
    println!("\n### Added latency: a streaming Duo Chat answer\n");
    println!(
        "`POST /v2/chat/agent` as Rails sends it (self-hosted Mistral), the mock streaming a 24-word ReAct final answer at once; \
         direct = the streamed `/v1/chat/completions` request the gateway makes, replayed. First = first answer bytes \
         (gateway: the first `final_answer_delta` line); whole = the complete stream (gateway: through the `usage` line). \
         {} s per cell.\n",
        run_for.as_secs()
    );
    println!(
        "| concurrency | direct req/s | gateway req/s | direct first p50 / p99 ms | gateway first p50 / p99 ms | added first p50 / p99 ms | direct whole p50 / p99 ms | gateway whole p50 / p99 ms | added whole p50 / p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let direct = captured_direct(http, token, CHAT, rails_chat, mock).await;
    let gw = gateway_probe(http, token, CHAT, &rails_chat(&mock.endpoint()));
    for conc in [1, 64, 1024] {
        let d = load(&direct, conc, run_for).await;
        let g = load(&gw, conc, run_for).await;
        println!(
            "| {conc} | {:.0} | {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | **{:+.3} / {:+.3}** | {:.3} / {:.3} | {:.3} / {:.3} | **{:+.3} / {:+.3}** | {} |",
            d.rps,
            g.rps,
            d.first_p50_ms,
            d.first_p99_ms,
            g.first_p50_ms,
            g.first_p99_ms,
            g.first_p50_ms - d.first_p50_ms,
            g.first_p99_ms - d.first_p99_ms,
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms,
            d.errors + g.errors
        );
    }
}

/// Added latency with a model that takes time to answer, as real ones do:
/// at concurrency 64 the machine is then not saturated by the load itself,
/// so the figure is the gateway's own cost rather than CPU queueing.
async fn paced(http: &str, token: &str, mock: &MockModel, run_for: Duration) {
    println!("\n### Added latency with a model that takes 20 ms to answer\n");
    println!(
        "Same as above, the mock holding each answer 20 ms (`MOCK_LATENCY_MS: 20`; a self-hosted code model takes 50-500 ms), \
         {} s per cell. At concurrency 64 that is ~3,000 req/s, below what the 2 CPUs can carry, so the added figure is the \
         gateway's own cost, not the load generator's queue.\n",
        run_for.as_secs()
    );
    println!(
        "| request | concurrency | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let plain = |endpoint: &str| {
        rails_completion(
            endpoint,
            false,
            "MOCK_REPLY: return math.pi * r * r\n# MOCK_LATENCY_MS: 20",
        )
    };
    let direct = captured_direct(http, token, COMPLETIONS, plain, mock).await;
    let gw = gateway_probe(http, token, COMPLETIONS, &plain(&mock.endpoint()));
    for conc in [1, 64, 256] {
        let d = load(&direct, conc, run_for).await;
        let g = load(&gw, conc, run_for).await;
        row(
            "POST /v2/code/completions (JSON), 20 ms model",
            conc,
            &d,
            &g,
            false,
        );
    }
}

async fn added_latency(
    direct_plain: &Probe,
    direct_stream: &Probe,
    gw_plain: &Probe,
    gw_stream: &Probe,
    run_for: Duration,
) {
    println!("\n### Added latency: straight to the mock model vs through the gateway\n");
    println!(
        "Same request, same mock (`aigw-mock-model --record 0`, answers at once), {} s per cell, HTTP/1.1 keep-alive clients. \
         Non-streaming: whole response. Streaming: time to the first delta (the whole 16-token stream is in the next table). \
         Added = gateway minus direct, at the same percentile.\n",
        run_for.as_secs()
    );
    println!(
        "| request | concurrency | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut stream_totals = Vec::new();
    for conc in [1, 64, 1024] {
        let d = load(direct_plain, conc, run_for).await;
        let g = load(gw_plain, conc, run_for).await;
        row("POST /v2/code/completions (JSON)", conc, &d, &g, false);
    }
    for conc in [1, 64, 1024] {
        let d = load(direct_stream, conc, run_for).await;
        let g = load(gw_stream, conc, run_for).await;
        row(
            "POST /v2/code/completions, `stream: true`",
            conc,
            &d,
            &g,
            true,
        );
        stream_totals.push((conc, d, g));
    }
    println!("\nStreaming, whole 16-token stream:\n");
    println!(
        "| concurrency | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms |\n|---|---|---|---|---|"
    );
    for (conc, d, g) in &stream_totals {
        println!(
            "| {conc} | {:.3} / {:.3} | {:.3} / {:.3} | {:+.3} | {:+.3} |",
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms
        );
    }
}

/// Max throughput while the added p99 stays within 5 ms.
async fn throughput(direct_plain: &Probe, gw_plain: &Probe) {
    println!("\n### Throughput at added p99 <= 5 ms (non-streaming completion)\n");
    println!(
        "Concurrency stepped up; each step {} s direct, then {} s through the gateway.\n",
        3, 3
    );
    println!(
        "| concurrency | direct req/s | gateway req/s | gateway p99 ms | added p99 ms | within 5 ms |\n|---|---|---|---|---|---|"
    );
    let step = Duration::from_secs(3);
    let mut best: Option<(usize, f64)> = None;
    let mut peak = 0.0f64;
    for conc in [1, 4, 16, 32, 64, 128, 256, 512] {
        let d = load(direct_plain, conc, step).await;
        let g = load(gw_plain, conc, step).await;
        let added = g.p99_ms - d.p99_ms;
        let ok = added <= 5.0 && g.errors == 0;
        println!(
            "| {conc} | {:.0} | {:.0} | {:.3} | {added:+.3} | {} |",
            d.rps,
            g.rps,
            g.p99_ms,
            if ok { "yes" } else { "no" }
        );
        peak = peak.max(g.rps);
        if ok && best.is_none_or(|(_, r)| g.rps > r) {
            best = Some((conc, g.rps));
        }
    }
    match best {
        Some((conc, rps)) => println!(
            "\n**Max throughput at added p99 <= 5 ms: {rps:.0} req/s** (concurrency {conc}); peak seen {peak:.0} req/s."
        ),
        None => {
            println!("\n**No step kept the added p99 within 5 ms**; peak seen {peak:.0} req/s.")
        }
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// What [`open_streams`] saw (RSS figures in KiB).
pub struct OpenStreams {
    pub open: usize,
    /// VmRSS one second after the last stream opened.
    pub rss: u64,
    /// VmRSS 16 s after the last stream opened, all streams still open.
    pub steady: u64,
    /// VmHWM: the peak.
    pub hwm: u64,
    /// Seconds until every stream had its first delta.
    pub setup: f64,
}

/// Opens `n` streaming completions through the gateway (the mock paces them
/// out over minutes), waits until each has its first delta, then reads the
/// gateway's RSS. `h2_conns`: `None` = one HTTP/1.1 connection per stream;
/// `Some(c)` = multiplexed over `c` HTTP/2 connections.
pub async fn open_streams(
    http: &str,
    token: &str,
    gateway_pid: u32,
    n: usize,
    h2_conns: Option<usize>,
) -> Option<OpenStreams> {
    let mock = MockModel::start(&["--record", "0"]);
    let body = rails_completion(
        &mock.endpoint(),
        true,
        "MOCK_TOKENS: 200\n# MOCK_INTER_TOKEN_MS: 2000",
    );
    let probe = Arc::new(gateway_probe(http, token, COMPLETIONS, &body));
    let clients: Vec<Client<HttpConnector, Full<Bytes>>> = match h2_conns {
        None => vec![http1_client(0)],
        Some(c) => (0..c)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build(HttpConnector::new())
            })
            .collect(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let stop = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let (probe, tx, stop) = (probe.clone(), tx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let open = async {
                let resp = client.request(probe.request()).await.ok()?;
                if resp.status() != 200 {
                    return None;
                }
                let mut body = resp.into_body();
                loop {
                    let frame = body.frame().await?.ok()?;
                    if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                        return Some(body);
                    }
                }
            };
            match open.await {
                Some(body) => {
                    let _ = tx.send(true);
                    stop.notified().await;
                    drop(body);
                }
                None => {
                    let _ = tx.send(false);
                }
            }
        }));
        // Pace connection setup below the accept backlog.
        if h2_conns.is_none() && i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(tx);
    let (mut open, mut failed) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while open + failed < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(true)) => open += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let setup = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(gateway_pid, "VmRSS:");
    // Steady state: the allocator hands memory freed after the ramp-up back
    // to the OS after its purge delay (mimalloc: up to 10 s for arenas).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let steady = rss_kib(gateway_pid, "VmRSS:");
    let hwm = rss_kib(gateway_pid, "VmHWM:");
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    if failed > 0 {
        println!("({failed} of {n} streams failed to open)");
    }
    Some(OpenStreams {
        open,
        rss,
        steady,
        hwm,
        setup,
    })
}

/// The 10,000-streams section of BENCHMARKS.md.
pub async fn streams_section(http: &str, token: &str, gateway_pid: u32) {
    println!("\n### Peak RSS with 10,000 concurrent open streams\n");
    let limit = nofile_limit();
    // Through the gateway an HTTP/1.1 stream costs it two sockets (client side
    // and model side); keep 100 descriptors for everything else.
    // `AIGW_BENCH_STREAMS=n`: fewer streams, for profiling runs.
    let target: usize = std::env::var("AIGW_BENCH_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let h1_n = target.min((limit.saturating_sub(100) / 2) as usize);
    println!(
        "Streaming completions held open (mock: one token every 2 s), each counted once its first delta arrived; \
         RSS read from `/proc/<gateway>/status` one second later and again 15 s after that \
         (all streams still open: the steady state, once the allocator has returned what the ramp-up freed). RLIMIT_NOFILE here: {limit} (the hard limit; this container \
         cannot raise it), so HTTP/1.1 clients (2 sockets per stream in the gateway) fit {h1_n} streams; the 10,000 row \
         multiplexes the clients over HTTP/2 (100 connections x 100 streams) and runs first, the model side stays one HTTP/1.1 \
         connection per stream.\n"
    );
    println!(
        "| clients | streams open | gateway VmRSS, +1 s | gateway VmRSS, +16 s (steady) | gateway VmHWM (peak) | steady RSS per stream | time to open all |\n|---|---|---|---|---|---|---|"
    );
    let idle = rss_kib(gateway_pid, "VmRSS:");
    // The HTTP/2 row (the one that fits 10,000 here) runs first, so its
    // figure is not inflated by what the allocator kept from the other.
    for (label, n, h2) in [
        ("HTTP/2, 100 connections", target, Some(100)),
        ("HTTP/1.1, 1 connection per stream", h1_n, None),
    ] {
        // `AIGW_BENCH_H1=0`: the HTTP/2 row only (heap profiling).
        if h2.is_none() && std::env::var("AIGW_BENCH_H1").is_ok_and(|v| v == "0") {
            continue;
        }
        if let Some(o) = open_streams(http, token, gateway_pid, n, h2).await {
            println!(
                "| {label} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} s |",
                o.open,
                o.rss as f64 / 1024.0,
                o.steady as f64 / 1024.0,
                o.hwm as f64 / 1024.0,
                o.steady.saturating_sub(idle) as f64 / o.open.max(1) as f64,
                o.setup
            );
        }
        // Let the gateway notice the departures and cancel the model streams.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
