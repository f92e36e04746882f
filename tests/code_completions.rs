//! Code completions for self-hosted models (`/v2/code/completions`,
//! `/v2/completions`): GitLab-shaped requests through the real gateway to the
//! mock OpenAI-compatible model server, and every fault the model server can throw.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The body Rails sends for a self-hosted code completion (client spec §1.1).
fn rails_completion(endpoint: &str, prefix: &str, suffix: &str) -> Value {
    json!({
        "prompt_version": 2,
        "project_path": "group/project",
        "project_id": 7,
        "current_file": {
            "file_name": "app/answer.py",
            "language_identifier": "python",
            "content_above_cursor": prefix,
            "content_below_cursor": suffix,
        },
        "prompt": null,
        "model_provider": "litellm",
        "model_name": "codestral",
        "model_endpoint": endpoint,
        "model_api_key": "sk-test-model-key",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
        "stream": false,
    })
}

async fn post(gw: &Gateway, token: &str, path: &str, body: &Value) -> reqwest::Response {
    with_headers(client().post(gw.http_url(path)), &rails_headers(token))
        .header("x-gitlab-enabled-feature-flags", "flag_a,flag_b")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rails_completion_reaches_the_model_with_the_codestral_fim_prompt() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;

    let prefix = "# MOCK_REPLY: return 42\ndef answer():\n    ";
    let resp = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&mock.endpoint(), prefix, "\n"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"],
        json!([{"text": "return 42", "index": 0, "finish_reason": "length"}])
    );
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"]["engine"], "litellm");
    assert_eq!(body["model"]["name"], "codestral");
    assert_eq!(body["model"]["lang"], "python");
    assert!(
        body["model"]["tokens_consumption_metadata"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        body["metadata"]["enabled_feature_flags"],
        json!(["flag_a", "flag_b"])
    );

    let reqs = mock.requests().await;
    let sent = reqs.last().unwrap();
    assert_eq!(sent["path"], "/v1/chat/completions");
    assert_eq!(sent["headers"]["authorization"], "Bearer sk-test-model-key");
    assert_eq!(sent["body"]["model"], "Codestral-22B-v0.1");
    assert_eq!(sent["body"]["max_tokens"], 64);
    assert_eq!(
        sent["body"]["stop"],
        json!(["[INST]", "[/INST]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"])
    );
    let messages = sent["body"]["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages[1]["content"],
        format!("<s>[SUFFIX]\n[PREFIX]{prefix}")
    );

    // The direct-access alias answers the same way.
    let resp = post(
        &gw,
        &token,
        "/v2/completions",
        &rails_completion(&mock.endpoint(), prefix, ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn streamed_completion_is_raw_text_and_no_key_means_dummy_key() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut body = rails_completion(&mock.endpoint(), "# MOCK_REPLY: x = 1\\ny = 2\n", "");
    body["stream"] = json!(true);
    body["model_api_key"] = Value::Null;
    body["model_name"] = json!("codellama");
    body["model_identifier"] = json!("CodeLlama-13b");
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(resp.text().await.unwrap(), "x = 1\ny = 2");
    let reqs = mock.requests().await;
    let sent = reqs.last().unwrap();
    assert_eq!(sent["headers"]["authorization"], "Bearer dummy_key");
    assert_eq!(sent["body"]["stream"], true);
    assert_eq!(sent["body"]["model"], "CodeLlama-13b");
    let user = sent["body"]["messages"][0]["content"].as_str().unwrap();
    assert!(
        user.starts_with("<PRE> ") && user.ends_with(" <MID>"),
        "{user}"
    );
}

#[tokio::test]
async fn unknown_language_makes_no_model_call() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut body = rails_completion(&mock.endpoint(), "text", "");
    body["current_file"]["file_name"] = json!("NOTES");
    body["current_file"]["language_identifier"] = Value::Null;
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"], json!([]));
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn schema_violations_are_422_with_a_detail_string() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut b = rails_completion(&ep, "a", "b");
    b.as_object_mut().unwrap().remove("current_file");
    cases.push((b, "current_file"));
    cases.push((
        rails_completion(&ep, &"x".repeat(100_001), ""),
        "content_above_cursor",
    ));
    let mut b = rails_completion(&ep, "a", "b");
    b["model_name"] = json!("nope");
    cases.push((b, "nope"));
    let mut b = rails_completion(&ep, "a", "b");
    b["model_provider"] = json!("vertex-ai");
    cases.push((b, "vertex-ai"));
    let mut b = rails_completion(&ep, "a", "b");
    b["model_identifier"] = json!("sagemaker/endpoint-1");
    cases.push((b, "sagemaker"));
    // Bedrock is served, but this gateway has no AWS region configured.
    let mut b = rails_completion(&ep, "a", "b");
    b["model_identifier"] = json!("bedrock/anthropic.claude");
    cases.push((b, "AWS_REGION"));
    let mut b = rails_completion(&ep, "a", "b");
    b["model_name"] = json!("codestral-2501");
    cases.push((b, "codestral-2501"));
    let mut b = rails_completion(&ep, "a", "b");
    b["prompt_version"] = json!(9);
    cases.push((b, "prompt_version"));
    let mut b = rails_completion(&ep, "a", "b");
    b["project_id"] = json!("sk-test-model-key-in-a-wrong-field");
    cases.push((b, "Validation error"));
    for (body, needle) in cases {
        let resp = post(&gw, &token, "/v2/code/completions", &body).await;
        assert_eq!(resp.status(), 422, "{needle}");
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let detail = error_message(422, &v);
        assert!(detail.contains(needle), "{detail}");
        assert!(!text.contains("sk-test-model-key"), "{text}");
    }
    // Not JSON at all.
    let resp = with_headers(
        client().post(gw.http_url("/v2/code/completions")),
        &rails_headers(&token),
    )
    .body("{not json")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(
        mock.requests().await.is_empty(),
        "no bad request may reach the model"
    );
    // Still serving.
    let ok = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&ep, "# MOCK_REPLY: ok\n", ""),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn custom_models_disabled_refuses_a_custom_endpoint() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    let resp = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&mock.endpoint(), "a", ""),
    )
    .await;
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert!(
        error_message(422, &v).contains("AIGW_CUSTOM_MODELS__ENABLED"),
        "{v}"
    );
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn missing_scope_is_403() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = gitlab_key().rails_token(json!({"scopes": ["duo_chat"]}));
    let resp = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&mock.endpoint(), "a", ""),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"detail":"Unauthorized to access code completions"}"#
    );
}

