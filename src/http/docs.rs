//! Interactive API docs (`AIGW_FASTAPI__DOCS_URL`) and the OpenAPI document
//! (`AIGW_FASTAPI__OPENAPI_URL`). The page is Swagger UI whose script and
//! stylesheet are compiled into the binary (extracted by build.rs), so it
//! works on an air-gapped host. Both are off by default; when an administrator
//! turns them on they are served without a token so a browser can open them
//! (upstream requires a token, which makes the page unusable from a browser).

use axum::{
    Json, Router,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};
use serde_json::Value;

use super::{DocsSettings, HttpState};

/// Our OpenAPI document, kept next to the routes it describes.
const OPENAPI: &str = include_str!("openapi.json");
const BUNDLE_JS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/swagger-ui-bundle.js"));
const CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/swagger-ui.css"));
const FAVICON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/favicon-32x32.png"));

pub fn openapi_document() -> Result<Value, String> {
    serde_json::from_str(OPENAPI).map_err(|e| format!("embedded OpenAPI document is invalid: {e}"))
}

/// The page itself: loads the embedded assets relative to the docs path.
fn page(base: &str, spec_url: &str) -> String {
    let spec = serde_json::to_string(spec_url).unwrap_or_else(|_| "\"/openapi.json\"".into());
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aigw API</title>
<link rel="icon" type="image/png" href="{base}/assets/favicon-32x32.png">
<link rel="stylesheet" href="{base}/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{base}/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{ url: {spec}, dom_id: "#swagger-ui", deepLinking: true }});
</script>
</body>
</html>
"##
    )
}

fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
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
    router = router.route(&spec_url, get(move || async move { Json(doc) }));
    public.push(spec_url.clone());
    if let Some(docs_url) = &settings.docs_url {
        let base = docs_url.trim_end_matches('/').to_string();
        let html = page(&base, &spec_url);
        let index = get(move || async move { Html(html) });
        let assets = [
            (
                "swagger-ui-bundle.js",
                "text/javascript; charset=utf-8",
                BUNDLE_JS,
            ),
            ("swagger-ui.css", "text/css; charset=utf-8", CSS),
            ("favicon-32x32.png", "image/png", FAVICON),
        ];
        router = router
            .route(&base, index.clone())
            .route(&format!("{base}/"), index);
        public.push(base.clone());
        public.push(format!("{base}/"));
        for (name, ct, body) in assets {
            let path = format!("{base}/assets/{name}");
            let resp = asset(ct, body);
            router = router.route(&path, get(move || async move { resp }));
            public.push(path);
        }
    }
    Ok(router)
}
