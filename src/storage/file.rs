//! Real files under a root directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Storage, StorageFile, VolumeSpace};

/// [`Storage`] on the local file system, rooted at one directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    /// Uses `root` (created if absent) as the storage root, made absolute against the current
    /// directory once, here.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let root = std::path::absolute(root.into())?;
        std::fs::create_dir_all(&root)?;
        Ok(FileStorage { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, relative: &str) -> PathBuf {
        if relative.is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        }
    }
}

impl Storage for FileStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.path(dir))
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path(dir))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let full = self.path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&full)?;
        Ok(Arc::new(RealFile {
            path: full,
            file,
            reader: Mutex::new(None),
        }))
    }

    fn exists(&self, path: &str) -> bool {
        self.path(path).is_file()
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(path))
    }

    fn remove_dir_all(&self, dir: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.path(dir))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn space(&self) -> Option<VolumeSpace> {
        let stats = rustix::fs::statvfs(&self.root).ok()?;
        Some(VolumeSpace {
            total_bytes: stats.f_blocks.saturating_mul(stats.f_frsize),
            usable_bytes: stats.f_bavail.saturating_mul(stats.f_frsize),
        })
    }
}

#[derive(Debug)]
struct RealFile {
    path: PathBuf,
    file: File,
    /// A second descriptor with its own cursor, opened on first use, for `read_into`: the
    /// stable `Read::read_to_end` reads into uninitialised spare capacity, which the positional
    /// `read_at` cannot, so a fetch avoids zero-filling its buffer.
    reader: Mutex<Option<File>>,
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn read_into(&self, out: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| io::Error::other("reader lock poisoned"))?;
        if reader.is_none() {
            *reader = Some(File::open(&self.path)?);
        }
        let file = reader.as_mut().expect("opened above");
        file.seek(SeekFrom::Start(offset))?;
        out.reserve_exact(len);
        let want = out.len() + len;
        (&mut *file).take(len as u64).read_to_end(out)?;
        if out.len() != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DescribeLogDirs reports the location as an absolute directory (as Kafka does) even when
    /// `log.dirs` is relative, and the volume's size from statvfs.
    #[test]
    fn location_is_absolute_and_the_volume_size_is_known() {
        let relative = format!("target/tmp/file-storage-location-{}", std::process::id());
        let storage = FileStorage::new(&relative).unwrap();
        let expected = std::env::current_dir().unwrap().join(&relative);
        assert_eq!(storage.location(), expected.display().to_string());
        assert!(Path::new(&storage.location()).is_absolute());
        let space = storage.space().expect("statvfs of a real directory");
        assert!(space.total_bytes > 0);
        assert!(space.usable_bytes <= space.total_bytes);
        std::fs::remove_dir_all(&relative).unwrap();
    }
}
