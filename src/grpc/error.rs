//! The gRPC boundary's error type and its mapping to status codes, in one place.

use tonic::{Code, Status};

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(&'static str),
    #[error("{0}")]
    Internal(&'static str),
}

impl WorkflowError {
    pub fn code(&self) -> Code {
        match self {
            WorkflowError::Unauthenticated(_) => Code::Unauthenticated,
            WorkflowError::PermissionDenied(_) => Code::PermissionDenied,
            WorkflowError::InvalidArgument(_) => Code::InvalidArgument,
            WorkflowError::Unimplemented(_) => Code::Unimplemented,
            WorkflowError::Internal(_) => Code::Internal,
        }
    }
}

impl From<WorkflowError> for Status {
    fn from(e: WorkflowError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
