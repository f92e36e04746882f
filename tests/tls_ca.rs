//! Outbound trust (which CA bundle the JWKS client uses, by environment
//! variable) and inbound TLS on the HTTP and gRPC listeners.
mod common;

use std::{
    process::Output,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A fake GitLab over HTTPS with a certificate from `ca`.
async fn https_gitlab(ca: &TestCa) -> FakeGitLab {
    let gitlab = FakeGitLab::start_with(vec![gitlab_key().jwk()], Some(ca)).await;
    assert!(
        gitlab.url.starts_with("https://localhost:"),
        "{}",
        gitlab.url
    );
    gitlab
}

/// Starts a gateway trusting what `configure` says and checks that it
/// fetched GitLab's keys over HTTPS.
async fn assert_trusted(ca: &TestCa, configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder) {
    let gitlab = https_gitlab(ca).await;
    let gw = configure(GatewayBuilder::new().gitlab(&gitlab.url)).start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    assert!(gitlab.jwks_hits() >= 1);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn requests_ca_bundle_is_trusted() {
    let ca = TestCa::new();
    assert_trusted(&ca, |b| {
        b.env("REQUESTS_CA_BUNDLE", ca.ca_path().to_str().unwrap())
    })
    .await;
}

#[tokio::test]
async fn ssl_cert_file_is_trusted() {
    let ca = TestCa::new();
    assert_trusted(&ca, |b| {
        b.env("SSL_CERT_FILE", ca.ca_path().to_str().unwrap())
    })
    .await;
}

#[tokio::test]
async fn ssl_cert_dir_is_trusted_without_hash_names() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    temp_file(dir.path(), "ca.pem", &ca.ca_pem);
    temp_file(dir.path(), "README", "not a certificate\n");
    let missing = dir.path().join("missing");
    let list = format!("{}:{}", missing.display(), dir.path().display());
    assert_trusted(&ca, |b| b.env("SSL_CERT_DIR", &list)).await;
}

#[tokio::test]
async fn empty_requests_ca_bundle_counts_as_unset() {
    let ca = TestCa::new();
    assert_trusted(&ca, |b| {
        b.env("REQUESTS_CA_BUNDLE", "")
            .env("CURL_CA_BUNDLE", ca.ca_path().to_str().unwrap())
    })
    .await;
}

#[tokio::test]
async fn aigw_ca_bundle_wins_over_requests_ca_bundle() {
    let ca = TestCa::new();
    let other = TestCa::new();
    assert_trusted(&ca, |b| {
        b.env("AIGW_CA_BUNDLE", ca.ca_path().to_str().unwrap())
            .env("REQUESTS_CA_BUNDLE", other.ca_path().to_str().unwrap())
    })
    .await;
}

/// Waits until the gateway logs a failed key refresh and returns that line.
async fn refresh_failure(gw: &Gateway) -> Value {
    assert!(
        gw.wait_for_log_async("cannot refresh OIDC signing keys", Duration::from_secs(20))
            .await,
        "no refresh failure logged:\n{}",
        gw.logs()
    );
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "cannot refresh OIDC signing keys")
        .unwrap()
}

async fn assert_refused(gw: &Gateway, token: &str) {
    let resp = with_headers(
        client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(token),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":"Forbidden by auth provider"}"#
    );
}

