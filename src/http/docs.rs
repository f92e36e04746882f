//! Interactive API docs (`AIGW_FASTAPI__DOCS_URL`) and the OpenAPI document
//! (`AIGW_FASTAPI__OPENAPI_URL`). The Swagger UI assets are compiled into the
//! binary, so the page works on an air-gapped host. Both are off by default;
//! when an administrator turns them on they are served without a token so a
//! browser can open them (upstream requires a token, which makes the page
//! unusable from a browser).

use axum::{Json, Router, routing::get};
use serde_json::Value;
use utoipa_swagger_ui::SwaggerUi;

use super::{DocsSettings, HttpState};

/// Our OpenAPI document, kept next to the routes it describes.
const OPENAPI: &str = include_str!("openapi.json");

pub fn openapi_document() -> Result<Value, String> {
    serde_json::from_str(OPENAPI).map_err(|e| format!("embedded OpenAPI document is invalid: {e}"))
}

/// The docs routes for `settings`; public paths are appended to `public`.
pub fn router(
    settings: &DocsSettings,
    public: &mut Vec<String>,
) -> Result<Router<HttpState>, String> {
    let mut router = Router::new();
    if settings.docs_url.is_none() && settings.openapi_url.is_none() {
        return Ok(router);
    }
    let doc = openapi_document()?;
    let spec_url = settings
        .openapi_url
        .clone()
        .unwrap_or_else(|| "/openapi.json".to_string());
    if let Some(docs_url) = &settings.docs_url {
        let ui: Router<HttpState> = SwaggerUi::new(docs_url.clone())
            .external_url_unchecked(spec_url.clone(), doc)
            .into();
        router = router.merge(ui);
        let base = docs_url.trim_end_matches('/');
        public.push(base.to_string());
        public.push(format!("{base}/"));
        public.push(spec_url);
    } else {
        router = router.route(&spec_url, get(move || async move { Json(doc) }));
        public.push(spec_url);
    }
    Ok(router)
}
