//! Prometheus metrics: one registry for the AI Gateway (port 8082), one for the
//! Duo Workflow service (port 8083), both with the upstream metric names so
//! existing dashboards keep working. Labels never carry users, tokens or keys.

use prometheus::{CounterVec, Encoder, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

/// Buckets of the upstream `http_request_duration_seconds`.
const HTTP_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Errors here are programming errors (duplicate names), caught by tests.
pub type MetricsResult<T> = Result<T, prometheus::Error>;

fn registry_with_process() -> MetricsResult<Registry> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// The AI Gateway's HTTP metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    pub request_duration: HistogramVec,
    pub requests: CounterVec,
    pub models: ModelMetrics,
}

impl GatewayMetrics {
    pub fn new() -> MetricsResult<Self> {
        let registry = registry_with_process()?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to the first response byte, by route template, method and status class.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["handler", "method", "status"],
        )?;
        let requests = CounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status class.",
            ),
            &["handler", "method", "status"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        let models = ModelMetrics::new(&registry)?;
        Ok(Self {
            registry,
            request_duration,
            requests,
            models,
        })
    }

    /// Records one request. `status` is grouped as `2xx`, `4xx`, ...
    pub fn observe(&self, handler: &str, method: &str, status: u16, seconds: f64) {
        let class = status_class(status);
        self.request_duration
            .with_label_values(&[handler, method, class])
            .observe(seconds);
        self.requests
            .with_label_values(&[handler, method, class])
            .inc();
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Model call metrics (upstream names), labelled by engine, family and endpoint
/// host: never by user, key or prompt.
#[derive(Clone)]
pub struct ModelMetrics {
    pub inferences: CounterVec,
    pub duration: HistogramVec,
    pub input_tokens: CounterVec,
    pub output_tokens: CounterVec,
    pub total_tokens: CounterVec,
    pub in_flight: prometheus::IntGaugeVec,
}

/// Labels of one model call.
#[derive(Clone, Debug)]
pub struct ModelCallLabels {
    pub engine: String,
    pub family: String,
    pub endpoint: String,
    pub feature_category: &'static str,
    pub unit_primitive: &'static str,
    pub streaming: bool,
}

impl ModelMetrics {
    /// Registers the model metrics in `registry`.
    pub fn new(registry: &Registry) -> MetricsResult<Self> {
        let call = [
            "model_engine",
            "model_name",
            "endpoint",
            "error",
            "error_type",
            "streaming",
            "feature_category",
            "unit_primitive",
            "finish_reason",
        ];
        let inferences = CounterVec::new(
            Opts::new("model_inferences_total", "Model calls by outcome."),
            &call,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "inference_request_duration_seconds",
                "Duration of model calls (streams: until the last chunk).",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["model_engine", "model_name", "endpoint", "streaming"],
        )?;
        let tokens = |name: &str, help: &str| {
            CounterVec::new(
                Opts::new(name, help),
                &["model_engine", "model_name", "endpoint"],
            )
        };
        let input_tokens = tokens(
            "inference_input_tokens",
            "Input tokens reported by model servers.",
        )?;
        let output_tokens = tokens(
            "inference_output_tokens",
            "Output tokens reported by model servers.",
        )?;
        let total_tokens = tokens(
            "inference_total_tokens",
            "Input plus output tokens reported by model servers.",
        )?;
        let in_flight = prometheus::IntGaugeVec::new(
            Opts::new("model_inferences_in_flight", "Model calls in progress."),
            &["model_engine", "model_name"],
        )?;
        for c in [&inferences, &input_tokens, &output_tokens, &total_tokens] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            inferences,
            duration,
            input_tokens,
            output_tokens,
            total_tokens,
            in_flight,
        })
    }

    /// Records a finished call. `error_type` is `None` on success.
    pub fn observe(
        &self,
        l: &ModelCallLabels,
        error_type: Option<&str>,
        finish_reason: Option<&str>,
        usage: Option<(u64, u64)>,
        seconds: f64,
    ) {
        let streaming = if l.streaming { "yes" } else { "no" };
        self.inferences
            .with_label_values(&[
                l.engine.as_str(),
                l.family.as_str(),
                l.endpoint.as_str(),
                if error_type.is_some() { "yes" } else { "no" },
                error_type.unwrap_or("none"),
                streaming,
                l.feature_category,
                l.unit_primitive,
                finish_reason.unwrap_or("unknown"),
            ])
            .inc();
        self.duration
            .with_label_values(&[
                l.engine.as_str(),
                l.family.as_str(),
                l.endpoint.as_str(),
                streaming,
            ])
            .observe(seconds);
        if let Some((input, output)) = usage {
            let labels = [l.engine.as_str(), l.family.as_str(), l.endpoint.as_str()];
            self.input_tokens
                .with_label_values(&labels)
                .inc_by(input as f64);
            self.output_tokens
                .with_label_values(&labels)
                .inc_by(output as f64);
            self.total_tokens
                .with_label_values(&labels)
                .inc_by((input + output) as f64);
        }
    }
}

