//! Never a secret in a log line: tokens (good, bad, minted), signing and
//! validation keys, and API keys in request bodies stay out of the gateway's
//! logs at debug level and out of `aigw check-config`.
mod common;
use common::*;

use std::time::Duration;

use serde_json::json;

const API_KEY: &str = "sk-test-SECRET-123";

/// Distinctive pieces of a PEM: every base64 body line.
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

/// A token and its distinctive parts (payload and signature segments).
fn token_pieces(token: &str) -> Vec<String> {
    let mut v = vec![token.to_string()];
    v.extend(
        token
            .split('.')
            .skip(1)
            .filter(|p| p.len() >= 16)
            .map(str::to_string),
    );
    v
}

fn assert_absent(haystack: &str, secrets: &[(String, String)], source: &str) {
    for (what, secret) in secrets {
        assert!(
            !haystack.contains(secret.as_str()),
            "{what} appears in {source}:\n{haystack}"
        );
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_check_config() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let builder = || {
        GatewayBuilder::new()
            .gitlab(&gitlab.url)
            .env("AIGW_LOGGING__LEVEL", "debug")
            .env("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", &other_key().pem)
            .env(
                "DUO_WORKFLOW_SELF_SIGNED_JWT__VALIDATION_KEY",
                &other_key().pem,
            )
    };
    let gw = builder().start();
    let c = client();
    let now = now();

    let valid = gitlab_key().rails_token(json!({}));
    let expired = gitlab_key().rails_token(json!({"exp": now - 600, "iat": now - 4200}));
    let wrong_aud = gitlab_key().rails_token(json!({"aud": "something-else"}));
    let foreign = TestKey::generate().rails_token(json!({}));
    let garbage = "garbage-token-5f1e0c9d2b7a4e63".to_string();
    let garbage_jwt =
        "eyJnYXJiYWdlIjp0cnVlfQ.eyJzZWNyZXQiOiJkbzpub3Q6bG9nIn0.c2lnbmF0dXJlLWdhcmJhZ2U"
            .to_string();
    let mut secrets: Vec<(String, String)> = Vec::new();

    wait_until_accepted(&gw, &valid).await;
    for (what, token) in [
        ("valid token", &valid),
        ("expired token", &expired),
        ("wrong-audience token", &wrong_aud),
        ("token of an unknown key", &foreign),
        ("garbage token", &garbage),
        ("garbage JWT", &garbage_jwt),
    ] {
        for piece in token_pieces(token) {
            secrets.push((what.to_string(), piece));
        }
        for path in ["/v1/code/user_access_token", "/v2/code/completions", "/"] {
            let resp = with_headers(c.post(gw.http_url(path)), &rails_headers(token))
                .send()
                .await
                .unwrap();
            assert!(resp.status().as_u16() < 500, "{what} {path}");
        }
        // Header-binding failures and a wrong scheme carry the token too.
        let mut h = rails_headers(token);
        h.retain(|(k, _)| *k != "x-gitlab-realm");
        with_headers(c.post(gw.http_url("/v1/code/user_access_token")), &h)
            .send()
            .await
            .unwrap();
        c.post(gw.http_url("/"))
            .header("authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap();
    }

    // A minted token, and its use.
    let resp = with_headers(
        c.post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&valid),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let minted = body["token"].as_str().unwrap().to_string();
    for piece in token_pieces(&minted) {
        secrets.push(("minted token".into(), piece));
    }
    for path in ["/v1/code/user_access_token", "/v2/completions"] {
        with_headers(c.post(gw.http_url(path)), &rails_headers(&minted))
            .send()
            .await
            .unwrap();
    }

    // An API key in a JSON body, on several routes, with and without a token.
    let payload = json!({"model_metadata": {"api_key": API_KEY, "provider": "openai",
                         "endpoint": "http://127.0.0.1:9/v1", "name": "mistral"},
                         "prompt": "x"});
    for path in [
        "/v2/code/completions",
        "/v1/code/user_access_token",
        "/nope",
    ] {
        with_headers(c.post(gw.http_url(path)), &rails_headers(&valid))
            .json(&payload)
            .send()
            .await
            .unwrap();
        c.post(gw.http_url(path))
            .json(&payload)
            .send()
            .await
            .unwrap();
    }
    // The same in headers other clients might send.
    c.post(gw.http_url("/v2/code/completions"))
        .header("x-api-key", API_KEY)
        .header("x-request-id", "secrets-test")
        .json(&payload)
        .send()
        .await
        .unwrap();
    secrets.push(("API key".into(), API_KEY.into()));

    // HTTP/2 (prior knowledge) with the same token: h2 logs frames at debug.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = with_headers(
        h2.post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&valid),
    )
    .json(&payload)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    for pem in [&signing_key().pem, &other_key().pem] {
        for line in pem_body_lines(pem) {
            secrets.push(("a PEM line of a configured key".into(), line));
        }
    }

    // Let the last access-log lines arrive, then stop (shutdown logs too). The
    // runtime keeps running meanwhile, so the clients can answer the drain.
    assert!(
        gw.wait_for_log_async("secrets-test", Duration::from_secs(5))
            .await
    );
    let logs_handle = gw.logs.clone();
    let status = tokio::task::spawn_blocking(move || gw.stop())
        .await
        .unwrap();
    assert!(status.success());
    let logs = logs_handle.lock().unwrap().join("\n");
    // The test only means something if debug logging was on and requests were logged.
    assert!(logs.contains("\"DEBUG\""), "no debug lines:\n{logs}");
    assert!(logs.contains("request not authenticated"), "{logs}");
    assert_absent(&logs, &secrets, "the gateway logs");

    // check-config with the same environment, keys inline.
    let out = builder()
        .arg("check-config")
        .command()
        .output()
        .expect("run check-config");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("redacted"), "{text}");
    assert_absent(&text, &secrets, "check-config output");
}

