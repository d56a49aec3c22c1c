//! End-to-end tests: drive the real `store` binary. One test binary with modules, so RocksDB is
//! linked once.

// Tests write source trees and damage repositories on purpose; the rule that repository files
// go through `write_atomic` is for the engine.
#![allow(clippy::disallowed_methods)]
// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod bad_input;
mod boundaries;
mod cli;
mod compat;
mod copy;
mod encryption;
mod find_dump;
mod guides;
mod hostile;
mod integrity;
mod interrupt;
mod journals;
mod json;
mod metadata;
mod model;
mod monitoring;
mod mount;
mod postgres;
mod power_loss;
mod profiles;
mod restore_options;
mod retention;
mod roundtrip;
mod s3;
mod safety;
mod sets;
mod write_once;
