//! `GET /v1/models/definitions`: the model catalogue GitLab reads, without a
//! token, in upstream's shape, offering the self-hosted families.
mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn catalogue_is_public_json_with_the_self_hosted_families() {
    let gw = GatewayBuilder::new().start();
    let resp = client()
        .get(gw.http_url("/v1/models/definitions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    let models = body["models"].as_array().unwrap();
    let ids: Vec<&str> = models
        .iter()
        .map(|m| m["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "mistral",
            "mixtral",
            "codestral",
            "llama3",
            "codellama",
            "gpt",
            "codegemma",
            "deepseekcoder",
            "claude_3",
            "gemini",
            "qwen",
            "general",
            "embedding"
        ]
    );
    for m in models {
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            6,
            "name identifier provider deprecation description cost_indicator: {m}"
        );
        // No provider, so the name is bare (no " - <provider>").
        assert!(m["provider"].is_null());
        assert!(!m["name"].as_str().unwrap().contains(" - "));
        assert!(m["deprecation"].is_null());
        assert!(m.get("description").is_some() && m.get("cost_indicator").is_some());
    }
    assert_eq!(models[0]["name"], "Mistral");
    assert_eq!(models[10]["name"], "Self-Hosted Qwen");
}

#[tokio::test]
async fn feature_settings_offer_families_that_fit_them() {
    let gw = GatewayBuilder::new().start();
    let body: Value = client()
        .get(gw.http_url("/v1/models/definitions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let settings = body["unit_primitives"].as_array().unwrap();
    let find = |name: &str| {
        settings
            .iter()
            .find(|s| s["feature_setting"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    for s in settings {
        for key in [
            "feature_setting",
            "default_model",
            "default_models",
            "models_for_tags",
            "models_for_size_preference",
            "selectable_models",
            "beta_models",
            "deprecated_models",
            "dev",
            "unit_primitives",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        let default = s["default_model"].as_str().unwrap();
        assert_eq!(s["default_models"], serde_json::json!([default]));
        assert!(
            s["selectable_models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == default),
            "{s}"
        );
        assert!(s["models_for_tags"].as_object().unwrap().is_empty());
        assert!(s["dev"].is_null());
    }
    let selectable = |s: &Value| -> Vec<String> {
        s["selectable_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    };

    let completions = find("code_completions");
    assert_eq!(
        completions["unit_primitives"],
        serde_json::json!(["complete_code"])
    );
    assert_eq!(completions["default_model"], "codestral");
    let offered = selectable(&completions);
    for code_model in [
        "codestral",
        "codegemma",
        "codellama",
        "deepseekcoder",
        "mistral",
    ] {
        assert!(offered.contains(&code_model.to_string()), "{code_model}");
    }
    assert!(!offered.contains(&"embedding".to_string()));

    let chat = find("duo_chat");
    let offered = selectable(&chat);
    assert!(offered.contains(&"mistral".to_string()));
    assert!(
        !offered.contains(&"codegemma".to_string()),
        "FIM-only models do not chat"
    );
    assert!(!offered.contains(&"embedding".to_string()));

    assert_eq!(selectable(&find("embeddings_code")), ["embedding"]);
    for name in [
        "code_generations",
        "duo_chat_explain_code",
        "generate_commit_message",
        "duo_agent_platform",
        "model_configuration",
        "resolve_dependency_bump",
    ] {
        find(name);
    }
}

#[tokio::test]
async fn a_token_is_not_needed_but_a_bad_one_is_not_refused_either() {
    // Upstream skips authentication on this path entirely.
    let gw = GatewayBuilder::new().start();
    let resp = client()
        .get(gw.http_url("/v1/models/definitions"))
        .header("authorization", "Bearer garbage")
        .header("x-gitlab-authentication-type", "oidc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(gw.http_url("/v1/models/definitions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}
