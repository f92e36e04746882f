//! `POST /v1/search/gitlab-docs`: documentation search for Duo Chat's
//! documentation tool, answered from the local index (`docs_search`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{HttpState, error::ApiError, parse_json};
use crate::auth::Caller;

const MAX_QUERY_CHARS: usize = 400_000;

#[derive(Deserialize)]
struct SearchMetadata {
    source: String,
    version: String,
}

#[derive(Deserialize)]
struct SearchPayload {
    query: String,
    #[serde(default = "default_page_size", deserialize_with = "super::lax::int")]
    page_size: i64,
}

fn default_page_size() -> i64 {
    4
}

#[derive(Deserialize)]
pub struct SearchRequest {
    #[serde(rename = "type")]
    kind: String,
    metadata: SearchMetadata,
    payload: SearchPayload,
}

impl SearchRequest {
    fn validate(&self) -> Result<u32, ApiError> {
        for (field, value) in [
            ("type", &self.kind),
            ("metadata.source", &self.metadata.source),
            ("metadata.version", &self.metadata.version),
        ] {
            if value.chars().count() > 100 {
                return Err(ApiError::Validation(format!(
                    "{field}: must have at most 100 characters"
                )));
            }
        }
        if self.payload.query.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::Validation(format!(
                "payload.query: must have at most {MAX_QUERY_CHARS} characters"
            )));
        }
        match u32::try_from(self.payload.page_size) {
            Ok(n @ 1..=20) => Ok(n),
            _ => Err(ApiError::Validation(
                "payload.page_size: must be between 1 and 20".into(),
            )),
        }
    }
}

pub async fn gitlab_docs(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    if !caller.can("documentation_search", None) {
        return Err(ApiError::Forbidden("Unauthorized to search documentations"));
    }
    let req: SearchRequest = parse_json(body)?;
    let page_size = req.validate()?;
    let results = state.docs.search(&req.payload.query, page_size).await?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| json!({"id": r.id, "content": r.content, "metadata": r.metadata}))
        .collect();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Json(json!({
        "response": {"results": results},
        "metadata": {"provider": "sqlite", "timestamp": timestamp},
    })))
}