#[tokio::test]
async fn private_ca_is_not_trusted_by_default() {
    let ca = TestCa::new();
    let gitlab = https_gitlab(&ca).await;
    let gw = GatewayBuilder::new().gitlab(&gitlab.url).start();
    let line = refresh_failure(&gw).await;
    assert_eq!(line["level"], "WARN");
    let error = line["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("unknownissuer"),
        "{line}"
    );
    assert_refused(&gw, &gitlab_key().rails_token(json!({}))).await;
    assert_eq!(gitlab.jwks_hits(), 0);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn the_selected_bundle_replaces_the_others() {
    // REQUESTS_CA_BUNDLE names another CA: SSL_CERT_FILE below it is ignored.
    let ca = TestCa::new();
    let other = TestCa::new();
    let gitlab = https_gitlab(&ca).await;
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("REQUESTS_CA_BUNDLE", other.ca_path().to_str().unwrap())
        .env("SSL_CERT_FILE", ca.ca_path().to_str().unwrap())
        .start();
    refresh_failure(&gw).await;
    assert_refused(&gw, &gitlab_key().rails_token(json!({}))).await;
    assert!(gw.stop_async().await.success());
}

/// Runs the gateway expecting a startup failure.
fn failed_start(builder: GatewayBuilder) -> Output {
    let mut child = builder
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway started although it should not have");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    out
}

#[test]
fn unusable_ca_bundles_stop_startup() {
    let dir = tempfile::tempdir().unwrap();
    let empty = temp_file(dir.path(), "empty.pem", "");
    let garbage = temp_file(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    let not_pem = temp_file(dir.path(), "notpem.pem", "hello, I am not a certificate\n");
    for (var, path) in [
        ("REQUESTS_CA_BUNDLE", &empty),
        ("REQUESTS_CA_BUNDLE", &garbage),
        ("REQUESTS_CA_BUNDLE", &not_pem),
        ("CURL_CA_BUNDLE", &empty),
        ("SSL_CERT_FILE", &garbage),
    ] {
        let out = failed_start(GatewayBuilder::new().env(var, path.to_str().unwrap()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "{var}={}: {stderr}",
            path.display()
        );
    }
    // An empty directory is no better.
    let empty_dir = tempfile::tempdir().unwrap();
    let out =
        failed_start(GatewayBuilder::new().env("SSL_CERT_DIR", empty_dir.path().to_str().unwrap()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSL_CERT_DIR"));
}

#[tokio::test]
async fn http_listener_serves_tls() {
    let ca = TestCa::new();
    let gw = GatewayBuilder::new()
        .env("AIGW_FASTAPI__TLS__ENABLED", "true")
        .env(
            "AIGW_FASTAPI__TLS__CERT_FILE",
            ca.cert_path().to_str().unwrap(),
        )
        .env(
            "AIGW_FASTAPI__TLS__KEY_FILE",
            ca.key_path().to_str().unwrap(),
        )
        .start();
    let port = gw.addrs.http.port();
    let https = ca.client();
    for host in ["localhost", "127.0.0.1"] {
        let resp = https
            .get(format!("https://{host}:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":"No authorization header presented"}"#
        );
    }
    let resp = https
        .get(format!("https://localhost:{port}/monitoring/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP is not served on the TLS port.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/monitoring/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() != 200),
        "{plain:?}"
    );
    // A client that does not trust the CA refuses the certificate.
    assert!(
        TestCa::new()
            .client()
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .is_err()
    );
    drop(https);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn grpc_listener_serves_tls() {
    let ca = TestCa::new();
    let gw = GatewayBuilder::new()
        .env("DUO_WORKFLOW_TLS__ENABLED", "true")
        .env(
            "DUO_WORKFLOW_TLS__CERT_FILE",
            ca.cert_path().to_str().unwrap(),
        )
        .env(
            "DUO_WORKFLOW_TLS__KEY_FILE",
            ca.key_path().to_str().unwrap(),
        )
        .start();
    install_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", gw.addrs.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    for service in ["", "DuoWorkflow"] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    // Without TLS the listener does not answer gRPC.
    let plain = async {
        let ch = Channel::from_shared(gw.grpc_url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    assert!(plain.is_err(), "plaintext gRPC answered on the TLS port");
    drop(channel);
    assert!(gw.stop_async().await.success());
}

#[test]
fn mismatched_tls_key_stops_startup() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let wrong_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let wrong = temp_file(dir.path(), "wrong.key", &wrong_key);
    for (enabled, cert, key) in [
        (
            "DUO_WORKFLOW_TLS__ENABLED",
            "DUO_WORKFLOW_TLS__CERT_FILE",
            "DUO_WORKFLOW_TLS__KEY_FILE",
        ),
        (
            "AIGW_FASTAPI__TLS__ENABLED",
            "AIGW_FASTAPI__TLS__CERT_FILE",
            "AIGW_FASTAPI__TLS__KEY_FILE",
        ),
    ] {
        let out = failed_start(
            GatewayBuilder::new()
                .env(enabled, "true")
                .env(cert, ca.cert_path().to_str().unwrap())
                .env(key, wrong.to_str().unwrap()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{stderr}");
        assert!(stderr.contains("wrong.key"), "{stderr}");
        assert!(stderr.contains("does not match"), "{stderr}");
        // The key itself is never printed.
        for line in wrong_key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!stderr.contains(line), "{stderr}");
        }
    }
    // A missing certificate file is named too.
    let out = failed_start(
        GatewayBuilder::new()
            .env("DUO_WORKFLOW_TLS__ENABLED", "true")
            .env("DUO_WORKFLOW_TLS__CERT_FILE", "/nonexistent/server.pem")
            .env(
                "DUO_WORKFLOW_TLS__KEY_FILE",
                ca.key_path().to_str().unwrap(),
            ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DUO_WORKFLOW_TLS__CERT_FILE"), "{stderr}");
    assert!(stderr.contains("/nonexistent/server.pem"), "{stderr}");
}

fn replace_file(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_ca_bundle() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let gitlab = https_gitlab(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = temp_file(dir.path(), "bundle.pem", &other.ca_pem);
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("REQUESTS_CA_BUNDLE", bundle.to_str().unwrap())
        .start();
    refresh_failure(&gw).await;

    // A broken bundle is refused; the previous store stays.
    replace_file(&bundle, "garbage\n");
    gw.signal(libc::SIGHUP);
    assert!(
        gw.wait_for_log_async(
            "reload: keeping the previous trust store",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        gw.logs()
    );

    // The administrator fixes the bundle and reloads: keys arrive.
    replace_file(&bundle, &ca.ca_pem);
    gw.signal(libc::SIGHUP);
    assert!(
        gw.wait_for_log_async("reload: trust store replaced", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    wait_until_accepted(&gw, &gitlab_key().rails_token(json!({}))).await;
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn sighup_replaces_the_tls_certificate() {
    let first = TestCa::new();
    let second = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let cert = temp_file(dir.path(), "server.pem", &first.cert_pem);
    let key = temp_file(dir.path(), "server.key", &first.key_pem);
    let gw = GatewayBuilder::new()
        .env("AIGW_FASTAPI__TLS__ENABLED", "true")
        .env("AIGW_FASTAPI__TLS__CERT_FILE", cert.to_str().unwrap())
        .env("AIGW_FASTAPI__TLS__KEY_FILE", key.to_str().unwrap())
        .env("DUO_WORKFLOW_TLS__ENABLED", "true")
        .env("DUO_WORKFLOW_TLS__CERT_FILE", cert.to_str().unwrap())
        .env("DUO_WORKFLOW_TLS__KEY_FILE", key.to_str().unwrap())
        .start();
    let url = format!(
        "https://localhost:{}/monitoring/healthz",
        gw.addrs.http.port()
    );
    let before = first.client().get(&url).send().await.unwrap();
    assert_eq!(before.status(), 200);

    // Only the key replaced so far: certificate and key disagree, keep the old pair.
    replace_file(&key, &second.key_pem);
    gw.signal(libc::SIGHUP);
    assert!(
        gw.wait_for_log_async(
            "reload: keeping the previous TLS certificate",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        gw.logs()
    );
    assert_eq!(first.client().get(&url).send().await.unwrap().status(), 200);

    replace_file(&cert, &second.cert_pem);
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Fresh clients: every attempt is a new TLS handshake.
        if let Ok(resp) = second.client().get(&url).send().await {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.client().get(&url).send().await.is_err());

    // The gRPC listener got the new certificate too.
    install_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&second.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", gw.addrs.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    drop(channel);
    assert!(gw.stop_async().await.success());
}
