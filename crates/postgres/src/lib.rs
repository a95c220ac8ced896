//! PostgreSQL backup and recovery over the holdfast repository, without Kubernetes: base
//! backups with their LSNs, timeline, version and system identifier ([`base_backup`]); the WAL
//! archive that `archive_command` and `restore_command` use ([`wal_archive`]) or a replication
//! slot feeds ([`wal_stream`]), and its expiry once no base backup needs it ([`wal_expiry`]); and
//! restores to a point in time, checked before anything is written ([`recovery`]).
//!
//! The server is reached the way its own tools reach it: this crate runs `pg_basebackup` and
//! `psql` with `-h/-p/-U` and leaves everything else to libpq (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `~/.pgpass`, `PGSSLMODE`, …), so whatever connects `psql` connects a backup.
//! Like the repository engine, everything here is synchronous.

pub mod base_backup;
pub mod control;
mod error;
pub mod lsn;
pub mod recovery;
pub mod server;
pub mod tools;
pub mod wal_archive;
pub mod wal_expiry;
pub mod wal_reader;
pub mod wal_stream;

pub use error::Error;
pub use lsn::Lsn;
