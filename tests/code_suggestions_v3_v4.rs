//! The language server's component API (`/v3/code/completions`,
//! `/v4/code/suggestions`) with a self-hosted `model_metadata`: completions and
//! generations, the exact JSON and SSE byte framing, `code_context` gating by
//! language-server version, refusals, model faults and client disconnects.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn metadata(endpoint: &str, family: &str) -> Value {
    json!({
        "provider": "openai",
        "name": family,
        "endpoint": endpoint,
        "api_key": "sk-test-model-key",
        "identifier": format!("custom_openai/{family}-served"),
    })
}

fn completion(endpoint: &str, prefix: &str, stream: bool) -> Value {
    json!({
        "prompt_components": [{
            "type": "code_editor_completion",
            "payload": {
                "file_name": "src/answer.py",
                "content_above_cursor": prefix,
                "content_below_cursor": "\n",
                "language_identifier": "python",
                "stream": stream,
            },
            "metadata": {"source": "gitlab-language-server", "version": "7.17.1"},
        }],
        "model_metadata": metadata(endpoint, "codestral"),
    })
}

fn generation(endpoint: &str, family: &str, prefix: &str, stream: bool) -> Value {
    json!({
        "prompt_components": [{
            "type": "code_editor_generation",
            "payload": {
                "file_name": "src/search.py",
                "content_above_cursor": prefix,
                "content_below_cursor": "",
                "language_identifier": "python",
                "stream": stream,
                "prompt_id": "code_suggestions/generations",
                "prompt_enhancer": {
                    "libraries": ["numpy"],
                    "related_snippets": ["def helper(): ..."],
                },
            },
        }],
        "model_metadata": metadata(endpoint, family),
    })
}

async fn post(gw: &Gateway, token: &str, path: &str, body: &Value) -> reqwest::Response {
    post_with(gw, token, path, body, None).await
}

async fn post_with(
    gw: &Gateway,
    token: &str,
    path: &str,
    body: &Value,
    ls_version: Option<&str>,
) -> reqwest::Response {
    let mut rb = with_headers(client().post(gw.http_url(path)), &rails_headers(token))
        .header("x-gitlab-enabled-feature-flags", "flag_a,flag_b");
    if let Some(v) = ls_version {
        rb = rb.header("x-gitlab-language-server-version", v);
    }
    rb.json(body).send().await.unwrap()
}

async fn last_body(mock: &MockModel) -> Value {
    mock.requests().await.last().unwrap()["body"].clone()
}

/// The `timestamp` in a `stream_start` line, to rebuild the expected bytes.
fn timestamp_in(text: &str) -> String {
    let at = text.find("\"timestamp\": ").unwrap() + "\"timestamp\": ".len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

#[tokio::test]
async fn completions_json_and_code_context_gating() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let prefix = "# MOCK_REPLY: return 42\ndef answer():\n    ";
    for path in ["/v3/code/completions", "/v4/code/suggestions"] {
        let resp = post(&gw, &token, path, &completion(&ep, prefix, false)).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers().get("x-streaming-format").is_none());
        let v: Value = resp.json().await.unwrap();
        let model = json!({"engine": "openai", "name": "codestral", "lang": "python"});
        assert_eq!(
            v["choices"],
            json!([{"text": "return 42", "index": 0, "finish_reason": "length"}])
        );
        assert_eq!(v["model"], model);
        assert_eq!(v["metadata"]["model"], model);
        assert_eq!(
            v["metadata"]["enabled_feature_flags"],
            json!(["flag_a", "flag_b"])
        );
        assert_eq!(v["metadata"]["region"], Value::Null);
        assert!(v["metadata"]["timestamp"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
        let b = last_body(&mock).await;
        assert_eq!(b["model"], "codestral-served");
        assert_eq!(b["max_tokens"], 64);
        assert_eq!(
            b["messages"][1]["content"],
            format!("<s>[SUFFIX]\n[PREFIX]{prefix}")
        );
    }

    // code_context reaches the prompt only from language server 7.17.1 on.
    let mut body = completion(&ep, "# MOCK_REPLY: ok\n", false);
    body["prompt_components"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "code_context", "payload": {
            "type": "file", "name": "lib/util.py", "content": "import util_context"}}));
    for (version, used) in [
        (None, false),
        (Some("7.16.9"), false),
        (Some("7.17.1"), true),
        (Some("8.0.0"), true),
    ] {
        let resp = post_with(&gw, &token, "/v3/code/completions", &body, version).await;
        assert_eq!(resp.status(), 200);
        let user = last_body(&mock).await["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            user.contains("import util_context\n# MOCK_REPLY"),
            used,
            "{version:?}: {user}"
        );
    }
}

