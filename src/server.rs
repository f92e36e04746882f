//! Startup, readiness, reload and shutdown: the one place that wires
//! configuration into running listeners.
//!
//! Order matters and is the contract with systemd: load and validate
//! everything (trust store, keys, certificates), bind every listener, start
//! serving, and only then send `READY=1`. Any failure before that exits
//! non-zero without READY. OIDC keys are fetched in the background after
//! binding, so a gateway booted before GitLab still comes up.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::response::IntoResponse;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinHandle,
};
use tower::ServiceBuilder;
use url::Url;

use crate::{
    auth::{AuthSettings, Authenticator},
    config::{Config, ServiceAuth},
    grpc::{self, GateLayer, WorkflowService},
    health::Health,
    http::{DocsSettings, HttpContext},
    jwks::{JwksCache, JwksTiming},
    keys::LocalKeys,
    listener::{self, Protocol},
    metrics::{self, GatewayMetrics, OidcMetrics, WorkflowMetrics},
    models::{
        client as model_client,
        platforms::Platforms,
        service::{ModelService, ModelSettings},
    },
    systemd,
    tls::{self, ReloadableCert},
    tokens::TokenAuthority,
    trust::TrustStore,
};

/// Why the gateway could not start. Each variant's message is meant for an
/// administrator reading `systemctl status`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("CA bundle: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("{service} key: {source}")]
    Key {
        service: &'static str,
        source: crate::keys::KeyError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Bind(String),
    #[error("{0}")]
    Setup(String),
}

/// Everything SIGHUP can replace, with what it needs to do so.
struct Reloadable {
    config: Config,
    jwks: Arc<JwksCache>,
    model_provider: Arc<Platforms>,
    gateway_auth: Arc<Authenticator>,
    workflow_auth: Arc<Authenticator>,
    gateway_tokens: Arc<TokenAuthority>,
    workflow_tokens: Arc<TokenAuthority>,
    http_cert: Option<Arc<ReloadableCert>>,
    grpc_cert: Option<Arc<ReloadableCert>>,
}

fn load_keys(
    auth: &ServiceAuth,
    dev: bool,
    service: &'static str,
) -> Result<LocalKeys, StartupError> {
    let signing = auth.signing_key_or_dev(dev);
    LocalKeys::load(signing.as_ref(), auth.validation_key.as_ref())
        .map_err(|source| StartupError::Key { service, source })
}

/// Loud warnings for every unsafe setting in force.
fn warnings(config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if config.gateway_auth.bypass {
        w.push("AIGW_AUTH__BYPASS_EXTERNAL=true: the AI Gateway accepts every request WITHOUT authentication".to_string());
    }
    if config.gateway_auth.bypass_with_header {
        w.push("AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER=true: any request carrying 'Bypass-Auth: true' skips authentication".to_string());
    }
    if config.gateway_auth.bypass_signature {
        w.push(
            "AIGW_AUTH__BYPASS_JWT_SIGNATURE=true: token signatures are NOT checked".to_string(),
        );
    }
    if config.workflow_auth.bypass {
        w.push("DUO_WORKFLOW_AUTH__ENABLED=false: the Duo Workflow service accepts every call WITHOUT authentication".to_string());
    }
    if config.dev_mode
        && (config.gateway_auth.signing_key.is_none() || config.workflow_auth.signing_key.is_none())
    {
        w.push(format!("development mode (--dev): tokens are signed with the development key {} (`aigw dev-token` mints one from it); never use --dev in production", crate::config::DEV_KEY_FILE));
    }
    w
}

fn cert_for(
    files: &Option<crate::config::TlsFiles>,
    cert_var: &'static str,
    key_var: &'static str,
) -> Result<Option<Arc<ReloadableCert>>, StartupError> {
    match files {
        None => Ok(None),
        Some(f) => Ok(Some(ReloadableCert::new(tls::load_certified_key(
            f, cert_var, key_var,
        )?))),
    }
}

