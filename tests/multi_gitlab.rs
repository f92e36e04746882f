//! One gateway for several offline GitLab instances (`AIGW_ADDITIONAL_GITLAB_URLS`):
//! each instance is an OIDC issuer of its own, with its own keys, and nothing
//! crosses between them. Fake instances on loopback, each with its own key and
//! instance id; the real binary on HTTP and gRPC.
mod common;
use common::*;

use std::{
    sync::{OnceLock, atomic::Ordering},
    time::{Duration, Instant},
};

use aigw::grpc::proto::{
    GenerateTokenRequest, ListCapabilitiesRequest, duo_workflow_client::DuoWorkflowClient,
};
use serde_json::{Value, json};
use tonic::{Code, Request, transport::Channel};

const MINT: &str = "/v1/code/user_access_token";
const FORBIDDEN: &str = r#"{"error":"Forbidden by auth provider"}"#;
const INSTANCE_MISMATCH: &str = r#"{"error":"Header mismatch 'X-Gitlab-Instance-Id'"}"#;
const EARLY_REFRESH: &str = "refreshing this issuer's keys early";

/// Instance B is reached at a loopback URL but announces its external URL,
/// which is what its tokens carry as `iss`.
const B_EXTERNAL: &str = "https://gitlab-b.example.com";

fn key_b() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::generate)
}

fn key_c() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::generate)
}

/// One fake GitLab instance: its server, key, `iss` and instance id.
struct Instance {
    gitlab: FakeGitLab,
    key: &'static TestKey,
    iss: String,
    id: &'static str,
}

impl Instance {
    /// `announced: None`: the instance announces (and signs with) its own URL.
    async fn start(key: &'static TestKey, id: &'static str, announced: Option<&str>) -> Self {
        let gitlab = FakeGitLab::start_as(vec![key.jwk()], announced).await;
        let iss = announced.map_or_else(|| gitlab.url.clone(), str::to_string);
        Self {
            gitlab,
            key,
            iss,
            id,
        }
    }

    /// A token as this instance's Rails self-issues it.
    fn token(&self) -> String {
        self.key
            .rails_token(json!({"iss": self.iss, "sub": self.id}))
    }

    /// Rails' headers for this instance.
    fn headers(&self, token: &str) -> Vec<(&'static str, String)> {
        instance_headers(token, self.id)
    }
}

fn instance_headers(token: &str, instance_id: &str) -> Vec<(&'static str, String)> {
    let mut h = rails_headers(token);
    h.retain(|(k, _)| *k != "x-gitlab-instance-id");
    h.push(("x-gitlab-instance-id", instance_id.to_string()));
    h
}

/// A: announces its own URL. B: announces its external URL. C: a third one.
async fn three_instances() -> (Instance, Instance, Instance) {
    (
        Instance::start(gitlab_key(), "instance-a", None).await,
        Instance::start(key_b(), "instance-b", Some(B_EXTERNAL)).await,
        Instance::start(key_c(), "instance-c", None).await,
    )
}

/// A gateway with `primary` as AIGW_GITLAB_URL and `more` as the additional list.
fn gateway(primary: &str, more: &[&str]) -> Gateway {
    GatewayBuilder::new()
        .gitlab(primary)
        .env("AIGW_ADDITIONAL_GITLAB_URLS", &more.join(", "))
        .start()
}

