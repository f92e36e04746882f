//! What running several replicas behind Kubernetes needs from the gateway:
//! a maximum connection age (GOAWAY, in-flight streams finish, the client
//! reconnects), mounted Secrets reloaded when the kubelet swaps them (no
//! SIGHUP), and readiness dropping before the listeners stop accepting.
mod common;

use std::{
    net::SocketAddr,
    os::unix::fs::symlink,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A loopback TCP relay in front of a gateway listener that counts the
/// connections clients open through it.
struct CountingProxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingProxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn health(ch: &Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(ch.clone())
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn grpc_connections_get_goaway_at_their_maximum_age_and_streams_survive_it() {
    let gw = GatewayBuilder::new()
        .env("DUO_WORKFLOW_MAX_CONNECTION_AGE_S", "0.5")
        .start();
    let proxy = CountingProxy::start(gw.addrs.grpc).await;
    let ch = Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A long-lived stream on the first connection.
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    assert_eq!(proxy.accepted(), 1);

    // Past the age the client is told to go, and new calls travel over a new
    // connection. (A call tonic hands to the old connection in the instant
    // the GOAWAY arrives fails as CANCELLED: tonic has no transparent retry
    // for streams the server never saw, which gRPC-core clients such as
    // GitLab's do. Anything else is a failure.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.accepted() < 2 {
        match health(&ch).await {
            Ok(s) => assert_eq!(s, ServingStatus::Serving as i32),
            Err(e) if e.code() == tonic::Code::Cancelled => {}
            Err(e) => panic!("{e:?}\n{}", gw.logs()),
        }
        assert!(Instant::now() < deadline, "no reconnect:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving as i32);

    // The stream opened before the GOAWAY was not cut: it still gets updates.
    gw.signal(libc::SIGTERM);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the stream from before the GOAWAY got no update");
    let next = match next {
        Ok(Some(n)) => n,
        other => panic!("{other:?}\n{}", gw.logs()),
    };
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    drop(ch);
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn an_http2_stream_in_flight_at_the_maximum_age_completes_then_the_client_reconnects() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let mock = MockModel::start(&["--inter-token-ms", "120"]);
    let (gw, token) = gateway_with_models(
        &gitlab,
        &[
            ("AIGW_FASTAPI__MAX_CONNECTION_AGE_S", "0.3"),
            ("AIGW_FASTAPI__MAX_CONNECTION_AGE_GRACE_S", "30"),
        ],
    )
    .await;
    let proxy = CountingProxy::start(gw.addrs.http).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let body = json!({
        "prompt_version": 2,
        "project_path": "group/project",
        "project_id": 7,
        "current_file": {
            "file_name": "app/answer.py",
            "language_identifier": "python",
            "content_above_cursor": "# MOCK_REPLY: a b c d e f g h i j\n",
            "content_below_cursor": "",
        },
        "prompt": null,
        "model_provider": "litellm",
        "model_name": "codestral",
        "model_endpoint": mock.endpoint(),
        "model_api_key": "sk-test-model-key",
        "model_identifier": "custom_openai/Codestral-22B-v0.1",
        "stream": true,
    });
    // Ten tokens 120 ms apart: the stream outlives the connection's age.
    let url = format!("http://{}/v2/code/completions", proxy.addr);
    let resp = with_headers(h2.post(&url), &rails_headers(&token))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "a b c d e f g h i j");
    assert_eq!(proxy.accepted(), 1);

    // The connection was told to go: the next request opens another.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = h2
            .get(format!("http://{}/monitoring/healthz", proxy.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        if proxy.accepted() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.stop_async().await.success());
}

/// One request on a kept-alive HTTP/1.1 connection; the response head.
async fn http1_get(conn: &mut TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "connection closed");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn http1_keep_alive_connections_are_not_aged() {
    // HTTP/1.1 has no GOAWAY: closing an idle connection would race the
    // client's next request. Such connections outlive the age.
    let gw = GatewayBuilder::new()
        .env("AIGW_FASTAPI__MAX_CONNECTION_AGE_S", "0.2")
        .start();
    let mut conn = TcpStream::connect(gw.addrs.http).await.unwrap();
    let head = http1_get(&mut conn, "/monitoring/healthz").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let head = http1_get(&mut conn, "/monitoring/healthz").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    drop(conn);
    assert!(gw.stop_async().await.success());
}

/// What the kubelet does to a mounted Secret: a new timestamped directory,
/// `..data` renamed over to point at it, the visible names linking through
/// `..data` (created once).
fn publish(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let ts = dir.join(format!("..2026_01_01_00_00_{generation:02}.000000001"));
    std::fs::create_dir(&ts).unwrap();
    for (name, contents) in files {
        std::fs::write(ts.join(name), contents).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(ts.file_name().unwrap(), &tmp).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
    for (name, _) in files {
        let visible = dir.join(name);
        if std::fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new("..data").join(name), &visible).unwrap();
        }
    }
}

async fn mint(gw: &Gateway, token: &str) -> Value {
    let resp = with_headers(
        client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(token),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    jwt_header(body["token"].as_str().unwrap())
}

async fn tls_channel(ca: &TestCa, port: u16) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn swapped_secret_mounts_are_reloaded_without_a_signal() {
    install_provider();
    let gitlab_ca = TestCa::new();
    let wrong_ca = TestCa::new();
    let (tls_one, tls_two) = (TestCa::new(), TestCa::new());
    let gitlab = FakeGitLab::start_with(vec![gitlab_key().jwk()], Some(&gitlab_ca)).await;
    let mounts = tempfile::tempdir().unwrap();
    let (ca_dir, keys_dir, tls_dir) = (
        mounts.path().join("ca"),
        mounts.path().join("keys"),
        mounts.path().join("tls"),
    );
    for d in [&ca_dir, &keys_dir, &tls_dir] {
        std::fs::create_dir(d).unwrap();
    }
    publish(&ca_dir, 1, &[("ca.crt", &wrong_ca.ca_pem)]);
    publish(&keys_dir, 1, &[("aigw-signing-key", &signing_key().pem)]);
    publish(
        &tls_dir,
        1,
        &[
            ("tls.crt", &tls_one.cert_pem),
            ("tls.key", &tls_one.key_pem),
        ],
    );
    let path = |d: &Path, f: &str| d.join(f).to_str().unwrap().to_string();
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_FILE_WATCH_INTERVAL_S", "0.2")
        .env("REQUESTS_CA_BUNDLE", &path(&ca_dir, "ca.crt"))
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
            &path(&keys_dir, "aigw-signing-key"),
        )
        .env("DUO_WORKFLOW_TLS__ENABLED", "true")
        .env("DUO_WORKFLOW_TLS__CERT_FILE", &path(&tls_dir, "tls.crt"))
        .env("DUO_WORKFLOW_TLS__KEY_FILE", &path(&tls_dir, "tls.key"))
        .start();
    assert!(
        gw.wait_for_log_async("watching key, CA and TLS files", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );

    // The CA: GitLab's keys cannot be fetched until the right CA is mounted.
    let token = gitlab_key().rails_token(json!({}));
    publish(&ca_dir, 2, &[("ca.crt", &gitlab_ca.ca_pem)]);
    assert!(
        gw.wait_for_log_async("reload: trust store replaced", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    wait_until_accepted(&gw, &token).await;

    // The signing key.
    assert_eq!(mint(&gw, &token).await["kid"], signing_key().kid.as_str());
    publish(&keys_dir, 2, &[("aigw-signing-key", &other_key().pem)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mint(&gw, &token).await["kid"] != other_key().kid.as_str() {
        assert!(
            Instant::now() < deadline,
            "key not reloaded:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The TLS certificate: new handshakes present the new one.
    let port = gw.addrs.grpc.port();
    let ch = tls_channel(&tls_one, port).await.unwrap();
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving as i32);
    drop(ch);
    publish(
        &tls_dir,
        2,
        &[
            ("tls.crt", &tls_two.cert_pem),
            ("tls.key", &tls_two.key_pem),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let ch = loop {
        if let Ok(ch) = tls_channel(&tls_two, port).await {
            break ch;
        }
        assert!(
            Instant::now() < deadline,
            "TLS not reloaded:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving as i32);
    assert!(tls_channel(&tls_one, port).await.is_err());
    drop(ch);
    assert!(gw.logs().contains("reload: watched files changed"));
    assert!(gw.stop_async().await.success());
}

#[tokio::test]
async fn readiness_drops_while_the_listeners_still_accept_then_they_drain() {
    let gw = GatewayBuilder::new()
        .env("AIGW_SHUTDOWN_DELAY_S", "1.5")
        .start();
    // No pooling: every probe is a new connection, as the kubelet's are.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = |c: reqwest::Client| {
        let url = gw.http_url("/monitoring/ready");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(ready(fresh.clone()).await.unwrap(), 200);
    gw.signal(libc::SIGTERM);

    // Readiness drops at once, answered on new connections: still accepting.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ready(fresh.clone()).await {
            Ok(503) => break,
            Ok(200) => {}
            other => panic!("listener stopped before readiness dropped: {other:?}"),
        }
        assert!(Instant::now() < deadline, "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // gRPC, on a new connection too: NOT_SERVING.
    let ch = Channel::from_shared(gw.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("gRPC listener still accepting");
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::NotServing as i32);
    drop(ch);

    // Then the listeners stop accepting, and the process exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(fresh.clone()).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = gw.logs();
    let unready = logs.find("still accepting until load balancers notice");
    let draining = logs.find("shutting down: draining connections");
    assert!(
        matches!((unready, draining), (Some(a), Some(b)) if a < b),
        "{logs}"
    );
    assert!(gw.stop_async().await.success());
}
