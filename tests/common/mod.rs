//! Black-box test harness: the real `aigw` binary on port 0 against loopback
//! peers (a fake GitLab serving OIDC discovery + JWKS, blackholes, TLS peers).
//!
//! Every gateway is started with a scrubbed environment (this machine presets
//! REQUESTS_CA_BUNDLE, SSL_CERT_FILE and friends), JSON logs on stderr, and all
//! four listeners on ephemeral ports, which it learns from the "listening" log
//! lines. Nothing here reaches into the gateway's internals.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::{
    RsaPrivateKey,
    pkcs1::EncodeRsaPrivateKey,
    pkcs8::{EncodePrivateKey, LineEnding},
    traits::PublicKeyParts,
};
use serde_json::{Value, json};

pub const INSTANCE_ID: &str = "0b9e4c3a-7f1d-4d2a-8c55-2f6e1a9b7c10";
/// The `iss` of `rails_claims()`, and what a [`FakeGitLab`] announces as its
/// issuer by default: GitLab's external URL, while the gateway reaches it at a
/// loopback address (as with an internal service URL).
pub const GITLAB_ISSUER: &str = "https://gitlab.example.com";
pub const GLOBAL_USER_ID: &str = "q6b5xHk0d1j0m9S8a3QeA1o7f6wPz2nYc4tL0uVbK5E=";
pub const GATEWAY_AUD: &str = "gitlab-ai-gateway";
pub const WORKFLOW_AUD: &str = "gitlab-duo-workflow-service";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RSA key pair for tests, with its PEM and public JWK.
pub struct TestKey {
    pub private: RsaPrivateKey,
    /// PKCS#8 PEM, as `openssl genrsa` writes today.
    pub pem: String,
    pub kid: String,
    encoding: EncodingKey,
}

impl TestKey {
    pub fn generate() -> Self {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let encoding = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());
        let (n, e) = Self::ne(&private);
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Self {
            private,
            pem,
            kid,
            encoding,
        }
    }

    fn ne(private: &RsaPrivateKey) -> (String, String) {
        (
            URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        )
    }

    /// The public JWK as GitLab publishes it at /oauth/discovery/keys.
    pub fn jwk(&self) -> Value {
        let (n, e) = Self::ne(&self.private);
        json!({"kty": "RSA", "kid": self.kid, "e": e, "n": n, "use": "sig", "alg": "RS256"})
    }

    /// Signs `claims` with RS256; `kid: None` leaves the header without a kid.
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A token shaped like the one GitLab Rails self-issues (§2 of the client spec).
    pub fn rails_token(&self, overrides: Value) -> String {
        let mut claims = rails_claims();
        if let (Some(base), Some(extra)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    base.remove(k);
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign(&claims, Some(&self.kid))
    }
}

/// Keys are slow to generate in debug builds: share a few per test binary.
pub fn gitlab_key() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::generate)
}

pub fn signing_key() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::generate)
}

pub fn other_key() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::generate)
}

/// Claims of a Rails self-issued Cloud Connector token.
pub fn rails_claims() -> Value {
    let now = now();
    json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "aud": [GATEWAY_AUD, WORKFLOW_AUD],
        "sub": INSTANCE_ID,
        "iss": GITLAB_ISSUER,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 3600,
        "gitlab_realm": "self-managed",
        "scopes": ["complete_code", "generate_code", "duo_chat", "duo_classic_chat",
                   "duo_agent_platform", "duo_workflow_execute_workflow", "include_file_context"],
        "tool_access_policies": "{\"allow\":[],\"ask\":[],\"deny\":[]}"
    })
}

/// The headers Rails sends with every authenticated call.
pub fn rails_headers(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {token}")),
        ("x-gitlab-authentication-type", "oidc".into()),
        ("x-gitlab-realm", "self-managed".into()),
        ("x-gitlab-instance-id", INSTANCE_ID.into()),
        ("x-gitlab-global-user-id", GLOBAL_USER_ID.into()),
        ("x-gitlab-version", "18.6.0".into()),
        ("x-gitlab-host-name", "gitlab.example.com".into()),
    ]
}