#[tokio::test]
async fn model_server_faults_become_clear_errors_and_the_gateway_keeps_serving() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(
        &gitlab,
        &[("AIGW_CODE_SUGGESTIONS__MODEL_REQUEST_TIMEOUT", "2")],
    )
    .await;
    let ep = mock.endpoint();
    for (fault, status, needle) in [
        ("500", 502, "HTTP 500"),
        ("429", 429, "Too many requests"),
        ("invalid-json", 502, "invalid"),
        ("html", 502, "HTML"),
        ("hang", 504, "did not answer"),
    ] {
        let started = Instant::now();
        let body = rails_completion(&ep, &format!("# MOCK_FAULT: {fault}\ndef f():\n"), "");
        let resp = post(&gw, &token, "/v2/code/completions", &body).await;
        assert_eq!(resp.status(), status, "fault {fault}");
        if fault == "429" {
            assert_eq!(resp.headers()["retry-after"], "7");
        }
        let text = resp.text().await.unwrap();
        assert!(text.contains(needle), "fault {fault}: {text}");
        assert!(!text.contains("sk-test-model-key"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "fault {fault} took {:?}",
            started.elapsed()
        );
    }
    // A refused connection.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let resp = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&format!("http://127.0.0.1:{port}/v1"), "a", ""),
    )
    .await;
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("cannot connect"));

    // A stream that is garbage from the start is an error status.
    let mut body = rails_completion(&ep, "# MOCK_FAULT: garbage-sse\ndef f():\n", "");
    body["stream"] = json!(true);
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("invalid JSON chunk"));
    // A stream that breaks off midway is cut, never passed off as a complete answer.
    let mut body = rails_completion(&ep, "# MOCK_FAULT: reset\ndef f():\n", "");
    body["stream"] = json!(true);
    let sent = with_headers(
        client().post(gw.http_url("/v2/code/completions")),
        &rails_headers(&token),
    )
    .json(&body)
    .send()
    .await;
    match sent {
        Err(_) => {} // cut before the response head was flushed
        Ok(resp) => assert!(
            resp.text().await.is_err(),
            "a reset stream must not end cleanly"
        ),
    }
    let ok = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&ep, "# MOCK_REPLY: fine\n", ""),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let logs = gw.logs();
    assert!(!logs.contains("sk-test-model-key"), "api key in logs");
}

