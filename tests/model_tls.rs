//! Self-hosted model servers behind TLS: the model client trusts exactly the
//! CA bundle the administrator names (REQUESTS_CA_BUNDLE / SSL_CERT_FILE ...,
//! the same store as the JWKS client) and presents the `AIGW_MTLS__*` client
//! certificate when the model server demands one. The model server here is
//! the mock behind a real TLS front on loopback.
mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::{Value, json};

fn completion(endpoint: &str) -> Value {
    json!({
        "prompt_version": 2,
        "project_path": "group/project",
        "current_file": {
            "file_name": "app/answer.py",
            "content_above_cursor": "# MOCK_REPLY: return 42\ndef answer():\n    ",
            "content_below_cursor": "\n",
        },
        "model_provider": "litellm",
        "model_name": "codestral",
        "model_endpoint": endpoint,
        "model_api_key": "sk-tls-model-key",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
        "stream": false,
    })
}

async fn complete(gw: &Gateway, token: &str, endpoint: &str) -> (u16, Value) {
    let resp = with_headers(
        client().post(gw.http_url("/v2/code/completions")),
        &rails_headers(token),
    )
    .json(&completion(endpoint))
    .send()
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(!text.contains("sk-tls-model-key"), "{text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}")),
    )
}

#[tokio::test]
async fn model_server_with_a_private_ca_is_trusted_through_requests_ca_bundle() {
    let ca = TestCa::new();
    let mock = MockModel::start(&[]);
    let front = TlsFront::start(&ca, mock.addr, false).await;
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let bundle = ca.ca_path().display().to_string();
    let (gw, token) =
        gateway_with_models(&gitlab, &[("REQUESTS_CA_BUNDLE", bundle.as_str())]).await;
    let (status, body) = complete(&gw, &token, &front.endpoint()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], "return 42");
    assert!(front.handshakes.load(Ordering::SeqCst) >= 1);
    let sent = mock.requests().await;
    assert_eq!(
        sent.last().unwrap()["headers"]["authorization"],
        "Bearer sk-tls-model-key"
    );
}

#[tokio::test]
async fn model_server_with_an_unknown_ca_is_refused_with_a_clear_error() {
    let ca = TestCa::new();
    let mock = MockModel::start(&[]);
    let front = TlsFront::start(&ca, mock.addr, false).await;
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    // No bundle: the system roots, which do not know the private CA.
    let (gw, token) = gateway_with_models(&gitlab, &[]).await;
    let (status, body) = complete(&gw, &token, &front.endpoint()).await;
    assert_eq!(status, 502, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("localhost"), "{detail}");
    assert!(
        detail.to_lowercase().contains("certificate"),
        "the cause should be named: {detail}"
    );
    assert!(mock.requests().await.is_empty(), "no request got through");
    // The gateway keeps serving.
    let plain = MockModel::start(&[]);
    let (status, _) = complete(&gw, &token, &plain.endpoint()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn model_server_demanding_a_client_certificate_gets_the_mtls_one() {
    let ca = TestCa::new();
    let mock = MockModel::start(&[]);
    let front = TlsFront::start(&ca, mock.addr, true).await;
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let bundle = ca.ca_path().display().to_string();

    // Without a client certificate the model server refuses the handshake.
    let (gw, token) =
        gateway_with_models(&gitlab, &[("REQUESTS_CA_BUNDLE", bundle.as_str())]).await;
    let (status, body) = complete(&gw, &token, &front.endpoint()).await;
    assert_eq!(status, 502, "{body}");
    assert!(mock.requests().await.is_empty());
    drop(gw);

    // With AIGW_MTLS__* it is presented and the completion goes through.
    let (cert, key) = (
        ca.cert_path().display().to_string(),
        ca.key_path().display().to_string(),
    );
    let (gw, token) = gateway_with_models(
        &gitlab,
        &[
            ("REQUESTS_CA_BUNDLE", bundle.as_str()),
            ("AIGW_MTLS__ENABLED", "true"),
            ("AIGW_MTLS__CERT_FILE", cert.as_str()),
            ("AIGW_MTLS__KEY_FILE", key.as_str()),
        ],
    )
    .await;
    let (status, body) = complete(&gw, &token, &front.endpoint()).await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    assert_eq!(body["choices"][0]["text"], "return 42");
    assert!(front.with_client_cert.load(Ordering::SeqCst) >= 1);
    // The key file's PEM never reaches the logs.
    let logs = gw.logs();
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}
