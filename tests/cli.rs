//! The command line: --help, --version, check-config, keygen, and the ways a
//! signing key reaches the process (file, systemd credential, escaped PEM).
mod common;

use std::{os::unix::fs::PermissionsExt, process::Output};

use aigw::grpc::proto::{GenerateTokenRequest, duo_workflow_client::DuoWorkflowClient};
use common::*;
use rsa::{RsaPrivateKey, pkcs8::DecodePrivateKey, traits::PublicKeyParts};
use serde_json::Value;

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("run aigw")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The base64 lines of a PEM (what must never be printed).
fn pem_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect()
}

#[test]
fn help_lists_the_environment_variables() {
    let out = run(aigw_command().arg("--help"));
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for var in [
        "AIGW_FASTAPI__API_HOST",
        "AIGW_FASTAPI__API_PORT",
        "DUO_WORKFLOW_SERVICE_HOST",
        "DUO_WORKFLOW_SERVICE_PORT",
        "AIGW_FASTAPI__METRICS_PORT",
        "PROMETHEUS_METRICS__PORT",
        "AIGW_LOGGING__LEVEL",
        "AIGW_SHUTDOWN_GRACE_PERIOD_S",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
    for sub in ["serve", "check-config", "keygen"] {
        assert!(help.contains(sub), "--help does not list {sub}:\n{help}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(aigw_command().arg("--version"));
    assert!(out.status.success(), "{out:?}");
    let v = text(&out.stdout);
    assert_eq!(v.trim(), format!("aigw {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_prints_the_redacted_configuration() {
    let out = run(&mut GatewayBuilder::new().arg("check-config").command());
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("check-config prints JSON");
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(report["http"]["listen"], "127.0.0.1:0");
    let signing = report["gateway_auth"]["signing_key"].as_str().unwrap();
    assert!(signing.contains("redacted"), "{signing}");
    assert!(
        signing.contains("AIGW_SELF_SIGNED_JWT__SIGNING_KEY"),
        "{signing}"
    );
    let workflow = report["workflow_auth"]["signing_key"].as_str().unwrap();
    assert!(workflow.contains("redacted"), "{workflow}");
    for line in pem_body_lines(&signing_key().pem) {
        assert!(!stdout.contains(line), "PEM printed:\n{stdout}");
        assert!(!stderr.contains(line), "PEM printed:\n{stderr}");
    }
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
}

#[test]
fn check_config_names_a_bad_variable() {
    let out = run(&mut GatewayBuilder::new()
        .env("AIGW_FASTAPI__API_PORT", "abc")
        .arg("check-config")
        .command());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("AIGW_FASTAPI__API_PORT"), "{stderr}");
    assert!(stderr.contains("abc"), "{stderr}");

    // Serving refuses the same way, before binding anything.
    let out = run(&mut GatewayBuilder::new()
        .env("AIGW_FASTAPI__API_PORT", "abc")
        .command());
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("AIGW_FASTAPI__API_PORT"));
}

#[test]
fn check_config_names_a_missing_ca_file() {
    let out = run(&mut GatewayBuilder::new()
        .env("REQUESTS_CA_BUNDLE", "/nonexistent/aigw/ca.pem")
        .arg("check-config")
        .command());
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/nonexistent/aigw/ca.pem"), "{stderr}");
    assert!(stderr.contains("REQUESTS_CA_BUNDLE"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let errors = report["errors"].to_string();
    assert!(errors.contains("/nonexistent/aigw/ca.pem"), "{errors}");
}

#[test]
fn check_config_reports_a_broken_key_file_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let body = "Z2FyYmFnZSBnYXJiYWdlIGdhcmJhZ2UgZ2FyYmFnZQ";
    let path = temp_file(
        dir.path(),
        "broken.pem",
        &format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"),
    );
    let out = run(&mut GatewayBuilder::new()
        .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env(
            "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
            path.to_str().unwrap(),
        )
        .arg("check-config")
        .command());
    assert!(!out.status.success(), "{out:?}");
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("broken.pem"), "{all}");
    assert!(!all.contains(body), "{all}");
}

/// The RFC 7638 thumbprint of a PEM key, as the gateway uses for `kid`.
fn kid_of(pem: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let key = RsaPrivateKey::from_pkcs8_pem(pem).expect("PKCS#8 PEM");
    let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn verifies_with_pem(token: &str, pem: &str, audience: &str) -> bool {
    let key = RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        &URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        &URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).is_ok()
}

/// A workflow token minted by a gateway whose Duo Workflow auth is disabled.
async fn workflow_token(gw: &Gateway) -> String {
    let mut client = DuoWorkflowClient::connect(gw.grpc_url()).await.unwrap();
    let mut req = tonic::Request::new(GenerateTokenRequest::default());
    req.metadata_mut()
        .insert("x-gitlab-global-user-id", "user-1".parse().unwrap());
    client.generate_token(req).await.unwrap().into_inner().token
}

/// The "token signing key loaded" log line of `service`.
fn key_loaded_line(gw: &Gateway, service: &str) -> Value {
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "token signing key loaded" && v["service"] == service)
        .unwrap_or_else(|| panic!("no key line for {service}:\n{}", gw.logs()))
}

#[tokio::test]
async fn keygen_writes_a_private_usable_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dws.pem");
    let out = run(aigw_command().arg("keygen").arg(&path));
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let key = RsaPrivateKey::from_pkcs8_pem(&pem).expect("PKCS#8");
    assert_eq!(key.size() * 8, 2048);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    // The key itself is not printed.
    for line in pem_body_lines(&pem) {
        assert!(!text(&out.stdout).contains(line) && !text(&out.stderr).contains(line));
    }

    // No silent overwrite.
    let out = run(aigw_command().arg("keygen").arg(&path));
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("dws.pem"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);

    // --force replaces it, and a file that was readable becomes private.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(aigw_command().arg("keygen").arg("--force").arg(&path));
    assert!(out.status.success(), "{out:?}");
    let new_pem = std::fs::read_to_string(&path).unwrap();
    assert_ne!(new_pem, pem);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");

    // The key works as the Duo Workflow signing key file.
    let gw = GatewayBuilder::new()
        .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env(
            "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
            path.to_str().unwrap(),
        )
        .env("DUO_WORKFLOW_AUTH__ENABLED", "false")
        .start();
    let line = key_loaded_line(&gw, "Duo Workflow");
    assert!(
        line["origin"].as_str().unwrap().contains("dws.pem"),
        "{line}"
    );
    let token = workflow_token(&gw).await;
    assert_eq!(jwt_header(&token)["kid"], kid_of(&new_pem).as_str());
    assert!(verifies_with_pem(&token, &new_pem, WORKFLOW_AUD));
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn keys_delivered_as_systemd_credentials_are_used() {
    let creds = tempfile::tempdir().unwrap();
    temp_file(creds.path(), "duo_workflow_signing_key", &other_key().pem);
    temp_file(creds.path(), "aigw_signing_key", &other_key().pem);
    let gw = GatewayBuilder::new()
        .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())
        .env("DUO_WORKFLOW_AUTH__ENABLED", "false")
        .start();
    for service in ["Duo Workflow", "AI Gateway"] {
        let line = key_loaded_line(&gw, service);
        assert!(
            line["origin"]
                .as_str()
                .unwrap()
                .contains("systemd credential"),
            "{line}"
        );
    }
    let token = workflow_token(&gw).await;
    assert_eq!(jwt_header(&token)["kid"], other_key().kid.as_str());
    assert!(gw.stop_async().await.success());

    // An explicit variable wins over the credential.
    let gw = GatewayBuilder::new()
        .env("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())
        .env("DUO_WORKFLOW_AUTH__ENABLED", "false")
        .start();
    let line = key_loaded_line(&gw, "Duo Workflow");
    assert!(
        line["origin"]
            .as_str()
            .unwrap()
            .contains("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY"),
        "{line}"
    );
    let token = workflow_token(&gw).await;
    assert_eq!(jwt_header(&token)["kid"], signing_key().kid.as_str());
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn pem_with_escaped_newlines_is_accepted() {
    // As written in .env files: one line, literal "\n", optionally quoted.
    let escaped = signing_key().pem.trim_end().replace('\n', "\\n");
    assert!(!escaped.contains('\n'));
    let gw = GatewayBuilder::new()
        .env("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY", &escaped)
        .env(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY",
            &format!("\"{escaped}\""),
        )
        .env("DUO_WORKFLOW_AUTH__ENABLED", "false")
        .env("AIGW_AUTH__BYPASS_EXTERNAL", "true")
        .start();
    let token = workflow_token(&gw).await;
    assert_eq!(jwt_header(&token)["kid"], signing_key().kid.as_str());
    assert!(verifies_with_pem(&token, &signing_key().pem, WORKFLOW_AUD));

    let resp = client()
        .post(gw.http_url("/v1/code/user_access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let minted = body["token"].as_str().unwrap();
    assert_eq!(jwt_header(minted)["kid"], signing_key().kid.as_str());
    assert!(verifies_with_pem(minted, &signing_key().pem, GATEWAY_AUD));
    assert!(!gw.logs().contains(pem_body_lines(&signing_key().pem)[1]));
    assert!(gw.stop_async().await.success());
}

#[test]
fn check_config_accepts_escaped_pem_too() {
    let escaped = signing_key().pem.trim_end().replace('\n', "\\n");
    let out = run(&mut GatewayBuilder::new()
        .env("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY", &escaped)
        .arg("check-config")
        .command());
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(&escaped[40..80]), "{stdout}");
}

/// Starts `builder`'s gateway on a fixed free HTTP port (its logs may not
/// announce it), waits until `/monitoring/healthz` answers, stops it, and
/// returns every stderr line it wrote.
async fn logs_of_a_healthy_run(builder: GatewayBuilder) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = builder
        .env("AIGW_FASTAPI__API_PORT", &port.to_string())
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let url = format!("http://127.0.0.1:{port}/monitoring/healthz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = client().get(&url).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never became healthy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    reader.join().unwrap()
}

/// `warning` (the README's and upstream's spelling), `WARNING` and
/// `Critical` keep warnings or errors, never silence everything: the
/// security warning of a bypass is still logged, info lines are not.
#[tokio::test]
async fn python_log_level_names_keep_the_security_warnings() {
    for level in ["warning", "WARNING"] {
        let lines = logs_of_a_healthy_run(
            GatewayBuilder::new()
                .env("AIGW_LOGGING__LEVEL", level)
                .env("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
        )
        .await;
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}")))
            .collect();
        assert!(
            parsed.iter().any(|v| v["security"] == true
                && v["message"]
                    .as_str()
                    .unwrap()
                    .contains("AIGW_AUTH__BYPASS_EXTERNAL")),
            "{level}: no security warning in {lines:#?}"
        );
        for v in &parsed {
            assert!(
                matches!(v["level"].as_str(), Some("WARN" | "ERROR")),
                "{level}: {v}"
            );
        }
    }
    // CRITICAL keeps errors only; the run itself has none.
    let lines = logs_of_a_healthy_run(
        GatewayBuilder::new()
            .env("AIGW_LOGGING__LEVEL", "Critical")
            .env("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
    )
    .await;
    assert!(lines.is_empty(), "{lines:#?}");
}

#[test]
fn an_unknown_log_level_is_a_startup_error_naming_the_variable() {
    for (env, arg, name) in [
        (Some("warnig"), None, "AIGW_LOGGING__LEVEL"),
        (Some("verbose"), None, "AIGW_LOGGING__LEVEL"),
        (None, Some("loud"), "--log-level"),
    ] {
        let mut b = GatewayBuilder::new();
        if let Some(v) = env {
            b = b.env("AIGW_LOGGING__LEVEL", v);
        }
        if let Some(v) = arg {
            b = b.arg("--log-level").arg(v);
        }
        let out = run(&mut b.command());
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(name), "{stderr}");
        assert!(
            stderr.contains("WARNING"),
            "names what is accepted: {stderr}"
        );
    }
}

/// Text logs written to a pipe or a file carry no terminal colour codes.
#[tokio::test]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let lines =
        logs_of_a_healthy_run(GatewayBuilder::new().env("AIGW_LOGGING__FORMAT_JSON", "false"))
            .await;
    let all = lines.join("\n");
    assert!(all.contains("listening"), "{all}");
    assert!(!all.contains('\u{1b}'), "{all:?}");
}

/// Every kind of error gives the same exit status and the same report
/// shape: `valid: false`, `errors` naming the problem, `notes`.
#[test]
fn check_config_reports_every_error_kind_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(GatewayBuilder, &str)> = vec![
        (
            GatewayBuilder::new().env("AIGW_FASTAPI__API_PORT", "abc"),
            "AIGW_FASTAPI__API_PORT",
        ),
        (
            GatewayBuilder::new().env("AIGW_CUSTOM_MODELS__ENABLED", "enabled"),
            "yes/no",
        ),
        (
            GatewayBuilder::new().env("REQUESTS_CA_BUNDLE", "/nonexistent/aigw/ca.pem"),
            "/nonexistent/aigw/ca.pem",
        ),
        (
            GatewayBuilder::new()
                .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
                .env(
                    "AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
                    dir.path().join("missing.pem").to_str().unwrap(),
                ),
            "missing.pem",
        ),
    ];
    for (builder, needle) in cases {
        let out = run(&mut builder.arg("check-config").command());
        assert_eq!(out.status.code(), Some(1), "{needle}: {out:?}");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{needle}: not JSON: {}", text(&out.stdout)));
        assert_eq!(report["valid"], false, "{report:#}");
        assert!(report["notes"].is_array(), "{report:#}");
        let errors = report["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{report:#}");
        assert!(errors[0].as_str().unwrap().contains(needle), "{report:#}");
        assert!(text(&out.stderr).contains(needle));
    }
}

/// `--dev` (before or after the subcommand) is what `serve --dev` does: no
/// "no signing key" complaint, the development key named.
#[test]
fn check_config_respects_dev() {
    let dir = tempfile::tempdir().unwrap();
    for args in [["--dev", "check-config"], ["check-config", "--dev"]] {
        let mut b = GatewayBuilder::new()
            .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
            .unset("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY")
            .dir(dir.path());
        for a in args {
            b = b.arg(a);
        }
        let out = run(&mut b.command());
        assert!(out.status.success(), "{out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            report["gateway_auth"]["signing_key"]
                .as_str()
                .unwrap()
                .contains("tmp/aigw-dev.key"),
            "{report:#}"
        );
        let notes = report["notes"].to_string();
        assert!(!notes.contains("no signing key"), "{notes}");
        assert!(notes.contains("development mode"), "{notes}");
        assert!(
            !dir.path().join("tmp/aigw-dev.key").exists(),
            "check-config creates nothing"
        );
    }
    // Without --dev: the keys are missing, as serving would find.
    let out = run(&mut GatewayBuilder::new()
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .arg("check-config")
        .command());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["notes"]
            .to_string()
            .contains("AI Gateway: no signing key configured"),
        "{report:#}"
    );
}

/// The trust store's `source` is the file actually read, not the rule.
#[test]
fn check_config_names_the_trust_store_file_used() {
    let ca = TestCa::new();
    let out = run(&mut GatewayBuilder::new()
        .env("SSL_CERT_FILE", ca.ca_path().to_str().unwrap())
        .arg("check-config")
        .command());
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = report["ca_bundle"]["source"].as_str().unwrap();
    assert!(source.contains(ca.ca_path().to_str().unwrap()), "{source}");
    assert_eq!(report["ca_bundle"]["anchors"], 1);

    let out = run(&mut GatewayBuilder::new().arg("check-config").command());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = report["ca_bundle"]["source"].as_str().unwrap();
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    ]
    .iter()
    .any(|f| source.contains(f));
    assert!(system || source == "compiled-in Mozilla roots", "{source}");
    assert!(!source.contains("else"), "{source}");
}

