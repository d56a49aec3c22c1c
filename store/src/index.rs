//! Where each blob is: the repository's immutable index files (authoritative) and the local
//! RocksDB cache fed from them (FORMAT.md §8).
//!
//! A writer appends an index file after the packs it lists are durable and before any manifest
//! references them. The cache holds exactly the union of the index files it has ingested, so it
//! never points at a pack that is not durable, and it can always be rebuilt from the index files
//! (or, when those are lost, from pack trailers).

#[cfg(feature = "engine")]
mod cache;
mod file;

#[cfg(feature = "engine")]
pub use cache::{ChunkIndex, Location, DEFAULT_FRAMES_LIMIT};
pub use file::{decode_index_file, encode_index_file, IndexedPack, MAX_INDEX_FILE_LEN};
