//! The `Storage` trait the partition log writes through, with two implementations:
//! [`FileStorage`] (real files under a root directory) and [`SimDisk`] (an in-memory disk for
//! the simulator that keeps synced and unsynced bytes apart and can crash, tear and corrupt).
//!
//! Contract:
//! - Paths are relative, `/`-separated strings (`"orders-3/00000000000000000000.log"`); a log
//!   directory is one or more components under the storage root.
//! - Writes land in the "page cache": they are visible to reads at once but survive a crash only
//!   after [`StorageFile::sync_data`] on the file. A newly created or removed directory entry
//!   survives a crash only after [`Storage::sync_dir`] on its parent directory.
//! - No method is called on a role's event loop that can block for a device flush except
//!   `sync_data` and `sync_dir`, which the log hands to the disk thread inside a `SyncJob`.
//! - Handles are `Arc<dyn StorageFile>` so a sync job can carry them to another thread.

use std::io;
use std::sync::Arc;

mod file;
mod sim;

pub use file::FileStorage;
pub use sim::{CrashOptions, SimDisk};

/// A directory tree of files, as the partition log sees it.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its missing parents (idempotent).
    fn create_dir_all(&self, dir: &str) -> io::Result<()>;
    /// Names (not paths) of the files directly in `dir`, sorted. Missing `dir` is an error.
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Opens the file at `path` for reading and writing, creating it empty when `create`.
    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &str) -> bool;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &str) -> io::Result<()>;
    /// Removes `dir` and everything in it.
    fn remove_dir_all(&self, dir: &str) -> io::Result<()>;
    /// Renames the file `from` to `to` atomically, replacing `to` if it exists (POSIX
    /// rename). The log cleaner swaps cleaned segments in with it. Required, not defaulted:
    /// a backend that forgot it would leave every compacted topic silently uncleaned.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the entries of `dir` (files created or removed in it) durable. May block on the
    /// device: call it only from a sync job or at open/close.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Where the files are, as DescribeLogDirs reports a log directory: an absolute path for
    /// real files.
    fn location(&self) -> String {
        String::from("memory")
    }
    /// The total and the usable bytes of the volume holding the files (DescribeLogDirs v4,
    /// KIP-827), if the backend can tell. Reads file system statistics: not for an event loop's
    /// hot path.
    fn space(&self) -> Option<VolumeSpace> {
        None
    }
}

/// Size of the volume a [`Storage`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer can still use (`f_bavail`, as Kafka's `getUsableSpace`).
    pub usable_bytes: u64,
}

/// One open file. All I/O is positional, so a handle can be shared without a cursor.
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    /// Current length in bytes (including unsynced writes).
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Appends `len` bytes read from `offset` to `out` without zero-filling them first (the
    /// fetch path reads straight into the buffer it hands out).
    fn read_into(&self, out: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file as needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync). Blocks on the device.
    fn sync_data(&self) -> io::Result<()>;
}

/// Joins a directory and a file name into a storage path.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent directory of `path` (`""` is the storage root).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(at) => &path[..at],
        None => "",
    }
}
