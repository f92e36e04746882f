//! `/v1/prompts/*` and `/v2/prompts/*`: GitLab-shaped prompt invocations
//! through the real gateway to the mock model, every error of the API's
//! table, version resolution and the `AIGW_PROMPTS_DIR` override.
mod common;

use common::*;
use serde_json::{Value, json};

fn meta(endpoint: &str, name: &str) -> Value {
    json!({"provider": "openai", "name": name, "endpoint": endpoint,
           "api_key": "sk-test-model-key", "identifier": "custom_openai/Mistral-7B"})
}

fn explain_inputs(question: &str) -> Value {
    json!({"input": question, "selected_text": "fn main() {}", "file_content": "",
           "language_info": "The code is written in Rust."})
}

async fn post(gw: &Gateway, token: &str, path: &str, body: &Value) -> reqwest::Response {
    with_headers(client().post(gw.http_url(path)), &rails_headers(token))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn detail(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    (status, error_message(status, &v))
}

/// The admin's "Test connection" call for a model at `endpoint` (Rails
/// percent-encodes the slash of the prompt id).
async fn test_connection(gw: &Gateway, token: &str, endpoint: &str) -> reqwest::Response {
    let body = json!({"stream": false, "inputs": {}, "model_metadata": meta(endpoint, "llama3")});
    post(gw, token, "/v1/prompts/model_configuration%2Fcheck", &body).await
}

fn token_with(scopes: &[&str]) -> String {
    gitlab_key().rails_token(json!({ "scopes": scopes }))
}

#[tokio::test]
async fn v1_answers_a_json_string_and_sends_the_prompt_params() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["explain_code"]);
    let body = json!({"inputs": explain_inputs("MOCK_REPLY: It prints nothing."),
                      "prompt_version": "^1.0.0", "stream": false,
                      "model_metadata": meta(&mock.endpoint(), "mistral")});
    let resp = post(&gw, &token, "/v1/prompts/chat/explain_code", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!("It prints nothing.")
    );

    let reqs = mock.requests().await;
    let sent = &reqs.last().unwrap()["body"];
    assert_eq!(sent["model"], "Mistral-7B");
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["max_tokens"], 2048);
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stop").is_none());
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("The code is written in Rust.")
    );
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();
    assert!(
        user.contains("fn main() {}") && user.ends_with("Explain this code."),
        "{user}"
    );
}

