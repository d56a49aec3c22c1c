//! End-to-end tests: drive the real `store` binary. One test binary with modules, so RocksDB is
//! linked once.

mod support;

mod bad_input;
mod compat;
mod json;
mod roundtrip;