#[tokio::test]
async fn a_departing_client_cancels_the_upstream_stream() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&["--tokens", "2000", "--inter-token-ms", "20"]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut body = rails_completion(&mock.endpoint(), "def f():\n", "");
    body["stream"] = json!(true);
    let mut resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
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

#[tokio::test]
async fn knobs_extra_headers_disable_streaming_body_limit_and_metrics() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(
        &gitlab,
        &[
            (
                "AIGW_CUSTOM_MODELS__EXTRA_HEADERS",
                r#"{"X-Tenant": "blue"}"#,
            ),
            ("AIGW_CUSTOM_MODELS__DISABLE_STREAMING", "true"),
        ],
    )
    .await;
    let mut body = rails_completion(&mock.endpoint(), "# MOCK_REPLY: one shot\n", "");
    body["stream"] = json!(true);
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "one shot");
    let reqs = mock.requests().await;
    let sent = reqs.last().unwrap();
    assert_eq!(sent["body"]["stream"], false);
    assert_eq!(sent["headers"]["x-tenant"], "blue");

    // A 10 MB body is refused before it reaches anything. The gateway answers
    // 413 and closes without reading the rest, so a client still writing the
    // body may see the connection close before it reads the answer.
    let huge = rails_completion(&mock.endpoint(), &"x".repeat(10 * 1024 * 1024), "");
    let sent = with_headers(
        client().post(gw.http_url("/v2/code/completions")),
        &rails_headers(&token),
    )
    .json(&huge)
    .send()
    .await;
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), 413);
    }
    // Declared too large: refused from the headers alone, with the clear answer.
    let (status, answer) = raw_post_declaring(&gw, &token, 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer.contains(r#"{"detail":"Request body too large"}"#),
        "{answer}"
    );
    assert_eq!(mock.requests().await.len(), reqs.len());
    // Below the limit (8 MiB) is accepted: 3 MB of context files.
    let mut big = rails_completion(&mock.endpoint(), "# MOCK_REPLY: ok\n", "");
    big["context"] = json!(
        (0..7)
            .map(|i| json!({"type": "file", "name": format!("f{i}.py"), "content": "y".repeat(450_000)}))
            .collect::<Vec<_>>()
    );
    let resp = post(&gw, &token, "/v2/code/completions", &big).await;
    assert_eq!(resp.status(), 200);

    let metrics = client()
        .get(format!("http://{}/metrics", gw.addrs.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let endpoint = format!("endpoint=\"{}\"", mock.addr);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("model_inferences_total") && l.contains(&endpoint))
        .unwrap_or_else(|| panic!("no model_inferences_total for {endpoint}:\n{metrics}"));
    assert!(line.contains("model_name=\"codestral\""), "{line}");
    assert!(metrics.contains("inference_request_duration_seconds_bucket"));
    assert!(!metrics.contains("sk-test"), "no key in metrics");
}

/// The model request timeout bounds each wait for the next streamed token,
/// not the whole answer: a slow but steady stream completes, a stream that
/// stalls is cut about one timeout after its last token.
#[tokio::test]
async fn the_stream_timeout_is_per_token_not_per_answer() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(
        &gitlab,
        &[("AIGW_CODE_SUGGESTIONS__MODEL_REQUEST_TIMEOUT", "1")],
    )
    .await;
    // 5 tokens 400 ms apart: 2 s in all, twice the timeout.
    let prefix = "# MOCK_TOKENS: 5\n# MOCK_INTER_TOKEN_MS: 400\ndef f():\n";
    let mut body = rails_completion(&mock.endpoint(), prefix, "");
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("a steady stream completes");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(text.contains("tok4"), "{text}");

    // Tokens 3 s apart: the stream is cut after the first one.
    let prefix = "# MOCK_TOKENS: 5\n# MOCK_INTER_TOKEN_MS: 3000\ndef f():\n";
    let mut body = rails_completion(&mock.endpoint(), prefix, "");
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp = post(&gw, &token, "/v2/code/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text().await.is_err(),
        "a stalled stream must not end cleanly"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2900),
        "cut after {took:?}, not one timeout after the first token"
    );
    // And the gateway keeps serving.
    let resp = post(
        &gw,
        &token,
        "/v2/code/completions",
        &rails_completion(&mock.endpoint(), "# MOCK_REPLY: ok\n", ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

/// Sends only the head of a POST declaring `length` body bytes, and returns
/// the status and text of the answer the gateway gives at once.
async fn raw_post_declaring(gw: &Gateway, token: &str, length: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "POST /v2/code/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n",
        gw.addrs.http
    );
    for (k, v) in rails_headers(token) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut tcp = tokio::net::TcpStream::connect(gw.addrs.http).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an answer without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A 422 is FastAPI's list: `loc` is the field's path from `body`, `msg`
/// names the field too (Rails shows only `detail[0].msg`).
#[tokio::test]
async fn a_422_names_the_field_in_fastapis_list_shape() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let mut missing = rails_completion(&ep, "a", "b");
    missing["current_file"]
        .as_object_mut()
        .unwrap()
        .remove("file_name");
    let mut wrong_type = rails_completion(&ep, "a", "b");
    wrong_type["context"] = json!([{"type": "file", "name": "a.py", "content": 7}]);
    let cases = [
        (
            missing,
            json!(["body", "current_file", "file_name"]),
            "missing",
        ),
        (
            wrong_type,
            json!(["body", "context", 0, "content"]),
            "value_error",
        ),
        (
            {
                let mut b = rails_completion(&ep, "a", "b");
                b["prompt_version"] = json!(9);
                b
            },
            json!(["body", "prompt_version"]),
            "value_error",
        ),
    ];
    for (body, loc, kind) in cases {
        let resp = post(&gw, &token, "/v2/code/completions", &body).await;
        assert_eq!(resp.status(), 422);
        let v: Value = resp.json().await.unwrap();
        let items = v["detail"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(items.len(), 1, "{v}");
        assert_eq!(items[0]["loc"], loc, "{v}");
        assert_eq!(items[0]["type"], kind, "{v}");
        let msg = items[0]["msg"].as_str().unwrap();
        let field = loc.as_array().unwrap().last().unwrap().to_string();
        assert!(msg.contains(field.trim_matches('"')), "{msg}");
    }
    assert!(mock.requests().await.is_empty());
}

/// Lax types where upstream's pydantic models are lax (audit M8): a numeric
/// string for an integer field such as `project_id`, a string boolean.
#[tokio::test]
async fn numeric_strings_and_string_booleans_are_accepted_as_pydantic_does() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    for (field, value) in [
        ("project_id", json!("42")),
        ("project_id", json!(" 42 ")),
        ("project_id", json!(42.0)),
        ("project_id", Value::Null),
        ("prompt_version", json!("2")),
        ("stream", json!("false")),
    ] {
        let mut body = rails_completion(&ep, "# MOCK_REPLY: ok\n", "");
        body[field] = value.clone();
        let resp = post(&gw, &token, "/v2/code/completions", &body).await;
        assert_eq!(resp.status(), 200, "{field}: {value}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["text"], "ok", "{field}: {value}");
    }
    // Not a number at all: still a 422 that names the field, not the value.
    for value in [json!("forty-two"), json!("4.5"), json!([42])] {
        let mut body = rails_completion(&ep, "a", "");
        body["project_id"] = value.clone();
        let resp = post(&gw, &token, "/v2/code/completions", &body).await;
        assert_eq!(resp.status(), 422, "{value}");
        let v: Value = resp.json().await.unwrap();
        let msg = error_message(422, &v);
        assert!(msg.starts_with("project_id: "), "{msg}");
        assert!(!msg.contains("forty"), "{msg}");
    }
}
