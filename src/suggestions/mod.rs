//! Code Suggestions for self-hosted models: completions (fill-in-the-middle)
//! and generations (`generation`).
//! Builds prompts from the editor's state, calls the model through the model
//! service, and normalises what comes back. Knows nothing about HTTP.

pub mod completion;
pub mod generation;
pub mod language;

use futures_util::{Stream, StreamExt};

pub use completion::CompletionInput;

use crate::models::{
    Completion, ModelError, ModelTarget, StreamEvent,
    service::{Feature, ModelService},
};

pub const COMPLETIONS: Feature = Feature {
    category: "code_suggestions",
    unit_primitive: "complete_code",
};

/// A non-streamed completion; `None` when the language is unknown (no model call).
pub async fn complete(
    models: &ModelService,
    target: &ModelTarget,
    input: &CompletionInput,
) -> Result<Option<Completion>, ModelError> {
    let Some(request) = completion::build(target.family, input, models.suggestions_timeout())
    else {
        return Ok(None);
    };
    let mut c = models.chat(target, &request, COMPLETIONS).await?;
    c.text = completion::normalise(target.family, &c.text);
    Ok(Some(c))
}

/// A streamed completion as text deltas; empty when the language is unknown.
pub async fn complete_stream(
    models: &ModelService,
    target: &ModelTarget,
    input: &CompletionInput,
) -> Result<impl Stream<Item = Result<String, ModelError>> + Send + use<>, ModelError> {
    let family = target.family;
    let events = match completion::build(family, input, models.suggestions_timeout()) {
        None => None,
        Some(request) => Some(models.chat_stream(target, &request, COMPLETIONS).await?),
    };
    let events = futures_util::stream::iter(events).flatten();
    Ok(events.filter_map(move |e| async move {
        match e {
            Ok(StreamEvent::Text(t)) => Some(Ok(completion::normalise(family, &t))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }))
}
