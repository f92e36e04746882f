//! What a newcomer does after `make run`: mint a development token with
//! `aigw dev-token` and send the README's `curl` to a local model server
//! (the mock stands in for Ollama). The request body is read from the
//! README itself, so the documented command is the tested one.
mod common;

use std::{path::Path, process::Output};

use common::*;
use serde_json::{Value, json};

/// A gateway as `make run` starts it: `--dev`, no signing keys, custom
/// models on, in `dir`.
fn dev_gateway(dir: &Path) -> GatewayBuilder {
    GatewayBuilder::new()
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env("AIGW_CUSTOM_MODELS__ENABLED", "true")
        .arg("--dev")
        .dir(dir)
}

fn dev_token(dir: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = aigw_command();
    cmd.arg("dev-token")
        .current_dir(dir)
        .envs(extra_env.iter().copied());
    cmd.output().unwrap()
}

/// The JSON body of the README's `curl ... /v2/code/completions` command.
fn readme_completion_body() -> Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```")
        .find(|b| b.contains("curl") && b.contains("/v2/code/completions") && b.contains("$TOKEN"))
        .expect("the README has the completion curl");
    let body = block.split("-d '").nth(1).unwrap();
    let body = &body[..body.find('\'').unwrap()];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("README body is not JSON ({e}):\n{body}"))
}

async fn complete(gw: &Gateway, token: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.http_url("/v2/code/completions"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-gitlab-authentication-type", "oidc")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn dev_token_and_the_readme_curl_get_a_completion() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockModel::start(&[]);
    let mut body = readme_completion_body();
    assert_eq!(body["model_endpoint"], "http://localhost:11434/v1");
    body["model_endpoint"] = json!(mock.endpoint());

    // No --dev gateway has run here yet: a clear refusal.
    let out = dev_token(dir.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tmp/aigw-dev.key") && err.contains("--dev"),
        "{err}"
    );

    let gw = dev_gateway(dir.path()).start();
    assert!(
        gw.logs().contains("development mode (--dev)"),
        "a loud warning: {}",
        gw.logs()
    );
    let key = dir.path().join("tmp/aigw-dev.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = dev_token(dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEVELOPMENT ONLY"), "{err}");
    assert_eq!(jwt_payload(&token)["iss"], GATEWAY_AUD);

    let resp = complete(&gw, &token, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty(), "{v}");
    let sent = mock.requests().await;
    assert_eq!(sent.len(), 1, "the model server was called");
    assert!(
        sent[0]["body"].to_string().contains("def fib(n):"),
        "{}",
        sent[0]
    );

    // The same token covers Duo Chat too.
    let chat = json!({
        "messages": [{"role": "user", "content": "MOCK_REPLY: Final Answer: Hello.",
                      "context": null, "current_file": null, "additional_context": []}],
        "model_metadata": {"provider": "openai", "name": "mistral", "endpoint": mock.endpoint(),
                           "api_key": "", "identifier": "custom_openai/mistral"},
    });
    let resp = client()
        .post(gw.http_url("/v2/chat/agent"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-gitlab-authentication-type", "oidc")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Hello."));
    assert!(gw.stop_async().await.success());

    // The key is kept: a restarted --dev gateway still accepts the token.
    let gw = dev_gateway(dir.path()).start();
    assert_eq!(complete(&gw, &token, &body).await.status(), 200);
    assert!(gw.stop_async().await.success());

    // Without --dev the development key is never trusted.
    let gw = GatewayBuilder::new()
        .env("AIGW_CUSTOM_MODELS__ENABLED", "true")
        .dir(dir.path())
        .start();
    let resp = complete(&gw, &token, &body).await;
    assert_eq!(resp.status(), 401);
    assert!(gw.stop_async().await.success());
}

/// With a real signing key configured, a gateway never uses the development
/// key, so `dev-token` refuses rather than print a token that cannot work.
#[test]
fn dev_token_refuses_when_a_signing_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp/aigw-dev.key"), &other_key().pem).unwrap();
    let out = dev_token(
        dir.path(),
        &[(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY",
            signing_key().pem.as_str(),
        )],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AIGW_SELF_SIGNED_JWT__SIGNING_KEY"), "{err}");
    assert!(!err.contains(&signing_key().pem[40..80]), "{err}");
}
