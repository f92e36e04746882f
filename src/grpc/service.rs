//! The `DuoWorkflow` service: the unary RPCs GitLab Rails calls, and the entry
//! of `ExecuteWorkflow`, whose agent flow arrives in a later release.
//!
//! Authentication already happened in the gate; handlers read the
//! [`Caller`] from the request extensions and decide permissions.

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use serde_json::Value;
use tonic::{Request, Response, Status, Streaming};

use super::{
    error::WorkflowError,
    proto::{
        Action, Capability, ClientEvent, GenerateTokenRequest, GenerateTokenResponse,
        ListCapabilitiesRequest, ListCapabilitiesResponse, ListFlowsRequest, ListFlowsResponse,
        ListToolsRequest, ListToolsResponse, TrackSelfHostedAction, TrackSelfHostedClientEvent,
        ValidateFlowConfigRequest, ValidateFlowConfigResponse, client_event,
        duo_workflow_server::DuoWorkflow,
    },
    structs::struct_to_json,
};
use crate::{auth::Caller, tokens::TokenAuthority};

/// Capabilities this server advertises (ListCapabilities, GenerateToken).
pub const SERVER_CAPABILITIES: &[&str] = &[
    "tool_call_approval",
    "tool_call_pattern_approval",
    "flow_semantic_versioning",
];

/// Flow config schema versions we know.
const FLOW_SCHEMA_VERSIONS: &[&str] = &["v1", "experimental"];

pub struct WorkflowService {
    pub tokens: Arc<TokenAuthority>,
}

type ActionStream = Pin<Box<dyn Stream<Item = Result<Action, Status>> + Send>>;
type TrackStream = Pin<Box<dyn Stream<Item = Result<TrackSelfHostedAction, Status>> + Send>>;

fn caller<T>(req: &Request<T>) -> Result<Caller, WorkflowError> {
    // The gate inserts a caller for every non-public method; its absence is a
    // wiring bug, reported as such rather than served anonymously.
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(WorkflowError::Internal(
            "request reached a handler without authentication",
        ))
}

/// Older definitions that were renamed to their `/v1` form.
fn normalise_definition(def: &str) -> &str {
    match def {
        "duo_planner/experimental" => "duo_planner/v1",
        "security_analyst_agent/experimental" => "security_analyst_agent/v1",
        other => other,
    }
}

/// May this caller run (or get a token for) `definition`?
fn can_execute(caller: &Caller, definition: &str) -> bool {
    if definition == "chat" {
        caller.can("duo_chat", None)
    } else {
        caller.can("duo_agent_platform", None) || caller.can("duo_workflow_execute_workflow", None)
    }
}

/// Structural checks of an inline flow config; returns the problems found.
pub fn validate_flow_config(config: Option<&Value>) -> Vec<String> {
    let Some(config) = config else {
        return vec!["Missing required field: flow_config".to_string()];
    };
    let Some(obj) = config.as_object() else {
        return vec!["flow_config must be an object".to_string()];
    };
    let mut errors = Vec::new();
    match obj.get("version").and_then(Value::as_str) {
        None => errors.push("Missing required field: version".to_string()),
        Some(v) if !FLOW_SCHEMA_VERSIONS.contains(&v) => errors.push(format!(
            "Unsupported flow config version '{v}' (expected one of: {})",
            FLOW_SCHEMA_VERSIONS.join(", ")
        )),
        Some(_) => {}
    }
    match obj.get("environment").and_then(Value::as_str) {
        None => errors.push("Missing required field: environment".to_string()),
        Some("") => errors.push("Field environment must not be empty".to_string()),
        Some(_) => {}
    }
    match obj.get("components").and_then(Value::as_array) {
        None => errors.push("Missing required field: components".to_string()),
        Some(c) if c.is_empty() => errors.push("Field components must not be empty".to_string()),
        Some(components) => {
            for (i, c) in components.iter().enumerate() {
                for field in ["name", "type"] {
                    if c.get(field)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        errors.push(format!("components[{i}]: missing required field: {field}"));
                    }
                }
            }
        }
    }
    errors
}

#[tonic::async_trait]
impl DuoWorkflow for WorkflowService {
    type ExecuteWorkflowStream = ActionStream;
    type TrackSelfHostedExecuteWorkflowStream = TrackStream;

