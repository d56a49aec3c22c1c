//! Helpers for the engine's in-process tests: a repository with a set of given files.
#![allow(clippy::unwrap_used, reason = "test helpers: a failure is the test's failure")]

use std::path::Path;

#[cfg(feature = "engine")]
use crate::backup::{snapshot, SnapshotOptions, SourceSpec};
#[cfg(feature = "engine")]
use crate::progress::NoProgress;
#[cfg(feature = "engine")]
use crate::repo::{InitOptions, Repository};

#[cfg(feature = "engine")]
/// Writes `files` (path below the source, content) under `dir/src`, creates a repository at
/// `dir/repo` and takes one set of the source as component `data`.
pub(crate) fn repo_with(dir: &Path, files: &[(String, Vec<u8>)]) -> Repository {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (rel, data) in files {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        #[allow(clippy::disallowed_methods, reason = "a source tree, not the repository")]
        std::fs::write(p, data).unwrap();
    }
    // Encrypted, as `store init` makes them, at the cheapest key derivation.
    let opts = InitOptions {
        encryption: Some(crate::repo::NewKey {
            password: password(),
            kdf: crate::crypto::KdfParams::MIN,
            cipher: None,
        }),
        ..InitOptions::default()
    };
    let repo = Repository::init(&dir.join("repo"), &opts).unwrap();
    assert!(repo.crypto().is_encrypted());
    snap(&repo, dir);
    repo
}

#[cfg(feature = "engine")]
fn password() -> crate::crypto::Password {
    crate::crypto::Password::new(b"engine tests".to_vec())
}

#[cfg(feature = "engine")]
/// Takes another set of `dir/src`.
pub(crate) fn snap(repo: &Repository, dir: &Path) {
    let opts = SnapshotOptions {
        sources: vec![SourceSpec::path("data", dir.join("src"))],
        host: "h".into(),
        threads: 1,
        ..SnapshotOptions::default()
    };
    snapshot(repo, &opts, &NoProgress).unwrap();
}

#[cfg(feature = "engine")]
/// Reopens the repository at `dir/repo` (a fresh process's view: the cache is opened anew).
pub(crate) fn reopen(dir: &Path) -> Repository {
    let opts = crate::repo::OpenOptions { password: Some(password()), ..Default::default() };
    Repository::open(&dir.join("repo"), &opts).unwrap()
}

/// Pseudo-random bytes from splitmix64, incompressible, and stable across crate versions (the
/// golden tests depend on them).
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Flips one bit at `offset` of the file at `path` (a repository file, read-only).
pub(crate) fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0x10;
    #[allow(clippy::disallowed_methods, reason = "damaging the repository on purpose")]
    std::fs::write(path, bytes).unwrap();
}

#[cfg(feature = "engine")]
/// A location in the S3 server the tests run against (`STORE_TEST_S3`, set by `.ci/run`, which
/// starts SeaweedFS on 127.0.0.1), below a prefix new to this call.
pub(crate) fn s3_test_location(name: &str) -> crate::storage::S3Location {
    let base = std::env::var("STORE_TEST_S3").expect(
        "STORE_TEST_S3 is not set: the object-storage tests need the S3 server that `.ci/run` \
         starts (`eval \"$(bash .ci/s3-server start DIR)\"` starts one by hand)",
    );
    let mut location = crate::storage::S3Location::parse(&base).unwrap();
    let unique =
        format!("{name}-{}-{}", std::process::id(), crate::repo::random_id().unwrap().short());
    location.prefix =
        if location.prefix.is_empty() { unique } else { format!("{}/{unique}", location.prefix) };
    location
}
