//! The install document's smoke test and the basic token round trip.
mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn unauthenticated_root_answers_the_documented_401() {
    let gw = GatewayBuilder::new().start();
    let resp = client().get(gw.http_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":"No authorization header presented"}"#
    );
    let resp = client().head(gw.http_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(gw.http_url("/monitoring/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert!(gw.stop().success());
}

#[tokio::test]
async fn rails_token_mints_a_user_access_token() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    let resp = with_headers(
        client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&token),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let minted = body["token"].as_str().unwrap();
    let claims = jwt_payload(minted);
    assert_eq!(claims["iss"], GATEWAY_AUD);
    assert_eq!(claims["aud"], GATEWAY_AUD);
    assert_eq!(claims["sub"], GLOBAL_USER_ID);
    assert_eq!(claims["scopes"], json!(["complete_code"]));
    assert_eq!(claims["exp"], body["expires_at"]);
}

#[tokio::test]
async fn api_docs_work_without_a_token_and_without_a_network() {
    let gw = GatewayBuilder::new()
        .env("AIGW_FASTAPI__DOCS_URL", "/docs")
        .env("AIGW_FASTAPI__OPENAPI_URL", "/openapi.json")
        .start();
    let c = client();
    let page = c.get(gw.http_url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    // Every asset the page loads is served by the gateway itself.
    for asset in [
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ] {
        assert!(html.contains(asset), "{html}");
        let resp = c.get(gw.http_url(asset)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{asset}");
        assert!(resp.bytes().await.unwrap().len() > 10_000, "{asset}");
    }
    assert!(
        !html.contains("https://"),
        "the page must not load anything remote: {html}"
    );
    let spec: serde_json::Value = c
        .get(gw.http_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/v1/code/user_access_token"].is_object());
    // Docs off by default: the same paths then need a token like any other.
    let gw2 = GatewayBuilder::new().start();
    assert_eq!(
        c.get(gw2.http_url("/docs")).send().await.unwrap().status(),
        401
    );
}
