//! Code generations for self-hosted models (`/v2/code/generations`): the
//! request Rails sends (prompt path) and the legacy litellm path, through the
//! real gateway to the mock model server: exact model requests per family,
//! the clean-up of answers, streaming, refusals and model faults.
mod common;

use common::*;
use serde_json::{Value, json};

/// The body Rails sends for a self-hosted code generation (client spec §1.2).
fn rails_generation(endpoint: &str, family: &str, prefix: &str) -> Value {
    json!({
        "current_file": {
            "file_name": "app/search.py",
            "content_above_cursor": prefix,
            "content_below_cursor": "",
        },
        "model_provider": "litellm",
        "prompt": "write a binary search",
        "model_endpoint": endpoint,
        "model_api_key": "sk-test-model-key",
        "model_name": family,
        "model_identifier": format!("custom_openai/{family}-served"),
        "prompt_version": 2,
        "prompt_id": "code_suggestions/generations",
        "stream": false,
    })
}

async fn post(gw: &Gateway, token: &str, body: &Value) -> reqwest::Response {
    with_headers(
        client().post(gw.http_url("/v2/code/generations")),
        &rails_headers(token),
    )
    .header("x-gitlab-enabled-feature-flags", "flag_a")
    .json(body)
    .send()
    .await
    .unwrap()
}

async fn last_request(mock: &MockModel) -> Value {
    mock.requests().await.last().cloned().unwrap()
}

#[tokio::test]
async fn rails_generation_uses_the_family_prompt_and_cleans_the_answer() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;

    // The model wraps its answer in prose and a fence and repeats the comment.
    let prefix = "# MOCK_REPLY: Sure!\\n```python\\n# write a binary search\\ndef search(xs, x):\\n    return -1\\n```\\nHope it helps.\n# write a binary search";
    let resp = post(
        &gw,
        &token,
        &rails_generation(&mock.endpoint(), "codestral", prefix),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"],
        json!([{"text": "\ndef search(xs, x):\n    return -1", "index": 0, "finish_reason": "length"}])
    );
    assert_eq!(body["id"], "id");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["experiments"], json!([]));
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        body["model"],
        json!({"engine": "agent", "name": "Codestral Code Generations", "lang": "python",
               "tokens_consumption_metadata": null, "region": "us-central1"})
    );
    assert_eq!(
        body["metadata"],
        json!({"enabled_feature_flags": ["flag_a"]})
    );

    let sent = last_request(&mock).await;
    assert_eq!(sent["path"], "/v1/chat/completions");
    assert_eq!(sent["headers"]["authorization"], "Bearer sk-test-model-key");
    let b = &sent["body"];
    assert_eq!(b["model"], "codestral-served");
    assert_eq!(b["temperature"], 0.3);
    assert_eq!(b["max_tokens"], 256);
    assert!(b.get("stop").is_none() && b.get("top_p").is_none(), "{b}");
    assert_eq!(b["stream"], false);
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["role"], "system");
    assert!(m[0]["content"].as_str().unwrap().contains("python"));
    assert_eq!(m[1]["role"], "user");
    let user = m[1]["content"].as_str().unwrap();
    assert!(
        user.contains(&format!("```python\n{prefix}{{{{cursor}}}}\n```")),
        "{user}"
    );
}

#[tokio::test]
async fn every_family_gets_its_sampling_parameters() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    // (family, temperature, max_tokens, stop)
    let table: &[(&str, f64, u64, Value)] = &[
        ("codegemma", 0.95, 512, Value::Null),
        ("codellama", 0.95, 256, Value::Null),
        ("deepseekcoder", 0.95, 512, Value::Null),
        ("gpt", 1.0, 512, Value::Null),
        ("llama3", 0.0, 256, Value::Null),
        ("mistral", 0.95, 256, Value::Null),
        ("mixtral", 0.2, 2048, json!(["UNABLE_TO_GENERATE"])),
        ("claude_3", 0.2, 2048, Value::Null),
    ];
    for (family, temperature, max_tokens, stop) in table {
        let prefix = "# MOCK_REPLY: my\\_var = 1\n";
        let resp = post(
            &gw,
            &token,
            &rails_generation(&mock.endpoint(), family, prefix),
        )
        .await;
        assert_eq!(resp.status(), 200, "{family}");
        let v: Value = resp.json().await.unwrap();
        // Mixtral's escaped underscores are undone; the others are left alone.
        let want = if *family == "mixtral" {
            "my_var = 1"
        } else {
            "my\\_var = 1"
        };
        assert_eq!(v["choices"][0]["text"], want, "{family}");
        let sent = last_request(&mock).await;
        let b = &sent["body"];
        assert_eq!(b["temperature"], *temperature, "{family}");
        assert_eq!(b["max_tokens"], *max_tokens, "{family}");
        assert_eq!(
            b.get("stop").cloned().unwrap_or(Value::Null),
            *stop,
            "{family}"
        );
        if *family == "claude_3" {
            // The generic prompt: the user turn is the fenced prefix itself.
            assert_eq!(
                b["messages"][1]["content"],
                format!("```python\n{prefix}\n```")
            );
            assert_eq!(v["model"]["name"], "Code Generations");
        }
    }
}

