//! What features call: resolve a request's model, call it through the
//! provider, and account for every call in the metrics (including streams,
//! which are accounted when they end or are dropped by a departing client).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::{Stream, StreamExt, stream};

use super::{
    ChatRequest, Completion, EventStream, ModelError, ModelProvider, StreamEvent,
    target::{self, ModelMetadata, ModelTarget, TargetError},
};
use crate::metrics::{ModelCallLabels, ModelMetrics};

/// The feature a call is made for (metric labels).
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub category: &'static str,
    pub unit_primitive: &'static str,
}

pub struct ModelService {
    provider: Arc<dyn ModelProvider>,
    metrics: ModelMetrics,
    settings: ModelSettings,
}

/// The knobs of `config::ModelsConfig` this service applies.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    pub custom_models_enabled: bool,
    /// Cloud platforms' regions, locations, endpoints and fallback keys.
    pub cloud: crate::config::CloudConfig,
    pub disable_streaming: bool,
    pub suggestions_timeout: Duration,
    /// How long after its first attempt a retried call may still start
    /// another (`AIGW_PROMPTS__RETRY_DEADLINE`).
    pub retry_deadline: Duration,
}

impl ModelService {
    pub fn new(
        provider: Arc<dyn ModelProvider>,
        metrics: ModelMetrics,
        settings: ModelSettings,
    ) -> Self {
        Self {
            provider,
            metrics,
            settings,
        }
    }

    /// Bound on a code suggestion's model call.
    pub fn suggestions_timeout(&self) -> Duration {
        self.settings.suggestions_timeout
    }

    /// Resolves the request's model fields under the custom-models gate.
    pub fn resolve(&self, meta: &ModelMetadata) -> Result<ModelTarget, TargetError> {
        target::resolve(
            meta,
            target::ResolveSettings {
                custom_models_enabled: self.settings.custom_models_enabled,
                cloud: &self.settings.cloud,
            },
        )
    }

    fn labels(target: &ModelTarget, feature: Feature, streaming: bool) -> ModelCallLabels {
        ModelCallLabels {
            engine: target.engine.clone(),
            family: target.family.id.to_string(),
            endpoint: target.endpoint_host(),
            feature_category: feature.category,
            unit_primitive: feature.unit_primitive,
            streaming,
        }
    }

    /// [`chat`](Self::chat), tried again after each of `waits` while the
    /// failure is transient ([`ModelError::is_transient`]), within the retry
    /// deadline: no attempt starts once the next wait would end past it, and
    /// a retry's timeout is cut to what is left of it, so the caller (Rails
    /// waits `ai_gateway_timeout_seconds`) gets the failure before it gives
    /// up. A connection failure arrives here after the provider's own quick
    /// connect retries; these waits are the slower, per-call policy on top.
    /// Every attempt is measured on its own.
    pub async fn chat_retrying(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
        feature: Feature,
        waits: &[Duration],
    ) -> Result<Completion, ModelError> {
        let deadline = Instant::now() + self.settings.retry_deadline;
        let mut waits = waits.iter();
        let mut retry: Option<ChatRequest> = None;
        loop {
            match self
                .chat(target, retry.as_ref().unwrap_or(request), feature)
                .await
            {
                Err(e) if e.is_transient() => {
                    let Some(wait) = waits.next() else {
                        return Err(e);
                    };
                    if Instant::now() + *wait >= deadline {
                        tracing::info!(error = %e, wait_s = wait.as_secs_f64(), "transient model failure, not retried: the next attempt would start after the retry deadline (AIGW_PROMPTS__RETRY_DEADLINE)");
                        return Err(e);
                    }
                    tracing::info!(error = %e, wait_s = wait.as_secs_f64(), "transient model failure, retrying");
                    tokio::time::sleep(*wait).await;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let next = retry.get_or_insert_with(|| request.clone());
                    next.timeout = request.timeout.min(left);
                }
                other => return other,
            }
        }
    }

