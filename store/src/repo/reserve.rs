//! The reserve file (FORMAT.md §9.1): 4 MiB of zeros that the commands which free space (prune,
//! forget) delete first, so that on a full disk they still have room for their lock, their marks
//! and their index files; it is written again when they end.

use std::path::{Path, PathBuf};

use crate::repo::Repository;

/// Size of the reserve file: 4 MiB.
pub const RESERVE_LEN: u64 = 4 << 20;

/// The reserve file, released while a command runs and written again when it is dropped.
#[derive(Debug)]
pub struct Reserve(PathBuf);

impl Drop for Reserve {
    fn drop(&mut self) {
        write_reserve(&self.0);
    }
}

impl Repository {
    /// Deletes the reserve file until the returned guard is dropped, which writes it again
    /// (when there is room by then).
    #[must_use]
    pub fn release_reserve(&self) -> Reserve {
        let path = self.layout().reserve();
        let _ = std::fs::remove_file(&path);
        Reserve(path)
    }
}

/// (Re)creates the reserve file; failing to (a full disk) only means there is none.
pub(crate) fn write_reserve(path: &Path) {
    let ok = std::fs::File::create(path).and_then(|f| {
        std::io::Write::write_all(&mut &f, &vec![0u8; RESERVE_LEN as usize])
            .and_then(|()| f.sync_all())
    });
    if ok.is_err() {
        let _ = std::fs::remove_file(path);
    }
}