#[tokio::test]
async fn legacy_litellm_path_sends_the_clients_prompt() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut body = rails_generation(&mock.endpoint(), "mistral", "def f():\n");
    body.as_object_mut().unwrap().remove("prompt_id");
    body["prompt"] = json!("<s>[INST] MOCK_REPLY: return 1</new_code>ignored [/INST]");
    let resp = post(&gw, &token, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["text"], "return 1");
    assert_eq!(v["model"]["engine"], "litellm");
    assert_eq!(v["model"]["name"], "mistral");
    let b = last_request(&mock).await["body"].clone();
    assert_eq!(
        b["model"], "mistral",
        "identifier ignored: custom_openai/<model_name>"
    );
    assert_eq!(b["temperature"], 0.2);
    assert_eq!(b["max_tokens"], 2048);
    assert_eq!(b["top_p"], 0.95);
    assert_eq!(b["stop"], json!(["</new_code>"]));
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": body["prompt"]}])
    );

    // prompt_version 3: the client's message list, no stop for other families.
    let mut body = rails_generation(&mock.endpoint(), "codellama", "def f():\n");
    body.as_object_mut().unwrap().remove("prompt_id");
    body["prompt_version"] = json!(3);
    body["prompt"] = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "MOCK_REPLY: pass"}
    ]);
    let resp = post(&gw, &token, &body).await;
    assert_eq!(resp.status(), 200);
    let b = last_request(&mock).await["body"].clone();
    assert_eq!(b["messages"], body["prompt"]);
    assert!(b.get("stop").is_none());
}

#[tokio::test]
async fn streamed_generation_is_per_line_without_fences() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&["--inter-token-ms", "5"]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let mut body = rails_generation(
        &mock.endpoint(),
        "codestral",
        "# MOCK_REPLY: ```python\\nx = 1\\ny = [i for i in range(3)]\\n```\n",
    );
    body["stream"] = json!(true);
    let resp = post(&gw, &token, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(
        resp.text().await.unwrap(),
        "x = 1\ny = [i for i in range(3)]\n"
    );
    assert_eq!(last_request(&mock).await["body"]["stream"], true);
}

#[tokio::test]
async fn refusals_403_and_422() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();

    let no_scope = gitlab_key().rails_token(json!({"scopes": ["complete_code"]}));
    let resp = post(&gw, &no_scope, &rails_generation(&ep, "codestral", "x")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"detail":"Unauthorized to access code generations"}"#
    );

    let base = || rails_generation(&ep, "codestral", "x");
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut b = base();
    b["prompt_id"] = json!("chat/explain_code");
    cases.push((b, "chat/explain_code"));
    let mut b = base();
    b["model_name"] = json!("qwen");
    cases.push((b, "qwen"));
    let mut b = base();
    b["model_provider"] = Value::Null;
    cases.push((b, "model_provider"));
    let mut b = base();
    b["model_provider"] = json!("anthropic");
    cases.push((b, "anthropic"));
    let mut b = base();
    b.as_object_mut().unwrap().remove("prompt_id");
    b["prompt"] = Value::Null;
    cases.push((b, "prompt"));
    let mut b = base();
    b.as_object_mut().unwrap().remove("prompt_id");
    b["prompt"] = json!("p".repeat(400_001));
    cases.push((b, "prompt"));
    let mut b = base();
    b.as_object_mut().unwrap().remove("prompt_id");
    b["prompt_version"] = json!(3);
    b["prompt"] = json!([{"role": "robot", "content": "x"}]);
    cases.push((b, "role"));
    let mut b = base();
    b["current_file"]["content_above_cursor"] = json!("x".repeat(100_001));
    cases.push((b, "content_above_cursor"));
    let mut b = base();
    b.as_object_mut().unwrap().remove("current_file");
    cases.push((b, "current_file"));
    let mut b = base();
    b["model_identifier"] = json!("sagemaker/endpoint-1");
    cases.push((b, "sagemaker"));
    for (body, needle) in cases {
        let resp = post(&gw, &token, &body).await;
        assert_eq!(resp.status(), 422, "{needle}");
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(error_message(422, &v).contains(needle), "{text}");
        assert!(!text.contains("sk-test-model-key"), "{text}");
    }
    assert!(
        mock.requests().await.is_empty(),
        "nothing bad reached the model"
    );
}

#[tokio::test]
async fn model_faults_map_like_completions_and_the_gateway_keeps_serving() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let resp = post(
        &gw,
        &token,
        &rails_generation(&ep, "codestral", "# MOCK_FAULT: 500\n"),
    )
    .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(!text.contains("sk-test-model-key"));

    let resp = post(
        &gw,
        &token,
        &rails_generation(&ep, "codestral", "# MOCK_FAULT: 429\n"),
    )
    .await;
    assert_eq!(resp.status(), 429);

    // A streamed answer that breaks off midway is cut, never ended cleanly.
    let mut body = rails_generation(&ep, "codestral", "# MOCK_FAULT: reset\n");
    body["stream"] = json!(true);
    match with_headers(
        client().post(gw.http_url("/v2/code/generations")),
        &rails_headers(&token),
    )
    .json(&body)
    .send()
    .await
    {
        Err(_) => {}
        Ok(resp) => assert!(
            resp.text().await.is_err(),
            "a reset stream must not end cleanly"
        ),
    }

    let ok = post(
        &gw,
        &token,
        &rails_generation(&ep, "codestral", "# MOCK_REPLY: fine\n"),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert!(!gw.logs().contains("sk-test-model-key"), "api key in logs");
}
