//! The tower layer in front of every gRPC method: authentication, then the
//! per-RPC metric once the final status is known (from the trailers).
//!
//! Health checks (and reflection, when enabled) pass without a token, as
//! upstream. Everything else needs a valid token; a failure ends the call with
//! `UNAUTHENTICATED` and the exact upstream message, before any handler runs.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::{
    auth::Authenticator,
    metrics::{CallMeta, WorkflowMetrics},
};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type Response = http::Response<tonic::body::Body>;

#[derive(Clone)]
pub struct GateLayer {
    pub auth: Arc<Authenticator>,
    pub metrics: WorkflowMetrics,
    pub reflection_public: bool,
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

/// Streaming kind of each DuoWorkflow method, as the metric labels spell it.
fn grpc_type(method: &str) -> &'static str {
    match method {
        "ExecuteWorkflow" | "TrackSelfHostedExecuteWorkflow" => "BIDI_STREAM",
        _ => "UNARY",
    }
}

fn parse_code(v: &http::HeaderValue) -> Code {
    v.to_str()
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Unknown)
}

/// tonic refuses a message over the size limit with `OUT_OF_RANGE`; gRPC
/// core (upstream, Workhorse, Rails) uses `RESOURCE_EXHAUSTED`. Rewrites the
/// status in `headers` (trailers, or the headers of a trailers-only response)
/// and returns the final code.
fn upstream_status(headers: &mut http::HeaderMap) -> Option<Code> {
    let code = parse_code(headers.get("grpc-status")?);
    // The message travels percent-encoded; let tonic decode it.
    let too_large = code == Code::OutOfRange
        && Status::from_header_map(headers)
            .is_some_and(|s| s.message().contains("message length too large"));
    if !too_large {
        return Some(code);
    }
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(Code::ResourceExhausted as i32),
    );
    Some(Code::ResourceExhausted)
}

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let public = path.starts_with("/grpc.health.v1.Health/")
                || (layer.reflection_public && path.starts_with("/grpc.reflection."));
            if public {
                return inner.call(req).await;
            }
            let start = Instant::now();
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .map(|(s, m)| (s.to_string(), m.to_string()))
                .unwrap_or_else(|| (path.clone(), String::new()));
            let kind = grpc_type(&method);
            let meta = CallMeta::from_headers(req.headers());
            let record = {
                let metrics = layer.metrics.clone();
                move |code: Code| {
                    metrics.observe(
                        kind,
                        &service,
                        &method,
                        code,
                        &meta,
                        start.elapsed().as_secs_f64(),
                    );
                }
            };
            match layer.auth.authenticate(req.headers()).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(e) => {
                    tracing::info!(path = %path, reason = %e, "gRPC call not authenticated");
                    record(Code::Unauthenticated);
                    return Ok(Status::unauthenticated(e.to_string()).into_http());
                }
            }
            let mut resp = inner.call(req).await?;
            // A trailers-only response carries the status in its headers.
            if let Some(code) = upstream_status(resp.headers_mut()) {
                record(code);
                return Ok(resp);
            }
            Ok(resp.map(|body| {
                tonic::body::Body::new(ObservedBody {
                    inner: body,
                    on_end: Some(Box::new(record)),
                })
            }))
        })
    }
}

/// Passes a response body through and reports the `grpc-status` of its trailers.
struct ObservedBody {
    inner: tonic::body::Body,
    on_end: Option<Box<dyn FnOnce(Code) + Send>>,
}

impl ObservedBody {
    fn finish(&mut self, code: Code) {
        if let Some(f) = self.on_end.take() {
            f(code);
        }
    }
}

impl Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_mut().and_then(upstream_status) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Code::Internal),
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away before the status was sent.
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        Status::new(code, message).add_header(&mut h).unwrap();
        h
    }

    #[test]
    fn oversized_messages_report_resource_exhausted() {
        let mut h = status(
            Code::OutOfRange,
            "Error, decoded message length too large: found 5242923 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(upstream_status(&mut h), Some(Code::ResourceExhausted));
        assert_eq!(parse_code(&h["grpc-status"]), Code::ResourceExhausted);

        let mut h = status(Code::OutOfRange, "something else");
        assert_eq!(upstream_status(&mut h), Some(Code::OutOfRange));
        assert_eq!(upstream_status(&mut http::HeaderMap::new()), None);
    }
}
