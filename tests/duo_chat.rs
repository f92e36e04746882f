//! `POST /v2/chat/agent`: Duo Chat's ReAct loop through the real gateway to
//! the mock model. The mock answers the `MOCK_REPLY:` of the last user
//! message, so each test scripts the model's Thought/Action/Final Answer text.
mod common;

use common::*;
use serde_json::{Value, json};

fn meta(endpoint: &str) -> Value {
    json!({"provider": "openai", "name": "mistral", "endpoint": endpoint,
           "api_key": "sk-test-model-key", "identifier": "custom_openai/Mistral-7B"})
}

fn chat_token() -> String {
    gitlab_key().rails_token(json!({"scopes": [
        "duo_chat", "duo_classic_chat", "ask_issue", "ask_merge_request", "documentation_search",
        "include_file_context"]}))
}

async fn post(gw: &Gateway, token: &str, body: &Value, version: &str) -> reqwest::Response {
    let mut headers = rails_headers(token);
    headers.retain(|(k, _)| *k != "x-gitlab-version");
    headers.push(("x-gitlab-version", version.to_string()));
    with_headers(client().post(gw.http_url("/v2/chat/agent")), &headers)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_two_step_react_turn() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = chat_token();

    // Step 1: the model asks for a tool; the text after Observation: is cut by the stop sequence.
    let question = "What is #7 about? MOCK_REPLY: I need the issue\\_data.\\nAction: issue\\_reader\\nAction Input: #7\\nObservation: invented";
    let body = json!({
        "messages": [
            {"role": "user", "content": "hi", "context": null, "current_file": null, "additional_context": []},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": question,
             "context": {"type": "issue", "content": "short description"},
             "current_file": {"file_path": "app.rb", "data": "puts 1", "selected_code": true},
             "additional_context": [{"category": "file", "id": "x.rb", "content": "X = 1", "metadata": {}}]}
        ],
        "model_metadata": meta(&mock.endpoint()),
        "unavailable_resources": ["Pipelines", "Vulnerabilities"]
    });
    let resp = post(&gw, &token, &body, "18.6.0").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-ndjson; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        r##"{"type": "action", "data": {"tool": "issue_reader", "tool_input": "#7", "thought": "I need the issue_data."}}"##
    );
    let usage: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(usage["type"], "usage");
    assert!(
        usage["data"]["usage"]["Mistral-7B"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(lines.next().is_none());

    let sent = mock.requests().await.last().unwrap()["body"].clone();
    assert_eq!(sent["stop"], json!(["Observation:"]));
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["max_tokens"], 8192);
    assert_eq!(sent["stream"], true);
    let m = sent["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    let system = m[0]["content"].as_str().unwrap();
    assert!(system.contains("- issue_reader:") && system.contains("- merge_request_reader:"));
    assert!(system.contains("- gitlab_documentation:") && !system.contains("epic_reader"));
    assert!(system.contains("Pipelines, Vulnerabilities"));
    let user = m[3]["content"].as_str().unwrap();
    assert!(
        user.contains("short description") && user.contains("puts 1") && user.contains("X = 1"),
        "{user}"
    );
    assert_eq!(m[4]["content"], "Thought:");

    // Step 2: Rails sends the scratchpad; the model answers.
    let mut body = body;
    let msgs = body["messages"].as_array_mut().unwrap();
    msgs[2]["content"] = json!(
        "What is #7 about? MOCK_REPLY: I know now.\\nFinal Answer: Issue #7 is about \"caching\" – done."
    );
    msgs.push(json!({"role": "assistant", "content": null, "agent_scratchpad": [
        {"action": {"thought": "I need the issue data.", "tool": "issue_reader", "tool_input": "#7"},
         "observation": "Issue #7: caching"}]}));
    let resp = post(&gw, &token, &body, "18.6.0").await;
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "final_answer_delta")
        .collect();
    assert!(deltas.len() >= 2, "{text}");
    let answer: String = deltas
        .iter()
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(answer, "Issue #7 is about \"caching\" – done.");
    assert!(
        deltas[..deltas.len() - 1]
            .iter()
            .all(|e| e["data"]["finish_reason"].is_null())
    );
    assert_eq!(deltas.last().unwrap()["data"]["finish_reason"], "stop");
    assert!(text.contains("\\u2013"), "Python's ensure_ascii: {text}");
    assert!(text.contains(r#"{"type": "final_answer_delta", "data": {"text": "#));
    assert_eq!(events.last().unwrap()["type"], "usage");
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let prefill = sent["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        prefill,
        "Thought: I need the issue data.\nAction: issue_reader\nAction Input: #7\nObservation: Issue #7: caching\nThought:"
    );
}

#[tokio::test]
async fn unknown_output_unavailable_tools_and_old_gitlab() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = chat_token();
    let ask = |content: &str| {
        json!({"messages": [{"role": "user", "content": content}],
                                      "model_metadata": meta(&mock.endpoint())})
    };
    let text = post(&gw, &token, &ask("MOCK_REPLY: just text"), "18.6.0")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with(r#"{"type": "unknown", "data": {"text": "just text"}}"#),
        "{text}"
    );

    // epic_reader needs ask_epic, which the token lacks.
    let text = post(
        &gw,
        &token,
        &ask("MOCK_REPLY: Thought: x\\nAction: epic_reader\\nAction Input: &1"),
        "18.6.0",
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        text.starts_with(
            r#"{"type": "error", "data": {"message": "tool not available", "retryable": false}}"#
        ),
        "{text}"
    );

    // merge_request_reader needs GitLab >= 17.5.
    let text = post(
        &gw,
        &token,
        &ask("MOCK_REPLY: Thought: x\\nAction: MergeRequestReader\\nAction Input: !1"),
        "17.4.0",
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.contains("tool not available"), "{text}");
    let system = mock.requests().await.last().unwrap()["body"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!system.contains("merge_request_reader") && system.contains("issue_reader"));
    let text = post(
        &gw,
        &token,
        &ask("MOCK_REPLY: Thought: x\\nAction: MergeRequestReader\\nAction Input: !1"),
        "17.5.0-pre",
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.contains(r#""tool": "merge_request_reader""#), "{text}");
}

#[tokio::test]
async fn model_faults_become_an_error_line() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = chat_token();
    let ask = |content: &str| {
        json!({"messages": [{"role": "user", "content": content}],
                                      "model_metadata": meta(&mock.endpoint())})
    };
    // Reset after two tokens, mid-answer.
    let resp = post(
        &gw,
        &token,
        &ask("MOCK_FAULT: reset\nMOCK_REPLY: Final Answer: one two three four"),
        "18.6.0",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{text}");
    assert_eq!(last["data"]["retryable"], false);
    // Failure before anything streamed.
    let text = post(&gw, &token, &ask("MOCK_FAULT: 500"), "18.6.0")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(
        text.starts_with(r#"{"type": "error", "data": {"message": "the model endpoint"#),
        "{text}"
    );
    assert!(!text.contains("sk-test-model-key"));
}

#[tokio::test]
async fn authorization_rules_and_bad_requests() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let ep = mock.endpoint();
    let ask = |content: &str| json!({"messages": [{"role": "user", "content": content}], "model_metadata": meta(&ep)});
    let cases = [
        (
            vec!["complete_code"],
            ask("hi"),
            403,
            "Unauthorized to access duo chat",
        ),
        (
            vec!["duo_chat"],
            ask("hi"),
            403,
            "Duo Core no longer authorized to access Duo Classic Chat",
        ),
        (
            vec!["duo_classic_chat"],
            json!({"messages": [{"role": "user", "content": "hi", "additional_context": [{"category": "terminal", "content": "ls"}]}],
                "model_metadata": meta(&ep)}),
            403,
            "Unauthorized to access include_terminal_context",
        ),
        (
            vec!["duo_classic_chat"],
            json!({"messages": [{"role": "user", "content": "hi", "agent_scratchpad": []}], "model_metadata": meta(&ep)}),
            400,
            "agent_scratchpad can only be present when role is ASSISTANT",
        ),
        (
            vec!["duo_classic_chat"],
            json!({"messages": "nope"}),
            422,
            "Validation error",
        ),
    ];
    for (scopes, body, status, needle) in cases {
        let token = gitlab_key().rails_token(json!({ "scopes": scopes }));
        let resp = post(&gw, &token, &body, "18.6.0").await;
        assert_eq!(resp.status().as_u16(), status, "{needle}");
        let v: Value = resp.json().await.unwrap();
        assert!(error_message(status, &v).contains(needle), "{v}");
    }
    // Duo Core users keep classic chat when they address @GitLabDuo.
    let token = gitlab_key().rails_token(json!({ "scopes": ["duo_chat"] }));
    let resp = post(
        &gw,
        &token,
        &ask("@GitLabDuo MOCK_REPLY: Final Answer: yes"),
        "18.6.0",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#""text": "yes""#));
}

/// Requests the Rails audit (rails-conformance.md §3) found refused: a
/// `user_rule` additional context (Rails' DUO_CHAT_CONTEXT_CATEGORIES has
/// it) and `current_file.file_path: null` (react_executor's current_file).
#[tokio::test]
async fn user_rule_context_and_a_null_file_path_are_accepted() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let token = gitlab_key().rails_token(json!({"scopes": [
        "duo_chat", "duo_classic_chat", "include_file_context", "include_user_rule_context"]}));
    let body = json!({
        "messages": [
            {"role": "user", "content": "Refactor this. MOCK_REPLY: Final Answer: Done.",
             "context": null,
             "current_file": {"file_path": null, "data": "def f(): pass", "selected_code": true},
             "additional_context": [
                 {"category": "user_rule", "id": "team-rules.md", "content": "Always use type hints.", "metadata": {}},
                 {"category": "file", "id": "a.py", "content": "A = 1", "metadata": null}],
             "agent_scratchpad": null}
        ],
        "model_metadata": meta(&mock.endpoint()),
        "unavailable_resources": ["Pipelines", "Vulnerabilities"]
    });
    let resp = post(&gw, &token, &body, "18.6.0").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""text": "Done.""#), "{text}");
    let sent = mock.requests().await.last().unwrap()["body"].clone();
    let user = sent["messages"][1]["content"].as_str().unwrap().to_string();
    assert!(
        user.contains("Always use type hints.") && user.contains("def f(): pass"),
        "{user}"
    );
    assert!(
        !user.to_lowercase().contains(" none"),
        "no null rendered: {user}"
    );

    // The unit primitive still applies to the new category.
    let token = gitlab_key().rails_token(json!({"scopes": ["duo_chat", "duo_classic_chat"]}));
    let resp = post(&gw, &token, &body, "18.6.0").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["detail"],
        "Unauthorized to access include_user_rule_context"
    );
    // An unknown category is still a 422 naming the accepted list.
    let mut bad = body.clone();
    bad["messages"][0]["additional_context"][0]["category"] = json!("telepathy");
    let resp = post(&gw, &chat_token(), &bad, "18.6.0").await;
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    let msg = error_message(422, &v);
    assert!(
        msg.contains("telepathy") && msg.contains("user_rule"),
        "{msg}"
    );
}

/// A conversation longer than the model's context: the model server's 400
/// reaches Duo Chat as an `error` event containing "prompt is too long",
/// which Rails maps to its "/clear" hint (react_executor L119-146).
#[tokio::test]
async fn a_context_length_error_says_prompt_is_too_long() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&[]);
    let (gw, _) = gateway_with_models(&gitlab, &[]).await;
    let body = json!({
        "messages": [{"role": "user", "content": "A very long history... MOCK_FAULT: context-length",
                      "context": null, "current_file": null, "additional_context": []}],
        "model_metadata": meta(&mock.endpoint()),
    });
    let resp = post(&gw, &chat_token(), &body, "18.6.0").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["type"], "error");
    let message = events[0]["data"]["message"].as_str().unwrap();
    assert!(message.contains("prompt is too long"), "{message}");
    assert_eq!(events[0]["data"]["retryable"], false);
    assert!(!text.contains("sk-test-model-key"));

    // Other model failures keep their own text (Rails' generic error).
    let body = json!({
        "messages": [{"role": "user", "content": "hi MOCK_FAULT: 500",
                      "context": null, "current_file": null, "additional_context": []}],
        "model_metadata": meta(&mock.endpoint()),
    });
    let text = post(&gw, &chat_token(), &body, "18.6.0")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#""type": "error""#) && !text.contains("prompt is too long"),
        "{text}"
    );
}