/// Decodes a JWT's payload without verifying it (to inspect minted tokens).
pub fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub fn jwt_header(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// How the fake GitLab answers its OIDC endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwksMode {
    Normal,
    Status500,
    InvalidJson,
    /// A 50 MB JWKS body.
    Huge,
    /// Accepts, then never answers.
    Hang,
    /// Discovery document without `jwks_uri`.
    NoJwksUri,
}

#[derive(Clone)]
struct FakeState {
    keys: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<JwksMode>>,
    base: Arc<OnceLock<String>>,
    /// The discovery document's `issuer`; `None`: the base URL.
    issuer: Option<String>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
}

/// A loopback GitLab serving `/.well-known/openid-configuration` and `/oauth/discovery/keys`.
pub struct FakeGitLab {
    pub addr: SocketAddr,
    pub url: String,
    state: FakeState,
    _task: tokio::task::JoinHandle<()>,
}

async fn discovery(State(s): State<FakeState>) -> impl IntoResponse {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    let base = s.base.get().cloned().unwrap_or_default();
    let issuer = s.issuer.clone().unwrap_or_else(|| base.clone());
    match mode {
        JwksMode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        JwksMode::NoJwksUri => Json(json!({"issuer": issuer})).into_response(),
        _ => Json(json!({
            "issuer": issuer,
            "jwks_uri": format!("{base}/oauth/discovery/keys"),
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .into_response(),
    }
}

async fn jwks(State(s): State<FakeState>) -> impl IntoResponse {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    match mode {
        JwksMode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        JwksMode::InvalidJson => (StatusCode::OK, "{\"keys\": [").into_response(),
        JwksMode::Huge => {
            let mut body = String::from("{\"keys\":[],\"pad\":\"");
            body.push_str(&"x".repeat(50 * 1024 * 1024));
            body.push_str("\"}");
            (StatusCode::OK, body).into_response()
        }
        _ => Json(json!({"keys": s.keys.lock().unwrap().clone()})).into_response(),
    }
}

impl FakeGitLab {
    /// Starts a plain-HTTP fake GitLab publishing `keys`, announcing
    /// [`GITLAB_ISSUER`] as its issuer.
    pub async fn start(keys: Vec<Value>) -> Self {
        Self::start_with(keys, None).await
    }

    /// Same, over HTTPS with the given server certificate.
    pub async fn start_with(keys: Vec<Value>, tls: Option<&TestCa>) -> Self {
        Self::serve(keys, tls, Some(GITLAB_ISSUER.to_string())).await
    }

    /// A plain-HTTP fake GitLab whose discovery document announces `issuer`
    /// (`None`: its own URL, as when the gateway uses GitLab's external URL).
    pub async fn start_as(keys: Vec<Value>, issuer: Option<&str>) -> Self {
        Self::serve(keys, None, issuer.map(str::to_string)).await
    }

    async fn serve(keys: Vec<Value>, tls: Option<&TestCa>, issuer: Option<String>) -> Self {
        let state = FakeState {
            keys: Arc::new(Mutex::new(keys)),
            mode: Arc::new(Mutex::new(JwksMode::Normal)),
            base: Arc::new(OnceLock::new()),
            issuer,
            discovery_hits: Arc::new(AtomicUsize::new(0)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/oauth/discovery/keys", get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (url, task) = match tls {
            None => {
                let task = tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                (format!("http://127.0.0.1:{}", addr.port()), task)
            }
            Some(ca) => {
                let cfg = ca.server_config();
                let task = tokio::spawn(serve_tls(listener, cfg, app));
                (format!("https://localhost:{}", addr.port()), task)
            }
        };
        let _ = state.base.set(url.clone());
        Self {
            addr,
            url,
            state,
            _task: task,
        }
    }

    pub fn set_mode(&self, mode: JwksMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
}

async fn serve_tls(listener: tokio::net::TcpListener, cfg: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
        });
    }
}

/// A TCP listener that accepts connections and never answers: a blackholed peer.
pub struct Blackhole {
    pub url: String,
    pub accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            accepted,
            _task: task,
        }
    }
}

