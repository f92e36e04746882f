//! The service-manager contract, with the test playing systemd: it owns the
//! `NOTIFY_SOCKET` datagram socket and sends the signals. Readiness only after
//! every listener is bound, watchdog pings, reload and stop notifications,
//! startup failures without READY, graceful drain, and key reload on SIGHUP.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Self {
            sock,
            path,
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next datagram, or None after `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 8192];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Reads datagrams until one has the line `line`; returns it and every
    /// datagram seen before it.
    fn wait_for(&self, line: &str, timeout: Duration) -> (Option<String>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(d) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                if has_line(&d, line) {
                    return (Some(d), seen);
                }
                seen.push(d);
            }
        }
        (None, seen)
    }

    /// Everything still queued, without waiting.
    fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8192];
        let mut out = Vec::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.sock.set_nonblocking(false).unwrap();
        out
    }
}

fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

fn field<'a>(datagram: &'a str, key: &str) -> Option<&'a str> {
    datagram
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A spawned gateway whose stderr is collected line by line.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aigw");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit status; kills the process and panics after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread catch up with the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("aigw did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET on a fresh connection: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn ready_watchdog_reload_stop() {
    let notify = Notify::new();
    // No GitLab at all: an unreachable one would (rightly) add a "never
    // answered" warning to the readiness body checked below.
    let mut gw = Proc::spawn(
        GatewayBuilder::new()
            .env("NOTIFY_SOCKET", notify.path())
            .env("WATCHDOG_USEC", "400000")
            .env("AIGW_GITLAB_URL", "")
            .command(),
    );

    let (ready, _) = notify.wait_for("READY=1", Duration::from_secs(30));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1; stderr:\n{}", gw.stderr()));
    let status = field(&ready, "STATUS").expect("READY=1 comes with a STATUS= line");
    for name in ["http=", "grpc=", "metrics=", "workflow_metrics="] {
        assert!(status.contains(name), "{status}");
    }
    // Every address named in the status line already accepts connections.
    let addr = |name: &str| -> SocketAddr {
        status
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (code, body) = http_get(addr("http="), "/monitoring/ready").unwrap();
    assert_eq!((code, body.as_str()), (200, "{}"));
    for name in ["grpc=", "metrics=", "workflow_metrics="] {
        TcpStream::connect_timeout(&addr(name), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{name} not connectable at READY: {e}"));
    }

    let (ping, _) = notify.wait_for("WATCHDOG=1", Duration::from_secs(2));
    assert!(ping.is_some(), "no WATCHDOG=1 within 2 s");

    gw.signal(libc::SIGHUP);
    let (reloading, _) = notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let reloading = reloading.expect("RELOADING=1 after SIGHUP");
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC= in the same datagram as RELOADING=1")
        .parse()
        .unwrap();
    let now = monotonic_usec();
    assert!(
        usec <= now && now - usec < 30_000_000,
        "MONOTONIC_USEC={usec}, now {now}"
    );
    let (again, _) = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(again.is_some(), "no READY=1 after the reload");
    // Still serving after the reload.
    let (code, _) = http_get(addr("http="), "/monitoring/healthz").unwrap();
    assert_eq!(code, 200);

    gw.signal(libc::SIGTERM);
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGTERM");
    let status = gw.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}; stderr:\n{}", gw.stderr());
    let late = notify.drain();
    assert!(
        !late.iter().any(|d| has_line(d, "READY=1")),
        "READY=1 after STOPPING=1: {late:?}"
    );
}

/// Runs a gateway expected to fail at startup; returns its stderr and every
/// datagram it sent.
fn failed_start(builder: GatewayBuilder) -> (ExitStatus, String, Vec<String>) {
    let notify = Notify::new();
    let mut gw = Proc::spawn(builder.env("NOTIFY_SOCKET", notify.path()).command());
    let status = gw.wait(Duration::from_secs(30));
    let datagrams = notify.drain();
    assert!(
        !datagrams.iter().any(|d| has_line(d, "READY=1")),
        "READY=1 sent by a gateway that failed to start: {datagrams:?}"
    );
    (status, gw.stderr(), datagrams)
}

#[test]
fn missing_ca_bundle_fails_before_ready() {
    let (status, stderr, datagrams) =
        failed_start(GatewayBuilder::new().env("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem"));
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("REQUESTS_CA_BUNDLE"), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    // systemctl status shows why.
    assert!(
        datagrams
            .iter()
            .filter_map(|d| field(d, "STATUS"))
            .any(|s| s.contains("/nonexistent/ca.pem")),
        "{datagrams:?}"
    );
}

#[test]
fn port_in_use_fails_before_ready() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (status, stderr, _) =
        failed_start(GatewayBuilder::new().env("AIGW_FASTAPI__API_PORT", &port.to_string()));
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("AI Gateway HTTP"), "{stderr}");
    assert!(stderr.contains("AIGW_FASTAPI__API_"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("address already in use")
            || stderr.to_lowercase().contains("address in use"),
        "{stderr}"
    );
    // No listener of the failed gateway is left behind.
    drop(taken);
}

#[test]
fn malformed_signing_key_fails_before_ready_without_echoing_it() {
    let body = "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD";
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let (status, stderr, datagrams) =
        failed_start(GatewayBuilder::new().env("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY", &pem));
    assert!(!status.success(), "{status:?}");
    assert!(
        stderr.contains("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(body), "PEM content echoed:\n{stderr}");
    assert!(
        !stderr.contains(&body[..16]),
        "PEM content echoed:\n{stderr}"
    );
    for d in &datagrams {
        assert!(!d.contains(&body[..16]), "PEM content in sd_notify: {d}");
    }
}

/// Sends a full HTTP/1.1 request on `s` (kept alive).
fn send_request(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, String)]) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: aigw\r\nContent-Length: 0\r\nContent-Type: application/json\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(s: &mut TcpStream) -> (u16, Vec<String>, String) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
        headers.push(line.to_ascii_lowercase());
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    (code, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let notify = Notify::new();
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("NOTIFY_SOCKET", notify.path())
        .env("AIGW_SHUTDOWN_GRACE_PERIOD_S", "5")
        .start();
    // Let the startup fetch bring the keys: a request with a kid the gateway
    // does not know yet would use up the early-refresh allowance.
    assert!(
        gw.wait_for_log_async("OIDC signing keys loaded", Duration::from_secs(20))
            .await,
        "{}",
        gw.logs()
    );
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    let (ready, _) = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(ready.is_some());

    // A keep-alive connection, used once before the signal.
    let mut conn = TcpStream::connect(gw.addrs.http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    send_request(&mut conn, "GET", "/monitoring/healthz", &[]);
    let (code, headers, _) = read_response(&mut conn);
    assert_eq!(code, 200);
    assert!(!headers.iter().any(|h| h == "connection: close"));

    // A slow request on it: a token with an unknown kid makes the gateway ask
    // GitLab for fresh keys and wait (bounded) for them; GitLab now hangs.
    gitlab.set_mode(JwksMode::Hang);
    let hits = gitlab.discovery_hits();
    let unknown_kid = other_key().rails_token(json!({}));
    send_request(
        &mut conn,
        "POST",
        "/v1/code/user_access_token",
        &rails_headers(&unknown_kid),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gitlab.discovery_hits() == hits {
        assert!(Instant::now() < deadline, "no early key refresh");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The request is now in flight inside the gateway.
    let sent = Instant::now();
    gw.signal(libc::SIGTERM);
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(5));
    assert!(stopping.is_some(), "no STOPPING=1");

    // While draining, nothing new is served as ready: the listener is closed,
    // or readiness answers 503.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut not_ready = None;
    while Instant::now() < deadline {
        match http_get(gw.addrs.http, "/monitoring/ready") {
            Err(e) => {
                not_ready = Some(format!("refused: {e}"));
                break;
            }
            Ok((200, _)) => std::thread::sleep(Duration::from_millis(10)),
            Ok((code, body)) => {
                not_ready = Some(format!("{code} {body}"));
                break;
            }
        }
    }
    assert!(not_ready.is_some(), "still ready while draining");

    // The in-flight request completes (the token is refused, as it should be).
    let (code, headers, body) = read_response(&mut conn);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body, r#"{"error":"Forbidden by auth provider"}"#);
    assert!(
        headers.iter().any(|h| h == "connection: close"),
        "{headers:?}"
    );
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "data after the drained response");

    let logs = gw.logs.clone();
    let status = gw.stop_async().await;
    assert!(status.success(), "{status:?}");
    let elapsed = sent.elapsed();
    let logs = logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains("grace period over"),
        "drain hit the grace period ({elapsed:?}):\n{logs}"
    );
}

/// Mints a user access token and returns it.
async fn mint_user_token(gw: &Gateway, token: &str) -> String {
    let resp = with_headers(
        client().post(gw.http_url("/v1/code/user_access_token")),
        &rails_headers(token),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

fn verifies_with(token: &str, key: &TestKey) -> bool {
    let jwk = key.jwk();
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[GATEWAY_AUD]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).is_ok()
}

fn replace_file(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn count_lines(gw: &Gateway, needles: &[&str]) -> usize {
    gw.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

async fn wait_for_count(gw: &Gateway, needles: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_lines(gw, needles) < n {
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_signing_key_file() {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = temp_file(dir.path(), "aigw-signing.pem", &signing_key().pem);
    let gw = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .unset("AIGW_SELF_SIGNED_JWT__SIGNING_KEY")
        .env(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
            key_file.to_str().unwrap(),
        )
        .start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;

    let minted = mint_user_token(&gw, &token).await;
    assert_eq!(jwt_header(&minted)["kid"], signing_key().kid.as_str());
    assert!(verifies_with(&minted, signing_key()));

    let replaced = ["reload: signing and validation keys replaced", "AI Gateway"];
    replace_file(&key_file, &other_key().pem);
    gw.signal(libc::SIGHUP);
    wait_for_count(&gw, &replaced, 1).await;
    let minted = mint_user_token(&gw, &token).await;
    assert_eq!(jwt_header(&minted)["kid"], other_key().kid.as_str());
    assert!(verifies_with(&minted, other_key()));
    assert!(!verifies_with(&minted, signing_key()));

    // A broken file is refused and the current key stays in service.
    let garbage_body = "bm90IGEga2V5IGF0IGFsbCwganVzdCBzb21lIGJ5dGVz";
    replace_file(
        &key_file,
        &format!("-----BEGIN PRIVATE KEY-----\n{garbage_body}\n-----END PRIVATE KEY-----\n"),
    );
    gw.signal(libc::SIGHUP);
    let kept = ["reload: keeping the previous keys", "AI Gateway"];
    wait_for_count(&gw, &kept, 1).await;
    let line = gw
        .logs
        .lock()
        .unwrap()
        .iter()
        .find(|l| kept.iter().all(|n| l.contains(n)))
        .cloned()
        .unwrap();
    assert!(line.contains("aigw-signing.pem"), "{line}");
    assert!(!gw.logs().contains(garbage_body), "key material logged");
    let minted = mint_user_token(&gw, &token).await;
    assert_eq!(jwt_header(&minted)["kid"], other_key().kid.as_str());
    assert!(verifies_with(&minted, other_key()));
    assert_eq!(count_lines(&gw, &replaced), 1);
    assert!(gw.stop_async().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_does_not_wait_for_an_unreachable_gitlab() {
    // GitLab accepts connections and never answers (booted in the wrong order,
    // or a firewall dropping packets): the gateway still comes up at once.
    let gitlab = Blackhole::start().await;
    let notify = Notify::new();
    let started = Instant::now();
    let mut gw = Proc::spawn(
        GatewayBuilder::new()
            .gitlab(&gitlab.url)
            .env("NOTIFY_SOCKET", notify.path())
            .command(),
    );
    let (ready, _) = notify.wait_for("READY=1", Duration::from_secs(30));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1; stderr:\n{}", gw.stderr()));
    // The JWKS request timeout is 10 s; READY must not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "READY after {:?}",
        started.elapsed()
    );
    let addr: SocketAddr = field(&ready, "STATUS")
        .unwrap()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    let (code, _) = http_get(addr, "/monitoring/ready").unwrap();
    assert_eq!(code, 200);

    // SIGINT stops like SIGTERM.
    gw.signal(libc::SIGINT);
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGINT");
    let status = gw.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}; stderr:\n{}", gw.stderr());
    assert!(gitlab.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}