/// The client certificate for model endpoints (`AIGW_MTLS__*`), if configured.
fn load_client_cert(config: &Config) -> Result<Option<model_client::ClientCert>, StartupError> {
    let Some(files) = &config.models.mtls else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, var: &'static str| {
        std::fs::read(path).map_err(|e| {
            StartupError::Tls(tls::TlsError::File {
                var,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        })
    };
    Ok(Some(model_client::ClientCert {
        cert_pem: read(&files.cert_file, "AIGW_MTLS__CERT_FILE")?,
        key_pem: read(&files.key_file, "AIGW_MTLS__KEY_FILE")?,
    }))
}

/// The OIDC issuers of one service: every GitLab instance, then CustomersDot.
pub fn issuer_urls(auth: &ServiceAuth) -> Vec<(&'static str, Url)> {
    let mut v: Vec<(&'static str, Url)> =
        auth.gitlab_urls().map(|u| ("GitLab", u.clone())).collect();
    if let Some(u) = &auth.customer_portal_url {
        v.push(("CustomersDot", u.clone()));
    }
    v
}

fn authenticator(auth: &ServiceAuth, keys: &LocalKeys, jwks: &Arc<JwksCache>) -> Authenticator {
    let issuers = issuer_urls(auth)
        .iter()
        .filter_map(|(_, u)| jwks.issuer(u))
        .collect();
    Authenticator::new(
        AuthSettings {
            service_name: auth.service_name.clone(),
            bypass: auth.bypass,
            bypass_with_header: auth.bypass_with_header,
            bypass_signature: auth.bypass_signature,
        },
        keys.verify.clone(),
        issuers,
        jwks.clone(),
    )
}

/// Addresses actually bound (ports may have been 0).
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub workflow_metrics: Option<SocketAddr>,
}

impl BoundAddrs {
    fn status_line(&self) -> String {
        let mut s = format!(
            "serving: http={} grpc={} metrics={}",
            self.http, self.grpc, self.metrics
        );
        if let Some(w) = self.workflow_metrics {
            s.push_str(&format!(" workflow_metrics={w}"));
        }
        s
    }
}

/// Runs the gateway until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), StartupError> {
    tls::install_crypto_provider();
    crate::jwt_crypto::install();
    systemd::status("loading configuration");

    let trust = TrustStore::load(&config.ca)?;
    tracing::info!(source = %trust.source(), anchors = trust.len(), "outbound trust store loaded");

    let dev = config.dev_mode;
    let gateway_keys = load_keys(&config.gateway_auth, dev, "AI Gateway signing")?;
    let workflow_keys = load_keys(&config.workflow_auth, dev, "Duo Workflow signing")?;
    for (service, keys) in [
        ("AI Gateway", &gateway_keys),
        ("Duo Workflow", &workflow_keys),
    ] {
        match &keys.signing {
            Some(k) => tracing::info!(service, origin = %k.origin(), "token signing key loaded"),
            None => tracing::warn!(
                service,
                "no token signing key configured: minting tokens will fail"
            ),
        }
    }
    let http_cert = cert_for(
        &config.http.tls,
        "AIGW_FASTAPI__TLS__CERT_FILE",
        "AIGW_FASTAPI__TLS__KEY_FILE",
    )?;
    let grpc_cert = cert_for(
        &config.grpc.tls,
        "DUO_WORKFLOW_TLS__CERT_FILE",
        "DUO_WORKFLOW_TLS__KEY_FILE",
    )?;

    let warnings = warnings(&config);
    for w in &warnings {
        tracing::warn!(security = true, "{w}");
    }
    for (side, auth) in [
        ("AI Gateway", &config.gateway_auth),
        ("Duo Workflow", &config.workflow_auth),
    ] {
        if auth.customer_portal_url.is_none() {
            tracing::info!(
                service = side,
                "customer portal URL is empty: offline license, CustomersDot is never contacted"
            );
        }
    }

    let timing = JwksTiming::default();
    let client = crate::jwks::http_client(&trust, &timing).map_err(StartupError::Setup)?;
    let mut urls = issuer_urls(&config.gateway_auth);
    urls.extend(issuer_urls(&config.workflow_auth));
    let oidc_metrics = OidcMetrics::new().map_err(|e| StartupError::Setup(e.to_string()))?;
    let jwks = JwksCache::new(&urls, client, timing, Some(oidc_metrics.clone()));

    let gateway_auth = Arc::new(authenticator(&config.gateway_auth, &gateway_keys, &jwks));
    let workflow_auth = Arc::new(authenticator(&config.workflow_auth, &workflow_keys, &jwks));
    let gateway_tokens = Arc::new(TokenAuthority::new(
        &config.gateway_auth.service_name,
        gateway_keys.signing,
    ));
    let workflow_tokens = Arc::new(TokenAuthority::new(
        &config.workflow_auth.service_name,
        workflow_keys.signing,
    ));

    let gateway_metrics = GatewayMetrics::new().map_err(|e| StartupError::Setup(e.to_string()))?;
    oidc_metrics
        .register(&gateway_metrics.registry)
        .map_err(|e| StartupError::Setup(e.to_string()))?;
    let client_cert = load_client_cert(&config)?;
    let model_http =
        model_client::http_client(&trust, client_cert.as_ref()).map_err(StartupError::Setup)?;
    let model_provider =
        Arc::new(Platforms::new(model_http, &config.models).map_err(StartupError::Setup)?);
    let models = Arc::new(ModelService::new(
        model_provider.clone(),
        gateway_metrics.models.clone(),
        ModelSettings {
            custom_models_enabled: config.models.custom_models_enabled,
            cloud: config.models.cloud.clone(),
            disable_streaming: config.models.disable_streaming,
            suggestions_timeout: config.models.suggestions_timeout,
            retry_deadline: config.models.prompt_retry_deadline,
        },
    ));
    if !config.models.custom_models_enabled {
        tracing::warn!(
            "AIGW_CUSTOM_MODELS__ENABLED is not true: requests naming a self-hosted model endpoint are refused"
        );
    }
    let workflow_metrics =
        WorkflowMetrics::new().map_err(|e| StartupError::Setup(e.to_string()))?;
    oidc_metrics
        .register(&workflow_metrics.registry)
        .map_err(|e| StartupError::Setup(e.to_string()))?;
    let health = Arc::new(Health::new(warnings).with_source(jwks.clone()));

    // Applications.
    let http_app = crate::http::router(
        HttpContext {
            auth: gateway_auth.clone(),
            tokens: gateway_tokens.clone(),
            metrics: gateway_metrics.clone(),
            health: health.clone(),
            models,
            docs: Arc::new(crate::docs_search::DocsIndex::new(&config.docs_search_db)),
            prompts: Arc::new(
                crate::prompts::PromptRegistry::load(
                    config.models.prompts_dir.as_deref(),
                    crate::prompts::PromptSettings {
                        default_timeout: config.models.request_timeout,
                        chat_max_tokens: config.models.chat_max_tokens,
                    },
                )
                .map_err(StartupError::Setup)?,
            ),
            public_paths: Arc::default(),
        },
        &DocsSettings {
            docs_url: config.http.docs_url.clone(),
            openapi_url: config.http.openapi_url.clone(),
        },
    )
    .map_err(StartupError::Setup)?;
    let (routes, workflow_health) = grpc::routes(
        WorkflowService {
            tokens: workflow_tokens.clone(),
        },
        config.grpc.reflection,
    )
    .map_err(StartupError::Setup)?;
    let grpc_app = ServiceBuilder::new()
        .layer(GateLayer {
            auth: workflow_auth.clone(),
            metrics: workflow_metrics.clone(),
            reflection_public: config.grpc.reflection,
        })
        .service(routes.prepare());

    // Bind everything before serving anything.
    let bind =
        |name, addr| async move { listener::bind(name, addr).await.map_err(StartupError::Bind) };
    let http_l = bind(
        "AI Gateway HTTP (AIGW_FASTAPI__API_HOST/PORT)",
        config.http.listen,
    )
    .await?;
    let grpc_l = bind(
        "Duo Workflow gRPC (DUO_WORKFLOW_SERVICE_PORT/PORT)",
        config.grpc.listen,
    )
    .await?;
    let metrics_l = bind(
        "AI Gateway metrics (AIGW_FASTAPI__METRICS_HOST/PORT)",
        config.metrics.gateway,
    )
    .await?;
    let wf_metrics_l = match config.metrics.workflow {
        Some(addr) => {
            Some(bind("Duo Workflow metrics (PROMETHEUS_METRICS__ADDR/PORT)", addr).await?)
        }
        None => None,
    };
    let local = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_err(|e| StartupError::Bind(e.to_string()))
    };
    let addrs = BoundAddrs {
        http: local(&http_l)?,
        grpc: local(&grpc_l)?,
        metrics: local(&metrics_l)?,
        workflow_metrics: wf_metrics_l.as_ref().map(local).transpose()?,
    };

    let http_tls = http_cert
        .clone()
        .map(|c| tls::server_config(c, &[b"h2", b"http/1.1"]))
        .transpose()
        .map_err(|e| StartupError::Setup(e.to_string()))?;
    let grpc_tls = grpc_cert
        .clone()
        .map(|c| tls::server_config(c, &[b"h2"]))
        .transpose()
        .map_err(|e| StartupError::Setup(e.to_string()))?;

    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| StartupError::Setup(e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| StartupError::Setup(e.to_string()))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| StartupError::Setup(e.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<JoinHandle<()>> = vec![
        listener::spawn(
            "http",
            http_l,
            http_tls,
            Protocol::Auto,
            http_app,
            stop_rx.clone(),
        ),
        listener::spawn(
            "grpc",
            grpc_l,
            grpc_tls,
            Protocol::Http2,
            grpc_app,
            stop_rx.clone(),
        ),
        listener::spawn(
            "metrics",
            metrics_l,
            None,
            Protocol::Auto,
            metrics_app(gateway_metrics.registry.clone()),
            stop_rx.clone(),
        ),
    ];
    if let Some(l) = wf_metrics_l {
        tasks.push(listener::spawn(
            "workflow_metrics",
            l,
            None,
            Protocol::Auto,
            metrics_app(workflow_metrics.registry.clone()),
            stop_rx.clone(),
        ));
    }
    jwks.spawn_refreshers();
    workflow_health.set_serving().await;
    health.set_ready();

    for (name, addr) in [
        ("http", Some(addrs.http)),
        ("grpc", Some(addrs.grpc)),
        ("metrics", Some(addrs.metrics)),
        ("workflow_metrics", addrs.workflow_metrics),
    ] {
        if let Some(addr) = addr {
            tracing::info!(listener = name, addr = %addr, "listening");
        }
    }
    systemd::ready(&addrs.status_line());
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                systemd::watchdog_ping();
            }
        });
    }

    let reloadable = Reloadable {
        config,
        jwks,
        model_provider,
        gateway_auth,
        workflow_auth,
        gateway_tokens,
        workflow_tokens,
        http_cert,
        grpc_cert,
    };
    loop {
        tokio::select! {
            _ = sighup.recv() => {
                systemd::reloading();
                reloadable.reload();
                reloadable.model_provider.forget_credentials().await;
                systemd::ready(&addrs.status_line());
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    let grace = reloadable.config.shutdown_grace;
    tracing::info!(
        grace_period_s = grace.as_secs_f64(),
        "shutting down: draining connections"
    );
    systemd::stopping();
    health.set_draining();
    workflow_health.set_not_serving().await;
    let _ = stop_tx.send(true);
    drain(tasks, grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn drain(tasks: Vec<JoinHandle<()>>, grace: Duration) {
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            grace_period_s = grace.as_secs_f64(),
            "grace period over: closing remaining connections"
        );
    }
}

/// The Prometheus exposition on every path of a metrics port.
fn metrics_app(registry: prometheus::Registry) -> axum::Router {
    let handler = move || {
        let registry = registry.clone();
        async move {
            match metrics::render(&registry) {
                Ok(text) => (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
                    .into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot render metrics");
                    http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
    };
    axum::Router::new().fallback(handler)
}

impl Reloadable {
    /// Re-reads every file-backed input. Each part either replaces the old
    /// state completely or keeps it, with the reason logged.
    fn reload(&self) {
        let c = &self.config;
        match TrustStore::load(&c.ca) {
            Ok(trust) => {
                let clients =
                    crate::jwks::http_client(&trust, &JwksTiming::default()).and_then(|jwks| {
                        let cert = load_client_cert(c).map_err(|e| e.to_string())?;
                        Ok((jwks, model_client::http_client(&trust, cert.as_ref())?))
                    });
                match clients {
                    Ok((jwks, models)) => {
                        self.jwks.set_client(jwks);
                        self.model_provider.set_client(models);
                        tracing::info!(source = %trust.source(), anchors = trust.len(), "reload: trust store replaced");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload: keeping the previous trust store")
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reload: keeping the previous trust store"),
        }
        let dev = c.dev_mode;
        for (service, auth, authn, tokens) in [
            (
                "AI Gateway",
                &c.gateway_auth,
                &self.gateway_auth,
                &self.gateway_tokens,
            ),
            (
                "Duo Workflow",
                &c.workflow_auth,
                &self.workflow_auth,
                &self.workflow_tokens,
            ),
        ] {
            // The development key is kept as loaded at startup.
            if auth.signing_key.is_none() && dev {
                continue;
            }
            match load_keys(auth, false, service) {
                Ok(keys) => {
                    authn.set_local_keys(keys.verify.clone());
                    tokens.set_key(keys.signing);
                    tracing::info!(service, "reload: signing and validation keys replaced");
                }
                Err(e) => tracing::error!(service, error = %e, "reload: keeping the previous keys"),
            }
        }
        for (name, files, cert, cert_var, key_var) in [
            (
                "AI Gateway HTTP",
                &c.http.tls,
                &self.http_cert,
                "AIGW_FASTAPI__TLS__CERT_FILE",
                "AIGW_FASTAPI__TLS__KEY_FILE",
            ),
            (
                "Duo Workflow gRPC",
                &c.grpc.tls,
                &self.grpc_cert,
                "DUO_WORKFLOW_TLS__CERT_FILE",
                "DUO_WORKFLOW_TLS__KEY_FILE",
            ),
        ] {
            if let (Some(files), Some(cert)) = (files, cert) {
                match tls::load_certified_key(files, cert_var, key_var) {
                    Ok(k) => {
                        cert.replace(k);
                        tracing::info!(listener = name, "reload: TLS certificate replaced");
                    }
                    Err(e) => {
                        tracing::error!(listener = name, error = %e, "reload: keeping the previous TLS certificate")
                    }
                }
            }
        }
    }
}