#[tokio::test]
async fn v2_answers_content_and_usage_and_streams_ndjson() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["generate_commit_message"]);
    let mut body = json!({"inputs": {"diff": "MOCK_REPLY: Fix the parser"},
                          "model_metadata": meta(&mock.endpoint(), "codestral")});
    let resp = post(&gw, &token, "/v2/prompts/generate_commit_message", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"], "Fix the parser");
    let usage = &v["usage"]["Mistral-7B"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(usage["output_tokens"], 3);

    body["stream"] = json!(true);
    let resp = post(&gw, &token, "/v2/prompts/generate_commit_message", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(text.ends_with('\n'));
    let content: String = lines
        .iter()
        .map(|l| l["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "Fix the parser");
    assert!(text.starts_with("{\"content\":\"Fix \"}\n"), "{text}");
    assert_eq!(
        lines.last().unwrap()["usage"]["Mistral-7B"]["output_tokens"],
        3
    );

    // v1 streaming is raw text.
    let resp = post(&gw, &token, "/v1/prompts/generate_commit_message", &body).await;
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(resp.text().await.unwrap(), "Fix the parser");
}

#[tokio::test]
async fn test_connection_uses_the_encoded_slash_and_reports_421() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let resp = test_connection(&gw, &token, &mock.endpoint()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.unwrap().is_string());
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    assert_eq!(sent["max_tokens"], 16);

    // The model server fails: 421 with "<code>: <reason>".
    let mock500 = MockModel::start(&["--fault", "500"]);
    let (status, d) = detail(test_connection(&gw, &token, &mock500.endpoint()).await).await;
    assert_eq!((status, d.as_str()), (421, "500: Internal Server Error"));
    let mock429 = MockModel::start(&["--fault", "429"]);
    let (status, d) = detail(test_connection(&gw, &token, &mock429.endpoint()).await).await;
    assert_eq!((status, d.as_str()), (421, "429: Too Many Requests"));

    // Nothing listens: still 421, naming the failure, never the key.
    let resp = test_connection(&gw, &token, "http://127.0.0.1:9/v1").await;
    assert_eq!(resp.status(), 421);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("503: Service Unavailable (cannot connect"),
        "{text}"
    );
    assert!(!text.contains("sk-test-model-key"));
}

/// A model server that fails once and then recovers: a non-streamed prompt
/// invocation is tried again (upstream: 4 attempts, 3 s / 9 s / 27 s apart)
/// and answers; the "Test connection" check is never retried; a status that
/// is not transient (429, the server's own rate limit) is not retried either.
#[tokio::test]
async fn transient_model_failures_are_retried_except_for_the_connection_check() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let (gw, admin_token) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["explain_code"]);
    let flaky = MockModel::start(&["--fault", "500", "--fault-times", "1"]);
    let body = json!({"inputs": explain_inputs("MOCK_REPLY: Recovered."), "stream": false,
                      "model_metadata": meta(&flaky.endpoint(), "mistral")});
    let start = std::time::Instant::now();
    let resp = post(&gw, &token, "/v2/prompts/chat/explain_code", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["content"], "Recovered.");
    assert_eq!(flaky.requests().await.len(), 2, "one failure, one retry");
    assert!(start.elapsed() >= std::time::Duration::from_secs(3));

    // The connection check reports the first failure at once.
    let flaky = MockModel::start(&["--fault", "500", "--fault-times", "1"]);
    let (status, d) = detail(test_connection(&gw, &admin_token, &flaky.endpoint()).await).await;
    assert_eq!((status, d.as_str()), (421, "500: Internal Server Error"));
    assert_eq!(flaky.requests().await.len(), 1);

    // 429 is the model server's own rate limit, not a transient failure here.
    let limited = MockModel::start(&["--fault", "429", "--fault-times", "1"]);
    let body = json!({"inputs": explain_inputs("x"), "stream": false,
                      "model_metadata": meta(&limited.endpoint(), "mistral")});
    let (status, _) = detail(post(&gw, &token, "/v2/prompts/chat/explain_code", &body).await).await;
    assert_eq!(status, 421);
    assert_eq!(limited.requests().await.len(), 1);
}

