//! Amazon Bedrock, Vertex AI (Gemini and Claude), Azure OpenAI and Anthropic
//! behind the real gateway: Rails-shaped requests on every route against a
//! loopback fake of each platform that checks what the real one checks
//! (SigV4 signatures, service-account JWTs, paths, headers, bodies), the
//! credential flows (static keys, web identity through STS, IMDSv2, Bedrock
//! API keys, service-account tokens) with refresh before expiry, the faults
//! of the OpenAI-compatible suite on each platform, and secrets kept out of
//! logs, error bodies and `check-config`.
#[path = "common/cloud.rs"]
mod cloud;
mod common;

use std::time::{Duration, Instant};

use cloud::{CloudSettings, FakeCloud};
use common::*;
use serde_json::{Value, json};

const AWS_KEY_ID: &str = "AKIDSTATICTEST0001";
const AWS_SECRET: &str = "static-secret-wJalrXUtnFEMI/K7MDENG";
const AWS_SESSION: &str = "static-session-token-FwoGZXIvYXdzEJr";
const SA_EMAIL: &str = "aigw@duo-project.iam.gserviceaccount.com";
const BEDROCK_MODEL: &str = "arn:aws:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0";

/// The platforms and what Rails sends for a model on each.
#[derive(Clone, Copy, Debug)]
enum P {
    Bedrock,
    Gemini,
    VertexClaude,
    Azure,
    Anthropic,
}

const ALL: [P; 5] = [
    P::Bedrock,
    P::Gemini,
    P::VertexClaude,
    P::Azure,
    P::Anthropic,
];

impl P {
    /// `model_metadata` as Rails builds it (provider = the platform field).
    fn meta(self, fake: &str) -> Value {
        match self {
            // Bedrock: no endpoint, an inference-profile ARN without a prefix.
            P::Bedrock => json!({"provider": "bedrock", "name": "claude_3", "endpoint": null,
                                 "api_key": null, "identifier": BEDROCK_MODEL}),
            P::Gemini => json!({"provider": "vertex_ai", "name": "gemini", "endpoint": null,
                                "api_key": null, "identifier": "vertex_ai/gemini-2.5-flash"}),
            P::VertexClaude => {
                json!({"provider": "vertex_ai", "name": "claude_3", "endpoint": null,
                                      "api_key": null, "identifier": "vertex_ai/claude-sonnet-4@20250514"})
            }
            P::Azure => json!({"provider": "api", "name": "gpt", "endpoint": fake,
                               "api_key": "azure-key-7f3a9c", "identifier": "azure/gpt-4o-deploy"}),
            P::Anthropic => json!({"provider": "api", "name": "claude_3", "endpoint": fake,
                                   "api_key": "sk-ant-test-5d2e1b", "identifier": "anthropic/claude-sonnet-4-20250514"}),
        }
    }

    /// The flat fields of `/v2/code/completions` and `/v2/code/generations`.
    fn flat(self, fake: &str, body: &mut Value) {
        let m = self.meta(fake);
        body["model_provider"] = json!("litellm");
        body["model_name"] = m["name"].clone();
        body["model_endpoint"] = m["endpoint"].clone();
        body["model_api_key"] = m["api_key"].clone();
        let id = m["identifier"].as_str().unwrap();
        // The flat form has no platform field: Bedrock ids carry their prefix.
        body["model_identifier"] = json!(if matches!(self, P::Bedrock) {
            format!("bedrock/{id}")
        } else {
            id.to_string()
        });
    }
}

fn token() -> String {
    gitlab_key().rails_token(json!({"scopes": [
        "complete_code", "generate_code", "duo_chat", "duo_classic_chat", "explain_code",
        "generate_commit_message", "include_file_context", "documentation_search"]}))
}

fn service_account_file(dir: &std::path::Path, fake: &str) -> std::path::PathBuf {
    let key = other_key();
    let sa = json!({
        "type": "service_account",
        "project_id": "duo-project",
        "private_key_id": "sa-key-1",
        "private_key": key.pem,
        "client_email": SA_EMAIL,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("{fake}/token"),
    });
    temp_file(dir, "sa.json", &sa.to_string())
}

