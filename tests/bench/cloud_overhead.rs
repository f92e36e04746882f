//! What the gateway adds on top of each cloud platform: the same code
//! completion sent through the gateway and straight to the loopback fake of
//! Bedrock, Vertex AI (Gemini), Azure OpenAI and Anthropic (issue "Bedrock,
//! Vertex AI, Azure OpenAI and Anthropic", Benchmarks).
//!
//! The direct request is the exact one the gateway sent (captured from the
//! fake, SigV4 signature or token included) replayed as it is, so the fake
//! does the same work (signature check, JSON, framing) in both columns and
//! the difference is the gateway's own: the GitLab request, the prompt,
//! signing or token lookup, the extra hop, the answer's translation. The fake
//! runs in this process, sharing the 2 CPUs with the load and the gateway.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::cloud::{CloudSettings, FakeCloud};
use super::common::*;
use super::model_overhead::{Probe, load};

const AWS_KEY_ID: &str = "AKIDBENCH000000001";
const AWS_SECRET: &str = "bench-secret-wJalrXUtnFEMI";
const SA_EMAIL: &str = "bench@duo-project.iam.gserviceaccount.com";

/// The environment of the gateway under test (static AWS keys, a service account).
pub fn env(fake: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let key = other_key();
    let sa = json!({"type": "service_account", "project_id": "duo-project",
                    "private_key_id": "sa-key-1", "private_key": key.pem,
                    "client_email": SA_EMAIL, "token_uri": format!("{fake}/token")});
    let sa_path = temp_file(dir, "sa.json", &sa.to_string());
    [
        ("AWS_REGION", "us-gov-west-1".to_string()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.to_string()),
        ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", dir.join("none").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("none").display().to_string(),
        ),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            sa_path.display().to_string(),
        ),
        ("AIGW_VERTEXAI_LOCATION", "us-east5".to_string()),
        ("AIGW_VERTEXAI_ENDPOINT", fake.to_string()),
        ("GCE_METADATA_HOST", "127.0.0.1:9".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub async fn fake() -> FakeCloud {
    let jwk = other_key().jwk();
    let fake = FakeCloud::start(CloudSettings {
        service_account: Some((
            SA_EMAIL.into(),
            jwk["n"].as_str().unwrap_or_default().into(),
            jwk["e"].as_str().unwrap_or_default().into(),
        )),
        ..CloudSettings::default()
    })
    .await;
    fake.add_aws_key(AWS_KEY_ID, AWS_SECRET, None);
    fake
}

/// (name, gateway route, body) of one platform's code completion.
fn request(platform: &str, fake: &str, stream: bool) -> (&'static str, &'static str, Value) {
    let prefix = "# REPLY: return math.pi * r * r\nimport math\n\ndef area(r):\n    ";
    let flat = |name: &str, endpoint: Value, key: Value, id: &str| {
        json!({"current_file": {"file_name": "app/calc.py", "content_above_cursor": prefix,
                                "content_below_cursor": "\n\nprint(area(2))\n"},
               "intent": "completion", "stream": stream, "project_path": "bench/project",
               "project_id": 1, "model_provider": "litellm", "prompt_version": 2, "prompt": null,
               "model_endpoint": endpoint, "model_name": name, "model_api_key": key,
               "model_identifier": id})
    };
    match platform {
        "Amazon Bedrock (Converse, SigV4)" => (
            "bedrock",
            "/v2/code/completions",
            flat(
                "claude_3",
                Value::Null,
                Value::Null,
                "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
            ),
        ),
        "Azure OpenAI" => (
            "azure",
            "/v2/code/completions",
            flat(
                "gpt",
                json!(fake),
                json!("azure-key-7f3a9c"),
                "azure/gpt-4o-deploy",
            ),
        ),
        "Anthropic Messages" => (
            "anthropic",
            "/v2/code/completions",
            flat(
                "claude_3",
                json!(fake),
                json!("sk-ant-test-5d2e1b"),
                "anthropic/claude-sonnet-4-20250514",
            ),
        ),
        _ => (
            "vertex",
            "/v3/code/completions",
            json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
                       "file_name": "app/calc.py", "content_above_cursor": prefix,
                       "content_below_cursor": "\n", "language_identifier": "python",
                       "stream": stream}}],
                   "model_metadata": {"provider": "vertex_ai", "name": "gemini", "endpoint": null,
                                      "api_key": null, "identifier": "vertex_ai/gemini-2.5-flash"}}),
        ),
    }
}

