//! The API server driven in-process through a real kube-rs client, over a real SQLite store.
//!
//! Each test builds its own server on a fresh store in a temporary directory and talks to it the
//! way controllers do (`kube::Client::new(router, "default")`): typed `Api` calls, raw requests
//! where a test needs headers or status codes, `kube::runtime::watcher`, and a `Controller` with
//! the `finalizer` helper. One test binary, one module per concern.

mod controller;
mod core_kinds;
mod crud;
mod deletion;
mod discovery;
mod fixture;
mod list;
mod patch;
mod table;
mod validation;
mod watch;