#[tokio::test]
async fn every_error_of_the_table() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let all = token_with(&[
        "explain_code",
        "duo_chat",
        "duo_classic_chat",
        "generate_issue_description",
    ]);
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "/v1/prompts/no/such/prompt",
            &all,
            json!({"inputs": {}, "model_metadata": meta(&ep, "mistral")}),
            400,
            "Failed to load prompt definition for 'no/such/prompt'",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"inputs": explain_inputs("x"), "prompt_version": "^9.0.0", "model_metadata": meta(&ep, "mistral")}),
            400,
            "No version matching '^9.0.0'",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"inputs": explain_inputs("x"), "prompt_version": "latest!", "model_metadata": meta(&ep, "mistral")}),
            422,
            "Invalid version constraint",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &token,
            json!({"inputs": explain_inputs("x"), "model_metadata": meta(&ep, "mistral")}),
            403,
            "Unauthorized to access 'chat/explain_code'",
        ),
        (
            "/v2/prompts/chat/react",
            &all,
            json!({"inputs": {}, "model_metadata": meta(&ep, "mistral")}),
            422,
            "Prompt 'chat/react' is not supported",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"inputs": {"input": "x"}, "model_metadata": meta(&ep, "mistral")}),
            422,
            "missing variables {'language_info', 'selected_text'}",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"inputs": explain_inputs("x"), "model_metadata": meta(&ep, "nope")}),
            400,
            "unknown model family 'nope'",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"inputs": explain_inputs("x")}),
            400,
            "model_metadata is required",
        ),
        (
            "/v1/prompts/chat/explain_code",
            &all,
            json!({"model_metadata": meta(&ep, "mistral")}),
            422,
            "inputs",
        ),
    ];
    for (path, tok, body, status, needle) in cases {
        let (got, d) = detail(post(&gw, tok, path, &body).await).await;
        assert_eq!(got, status, "{path} {needle}: {d}");
        assert!(d.contains(needle), "{needle}: {d}");
    }
    // Optional inputs stay optional.
    let body =
        json!({"inputs": {"content": "MOCK_REPLY: ok"}, "model_metadata": meta(&ep, "mistral")});
    let resp = post(&gw, &all, "/v1/prompts/generate_description", &body).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn versions_resolve_and_the_prompts_dir_overrides() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, user: &str, max_tokens: u32| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!(
            "name = \"tuned\"\nunit_primitive = \"generate_commit_message\"\n[model.params]\nmax_tokens = {max_tokens}\n[params]\nstop = [\"END\"]\n[prompt_template]\nuser = '''\n{user}\n'''\n"
        )).unwrap();
    };
    write(
        "generate_commit_message/base/1.0.0.toml",
        "base 1.0.0 {{ diff }} on {{ current_date }}",
        11,
    );
    write(
        "generate_commit_message/base/1.1.0.toml",
        "base 1.1.0 {{ diff }}",
        12,
    );
    write(
        "generate_commit_message/base/1.2.0-dev.toml",
        "dev {{ diff }}",
        13,
    );
    write(
        "generate_commit_message/mistral/1.0.0.toml",
        "mistral {{ diff }}",
        14,
    );
    write(
        "generate_commit_message/base/2.0.0.toml",
        "base 2 {{ diff }}",
        15,
    );
    let (gw, _) = gateway_with_models(
        &gitlab,
        &[
            ("AIGW_PROMPTS_DIR", dir.path().to_str().unwrap()),
            ("AIGW_DUO_CHAT__MAX_TOKENS", "77"),
        ],
    )
    .await;
    let token = token_with(&["generate_commit_message"]);
    let cases = [
        (Value::Null, "llama3", "base 1.1.0", 12),
        (json!("^1.0.0"), "codestral", "mistral", 14),
        (json!("1.0.0"), "llama3", "base 1.0.0", 11),
        (json!("1.2.0-dev"), "llama3", "dev", 13),
        (json!("~1.0"), "llama3", "base 1.0.0", 11),
        (json!("^2.0.0"), "llama3", "base 2", 15),
        (json!(">=1.0.0"), "llama3", "base 2", 15),
        // codestral's dirs are [codestral, mistral]: the mistral variant wins.
        (json!("1.0.0"), "codestral", "mistral", 14),
    ];
    for (version, family, expect, max_tokens) in cases {
        let body = json!({"inputs": {"diff": "d"}, "prompt_version": version,
                          "model_metadata": meta(&mock.endpoint(), family)});
        let resp = post(&gw, &token, "/v1/prompts/generate_commit_message", &body).await;
        assert_eq!(resp.status(), 200, "{version} {family}");
        let sent = mock.requests().await.last().unwrap()["body"].clone();
        let user = sent["messages"][0]["content"].as_str().unwrap().to_string();
        assert!(user.starts_with(expect), "{version} {family}: {user}");
        assert_eq!(sent["max_tokens"], max_tokens);
        assert_eq!(sent["stop"], json!(["END"]));
        if expect == "base 1.0.0" {
            // current_date is filled in: "<Month> <DD>, <YYYY>".
            let date = user.rsplit(" on ").next().unwrap();
            assert!(date.len() >= 12 && date.contains(", 20"), "{date}");
        }
    }
    // AIGW_DUO_CHAT__MAX_TOKENS applies to chat/* prompts only.
    let token = token_with(&["explain_code"]);
    let body =
        json!({"inputs": explain_inputs("x"), "model_metadata": meta(&mock.endpoint(), "llama3")});
    assert_eq!(
        post(&gw, &token, "/v1/prompts/chat/explain_code", &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        mock.requests().await.last().unwrap()["body"]["max_tokens"],
        77
    );
}