/// Request labels shared by the workflow metrics (`+META` upstream).
#[derive(Clone, Debug)]
pub struct CallMeta {
    pub lsp_version: String,
    pub gitlab_version: String,
    pub client_type: String,
    pub gitlab_realm: String,
    pub is_gitlab_team_member: String,
}

impl CallMeta {
    pub fn from_headers(h: &http::HeaderMap) -> Self {
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 64)
                .unwrap_or("unknown")
                .to_string()
        };
        let team = match h
            .get("x-gitlab-is-team-member")
            .and_then(|v| v.to_str().ok())
        {
            Some(v) if v.eq_ignore_ascii_case("true") => "yes",
            Some(_) => "no",
            None => "unknown",
        };
        Self {
            lsp_version: get("x-gitlab-language-server-version"),
            gitlab_version: get("x-gitlab-version"),
            client_type: get("x-gitlab-client-type"),
            gitlab_realm: get("x-gitlab-realm"),
            is_gitlab_team_member: team.to_string(),
        }
    }
}

/// The Duo Workflow service's gRPC metrics.
#[derive(Clone)]
pub struct WorkflowMetrics {
    pub registry: Registry,
    pub handled: CounterVec,
    pub handling_seconds: HistogramVec,
}

impl WorkflowMetrics {
    pub fn new() -> MetricsResult<Self> {
        let registry = registry_with_process()?;
        let handled = CounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Completed RPCs by method and status code.",
            ),
            &[
                "grpc_type",
                "grpc_service",
                "grpc_method",
                "grpc_code",
                "flow_type",
                "lsp_version",
                "gitlab_version",
                "client_type",
                "gitlab_realm",
                "is_gitlab_team_member",
            ],
        )?;
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time until the RPC's response headers (streams: until the response stream ends).",
            ),
            &["grpc_type", "grpc_service", "grpc_method"],
        )?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling_seconds.clone()))?;
        Ok(Self {
            registry,
            handled,
            handling_seconds,
        })
    }

    /// Records one finished RPC.
    pub fn observe(
        &self,
        grpc_type: &str,
        service: &str,
        method: &str,
        code: tonic::Code,
        meta: &CallMeta,
        seconds: f64,
    ) {
        self.handled
            .with_label_values(&[
                grpc_type,
                service,
                method,
                code_name(code),
                "unknown",
                &meta.lsp_version,
                &meta.gitlab_version,
                &meta.client_type,
                &meta.gitlab_realm,
                &meta.is_gitlab_team_member,
            ])
            .inc();
        self.handling_seconds
            .with_label_values(&[grpc_type, service, method])
            .observe(seconds);
    }
}

/// The OIDC key fetches of every issuer (ours; upstream has none), labelled by
/// the issuer's configured URL: the label set is the configured issuers, fixed
/// at startup. Registered in both registries, since both services read the keys.
#[derive(Clone)]
pub struct OidcMetrics {
    pub keys: prometheus::IntGaugeVec,
    pub fetches: prometheus::IntCounterVec,
}

impl OidcMetrics {
    pub fn new() -> MetricsResult<Self> {
        Ok(Self {
            keys: prometheus::IntGaugeVec::new(
                Opts::new(
                    "aigw_oidc_signing_keys",
                    "OIDC signing keys cached per issuer (0: none fetched yet).",
                ),
                &["issuer"],
            )?,
            fetches: prometheus::IntCounterVec::new(
                Opts::new(
                    "aigw_oidc_key_fetches_total",
                    "OIDC discovery + JWKS fetches per issuer and outcome (ok, error).",
                ),
                &["issuer", "outcome"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> MetricsResult<()> {
        registry.register(Box::new(self.keys.clone()))?;
        registry.register(Box::new(self.fetches.clone()))
    }

    /// Creates the series of one configured issuer, at zero.
    pub fn touch(&self, issuer: &str) {
        self.keys.with_label_values(&[issuer]).set(0);
        for outcome in ["ok", "error"] {
            self.fetches.with_label_values(&[issuer, outcome]);
        }
    }

    /// Records one fetch of a configured issuer and the keys it now has.
    pub fn record(&self, issuer: &str, ok: bool, keys: usize) {
        let outcome = if ok { "ok" } else { "error" };
        self.fetches.with_label_values(&[issuer, outcome]).inc();
        self.keys
            .with_label_values(&[issuer])
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }
}

/// Upstream (grpcio) spells status codes in upper snake case.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Text exposition of a registry.
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_build_and_render_upstream_names() {
        let g = GatewayMetrics::new().unwrap();
        g.observe("/monitoring/healthz", "GET", 200, 0.001);
        assert!(
            render(&g.registry)
                .unwrap()
                .contains("http_request_duration_seconds_bucket")
        );
        let w = WorkflowMetrics::new().unwrap();
        let meta = CallMeta::from_headers(&http::HeaderMap::new());
        w.observe(
            "UNARY",
            "DuoWorkflow",
            "GenerateToken",
            tonic::Code::Ok,
            &meta,
            0.001,
        );
        let text = render(&w.registry).unwrap();
        assert!(text.contains("grpc_server_handled_total"), "{text}");
        assert!(text.contains("grpc_code=\"OK\""), "{text}");
    }
}
