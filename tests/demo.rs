//! `make demo`: the "it works" moment without GitLab and without a GPU.
//!
//! Starts the real gateway and the mock OpenAI-compatible model server on
//! loopback, plays GitLab (a throwaway RSA key published as its JWKS, a
//! Rails-like self-issued token), sends a code completion, a code generation
//! and a Duo Chat question with the bodies and headers GitLab Rails sends for
//! self-hosted models, and prints the answers. Ignored by `cargo test`; run
//! with `cargo test --test demo -- --ignored --nocapture`.
mod common;

use std::time::Instant;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// One call as GitLab makes it; prints the answer, or why there is none.
async fn call(gw: &Gateway, token: &str, title: &str, path: &str, body: &Value) -> Option<String> {
    println!("\n── {title}: POST {path}");
    let started = Instant::now();
    let resp = match with_headers(client().post(gw.http_url(path)), &rails_headers(token))
        .header(
            "x-request-id",
            format!("demo-{}", uuid::Uuid::new_v4().simple()),
        )
        .header("x-gitlab-rails-send-start", format!("{}", now()))
        .json(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            println!("   request failed: {e}");
            return None;
        }
    };
    let status = resp.status();
    if status == 404 {
        println!("   not available yet in this build (404): skipped");
        return Some(String::new());
    }
    let text = resp.text().await.unwrap_or_default();
    println!(
        "   HTTP {} in {:.1} ms",
        status.as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if !status.is_success() {
        println!("   error: {text}");
        return None;
    }
    Some(text)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   │ {l}\n")).collect()
}

#[tokio::test]
#[ignore = "the demo: `make demo`"]
async fn demo() {
    println!("aigw demo: gateway + mock model server on loopback, GitLab played by this program\n");
    let key = gitlab_key();
    let gitlab = FakeGitLab::start(vec![key.jwk()]).await;
    println!(
        "fake GitLab (OIDC discovery + JWKS, throwaway key): {}",
        gitlab.url
    );
    let mock = MockModel::start(&["--ttft-ms", "20", "--inter-token-ms", "5"]);
    println!("mock model server (OpenAI-compatible): {}", mock.endpoint());
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    println!("gateway: http://{}  (pid {})", gw.addrs.http, gw.pid());
    println!(
        "(the mock model answers what a `MOCK_REPLY:` comment in the file scripts, else it echoes the question)"
    );
    println!(
        "token: Rails-like self-issued JWT, kid {}, scopes {}",
        key.kid,
        rails_claims()["scopes"]
    );

    let mut failures = 0;

    // 1. Code completion (client spec §1.1): Workhorse posts this for the IDE.
    let completion = json!({
        "current_file": {
            "file_name": "app/fib.py",
            "content_above_cursor": "# MOCK_REPLY: if n < 2:\\n        return n\\n    return fib(n - 1) + fib(n - 2)\ndef fib(n):\n    ",
            "content_below_cursor": "\n\nprint(fib(10))\n",
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
    match call(
        &gw,
        &token,
        "code completion",
        "/v2/code/completions",
        &completion,
    )
    .await
    {
        Some(body) => match serde_json::from_str::<Value>(&body) {
            Ok(v) => {
                let text = v["choices"][0]["text"].as_str().unwrap_or("");
                println!(
                    "   model {} ({}), lang {}:",
                    v["model"]["name"], v["model"]["engine"], v["model"]["lang"]
                );
                print!("{}", indent(text));
                if text.is_empty() {
                    failures += 1;
                }
            }
            Err(_) => {
                println!("   unexpected body: {body}");
                failures += 1;
            }
        },
        None => failures += 1,
    }

    // 2. Code generation (client spec §1.2).
    let generation = json!({
        "current_file": {
            "file_name": "search.py",
            "content_above_cursor": "# write a binary search\n# MOCK_REPLY: def binary_search(items, x):\\n    lo, hi = 0, len(items) - 1\\n    while lo <= hi:\\n        mid = (lo + hi) // 2\\n        if items[mid] == x:\\n            return mid\\n        if items[mid] < x:\\n            lo = mid + 1\\n        else:\\n            hi = mid - 1\\n    return -1\n",
            "content_below_cursor": "",
        },
        "model_provider": "litellm",
        "prompt": "write a binary search",
        "model_endpoint": mock.endpoint(),
        "model_api_key": "sk-demo-not-a-secret",
        "model_name": "codestral",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
        "prompt_version": 2,
        "prompt_id": "code_suggestions/generations",
    });
    match call(
        &gw,
        &token,
        "code generation",
        "/v2/code/generations",
        &generation,
    )
    .await
    {
        Some(body) if body.is_empty() => {}
        Some(body) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match v["choices"][0]["text"].as_str() {
                Some(text) => print!("{}", indent(text)),
                None => print!("{}", indent(&body)),
            }
        }
        None => failures += 1,
    }

    // 3. Duo Chat (client spec §1.4): an NDJSON event stream.
    let chat = json!({
        "messages": [
            {"role": "user", "content": "How do I rebase my branch onto main?",
             "context": null, "current_file": null, "additional_context": []},
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
    println!("\n── Duo Chat: POST /v2/chat/agent");
    let started = Instant::now();
    let resp = with_headers(
        client().post(gw.http_url("/v2/chat/agent")),
        &rails_headers(&token),
    )
    .json(&chat)
    .send()
    .await;
    match resp {
        Ok(r) if r.status() == 404 => println!("   not available yet in this build (404): skipped"),
        Ok(r) if r.status().is_success() => {
            println!("   HTTP {} (streaming NDJSON events)", r.status().as_u16());
            let mut answer = String::new();
            let mut pending = String::new();
            let mut body = r.bytes_stream();
            let mut first: Option<f64> = None;
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(nl) = pending.find('\n') {
                    let line: String = pending.drain(..=nl).collect();
                    let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
                        continue;
                    };
                    match event["type"].as_str() {
                        Some("final_answer_delta") | Some("unknown") => {
                            answer.push_str(event["data"]["text"].as_str().unwrap_or(""));
                        }
                        Some("action") => println!("   tool call: {}", event["data"]),
                        Some("error") => {
                            println!("   error event: {}", event["data"]);
                            failures += 1;
                        }
                        _ => {}
                    }
                }
            }
            println!(
                "   first event after {:.1} ms, done after {:.1} ms:",
                first.unwrap_or(0.0),
                started.elapsed().as_secs_f64() * 1e3
            );
            print!("{}", indent(&answer));
        }
        Ok(r) => {
            println!(
                "   HTTP {}: {}",
                r.status().as_u16(),
                r.text().await.unwrap_or_default()
            );
            failures += 1;
        }
        Err(e) => {
            println!("   request failed: {e}");
            failures += 1;
        }
    }

    println!(
        "\nthe mock model server answered {} request(s).",
        mock.requests().await.len()
    );
    assert_eq!(failures, 0, "gateway logs:\n{}", gw.logs());
    println!("demo: OK");
}