    async fn execute_workflow(
        &self,
        request: Request<Streaming<ClientEvent>>,
    ) -> Result<Response<Self::ExecuteWorkflowStream>, Status> {
        let caller = caller(&request)?;
        let mut events = request.into_inner();
        let first = events.message().await?;
        let Some(ClientEvent {
            response: Some(client_event::Response::StartRequest(start)),
        }) = first
        else {
            // Nothing to run: a session must open with a start request.
            return Ok(Response::new(Box::pin(tokio_stream_empty())));
        };
        if start.workflow_id.is_empty() {
            return Ok(Response::new(Box::pin(tokio_stream_empty())));
        }
        #[allow(deprecated)]
        let definition = normalise_definition(&start.workflow_definition).to_string();
        if !can_execute(&caller, &definition) {
            let what = if definition.is_empty() {
                "workflow"
            } else {
                definition.as_str()
            };
            return Err(
                WorkflowError::PermissionDenied(format!("Unauthorized to execute {what}")).into(),
            );
        }
        Err(
            WorkflowError::Unimplemented("agent flows are not available in this aigw release")
                .into(),
        )
    }

    async fn generate_token(
        &self,
        request: Request<GenerateTokenRequest>,
    ) -> Result<Response<GenerateTokenResponse>, Status> {
        let caller = caller(&request)?;
        let definition = request
            .get_ref()
            .workflow_definition
            .as_deref()
            .map(normalise_definition)
            .unwrap_or("");
        if caller.issued_by(self.tokens.service_name()) || !can_execute(&caller, definition) {
            return Err(
                WorkflowError::PermissionDenied("Unauthorized to generate token".into()).into(),
            );
        }
        match self
            .tokens
            .mint_workflow(&caller, &request.metadata().clone().into_headers())
        {
            Ok(minted) => Ok(Response::new(GenerateTokenResponse {
                token: minted.token,
                expires_at: i64::try_from(minted.expires_at).unwrap_or(i64::MAX),
                server_capabilities: SERVER_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            })),
            Err(e) => {
                tracing::error!(error = %e, "cannot mint a Duo Workflow token");
                Err(WorkflowError::Internal("Failed to generate token").into())
            }
        }
    }

    async fn list_capabilities(
        &self,
        _request: Request<ListCapabilitiesRequest>,
    ) -> Result<Response<ListCapabilitiesResponse>, Status> {
        Ok(Response::new(ListCapabilitiesResponse {
            capabilities: SERVER_CAPABILITIES
                .iter()
                .map(|name| Capability {
                    name: name.to_string(),
                    metadata: String::new(),
                })
                .collect(),
        }))
    }

    async fn list_tools(
        &self,
        _request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        // The tool registry arrives with the agent flows; an empty list is
        // what GitLab accepts from a service without tools.
        Ok(Response::new(ListToolsResponse::default()))
    }

    async fn list_flows(
        &self,
        _request: Request<ListFlowsRequest>,
    ) -> Result<Response<ListFlowsResponse>, Status> {
        Ok(Response::new(ListFlowsResponse::default()))
    }

    async fn track_self_hosted_execute_workflow(
        &self,
        request: Request<Streaming<TrackSelfHostedClientEvent>>,
    ) -> Result<Response<Self::TrackSelfHostedExecuteWorkflowStream>, Status> {
        let caller = caller(&request)?;
        if caller.issued_by(self.tokens.service_name()) || !caller.can("duo_agent_platform", None) {
            return Err(WorkflowError::PermissionDenied(
                "Unauthorized to track self-hosted workflow execution".into(),
            )
            .into());
        }
        Err(WorkflowError::Unimplemented(
            "self-hosted billing events are for GitLab's cloud service, not for an offline install",
        )
        .into())
    }

    async fn validate_flow_config(
        &self,
        request: Request<ValidateFlowConfigRequest>,
    ) -> Result<Response<ValidateFlowConfigResponse>, Status> {
        let config = request.get_ref().flow_config.as_ref().map(struct_to_json);
        let errors = validate_flow_config(config.as_ref());
        Ok(Response::new(ValidateFlowConfigResponse {
            valid: errors.is_empty(),
            errors,
        }))
    }
}

fn tokio_stream_empty() -> impl Stream<Item = Result<Action, Status>> + Send {
    futures_util::stream::empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_config_validation() {
        assert_eq!(
            validate_flow_config(None),
            vec!["Missing required field: flow_config"]
        );
        let ok = json!({"version": "v1", "environment": "ambient",
            "components": [{"name": "a", "type": "AgentComponent"}]});
        assert!(validate_flow_config(Some(&ok)).is_empty());
        let bad = json!({"version": "v9", "components": [{}]});
        let errors = validate_flow_config(Some(&bad));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
