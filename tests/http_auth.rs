//! Authentication on the AI Gateway HTTP API, rule by rule, with the exact wire
//! result of each (client spec §0.2 and §2; API spec §2 and §3).
//!
//! Every test ends with a good request on the same gateway: no bad input may
//! stop it from serving.
mod common;
use common::*;

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::{Method, header::HeaderValue};
use rsa::{
    RsaPublicKey,
    pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey},
    pkcs8::{EncodePublicKey, LineEnding},
};
use serde_json::{Value, json};

const MINT: &str = "/v1/code/user_access_token";

const NO_HEADER: &str = r#"{"error":"No authorization header presented"}"#;
const INVALID_HEADER: &str = r#"{"error":"Invalid authorization header"}"#;
const INVALID_TYPE: &str =
    r#"{"error":"Invalid authentication token type - only OIDC is supported"}"#;
const FORBIDDEN: &str = r#"{"error":"Forbidden by auth provider"}"#;
const CANNOT_MINT: &str = r#"{"detail":"Unauthorized to create user access token"}"#;

/// Request headers as the harness builds them.
type Headers = Vec<(&'static str, String)>;

/// A response reduced to what the assertions need.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let resp = rb.send().await.expect("request");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.expect("body"),
    }
}

/// `method path` with `headers`, against the gateway's HTTP listener.
async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&'static str, String)],
) -> Reply {
    send(with_headers(
        client().request(method, gw.http_url(path)),
        headers,
    ))
    .await
}

