//! Launchers for the real parts holdfast's tests drive (dev-only; docs/architecture.md):
//! - [`Postgres`]: a throw-away PostgreSQL server (initdb + pg_ctl) on a free port;
//! - [`Moto`]: the moto S3-compatible server on a free port;
//! - [`EmbeddedServer`]: an in-process API server with every controller running, and a
//!   `kube::Client` talking to it.
//!
//! Each launcher owns its temporary directory and stops what it started when dropped.

pub mod embedded;
pub mod error;
pub mod moto;
pub mod postgres;
pub mod process;

pub use embedded::{EmbeddedServer, holdfast_binary};
pub use error::Error;
pub use moto::Moto;
pub use postgres::Postgres;
