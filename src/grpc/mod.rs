//! The Duo Workflow gRPC service (tonic): generated types, the `DuoWorkflow`
//! implementation, health, optional reflection, and the authentication gate.

mod error;
mod gate;
mod service;
pub mod structs;

use std::sync::Arc;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

pub use error::WorkflowError;
pub use gate::GateLayer;
pub use service::{SERVER_CAPABILITIES, WorkflowService, validate_flow_config};

/// Types generated from `proto/contract.proto` (no proto package: `_`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("_");

    /// Encoded descriptors, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/duo_workflow_descriptor.bin"));
}

/// gRPC message size limit in both directions (upstream: 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Service name registered with the health service.
pub const SERVICE_NAME: &str = "DuoWorkflow";

/// The health reporter, to flip to NOT_SERVING on shutdown.
#[derive(Clone)]
pub struct WorkflowHealth(HealthReporter);

impl WorkflowHealth {
    pub async fn set_serving(&self) {
        self.0
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        self.0
            .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
    }

    pub async fn set_not_serving(&self) {
        self.0
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.0
            .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::NotServing)
            .await;
    }
}

/// Builds the routes of the gRPC listener: DuoWorkflow, health, and reflection
/// when enabled.
pub fn routes(
    service: WorkflowService,
    reflection: bool,
) -> Result<(Routes, WorkflowHealth), String> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let workflow = proto::duo_workflow_server::DuoWorkflowServer::from_arc(Arc::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut routes = Routes::new(workflow).add_service(health);
    if reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
        routes = routes.add_service(v1).add_service(v1alpha);
    }
    Ok((routes, WorkflowHealth(reporter)))
}
