//! An in-memory disk for the simulator that models what a power loss does to files.
//!
//! Every file keeps two images: `data` (what reads see, the page cache) and `synced` (what the
//! device holds, updated by `sync_data`). A created file's name is durable only after
//! `sync_dir` on its directory. [`SimDisk::crash`] reverts every file to its synced image,
//! drops files whose name was never made durable, optionally keeps a random prefix of the last
//! unsynced write (a torn write), and invalidates every handle opened before the crash, so a
//! killed node cannot keep writing. `remove_file` is modelled as immediately durable (a removed
//! segment does not come back), a simplification the log does not rely on for safety.
//!
//! `SimDisk` is a cheap `Clone` handle: the simulator keeps one across a node's crash and hands
//! a clone (as `Arc<dyn Storage>`) to the restarted node. Faults are drawn from the seed given to
//! [`SimDisk::new`], so a run replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{parent, Storage, StorageFile};

/// What a crash does beyond dropping unsynced bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashOptions {
    /// Keep a random prefix (possibly empty, possibly all) of the last unsynced write.
    pub tear_last_write: bool,
}

/// The simulated disk (see the module docs).
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimState {
    rng: u64,
    /// Bumped by every crash and wipe; handles from an older generation fail.
    generation: u64,
    dirs: BTreeSet<String>,
    files: BTreeMap<String, SimFileData>,
    last_write: Option<LastWrite>,
    fail_syncs: bool,
    stats: SimDiskStats,
}

#[derive(Debug, Clone)]
struct LastWrite {
    path: String,
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct SimFileData {
    data: Vec<u8>,
    synced: Vec<u8>,
    name_durable: bool,
    /// `data` and `synced` agree on every byte below this offset (`usize::MAX`: they are
    /// equal), so a sync copies only what changed since the last one instead of the whole
    /// file (a full copy per fsync was the simulator's largest memmove).
    dirty_from: usize,
}

impl Default for SimFileData {
    fn default() -> Self {
        SimFileData {
            data: Vec::new(),
            synced: Vec::new(),
            name_durable: false,
            dirty_from: CLEAN,
        }
    }
}

/// `SimFileData::dirty_from` of a file whose page cache equals its synced image.
const CLEAN: usize = usize::MAX;

impl SimFileData {
    /// Records that `data` may now differ from `synced` at and above `offset`.
    fn mark_dirty(&mut self, offset: usize) {
        self.dirty_from = self.dirty_from.min(offset);
    }

    /// Makes `synced` equal to `data`, copying only the bytes at and above `dirty_from`.
    fn sync(&mut self) {
        if self.dirty_from == CLEAN {
            return;
        }
        let keep = self.dirty_from.min(self.data.len()).min(self.synced.len());
        self.synced.truncate(keep);
        self.synced.extend_from_slice(&self.data[keep..]);
        self.dirty_from = CLEAN;
    }