    /// One non-streamed chat call.
    pub async fn chat(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
        feature: Feature,
    ) -> Result<Completion, ModelError> {
        let labels = Self::labels(target, feature, false);
        let gauge = self
            .metrics
            .in_flight
            .with_label_values(&[labels.engine.as_str(), labels.family.as_str()]);
        gauge.inc();
        let start = Instant::now();
        let result = self.provider.chat(target, request).await;
        gauge.dec();
        let secs = start.elapsed().as_secs_f64();
        match &result {
            Ok(c) => self.metrics.observe(
                &labels,
                None,
                c.finish_reason.as_deref(),
                c.usage.map(|u| (u.input_tokens, u.output_tokens)),
                secs,
            ),
            Err(e) => self
                .metrics
                .observe(&labels, Some(e.kind()), None, None, secs),
        }
        result
    }

    /// A streamed chat call. With `AIGW_CUSTOM_MODELS__DISABLE_STREAMING` the
    /// model is called once, unstreamed, and the answer arrives as one chunk.
    pub async fn chat_stream(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
        feature: Feature,
    ) -> Result<EventStream, ModelError> {
        if self.settings.disable_streaming {
            let c = self.chat(target, request, feature).await?;
            let mut events: Vec<Result<StreamEvent, ModelError>> =
                vec![Ok(StreamEvent::Text(c.text))];
            events.extend(
                c.tool_calls
                    .into_iter()
                    .map(|t| Ok(StreamEvent::ToolCall(t))),
            );
            events.push(Ok(StreamEvent::Done {
                finish_reason: c.finish_reason,
                usage: c.usage,
            }));
            return Ok(Box::pin(stream::iter(events)));
        }
        let labels = Self::labels(target, feature, true);
        let gauge = self
            .metrics
            .in_flight
            .with_label_values(&[labels.engine.as_str(), labels.family.as_str()]);
        gauge.inc();
        let start = Instant::now();
        let mut accounted = match self.provider.chat_stream(target, request).await {
            Ok(inner) => Accounted {
                inner,
                metrics: self.metrics.clone(),
                labels,
                gauge,
                start,
                outcome: None,
            },
            Err(e) => {
                gauge.dec();
                self.metrics.observe(
                    &labels,
                    Some(e.kind()),
                    None,
                    None,
                    start.elapsed().as_secs_f64(),
                );
                return Err(e);
            }
        };
        // Wait for the first event: a stream that fails before producing
        // anything becomes an error status for the client, not a cut body.
        match accounted.next().await {
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(stream::iter([Ok(first)]).chain(accounted))),
            None => Ok(Box::pin(accounted)),
        }
    }
}

/// How a stream ended, for its metric.
enum Outcome {
    Done {
        finish_reason: Option<String>,
        usage: Option<(u64, u64)>,
    },
    Failed(&'static str),
}

/// A stream that records its metric when it ends, fails, or is dropped.
struct Accounted {
    inner: EventStream,
    metrics: ModelMetrics,
    labels: ModelCallLabels,
    gauge: prometheus::IntGauge,
    start: Instant,
    outcome: Option<Outcome>,
}

impl Stream for Accounted {
    type Item = Result<StreamEvent, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(StreamEvent::Done {
                finish_reason,
                usage,
            }))) => {
                self.outcome = Some(Outcome::Done {
                    finish_reason: finish_reason.clone(),
                    usage: usage.map(|u| (u.input_tokens, u.output_tokens)),
                });
            }
            Poll::Ready(Some(Err(e))) => self.outcome = Some(Outcome::Failed(e.kind())),
            _ => {}
        }
        polled
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        self.gauge.dec();
        let secs = self.start.elapsed().as_secs_f64();
        match self.outcome.take() {
            Some(Outcome::Done {
                finish_reason,
                usage,
            }) => self
                .metrics
                .observe(&self.labels, None, finish_reason.as_deref(), usage, secs),
            Some(Outcome::Failed(kind)) => {
                self.metrics
                    .observe(&self.labels, Some(kind), None, None, secs)
            }
            // The client went away first: the upstream request is cancelled with us.
            None => self
                .metrics
                .observe(&self.labels, Some("cancelled"), None, None, secs),
        }
    }
}