/// Rails' headers for `token`, with some replaced (`Some`) or removed (`None`).
fn headers_with(token: &str, changes: &[(&'static str, Option<&str>)]) -> Headers {
    let mut h = rails_headers(token);
    for (name, value) in changes {
        h.retain(|(k, _)| k != name);
        if let Some(v) = value {
            h.push((name, v.to_string()));
        }
    }
    h
}

/// A fake GitLab publishing `gitlab_key()` and a gateway using it, keys loaded.
async fn gateway_with_gitlab(builder: GatewayBuilder) -> (FakeGitLab, Gateway) {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = builder.gitlab(&gitlab.url).start();
    wait_until_accepted(&gw, &gitlab_key().rails_token(json!({}))).await;
    (gitlab, gw)
}

/// The gateway still authenticates and mints after whatever came before.
async fn assert_still_serving(gw: &Gateway) {
    let token = gitlab_key().rails_token(json!({}));
    let r = call(gw, Method::POST, MINT, &rails_headers(&token)).await;
    assert_eq!(
        r.status,
        200,
        "gateway stopped serving: {}\n{}",
        r.body,
        gw.logs()
    );
    let r = call(gw, Method::GET, "/monitoring/healthz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
}

/// Mints a gateway user access token with a Rails token carrying `overrides`.
async fn mint(gw: &Gateway, overrides: Value) -> (String, Value) {
    let token = gitlab_key().rails_token(overrides);
    let r = call(gw, Method::POST, MINT, &rails_headers(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    (body["token"].as_str().unwrap().to_string(), body)
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A JWT with a hand-written header, signed with HMAC-SHA256 over `secret`.
fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64json(header), b64json(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// A JWT with a hand-written header, signed by `key` with `alg`.
fn raw_token(header: &Value, claims: &Value, key: &TestKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64json(header), b64json(claims));
    let der = key.private.to_pkcs1_der().unwrap();
    let encoding = EncodingKey::from_rsa_der(der.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &encoding, alg).unwrap();
    format!("{message}.{sig}")
}

/// Rails claims with `overrides` applied (`null` removes a claim).
fn claims_with(overrides: Value) -> Value {
    let mut c = rails_claims();
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

#[tokio::test]
async fn authorization_header_rules_answer_the_exact_401_bodies() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let token = gitlab_key().rails_token(json!({}));
    let bearer = format!("Bearer {token}");

    // (what was sent, expected body); all are 401 with no WWW-Authenticate.
    let cases: Vec<(&str, Headers, &str)> = vec![
        (
            "no Authorization",
            headers_with(&token, &[("authorization", None)]),
            NO_HEADER,
        ),
        (
            "Basic scheme",
            headers_with(&token, &[("authorization", Some("Basic abc"))]),
            INVALID_HEADER,
        ),
        (
            "Token scheme",
            headers_with(
                &token,
                &[("authorization", Some(&format!("Token {token}")))],
            ),
            INVALID_HEADER,
        ),
        (
            "token without scheme",
            headers_with(&token, &[("authorization", Some(&token))]),
            INVALID_HEADER,
        ),
        (
            "Bearer alone",
            headers_with(&token, &[("authorization", Some("Bearer"))]),
            FORBIDDEN,
        ),
        (
            "Bearer and spaces",
            headers_with(&token, &[("authorization", Some("Bearer    "))]),
            FORBIDDEN,
        ),
        (
            "no authentication type",
            headers_with(&token, &[("x-gitlab-authentication-type", None)]),
            INVALID_TYPE,
        ),
        (
            "type OIDC (case matters)",
            headers_with(&token, &[("x-gitlab-authentication-type", Some("OIDC"))]),
            INVALID_TYPE,
        ),
        (
            "type oauth",
            headers_with(&token, &[("x-gitlab-authentication-type", Some("oauth"))]),
            INVALID_TYPE,
        ),
        (
            "empty type",
            headers_with(&token, &[("x-gitlab-authentication-type", Some(""))]),
            INVALID_TYPE,
        ),
        // The scheme is checked before the authentication type.
        (
            "Basic scheme and no type",
            headers_with(
                &token,
                &[
                    ("authorization", Some("Basic abc")),
                    ("x-gitlab-authentication-type", None),
                ],
            ),
            INVALID_HEADER,
        ),
        (
            "Bearer garbage",
            headers_with(&token, &[("authorization", Some("Bearer not-a-jwt"))]),
            FORBIDDEN,
        ),
    ];
    for (what, headers, expected) in &cases {
        for path in [MINT, "/no/such/path", "/"] {
            let r = call(&gw, Method::POST, path, headers).await;
            assert_eq!(r.status, 401, "{what} on {path}: {}", r.body);
            assert_eq!(r.body, *expected, "{what} on {path}");
            assert_eq!(r.headers["content-type"], "application/json", "{what}");
            assert!(!r.headers.contains_key("www-authenticate"), "{what}");
        }
    }

    // Bytes that are not visible ASCII in the header value.
    for raw in [
        &b"Bearer \xff\xfe\xfd"[..],
        b"\xc3\xa9t\xc3\xa9 abc",
        b"Bearer tok\xe2\x82\xacen",
    ] {
        let mut rb = client().post(gw.http_url(MINT));
        for (k, v) in headers_with(&token, &[("authorization", None)]) {
            rb = rb.header(k, v);
        }
        let r = send(rb.header("authorization", HeaderValue::from_bytes(raw).unwrap())).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, INVALID_HEADER),
            "{raw:?}"
        );
    }

    // The scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let value = format!("{scheme} {token}");
        let r = call(
            &gw,
            Method::POST,
            MINT,
            &headers_with(&token, &[("authorization", Some(&value))]),
        )
        .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &headers_with(&token, &[("authorization", Some(&bearer))]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_forbidden() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let gl = gitlab_key();
    let kid = gl.kid.as_str();
    let now = now();
    let good = rails_claims();
    let public = RsaPublicKey::from(&gl.private);
    let spki_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let pkcs1_pem = public.to_pkcs1_pem(LineEnding::LF).unwrap();
    let spki_der = public.to_public_key_der().unwrap();
    let jwk_json = serde_json::to_vec(&gl.jwk()).unwrap();

    let none_token = |alg: &str| {
        format!(
            "{}.{}.",
            b64json(&json!({"alg": alg, "typ": "JWT", "kid": kid})),
            b64json(&good)
        )
    };
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let mut embedded_jwk = Header::new(Algorithm::RS256);
    embedded_jwk.kid = Some(other_key().kid.clone());
    embedded_jwk.jwk = Some(serde_json::from_value(other_key().jwk()).unwrap());
    let attacker = FakeGitLab::start(vec![other_key().jwk()]).await;
    let mut jku = Header::new(Algorithm::RS256);
    jku.kid = Some(other_key().kid.clone());
    jku.jku = Some(format!("{}/oauth/discovery/keys", attacker.url));
    let other_encoding =
        EncodingKey::from_rsa_der(other_key().private.to_pkcs1_der().unwrap().as_bytes());

    // A correctly signed token whose payload was then edited.
    let genuine = gl.rails_token(json!({"scopes": ["complete_code"]}));
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = b64json(&claims_with(
        json!({"scopes": ["complete_code", "duo_chat", "ai_gateway_model_provider_proxy"]}),
    ));
    let tampered = parts.join(".");
    let mut stripped: Vec<&str> = genuine.split('.').collect();
    stripped[2] = "";
    let unsigned = stripped.join(".");

    let padding = "x".repeat(17 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("alg none", none_token("none")),
        ("alg None", none_token("None")),
        ("alg NONE", none_token("NONE")),
        (
            "HS256 keyed with the SPKI PEM",
            hs256_token(&hs_header, &good, spki_pem.as_bytes()),
        ),
        (
            "HS256 keyed with the PKCS#1 PEM",
            hs256_token(&hs_header, &good, pkcs1_pem.as_bytes()),
        ),
        (
            "HS256 keyed with the SPKI DER",
            hs256_token(&hs_header, &good, spki_der.as_bytes()),
        ),
        (
            "HS256 keyed with the JWK",
            hs256_token(&hs_header, &good, &jwk_json),
        ),
        (
            "RS512 by the published key",
            raw_token(
                &json!({"alg": "RS512", "typ": "JWT", "kid": kid}),
                &good,
                gl,
                Algorithm::RS512,
            ),
        ),
        (
            "PS256 by the published key",
            raw_token(
                &json!({"alg": "PS256", "typ": "JWT", "kid": kid}),
                &good,
                gl,
                Algorithm::PS256,
            ),
        ),
        (
            "expired beyond the leeway",
            gl.rails_token(json!({"exp": now - 120, "iat": now - 3720, "nbf": now - 3725})),
        ),
        (
            "nbf far in the future",
            gl.rails_token(json!({"nbf": now + 3600})),
        ),
        ("no exp", gl.rails_token(json!({"exp": null}))),
        (
            "exp as a string",
            gl.rails_token(json!({"exp": (now + 3600).to_string()})),
        ),
        (
            "wrong audience",
            gl.rails_token(json!({"aud": "something-else"})),
        ),
        (
            "wrong audience list",
            gl.rails_token(json!({"aud": ["something-else", "gitlab-duo-workflow-service"]})),
        ),
        ("no audience", gl.rails_token(json!({"aud": null}))),
        (
            "unknown kid, unpublished key",
            other_key().rails_token(json!({})),
        ),
        (
            "published kid, unpublished key",
            other_key().sign(&good, Some(kid)),
        ),
        ("no kid, unpublished key", other_key().sign(&good, None)),
        (
            "embedded jwk header",
            jsonwebtoken::encode(&embedded_jwk, &good, &other_encoding).unwrap(),
        ),
        (
            "jku header",
            jsonwebtoken::encode(&jku, &good, &other_encoding).unwrap(),
        ),
        ("tampered payload", tampered),
        ("signature removed", unsigned),
        (
            "larger than 16 KiB",
            gl.rails_token(json!({"pad": padding})),
        ),
        (
            "64 KiB",
            gl.rails_token(json!({"pad": "y".repeat(64 * 1024)})),
        ),
        (
            "two segments",
            genuine.rsplit_once('.').unwrap().0.to_string(),
        ),
        ("four segments", format!("{genuine}.AAAA")),
        (
            "header not JSON",
            format!(
                "{}.{}.AAAA",
                URL_SAFE_NO_PAD.encode(b"{{{{"),
                b64json(&good)
            ),
        ),
        (
            "payload not an object",
            raw_token(
                &json!({"alg": "RS256", "kid": kid}),
                &json!([1, 2, 3]),
                gl,
                Algorithm::RS256,
            ),
        ),
        (
            "scopes not a list",
            gl.rails_token(json!({"scopes": "complete_code"})),
        ),
        ("not base64", "!!!.@@@.###".to_string()),
    ];
    let mut slowest = Duration::ZERO;
    for (what, bad) in &cases {
        let start = Instant::now();
        let r = call(&gw, Method::POST, MINT, &rails_headers(bad)).await;
        slowest = slowest.max(start.elapsed());
        assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN), "{what}");
        // Not even an unknown route learns more than the 401.
        let r = call(&gw, Method::GET, "/no/such/path", &rails_headers(bad)).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, FORBIDDEN),
            "{what} (unknown path)"
        );
    }
    assert_eq!(
        attacker.discovery_hits() + attacker.jwks_hits(),
        0,
        "the gateway followed a token's jku"
    );
    // An unknown kid may wait for one early refresh (bounded), nothing else may stall.
    assert!(
        slowest < Duration::from_secs(5),
        "a refused token took {slowest:?}"
    );

    // Inside the 30 s leeway the token still counts.
    for (what, claims) in [
        ("expired 10 s ago", json!({"exp": now - 10})),
        ("nbf 10 s ahead", json!({"nbf": now + 10})),
        ("audience as a string", json!({"aud": GATEWAY_AUD})),
    ] {
        let t = gl.rails_token(claims);
        let r = call(&gw, Method::POST, MINT, &rails_headers(&t)).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
    }
    // The size limit is exactly 16 KiB: the largest token that fits passes,
    // one more padding byte is refused.
    let sized = |pad: usize| gl.rails_token(json!({"pad": "z".repeat(pad)}));
    let (mut lo, mut hi) = (0usize, 16 * 1024);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if sized(mid).len() <= 16 * 1024 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (fits, too_big) = (sized(lo), sized(hi));
    assert!(fits.len() <= 16 * 1024 && too_big.len() > 16 * 1024);
    let r = call(&gw, Method::POST, MINT, &rails_headers(&fits)).await;
    assert_eq!(r.status, 200, "{} bytes: {}", fits.len(), r.body);
    let r = call(&gw, Method::POST, MINT, &rails_headers(&too_big)).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, FORBIDDEN),
        "{} bytes",
        too_big.len()
    );
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn token_without_kid_is_tried_against_every_published_key() {
    let gitlab = FakeGitLab::start(vec![other_key().jwk(), gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    let token = gitlab_key().sign(&rails_claims(), None);
    assert!(jwt_header(&token).get("kid").is_none());
    wait_until_accepted(&gw, &token).await;
    let r = call(&gw, Method::POST, MINT, &rails_headers(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A kid-less token from neither key is still refused.
    let stranger = TestKey::generate();
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &rails_headers(&stranger.sign(&rails_claims(), None)),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn key_published_after_startup_is_fetched_early_for_its_kid() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    // No request before the first fetch completed: a request racing it would
    // spend the early-refresh allowance (see the next test for that case).
    assert!(
        gw.wait_for_log_async("OIDC signing keys loaded", Duration::from_secs(20))
            .await,
        "{}",
        gw.logs()
    );
    let fetched = gitlab.jwks_hits();
    // GitLab rotates: a second key appears next to the first.
    gitlab.set_keys(vec![gitlab_key().jwk(), other_key().jwk()]);
    let rotated = other_key().rails_token(json!({}));
    let start = Instant::now();
    let r = call(&gw, Method::POST, MINT, &rails_headers(&rotated)).await;
    assert_eq!(
        r.status,
        200,
        "new kid not fetched early: {}\n{}",
        r.body,
        gw.logs()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        gitlab.jwks_hits() > fetched,
        "no early JWKS refresh happened"
    );
    // The old key keeps working.
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn unknown_kid_refused_at_first_is_accepted_once_published() {
    let (gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let rotated = other_key().rails_token(json!({}));
    // Unknown now: the early refresh finds nothing new.
    let r = call(&gw, Method::POST, MINT, &rails_headers(&rotated)).await;
    assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
    gitlab.set_keys(vec![gitlab_key().jwk(), other_key().jwk()]);
    // Early refreshes are rate limited per issuer; the key shows up at the next allowed one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(&gw, Method::POST, MINT, &rails_headers(&rotated)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
        assert!(
            Instant::now() < deadline,
            "the published key was never picked up:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn claims_are_bound_to_the_gitlab_headers() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let realm = r#"{"error":"Header mismatch 'X-Gitlab-Realm'"}"#;
    let instance = r#"{"error":"Header mismatch 'X-Gitlab-Instance-Id'"}"#;
    let user = r#"{"error":"Header mismatch 'X-Gitlab-Global-User-Id'"}"#;
    let token = gitlab_key().rails_token(json!({}));
    let with_id = gitlab_key().rails_token(json!({"gitlab_instance_id": INSTANCE_ID}));
    let other_instance = "11111111-2222-3333-4444-555555555555";

    let cases: Vec<(&str, Headers, &str)> = vec![
        (
            "realm saas",
            headers_with(&token, &[("x-gitlab-realm", Some("saas"))]),
            realm,
        ),
        (
            "realm missing",
            headers_with(&token, &[("x-gitlab-realm", None)]),
            realm,
        ),
        (
            "realm in other case",
            headers_with(&token, &[("x-gitlab-realm", Some("Self-Managed"))]),
            realm,
        ),
        // Realm is checked first.
        (
            "realm and instance wrong",
            headers_with(
                &token,
                &[
                    ("x-gitlab-realm", Some("saas")),
                    ("x-gitlab-instance-id", Some(other_instance)),
                ],
            ),
            realm,
        ),
        // Rails tokens: sub is the instance id.
        (
            "instance id differs from sub",
            headers_with(&token, &[("x-gitlab-instance-id", Some(other_instance))]),
            instance,
        ),
        (
            "instance id missing",
            headers_with(&token, &[("x-gitlab-instance-id", None)]),
            instance,
        ),
        // An explicit gitlab_instance_id claim.
        (
            "instance id differs from the claim",
            headers_with(&with_id, &[("x-gitlab-instance-id", Some(other_instance))]),
            instance,
        ),
    ];
    for (what, headers, expected) in &cases {
        let r = call(&gw, Method::POST, MINT, headers).await;
        assert_eq!((r.status, r.body.as_str()), (401, *expected), "{what}");
    }
    // A Rails token is not bound to the global user id.
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &headers_with(&token, &[("x-gitlab-global-user-id", Some("someone-else"))]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Empty claims skip their check.
    let empty = gitlab_key().rails_token(json!({"gitlab_realm": "", "sub": ""}));
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &headers_with(
            &empty,
            &[
                ("x-gitlab-realm", Some("saas")),
                ("x-gitlab-instance-id", Some(other_instance)),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Gateway-minted tokens: sub is the global user id.
    let (minted, _) = mint(&gw, json!({"gitlab_instance_id": INSTANCE_ID})).await;
    let ok = call(&gw, Method::POST, "/no/such/path", &rails_headers(&minted)).await;
    assert_eq!(ok.status, 404, "minted token not accepted: {}", ok.body);
    let cases: Vec<(&str, Headers, &str)> = vec![
        (
            "minted, other user",
            headers_with(
                &minted,
                &[("x-gitlab-global-user-id", Some("someone-else"))],
            ),
            user,
        ),
        (
            "minted, user missing",
            headers_with(&minted, &[("x-gitlab-global-user-id", None)]),
            user,
        ),
        (
            "minted, instance id as user",
            headers_with(&minted, &[("x-gitlab-global-user-id", Some(INSTANCE_ID))]),
            user,
        ),
        (
            "minted, other realm",
            headers_with(&minted, &[("x-gitlab-realm", Some("saas"))]),
            realm,
        ),
        (
            "minted, other instance",
            headers_with(&minted, &[("x-gitlab-instance-id", Some(other_instance))]),
            instance,
        ),
    ];
    for (what, headers, expected) in &cases {
        for path in [MINT, "/no/such/path"] {
            let r = call(&gw, Method::POST, path, headers).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (401, *expected),
                "{what} on {path}"
            );
        }
    }
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn user_access_token_scopes_and_claims() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;

    // No scope that allows minting.
    for scopes in [json!(["duo_chat", "generate_code"]), json!([]), json!(null)] {
        let t = gitlab_key().rails_token(json!({"scopes": scopes}));
        let r = call(&gw, Method::POST, MINT, &rails_headers(&t)).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, CANNOT_MINT),
            "scopes {scopes}"
        );
        assert_eq!(r.headers["content-type"], "application/json");
    }

    let before = now();
    let (minted, body) = mint(
        &gw,
        json!({
            "gitlab_instance_id": INSTANCE_ID,
            "scopes": ["duo_chat", "ai_gateway_model_provider_proxy", "complete_code", "generate_code"],
            "skip_usage_cutoff": true,
        }),
    )
    .await;
    let after = now();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    // Signed with the configured AIGW key, RS256, valid for our audience.
    let header = jwt_header(&minted);
    assert_eq!(header["alg"], "RS256");
    let jwk = signing_key().jwk();
    let decoding =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[GATEWAY_AUD]);
    validation.set_issuer(&[GATEWAY_AUD]);
    let claims = jsonwebtoken::decode::<Value>(&minted, &decoding, &validation)
        .expect("minted token verifies with the signing key")
        .claims;
    // ...and not with any other key.
    let other = other_key().jwk();
    let wrong = DecodingKey::from_rsa_components(
        other["n"].as_str().unwrap(),
        other["e"].as_str().unwrap(),
    )
    .unwrap();
    assert!(jsonwebtoken::decode::<Value>(&minted, &wrong, &validation).is_err());

    assert_eq!(claims["iss"], GATEWAY_AUD);
    assert_eq!(claims["aud"], GATEWAY_AUD);
    assert_eq!(claims["sub"], GLOBAL_USER_ID);
    assert_eq!(claims["gitlab_realm"], "self-managed");
    assert_eq!(claims["gitlab_instance_id"], INSTANCE_ID);
    assert_eq!(
        claims["scopes"],
        json!(["complete_code", "ai_gateway_model_provider_proxy"])
    );
    assert_eq!(claims["skip_usage_cutoff"], true);
    let iat = claims["iat"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&iat),
        "iat {iat} not in [{before}, {after}]"
    );
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 3600);
    assert_eq!(claims["exp"], body["expires_at"]);
    assert!(
        body["expires_at"].is_u64(),
        "expires_at must be an integer: {body}"
    );
    let jti = claims["jti"].as_str().expect("jti");
    assert!(uuid::Uuid::parse_str(jti).is_ok(), "jti {jti}");

    // Two mints never share a jti.
    let (again, _) = mint(&gw, json!({})).await;
    assert_ne!(jwt_payload(&again)["jti"], claims["jti"]);

    // Only the proxy scope.
    let (proxy_only, _) = mint(&gw, json!({"scopes": ["ai_gateway_model_provider_proxy"]})).await;
    assert_eq!(
        jwt_payload(&proxy_only)["scopes"],
        json!(["ai_gateway_model_provider_proxy"])
    );

    // A gateway-minted token may not mint another one, whatever its scopes.
    let r = call(&gw, Method::POST, MINT, &rails_headers(&minted)).await;
    assert_eq!((r.status, r.body.as_str()), (403, CANNOT_MINT));
    let r = call(&gw, Method::POST, MINT, &rails_headers(&proxy_only)).await;
    assert_eq!((r.status, r.body.as_str()), (403, CANNOT_MINT));
    // A Rails-signed token that claims to be ours is not even authenticated:
    // only our own keys vouch for our issuer (upstream, which checks no
    // issuer, authenticates it and then refuses it 403).
    let posing = gitlab_key().rails_token(json!({"iss": GATEWAY_AUD, "sub": GLOBAL_USER_ID}));
    let r = call(&gw, Method::POST, MINT, &rails_headers(&posing)).await;
    assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn minting_without_a_signing_key_is_a_500() {
    let (_gitlab, gw) = {
        let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
        let gw = GatewayBuilder::new()
            .gitlab(&gitlab.url)
            .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
            .start();
        (gitlab, gw)
    };
    let token = gitlab_key().rails_token(json!({}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = call(&gw, Method::POST, MINT, &rails_headers(&token)).await;
        if r.status != 401 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.body, r#"{"detail":"Failed to generate JWT"}"#);
    assert_eq!(r.headers["content-type"], "application/json");
    // Other routes still authenticate (404, not 401 or 500).
    let r = call(&gw, Method::POST, "/no/such/path", &rails_headers(&token)).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Still a 403 for callers who may not mint at all.
    let t = gitlab_key().rails_token(json!({"scopes": ["duo_chat"]}));
    let r = call(&gw, Method::POST, MINT, &rails_headers(&t)).await;
    assert_eq!((r.status, r.body.as_str()), (403, CANNOT_MINT));
    assert!(
        gw.logs().contains("no token signing key configured"),
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn validation_key_keeps_tokens_of_the_previous_signing_key_valid() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let rails = gitlab_key().rails_token(json!({}));
    // Yesterday's gateway signed with other_key.
    let old = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", &other_key().pem)
        .start();
    // Today's: a new signing key, the old one kept for validation.
    let rotated = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", &other_key().pem)
        .start();
    // Without the validation key the old tokens stop working.
    let plain = GatewayBuilder::new().gitlab(&gitlab.url).start();
    for gw in [&old, &rotated, &plain] {
        wait_until_accepted(gw, &rails).await;
    }
    let (old_token, _) = mint(&old, json!({})).await;
    let (new_token, _) = mint(&rotated, json!({})).await;

    let r = call(
        &rotated,
        Method::POST,
        "/no/such/path",
        &rails_headers(&old_token),
    )
    .await;
    assert_eq!(
        r.status, 404,
        "old token refused after rotation: {}",
        r.body
    );
    let r = call(
        &rotated,
        Method::POST,
        "/no/such/path",
        &rails_headers(&new_token),
    )
    .await;
    assert_eq!(r.status, 404, "new token refused: {}", r.body);
    let r = call(
        &plain,
        Method::POST,
        "/no/such/path",
        &rails_headers(&old_token),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
    let r = call(
        &plain,
        Method::POST,
        "/no/such/path",
        &rails_headers(&new_token),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // The validation key only validates: tokens are signed with the signing key.
    assert_eq!(jwt_header(&new_token)["kid"], json!(signing_key().kid));
    for gw in [&old, &rotated, &plain] {
        assert_still_serving(gw).await;
    }
}

#[tokio::test]
async fn routing_errors_and_cors_preflight() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let token = gitlab_key().rails_token(json!({}));
    let h = rails_headers(&token);

    for path in [
        "/",
        "/nope",
        "/v1/code/user_access_token/",
        "/V1/CODE/USER_ACCESS_TOKEN",
        "/monitoring/healthz/",
    ] {
        let r = call(&gw, Method::POST, path, &h).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, r#"{"detail":"Not Found"}"#),
            "{path}"
        );
        assert_eq!(r.headers["content-type"], "application/json");
    }
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = call(&gw, method.clone(), MINT, &h).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (405, r#"{"detail":"Method Not Allowed"}"#),
            "{method}"
        );
    }
    // Without a token the 401 comes first, whatever the route.
    let r = call(&gw, Method::GET, MINT, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, NO_HEADER));
    let r = call(&gw, Method::GET, "/nope", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, NO_HEADER));

    // Preflight is answered before authentication.
    for path in [MINT, "/v2/code/completions", "/anything"] {
        let r = send(
            client()
                .request(Method::OPTIONS, gw.http_url(path))
                .header("origin", "https://ide.example.com")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,x-gitlab-realm",
                ),
        )
        .await;
        assert!(
            (200..300).contains(&r.status),
            "preflight {path}: {} {}",
            r.status,
            r.body
        );
        assert_eq!(r.headers["access-control-allow-origin"], "*", "{path}");
        let methods = r.headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = r.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        // Browsers never let `*` cover Authorization (Fetch standard): the
        // requested headers must be named, as Starlette does by mirroring them.
        assert!(
            allowed.split(',').any(|h| h.trim() == "authorization"),
            "{allowed}"
        );
        assert!(!r.headers.contains_key("access-control-allow-credentials"));
    }
    // Simple requests from a browser get the CORS header too, on success and on 401.
    let r = send(
        with_headers(client().post(gw.http_url(MINT)), &h)
            .header("origin", "https://ide.example.com"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let r = send(
        client()
            .post(gw.http_url(MINT))
            .header("origin", "https://ide.example.com"),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, NO_HEADER));
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_still_serving(&gw).await;
}

/// The JSON log lines at `level` whose text contains `needle`.
fn log_lines(gw: &Gateway, level: &str, needle: &str) -> Vec<Value> {
    gw.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == level)
        .collect()
}

#[tokio::test]
async fn bypass_external_accepts_everything_and_says_so_loudly() {
    let gw = GatewayBuilder::new()
        .env("AIGW_AUTH__BYPASS_EXTERNAL", "true")
        .start();
    assert!(
        gw.wait_for_log_async("AIGW_AUTH__BYPASS_EXTERNAL", Duration::from_secs(5))
            .await,
        "{}",
        gw.logs()
    );
    assert!(
        !log_lines(&gw, "WARN", "AIGW_AUTH__BYPASS_EXTERNAL").is_empty(),
        "no WARN line:\n{}",
        gw.logs()
    );

    // No token at all: every permission.
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &[("x-gitlab-global-user-id", GLOBAL_USER_ID.into())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let claims = jwt_payload(body["token"].as_str().unwrap());
    assert_eq!(claims["sub"], GLOBAL_USER_ID);
    assert_eq!(
        claims["scopes"],
        json!(["complete_code", "ai_gateway_model_provider_proxy"])
    );
    // Garbage tokens do not matter either.
    let r = call(
        &gw,
        Method::POST,
        MINT,
        &[("authorization", "Basic abc".into())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&gw, Method::GET, "/nope", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, r#"{"detail":"Not Found"}"#)
    );

    let r = call(&gw, Method::GET, "/monitoring/ready", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ready: Value = serde_json::from_str(&r.body).unwrap();
    let warnings = ready["warnings"]
        .as_array()
        .expect("warnings in /monitoring/ready");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap_or("")
            .contains("AIGW_AUTH__BYPASS_EXTERNAL")),
        "{ready}"
    );
}

#[tokio::test]
async fn bypass_with_header_only_bypasses_with_the_header() {
    let (_gitlab, gw) = gateway_with_gitlab(
        GatewayBuilder::new().env("AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER", "true"),
    )
    .await;
    assert!(
        !log_lines(&gw, "WARN", "AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER").is_empty(),
        "no WARN line:\n{}",
        gw.logs()
    );
    let r = call(&gw, Method::POST, MINT, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, NO_HEADER));
    for not_true in ["false", "TRUE", "1", "yes", ""] {
        let r = call(&gw, Method::POST, MINT, &[("bypass-auth", not_true.into())]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, NO_HEADER),
            "Bypass-Auth: {not_true:?}"
        );
    }
    let r = call(&gw, Method::POST, MINT, &[("bypass-auth", "true".into())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &gw,
        Method::POST,
        "/nope",
        &[("Bypass-Auth", "true".into())],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(&gw, Method::GET, "/monitoring/ready", &[]).await;
    assert!(r.body.contains("warnings"), "{}", r.body);
    // Real tokens still work as usual.
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn request_id_process_time_and_readiness() {
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let token = gitlab_key().rails_token(json!({}));

    let r = call(&gw, Method::GET, "/monitoring/ready", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert_eq!(r.headers["content-type"], "application/json");

    // Echoed on success, 401, 403, 404 and on public paths.
    let forbidden = gitlab_key().rails_token(json!({"scopes": ["duo_chat"]}));
    let cases: Vec<(Method, &str, Headers, u16)> = vec![
        (Method::POST, MINT, rails_headers(&token), 200),
        (Method::POST, MINT, vec![], 401),
        (Method::POST, MINT, rails_headers(&forbidden), 403),
        (Method::POST, "/nope", rails_headers(&token), 404),
        (Method::GET, "/monitoring/healthz", vec![], 200),
    ];
    for (i, (method, path, mut headers, status)) in cases.into_iter().enumerate() {
        let id = format!("req-{i}-7f3c9a");
        headers.push(("x-request-id", id.clone()));
        let r = call(&gw, method, path, &headers).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_eq!(r.headers["x-request-id"], id.as_str(), "{path}");
        let t: f64 = r.headers["x-process-time"]
            .to_str()
            .unwrap()
            .parse()
            .expect("X-Process-Time is a number");
        assert!((0.0..60.0).contains(&t), "X-Process-Time {t}");
    }
    // Without one (or with an unusable one) a fresh id is generated.
    let r = call(&gw, Method::GET, "/monitoring/healthz", &[]).await;
    let generated = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty());
    let r2 = call(&gw, Method::GET, "/monitoring/healthz", &[]).await;
    assert_ne!(r2.headers["x-request-id"], generated.as_str());
    for unusable in ["x".repeat(500), "has space".to_string()] {
        let r = call(
            &gw,
            Method::GET,
            "/monitoring/healthz",
            &[("x-request-id", unusable.clone())],
        )
        .await;
        assert_eq!(r.status, 200);
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert!(!id.is_empty() && id != unusable, "{id}");
    }
    assert_still_serving(&gw).await;
}

#[tokio::test]
async fn garbage_on_the_wire_does_not_stop_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let payloads: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"POST /v1/code/user_access_token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00\x01\r\n\r\n".to_vec(),
        b"POST /v1/code/user_access_token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\nshort".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x00garbage".to_vec(),
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
        b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(),
    ];
    for p in payloads {
        let mut s = tokio::net::TcpStream::connect(gw.addrs.http).await.unwrap();
        let _ = s.write_all(&p).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // An Authorization header far beyond any token.
    let huge = format!("Bearer {}", "a".repeat(256 * 1024));
    let r = client()
        .post(gw.http_url(MINT))
        .header("authorization", huge)
        .header("x-gitlab-authentication-type", "oidc")
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    assert_still_serving(&gw).await;
}

/// An accepted token is remembered (one RSA verification per token), but the
/// memory never outlives the key: once GitLab drops the key from its JWKS
/// the same token is refused, and header binding is checked on every request.
#[tokio::test]
async fn remembered_token_is_refused_once_its_key_is_withdrawn() {
    let (gitlab, gw) = gateway_with_gitlab(GatewayBuilder::new()).await;
    let token = gitlab_key().rails_token(json!({}));
    for _ in 0..3 {
        let r = call(&gw, Method::POST, MINT, &rails_headers(&token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Same (remembered) token, headers that do not match its claims.
    let mut wrong_realm = rails_headers(&token);
    for (k, v) in wrong_realm.iter_mut() {
        if *k == "x-gitlab-realm" {
            *v = "saas".into();
        }
    }
    let r = call(&gw, Method::POST, MINT, &wrong_realm).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, r#"{"error":"Header mismatch 'X-Gitlab-Realm'"}"#)
    );

    // GitLab rotates the old key out; a token with the new kid makes the
    // gateway fetch the new key set early.
    gitlab.set_keys(vec![other_key().jwk()]);
    // Early refreshes are rate limited per issuer: retry until it lands.
    let fresh = other_key().rails_token(json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&gw, Method::POST, MINT, &rails_headers(&fresh))
        .await
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "new key never fetched:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = call(&gw, Method::POST, MINT, &rails_headers(&token)).await;
    assert_eq!((r.status, r.body.as_str()), (401, FORBIDDEN));
}
