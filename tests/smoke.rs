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
