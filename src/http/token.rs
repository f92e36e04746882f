//! `POST /v1/code/user_access_token`: a short-lived gateway token for IDE
//! direct connections, minted for callers whose GitLab token allows it.

use axum::{Extension, Json, extract::State, http::HeaderMap};
use serde_json::{Value, json};

use super::{HttpState, error::ApiError};
use crate::{auth::Caller, tokens::USER_ACCESS_SCOPES};

pub async fn user_access_token(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let own = state.tokens.service_name();
    let scopes: Vec<&str> = USER_ACCESS_SCOPES
        .iter()
        .copied()
        .filter(|up| caller.can(up, Some(own)))
        .collect();
    if scopes.is_empty() {
        return Err(ApiError::Forbidden(
            "Unauthorized to create user access token",
        ));
    }
    match state.tokens.mint_user_access(&caller, &headers, &scopes) {
        Ok(minted) => Ok(Json(json!({
            "token": minted.token,
            "expires_at": minted.expires_at,
        }))),
        Err(e) => {
            tracing::error!(error = %e, "cannot mint a user access token");
            Err(ApiError::Internal("Failed to generate JWT"))
        }
    }
}
