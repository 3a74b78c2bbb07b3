//! The transcode cache: finished transcodes on disk, content-addressed, with
//! a size limit and least-recently-used eviction, and live encodes that any
//! number of readers follow.
//!
//! Layout: `DIR/<key>.opus` are complete entries, `DIR/tmp/*.part` are
//! encodes in progress, each locked (flock) by the process writing it. An
//! entry appears only by rename after its last byte is written and synced,
//! so a partial file is never served as whole; a killed encode leaves only
//! an unlocked `.part`, removed the next time a cache opens the folder. The
//! last use of an entry is its mtime, so the LRU order survives restarts.
//!
//! Responsible for: keys, atomic entries, eviction, sharing one encode
//! between concurrent readers, and byte-offset reads. It must never decode
//! or encode audio (it only runs a page iterator it is given), and never
//! hold its lock while doing I/O on an entry's bytes.

use crate::model::{Hash32, TrackId};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

/// Default size limit: 2 GiB (about 280 hours at 128 kb/s).
pub const DEFAULT_LIMIT: u64 = 2 << 30;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("transcode cache {path}: {source}")]
    /// A file or folder of the cache could not be read, written or listed.
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The producer of an encode failed, or its output was not whole (the
    /// producer's message); no entry was published.
    #[error("{0}")]
    Encode(String),
    /// The cache's disk could not take the bytes (full, read-only, an I/O
    /// error): the encode itself was fine, so a reader can carry on with an
    /// uncached encode of its own.
    #[error("cannot write the transcode cache: {0}")]
    Storage(String),
    /// [`Cache::shutdown`] was called: the cache starts no new encode.
    #[error("the cache is shutting down")]
    ShuttingDown,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What identifies one cached transcode, and so names its bytes exactly:
/// blake3 over the source's track id and the output spec, every other
/// input that decides the bytes (for Ogg Opus,
/// [`crate::transcode::output_spec`]: pipeline and encoder versions,
/// bitrate, the exact OpusTags with vendor string and tags). An offline
/// copy can content-address transcodes by it.
///
/// Keys of an older derivation (`v1` left out the tags and the vendor
/// string) are never produced again: their entries are not misread, they
/// age out by LRU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key(pub Hash32);

impl Key {
    /// The key of the output `spec` made from the source file `track`.
    pub fn new(track: TrackId, spec: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"tunemesh transcode key v2\0");
        h.update(track.as_bytes());
        h.update(&(spec.len() as u64).to_le_bytes());
        h.update(spec);
        Key(h.finalize().into())
    }
}

/// Where a live encode is: bytes on disk so far, and how it ended.
#[derive(Default)]
struct FlightState {
    written: u64,
    end: Option<Result<(), Failure>>,
}

/// Why an encode ended without an entry.
#[derive(Clone, Debug)]
enum Failure {
    /// The producer failed, or its output was not whole.
    Encode(String),
    /// Writing the cache failed.
    Storage(String),
}

impl From<Failure> for CacheError {
    fn from(f: Failure) -> CacheError {
        match f {
            Failure::Encode(e) => CacheError::Encode(e),
            Failure::Storage(e) => CacheError::Storage(e),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Encode(e) => f.write_str(e),
            Failure::Storage(e) => write!(f, "cannot write the transcode cache: {e}"),
        }
    }
}

/// One encode in progress, shared by its readers.
struct Flight {
    part: PathBuf,
    state: Mutex<FlightState>,
    changed: Condvar,
    changed_async: tokio::sync::Notify,
}

impl Flight {
    fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
        self.changed_async.notify_waiters();
    }

    /// Bytes available beyond `offset`, waiting for the encoder if none are
    /// yet: `Ok(0)` once the encode ended there.
    fn wait_beyond(&self, offset: u64) -> Result<u64, CacheError> {
        let mut st = self.state.lock().unwrap();
        loop {
            if st.written > offset {
                return Ok(st.written - offset);
            }
            match &st.end {
                Some(Ok(())) => return Ok(0),
                Some(Err(e)) => return Err(e.clone().into()),
                None => st = self.changed.wait(st).unwrap(),
            }
        }
    }

    async fn wait_beyond_async(&self, offset: u64) -> Result<u64, CacheError> {
        loop {
            let notified = self.changed_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state.lock().unwrap();
                if st.written > offset {
                    return Ok(st.written - offset);
                }
                match &st.end {
                    Some(Ok(())) => return Ok(0),
                    Some(Err(e)) => return Err(e.clone().into()),
                    None => {}
                }
            }
            notified.await;
        }
    }
}

