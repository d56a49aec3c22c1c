//! Pack files: blobs appended with a small header each, then a trailer listing every blob, then
//! a fixed-size footer (FORMAT.md §5).
//!
//! Only this module knows pack bytes. [`PackWriter`] builds a pack in a temp file, verifies
//! every blob by decompressing and re-hashing it, and makes it durable under its final name;
//! [`read_blob`] and [`PackReader`] read blobs back, verifying each against its id.

mod format;
mod reader;
mod writer;

pub(crate) use format::{decode_entry, encode_entry};
pub use format::{BlobKind, PackEntry, BLOB_HEADER_LEN, TRAILER_ENTRY_LEN};
pub use reader::{read_blob, PackReader};
pub use writer::{EncodedBlob, PackWriter, SealedPack};
