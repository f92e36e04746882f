//! Black-box tests of `aigw-mock-model`, the OpenAI-compatible model server
//! that gateway tests and `make bench` run behind the gateway: reply
//! scripting, wire formats, knobs, faults and the observation endpoints.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

struct Mock {
    child: Child,
    base: String,
}

impl Mock {
    fn start(args: &[&str]) -> Mock {
        Mock::start_env(args, &[])
    }

    fn start_env(args: &[&str], env: &[(&str, &str)]) -> Mock {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw-mock-model"));
        cmd.env_clear()
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn aigw-mock-model");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).expect("announce line is JSON");
        let addr = v["listening"].as_str().expect("listening address");
        Mock {
            base: format!("http://{addr}"),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stats(&self) -> Value {
        client()
            .get(self.url("/_mock/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/_mock/stats` until `check` holds (hyper notices a hang-up
    /// asynchronously).
    async fn wait_stats(&self, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.stats().await;
            if check(&s) || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn chat(user: &str) -> Value {
    json!({"model": "m1", "messages": [{"role": "user", "content": user}]})
}

fn chat_stream(user: &str) -> Value {
    json!({
        "model": "m1",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": user}],
    })
}

async fn post(m: &Mock, path: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().post(m.url(path)).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// The `data:` payloads of a complete SSE body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_string()
        })
        .collect()
}

/// Parsed chunks (everything before `[DONE]`), asserting `[DONE]` ends it.
fn chunks(body: &str) -> Vec<Value> {
    let ev = events(body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{body}");
    ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn content_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn non_streaming_chat_reply_and_usage() {
    let m = Mock::start(&[]);
    let body = json!({"model": "m1", "messages": [
        {"role": "system", "content": "You are helpful"},
        {"role": "user", "content": [{"type": "text", "text": "hello world from the test"}]},
    ]});
    for path in ["/v1/chat/completions", "/chat/completions"] {
        let r = post(&m, path, &body, &[]).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m1");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        let choice = &v["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(
            choice["message"]["content"],
            "mock reply to: hello world from the test"
        );
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16})
        );
    }
    // The echo keeps the first 40 characters.
    let long = "a".repeat(30) + " " + &"é".repeat(30);
    let v: Value = post(&m, "/v1/chat/completions", &chat(&long), &[])
        .await
        .json()
        .await
        .unwrap();
    let expected = format!(
        "mock reply to: {}",
        long.chars().take(40).collect::<String>()
    );
    assert_eq!(v["choices"][0]["message"]["content"], expected);
}

#[tokio::test]
async fn streaming_chat_chunks_usage_and_done() {
    let m = Mock::start(&[]);
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat_stream("MOCK_REPLY: one two\\n  three"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    let c = chunks(&body);
    // 3 tokens, the finish chunk, the usage chunk.
    assert_eq!(c.len(), 5, "{body}");
    let id = c[0]["id"].as_str().unwrap();
    for chunk in &c {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "m1");
    }
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    let deltas: Vec<&str> = c[..3]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["one ", "two\n  ", "three"]);
    assert!(
        c[..3]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(c[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(c[3]["choices"][0]["delta"], json!({}));
    assert_eq!(c[4]["choices"], json!([]));
    // The prompt's `\n` is a literal backslash-n there: 4 words.
    assert_eq!(
        c[4]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );

    // Without include_usage: no usage chunk.
    let mut req = chat_stream("hi");
    req["stream_options"] = json!({"include_usage": false});
    let body = post(&m, "/v1/chat/completions", &req, &[])
        .await
        .text()
        .await
        .unwrap();
    let c = chunks(&body);
    assert!(c.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(content_of(&c), "mock reply to: hi");
}

#[tokio::test]
async fn reply_directive_and_text_completions() {
    let m = Mock::start(&[]);
    let v: Value = post(
        &m,
        "/v1/chat/completions",
        &chat("Write it.\nMOCK_REPLY: line one\\nline\\ttwo\nignored"),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "line one\nline\ttwo");

    // Legacy completions: the directive may sit in a code comment; the
    // suffix counts as prompt.
    let req = json!({
        "model": "codestral",
        "prompt": "def answer():\n    # MOCK_REPLY: return 42\n",
        "suffix": "\nprint(answer())",
    });
    for path in ["/v1/completions", "/completions"] {
        let v: Value = post(&m, path, &req, &[]).await.json().await.unwrap();
        assert_eq!(v["object"], "text_completion");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["choices"][0]["text"], "return 42");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 6 + 1);
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let body = post(&m, "/v1/completions", &sreq, &[])
        .await
        .text()
        .await
        .unwrap();
    let c = chunks(&body);
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "return 42");
    assert!(c.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(c[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(c[3]["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn stop_and_max_tokens() {
    let m = Mock::start(&[]);
    let mut req = chat("MOCK_REPLY: one two three four five");
    req["stop"] = json!(["four", "zzz"]);
    let v: Value = post(&m, "/v1/chat/completions", &req, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "one two three ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let mut req = chat("MOCK_REPLY: one two three four five");
    req["stop"] = json!("three");
    req["max_tokens"] = json!(1);
    let v: Value = post(&m, "/v1/chat/completions", &req, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "one");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 1);

    // max_tokens equal to the reply length is not a cut.
    let mut req = chat("MOCK_REPLY: one two");
    req["max_tokens"] = json!(2);
    let v: Value = post(&m, "/v1/chat/completions", &req, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let mut req = chat_stream("MOCK_REPLY: one two three four five");
    req["max_tokens"] = json!(2);
    let c = chunks(
        &post(&m, "/v1/chat/completions", &req, &[])
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(content_of(&c), "one two");
    assert_eq!(c[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(c[3]["usage"]["completion_tokens"], 2);

    // Legacy completions too, with forced tokens.
    let req = json!({"prompt": "x", "max_tokens": 3, "stop": ["tok2"]});
    let v: Value = post(&m, "/v1/completions", &req, &[("x-mock-tokens", "10")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

fn tool_request(user: &str, stream: bool) -> Value {
    json!({
        "model": "m1",
        "stream": stream,
        "messages": [{"role": "user", "content": user}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
    })
}

#[tokio::test]
async fn tool_calls_non_streaming() {
    let m = Mock::start(&[]);
    let args = r#"{"city": "Zürich", "unit": "C"}"#;
    let user = format!("Weather?\nMOCK_TOOL: get_weather {args}\nMOCK_TOOL: get_time");
    let v: Value = post(&m, "/v1/chat/completions", &tool_request(&user, false), &[])
        .await
        .json()
        .await
        .unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], args);
    assert_eq!(calls[1]["function"]["arguments"], "{}");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    // Without tools, or once a tool result follows, the directive is text.
    let mut no_tools = tool_request(&user, false);
    no_tools.as_object_mut().unwrap().remove("tools");
    let v: Value = post(&m, "/v1/chat/completions", &no_tools, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let mut answered = tool_request(
        &format!("MOCK_TOOL: get_weather {args}\nMOCK_REPLY: It is sunny."),
        false,
    );
    answered["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": calls}),
        json!({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}),
    ]);
    let v: Value = post(&m, "/v1/chat/completions", &answered, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "It is sunny.");
}

#[tokio::test]
async fn tool_calls_streaming() {
    let m = Mock::start(&[]);
    let args = r#"{"city": "Paris", "days": [1, 2, 3]}"#;
    let user = format!("MOCK_TOOL: get_weather {args}");
    let body = post(&m, "/v1/chat/completions", &tool_request(&user, true), &[])
        .await
        .text()
        .await
        .unwrap();
    let c = chunks(&body);
    let first = &c[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    let call = &first["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // Arguments arrive in several pieces that add up.
    let pieces: Vec<&str> = c[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(pieces.len() > 2, "{body}");
    assert_eq!(pieces.concat(), args);
    assert!(c[1..].iter().all(|c| {
        c["choices"][0]["delta"]["tool_calls"][0]
            .get("id")
            .is_none()
    }));
    let last = c.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn status_faults() {
    let m = Mock::start(&[]);
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat("hi"),
        &[("x-mock-fault", "500")],
    )
    .await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "mock failure", "type": "server_error"}})
    );

    let r = post(
        &m,
        "/v1/completions",
        &json!({"prompt": "p"}),
        &[("x-mock-fault", "429")],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());

    let r = post(
        &m,
        "/v1/chat/completions",
        &chat("hi"),
        &[("x-mock-fault", "invalid-json")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let r = post(
        &m,
        "/v1/chat/completions",
        &chat("hi"),
        &[("x-mock-fault", "html")],
    )
    .await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r.text().await.unwrap().contains("<html>"));

    // The same faults from a directive (a gateway forwards no x-mock-*).
    let r = post(&m, "/v1/chat/completions", &chat("MOCK_FAULT: 500"), &[]).await;
    assert_eq!(r.status(), 500);
    let r = post(
        &m,
        "/v1/completions",
        &json!({"prompt": "// MOCK_FAULT: html\n"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 502);
    // The header wins over the directive.
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat("MOCK_FAULT: 500"),
        &[("x-mock-fault", "429")],
    )
    .await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn hang_fault_never_sends_headers() {
    let m = Mock::start(&[]);
    let started = Instant::now();
    let r = client()
        .post(m.url("/v1/chat/completions"))
        .json(&chat("MOCK_FAULT: hang"))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert!(started.elapsed() >= Duration::from_millis(400));
    // It was received and recorded, and the mock still serves others.
    let log: Value = client()
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
    let r = post(&m, "/v1/chat/completions", &chat("hi"), &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn reset_fault_aborts_mid_body() {
    let m = Mock::start(&[]);
    // Streaming: two token chunks arrive, then the body fails.
    let mut r = post(
        &m,
        "/v1/chat/completions",
        &chat_stream("one two three four five"),
        &[("x-mock-fault", "reset"), ("x-mock-inter-token-ms", "20")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut got = String::new();
    let err = loop {
        match r.chunk().await {
            Ok(Some(b)) => got.push_str(std::str::from_utf8(&b).unwrap()),
            Ok(None) => panic!("stream ended cleanly: {got}"),
            Err(e) => break e,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    let ev = events(&got);
    assert_eq!(ev.len(), 2, "{got}");
    assert!(!got.contains("[DONE]") && !got.contains("finish_reason\":\"stop"));

    // Non-streaming: part of the JSON, then the body fails.
    let r = post(&m, "/v1/chat/completions", &chat("MOCK_FAULT: reset"), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());
    assert_eq!(m.stats().await["cancelled_streams"], 0);
}

#[tokio::test]
async fn garbage_sse_fault() {
    let m = Mock::start(&[]);
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat_stream("hi"),
        &[("x-mock-fault", "garbage-sse")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    assert!(!body.contains("[DONE]"));
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(!data.is_empty());
    assert!(
        data.iter()
            .all(|d| serde_json::from_str::<Value>(d).is_err()),
        "{body}"
    );
    assert!(body.lines().any(|l| !l.is_empty() && !l.contains(':')));
}

#[tokio::test]
async fn per_request_timing_headers() {
    let m = Mock::start(&[]);
    // Latency: before the headers.
    let t = Instant::now();
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat("hi"),
        &[("x-mock-latency-ms", "300")],
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status(), 200);

    // TTFT: headers at once, first token later; then the inter-token pace.
    let t = Instant::now();
    let mut r = post(
        &m,
        "/v1/chat/completions",
        &chat_stream("MOCK_REPLY: a b c d"),
        &[("x-mock-ttft-ms", "500"), ("x-mock-inter-token-ms", "100")],
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let first = r.chunk().await.unwrap().unwrap();
    let ttft = t.elapsed();
    assert!(ttft >= Duration::from_millis(500), "{ttft:?}");
    assert!(std::str::from_utf8(&first).unwrap().contains("\"a \""));
    let mut rest = Vec::new();
    while let Some(b) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&b);
    }
    let total = t.elapsed();
    assert!(total >= ttft + Duration::from_millis(300), "{total:?}");
    assert!(
        String::from_utf8(rest)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );

    // Forced length.
    let v: Value = post(
        &m,
        "/v1/chat/completions",
        &chat("hi"),
        &[("x-mock-tokens", "5")],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4"
    );
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let c = chunks(
        &post(
            &m,
            "/v1/chat/completions",
            &chat_stream("hi"),
            &[("x-mock-tokens", "300")],
        )
        .await
        .text()
        .await
        .unwrap(),
    );
    assert_eq!(c.len(), 302);
    assert_eq!(c[299]["choices"][0]["delta"]["content"], "tok299");
    assert_eq!(c[301]["usage"]["completion_tokens"], 300);
}

#[tokio::test]
async fn process_defaults_from_flags_and_env() {
    let m = Mock::start_env(&["--latency-ms", "600"], &[("AIGW_MOCK_TOKENS", "3")]);
    let t = Instant::now();
    let v: Value = post(&m, "/v1/chat/completions", &chat("hi"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(600));
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2");
    // A request overrides the process: header, then directive.
    let t = Instant::now();
    let v: Value = post(
        &m,
        "/v1/chat/completions",
        &chat("MOCK_TOKENS: 1"),
        &[("x-mock-latency-ms", "0")],
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(v["choices"][0]["message"]["content"], "tok0");

    let m = Mock::start(&["--fault", "500"]);
    let r = post(&m, "/v1/chat/completions", &chat("hi"), &[]).await;
    assert_eq!(r.status(), 500);
}

#[tokio::test]
async fn requests_are_recorded_with_authorization() {
    let m = Mock::start(&[]);
    let r = post(
        &m,
        "/v1/chat/completions?api-version=1",
        &chat("hi"),
        &[("authorization", "Bearer sk-test-123"), ("x-extra", "1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let log: Value = client()
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &log[0];
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/v1/chat/completions");
    assert_eq!(e["query"], "api-version=1");
    assert_eq!(e["headers"]["authorization"], "Bearer sk-test-123");
    assert_eq!(e["headers"]["x-extra"], "1");
    assert_eq!(e["body"], chat("hi"));

    // The last 100 are kept, oldest first; DELETE clears.
    for i in 0..105 {
        post(
            &m,
            "/v1/completions",
            &json!({"prompt": format!("p{i}")}),
            &[],
        )
        .await;
    }
    let log: Value = client()
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 100);
    assert_eq!(log[0]["body"]["prompt"], "p5");
    assert_eq!(m.stats().await["requests"], 106);
    let r = client()
        .delete(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let log: Value = client()
        .get(m.url("/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, json!([]));
}

#[tokio::test]
async fn dropped_client_counts_a_cancelled_stream() {
    let m = Mock::start(&[]);
    // A finished stream counts as completed.
    post(&m, "/v1/chat/completions", &chat_stream("hi"), &[])
        .await
        .text()
        .await
        .unwrap();
    let mut r = post(
        &m,
        "/v1/chat/completions",
        &chat_stream("hi"),
        &[("x-mock-tokens", "1000"), ("x-mock-inter-token-ms", "50")],
    )
    .await;
    r.chunk().await.unwrap().unwrap();
    let s = m.stats().await;
    assert_eq!(s["active_streams"], 1);
    drop(r);
    let s = m
        .wait_stats(|s| s["cancelled_streams"] == 1 && s["active_streams"] == 0)
        .await;
    assert_eq!(
        s,
        json!({"active_streams": 0, "completed_streams": 1, "cancelled_streams": 1, "requests": 2})
    );
}

#[tokio::test]
async fn bad_input_is_a_400_json_error() {
    let m = Mock::start(&[]);
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .body("{not json"),
            "not JSON",
        ),
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .json(&json!({"model": "m"})),
            "messages",
        ),
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .json(&json!({"messages": [], "max_tokens": "ten"})),
            "invalid request",
        ),
        (
            client()
                .post(m.url("/v1/completions"))
                .json(&json!({"prompt": 7})),
            "invalid request",
        ),
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .header("x-mock-tokens", "many")
                .json(&chat("hi")),
            "x-mock-tokens",
        ),
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .header("x-mock-fault", "explode")
                .json(&chat("hi")),
            "unknown fault",
        ),
        (
            client()
                .post(m.url("/v1/chat/completions"))
                .json(&chat("MOCK_LATENCY_MS: soon")),
            "MOCK_LATENCY_MS",
        ),
    ];
    for (rb, needle) in cases {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let r = client().get(m.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Still healthy.
    let r = post(&m, "/v1/chat/completions", &chat("hi"), &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn models_list() {
    let m = Mock::start(&[]);
    for path in ["/v1/models", "/models"] {
        let v: Value = client()
            .get(m.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "mock");
    }
}

#[tokio::test]
async fn sigterm_exits_cleanly_despite_a_hung_request() {
    let mut m = Mock::start(&["--drain-ms", "200"]);
    let url = m.url("/v1/chat/completions");
    let hung = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat("MOCK_FAULT: hang"))
            .send()
            .await
    });
    // Wait until the mock has the request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.stats().await["requests"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unsafe {
        libc::kill(m.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = m.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(hung.await.unwrap().is_err());
}