async fn post(gw: &Gateway, path: &str, headers: &[(&'static str, String)]) -> (u16, String) {
    let resp = with_headers(client().post(gw.http_url(path)), headers)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Waits until the gateway accepts `token` with `headers` (keys fetched).
async fn wait_accepted(gw: &Gateway, headers: &[(&'static str, String)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = post(gw, MINT, headers).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never accepted ({status} {body}); logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mints a user access token over HTTP; panics unless 200.
async fn mint(gw: &Gateway, headers: &[(&'static str, String)]) -> String {
    let (status, body) = post(gw, MINT, headers).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

async fn workflow(gw: &Gateway) -> DuoWorkflowClient<Channel> {
    let ch = Channel::from_shared(gw.grpc_url())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    DuoWorkflowClient::new(ch)
}

fn req<T>(msg: T, headers: &[(&'static str, String)]) -> Request<T> {
    let mut r = Request::new(msg);
    for (k, v) in headers {
        r.metadata_mut().insert(*k, v.parse().unwrap());
    }
    r
}

/// ListCapabilities as `headers`: Ok, or the status code and message.
async fn grpc_auth(
    client: &mut DuoWorkflowClient<Channel>,
    headers: &[(&'static str, String)],
) -> Result<(), (Code, String)> {
    client
        .list_capabilities(req(ListCapabilitiesRequest {}, headers))
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// The value of the series `name{labels...}` in a Prometheus text page.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lbl| l.contains(lbl)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn check_config(builder: &GatewayBuilder) -> (std::process::Output, Value) {
    let out = builder.command().arg("check-config").output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

/// [`check_config`] off the runtime, so fake instances on it keep answering.
async fn check_config_async(builder: &GatewayBuilder) -> (std::process::Output, Value) {
    let mut cmd = builder.command();
    cmd.arg("check-config");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

/// The check-config entry for the issuer at `url`.
fn issuer_entry<'a>(report: &'a Value, url: &str) -> &'a Value {
    report["oidc_issuers"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["url"].as_str().unwrap_or("").trim_end_matches('/') == url)
        })
        .unwrap_or_else(|| panic!("no issuer {url} in {report}"))
}

#[tokio::test]
async fn every_instance_is_served_on_http_and_grpc_and_listed() {
    let (a, b, c) = three_instances().await;
    let builder = GatewayBuilder::new().gitlab(&a.gitlab.url).env(
        "AIGW_ADDITIONAL_GITLAB_URLS",
        &format!("{}\n {} ,", b.gitlab.url, c.gitlab.url),
    );

    // check-config: every issuer of both services, keys fetched, the issuer B announces.
    let (out, report) = check_config_async(&builder).await;
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report["oidc_issuers"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    for inst in [&a, &b, &c] {
        let e = issuer_entry(&report, &inst.gitlab.url);
        assert_eq!(e["kind"], "GitLab", "{e}");
        assert_eq!(e["keys_fetched"], true, "{e}");
        assert_eq!(e["keys"], 1, "{e}");
        assert_eq!(e["error"], Value::Null, "{e}");
        assert_eq!(e["services"], json!(["AI Gateway", "Duo Workflow"]), "{e}");
    }
    assert_eq!(
        issuer_entry(&report, &b.gitlab.url)["announced_issuer"],
        B_EXTERNAL
    );
    for side in ["gateway_auth", "workflow_auth"] {
        assert_eq!(
            report[side]["additional_gitlab_urls"]
                .as_array()
                .map(Vec::len),
            Some(2),
            "{report}"
        );
    }

    let gw = builder.start();
    let mut grpc = workflow(&gw).await;
    for inst in [&a, &b, &c] {
        let token = inst.token();
        wait_accepted(&gw, &inst.headers(&token)).await;
        assert_eq!(grpc_auth(&mut grpc, &inst.headers(&token)).await, Ok(()));

        // GenerateToken: the minted token works for this instance only.
        let minted = grpc
            .generate_token(req(GenerateTokenRequest::default(), &inst.headers(&token)))
            .await
            .unwrap()
            .into_inner()
            .token;
        assert_eq!(jwt_payload(&minted)["gitlab_instance_id"], inst.id);
        assert_eq!(grpc_auth(&mut grpc, &inst.headers(&minted)).await, Ok(()));

        // The user access token too, though self-issued tokens carry no
        // gitlab_instance_id: it is bound to the instance that asked.
        let minted = mint(&gw, &inst.headers(&token)).await;
        assert_eq!(jwt_payload(&minted)["gitlab_instance_id"], inst.id);
        let (status, body) = post(&gw, "/no/such/path", &inst.headers(&minted)).await;
        assert_eq!(status, 404, "minted token not accepted: {body}");
    }

    // Metrics: one series per configured issuer, on both metrics ports.
    for port in [gw.addrs.metrics, gw.addrs.workflow_metrics] {
        let text = get_text(&format!("http://{port}/metrics")).await;
        for inst in [&a, &b, &c] {
            let label = format!("issuer=\"{}/\"", inst.gitlab.url);
            assert_eq!(
                series(&text, "aigw_oidc_signing_keys", &[&label]),
                Some(1.0),
                "{text}"
            );
            let ok = [label.as_str(), "outcome=\"ok\""];
            assert!(
                series(&text, "aigw_oidc_key_fetches_total", &ok).is_some_and(|v| v >= 1.0),
                "{text}"
            );
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("aigw_oidc_signing_keys{"))
                .count(),
            3,
            "{text}"
        );
    }
    // Nothing said an issuer is unhealthy.
    let ready = get_text(&gw.http_url("/monitoring/ready")).await;
    assert_eq!(ready, "{}");
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn nothing_crosses_between_instances() {
    let (a, b, _) = three_instances().await;
    // An instance announcing A's configured URL as its issuer: its keys must
    // not vouch for tokens claiming A.
    let impostor = Instance::start(key_c(), "instance-i", Some(&a.gitlab.url)).await;
    let gw = gateway(&a.gitlab.url, &[&b.gitlab.url, &impostor.gitlab.url]);
    let mut grpc = workflow(&gw).await;
    wait_accepted(&gw, &a.headers(&a.token())).await;
    wait_accepted(&gw, &b.headers(&b.token())).await;
    assert!(
        gw.wait_for_log_async(
            "announces another configured issuer",
            Duration::from_secs(20)
        )
        .await,
        "{}",
        gw.logs()
    );

    let forged = |key: &TestKey, iss: &str, id: &str| -> Vec<(&'static str, String)> {
        instance_headers(&key.rails_token(json!({"iss": iss, "sub": id})), id)
    };
    let cases = vec![
        (
            "signed by A, claiming B's issuer",
            forged(a.key, &b.iss, b.id),
            FORBIDDEN,
        ),
        (
            "signed by A, claiming B's configured URL",
            forged(a.key, &b.gitlab.url, b.id),
            FORBIDDEN,
        ),
        (
            "signed by B, claiming A",
            forged(b.key, &a.iss, a.id),
            FORBIDDEN,
        ),
        (
            "signed by the impostor, claiming A (as its discovery document does)",
            forged(impostor.key, &a.gitlab.url, a.id),
            FORBIDDEN,
        ),
        (
            "signed by A, claiming an issuer nobody is configured for",
            forged(a.key, "https://gitlab-z.example.com", a.id),
            FORBIDDEN,
        ),
        (
            "signed by A, claiming to be the gateway",
            forged(a.key, GATEWAY_AUD, GLOBAL_USER_ID),
            FORBIDDEN,
        ),
        (
            "A's token with B's instance id",
            instance_headers(&a.token(), b.id),
            INSTANCE_MISMATCH,
        ),
        (
            "B's token with A's instance id",
            instance_headers(&b.token(), a.id),
            INSTANCE_MISMATCH,
        ),
    ];
    for (what, headers, expected) in &cases {
        for path in [MINT, "/no/such/path"] {
            assert_eq!(
                post(&gw, path, headers).await,
                (401, expected.to_string()),
                "{what} on {path}"
            );
        }
        let message = serde_json::from_str::<Value>(expected).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            grpc_auth(&mut grpc, headers).await,
            Err((Code::Unauthenticated, message)),
            "{what} over gRPC"
        );
    }

    // Tokens minted for A, presented with B's instance id: refused.
    let http_minted = mint(&gw, &a.headers(&a.token())).await;
    assert_eq!(
        post(&gw, "/no/such/path", &b.headers(&http_minted)).await,
        (401, INSTANCE_MISMATCH.to_string())
    );
    let grpc_minted = grpc
        .generate_token(req(GenerateTokenRequest::default(), &a.headers(&a.token())))
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(
        grpc_auth(&mut grpc, &b.headers(&grpc_minted)).await,
        Err((
            Code::Unauthenticated,
            "Header mismatch 'X-Gitlab-Instance-Id'".to_string()
        ))
    );

    // Each one's own tokens still pass, the impostor's under its configured URL too.
    let own = forged(impostor.key, &impostor.gitlab.url, impostor.id);
    for headers in [a.headers(&a.token()), b.headers(&b.token()), own] {
        let (status, body) = post(&gw, MINT, &headers).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(gw.stop_async().await.success());
}

/// (connections the blackhole accepted, fetches of it the gateway finished).
async fn blackhole_progress(gw: &Gateway, hole: &Blackhole) -> (usize, f64) {
    let text = get_text(&format!("http://{}/metrics", gw.addrs.metrics)).await;
    let issuer = format!("issuer=\"{}/\"", hole.url);
    let labels = [issuer.as_str(), "outcome=\"error\""];
    let finished = series(&text, "aigw_oidc_key_fetches_total", &labels).unwrap_or(0.0);
    (hole.accepted.load(Ordering::SeqCst), finished)
}

/// Waits until a fetch of the blackhole is under way (one accepted connection
/// more than finished fetches) and returns that progress.
async fn pending_blackhole_fetch(gw: &Gateway, hole: &Blackhole) -> (usize, f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress = blackhole_progress(gw, hole).await;
        if progress.0 as f64 > progress.1 {
            return progress;
        }
        assert!(Instant::now() < deadline, "no pending fetch: {progress:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_blackholed_instance_holds_up_no_other() {
    let (a, b, _) = three_instances().await;
    let hole = Blackhole::start().await;
    let gw = gateway(&a.gitlab.url, &[&hole.url, &b.gitlab.url]);
    wait_accepted(&gw, &a.headers(&a.token())).await;
    wait_accepted(&gw, &b.headers(&b.token())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the blackhole was never contacted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let logged_before = gw.logs.lock().unwrap().len();
    // B rotates: a token signed with a key B publishes only now.
    b.gitlab.set_keys(vec![b.key.jwk(), other_key().jwk()]);
    let rotated = other_key().rails_token(json!({"iss": b.iss, "sub": b.id}));

    // Everything in the window below runs while the blackholed instance's
    // fetch is pending: it has accepted more connections than the gateway has
    // finished fetches, and neither count moves until the window ends. On a
    // loaded machine the pending fetch may time out inside the window; that
    // proves nothing either way, so the window is run again on the next one.
    let mut grpc = workflow(&gw).await;
    let mut proved = false;
    for _ in 0..5 {
        let before = pending_blackhole_fetch(&gw, &hole).await;
        for _ in 0..5 {
            for inst in [&a, &b] {
                let (status, body) = post(&gw, MINT, &inst.headers(&inst.token())).await;
                assert_eq!(status, 200, "{}: {body}", inst.id);
                assert_eq!(
                    grpc_auth(&mut grpc, &inst.headers(&inst.token())).await,
                    Ok(())
                );
            }
        }
        // The unknown kid makes B (and only B) refresh early, and is then
        // accepted (on a repeated window it is already known).
        wait_accepted(&gw, &b.headers(&rotated)).await;
        assert_eq!(grpc_auth(&mut grpc, &b.headers(&rotated)).await, Ok(()));
        if blackhole_progress(&gw, &hole).await == before {
            proved = true;
            break;
        }
    }
    assert!(
        proved,
        "the blackholed fetch ended inside every window: rerun on a less loaded machine"
    );

    let early: Vec<String> = gw
        .logs
        .lock()
        .unwrap()
        .iter()
        .skip(logged_before)
        .filter(|l| l.contains(EARLY_REFRESH))
        .cloned()
        .collect();
    assert_eq!(early.len(), 1, "{early:?}");
    assert!(early[0].contains(&b.gitlab.url), "{early:?}");

    // The blackholed issuer is named on /monitoring/ready once its fetch failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Value =
            serde_json::from_str(&get_text(&gw.http_url("/monitoring/ready")).await).unwrap();
        let warnings = ready["warnings"].as_array().cloned().unwrap_or_default();
        if !warnings.is_empty() {
            assert_eq!(warnings.len(), 1, "{ready}");
            let w = warnings[0].as_str().unwrap();
            assert!(w.contains(&hole.url) && w.contains("never answered"), "{w}");
            break;
        }
        assert!(Instant::now() < deadline, "no readiness warning: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn a_key_rotation_on_one_instance_leaves_the_others_alone() {
    let (a, b, c) = three_instances().await;
    let gw = gateway(&a.gitlab.url, &[&b.gitlab.url, &c.gitlab.url]);
    let (ta, tb, tc) = (a.token(), b.token(), c.token());
    for (inst, t) in [(&a, &ta), (&b, &tb), (&c, &tc)] {
        wait_accepted(&gw, &inst.headers(t)).await;
    }
    let hits = |i: &Instance| i.gitlab.jwks_hits();
    let (a_hits, c_hits) = (hits(&a), hits(&c));

    // B replaces its key: the new one signs, the old one is withdrawn.
    b.gitlab.set_keys(vec![other_key().jwk()]);
    let tb_new = other_key().rails_token(json!({"iss": b.iss, "sub": b.id}));
    // The unknown kid's early refresh answers within the request's bounded
    // wait on a quiet machine; on a loaded one it lands just after.
    wait_accepted(&gw, &b.headers(&tb_new)).await;
    // B's old token, although remembered, no longer passes.
    assert_eq!(
        post(&gw, MINT, &b.headers(&tb)).await,
        (401, FORBIDDEN.to_string())
    );
    // A's and C's tokens are unaffected, and their keys were not even refetched.
    for _ in 0..3 {
        for (inst, t) in [(&a, &ta), (&c, &tc)] {
            let (status, body) = post(&gw, MINT, &inst.headers(t)).await;
            assert_eq!(status, 200, "{}: {body}", inst.id);
        }
    }
    assert_eq!((hits(&a), hits(&c)), (a_hits, c_hits));
    assert!(gw.stop_async().await.success());
}

#[test]
fn misconfigured_lists_are_startup_errors_naming_the_variable() {
    for (var, value, needle) in [
        (
            "AIGW_ADDITIONAL_GITLAB_URLS",
            "https://b.example.com, gitlab-c.example.com",
            "gitlab-c.example.com",
        ),
        (
            "AIGW_ADDITIONAL_GITLAB_URLS",
            "https://b.example.com https://b.example.com/",
            "listed twice",
        ),
        (
            "AIGW_ADDITIONAL_GITLAB_URLS",
            "http://127.0.0.1:9/",
            "AIGW_GITLAB_URL",
        ),
        (
            "DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS",
            "ftp://b.example.com",
            "http:// or https://",
        ),
    ] {
        let builder = GatewayBuilder::new().env(var, value);
        for sub in [None, Some("check-config")] {
            let mut cmd = builder.command();
            if let Some(s) = sub {
                cmd.arg(s);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Serving exits 2 before binding; check-config exits 1 for every
            // kind of error, with its JSON report.
            let code = if sub.is_some() { 1 } else { 2 };
            assert_eq!(
                out.status.code(),
                Some(code),
                "{var}={value:?} ({sub:?}): {stderr}"
            );
            assert!(
                stderr.contains(&format!("configuration error: {var}")),
                "{stderr}"
            );
            assert!(stderr.contains(needle), "{stderr}");
        }
    }
}

#[test]
fn check_config_names_an_instance_that_does_not_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let builder = GatewayBuilder::new().env("AIGW_ADDITIONAL_GITLAB_URLS", &url);
    let (out, report) = check_config(&builder);
    // Not a configuration error: the service starts before GitLab and retries.
    assert!(out.status.success(), "{report}");
    assert_eq!(report["valid"], true);
    let e = issuer_entry(&report, &url);
    assert_eq!(e["keys_fetched"], false, "{e}");
    assert_eq!(e["keys"], 0, "{e}");
    assert!(e["error"].as_str().unwrap_or("").contains("refused"), "{e}");
}
