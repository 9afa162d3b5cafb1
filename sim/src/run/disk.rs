//! Disk faults on a node's `SimDisk`, and the injected "lying fsync" bug.

use crate::history::DataFault;
use crate::nemesis::DiskFault;
use karst::storage::{CrashOptions, SimDisk, Storage, StorageFile};
use std::io;
use std::sync::Arc;

/// Applies what a crash does to the disk; returns the data fault to record.
pub(crate) fn apply(disk: &SimDisk, fault: DiskFault) -> (DataFault, String) {
    match fault {
        DiskFault::None => (DataFault::ProcessKill, "page cache kept".to_string()),
        DiskFault::PowerLoss => {
            disk.crash(CrashOptions {
                tear_last_write: false,
            });
            (DataFault::PowerLoss, "unsynced writes dropped".to_string())
        }
        DiskFault::TornWrite => {
            disk.crash(CrashOptions {
                tear_last_write: true,
            });
            (
                DataFault::PowerLoss,
                "unsynced writes dropped, last write torn".to_string(),
            )
        }
        DiskFault::Corrupt { position_ppm } => {
            let paths: Vec<String> = disk
                .paths()
                .into_iter()
                .filter(|p| disk.contents(p).is_some_and(|c| !c.is_empty()))
                .collect();
            if paths.is_empty() {
                return (DataFault::ProcessKill, "nothing to corrupt".to_string());
            }
            let ppm = position_ppm as u64;
            let path = &paths[(ppm * paths.len() as u64 / 1_000_000) as usize];
            let len = disk.contents(path).map_or(0, |c| c.len() as u64);
            let start = ppm.wrapping_mul(7_919) % len;
            let end = start + 1 + ppm % 16;
            disk.corrupt(path, start..end);
            (
                DataFault::Destroyed,
                format!("corrupted {path} bytes {start}..{end}"),
            )
        }
        DiskFault::Wipe => {
            disk.wipe();
            (DataFault::Destroyed, "disk wiped".to_string())
        }
    }
}

/// The injected bug `lying-fsync`: a storage whose syncs report success without making
/// anything durable — a node on it acknowledges durable writes that a power loss then loses.
#[derive(Debug)]
pub(crate) struct LyingStorage(pub SimDisk);

#[derive(Debug)]
struct LyingFile(Arc<dyn StorageFile>);

impl Storage for LyingStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        self.0.list_dir(dir)
    }
    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(LyingFile(self.0.open_file(path, create)?)))
    }
    fn exists(&self, path: &str) -> bool {
        self.0.exists(path)
    }
    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &str) -> io::Result<()> {
        self.0.remove_dir_all(dir)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self, _dir: &str) -> io::Result<()> {
        Ok(())
    }
}

impl StorageFile for LyingFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn read_into(&self, out: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
        self.0.read_into(out, offset, len)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}
