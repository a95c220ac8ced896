//! Launchers for the real parts holdfast's tests drive (dev-only). Each launcher owns its
//! temporary directory and stops what it started when dropped; a tool that is not installed is
//! an error naming `scripts/install-deps.sh`, never a silent skip.
//!
//! Always available (no Kubernetes crates, so the repository's tests can use them):
//! - [`Postgres`]: a throw-away PostgreSQL server (initdb + pg_ctl) on a free port;
//! - [`Moto`]: the moto S3-compatible server on a free port.
//!
//! Feature `kube`: clients through a kubeconfig ([`kubeconfig`]: kube-rs and kubectl) and the
//! real `holdfast server` process ([`HoldfastServer`]).
//!
//! Feature `apiserver`: the API server in the test process ([`InProcessApi`], [`HttpsApi`]).
//!
//! Feature `embedded`: [`EmbeddedServer`], the in-process API server with every controller
//! running on it.

#[cfg(feature = "apiserver")]
pub mod api_server;
pub mod data;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
#[cfg(feature = "kube")]
pub mod holdfast_server;
#[cfg(feature = "kube")]
pub mod kubeconfig;
pub mod moto;
pub mod postgres;
pub mod process;

#[cfg(feature = "apiserver")]
pub use api_server::{HttpsApi, InProcessApi};
pub use data::random_bytes;
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedServer;
pub use error::Error;
#[cfg(feature = "kube")]
pub use holdfast_server::HoldfastServer;
pub use moto::Moto;
pub use postgres::Postgres;
