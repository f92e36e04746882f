//! The key-fetch side: a broken, slow or absent GitLab (or customer portal)
//! never stops the gateway from binding and serving, is explained in a WARN
//! log line, and is recovered from without a restart.
mod common;
use common::*;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MINT: &str = "/v1/code/user_access_token";
const FORBIDDEN: &str = r#"{"error":"Forbidden by auth provider"}"#;

/// Status, body and latency of a token-minting call with Rails' headers.
async fn try_token(gw: &Gateway, token: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let resp = with_headers(client().post(gw.http_url(MINT)), &rails_headers(token))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (status, body, start.elapsed())
}

async fn healthz(gw: &Gateway) -> (u16, String) {
    let resp = client()
        .get(gw.http_url("/monitoring/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("healthz");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// JSON log lines at WARN that say keys could not be refreshed and contain `needle`.
fn fetch_warnings(gw: &Gateway, needle: &str) -> Vec<Value> {
    gw.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "WARN" && v["message"] == "cannot refresh OIDC signing keys")
        .collect()
}

/// Waits for such a warning; panics with the logs after `timeout`.
async fn wait_for_fetch_warning(gw: &Gateway, needle: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = fetch_warnings(gw, needle).into_iter().next() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no WARN line mentioning {needle:?}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A closed loopback port: bound once, then released.
async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// GitLab answers its OIDC endpoints in `mode`; the gateway comes up anyway,
/// refuses tokens, says why, and accepts them once GitLab is fixed.
async fn fault_then_recovery(mode: JwksMode, needle: &str, warn_within: Duration) {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    gitlab.set_mode(mode);
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    assert_eq!(healthz(&gw).await, (200, "{}".to_string()), "{mode:?}");

    let token = gitlab_key().rails_token(json!({}));
    let (status, body, took) = try_token(&gw, &token).await;
    assert_eq!((status, body.as_str()), (401, FORBIDDEN), "{mode:?}");
    // At most the bounded wait for an early refresh; a hanging GitLab must not hold requests.
    assert!(
        took < Duration::from_secs(5),
        "{mode:?}: refusal took {took:?}"
    );

    let warning = wait_for_fetch_warning(&gw, needle, warn_within).await;
    assert!(
        warning["issuer"]
            .as_str()
            .unwrap_or("")
            .contains(&gitlab.url),
        "the warning should name the issuer: {warning}"
    );
    // Still serving while broken.
    assert_eq!(healthz(&gw).await.0, 200, "{mode:?}");
    let (status, body, _) = try_token(&gw, &token).await;
    assert_eq!((status, body.as_str()), (401, FORBIDDEN), "{mode:?}");

    gitlab.set_mode(JwksMode::Normal);
    let start = Instant::now();
    wait_until_accepted(&gw, &token).await;
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{mode:?}: recovery took {:?}",
        start.elapsed()
    );
    assert!(
        gw.logs().contains("OIDC signing keys loaded"),
        "{}",
        gw.logs()
    );
    assert_eq!(healthz(&gw).await.0, 200);
}

#[tokio::test]
async fn jwks_status_500() {
    fault_then_recovery(JwksMode::Status500, "status 500", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn jwks_invalid_json() {
    fault_then_recovery(
        JwksMode::InvalidJson,
        "invalid JSON",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn jwks_50_mb_body() {
    fault_then_recovery(JwksMode::Huge, "larger than", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn discovery_without_jwks_uri() {
    fault_then_recovery(JwksMode::NoJwksUri, "jwks_uri", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn discovery_hangs() {
    // The fetch gives up after its request timeout (10 s).
    fault_then_recovery(JwksMode::Hang, "timed out", Duration::from_secs(25)).await;
}

#[tokio::test]
async fn unreachable_gitlab_does_not_prevent_serving() {
    let url = closed_port_url().await;
    let gw = GatewayBuilder::new().gitlab(&url).start();
    assert_eq!(healthz(&gw).await, (200, "{}".to_string()));
    let token = gitlab_key().rails_token(json!({}));
    let (status, body, took) = try_token(&gw, &token).await;
    assert_eq!((status, body.as_str()), (401, FORBIDDEN));
    assert!(took < Duration::from_secs(5), "refusal took {took:?}");
    let w = wait_for_fetch_warning(&gw, &url, Duration::from_secs(10)).await;
    assert!(
        w.to_string().to_ascii_lowercase().contains("refused"),
        "the warning should say the connection was refused: {w}"
    );
    // Unauthenticated smoke test still answers.
    let r = client().get(gw.http_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"No authorization header presented"}"#
    );
    // Gateway-minted tokens do not need GitLab at all.
    assert!(gw.stop().success());
}

#[tokio::test]
async fn blackholed_gitlab_does_not_hold_requests() {
    let hole = Blackhole::start().await;
    let gw = GatewayBuilder::new().gitlab(&hole.url).start();
    assert_eq!(healthz(&gw).await.0, 200);
    let token = gitlab_key().rails_token(json!({}));
    for _ in 0..3 {
        let (status, body, took) = try_token(&gw, &token).await;
        assert_eq!((status, body.as_str()), (401, FORBIDDEN));
        assert!(took < Duration::from_secs(5), "refusal took {took:?}");
    }
    assert!(hole.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(healthz(&gw).await.0, 200);
}

#[tokio::test]
async fn offline_license_never_contacts_a_customer_portal() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    // The harness default: both portal URLs set and empty.
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    let logs = gw.logs();
    let offline: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("offline license"))
        .collect();
    assert_eq!(offline.len(), 2, "one line per service expected:\n{logs}");
    assert!(offline.iter().any(|l| l.contains("AI Gateway")), "{logs}");
    assert!(offline.iter().any(|l| l.contains("Duo Workflow")), "{logs}");
    assert!(
        !logs.contains("\"issuer\":\"CustomersDot"),
        "a customer portal issuer exists:\n{logs}"
    );
    assert!(!logs.contains("customers.gitlab.com"), "{logs}");
    assert!(!logs.contains("cannot refresh OIDC signing keys"), "{logs}");
    let loaded: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("OIDC signing keys loaded"))
        .collect();
    assert_eq!(
        loaded.len(),
        1,
        "exactly one issuer (GitLab, shared by both services):\n{logs}"
    );
    assert!(loaded[0].contains(&gitlab.url), "{}", loaded[0]);

    // One issuer only: a restart-free burst of requests causes no further fetches.
    let hits = gitlab.jwks_hits();
    for _ in 0..10 {
        let (status, _, _) = try_token(&gw, &token).await;
        assert_eq!(status, 200);
    }
    assert_eq!(gitlab.jwks_hits(), hits, "cached keys must answer requests");

    // Only one side declared offline: the other side follows (one instance),
    // and both say so in check-config.
    for builder in [
        GatewayBuilder::new(),
        GatewayBuilder::new().unset("AIGW_CUSTOMER_PORTAL_URL"),
        GatewayBuilder::new().unset("DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL"),
    ] {
        let builder = builder.gitlab(&gitlab.url);
        let out = builder.command().arg("check-config").output().unwrap();
        assert!(out.status.success());
        let report: Value = serde_json::from_slice(&out.stdout).expect("check-config prints JSON");
        for side in ["gateway_auth", "workflow_auth"] {
            assert_eq!(report[side]["offline_license"], true, "{report}");
            assert_eq!(report[side]["customer_portal_url"], Value::Null, "{report}");
        }
        let gw = builder.start();
        wait_until_accepted(&gw, &token).await;
        assert_eq!(
            gw.logs().matches("offline license").count(),
            2,
            "{}",
            gw.logs()
        );
    }
}

#[tokio::test]
async fn blackholed_customer_portal_adds_no_latency_once_keys_are_cached() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let portal = Blackhole::start().await;
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_CUSTOMER_PORTAL_URL", &portal.url)
        .env("DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL", &portal.url)
        .start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;

    // The test only means something if the portal really was contacted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while portal.accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the blackholed portal was never contacted:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut times = Vec::new();
    for _ in 0..10 {
        let (status, body, took) = try_token(&gw, &token).await;
        assert_eq!(status, 200, "{body}");
        times.push(took);
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    assert!(
        median < Duration::from_millis(100),
        "median {median:?} ({times:?})"
    );
    assert!(max < Duration::from_secs(1), "max {max:?} ({times:?})");

    // A token naming an unknown kid waits for the early refresh only briefly,
    // even though the portal never answers.
    let stranger = other_key().rails_token(json!({}));
    let (status, body, took) = try_token(&gw, &stranger).await;
    assert_eq!((status, body.as_str()), (401, FORBIDDEN));
    assert!(took < Duration::from_secs(4), "unknown kid took {took:?}");
    // And the known one is still fast right after.
    let (status, _, took) = try_token(&gw, &token).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn unknown_kid_floods_do_not_hammer_gitlab() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    wait_until_accepted(&gw, &gitlab_key().rails_token(json!({}))).await;
    let before = gitlab.jwks_hits();
    let start = Instant::now();
    for i in 0..30 {
        let stranger = other_key().sign(&rails_claims(), Some(&format!("unknown-kid-{i}")));
        let (status, body, _) = try_token(&gw, &stranger).await;
        assert_eq!((status, body.as_str()), (401, FORBIDDEN));
    }
    let fetched = gitlab.jwks_hits() - before;
    assert!(
        fetched <= 2,
        "30 unknown-kid tokens caused {fetched} JWKS fetches"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let (status, _, _) = try_token(&gw, &gitlab_key().rails_token(json!({}))).await;
    assert_eq!(status, 200);
}