/// A private CA and a `localhost`/`127.0.0.1` server certificate signed by it.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        install_provider();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "aigw test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = Self {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            dir,
        };
        std::fs::write(ca.ca_path(), &ca.ca_pem).unwrap();
        std::fs::write(ca.cert_path(), &ca.cert_pem).unwrap();
        std::fs::write(ca.key_path(), &ca.key_pem).unwrap();
        ca
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// A reqwest client trusting only this CA.
    pub fn client(&self) -> reqwest::Client {
        install_provider();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }
}

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The environment variables this machine presets and tests must not inherit.
pub const SCRUBBED: &[&str] = &[
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "CREDENTIALS_DIRECTORY",
];

/// Where a started gateway listens.
#[derive(Clone, Debug)]
pub struct Addrs {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub workflow_metrics: SocketAddr,
}

/// A running `aigw` process with captured stderr.
pub struct Gateway {
    pub child: Child,
    pub addrs: Addrs,
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// Builder for a gateway process.
pub struct GatewayBuilder {
    env: HashMap<String, String>,
    args: Vec<String>,
    dir: Option<PathBuf>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aigw"))
}

/// A command for the aigw binary with a clean environment (PATH and HOME only).
pub fn aigw_command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear();
    for keep in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(keep) {
            cmd.env(keep, v);
        }
    }
    cmd
}

