//! `store`: the engine of a content-addressed, deduplicating backup repository.
//!
//! # Brief overview
//!
//! - [`Repository`] opens or creates a repository directory and owns its config and the
//!   local index cache ([`ChunkIndex`], RocksDB).
//! - [`snapshot`] captures one backup set: each source becomes a component; files are cut by
//!   the [`Chunker`] (FastCDC), named by BLAKE3 ([`ChunkId`]), deduplicated, compressed with
//!   zstd and appended to pack files; directories become [`TreeBlob`]s; the set's
//!   [`Manifest`] is written last.
//! - [`restore`] writes a set back into an empty directory, verifying every blob.
//! - [`vfs`] navigates a set read-only (`ls`); [`mount::MountView`] presents the whole
//!   repository as a read-only directory tree (`mount`).
//!
//! The on-disk format is specified in `docs/FORMAT.md`; every decoder of repository bytes
//! returns an error on damaged input and never panics.
//!
//! # Example
//!
//! ```no_run
//! use store::{InitOptions, NoProgress, Repository, RestoreOptions, SnapshotOptions, SourceSpec};
//! # fn main() -> store::Result<()> {
//! let repo = Repository::init("/backup/repo".as_ref(), &InitOptions::default())?;
//! let opts = SnapshotOptions {
//!     sources: vec![SourceSpec::path("content", "/alf_data/contentstore")],
//!     host: "alf1".into(),
//!     ..SnapshotOptions::default()
//! };
//! let report = store::snapshot(&repo, &opts, &NoProgress)?;
//! let target = RestoreOptions { target: "/restore".into(), ..RestoreOptions::default() };
//! store::restore(&repo, &report.manifest, &target, &NoProgress)?;
//! # Ok(())
//! # }
//! ```

// Without the engine (fuzz builds) parts of the format modules that only the engine calls are
// unused; that is expected, not dead code.
#![cfg_attr(not(feature = "engine"), allow(dead_code, unused_imports))]

// The on-disk formats and their decoders: always built (the fuzz targets use only these).
mod chunker;
mod compress;
mod config;
mod coverage;
mod crash;
pub mod crypto;
mod damage;
mod error;
mod format;
mod fs;
mod id;
mod index;
mod lock;
mod pack;
mod progress;
mod snapshot;
mod time;
mod tree;
#[cfg(feature = "engine")]
mod xattr;

// The engine: repository, cache, snapshot, restore, check (feature `engine`, on by default).
#[cfg(feature = "engine")]
mod backup;
#[cfg(feature = "engine")]
mod check;
#[cfg(feature = "engine")]
mod diff;
#[cfg(feature = "engine")]
mod dump;
#[cfg(feature = "engine")]
mod find;
mod forget;
#[cfg(feature = "engine")]
mod gc;
#[cfg(feature = "engine")]
pub mod mount;
#[cfg(feature = "engine")]
mod pattern;
#[cfg(feature = "engine")]
mod repair;
#[cfg(feature = "engine")]
mod repo;
#[cfg(feature = "engine")]
mod restore;
#[cfg(feature = "engine")]
mod stats;
#[cfg(feature = "engine")]
pub mod storage;
#[cfg(feature = "engine")]
mod tag;
#[cfg(feature = "engine")]
mod verify;
#[cfg(feature = "engine")]
pub mod vfs;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

#[cfg(test)]
mod testing;

pub use chunker::{ChunkSizes, Chunker, ChunkerParams};
pub use compress::{
    decompress, looks_incompressible, Codec, Compressor, Effort, DEFAULT_LEVEL, FAST_LEVEL,
};
pub use config::{Encryption, IdHash, RepoConfig};
pub use coverage::{Coverage, CoverageSummary};
pub use damage::{DamageSet, DamagedCopy};
pub use error::{Corruption, Error, ObjectRef, Result};
pub use forget::{plan_explicit, plan_policy, ForgetPlan, KeepPolicy, KeepReason, Kept, SetInfo};
pub use format::{FORMAT_VERSION, SUPPORTED_VERSIONS};
pub use id::{ChunkId, DamageId, Id, IndexId, PackId, ParseIdError, SnapshotId, TreeId};
pub use index::{decode_index_file, encode_index_file, IndexedPack};
pub use lock::{LockKind, LockRecord};
pub use pack::{
    read_blob, BlobKind, EncodedBlob, PackEntry, PackReader, PackWriter, SealedPack,
    BLOB_HEADER_LEN, FOOTER_LEN, TRAILER_ENTRY_LEN,
};
pub use progress::{FileEvent, NoProgress, Progress};
pub use snapshot::{
    unique_names, Component, ComponentKind, Counts, IssueKind, Manifest, PathIssue, SetKind,
};
pub use time::{is_sortable_name, sortable_name};
pub use tree::{
    escape_name, is_valid_name, ChunkRefs, Content, Metadata, Node, Time, TreeBlob, Xattr,
};

#[cfg(feature = "engine")]
pub use backup::{
    copy, find_parent, preview, snapshot, ComponentPreview, CopiedSet, CopyOptions, CopyReport,
    ParentChoice, PreviewReport, SnapshotOptions, SnapshotReport, SourceKind, SourceSpec,
};
#[cfg(feature = "engine")]
pub use check::{check, CheckOptions, CheckReport, DataCheck, Finding};
#[cfg(feature = "engine")]
pub use diff::{diff, Change, ChangeKind, DiffStats};
#[cfg(feature = "engine")]
pub use dump::{dump, ArchiveFormat, DumpReport};
#[cfg(feature = "engine")]
pub use find::{find, FindReport, Found, Unread};
#[cfg(feature = "engine")]
pub use gc::{prune, PruneOptions, PrunePlan, PruneReport, DEFAULT_MAX_UNUSED};
#[cfg(feature = "engine")]
pub use index::{ChunkIndex, Location, DEFAULT_FRAMES_LIMIT};
#[cfg(feature = "engine")]
pub use repair::{
    repair_index, repair_packs, repair_snapshots, LostPath, RepairIndexReport, RepairPacksOptions,
    RepairPacksReport, RepairSnapshotsOptions, RepairSnapshotsReport, RepairedPack, RepairedSet,
    UnreadablePack,
};
#[cfg(feature = "engine")]
pub use repo::{
    default_local_dir, CoverageRecords, DamageRecords, InitOptions, KeyEntry, Layout,
    ListedSnapshot, LockInfo, LockOptions, NewKey, OpenOptions, RepoLocation, RepoLock, Repository,
    Reserve, SkippedIndexFile, DEFAULT_STALE_AFTER, RESERVE_LEN,
};
#[cfg(feature = "engine")]
pub use restore::{
    plan as restore_plan, restore, Overwrite, RestoreFailure, RestoreOptions, RestoreReport,
};
#[cfg(feature = "engine")]
pub use stats::{stats, RepoStats, SetStats};
#[cfg(feature = "engine")]
pub use tag::{retag, TagChange, TagReport};
#[cfg(feature = "engine")]
pub use verify::{verify_alfresco, AlfrescoOptions, AlfrescoReport, UrlProblem};
#[cfg(feature = "engine")]
pub use vfs::{for_each_chunk, write_file_to};

/// `n` worker threads, or one per CPU when `n` is 0.
#[cfg(feature = "engine")]
pub(crate) fn threads_or_cpus(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2)
    } else {
        n
    }
}