    /// Reverts `data` to `synced` (power loss), copying only the bytes that differ.
    fn revert(&mut self) {
        if self.dirty_from == CLEAN {
            return;
        }
        let keep = self.dirty_from.min(self.data.len()).min(self.synced.len());
        self.data.truncate(keep);
        self.data.extend_from_slice(&self.synced[keep..]);
        self.dirty_from = CLEAN;
    }
}

/// Counters for tests and the simulator's reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub writes: u64,
    pub bytes_written: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub crashes: u64,
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // splitmix64: small, deterministic, good enough to pick fault sizes.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The paths of the files directly in `dir`, in order, found in the map's key order instead of
/// by walking every file: a walk made each new log's listing and syncs O(files), a topic of n
/// partitions O(n²).
fn paths_in<V>(files: &BTreeMap<String, V>, dir: &str) -> Vec<String> {
    fn from(key: &str) -> (Bound<&str>, Bound<&str>) {
        (Bound::Included(key), Bound::Unbounded)
    }
    let mut paths = Vec::new();
    if dir.is_empty() {
        // Root files have no '/'; each subdirectory's keys ("top/...") are skipped at once, as
        // '0' sorts right after '/'.
        let mut next = String::new();
        while let Some(path) = files
            .range::<str, _>(from(&next))
            .next()
            .map(|(path, _)| path)
        {
            next = match path.find('/') {
                Some(at) => format!("{}0", &path[..at]),
                None => {
                    paths.push(path.clone());
                    format!("{path}\0")
                }
            };
        }
    } else {
        let prefix = format!("{dir}/");
        for path in files.range::<str, _>(from(&prefix)).map(|(path, _)| path) {
            let Some(name) = path.strip_prefix(&prefix) else {
                break;
            };
            if !name.contains('/') {
                paths.push(path.clone());
            }
        }
    }
    paths
}

fn stale() -> io::Error {
    io::Error::other("simulated disk handle is stale (the disk crashed since it was opened)")
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file: {path}"))
}

impl SimDisk {
    /// An empty disk whose faults are drawn from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng: seed,
                generation: 0,
                dirs: BTreeSet::from([String::new()]),
                files: BTreeMap::new(),
                last_write: None,
                fail_syncs: false,
                stats: SimDiskStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Power loss: every file reverts to its synced image, files whose names were never synced
    /// vanish, and (if asked) a random prefix of the last unsynced write survives. Every open
    /// handle becomes stale.
    pub fn crash(&self, options: CrashOptions) {
        let mut state = self.lock();
        state.generation += 1;
        state.stats.crashes += 1;
        let last_write = state.last_write.take();
        let kept = match &last_write {
            Some(write) if options.tear_last_write => {
                (state.next_random() % (write.bytes.len() as u64 + 1)) as usize
            }
            _ => 0,
        };
        state.files.retain(|_, file| file.name_durable);
        for file in state.files.values_mut() {
            file.revert();
        }
        if let Some(write) = last_write {
            if let Some(file) = state.files.get_mut(&write.path) {
                let start = write.offset as usize;
                let end = start + kept;
                if kept > 0 {
                    file.mark_dirty(start.min(file.data.len()));
                    if file.data.len() < end {
                        file.data.resize(end, 0);
                    }
                    file.data[start..end].copy_from_slice(&write.bytes[..kept]);
                    // What reached the platter before the power went is on disk for good.
                    file.sync();
                }
            }
        }
    }

    /// Flips every byte of `range` in the file at `path` (both images, so it survives a crash).
    /// Returns false if the file does not exist. The range is clipped to the file.
    pub fn corrupt(&self, path: &str, range: Range<u64>) -> bool {
        let mut state = self.lock();
        let Some(file) = state.files.get_mut(path) else {
            return false;
        };
        for image in [&mut file.data, &mut file.synced] {
            let end = (range.end as usize).min(image.len());
            let start = (range.start as usize).min(end);
            for byte in &mut image[start..end] {
                *byte ^= 0xFF;
            }
        }
        true
    }

    /// Loses everything (a replaced disk). Open handles become stale.
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.files.clear();
        state.dirs = BTreeSet::from([String::new()]);
        state.last_write = None;
    }