struct Entry {
    size: u64,
    used: SystemTime,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    total: u64,
    flights: HashMap<Key, Arc<Flight>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// A handle on one cache folder. Encode workers hold the shared state too,
/// so they can publish their entry the moment it is complete.
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    tmp: PathBuf,
    limit: u64,
    inner: Mutex<Inner>,
    shutdown: AtomicBool,
    encodes: AtomicU64,
    part_seq: AtomicU64,
}

/// How urgently an encode is wanted: a listener waiting, or a batch (the
/// offline mirror) that must never slow one down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Someone is listening: the encode runs at the process's priority.
    #[default]
    Live,
    /// A batch: the encode thread lowers its own scheduling priority
    /// (nice 10), so live encodes and streams get the cores first.
    Background,
}

/// A source of bytes to cache: the pages of a transcode.
pub trait Producer: Send + 'static {
    /// The next bytes of the output; `Ok(None)` after the last chunk, `Err`
    /// (a message for the user) when the output cannot be produced.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String>;

    /// After the last chunk: whether the bytes written, of which `tail` is
    /// the end, are the whole output (an entry is published only if so).
    fn check_output(&mut self, tail: &[u8]) -> Result<(), String>;
}

/// How much of an entry's end [`Producer::check_output`] sees.
const CHECK_TAIL: u64 = 64 << 10;