#[test]
fn broken_and_file_keys_are_not_echoed() {
    // A key that does not parse: its content must not show up in the error.
    let bogus_line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2";
    let bogus = format!("-----BEGIN PRIVATE KEY-----\n{bogus_line}\n-----END PRIVATE KEY-----\n");
    let out = GatewayBuilder::new()
        .env("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", &bogus)
        .arg("check-config")
        .command()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("AIGW_SELF_SIGNED_JWT__SIGNING_KEY"), "{text}");
    assert!(!text.contains(bogus_line), "{text}");

    // The same broken key at serve time: startup fails without echoing it.
    let out = GatewayBuilder::new()
        .env("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", &bogus)
        .command()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains(bogus_line), "{text}");

    // A key given as a file: check-config names the file, not its content.
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(dir.path(), "signing.pem", &signing_key().pem);
    let out = GatewayBuilder::new()
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
            path.to_str().unwrap(),
        )
        .arg("check-config")
        .command()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    for line in pem_body_lines(&signing_key().pem) {
        assert!(!text.contains(&line), "{text}");
    }
}

const URL_PASSWORD: &str = "url-pa55word-7c1d";

/// `url` with a user name and `URL_PASSWORD` in it.
fn with_credentials(url: &str) -> String {
    url.replacen("://", &format!("://aigw:{URL_PASSWORD}@"), 1)
}

#[tokio::test]
async fn credentials_in_issuer_urls_are_not_logged() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    // A portal that refuses connections, so that failures are logged too.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    // A second GitLab instance that is not there either.
    let closed_instance = format!("{closed}/gitlab-b");
    let gw = GatewayBuilder::new()
        .gitlab(&with_credentials(&gitlab.url))
        .env("AIGW_CUSTOMER_PORTAL_URL", &with_credentials(&closed))
        .env(
            "AIGW_ADDITIONAL_GITLAB_URLS",
            &with_credentials(&closed_instance),
        )
        .env("AIGW_LOGGING__LEVEL", "debug")
        .start();
    wait_until_accepted(&gw, &gitlab_key().rails_token(json!({}))).await;
    for needle in [
        "OIDC signing keys loaded",
        "cannot refresh OIDC signing keys",
    ] {
        assert!(
            gw.wait_for_log_async(needle, Duration::from_secs(10)).await,
            "{}",
            gw.logs()
        );
    }
    assert!(!gw.logs().contains(URL_PASSWORD), "{}", gw.logs());
    // Readiness names the failing issuers, and metrics label every issuer by
    // URL: neither with the credentials.
    let ready = get_text(&gw.http_url("/monitoring/ready")).await;
    assert!(ready.contains("/gitlab-b"), "{ready}");
    let metrics = get_text(&format!("http://{}/metrics", gw.addrs.metrics)).await;
    assert!(metrics.contains("aigw_oidc_signing_keys"), "{metrics}");
    for text in [&ready, &metrics] {
        assert!(!text.contains(URL_PASSWORD), "{text}");
    }
}

#[test]
fn check_config_does_not_print_url_credentials() {
    let out = GatewayBuilder::new()
        .gitlab(&with_credentials("https://gitlab.example.com"))
        .env(
            "AIGW_CUSTOMER_PORTAL_URL",
            &with_credentials("https://customers.example.com"),
        )
        // check-config fetches every issuer: a refused one reports its error.
        .env(
            "AIGW_ADDITIONAL_GITLAB_URLS",
            &with_credentials("http://127.0.0.1:9/gitlab-b"),
        )
        .arg("check-config")
        .command()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("gitlab.example.com"), "{text}");
    assert!(text.contains("127.0.0.1:9/gitlab-b"), "{text}");
    assert!(!text.contains(URL_PASSWORD), "{text}");
}