fn settings() -> CloudSettings {
    let jwk = other_key().jwk();
    CloudSettings {
        service_account: Some((
            SA_EMAIL.into(),
            jwk["n"].as_str().unwrap().into(),
            jwk["e"].as_str().unwrap().into(),
        )),
        ..CloudSettings::default()
    }
}

/// The environment of an install on AWS GovCloud with Vertex AI too; no
/// shared AWS files, no instance metadata unless a test says so.
fn cloud_env(fake: &str, sa: &std::path::Path, home: &std::path::Path) -> Vec<(String, String)> {
    [
        ("AWS_REGION", "us-gov-west-1".to_string()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.to_string()),
        ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_string()),
        ("AWS_SESSION_TOKEN", AWS_SESSION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", home.join("none").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("none").display().to_string(),
        ),
        ("HOME", home.display().to_string()),
        ("GOOGLE_APPLICATION_CREDENTIALS", sa.display().to_string()),
        ("AIGW_VERTEXAI_LOCATION", "us-east5".to_string()),
        ("AIGW_VERTEXAI_ENDPOINT", fake.to_string()),
        ("GCE_METADATA_HOST", "127.0.0.1:9".to_string()),
        (
            "AIGW_CODE_SUGGESTIONS__MODEL_REQUEST_TIMEOUT",
            "2".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn gateway(gitlab: &FakeGitLab, env: &[(String, String)], unset: &[&str]) -> Gateway {
    let mut b = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_CUSTOM_MODELS__ENABLED", "true");
    for (k, v) in env {
        b = b.env(k, v);
    }
    for k in unset {
        b = b.unset(k);
    }
    let gw = b.start();
    wait_until_accepted(&gw, &token()).await;
    gw
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    with_headers(client().post(gw.http_url(path)), &rails_headers(&token()))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn rails_completion(p: P, fake: &str, prefix: &str, stream: bool) -> Value {
    let mut body = json!({
        "prompt_version": 2,
        "project_path": "group/project",
        "project_id": 7,
        "current_file": {"file_name": "app/answer.py", "language_identifier": "python",
                         "content_above_cursor": prefix, "content_below_cursor": ""},
        "prompt": null,
        "stream": stream,
    });
    p.flat(fake, &mut body);
    body
}

/// A code completion as Rails sends it for `p`: the flat `/v2/code/completions`
/// form, except for Gemini, whose family upstream's v2 list refuses (422, as
/// upstream): its completions go through the component API, `/v3/code/completions`.
fn completion_request(p: P, fake: &str, prefix: &str, stream: bool) -> (&'static str, Value) {
    match p {
        P::Gemini => (
            "/v3/code/completions",
            component(p, fake, "code_editor_completion", prefix, stream),
        ),
        _ => (
            "/v2/code/completions",
            rails_completion(p, fake, prefix, stream),
        ),
    }
}

async fn complete(gw: &Gateway, p: P, fake: &str, prefix: &str, stream: bool) -> reqwest::Response {
    let (path, body) = completion_request(p, fake, prefix, stream);
    post(gw, path, &body).await
}

fn rails_generation(p: P, fake: &str, prefix: &str) -> Value {
    let mut body = json!({
        "current_file": {"file_name": "app/search.py", "content_above_cursor": prefix,
                         "content_below_cursor": ""},
        "prompt": "write a binary search",
        "prompt_version": 2,
        "prompt_id": "code_suggestions/generations",
        "stream": false,
    });
    p.flat(fake, &mut body);
    body
}

fn component(p: P, fake: &str, kind: &str, prefix: &str, stream: bool) -> Value {
    let mut payload = json!({"file_name": "src/search.py", "content_above_cursor": prefix,
                             "content_below_cursor": "\n", "language_identifier": "python",
                             "stream": stream});
    if kind == "code_editor_generation" {
        payload["prompt_id"] = json!("code_suggestions/generations");
        payload["prompt_enhancer"] = json!({"libraries": ["numpy"]});
    }
    json!({"prompt_components": [{"type": kind, "payload": payload,
            "metadata": {"source": "gitlab-language-server", "version": "7.17.1"}}],
           "model_metadata": p.meta(fake)})
}

fn chat(p: P, fake: &str, question: &str) -> Value {
    json!({
        "messages": [
            {"role": "user", "content": "hi", "context": null, "current_file": null, "additional_context": []},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": question, "context": null, "current_file": null,
             "additional_context": []}
        ],
        "model_metadata": p.meta(fake),
        "unavailable_resources": ["Pipelines"]
    })
}

fn assert_no_secrets(fake: &FakeCloud, text: &str, what: &str) {
    for s in fake.secrets().iter().map(String::as_str).chain([
        AWS_SECRET,
        AWS_SESSION,
        "PRIVATE KEY",
        "azure-key-7f3a9c",
        "sk-ant-test-5d2e1b",
    ]) {
        assert!(!text.contains(s), "{what} contains the secret {s}");
    }
}

/// Every route, every platform: the answer arrives, and the fakes found
/// nothing wrong with any request (signatures, tokens, paths, bodies).
#[tokio::test]
async fn every_route_answers_through_every_platform() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let fake = FakeCloud::start(settings()).await;
    fake.add_aws_key(AWS_KEY_ID, AWS_SECRET, Some(AWS_SESSION));
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let gw = gateway(&gitlab, &cloud_env(&fake.url, &sa, dir.path()), &[]).await;
    let f = fake.url.as_str();

    for p in ALL {
        let ctx = format!("{p:?}");
        // Code completion, plain and streamed.
        let resp = complete(&gw, p, f, "# REPLY: return 42\ndef f():\n", false).await;
        assert_eq!(resp.status(), 200, "{ctx}: {}", resp.text().await.unwrap());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["text"], "return 42", "{ctx}: {v}");
        let engine = if matches!(p, P::Gemini) {
            "vertex_ai"
        } else {
            "litellm"
        };
        assert_eq!(v["model"]["engine"], engine, "{ctx}");
        let resp = complete(&gw, p, f, "# REPLY: x = 1 + 2\n", true).await;
        assert_eq!(resp.status(), 200, "{ctx}");
        assert_eq!(resp.text().await.unwrap(), "x = 1 + 2", "{ctx}");

        // Code generation (v2, Rails' older form; not for Gemini, see completion_request).
        if !matches!(p, P::Gemini) {
            let resp = post(
                &gw,
                "/v2/code/generations",
                &rails_generation(p, f, "# REPLY: def search(xs, x):\n"),
            )
            .await;
            assert_eq!(resp.status(), 200, "{ctx}");
            let v: Value = resp.json().await.unwrap();
            assert!(
                v["choices"][0]["text"]
                    .as_str()
                    .unwrap()
                    .contains("def search(xs, x):"),
                "{ctx}: {v}"
            );
        }

        // v3 completion, v4 generation (SSE).
        let resp = post(
            &gw,
            "/v3/code/completions",
            &component(p, f, "code_editor_completion", "# REPLY: y = 2\n", false),
        )
        .await;
        assert_eq!(resp.status(), 200, "{ctx}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["text"], "y = 2", "{ctx}: {v}");
        let resp = post(
            &gw,
            "/v4/code/suggestions",
            &component(
                p,
                f,
                "code_editor_generation",
                "# REPLY: ```python\\nz = 3\\n```\n# make z\n",
                true,
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{ctx}");
        let text = resp.text().await.unwrap();
        assert!(text.starts_with("event: stream_start"), "{ctx}: {text}");
        assert!(
            text.contains("z = 3") && text.ends_with("event: stream_end\r\ndata: null\r\n\r\n"),
            "{ctx}: {text}"
        );

        // Duo Chat: a ReAct final answer, streamed as NDJSON.
        let resp = post(
            &gw,
            "/v2/chat/agent",
            &chat(
                p,
                f,
                "What is 2+2? REPLY: Thought: easy.\\nFinal Answer: four",
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{ctx}");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("final_answer_delta") && text.contains("four"),
            "{ctx}: {text}"
        );

        // Prompt invocations, v1 and v2, and the admin's "Test connection".
        let body = json!({"inputs": {"input": "REPLY: It prints nothing.", "selected_text": "fn main() {}",
                                     "file_content": "", "language_info": "Rust"},
                          "stream": false, "model_metadata": p.meta(f)});
        let resp = post(&gw, "/v1/prompts/chat/explain_code", &body).await;
        assert_eq!(resp.status(), 200, "{ctx}");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!("It prints nothing."),
            "{ctx}"
        );
        let body = json!({"inputs": {"diff": "REPLY: Fix the parser"}, "stream": true, "model_metadata": p.meta(f)});
        let resp = post(&gw, "/v2/prompts/generate_commit_message", &body).await;
        assert_eq!(resp.status(), 200, "{ctx}");
        let text = resp.text().await.unwrap();
        let content: String = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(content, "Fix the parser", "{ctx}: {text}");
        let body = json!({"stream": false, "inputs": {}, "model_metadata": p.meta(f)});
        let resp = post(&gw, "/v1/prompts/model_configuration%2Fcheck", &body).await;
        assert_eq!(resp.status(), 200, "{ctx}: {}", resp.text().await.unwrap());
        assert_eq!(fake.violations(), Vec::<String>::new(), "{ctx}");
    }

    // What went over the wire, per platform.
    let b = fake.last("bedrock");
    assert_eq!(
        b.path,
        "/model/arn%3Aaws%3Abedrock%3Aus-gov-west-1%3A123456789012%3Ainference-profile%2Fus-gov.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert!(
        b.headers["authorization"]
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/"))
    );
    assert_eq!(b.headers["x-amz-security-token"], AWS_SESSION);
    assert_eq!(b.body["inferenceConfig"]["maxTokens"], 16);
    let chat_call = fake
        .seen()
        .into_iter()
        .find(|s| {
            s.platform == "bedrock"
                && s.path.ends_with("/converse-stream")
                && s.body["inferenceConfig"]["stopSequences"] == json!(["Observation:"])
        })
        .expect("Duo Chat's ConverseStream call");
    assert!(chat_call.body["system"][0]["text"].as_str().unwrap().len() > 100);
    let roles: Vec<&str> = chat_call.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.first(), Some(&"user"));
    assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
    let v = fake.last("vertex");
    assert!(v.path.starts_with("/v1/projects/duo-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:"), "{}", v.path);
    assert!(v.headers["authorization"].starts_with("Bearer ya29.fake-google-token-"));
    let gemini = fake
        .seen()
        .into_iter()
        .find(|s| {
            s.path
                .contains("/publishers/google/models/gemini-2.5-flash:streamGenerateContent")
        })
        .expect("a Gemini stream");
    assert_eq!(gemini.query, "alt=sse");
    let a = fake.last("azure");
    assert_eq!(a.path, "/openai/deployments/gpt-4o-deploy/chat/completions");
    assert_eq!(a.query, "api-version=2024-10-21");
    let an = fake.last("anthropic");
    assert_eq!(an.body["model"], "claude-sonnet-4-20250514");
    // One Google token served every Vertex call (cached, not yet near expiry).
    assert_eq!(fake.hits("google_token"), 1);
    assert_no_secrets(&fake, &gw.logs(), "the gateway's logs");
}

/// The faults of the OpenAI-compatible suite, on each platform, through
/// `/v2/code/completions`: the same clear errors, and the gateway keeps serving.
#[tokio::test]
async fn faults_give_the_same_clear_errors_on_every_platform() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let fake = FakeCloud::start(settings()).await;
    fake.add_aws_key(AWS_KEY_ID, AWS_SECRET, Some(AWS_SESSION));
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let gw = gateway(&gitlab, &cloud_env(&fake.url, &sa, dir.path()), &[]).await;
    let f = fake.url.as_str();
    for p in ALL {
        let platform_words = match p {
            P::Bedrock => "Amazon Bedrock denied access to model 'arn:aws:bedrock:us-gov-west-1",
            P::Gemini | P::VertexClaude => "in project 'duo-project', location 'us-east5'",
            P::Azure => "Azure OpenAI refused the key for deployment 'gpt-4o-deploy'",
            P::Anthropic => "refused the key for model 'claude-sonnet-4-20250514'",
        };
        let too_long = match p {
            P::Bedrock => "Input is too long for requested model.",
            P::Gemini | P::VertexClaude => "exceeds the maximum number of tokens",
            P::Azure => "maximum context length is 128000 tokens",
            P::Anthropic => "prompt is too long: 210000 tokens > 200000 maximum",
        };
        let retry_after = if matches!(p, P::Azure | P::Anthropic) {
            "7"
        } else {
            "5"
        };
        for (fault, status, needle) in [
            ("500", 502, "HTTP 500"),
            ("429", 429, "Too many requests"),
            ("403", 502, platform_words),
            ("toolong", 502, too_long),
            ("invalid", 502, "invalid"),
            ("hang", 504, "did not answer"),
        ] {
            let started = Instant::now();
            let resp = complete(&gw, p, f, &format!("# FAULT: {fault}\ndef f():\n"), false).await;
            let ctx = format!("{p:?} fault {fault}");
            assert_eq!(resp.status(), status, "{ctx}");
            if fault == "429" {
                assert_eq!(resp.headers()["retry-after"], retry_after, "{ctx}");
            }
            let text = resp.text().await.unwrap();
            assert!(text.contains(needle), "{ctx}: {text}");
            assert_no_secrets(&fake, &text, &ctx);
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{ctx} took {:?}",
                started.elapsed()
            );
        }
        // Streams: garbage from the start is an error status; a reset midway
        // is a cut body, never passed off as a complete answer.
        let resp = complete(&gw, p, f, "# FAULT: invalid\n", true).await;
        assert_eq!(resp.status(), 502, "{p:?} invalid stream");
        let (path, body) = completion_request(
            p,
            f,
            "# REPLY: one two three four
# FAULT: reset
",
            true,
        );
        let resp = with_headers(client().post(gw.http_url(path)), &rails_headers(&token()))
            .json(&body)
            .send()
            .await;
        if let Ok(resp) = resp {
            let status = resp.status();
            let text = resp.text().await;
            assert!(
                text.is_err(),
                "{p:?}: a reset stream must not end cleanly: {status} {text:?}"
            );
        }
        // Still serving.
        let resp = complete(&gw, p, f, "# REPLY: fine\n", false).await;
        assert_eq!(resp.status(), 200, "{p:?} after the faults");
    }
    // Bedrock throttling inside ConverseStream (an exception frame) is a 429 too.
    let resp = complete(&gw, P::Bedrock, f, "# FAULT: exception\n", true).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_no_secrets(&fake, &gw.logs(), "the gateway's logs");

    // Refused connections: every platform's endpoint on a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let mut env = cloud_env(&fake.url, &sa, dir.path());
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL_BEDROCK_RUNTIME" || k == "AIGW_VERTEXAI_ENDPOINT" {
            *v = dead.clone();
        }
    }
    let gw2 = gateway(&gitlab, &env, &[]).await;
    for p in ALL {
        let resp = complete(&gw2, p, &dead, "def f():\n", false).await;
        assert_eq!(resp.status(), 502, "{p:?} refused");
        assert!(
            resp.text().await.unwrap().contains("cannot connect"),
            "{p:?} refused"
        );
    }
}

