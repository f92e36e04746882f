//! `make demo`: the gateway answering without GitLab and without a GPU.
//!
//! Starts the real gateway and the mock OpenAI-compatible model server on
//! loopback, plays GitLab (a throwaway key published the way GitLab publishes
//! its keys, a token shaped like the one GitLab signs), sends a code
//! completion, a code generation and a Duo Chat question with the bodies and
//! headers GitLab sends for self-hosted models, and prints each question next
//! to its answer.
//!
//! A test target without libtest's harness: `make demo` runs it with
//! `--demo` and it prints; a plain `cargo test` runs it silently as a smoke
//! test, printing only when something fails.
mod common;

use std::{fmt::Write as _, time::Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Where the demo's text goes: the terminal (`--demo`), or a buffer shown
/// only on failure.
struct Out {
    loud: bool,
    buffer: String,
}

impl Out {
    fn line(&mut self, text: impl AsRef<str>) {
        if self.loud {
            println!("{}", text.as_ref());
        } else {
            let _ = writeln!(self.buffer, "{}", text.as_ref());
        }
    }
}

/// The lines of `text` with a gutter, `mark` in front of each.
fn gutter(out: &mut Out, mark: &str, text: &str) {
    for l in text.lines() {
        out.line(format!("   {mark} │ {l}"));
    }
}

/// What a person wrote, without the mock's script lines (a real model needs none).
fn without_script(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("MOCK_REPLY:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A code suggestion as GitLab asks for it: the answer's body, its
/// `choices[0].text` and the time it took, or why there is none.
async fn suggest(
    gw: &Gateway,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<(Value, String, f64), String> {
    let (status, text, ms) = call(gw, token, path, body).await;
    if status != 200 {
        return Err(format!(
            "{path}: HTTP {status}: {text}\ngateway logs:\n{}",
            gw.logs()
        ));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
    let code = v["choices"][0]["text"].as_str().unwrap_or("").to_string();
    if code.is_empty() {
        return Err(format!("{path}: no text in {text}"));
    }
    Ok((v, code, ms))
}

/// Posts `body` to `path` as GitLab does; the answer's status, body and time.
async fn call(gw: &Gateway, token: &str, path: &str, body: &Value) -> (u16, String, f64) {
    let started = Instant::now();
    let resp = with_headers(client().post(gw.http_url(path)), &rails_headers(token))
        .header(
            "x-request-id",
            format!("demo-{}", uuid::Uuid::new_v4().simple()),
        )
        .header("x-gitlab-rails-send-start", format!("{}", now()))
        .json(body)
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, text, started.elapsed().as_secs_f64() * 1e3)
        }
        Err(e) => (0, e.to_string(), 0.0),
    }
}

/// The answer text of a Duo Chat NDJSON stream, and any error event.
fn chat_answer(ndjson: &str) -> (String, Option<String>) {
    let mut answer = String::new();
    let mut error = None;
    for line in ndjson.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match event["type"].as_str() {
            Some("final_answer_delta") | Some("unknown") => {
                answer.push_str(event["data"]["text"].as_str().unwrap_or(""));
            }
            Some("error") => error = Some(event["data"].to_string()),
            _ => {}
        }
    }
    (answer, error)
}

async fn demo(out: &mut Out) -> Result<(), String> {
    let key = gitlab_key();
    let gitlab = FakeGitLab::start(vec![key.jwk()]).await;
    let mock = MockModel::start(&["--ttft-ms", "20", "--inter-token-ms", "5"]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let logs = |gw: &Gateway| format!("gateway logs:\n{}", gw.logs());

    out.line("aigw demo: GitLab → aigw → a model server, all on this machine");
    out.line("");
    out.line(format!(
        "  gateway       aigw itself, http://{} (self-hosted models enabled)",
        gw.addrs.http
    ));
    out.line(format!(
        "  model server  a mock with the OpenAI API that vLLM and Ollama speak, {}",
        mock.endpoint()
    ));
    out.line("                (it answers scripted text: no GPU, no model download)");
    out.line(format!(
        "  GitLab        played by this program at {}: it signs a token as your",
        gitlab.url
    ));
    out.line("                GitLab instance would and sends the requests GitLab sends");
    out.line("");
    out.line("Each request also carries a MOCK_REPLY line telling the mock what to answer;");
    out.line("it is left out below, a real model writes the answer itself.");

    // 1. Code completion: what GitLab forwards for an IDE as the user types.
    let above = "def fib(n):\n    ";
    let below = "\n\nprint(fib(10))\n";
    let completion = json!({
        "current_file": {
            "file_name": "app/fib.py",
            "content_above_cursor": format!("# MOCK_REPLY: if n < 2:\\n        return n\\n    return fib(n - 1) + fib(n - 2)\n{above}"),
            "content_below_cursor": below,
        },
        "intent": "completion",
        "stream": false,
        "project_path": "demo/project",
        "project_id": 1,
        "model_provider": "litellm",
        "prompt_version": 2,
        "prompt": null,
        "model_endpoint": mock.endpoint(),
        "model_name": "codestral",
        "model_api_key": "sk-demo-not-a-secret",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
    });
    out.line("");
    out.line("1. Code completion (Code Suggestions: the editor asks for the code at the cursor)");
    out.line("   POST /v2/code/completions, file app/fib.py, cursor at ▮:");
    gutter(out, " ", &format!("{above}▮{below}"));
    let (v, text, ms) = suggest(&gw, &token, "/v2/code/completions", &completion).await?;
    out.line(format!(
        "   answer in {ms:.0} ms from model {}, inserted at the cursor (+):",
        v["model"]["name"].as_str().unwrap_or("?")
    ));
    gutter(out, " ", above.trim_end());
    let indent = above.rsplit('\n').next().unwrap_or("");
    gutter(out, "+", &format!("{indent}{text}"));
    gutter(
        out,
        " ",
        below.strip_prefix('\n').unwrap_or(below).trim_end(),
    );

    // 2. Code generation: a comment describing code, the model writes it.
    let instruction = "# write a binary search that returns the index or -1\n";
    let generation = json!({
        "current_file": {
            "file_name": "search.py",
            "content_above_cursor": format!("{instruction}# MOCK_REPLY: def binary_search(items, x):\\n    lo, hi = 0, len(items) - 1\\n    while lo <= hi:\\n        mid = (lo + hi) // 2\\n        if items[mid] == x:\\n            return mid\\n        if items[mid] < x:\\n            lo = mid + 1\\n        else:\\n            hi = mid - 1\\n    return -1\n"),
            "content_below_cursor": "",
        },
        "model_provider": "litellm",
        "prompt": "write a binary search that returns the index or -1",
        "model_endpoint": mock.endpoint(),
        "model_api_key": "sk-demo-not-a-secret",
        "model_name": "codestral",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
        "prompt_version": 2,
        "prompt_id": "code_suggestions/generations",
    });
    out.line("");
    out.line("2. Code generation (Code Suggestions: a comment says what to write)");
    out.line("   POST /v2/code/generations, file search.py:");
    gutter(out, " ", instruction.trim_end());
    let (_, code, ms) = suggest(&gw, &token, "/v2/code/generations", &generation).await?;
    out.line(format!("   answer in {ms:.0} ms, the generated code (+):"));
    gutter(out, "+", code.trim_end());

    // 3. Duo Chat: one question, answered as a stream of events.
    let question = "How do I rebase my branch onto main?";
    let chat = json!({
        "messages": [
            {"role": "user",
             "content": format!("{question}\nMOCK_REPLY: Thought: A git question I can answer directly.\\nFinal Answer: Fetch the latest main and replay your commits on top of it:\\n\\n    git fetch origin\\n    git rebase origin/main\\n\\nFix any conflicts, `git add` the files, `git rebase --continue`, then `git push --force-with-lease`."),
             "context": null, "current_file": null, "additional_context": [], "agent_scratchpad": null},
        ],
        "model_metadata": {
            "provider": "openai",
            "name": "mistral",
            "endpoint": mock.endpoint(),
            "api_key": "sk-demo-not-a-secret",
            "identifier": "custom_openai/Mistral-7B-Instruct-v0.3",
        },
        "unavailable_resources": ["Pipelines", "Vulnerabilities"],
    });
    out.line("");
    out.line("3. Duo Chat (GitLab's AI chat, in the web UI and the IDEs)");
    out.line("   POST /v2/chat/agent, the user asks:");
    gutter(out, " ", &without_script(question));
    let started = Instant::now();
    let resp = with_headers(
        client().post(gw.http_url("/v2/chat/agent")),
        &rails_headers(&token),
    )
    .json(&chat)
    .send()
    .await
    .map_err(|e| format!("chat: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("chat: HTTP {status}: {body}\n{}", logs(&gw)));
    }
    let mut ndjson = String::new();
    let mut first = None;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("chat stream: {e}"))?;
        first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
        ndjson.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (answer, error) = chat_answer(&ndjson);
    if let Some(e) = error {
        return Err(format!("chat: error event {e}\n{}", logs(&gw)));
    }
    if answer.is_empty() {
        return Err(format!("chat: no answer in {ndjson}"));
    }
    out.line(format!(
        "   answer streamed, first words after {:.0} ms, all after {:.0} ms:",
        first.unwrap_or(0.0),
        started.elapsed().as_secs_f64() * 1e3
    ));
    gutter(out, " ", &answer);

    out.line("");
    out.line(format!(
        "The mock model server answered {} requests. Next: `make run`, then the README's",
        mock.requests().await.len()
    ));
    out.line("\"After make run\" to send the same requests to your own model server.");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loud = args.iter().any(|a| a == "--demo");
    // `cargo test <filter>` passes the filter to every test binary.
    let filtered_out = args
        .iter()
        .any(|a| !a.starts_with('-') && !"demo".contains(a.as_str()));
    if filtered_out || args.iter().any(|a| a == "--list") {
        return std::process::ExitCode::SUCCESS;
    }
    let mut out = Out {
        loud,
        buffer: String::new(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(demo(&mut out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", out.buffer);
            eprintln!("\ndemo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