impl Cache {
    /// Open (creating) the cache in `dir`, removing what killed encodes
    /// left behind.
    pub fn open(dir: &Path, limit: u64) -> Result<Cache, CacheError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let path = e.path();
            // A part still locked belongs to a live encode of another
            // process; an unlocked one is debris.
            if let Ok(f) = File::open(&path) {
                if f.try_lock().is_ok() {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let mut inner = Inner::default();
        for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let name = e.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".opus"))
                .and_then(|h| h.parse::<Hash32>().ok())
            else {
                continue;
            };
            let Ok(m) = e.metadata() else { continue };
            inner.total += m.len();
            inner.entries.insert(
                Key(key),
                Entry {
                    size: m.len(),
                    used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                },
            );
        }
        let shared = Shared {
            dir: dir.to_owned(),
            tmp,
            limit,
            inner: Mutex::new(inner),
            shutdown: AtomicBool::new(false),
            encodes: AtomicU64::new(0),
            part_seq: AtomicU64::new(0),
        };
        shared.evict(&mut shared.inner.lock().unwrap());
        Ok(Cache {
            shared: Arc::new(shared),
        })
    }

    /// The folder holding the cache's entries.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Encodes started by this cache (a test hook and a metric).
    pub fn encodes_started(&self) -> u64 {
        self.shared.encodes.load(Ordering::Relaxed)
    }

    /// Bytes held by complete entries.
    pub fn size(&self) -> u64 {
        self.shared.inner.lock().unwrap().total
    }

    /// Whether a complete entry exists for `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.shared.inner.lock().unwrap().entries.contains_key(key)
    }

    /// A reader of the complete entry for `key` from byte `offset`, or of
    /// the live encode if one is running; `None` if neither exists.
    pub fn open_at(&self, key: &Key, offset: u64) -> Result<Option<CacheReader>, CacheError> {
        let mut inner = self.shared.inner.lock().unwrap();
        self.shared.open_locked(&mut inner, key, offset)
    }

    /// The entry for `key`: complete, live, or started now from
    /// `producer()` (called only when neither exists, so concurrent callers
    /// share one encode). The encode runs on its own thread, to the end,
    /// even if every reader goes away: the next play is a cache hit.
    pub fn get_or_start<P: Producer>(
        &self,
        key: Key,
        producer: impl FnOnce() -> Result<P, String>,
        priority: Priority,
    ) -> Result<CacheReader, CacheError> {
        let sh = &self.shared;
        let mut inner = sh.inner.lock().unwrap();
        if let Some(r) = sh.open_locked(&mut inner, &key, 0)? {
            return Ok(r);
        }
        if sh.shutdown.load(Ordering::Relaxed) {
            return Err(CacheError::ShuttingDown);
        }
        let producer = producer().map_err(CacheError::Encode)?;
        let seq = sh.part_seq.fetch_add(1, Ordering::Relaxed);
        let part = sh
            .tmp
            .join(format!("{}.{}.{seq}.part", key.0, std::process::id()));
        let file = File::create(&part).map_err(io_err(&part))?;
        file.try_lock().map_err(|e| CacheError::Io {
            path: part.clone(),
            source: e.into(),
        })?;
        let flight = Arc::new(Flight {
            part: part.clone(),
            state: Mutex::new(FlightState::default()),
            changed: Condvar::new(),
            changed_async: tokio::sync::Notify::new(),
        });
        inner.flights.insert(key, flight.clone());
        let reader = File::open(&part).map_err(io_err(&part))?;
        sh.encodes.fetch_add(1, Ordering::Relaxed);
        inner.workers.retain(|w| !w.is_finished());
        let job = EncodeJob {
            key,
            file,
            flight: flight.clone(),
            shared: sh.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tunemesh-encode".into())
            .spawn(move || {
                if priority == Priority::Background {
                    lower_this_threads_priority();
                }
                job.run(producer)
            })
            .map_err(io_err(&part))?;
        inner.workers.push(handle);
        drop(inner);
        Ok(CacheReader {
            file: reader,
            pos: 0,
            len: None,
            flight: Some(flight),
        })
    }

    /// Wait for every encode to end (they stop early once shutdown is set)
    /// and publish the finished ones.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        self.wait_idle();
    }

    /// Wait for the running encodes to finish (not stopping them). For the
    /// CLI, whose process ends after one transcode.
    pub fn wait_idle(&self) {
        let workers = std::mem::take(&mut self.shared.inner.lock().unwrap().workers);
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn entry_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.opus", key.0))
    }

    fn open_locked(
        &self,
        inner: &mut Inner,
        key: &Key,
        offset: u64,
    ) -> Result<Option<CacheReader>, CacheError> {
        if let Some(entry) = inner.entries.get_mut(key) {
            let path = self.entry_path(key);
            match File::open(&path) {
                Ok(mut file) => {
                    let now = SystemTime::now();
                    entry.used = now;
                    let _ = file.set_modified(now);
                    let size = entry.size;
                    file.seek(SeekFrom::Start(offset.min(size)))
                        .map_err(io_err(&path))?;
                    return Ok(Some(CacheReader {
                        file,
                        pos: offset.min(size),
                        len: Some(size),
                        flight: None,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Removed behind our back: forget it.
                    let size = entry.size;
                    inner.entries.remove(key);
                    inner.total -= size;
                }
                Err(e) => return Err(CacheError::Io { path, source: e }),
            }
        }
        if let Some(flight) = inner.flights.get(key) {
            let mut file = File::open(&flight.part).map_err(io_err(&flight.part))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(io_err(&flight.part))?;
            return Ok(Some(CacheReader {
                file,
                pos: offset,
                len: None,
                flight: Some(flight.clone()),
            }));
        }
        Ok(None)
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.total > self.limit {
            let Some((&key, _)) = inner.entries.iter().min_by_key(|(_, e)| e.used) else {
                break;
            };
            let e = inner.entries.remove(&key).expect("present");
            inner.total -= e.size;
            // Readers that have it open keep reading: unlinking is safe.
            let _ = fs::remove_file(self.entry_path(&key));
            tracing::debug!(key = %key.0, size = e.size, "evicted a cached transcode");
        }
    }

    /// An encode ended: publish its entry (renamed into place by the
    /// worker) and evict, then wake its readers. Under the lock, so a new
    /// request sees either the live flight or the complete entry.
    fn finish(&self, key: Key, flight: &Flight, result: Result<(), Failure>) {
        let mut inner = self.inner.lock().unwrap();
        inner.flights.remove(&key);
        if result.is_ok() {
            if let Ok(m) = fs::metadata(self.entry_path(&key)) {
                if let Some(old) = inner.entries.insert(
                    key,
                    Entry {
                        size: m.len(),
                        used: SystemTime::now(),
                    },
                ) {
                    inner.total -= old.size;
                }
                inner.total += m.len();
            }
            self.evict(&mut inner);
        }
        flight.update(|s| s.end = Some(result));
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Nice 10 for the calling thread (Linux schedules threads one by one);
/// a failure only means the batch competes as an equal.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            tracing::debug!("cannot lower an encode's priority: {e}");
        }
    }
}

struct EncodeJob {
    key: Key,
    file: File,
    flight: Arc<Flight>,
    shared: Arc<Shared>,
}

impl EncodeJob {
    fn run<P: Producer>(mut self, mut producer: P) {
        let span = tracing::debug_span!("encode", key = %self.key.0);
        let _g = span.enter();
        let result = self.pump(&mut producer);
        if let Err(e) = &result {
            match e {
                Failure::Storage(_) => tracing::warn!("{e}; readers go on uncached"),
                Failure::Encode(_) => tracing::debug!("encode failed: {e}"),
            }
            let _ = fs::remove_file(&self.flight.part);
        }
        self.shared.finish(self.key, &self.flight, result);
    }

    fn pump<P: Producer>(&mut self, producer: &mut P) -> Result<(), Failure> {
        let storage = |what: &str| {
            let what = what.to_owned();
            move |e: io::Error| Failure::Storage(format!("{what}: {e}"))
        };
        loop {
            if self.shared.shutdown.load(Ordering::Relaxed) {
                return Err(Failure::Encode("the node is shutting down".into()));
            }
            match producer.next_chunk().map_err(Failure::Encode)? {
                Some(bytes) => {
                    self.file.write_all(&bytes).map_err(storage("write"))?;
                    let n = bytes.len() as u64;
                    self.flight.update(|s| s.written += n);
                }
                None => break,
            }
        }
        self.file.sync_all().map_err(storage("sync"))?;
        let tail = read_tail(&self.flight.part, CHECK_TAIL).map_err(storage("read back"))?;
        producer
            .check_output(&tail)
            .map_err(|e| Failure::Encode(format!("not cached, the output is not whole: {e}")))?;
        let entry = self.shared.entry_path(&self.key);
        fs::rename(&self.flight.part, &entry).map_err(storage("publish"))?;
        // The entry is whole already (synced and checked above): a rename
        // lost to a power cut costs a re-encode, not a wrong entry.
        if let Err(e) = crate::fsutil::sync_parent(&entry) {
            tracing::debug!("cannot sync the cache folder: {e}");
        }
        Ok(())
    }
}

/// The last `n` bytes of the file at `path`.
fn read_tail(path: &Path, n: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut v = Vec::with_capacity(n.min(len) as usize);
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads one cache entry, complete or live, from some byte offset. A live
/// reader returns what the encoder has written and waits for the rest; an
/// encode that fails makes the read fail (never a silent short stream).
pub struct CacheReader {
    file: File,
    pos: u64,
    len: Option<u64>,
    flight: Option<Arc<Flight>>,
}

impl CacheReader {
    /// The total length, known for complete entries only.
    pub fn total_len(&self) -> Option<u64> {
        self.len
    }

    /// The byte offset of the next read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Whether the entry is complete (not a live encode).
    pub fn is_complete(&self) -> bool {
        self.flight.is_none()
    }

    /// The next chunk of bytes (up to `max`), waiting without blocking a
    /// runtime thread; an empty vector at the end.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Vec<u8>, CacheError> {
        let avail = match &self.flight {
            Some(f) => f.wait_beyond_async(self.pos).await?,
            None => self.len.unwrap_or(0).saturating_sub(self.pos),
        };
        let n = avail.min(max as u64) as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut file = self.file.try_clone().map_err(|e| CacheError::Io {
            path: PathBuf::new(),
            source: e,
        })?;
        let pos = self.pos;
        let buf = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            file.seek(SeekFrom::Start(pos))?;
            file.read_exact(&mut buf)?;
            Ok::<_, io::Error>(buf)
        })
        .await
        .map_err(|e| CacheError::Encode(e.to_string()))?
        .map_err(|e| CacheError::Io {
            path: PathBuf::new(),
            source: e,
        })?;
        self.pos += n as u64;
        Ok(buf)
    }
}

