//! holdfast's deduplicating, compressed, encrypted repository. Knows nothing of Kubernetes.
//!
//! The on-disk format is specified in `docs/repository-format.md` (version 3). Entry points:
//! [`location::Location::open`] for a backend, [`Repository::init`] / [`Repository::open`] over it
//! (or over any [`backend::Backend`]), then [`backup::backup_paths`], [`restore::restore`],
//! [`check::check`], [`forget::forget`] and [`prune::prune`]. The engine is synchronous and runs
//! its own threads; call it from `spawn_blocking` in async code.

pub mod archive;
pub mod backend;
pub mod backup;
pub mod cache;
pub mod check;
pub mod config;
pub mod content_list;
pub mod copy;
pub mod crypto;
pub mod dictionary;
mod direct;
pub mod dump;
pub mod error;
pub mod filter;
pub mod find;
pub mod forget;
pub mod id;
pub mod index;
pub mod location;
pub mod lock;
pub mod pack;
mod pack_sink;
pub mod patch;
pub mod pattern;
pub mod prints;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod snapshot;
pub mod staging;
pub mod stats;
pub mod tag;
pub mod tree;

pub use error::{Error, Result};
pub use id::Id;
pub use repository::{INDEX_FILE_BLOBS, InitOptions, Repository};
