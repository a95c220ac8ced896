//! Unit tests of the store against real SQLite files.