impl Read for CacheReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let avail = match &self.flight {
            Some(f) => f.wait_beyond(self.pos).map_err(io::Error::other)?,
            None => self.len.unwrap_or(0).saturating_sub(self.pos),
        };
        let n = avail.min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.read_exact(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of bytes, then a verdict on the whole.
    struct Chunks {
        left: Vec<Vec<u8>>,
        whole: bool,
    }

    impl Producer for Chunks {
        fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
            Ok((!self.left.is_empty()).then(|| self.left.remove(0)))
        }

        fn check_output(&mut self, tail: &[u8]) -> Result<(), String> {
            assert!(
                tail.ends_with(b"end"),
                "the tail is the end of what was written"
            );
            if self.whole {
                Ok(())
            } else {
                Err("the last page ends early".into())
            }
        }
    }

    fn key(n: u8) -> Key {
        Key::new(TrackId::from_bytes([n; 32]), b"test spec")
    }

    #[test]
    fn only_outputs_checked_whole_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        for (n, whole) in [(1u8, true), (2, false)] {
            let mut r = cache
                .get_or_start(
                    key(n),
                    || {
                        Ok(Chunks {
                            left: vec![b"some ".to_vec(), b"bytes ".to_vec(), b"end".to_vec()],
                            whole,
                        })
                    },
                    // A batch encode publishes its entry like any other.
                    if whole {
                        Priority::Background
                    } else {
                        Priority::Live
                    },
                )
                .unwrap();
            let mut got = Vec::new();
            let read = r.read_to_end(&mut got);
            cache.wait_idle();
            if whole {
                assert_eq!(got, b"some bytes end");
                assert!(cache.contains(&key(n)));
            } else {
                // The reader is told, and nothing is kept.
                let e = read.unwrap_err().to_string();
                assert!(e.contains("not whole"), "{e}");
                assert!(!cache.contains(&key(n)));
                assert!(cache.open_at(&key(n), 0).unwrap().is_none());
            }
        }
        let parts = fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(parts, 0, "no part file is left");
    }
}