/// Web identity (STS) and service-account tokens that expire during the
/// test: the gateway fetches new ones before they lapse, and no request fails.
#[tokio::test]
async fn expiring_credentials_are_refreshed_without_failing_a_request() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    // Advertised lifetime 302 s, honoured for 2.5 s: a gateway that did not
    // refresh five minutes early would be refused after 2.5 s.
    let fake = FakeCloud::start(CloudSettings {
        google_lifetime: (302, Duration::from_millis(2500)),
        aws_lifetime: (302, Duration::from_millis(2500)),
        ..settings()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let web_identity = temp_file(dir.path(), "token", "eyJ.web-identity.token");
    let mut env = cloud_env(&fake.url, &sa, dir.path());
    env.extend([
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE".to_string(),
            web_identity.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN".to_string(),
            "arn:aws:iam::123456789012:role/aigw".to_string(),
        ),
        ("AWS_ROLE_SESSION_NAME".to_string(), "aigw".to_string()),
        ("AWS_ENDPOINT_URL_STS".to_string(), fake.url.clone()),
    ]);
    let static_keys = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];
    env.retain(|(k, _)| !static_keys.contains(&k.as_str()));
    let gw = gateway(&gitlab, &env, &static_keys).await;
    let f = fake.url.as_str();
    for round in 0..3 {
        for p in [P::Bedrock, P::Gemini] {
            let resp = complete(&gw, p, f, "# REPLY: ok\n", false).await;
            assert_eq!(
                resp.status(),
                200,
                "{p:?} round {round}: {}",
                resp.text().await.unwrap()
            );
        }
        if round == 0 {
            // Both fetched once, then served from the cache.
            assert_eq!((fake.hits("sts"), fake.hits("google_token")), (1, 1));
        }
        if round == 1 {
            assert_eq!(
                (fake.hits("sts"), fake.hits("google_token")),
                (1, 1),
                "cached within the lifetime"
            );
            tokio::time::sleep(Duration::from_millis(2700)).await;
        }
    }
    assert_eq!(
        (fake.hits("sts"), fake.hits("google_token")),
        (2, 2),
        "refreshed once each"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    let b = fake.last("bedrock");
    assert!(
        b.headers["authorization"].contains("Credential=ASIASTS"),
        "signed with the STS key"
    );
    assert_no_secrets(&fake, &gw.logs(), "the gateway's logs");
}