#[test]
fn an_invalid_override_stops_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chat/explain_code/base");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("1.0.0.toml"), "name = ").unwrap();
    let out = GatewayBuilder::new()
        .env("AIGW_PROMPTS_DIR", dir.path().to_str().unwrap())
        .command()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chat/explain_code/base/1.0.0.toml"), "{err}");
}

/// What Rails' connection tester shows for a status other than 200 and 421:
/// `body.dig("detail", 0, "msg")`, where a string `detail` raises and the
/// admin gets a generic "Unknown error" instead.
fn rails_connection_tester_message(body: &Value) -> Option<String> {
    match &body["detail"] {
        Value::Array(items) => items.first()?.get("msg")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Every refusal of "Test connection" reaches the admin as text: 400
/// (unknown family, unsupported provider), 422 (field limits), 403 and 401
/// in FastAPI's list shape; the 421 of a failing model stays a string.
#[tokio::test]
async fn test_connection_refusals_are_readable_by_rails() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let path = "/v1/prompts/model_configuration%2Fcheck";
    let check = |meta: Value| json!({"stream": false, "inputs": {}, "model_metadata": meta});
    let mut long_name = meta(&mock.endpoint(), "llama3");
    long_name["name"] = json!("x".repeat(256));
    let cases = [
        (
            check(meta(&mock.endpoint(), "no-such-family")),
            400,
            "unknown model family 'no-such-family'",
        ),
        (
            check(
                json!({"provider": "bedrock", "name": "llama3", "endpoint": "",
                         "api_key": "", "identifier": "bedrock/meta.llama3"}),
            ),
            400,
            "set AWS_REGION",
        ),
        (check(long_name), 422, "model_metadata.name"),
    ];
    for (body, status, needle) in cases {
        let resp = post(&gw, &token, path, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{needle}");
        let v: Value = resp.json().await.unwrap();
        let shown = rails_connection_tester_message(&v).unwrap_or_else(|| panic!("{v}"));
        assert!(shown.contains(needle), "{shown}");
        if status == 422 {
            assert_eq!(
                v["detail"][0]["loc"],
                json!(["body", "model_metadata", "name"])
            );
        }
    }
    // A token without the unit primitive: 403, readable.
    let resp = post(
        &gw,
        &token_with(&["duo_chat"]),
        path,
        &check(meta(&mock.endpoint(), "llama3")),
    )
    .await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(
        rails_connection_tester_message(&v)
            .unwrap()
            .contains("Unauthorized")
    );
    // No token at all: 401, readable, and still GitLab's `error` field.
    let resp = client()
        .post(gw.http_url(path))
        .json(&check(meta(&mock.endpoint(), "llama3")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "No authorization header presented");
    assert_eq!(v["detail"][0]["loc"], json!(["header", "authorization"]));
    assert_eq!(
        rails_connection_tester_message(&v).as_deref(),
        Some("No authorization header presented")
    );
    // Other routes keep GitLab's plain 401 body.
    let resp = client()
        .post(gw.http_url("/v1/prompts/chat/explain_code"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "No authorization header presented"})
    );
    assert!(mock.requests().await.is_empty());
}

/// `measure_comment_temperature` as Rails sends it (inputs {content}); the
/// UI parses the answer as JSON {"rating", "issues"}: a fenced answer is cut
/// to the object.
#[tokio::test]
async fn measure_comment_temperature_answers_the_json_the_ui_parses() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["measure_comment_temperature"]);
    let comment = "THIS IS WRONG, did you even test it? MOCK_REPLY: Here is my rating:\\n```json\\n{\"rating\": 2, \"issues\": [\"All capitals read as shouting.\"]}\\n```";
    let body = json!({"inputs": {"content": comment}, "prompt_version": "^1.0.0",
                      "model_metadata": meta(&mock.endpoint(), "llama3")});
    let resp = post(
        &gw,
        &token,
        "/v1/prompts/measure_comment_temperature",
        &body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let content = resp.json::<Value>().await.unwrap();
    let parsed: Value = serde_json::from_str(content.as_str().unwrap()).unwrap();
    assert_eq!(parsed["rating"], 2);
    assert_eq!(parsed["issues"][0], "All capitals read as shouting.");
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("\"rating\"") && system.contains("\"issues\""),
        "{system}"
    );
    assert!(
        sent["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("THIS IS WRONG")
    );
    // Its own unit primitive.
    let (status, _) = detail(
        post(
            &gw,
            &token_with(&["duo_chat"]),
            "/v1/prompts/measure_comment_temperature",
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
}

/// `classify_code_review_mention_intent` (inputs {message}, unit primitive
/// duo_agent_platform): Rails compares the stripped answer with its intent
/// names, so a wordy answer is cut to the name it gives.
#[tokio::test]
async fn classify_code_review_mention_intent_answers_an_intent_name() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["duo_agent_platform"]);
    for (reply, want) in [
        ("code_review_request", "code_review_request"),
        ("The intent is: `write_actions`.", "write_actions"),
        ("assistant_flow\\n", "assistant_flow"),
        ("no idea", "no idea"),
    ] {
        let body = json!({"inputs": {"message": format!("can you review this? MOCK_REPLY: {reply}")},
                          "prompt_version": "^1.0.0",
                          "model_metadata": meta(&mock.endpoint(), "mistral")});
        let resp = post(
            &gw,
            &token,
            "/v1/prompts/classify_code_review_mention_intent",
            &body,
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap(), json!(want), "{reply}");
    }
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    for intent in ["code_review_request", "write_actions", "assistant_flow"] {
        assert!(system.contains(intent), "{system}");
    }
}

/// Duo Chat's documentation tool as Rails calls it (stream, content_id
/// "ATTRS", documents with ids): each excerpt is shown to the model with its
/// CNT-IDX-<id> reference and the model is told to list the ones it used
/// under "ATTRS:", which is where Rails reads the source link from.
#[tokio::test]
async fn documentation_answers_carry_the_sources_block_rails_extracts() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["documentation_search"]);
    let body = json!({
        "stream": true,
        "inputs": {
            "question": "How do I rebase? MOCK_REPLY: Use git rebase.\\n\\nATTRS:\\nCNT-IDX-4711",
            "content_id": "ATTRS",
            "documents": [
                {"id": 4711, "content": "To rebase, run git rebase main.", "metadata": {"source_url": "https://docs.gitlab.com/topics/git/git_rebase/"}},
                {"id": 815, "content": "Merge trains", "metadata": {}}
            ]
        },
        "prompt_version": "^1.0.0",
        "model_metadata": meta(&mock.endpoint(), "mistral"),
    });
    let resp = post(&gw, &token, "/v1/prompts/chat/documentation_search", &body).await;
    assert_eq!(resp.status(), 200);
    let answer = resp.text().await.unwrap();
    // Rails' TanukiBot response modifier: split at "ATTRS:", first CNT-IDX-(\d+).
    let (message, sources) = answer.split_once("ATTRS:").expect("a sources block");
    assert_eq!(message.trim(), "Use git rebase.");
    let id: String = sources
        .split("CNT-IDX-")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(id, "4711");

    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    let user = sent["messages"][1]["content"].as_str().unwrap();
    assert!(system.contains("\"ATTRS:\""), "{system}");
    assert!(
        user.contains("CNT-IDX-4711") && user.contains("CNT-IDX-815"),
        "{user}"
    );
    assert!(user.contains("To rebase, run git rebase main."), "{user}");

    // An older Rails without content_id: the same marker.
    let mut old = body.clone();
    old["inputs"].as_object_mut().unwrap().remove("content_id");
    let resp = post(&gw, &token, "/v1/prompts/chat/documentation_search", &old).await;
    assert_eq!(resp.status(), 200);
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("\"ATTRS:\"")
    );
}