#[test]
fn keygen_dash_writes_the_key_to_stdout() {
    let out = run(aigw_command().args(["keygen", "-"]));
    assert!(out.status.success(), "{out:?}");
    let pem = text(&out.stdout);
    let key = RsaPrivateKey::from_pkcs8_pem(&pem).expect("PKCS#8 on stdout");
    assert_eq!(key.size() * 8, 2048);
    assert!(!std::path::Path::new("-").exists());
}

#[test]
fn keygen_on_an_existing_file_says_how_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(dir.path(), "k.pem", "keep me");
    let out = run(aigw_command().arg("keygen").arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

/// `aigw help keygen` shows keygen's own flags, not the serving ones; those
/// are refused with keygen rather than silently ignored.
#[test]
fn keygen_help_shows_only_its_flags() {
    for args in [vec!["help", "keygen"], vec!["keygen", "--help"]] {
        let out = run(aigw_command().args(&args));
        assert!(out.status.success(), "{out:?}");
        let help = text(&out.stdout);
        assert!(help.contains("--force") && help.contains("PATH"), "{help}");
        for serving in ["--api-port", "--dev", "AIGW_", "--log-level"] {
            assert!(!help.contains(serving), "{args:?} shows {serving}:\n{help}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(aigw_command()
        .args(["--api-port", "1", "keygen"])
        .arg(dir.path().join("k.pem")));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("serving flags"), "{out:?}");
    assert!(!dir.path().join("k.pem").exists());
}

/// Errors are plain text when stderr is not a terminal.
#[test]
fn no_colour_codes_on_a_pipe() {
    for args in [
        vec!["--no-such-flag"],
        vec!["keygen"],
        vec!["check-config", "--api-port", "x"],
    ] {
        let out = run(aigw_command().args(&args));
        assert!(!out.status.success());
        assert!(
            !text(&out.stderr).contains('\u{1b}'),
            "{args:?}: {:?}",
            text(&out.stderr)
        );
    }
}
