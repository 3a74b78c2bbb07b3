//! The mirror's blobs on disk: `offline/blobs/<hash>` are whole, checked
//! copies named by the blake3 of their bytes; `offline/part/<hash>` are
//! downloads in progress, written a checked group at a time at the
//! group's offset (sparse until done). A part becomes a blob by fsync and
//! rename, so a blob file is never partial; a part is never served.
//!
//! Blocking: every function here does file I/O and runs on a blocking job.
//! Must never: write a group it was not given already checked, or serve
//! (hand out the path of) a part.

use crate::blob::{self, Outboard};
use crate::model::Hash32;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One whole blob of the store.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Its length.
    pub len: u64,
    /// When it was last played or stored (its mtime).
    pub used: SystemTime,
}

/// The store: the folder and what it holds (listed at open, kept up to
/// date by every change).
pub struct Store {
    blobs: PathBuf,
    parts: PathBuf,
    held: Mutex<HashMap<Hash32, Held>>,
    /// Parts on disk and their lengths (so the status reads no folder).
    partial: Mutex<HashMap<Hash32, u64>>,
}

impl Store {
    /// Open (creating) the store under `dir`.
    pub fn open(dir: &Path) -> io::Result<Store> {
        let (blobs, parts) = (dir.join("blobs"), dir.join("part"));
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&parts)?;
        let held = listed(&blobs)?
            .into_iter()
            .map(|(h, m)| {
                let used = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                (h, Held { len: m.len(), used })
            })
            .collect();
        let partial = listed(&parts)?
            .into_iter()
            .map(|(h, m)| (h, m.len()))
            .collect();
        Ok(Store {
            blobs,
            parts,
            held: Mutex::new(held),
            partial: Mutex::new(partial),
        })
    }

    /// Every whole blob.
    pub fn held(&self) -> HashMap<Hash32, Held> {
        self.held.lock().unwrap().clone()
    }

    /// Whether the blob `hash` is here whole.
    pub fn has(&self, hash: &Hash32) -> bool {
        self.held.lock().unwrap().contains_key(hash)
    }

    /// Mark a whole blob as used now (for least recently played
    /// eviction; its mtime, so the order survives restarts). Blocking.
    pub fn touch(&self, hash: &Hash32) {
        let now = SystemTime::now();
        if let Some(h) = self.held.lock().unwrap().get_mut(hash) {
            h.used = now;
        }
        if let Ok(f) = File::options()
            .append(true)
            .open(self.blobs.join(hash.to_hex()))
        {
            let _ = f.set_modified(now);
        }
    }

    /// The path of a whole blob, without marking it used.
    pub fn blob_path(&self, hash: &Hash32) -> Option<PathBuf> {
        self.has(hash).then(|| self.blobs.join(hash.to_hex()))
    }

    /// Bytes of whole blobs and of parts, as the files' lengths say.
    pub fn used_bytes(&self) -> u64 {
        let whole: u64 = self.held.lock().unwrap().values().map(|h| h.len).sum();
        let parts: u64 = fs::read_dir(&self.parts)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        whole + parts
    }

    /// The parts on disk (by hash) and their lengths.
    pub fn parts(&self) -> Vec<(Hash32, u64)> {
        let Ok(d) = fs::read_dir(&self.parts) else {
            return vec![];
        };
        d.flatten()
            .filter_map(|e| {
                let h = e.file_name().to_str()?.parse::<Hash32>().ok()?;
                Some((h, e.metadata().ok()?.len()))
            })
            .collect()
    }

    /// Start or resume the download of `hash`: the part (created at its
    /// full length, sparse) and which of its groups are already there,
    /// each checked against `outboard` (so a resumed part re-verifies, and
    /// holes, which read as zeros, count as missing).
    pub fn open_part(&self, hash: &Hash32, outboard: &Outboard) -> io::Result<(Part, Vec<bool>)> {
        let path = self.parts.join(hash.to_hex());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = outboard.len();
        let groups = outboard.groups();
        let mut present = vec![false; groups as usize];
        if file.metadata()?.len() == len {
            let mut buf = vec![0u8; blob::GROUP as usize];
            for (i, p) in present.iter_mut().enumerate() {
                let r = blob::group_range(len, i as u64);
                let n = (r.end - r.start) as usize;
                file.seek(SeekFrom::Start(r.start))?;
                file.read_exact(&mut buf[..n])?;
                *p = outboard.verify_group(hash, i as u64, &buf[..n]).is_ok();
            }
        } else {
            file.set_len(0)?;
            file.set_len(len)?;
        }
        self.partial.lock().unwrap().insert(*hash, len);
        Ok((Part { file, path }, present))
    }

    /// A finished part: synced, renamed to its blob, the folder synced.
    pub fn finish(&self, hash: &Hash32, part: Part) -> io::Result<()> {
        part.file.sync_all()?;
        let len = part.file.metadata()?.len();
        drop(part.file);
        let dest = self.blobs.join(hash.to_hex());
        fs::rename(&part.path, &dest)?;
        self.partial.lock().unwrap().remove(hash);
        crate::fsutil::sync_parent(&dest)?;
        self.held.lock().unwrap().insert(
            *hash,
            Held {
                len,
                used: SystemTime::now(),
            },
        );
        Ok(())
    }

    /// Hash every whole blob again and drop those whose bytes are not
    /// their name (rot, a hand-edited file); the number dropped. Blocking,
    /// reads the whole store: run once after start, off the runtime.
    pub fn scrub(&self) -> usize {
        let hashes: Vec<Hash32> = self.held.lock().unwrap().keys().copied().collect();
        let mut dropped = 0;
        for h in hashes {
            let path = self.blobs.join(h.to_hex());
            let ok = File::open(&path)
                .and_then(|f| {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update_reader(f)?;
                    Ok(Hash32::from(hasher.finalize()) == h)
                })
                .unwrap_or(false);
            if !ok {
                tracing::warn!(hash = %h, "an offline copy no longer matches its hash: dropped (it will be fetched again)");
                if self.remove(&h).is_ok() {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Drop a blob or a part (whichever exists).
    pub fn remove(&self, hash: &Hash32) -> io::Result<()> {
        self.held.lock().unwrap().remove(hash);
        self.partial.lock().unwrap().remove(hash);
        for p in [
            self.blobs.join(hash.to_hex()),
            self.parts.join(hash.to_hex()),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The files of `dir` named by a hash, with their metadata (others are
/// not ours and are left alone).
fn listed(dir: &Path) -> io::Result<Vec<(Hash32, fs::Metadata)>> {
    Ok(fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let h = e.file_name().to_str()?.parse::<Hash32>().ok()?;
            Some((h, e.metadata().ok()?))
        })
        .collect())
}

/// A download in progress: its part file.
pub struct Part {
    file: File,
    path: PathBuf,
}

impl Part {
    /// Write checked bytes at `offset`.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_resumes_with_its_checked_groups_and_becomes_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5 * blob::GROUP as usize + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (hash, ob) = Outboard::of(&data);
        let (mut part, present) = store.open_part(&hash, &ob).unwrap();
        assert_eq!(present, vec![false; 6]);
        // Groups 0 and 2 written, group 3 written wrong (as a torn write).
        part.write_at(0, &data[..16384]).unwrap();
        part.write_at(2 * 16384, &data[2 * 16384..3 * 16384])
            .unwrap();
        part.write_at(3 * 16384, &[1u8; 100]).unwrap();
        drop(part);
        assert!(!store.has(&hash));
        assert_eq!(store.parts(), vec![(hash, data.len() as u64)]);
        let (mut part, present) = Store::open(dir.path())
            .unwrap()
            .open_part(&hash, &ob)
            .unwrap();
        assert_eq!(present, vec![true, false, true, false, false, false]);
        part.write_at(16384, &data[16384..2 * 16384]).unwrap();
        part.write_at(3 * 16384, &data[3 * 16384..]).unwrap();
        store.finish(&hash, part).unwrap();
        assert!(store.has(&hash));
        assert!(store.parts().is_empty());
        let path = store.blob_path(&hash).unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
        assert_eq!(store.used_bytes(), data.len() as u64);
        let again = Store::open(dir.path()).unwrap();
        assert!(again.has(&hash));
        assert_eq!(again.scrub(), 0);
        let mut rotten = fs::read(again.blob_path(&hash).unwrap()).unwrap();
        rotten[100] ^= 1;
        fs::write(again.blob_path(&hash).unwrap(), rotten).unwrap();
        assert_eq!(again.scrub(), 1);
        assert!(!again.has(&hash));
        again.remove(&hash).unwrap();
        assert!(!again.has(&hash) && again.used_bytes() == 0);
    }
}