/// IMDSv2 on an EC2 host, and a Bedrock API key instead of SigV4.
#[tokio::test]
async fn instance_metadata_and_bedrock_api_keys() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let fake = FakeCloud::start(settings()).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let mut env = cloud_env(&fake.url, &sa, dir.path());
    env.retain(|(k, _)| k != "AWS_EC2_METADATA_DISABLED");
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), fake.url.clone()));
    let unset = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];
    let mut only_imds = env.clone();
    only_imds.retain(|(k, _)| !unset.contains(&k.as_str()));
    let gw = gateway(&gitlab, &only_imds, &unset).await;
    let f = fake.url.as_str();
    let resp = complete(&gw, P::Bedrock, f, "# REPLY: from imds\n", false).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(fake.hits("imds_token") >= 1 && fake.hits("imds_credentials") >= 1);
    assert!(fake.last("bedrock").headers["authorization"].contains("Credential=ASIAIMDS"));
    drop(gw);

    let mut with_key = only_imds.clone();
    with_key.push((
        "AWS_BEARER_TOKEN_BEDROCK".into(),
        "bedrock-api-key-ABSK42".into(),
    ));
    let gw = gateway(&gitlab, &with_key, &unset).await;
    let resp = complete(&gw, P::Bedrock, f, "# REPLY: with a key\n", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        fake.last("bedrock").headers["authorization"],
        "Bearer bedrock-api-key-ABSK42"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_no_secrets(&fake, &gw.logs(), "the gateway's logs");
}