#[tokio::test]
async fn v3_streams_raw_text() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let resp = post(
        &gw,
        &token,
        "/v3/code/completions",
        &completion(&mock.endpoint(), "# MOCK_REPLY: x = 1\\ny = 2\n", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(resp.text().await.unwrap(), "x = 1\ny = 2");
    assert_eq!(last_body(&mock).await["stream"], true);
}

#[tokio::test]
async fn v4_sse_framing_is_byte_exact() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let resp = post(
        &gw,
        &token,
        "/v4/code/suggestions",
        &completion(&mock.endpoint(), "# MOCK_REPLY: caf\u{e9} \"q\"\n", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(resp.headers()["x-streaming-format"], "sse");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let text = resp.text().await.unwrap();
    let ts = timestamp_in(&text);
    let start = format!(
        "event: stream_start\r\ndata: {{\"metadata\": {{\"model\": {{\"engine\": \"agent\", \"name\": \"Codestral Code Completions\"}}, \"timestamp\": {ts}, \"enabled_feature_flags\": [\"flag_a\", \"flag_b\"], \"region\": \"us-central1\"}}}}\r\n\r\n"
    );
    let chunk = |c: &str| {
        format!(
            "event: content_chunk\r\ndata: {{\"choices\": [{{\"delta\": {{\"content\": \"{c}\"}}, \"index\": 0}}]}}\r\n\r\n"
        )
    };
    let end = "event: stream_end\r\ndata: null\r\n\r\n";
    // The mock streams one word (with its trailing space) per chunk; Python's
    // json.dumps escapes non-ASCII.
    let expected = format!("{start}{}{}{end}", chunk("caf\\u00e9 "), chunk("\\\"q\\\""));
    assert_eq!(text, expected);
}

#[tokio::test]
async fn generations_through_v3_and_v4() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let prefix = "# MOCK_REPLY: ```python\\ndef search(xs):\\n    return 0\\n```\n# binary search";
    let resp = post(
        &gw,
        &token,
        "/v3/code/completions",
        &generation(&ep, "mistral", prefix, false),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let model = json!({"engine": "agent", "name": "Mistral Code Generations", "lang": "python"});
    assert_eq!(v["model"], model);
    assert_eq!(v["metadata"]["model"], model);
    assert_eq!(
        v["choices"],
        json!([{"text": "\ndef search(xs):\n    return 0", "index": 0, "finish_reason": "length"}])
    );
    let b = last_body(&mock).await;
    assert_eq!(b["temperature"], 0.95);
    assert_eq!(b["max_tokens"], 256);
    let user = b["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("numpy") && user.contains("def helper(): ..."),
        "{user}"
    );
    assert!(user.contains("# binary search{{cursor}}"), "{user}");

    // v4 streamed: one content_chunk per line, fence lines dropped.
    let resp = post(
        &gw,
        &token,
        "/v4/code/suggestions",
        &generation(&ep, "mistral", prefix, true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("\"name\": \"Mistral Code Generations\""),
        "{text}"
    );
    let chunks: Vec<&str> = text
        .split("\r\n\r\n")
        .filter(|e| e.starts_with("event: content_chunk"))
        .collect();
    assert_eq!(
        chunks,
        [
            "event: content_chunk\r\ndata: {\"choices\": [{\"delta\": {\"content\": \"def search(xs):\\n\"}, \"index\": 0}]}",
            "event: content_chunk\r\ndata: {\"choices\": [{\"delta\": {\"content\": \"    return 0\\n\"}, \"index\": 0}]}",
        ]
    );
    assert!(text.ends_with("event: stream_end\r\ndata: null\r\n\r\n"));
}

#[tokio::test]
async fn refusals_403_and_422() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();

    let chat_only = gitlab_key().rails_token(json!({"scopes": ["duo_chat"]}));
    for body in [
        completion(&ep, "x", false),
        generation(&ep, "codestral", "x", false),
    ] {
        let resp = post(&gw, &chat_only, "/v4/code/suggestions", &body).await;
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"detail":"Unauthorized to access code suggestions"}"#
        );
    }

    // The IDE's gateway-issued token carries complete_code, but completions
    // here refuse our own issuer (upstream's rule); the v2 route accepts it.
    let minted: Value = with_headers(
        client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&token),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let minted = minted["token"].as_str().unwrap();
    let resp = post(
        &gw,
        minted,
        "/v3/code/completions",
        &completion(&ep, "x", false),
    )
    .await;
    assert_eq!(resp.status(), 403);
    let resp = post(&gw, minted, "/v2/code/completions", &json!({})).await;
    assert_eq!(resp.status(), 422, "the minted token itself is valid");

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut b = completion(&ep, "x", false);
    b.as_object_mut().unwrap().remove("model_metadata");
    cases.push((b, "model_metadata"));
    cases.push((json!({"prompt_components": []}), "prompt_components"));
    let one = completion(&ep, "x", false)["prompt_components"][0].clone();
    cases.push((
        json!({"prompt_components": vec![one; 101], "model_metadata": metadata(&ep, "codestral")}),
        "prompt_components",
    ));
    let mut b = completion(&ep, "x", false);
    b["prompt_components"][0]["type"] = json!("code_editor_magic");
    cases.push((b, "code_editor_magic"));
    let mut b = completion(&ep, "x", false);
    b["prompt_components"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "code_context", "payload": {
            "type": "file", "name": "f", "content": "c".repeat(100_001)}}));
    cases.push((b, "content"));
    let mut b = completion(&ep, "x", false);
    b["prompt_components"] =
        json!([{"type": "code_context", "payload": {"type": "file", "name": "f", "content": "c"}}]);
    cases.push((b, "prompt_components[0]"));
    let mut b = completion(&ep, "x", false);
    b["model_metadata"]["api_key"] = json!(format!("sk-test-model-key{}", "k".repeat(2000)));
    cases.push((b, "api_key"));
    let mut b = completion(&ep, "x", false);
    b["model_metadata"]["name"] = json!("gpt-17");
    cases.push((b, "gpt-17"));
    let mut b = completion(&ep, "x", false);
    b["prompt_components"][0]["payload"]["content_below_cursor"] = json!("y".repeat(100_001));
    cases.push((b, "content_below_cursor"));
    let mut b = completion(&ep, "x", false);
    b["prompt_components"][0]["payload"]
        .as_object_mut()
        .unwrap()
        .remove("file_name");
    cases.push((b, "file_name"));
    let mut b = generation(&ep, "codestral", "x", false);
    b["prompt_components"][0]["payload"]["prompt"] = json!("p".repeat(400_001));
    cases.push((b, "prompt"));
    let mut b = generation(&ep, "codestral", "x", false);
    b["prompt_components"][0]["payload"]["prompt_version"] = json!("9.9.9");
    cases.push((b, "9.9.9"));
    for (body, needle) in cases {
        let resp = post(&gw, &token, "/v4/code/suggestions", &body).await;
        assert_eq!(resp.status(), 422, "{needle}");
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(error_message(422, &v).contains(needle), "{needle}: {text}");
        assert!(!text.contains("sk-test-model-key"), "{text}");
    }
    assert!(
        mock.requests().await.is_empty(),
        "nothing bad reached the model"
    );
}