/// `categorize_question` (inputs {question, previous_answer}): Rails parses
/// the whole answer as JSON and keeps a category only when it is one of its
/// list. The answer is cut to the object; the prompt lists Rails' values.
#[tokio::test]
async fn categorize_question_answers_rails_categories_as_json() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = token_with(&["duo_chat"]);
    let question = "What does this do? MOCK_REPLY: Sure!\\n{\"category\": \"Write, improve, or explain code\", \"detailed_category\": \"Explain this code\", \"labels\": [\"contains_code\"], \"language\": \"en\"}\\nHope that helps.";
    let body = json!({"inputs": {"question": question, "previous_answer": null},
                      "prompt_version": "^1.0.0",
                      "model_metadata": meta(&mock.endpoint(), "mistral")});
    let resp = post(&gw, &token, "/v1/prompts/categorize_question", &body).await;
    assert_eq!(resp.status(), 200);
    let content = resp.json::<Value>().await.unwrap();
    let parsed: Value = serde_json::from_str(content.as_str().unwrap()).unwrap();
    assert_eq!(parsed["category"], "Write, improve, or explain code");
    assert_eq!(parsed["detailed_category"], "Explain this code");
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    for value in [
        "Documentation about GitLab:",
        "- Documentation question about GitLab CI/CD and other GitLab verify features",
        "Write, improve, or explain code:",
        "- Why is this code not producing the expected output?",
        "- User asks a question that does not fit in any of the other categories.",
    ] {
        assert!(system.contains(value), "{value}");
    }
    assert!(
        !system.contains("a short phrase"),
        "no free-text detailed_category"
    );
}

