//! The Duo Workflow gRPC service, black-box: health, authentication, the
//! unary RPCs, the ExecuteWorkflow entry, reflection, metrics and limits.
mod common;

use std::time::{Duration, Instant};

use aigw::grpc::proto::{
    ClientEvent, GenerateTokenRequest, HeartbeatRequest, ListCapabilitiesRequest, ListFlowsRequest,
    ListToolsRequest, StartWorkflowRequest, TrackSelfHostedClientEvent, ValidateFlowConfigRequest,
    client_event, duo_workflow_client::DuoWorkflowClient,
};
use common::*;
use serde_json::{Value, json};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

type Client = DuoWorkflowClient<Channel>;

async fn channel(gw: &Gateway) -> Channel {
    Channel::from_shared(gw.grpc_url())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

async fn workflow(gw: &Gateway) -> Client {
    DuoWorkflowClient::new(channel(gw).await)
}

/// A request carrying `headers` as gRPC metadata.
fn req<T>(msg: T, headers: &[(&'static str, String)]) -> Request<T> {
    let mut r = Request::new(msg);
    for (k, v) in headers {
        r.metadata_mut().insert(*k, v.parse().unwrap());
    }
    r
}

/// Replaces one metadata entry of `headers`.
fn with(
    mut headers: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    headers.retain(|(k, _)| *k != key);
    headers.push((key, value.to_string()));
    headers
}

/// Waits until the workflow service accepts `token` (OIDC keys fetched).
async fn wait_until_grpc_accepted(gw: &Gateway, token: &str) {
    let mut client = workflow(gw).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = client
            .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(token)))
            .await;
        match res {
            Ok(_) => return,
            Err(s) if Instant::now() > deadline => {
                panic!(
                    "token never accepted over gRPC ({s:?}); logs:\n{}",
                    gw.logs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A gateway trusting a fake GitLab that publishes `gitlab_key()`.
async fn gateway_with_gitlab() -> (FakeGitLab, Gateway) {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    (gitlab, gw)
}

fn to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(v: &Value) -> prost_types::Struct {
    prost_types::Struct {
        fields: v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn start_event(workflow_id: &str, definition: &str) -> ClientEvent {
    #[allow(deprecated)]
    let start = StartWorkflowRequest {
        workflow_id: workflow_id.to_string(),
        workflow_definition: definition.to_string(),
        goal: "hello".to_string(),
        ..Default::default()
    };
    ClientEvent {
        response: Some(client_event::Response::StartRequest(start)),
    }
}

fn heartbeat_event() -> ClientEvent {
    ClientEvent {
        response: Some(client_event::Response::Heartbeat(HeartbeatRequest {
            timestamp: 1_700_000_000_000,
        })),
    }
}

/// Runs ExecuteWorkflow with `events` and returns the final status and the
/// number of actions received.
async fn execute(
    client: &mut Client,
    events: Vec<ClientEvent>,
    headers: &[(&'static str, String)],
) -> Result<usize, tonic::Status> {
    let stream = futures_util::stream::iter(events);
    let mut actions = client
        .execute_workflow(req(stream, headers))
        .await?
        .into_inner();
    let mut n = 0;
    while actions.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn assert_status(res: Result<impl std::fmt::Debug, tonic::Status>, code: Code, message: &str) {
    let status = res.expect_err("call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message, "{status:?}");
}

async fn health_status(ch: Channel, service: &str) -> Result<i32, tonic::Status> {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn health_check_serves_without_a_token() {
    let gw = GatewayBuilder::new().start();
    let ch = channel(&gw).await;
    for service in ["", "DuoWorkflow"] {
        let status = health_status(ch.clone(), service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health_status(ch, "NoSuchService").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn health_flips_to_not_serving_on_sigterm() {
    let gw = GatewayBuilder::new().start();
    let mut watch = HealthClient::new(channel(&gw).await)
        .watch(HealthCheckRequest {
            service: "DuoWorkflow".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    gw.signal(libc::SIGTERM);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("no health update after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn unauthenticated_calls_get_the_upstream_messages() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let mut client = workflow(&gw).await;

    assert_status(
        client.list_capabilities(ListCapabilitiesRequest {}).await,
        Code::Unauthenticated,
        "No authorization header presented",
    );
    // Streaming methods are gated the same way.
    assert_status(
        execute(&mut client, vec![start_event("42", "chat")], &[]).await,
        Code::Unauthenticated,
        "No authorization header presented",
    );

    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;

    let wrong_type = with(rails_headers(&token), "x-gitlab-authentication-type", "pat");
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &wrong_type))
            .await,
        Code::Unauthenticated,
        "Invalid authentication token type - only OIDC is supported",
    );
    let no_type: Vec<_> = rails_headers(&token)
        .into_iter()
        .filter(|(k, _)| *k != "x-gitlab-authentication-type")
        .collect();
    assert_status(
        client.list_tools(req(ListToolsRequest {}, &no_type)).await,
        Code::Unauthenticated,
        "Invalid authentication token type - only OIDC is supported",
    );

    let not_bearer = with(rails_headers(&token), "authorization", "Basic dXNlcjpwdw==");
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &not_bearer))
            .await,
        Code::Unauthenticated,
        "Invalid authorization header",
    );

    // Signed by a key GitLab does not publish.
    let forged = other_key().rails_token(json!({}));
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(&forged)))
            .await,
        Code::Unauthenticated,
        "Forbidden by auth provider",
    );
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers("not.a.jwt")))
            .await,
        Code::Unauthenticated,
        "Forbidden by auth provider",
    );
    let expired = gitlab_key().rails_token(json!({"exp": now() - 3600, "iat": now() - 7200}));
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(&expired)))
            .await,
        Code::Unauthenticated,
        "Forbidden by auth provider",
    );

    let other_realm = with(rails_headers(&token), "x-gitlab-realm", "saas");
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &other_realm))
            .await,
        Code::Unauthenticated,
        "Header mismatch 'X-Gitlab-Realm'",
    );
    let other_instance = with(
        rails_headers(&token),
        "x-gitlab-instance-id",
        "11111111-2222-3333-4444-555555555555",
    );
    assert_status(
        client
            .generate_token(req(GenerateTokenRequest::default(), &other_instance))
            .await,
        Code::Unauthenticated,
        "Header mismatch 'X-Gitlab-Instance-Id'",
    );
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn generate_token_mints_a_workflow_token() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;

    let before = now();
    let resp = client
        .generate_token(req(GenerateTokenRequest::default(), &rails_headers(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.server_capabilities,
        vec![
            "tool_call_approval",
            "tool_call_pattern_approval",
            "flow_semantic_versioning"
        ]
    );
    let header = jwt_header(&resp.token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let claims = jwt_payload(&resp.token);
    assert_eq!(claims["iss"], WORKFLOW_AUD);
    assert_eq!(claims["aud"], WORKFLOW_AUD);
    assert_eq!(claims["sub"], GLOBAL_USER_ID);
    assert_eq!(claims["gitlab_realm"], "self-managed");
    assert_eq!(claims["gitlab_instance_id"], INSTANCE_ID);
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(iat >= before - 5 && iat <= now() + 5, "iat {iat}");
    assert_eq!(exp - iat, 3600);
    assert_eq!(resp.expires_at, exp);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let scopes: Vec<&str> = claims["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!scopes.is_empty());
    for s in &scopes {
        assert!(
            [
                "duo_agent_platform",
                "duo_workflow_execute_workflow",
                "duo_chat"
            ]
            .contains(s),
            "unexpected scope {s} in {scopes:?}"
        );
    }
    assert!(scopes.contains(&"duo_agent_platform"), "{scopes:?}");
    assert_eq!(
        claims["tool_access_policies"],
        rails_claims()["tool_access_policies"]
    );

    // The minted token authenticates the caller directly...
    let minted = resp.token;
    let caps = client
        .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(&minted)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 3);
    // ...bound to the user it was minted for...
    let other_user = with(
        rails_headers(&minted),
        "x-gitlab-global-user-id",
        "someone-else",
    );
    assert_status(
        client
            .list_capabilities(req(ListCapabilitiesRequest {}, &other_user))
            .await,
        Code::Unauthenticated,
        "Header mismatch 'X-Gitlab-Global-User-Id'",
    );
    // ...but cannot mint further tokens.
    assert_status(
        client
            .generate_token(req(
                GenerateTokenRequest::default(),
                &rails_headers(&minted),
            ))
            .await,
        Code::PermissionDenied,
        "Unauthorized to generate token",
    );
    // It may run agent sessions (within its scopes)...
    let status = execute(
        &mut client,
        vec![start_event("42", "chat")],
        &rails_headers(&minted),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // ...but not report self-hosted billing events.
    let event = TrackSelfHostedClientEvent {
        request_id: "r1".into(),
        workflow_id: "42".into(),
        feature_qualified_name: "chat".into(),
        feature_ai_catalog_item: false,
    };
    assert_status(
        client
            .track_self_hosted_execute_workflow(req(
                futures_util::stream::iter(vec![event]),
                &rails_headers(&minted),
            ))
            .await
            .map(|_| ()),
        Code::PermissionDenied,
        "Unauthorized to track self-hosted workflow execution",
    );
    // Nor may it reach the AI Gateway (audience is per service).
    let resp = with_headers(
        common::client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&minted),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn generate_token_carries_the_callers_extra_claims() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({
        "duo_seat_count": "12",
        "gitlab_instance_uid": "instance-uid-1",
        "skip_usage_cutoff": true,
        "gitlab_root_namespace_id": 9970,
        "tool_access_policies": "{\"allow\":[\"read_file\"],\"ask\":[],\"deny\":[]}"
    }));
    wait_until_grpc_accepted(&gw, &token).await;
    let minted = workflow(&gw)
        .await
        .generate_token(req(GenerateTokenRequest::default(), &rails_headers(&token)))
        .await
        .unwrap()
        .into_inner()
        .token;
    let claims = jwt_payload(&minted);
    assert_eq!(claims["duo_seat_count"], "12");
    assert_eq!(claims["gitlab_instance_uid"], "instance-uid-1");
    assert_eq!(claims["skip_usage_cutoff"], true);
    assert_eq!(claims["gitlab_root_namespace_id"], 9970);
    assert_eq!(
        claims["tool_access_policies"],
        "{\"allow\":[\"read_file\"],\"ask\":[],\"deny\":[]}"
    );
    // Registered claims are re-minted, not copied.
    assert_ne!(claims["jti"], jwt_payload(&token)["jti"]);
    assert_eq!(claims["iss"], WORKFLOW_AUD);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn generate_token_needs_an_agent_platform_scope() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;

    let chat_only = gitlab_key().rails_token(json!({"scopes": ["duo_chat", "complete_code"]}));
    assert_status(
        client
            .generate_token(req(
                GenerateTokenRequest::default(),
                &rails_headers(&chat_only),
            ))
            .await,
        Code::PermissionDenied,
        "Unauthorized to generate token",
    );
    // The chat definition only needs duo_chat.
    let resp = client
        .generate_token(req(
            GenerateTokenRequest {
                workflow_definition: Some("chat".into()),
            },
            &rails_headers(&chat_only),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt_payload(&resp.token)["scopes"], json!(["duo_chat"]));

    // The legacy scope is enough for the agent platform.
    let legacy = gitlab_key().rails_token(json!({"scopes": ["duo_workflow_execute_workflow"]}));
    let resp = client
        .generate_token(req(
            GenerateTokenRequest::default(),
            &rails_headers(&legacy),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jwt_payload(&resp.token)["scopes"],
        json!(["duo_workflow_execute_workflow"])
    );
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn gateway_audience_token_is_refused_by_the_workflow_service() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;
    let gateway_only = gitlab_key().rails_token(json!({"aud": [GATEWAY_AUD]}));
    // Valid for the AI Gateway...
    wait_until_accepted(&gw, &gateway_only).await;
    // ...but not for the Duo Workflow service.
    assert_status(
        client
            .generate_token(req(
                GenerateTokenRequest::default(),
                &rails_headers(&gateway_only),
            ))
            .await,
        Code::Unauthenticated,
        "Forbidden by auth provider",
    );
    let workflow_string = gitlab_key().rails_token(json!({"aud": WORKFLOW_AUD}));
    client
        .generate_token(req(
            GenerateTokenRequest::default(),
            &rails_headers(&workflow_string),
        ))
        .await
        .unwrap();
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn missing_signing_key_fails_generate_token_cleanly() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
        .start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;
    for _ in 0..2 {
        let status = client
            .generate_token(req(GenerateTokenRequest::default(), &rails_headers(&token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(status.message(), "Failed to generate token");
    }
    // Still serving everything else.
    client
        .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(&token)))
        .await
        .unwrap();
    let status = health_status(channel(&gw).await, "DuoWorkflow")
        .await
        .unwrap();
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(
        gw.logs().contains("no token signing key configured"),
        "{}",
        gw.logs()
    );
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn unary_methods_answer_rails() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let h = rails_headers(&token);
    let mut client = workflow(&gw).await;

    let caps = client
        .list_capabilities(req(ListCapabilitiesRequest {}, &h))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tool_call_approval",
            "tool_call_pattern_approval",
            "flow_semantic_versioning"
        ]
    );
    assert!(caps.iter().all(|c| c.metadata.is_empty()), "{caps:?}");

    let tools = client
        .list_tools(req(ListToolsRequest {}, &h))
        .await
        .unwrap()
        .into_inner();
    assert!(tools.tools.is_empty() && tools.eval_dataset.is_empty());

    let flows = client
        .list_flows(req(ListFlowsRequest { filters: None }, &h))
        .await
        .unwrap()
        .into_inner();
    assert!(flows.configs.is_empty());

    let missing = client
        .validate_flow_config(req(ValidateFlowConfigRequest { flow_config: None }, &h))
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.valid);
    assert_eq!(missing.errors, ["Missing required field: flow_config"]);

    let good = json!({
        "version": "v1",
        "environment": "ambient",
        "components": [{"name": "agent", "type": "AgentComponent", "prompt_id": "p"}],
        "routers": [],
        "flow": {"entry_point": "agent"}
    });
    let ok = client
        .validate_flow_config(req(
            ValidateFlowConfigRequest {
                flow_config: Some(to_struct(&good)),
            },
            &h,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.valid, "{ok:?}");
    assert!(ok.errors.is_empty(), "{ok:?}");

    let bad = json!({"version": "v9", "components": [{"name": "x"}]});
    let bad = client
        .validate_flow_config(req(
            ValidateFlowConfigRequest {
                flow_config: Some(to_struct(&bad)),
            },
            &h,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.valid);
    assert!(bad.errors.len() >= 3, "{bad:?}");
    let all = bad.errors.join("\n");
    assert!(all.contains("v9"), "{all}");
    assert!(all.contains("environment"), "{all}");
    assert!(all.contains("type"), "{all}");

    let event = TrackSelfHostedClientEvent {
        request_id: "r1".into(),
        workflow_id: "42".into(),
        feature_qualified_name: "chat".into(),
        feature_ai_catalog_item: false,
    };
    let status = client
        .track_self_hosted_execute_workflow(req(futures_util::stream::iter(vec![event]), &h))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn execute_workflow_checks_permissions_then_is_unimplemented() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;

    let status = execute(
        &mut client,
        vec![start_event("42", "chat")],
        &rails_headers(&token),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let no_chat = gitlab_key().rails_token(json!({"scopes": ["duo_agent_platform"]}));
    assert_status(
        execute(
            &mut client,
            vec![start_event("42", "chat")],
            &rails_headers(&no_chat),
        )
        .await,
        Code::PermissionDenied,
        "Unauthorized to execute chat",
    );
    let chat_only = gitlab_key().rails_token(json!({"scopes": ["duo_chat"]}));
    assert_status(
        execute(
            &mut client,
            vec![start_event("42", "")],
            &rails_headers(&chat_only),
        )
        .await,
        Code::PermissionDenied,
        "Unauthorized to execute workflow",
    );

    // No start request: nothing to run, the stream just ends.
    let actions = execute(&mut client, vec![heartbeat_event()], &rails_headers(&token))
        .await
        .unwrap();
    assert_eq!(actions, 0);
    let no_id = execute(
        &mut client,
        vec![start_event("", "chat")],
        &rails_headers(&token),
    )
    .await
    .unwrap();
    assert_eq!(no_id, 0);
    let actions = execute(&mut client, vec![], &rails_headers(&token))
        .await
        .unwrap();
    assert_eq!(actions, 0);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn disabled_auth_lets_calls_through_and_warns() {
    let gw = GatewayBuilder::new()
        .env("DUO_WORKFLOW_AUTH__ENABLED", "False")
        .start();
    let mut client = workflow(&gw).await;
    client
        .list_capabilities(ListCapabilitiesRequest {})
        .await
        .unwrap();
    let minted = client
        .generate_token(req(
            GenerateTokenRequest::default(),
            &[("x-gitlab-global-user-id", "user-1".to_string())],
        ))
        .await
        .unwrap()
        .into_inner();
    let claims = jwt_payload(&minted.token);
    assert_eq!(claims["sub"], "user-1");
    // The debug user gets every workflow scope.
    assert_eq!(
        claims["scopes"],
        json!([
            "duo_agent_platform",
            "duo_workflow_execute_workflow",
            "duo_chat"
        ])
    );
    let status = execute(&mut client, vec![start_event("42", "chat")], &[])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let warned = gw.logs().lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("DUO_WORKFLOW_AUTH__ENABLED"))
        })
    });
    assert!(warned, "no WARN about disabled auth:\n{}", gw.logs());
    // The AI Gateway side still requires a token.
    let resp = common::client()
        .post(gw.http_url("/v1/code/user_access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(gw.stop_async().await.success());
}

mod reflection {
    use super::*;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    async fn list_services(gw: &Gateway) -> Result<Vec<String>, tonic::Status> {
        list_services_as(gw, &[]).await
    }

    async fn list_services_as(
        gw: &Gateway,
        headers: &[(&'static str, String)],
    ) -> Result<Vec<String>, tonic::Status> {
        let mut client = ServerReflectionClient::new(channel(gw).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(req(futures_util::stream::iter(vec![request]), headers))
            .await?
            .into_inner();
        let mut names = Vec::new();
        while let Some(resp) = stream.message().await? {
            match resp.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    names.extend(list.service.into_iter().map(|s| s.name))
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        Ok(names)
    }

    #[tokio::test]
    async fn reflection_is_off_by_default() {
        let (_gitlab, gw) = gateway_with_gitlab().await;
        let status = list_services(&gw).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Unauthenticated | Code::Unimplemented),
            "{status:?}"
        );
        // Upstream: authentication first, then UNIMPLEMENTED.
        let token = gitlab_key().rails_token(json!({}));
        wait_until_grpc_accepted(&gw, &token).await;
        let status = list_services_as(&gw, &rails_headers(&token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        assert!(gw.stop_async().await.success());
    }

    #[tokio::test]
    async fn reflection_lists_services_without_a_token_when_enabled() {
        let gw = GatewayBuilder::new()
            .env("DUO_WORKFLOW_GRPC_REFLECTION_ENABLED", "true")
            .start();
        let names = list_services(&gw).await.unwrap();
        assert!(names.iter().any(|n| n == "DuoWorkflow"), "{names:?}");
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
        // The older v1alpha API, which grpcurl falls back to, works as well.
        {
            use tonic_reflection::pb::v1alpha::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(channel(&gw).await)
                .server_reflection_info(futures_util::stream::iter(vec![request]))
                .await
                .unwrap()
                .into_inner();
            let resp = stream.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
                panic!("unexpected answer {resp:?}");
            };
            assert!(list.service.iter().any(|s| s.name == "DuoWorkflow"));
        }
        // Reflection being public does not open the service itself.
        let status = workflow(&gw)
            .await
            .list_capabilities(ListCapabilitiesRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(gw.stop_async().await.success());
    }
}

async fn scrape(url: &str) -> String {
    let resp = common::client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn has_series(text: &str, name: &str, labels: &[&str]) -> bool {
    text.lines()
        .any(|l| l.starts_with(name) && labels.iter().all(|lbl| l.contains(lbl)))
}

#[tokio::test]
async fn metrics_count_grpc_and_http_calls() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;
    client
        .generate_token(req(GenerateTokenRequest::default(), &rails_headers(&token)))
        .await
        .unwrap();
    let _ = client.list_tools(ListToolsRequest {}).await.unwrap_err();
    let _ = with_headers(
        common::client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(&token),
    )
    .send()
    .await
    .unwrap();

    let wf_url = format!("http://{}/metrics", gw.addrs.workflow_metrics);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&wf_url).await;
        let ok = has_series(
            &text,
            "grpc_server_handled_total",
            &[r#"grpc_method="GenerateToken""#, r#"grpc_code="OK""#],
        ) && has_series(
            &text,
            "grpc_server_handled_total",
            &[
                r#"grpc_method="ListTools""#,
                r#"grpc_code="UNAUTHENTICATED""#,
            ],
        );
        if ok {
            assert!(text.contains(r#"grpc_service="DuoWorkflow""#), "{text}");
            assert!(!text.contains(&token), "token leaked into metrics");
            break;
        }
        assert!(Instant::now() < deadline, "missing gRPC series:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = scrape(&format!("http://{}/metrics", gw.addrs.metrics)).await;
    assert!(text.contains("http_request_duration_seconds"), "{text}");
    assert!(
        text.contains(r#"handler="/v1/code/user_access_token""#),
        "{text}"
    );
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn oversized_messages_are_refused_and_the_server_keeps_serving() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;
    let huge = json!({"version": "v1", "blob": "x".repeat(5 * 1024 * 1024)});
    let status = client
        .validate_flow_config(req(
            ValidateFlowConfigRequest {
                flow_config: Some(to_struct(&huge)),
            },
            &rails_headers(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Just under the limit still works.
    let big = json!({"version": "v1", "blob": "x".repeat(3 * 1024 * 1024)});
    let resp = client
        .validate_flow_config(req(
            ValidateFlowConfigRequest {
                flow_config: Some(to_struct(&big)),
            },
            &rails_headers(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.valid);
    client
        .list_capabilities(req(ListCapabilitiesRequest {}, &rails_headers(&token)))
        .await
        .unwrap();
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn large_metadata_is_accepted() {
    let (_gitlab, gw) = gateway_with_gitlab().await;
    let token = gitlab_key().rails_token(json!({}));
    wait_until_grpc_accepted(&gw, &token).await;
    let mut client = workflow(&gw).await;
    // Model metadata and feature flags make for large headers (upstream: 24 KiB).
    let flags: Vec<String> = (0..1500).map(|i| format!("feature_flag_{i}")).collect();
    let flags = flags.join(",");
    assert!(flags.len() > 24 * 1024);
    let headers = with(
        rails_headers(&token),
        "x-gitlab-enabled-feature-flags",
        &flags,
    );
    client
        .list_capabilities(req(ListCapabilitiesRequest {}, &headers))
        .await
        .unwrap();
    assert!(gw.stop_async().await.success());
}