impl GatewayBuilder {
    /// Defaults: every listener on 127.0.0.1:0, JSON logs, GitLab URL pointed
    /// at nothing, offline license, AI Gateway and Duo Workflow signing keys set.
    pub fn new() -> Self {
        let mut env = HashMap::new();
        for (k, v) in [
            ("AIGW_FASTAPI__API_HOST", "127.0.0.1"),
            ("AIGW_FASTAPI__API_PORT", "0"),
            ("DUO_WORKFLOW_SERVICE_HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("AIGW_FASTAPI__METRICS_HOST", "127.0.0.1"),
            ("AIGW_FASTAPI__METRICS_PORT", "0"),
            ("PROMETHEUS_METRICS__ADDR", "127.0.0.1"),
            ("PROMETHEUS_METRICS__PORT", "0"),
            ("AIGW_LOGGING__FORMAT_JSON", "true"),
            ("AIGW_LOGGING__LEVEL", "info"),
            ("AIGW_GITLAB_URL", "http://127.0.0.1:9"),
            ("AIGW_CUSTOMER_PORTAL_URL", ""),
            ("DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL", ""),
            ("AIGW_SHUTDOWN_GRACE_PERIOD_S", "5"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.insert(
            "AIGW_SELF_SIGNED_JWT__SIGNING_KEY".into(),
            signing_key().pem.clone(),
        );
        env.insert(
            "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY".into(),
            signing_key().pem.clone(),
        );
        Self {
            env,
            args: Vec::new(),
            dir: None,
        }
    }

    /// Runs the gateway in `dir` (`--dev` keeps its key under `tmp/` there).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Points both services at this GitLab.
    pub fn gitlab(self, url: &str) -> Self {
        self.env("AIGW_GITLAB_URL", url)
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.to_string(), v.to_string());
        self
    }

    pub fn unset(mut self, k: &str) -> Self {
        self.env.remove(k);
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = aigw_command();
        cmd.envs(&self.env).args(&self.args);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts the gateway and waits until all four listeners are announced.
    pub fn start(self) -> Gateway {
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aigw");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut found: HashMap<String, SocketAddr> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while found.len() < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "gateway did not announce its listeners; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let name = v["listener"].as_str().unwrap().to_string();
                let addr = v["addr"].as_str().unwrap().parse().unwrap();
                found.insert(name, addr);
            }
        }
        Gateway {
            child,
            addrs: Addrs {
                http: found["http"],
                grpc: found["grpc"],
                metrics: found["metrics"],
                workflow_metrics: found["workflow_metrics"],
            },
            logs,
        }
    }
}

impl Gateway {
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// All log lines so far, joined.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// [`Gateway::wait_for_log`] for async tests: sleeps on the runtime, so
    /// loopback peers on a current-thread runtime (FakeGitLab) keep answering.
    pub async fn wait_for_log_async(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not stop on SIGTERM; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP client for the gateway.
pub fn client() -> reqwest::Client {
    install_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// GET `url` and return the body (a probe, a metrics page), whatever the status.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Builds a request with Rails' headers for `token`.
pub fn with_headers(
    mut rb: reqwest::RequestBuilder,
    headers: &[(&'static str, String)],
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    rb
}

/// Waits until the gateway accepts `token` on an authenticated route (keys fetched).
pub async fn wait_until_accepted(gw: &Gateway, token: &str) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = with_headers(
            c.post(gw.http_url("/v1/code/user_access_token")),
            &rails_headers(token),
        )
        .send()
        .await
        .unwrap();
        if resp.status() == 200 {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "token never accepted ({}); logs:\n{}",
                resp.status(),
                gw.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A temp file with `contents`.
pub fn temp_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

impl Gateway {
    /// [`Gateway::stop`] for async tests: waits on the runtime, so clients
    /// living on a current-thread runtime (tonic channels answering the
    /// server's GOAWAY ping, FakeGitLab) keep running during the drain.
    pub async fn stop_async(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not stop on SIGTERM; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `aigw-mock-model` binary: an OpenAI-compatible model server on loopback.
pub struct MockModel {
    pub child: Child,
    pub addr: SocketAddr,
}

impl MockModel {
    /// Starts the mock with extra CLI flags (e.g. `--inter-token-ms 50`).
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aigw-mock-model"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn aigw-mock-model");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(line.trim()).expect("mock's listening line");
        let addr = v["listening"].as_str().unwrap().parse().unwrap();
        Self { child, addr }
    }

    /// The endpoint as an administrator configures it in GitLab (with `/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests the mock received (method, path, headers, body).
    pub async fn requests(&self) -> Vec<Value> {
        client()
            .get(format!("http://{}/_mock/requests", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stats(&self) -> Value {
        client()
            .get(format!("http://{}/_mock/stats", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with self-hosted models enabled, trusting `gitlab`'s keys.
pub async fn gateway_with_models(gitlab: &FakeGitLab, extra: &[(&str, &str)]) -> (Gateway, String) {
    let mut b = GatewayBuilder::new()
        .gitlab(&gitlab.url)
        .env("AIGW_CUSTOM_MODELS__ENABLED", "true");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    let gw = b.start();
    let token = gitlab_key().rails_token(json!({}));
    wait_until_accepted(&gw, &token).await;
    (gw, token)
}

/// A TLS front for a plain loopback server (the mock model): terminates TLS
/// with `ca`'s `localhost` certificate, optionally demanding a client
/// certificate signed by the same CA, and relays bytes to `backend`. Counts
/// the handshakes that completed, and those that presented a client certificate.
pub struct TlsFront {
    pub addr: SocketAddr,
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    pub with_client_cert: Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(ca: &TestCa, backend: SocketAddr, require_client_cert: bool) -> Self {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        use std::sync::atomic::{AtomicUsize, Ordering};
        install_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let mut cfg = builder.with_single_cert(certs, key).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let with_client_cert = Arc::new(AtomicUsize::new(0));
        let (h, c) = (handshakes.clone(), with_client_cert.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, h, c) = (acceptor.clone(), h.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    if tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|p| !p.is_empty())
                    {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            addr,
            handshakes,
            with_client_cert,
            _task: task,
        }
    }

    /// The OpenAI-compatible base URL, by name so the certificate matches.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}/v1", self.addr.port())
    }
}

/// The message of an error body: `detail` when it is a string, else
/// `detail[0].msg` as GitLab Rails reads FastAPI's validation list. A 422
/// must use the list (`{"detail":[{"loc","msg","type"}]}`); this checks it.
pub fn error_message(status: u16, body: &Value) -> String {
    match &body["detail"] {
        Value::String(s) => {
            assert_ne!(status, 422, "a 422 detail must be FastAPI's list: {body}");
            s.clone()
        }
        Value::Array(items) => {
            let first = &items[0];
            assert!(
                first["loc"].is_array() && first["msg"].is_string() && first["type"].is_string(),
                "{body}"
            );
            assert_eq!(first["loc"][0], "body", "{body}");
            first["msg"].as_str().unwrap().to_string()
        }
        _ => String::new(),
    }
}
