//! Paths inside a local repository (FORMAT.md §3). Only this module spells them, but for the
//! objects named by their hash (manifests, index files, damage records, keys), which
//! [`crate::storage::LocalStorage`] keeps.

use std::path::{Path, PathBuf};

use crate::id::PackId;

/// The paths of one repository.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the repository at `root`.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Layout { root: root.to_path_buf() }
    }

    /// The repository directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config`.
    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    /// `config.copy`: the same bytes as `config`, used when `config` is damaged.
    #[must_use]
    pub fn config_copy(&self) -> PathBuf {
        self.root.join("config.copy")
    }

    /// `packs/`.
    #[must_use]
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    /// `packs/<first two hex digits>/<id>.pack`.
    #[must_use]
    pub fn pack(&self, id: PackId) -> PathBuf {
        let hex = id.to_hex();
        self.packs_dir().join(&hex[..2]).join(format!("{hex}.pack"))
    }

    /// `index/`.
    #[must_use]
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// `reserve`: space that prune and forget release first on a full disk.
    #[must_use]
    pub fn reserve(&self) -> PathBuf {
        self.root.join("reserve")
    }

    /// `snapshots/`.
    #[must_use]
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `locks/`.
    #[must_use]
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// `tmp/`: temp files, renamed into place when complete.
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `tmp/<purpose>-<pid>`: a scratch database of this process (prune's marks, stats'
    /// counts), removed when it is done; any left by a dead process is removed by prune.
    #[must_use]
    pub fn scratch(&self, purpose: &str) -> PathBuf {
        self.tmp_dir().join(format!("{purpose}-{}", std::process::id()))
    }

    /// `manifests/`: in this host's directory of a repository in object storage, copies of
    /// the manifests it read or wrote (FORMAT.md §13.1).
    #[must_use]
    pub fn manifest_copies_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// `cache/`: the default place of this host's index cache.
    #[must_use]
    pub fn default_cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The directories `init` creates, parents first.
    #[must_use]
    pub fn skeleton(&self) -> [PathBuf; 5] {
        [self.tmp_dir(), self.packs_dir(), self.index_dir(), self.snapshots_dir(), self.locks_dir()]
    }
}
