//! Azure OpenAI (`azure/<deployment>`): the OpenAI wire format of
//! [`super::openai`] at the deployment URL,
//! `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`,
//! with the key in an `api-key` header instead of a bearer token.
//!
//! The endpoint is the resource's (`https://<resource>.openai.azure.com`,
//! from the request or `AZURE_API_BASE`); one that already names a
//! deployment (`.../openai/deployments/<name>`) is used as it is. The
//! `api-version` is `AZURE_API_VERSION`, by default the latest GA version.

use url::Url;

use super::{
    ModelError, client,
    target::{ModelTarget, Platform},
};

/// The URL of `path` (`chat/completions`, `completions`) for `target`.
pub fn url(target: &ModelTarget, path: &str) -> Url {
    let mut url = target.api_base.clone();
    let base = url.path().trim_end_matches('/').to_string();
    if base.contains("/openai/deployments/") {
        url.set_path(&format!("{base}/{path}"));
    } else {
        let base = base.strip_suffix("/openai").unwrap_or(&base).to_string();
        url.set_path(&base);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(["openai", "deployments", target.model.as_str()]);
            segments.extend(path.split('/'));
        }
    }
    if let Platform::Azure { api_version } = &target.platform {
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", api_version);
    }
    url
}

/// Adds the key header.
pub fn authorize(
    request: reqwest::RequestBuilder,
    target: &ModelTarget,
) -> reqwest::RequestBuilder {
    request.header("api-key", target.api_key.expose())
}

/// Azure's own failures in words an administrator acts on.
pub fn explain(e: ModelError, target: &ModelTarget) -> ModelError {
    let deployment = &target.model;
    let e = client::reword(e, &[401, 403], |m| {
        format!(
            "Azure OpenAI refused the key for deployment '{deployment}' (request api_key, else AZURE_API_KEY): {m}"
        )
    });
    client::reword(e, &[404], |m| {
        format!(
            "no Azure OpenAI deployment '{deployment}' at this endpoint (or api-version unsupported): {m}"
        )
    })
}