/// No credentials at all: the error names what was looked at, never a
/// value; `check-config` shows where secrets come from, never what they are.
#[tokio::test]
async fn missing_credentials_name_the_variables_and_secrets_stay_out_of_check_config() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let fake = FakeCloud::start(settings()).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let all = cloud_env(&fake.url, &sa, dir.path());
    let unset = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ];
    let env: Vec<(String, String)> = all
        .iter()
        .filter(|(k, _)| !unset.contains(&k.as_str()))
        .cloned()
        .collect();
    let gw = gateway(&gitlab, &env, &unset).await;
    let f = fake.url.as_str();
    let resp = complete(&gw, P::Bedrock, f, "def f():\n", false).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_PROFILE",
        "IMDSv2",
    ] {
        assert!(text.contains(var), "{var} not named: {text}");
    }
    let resp = complete(&gw, P::Gemini, f, "def f():\n", false).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("GOOGLE_APPLICATION_CREDENTIALS") && text.contains("GCE_METADATA_HOST"),
        "{text}"
    );
    // The admin's "Test connection": 421 with the reason.
    let body = json!({"stream": false, "inputs": {}, "model_metadata": P::Bedrock.meta(f)});
    let resp = post(&gw, "/v1/prompts/model_configuration%2Fcheck", &body).await;
    assert_eq!(resp.status(), 421);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("401: Unauthorized (Amazon Bedrock credentials: no AWS credentials found"),
        "{text}"
    );
    assert_eq!(fake.seen().len(), 0, "nothing was sent unsigned");

    // check-config with every secret set.
    let mut b = GatewayBuilder::new().arg("check-config");
    for (k, v) in &all {
        b = b.env(k, v);
    }
    let b = b
        .env("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-ABSK42")
        .env("AZURE_API_KEY", "azure-key-7f3a9c")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-5d2e1b")
        .env(
            "AIGW_BEDROCK_GUARDRAIL_CONFIG",
            r#"{"guardrailIdentifier": "gr-1", "guardrailVersion": "2", "trace": "enabled"}"#,
        );
    let out = b.command().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let models = &report["models"];
    assert_eq!(
        models["bedrock"]["region"],
        "us-gov-west-1 (from AWS_REGION)"
    );
    assert_eq!(
        models["bedrock"]["bearer_token"],
        "<redacted: env AWS_BEARER_TOKEN_BEDROCK>"
    );
    assert_eq!(
        models["bedrock"]["guardrail"]["guardrailIdentifier"],
        "gr-1"
    );
    assert!(
        models["bedrock"]["credential_variables_set"]
            .as_array()
            .unwrap()
            .contains(&json!("AWS_SECRET_ACCESS_KEY"))
    );
    assert_eq!(models["vertex_ai"]["location"], "us-east5");
    assert_no_secrets(&fake, &stdout, "check-config");
    assert_no_secrets(
        &fake,
        &String::from_utf8_lossy(&out.stderr),
        "check-config's stderr",
    );

    // A malformed guardrail is refused at startup, naming the variable.
    let out = GatewayBuilder::new()
        .arg("check-config")
        .env(
            "AIGW_BEDROCK_GUARDRAIL_CONFIG",
            r#"{"guardrailVersion": "x"}"#,
        )
        .command()
        .output()
        .unwrap();
    let all_out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all_out.contains("AIGW_BEDROCK_GUARDRAIL_CONFIG"),
        "{all_out}"
    );
}

/// The guardrail rides on every Converse call.
#[tokio::test]
async fn the_bedrock_guardrail_is_attached() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let fake = FakeCloud::start(settings()).await;
    fake.add_aws_key(AWS_KEY_ID, AWS_SECRET, Some(AWS_SESSION));
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &fake.url);
    let mut env = cloud_env(&fake.url, &sa, dir.path());
    env.push((
        "AIGW_BEDROCK_GUARDRAIL_CONFIG".into(),
        r#"{"guardrailIdentifier": "arn:aws:bedrock:us-gov-west-1:123456789012:guardrail/gr1", "guardrailVersion": "", "trace": "enabled"}"#.into(),
    ));
    let gw = gateway(&gitlab, &env, &[]).await;
    let resp = complete(&gw, P::Bedrock, &fake.url, "# REPLY: guarded\n", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        fake.last("bedrock").body["guardrailConfig"],
        json!({"guardrailIdentifier": "arn:aws:bedrock:us-gov-west-1:123456789012:guardrail/gr1",
               "guardrailVersion": "DRAFT", "trace": "enabled"})
    );
}
