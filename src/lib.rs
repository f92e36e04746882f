//! aigw: the GitLab AI Gateway (HTTP) and Duo Agent Platform service (gRPC) in
//! one process. See ARCHITECTURE.md for the map.

pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod docs_search;
pub mod grpc;
pub mod health;
pub mod http;
pub mod jwks;
pub mod jwt_crypto;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod models;
pub mod prompts;
pub mod pyjson;
pub mod server;
pub mod suggestions;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod token_cache;
pub mod tokens;
pub mod trust;
pub mod watch;