    /// Makes every later `sync_data` / `sync_dir` fail (a dying device) until turned off.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// The current (page cache) contents of a file, for tests and checkers.
    pub fn contents(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|file| file.data.clone())
    }

    /// Paths of all files, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// Counters since creation.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// A fresh random number from the disk's seeded generator, for tests choosing faults.
    pub fn random(&self) -> u64 {
        self.lock().next_random()
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        let mut path = String::new();
        for component in dir.split('/').filter(|c| !c.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(component);
            state.dirs.insert(path.clone());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(paths_in(&state.files, dir)
            .into_iter()
            .map(|path| match path.rfind('/') {
                Some(at) => path[at + 1..].to_string(),
                None => path,
            })
            .collect())
    }

    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.lock();
        if !state.files.contains_key(path) {
            if !create {
                return Err(not_found(path));
            }
            if !state.dirs.contains(parent(path)) {
                return Err(not_found(parent(path)));
            }
            state.files.insert(path.to_string(), SimFileData::default());
        }
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            path: path.to_string(),
            generation: state.generation,
        }))
    }

    fn exists(&self, path: &str) -> bool {
        self.lock().files.contains_key(path)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        match self.lock().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        // Modelled as atomic and at once durable, like removal (a journaling file system
        // commits the rename as one metadata operation); the destination's name is as durable
        // as the source's was.
        let mut state = self.lock();
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_string(), file);
        if let Some(write) = &mut state.last_write {
            if write.path == from {
                write.path = to.to_string();
            }
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let prefix = format!("{dir}/");
        state.files.retain(|path, _| !path.starts_with(&prefix));
        state
            .dirs
            .retain(|path| path != dir && !path.starts_with(&prefix));
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        if state.fail_syncs {
            return Err(io::Error::other("simulated sync failure"));
        }
        state.stats.dir_syncs += 1;
        for path in paths_in(&state.files, dir) {
            if let Some(file) = state.files.get_mut(&path) {
                file.name_durable = true;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    path: String,
    generation: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut SimFileData, &mut SimState) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self.disk.lock();
        if guard.generation != self.generation {
            return Err(stale());
        }
        let state = &mut *guard;
        // Taken out of the map (key and all, so no allocation) for `f` to borrow the rest of
        // the state mutably beside it.
        let (path, mut file) = state
            .files
            .remove_entry(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let result = f(&mut file, state);
        state.files.insert(path, file);
        result
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|file, _| Ok(file.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|file, _| {
            let start = offset as usize;
            let end = start + buf.len();
            if end > file.data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            buf.copy_from_slice(&file.data[start..end]);
            Ok(())
        })
    }

    fn read_into(&self, out: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
        self.with(|file, _| {
            let start = offset as usize;
            let end = start + len;
            if end > file.data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            out.extend_from_slice(&file.data[start..end]);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let path = self.path.clone();
        self.with(|file, state| {
            let start = offset as usize;
            let end = start + buf.len();
            // Zero fill between the old end and `start` changes bytes too.
            file.mark_dirty(start.min(file.data.len()));
            if file.data.len() < end {
                file.data.resize(end, 0);
            }
            file.data[start..end].copy_from_slice(buf);
            state.stats.writes += 1;
            state.stats.bytes_written += buf.len() as u64;
            state.last_write = Some(LastWrite {
                path,
                offset,
                bytes: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|file, _| {
            file.mark_dirty((len as usize).min(file.data.len()));
            file.data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut guard = self.disk.lock();
        let state = &mut *guard;
        if state.generation != self.generation {
            return Err(stale());
        }
        let Some(file) = state.files.get_mut(&self.path) else {
            // fsync of an open, since unlinked file succeeds and has no lasting effect.
            return Ok(());
        };
        if state.fail_syncs {
            return Err(io::Error::other("simulated sync failure"));
        }
        state.stats.file_syncs += 1;
        file.sync();
        if let Some(write) = &state.last_write {
            if write.path == self.path {
                state.last_write = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_file() -> (SimDisk, Arc<dyn StorageFile>) {
        let disk = SimDisk::new(7);
        disk.create_dir_all("t-0").unwrap();
        let file = disk.open_file("t-0/a.log", true).unwrap();
        (disk, file)
    }

    #[test]
    fn crash_drops_unsynced_bytes_and_unsynced_names() {
        let (disk, file) = disk_with_file();
        file.write_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        disk.sync_dir("t-0").unwrap();
        file.write_at(b" world", 5).unwrap();
        let other = disk.open_file("t-0/b.log", true).unwrap();
        other.write_at(b"x", 0).unwrap();
        other.sync_data().unwrap();
        disk.crash(CrashOptions::default());
        assert_eq!(disk.contents("t-0/a.log").unwrap(), b"hello");
        assert!(!disk.exists("t-0/b.log"), "name was never dir-synced");
        assert!(
            file.len().is_err(),
            "handles from before the crash are stale"
        );
        assert_eq!(disk.list_dir("t-0").unwrap(), vec!["a.log".to_string()]);
    }

    /// `list_dir` lists and `sync_dir` makes durable exactly the files whose parent is the
    /// directory: not those of a subdirectory, nor of directories whose names sort next to it.
    #[test]
    fn list_dir_and_sync_dir_see_the_files_in_that_directory_only() {
        let paths = [
            "karst.topics.0",
            "z",
            "a/x",
            "a/b/y",
            "a-0/x",
            "a.b/x",
            "a0/x",
            "ab/x",
            "b/x",
        ];
        for dir in ["", "a", "a/b", "a-0", "b", "c"] {
            let disk = SimDisk::new(1);
            for path in paths {
                disk.create_dir_all(parent(path)).unwrap();
                disk.open_file(path, true).unwrap();
            }
            let expected: Vec<String> = paths
                .iter()
                .filter(|path| parent(path) == dir)
                .map(|path| path.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if dir != "c" {
                let names: Vec<String> = expected
                    .iter()
                    .map(|path| path.rsplit('/').next().unwrap().to_string())
                    .collect();
                assert_eq!(disk.list_dir(dir).unwrap(), names, "list_dir({dir:?})");
            }
            disk.sync_dir(dir).unwrap();
            disk.crash(CrashOptions::default());
            assert_eq!(disk.paths(), expected, "sync_dir({dir:?})");
        }
    }

    #[test]
    fn torn_write_keeps_a_prefix_of_the_last_write_only() {
        for seed in 0..32 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all("d").unwrap();
            let file = disk.open_file("d/f", true).unwrap();
            file.write_at(b"abc", 0).unwrap();
            file.sync_data().unwrap();
            disk.sync_dir("d").unwrap();
            file.write_at(b"0123456789", 3).unwrap();
            disk.crash(CrashOptions {
                tear_last_write: true,
            });
            let contents = disk.contents("d/f").unwrap();
            assert!(contents.starts_with(b"abc"));
            assert!(b"abc0123456789".starts_with(&contents));
        }
    }

    /// Syncs copy only what changed since the last sync: after any mix of writes, length
    /// changes, syncs, crashes and corruption, the disk must hold exactly what a model that
    /// copies whole images holds.
    #[test]
    fn incremental_sync_matches_whole_image_copies() {
        for seed in 0..64u64 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all("d").unwrap();
            let mut file = disk.open_file("d/f", true).unwrap();
            disk.sync_dir("d").unwrap();
            let (mut data, mut synced) = (Vec::<u8>::new(), Vec::<u8>::new());
            for step in 0..200u64 {
                let r = disk.random();
                match r % 8 {
                    0..=3 => {
                        let offset = (r >> 8) as usize % (data.len() + 8);
                        let bytes: Vec<u8> =
                            (0..(r >> 20) % 64).map(|i| (step + i) as u8).collect();
                        file.write_at(&bytes, offset as u64).unwrap();
                        if data.len() < offset + bytes.len() {
                            data.resize(offset + bytes.len(), 0);
                        }
                        data[offset..offset + bytes.len()].copy_from_slice(&bytes);
                    }
                    4 => {
                        let len = (r >> 8) as usize % (data.len() + 16);
                        file.set_len(len as u64).unwrap();
                        data.resize(len, 0);
                    }
                    5 => {
                        file.sync_data().unwrap();
                        synced = data.clone();
                    }
                    6 => {
                        disk.crash(CrashOptions::default());
                        file = disk.open_file("d/f", false).unwrap();
                        data = synced.clone();
                    }
                    _ => {
                        let start = (r >> 8) % (data.len() as u64 + 4);
                        let range = start..start + (r >> 24) % 8;
                        disk.corrupt("d/f", range.clone());
                        for image in [&mut data, &mut synced] {
                            let end = (range.end as usize).min(image.len());
                            let begin = (range.start as usize).min(end);
                            image[begin..end].iter_mut().for_each(|b| *b ^= 0xFF);
                        }
                    }
                }
                assert_eq!(
                    disk.contents("d/f").unwrap(),
                    data,
                    "seed {seed} step {step}"
                );
            }
            disk.crash(CrashOptions::default());
            assert_eq!(
                disk.contents("d/f").unwrap(),
                synced,
                "seed {seed} at the end"
            );
        }
    }

    #[test]
    fn corrupt_flips_bytes_and_wipe_loses_everything() {
        let (disk, file) = disk_with_file();
        file.write_at(&[0u8; 4], 0).unwrap();
        assert!(disk.corrupt("t-0/a.log", 1..3));
        assert_eq!(disk.contents("t-0/a.log").unwrap(), vec![0, 0xFF, 0xFF, 0]);
        disk.wipe();
        assert!(disk.paths().is_empty());
        assert!(disk.list_dir("t-0").is_err());
    }
}
