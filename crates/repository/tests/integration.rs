//! The repository's one integration test binary: real files, a real local backend, a real S3
//! server (moto). Modules live in `tests/integration/`.

#[path = "integration/support.rs"]
mod support;

#[path = "integration/round_trip.rs"]
mod round_trip;

#[path = "integration/integrity.rs"]
mod integrity;

#[path = "integration/lifecycle.rs"]
mod lifecycle;

#[path = "integration/crash.rs"]
mod crash;

#[path = "integration/s3.rs"]
mod s3;

#[path = "integration/acceptance.rs"]
mod acceptance;

#[path = "integration/repair.rs"]
mod repair;

#[path = "integration/locks.rs"]
mod locks;

#[path = "integration/cache.rs"]
mod cache;

#[path = "integration/interleaved.rs"]
mod interleaved;

#[path = "integration/dictionary.rs"]
mod dictionary;

#[path = "integration/content_lists.rs"]
mod content_lists;

#[path = "integration/patches.rs"]
mod patches;