#[tokio::test]
async fn model_faults_before_and_after_the_stream_started() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    // Before the first event: a status, no event stream.
    let resp = post(
        &gw,
        &token,
        "/v4/code/suggestions",
        &completion(&ep, "# MOCK_FAULT: 500\n", true),
    )
    .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("HTTP 500") && !text.contains("sk-test-model-key"),
        "{text}"
    );
    let resp = post(
        &gw,
        &token,
        "/v3/code/completions",
        &completion(&ep, "# MOCK_FAULT: 429\n", false),
    )
    .await;
    assert_eq!(resp.status(), 429);

    // After it: the body is cut, and no stream_end pretends the answer is whole.
    let sent = with_headers(
        client().post(gw.http_url("/v4/code/suggestions")),
        &rails_headers(&token),
    )
    .json(&completion(&ep, "# MOCK_FAULT: reset\n", true))
    .send()
    .await;
    if let Ok(mut resp) = sent {
        let mut seen = Vec::new();
        let outcome = loop {
            match resp.chunk().await {
                Ok(Some(c)) => seen.extend_from_slice(&c),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(outcome.is_err(), "a reset stream must not end cleanly");
        assert!(!String::from_utf8_lossy(&seen).contains("stream_end"));
    }
    let ok = post(
        &gw,
        &token,
        "/v4/code/suggestions",
        &completion(&ep, "# MOCK_REPLY: fine\n", false),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert!(!gw.logs().contains("sk-test-model-key"), "api key in logs");
}

#[tokio::test]
async fn a_departing_v4_client_cancels_the_upstream_stream() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&["--tokens", "2000", "--inter-token-ms", "20"]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut resp = post(
        &gw,
        &token,
        "/v4/code/suggestions",
        &completion(&mock.endpoint(), "def f():\n", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: stream_start\r\n"));
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = mock.stats().await;
        if stats["cancelled_streams"].as_u64() == Some(1) {
            assert_eq!(stats["completed_streams"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream stream not cancelled: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
