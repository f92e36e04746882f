//! `GET /v1/models/definitions` (no authentication): the model catalogue in
//! upstream's shape, built from `models::catalog`. Only self-hosted families
//! exist here (no provider, so their names are bare), and every feature
//! setting offers the families that fit it. The catalogue is static, so the
//! body is rendered once.

use std::sync::OnceLock;

use axum::{
    body::Bytes,
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::models::catalog::{FAMILIES, FEATURE_SETTINGS};

fn catalogue() -> Value {
    let models: Vec<Value> = FAMILIES
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "identifier": f.id,
                "provider": null,
                "deprecation": null,
                "description": null,
                "cost_indicator": null,
            })
        })
        .collect();
    let unit_primitives: Vec<Value> = FEATURE_SETTINGS
        .iter()
        .map(|fs| {
            let selectable: Vec<&str> = fs.selectable().map(|f| f.id).collect();
            json!({
                "feature_setting": fs.name,
                "default_model": fs.default_family,
                "default_models": [fs.default_family],
                "models_for_tags": {},
                "models_for_size_preference": {},
                "selectable_models": selectable,
                "beta_models": [],
                "deprecated_models": [],
                "dev": null,
                "unit_primitives": fs.unit_primitives,
            })
        })
        .collect();
    json!({ "models": models, "unit_primitives": unit_primitives })
}

pub async fn model_definitions() -> Response {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    let body = BODY
        .get_or_init(|| Bytes::from(catalogue().to_string()))
        .clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_model_is_in_the_catalogue() {
        let c = catalogue();
        let ids: Vec<&str> = c["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["identifier"].as_str().unwrap())
            .collect();
        for fs in c["unit_primitives"].as_array().unwrap() {
            assert!(ids.contains(&fs["default_model"].as_str().unwrap()));
            for m in fs["selectable_models"].as_array().unwrap() {
                assert!(ids.contains(&m.as_str().unwrap()), "{m}");
            }
        }
    }
}