fn probe(uri: String, headers: Vec<(String, String)>, body: &Value) -> Probe {
    Probe {
        uri: uri.parse().unwrap_or_default(),
        headers,
        body: Bytes::from(body.to_string()),
    }
}

/// The cloud section of BENCHMARKS.md: `http` is a gateway started with [`env`].
pub async fn run(http: &str, token: &str, fake: &FakeCloud, run_for: Duration) {
    println!("\n### Added latency: each cloud platform's fake, straight vs through the gateway\n");
    println!(
        "A Rails-shaped code completion per platform (Bedrock: `bedrock/` id, static SigV4 keys; Vertex AI: Gemini \
         through `/v3/code/completions`, service-account token; Azure: `api-key`; Anthropic: `x-api-key`). The fake \
         (tests/common/cloud.rs, in the load generator's process) answers at once and checks every request (Bedrock: \
         the SigV4 signature). Direct = the request the gateway sent, captured from the fake and replayed byte for byte. \
         Non-streaming: whole response; streaming: first answer bytes. {} s per cell.\n",
        run_for.as_secs()
    );
    println!(
        "| platform | request | concurrency | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut gw_headers: Vec<(String, String)> = rails_headers(token)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    gw_headers.push(("content-type".into(), "application/json".into()));
    for platform in [
        "Amazon Bedrock (Converse, SigV4)",
        "Vertex AI (Gemini)",
        "Azure OpenAI",
        "Anthropic Messages",
    ] {
        for stream in [false, true] {
            let (name, path, body) = request(platform, &fake.url, stream);
            let gw = probe(format!("http://{http}{path}"), gw_headers.clone(), &body);
            // Capture what the gateway sends (and warm its credential cache).
            let _ = load(&gw, 1, Duration::from_millis(200)).await;
            let sent = fake.last(name);
            let headers: Vec<(String, String)> = sent
                .headers
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "content-length" | "host" | "accept-encoding")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let query = if sent.query.is_empty() {
                String::new()
            } else {
                format!("?{}", sent.query)
            };
            let direct = probe(
                format!("{}{}{query}", fake.url, sent.path),
                headers,
                &sent.body,
            );
            for conc in [1, 64] {
                let d = load(&direct, conc, run_for).await;
                let g = load(&gw, conc, run_for).await;
                let (dp50, dp99, gp50, gp99) = if stream {
                    (
                        d.first_p50_ms,
                        d.first_p99_ms,
                        g.first_p50_ms,
                        g.first_p99_ms,
                    )
                } else {
                    (d.p50_ms, d.p99_ms, g.p50_ms, g.p99_ms)
                };
                println!(
                    "| {platform} | {} | {conc} | {:.0} | {:.0} | {dp50:.3} / {dp99:.3} | {gp50:.3} / {gp99:.3} | **{:+.3}** | **{:+.3}** | {} |",
                    if stream {
                        "`stream: true` (first bytes)"
                    } else {
                        "JSON"
                    },
                    d.rps,
                    g.rps,
                    gp50 - dp50,
                    gp99 - dp99,
                    d.errors + g.errors
                );
            }
        }
    }
    let v = fake.violations();
    println!(
        "\nFake's verdicts: {} request(s) refused (signature, token, path or body).",
        v.len()
    );
}
