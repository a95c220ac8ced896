//! The embedded Kubernetes-compatible API server of holdfast (docs/architecture.md, docs/api.md).
//!
//! It serves every kind of `holdfast_api::registry()` over the Kubernetes REST API, backed by a
//! durable SQLite store, so kubectl, kube-rs and the Python client work against it unchanged.
//! [`ApiServer`] is the engine; `serve` puts it behind HTTPS with bearer-token authentication.

pub mod access_review;
pub mod audit;
pub mod auth;
pub mod data_dir;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod fieldselector;
pub mod handler;
pub mod kubeconfig;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod schema;
pub mod serve;
pub mod service_account_token;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;

pub use error::ApiError;
pub use handler::ApiServer;
pub use store::Store;