/// The 3 + 9 + 27 s retries stay inside the caller's budget: with
/// `AIGW_PROMPTS__RETRY_DEADLINE`, no retry starts whose wait would end past
/// it, and the failure is answered (421) instead of outliving Rails' wait.
#[tokio::test]
async fn prompt_retries_stop_at_the_retry_deadline() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let token = token_with(&["explain_code"]);
    for (deadline, attempts) in [("2", 1), ("5", 2), ("0", 1)] {
        let (gw, _) =
            gateway_with_models(&gitlab, &[("AIGW_PROMPTS__RETRY_DEADLINE", deadline)]).await;
        let failing = MockModel::start(&["--fault", "500"]);
        let body = json!({"inputs": explain_inputs("x"), "stream": false,
                          "model_metadata": meta(&failing.endpoint(), "mistral")});
        let (status, d) =
            detail(post(&gw, &token, "/v2/prompts/chat/explain_code", &body).await).await;
        assert_eq!((status, d.as_str()), (421, "500: Internal Server Error"));
        assert_eq!(
            failing.requests().await.len(),
            attempts,
            "deadline {deadline} s: 3 s first wait, 9 s second"
        );
        assert!(
            gw.logs()
                .contains("not retried: the next attempt would start after the retry deadline"),
            "{}",
            gw.logs()
        );
    }
    // A bad value names the variable.
    let out = GatewayBuilder::new()
        .env("AIGW_PROMPTS__RETRY_DEADLINE", "forever")
        .command()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AIGW_PROMPTS__RETRY_DEADLINE"));
}
