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
        Ok(Self {
            registry,
            request_duration,
            requests,
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
