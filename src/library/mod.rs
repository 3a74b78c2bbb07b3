//! The library scanner: turns folders of music into index updates.
//!
//! Responsible for walking folders, recognising audio by content, hashing
//! whole files (the track id), reading tags, choosing cover art, and keeping
//! the index current incrementally (size + mtime) or continuously
//! ([`watch`]). Work is split three ways: one walker thread lists folders and
//! decides what must be (re)read, a bounded pool of workers reads, hashes and
//! parses, and the calling thread alone writes the index in atomic batches.
//! A supervisor gives each file a time limit, so one pathological file can
//! never hang a scan.
//!
//! This module must never touch sled (it goes through [`crate::index`]) and
//! must never write to the music folders.

pub mod generate;
mod probe;
mod tags;
mod walk;
pub mod watch;

use crate::index::{Derived, DirFiles, Index, IndexError, NewTrack};
use crate::model::{Cover, CoverId, FileError, FileState, Outcome, Tags, Track, TrackId};
use crossbeam_channel::{bounded, Receiver, Sender};
use rustc_hash::FxHashSet;
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bumped whenever the scanner would read a file differently: every file read
/// by an older scanner is read again on the next scan.
pub const SCANNER_VERSION: u32 = 2;

/// Files up to this size are read into memory once, hashed and parsed from
/// the same buffer; bigger ones are streamed.
const IN_MEMORY_MAX: u64 = 32 << 20;
/// Index operations per batch (about two per file read). Small batches keep
/// sled's single committer thread busy in step with the readers and leave
/// little to apply after the last file is read; measured on 10k small
/// files (interleaved runs): 4096 → 260 ms, 1024 → 222-246 ms, 512 → 221
/// ms, 256 → 224 ms; on 100k files 512 beats 4096 too (2.6 s vs 2.9 s).
const COMMIT_OPS: usize = 512;
/// Folder images bigger than this are ignored.
const FOLDER_IMAGE_MAX: u64 = 20 << 20;

/// Why a scan stopped. Files and folders that cannot be read do not stop a
/// scan: they are recorded as errors in the index and in
/// [`ScanReport::errors`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A folder could not be read. Nothing in the scanner returns this at
    /// present (see above).
    #[error("cannot scan {}: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing the index failed; the batches committed before the
    /// failure stay in the index.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A scanner thread could not be started or stopped unexpectedly.
    #[error("scan failed: {0}")]
    Internal(String),
}

/// How [`scan`] works.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Worker threads reading files.
    pub threads: usize,
    /// Longest time one file may take before it is reported and skipped.
    pub file_timeout: Duration,
    /// Re-read every file even if its size and mtime did not change.
    pub force: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            file_timeout: Duration::from_secs(30),
            force: false,
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Files found so far.
    pub found: u64,
    /// Files that need reading (new or changed), found so far.
    pub to_read: u64,
    /// Of those, read so far.
    pub read: u64,
    /// The walk is over: `to_read` is final.
    pub walk_done: bool,
}

/// The outcome of a scan, as `tunemesh scan --json` prints it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScanReport {
    /// Audio files indexed under the scanned folders.
    pub files: usize,
    /// Distinct tracks (contents) among them.
    pub tracks: usize,
    /// Audio files that were not indexed before.
    pub added: usize,
    /// Indexed files that were read again because they changed.
    pub changed: usize,
    /// Indexed files that are gone.
    pub removed: usize,
    /// Everything under the scanned folders that could not be indexed.
    pub errors: Vec<FileError>,
    /// Wall-clock time of the whole scan, in milliseconds.
    pub elapsed_ms: u64,
}

/// Scan `scopes` (folders or single files) into `index`.
pub fn scan(
    index: &Index,
    scopes: &[PathBuf],
    opts: &ScanOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    // What the index knows below the scopes: folder -> file name -> state.
    let mut before: HashMap<PathBuf, DirFiles> = HashMap::new();
    for s in scopes {
        for (dir, files) in index.files_under(s)? {
            before.entry(dir).or_default().extend(files);
        }
    }
    let before = Arc::new(before);
    let mut pool = Pool::start(opts.threads.max(1));
    let (walk_tx, mut walk_rx) = bounded::<WalkMsg>(1);

    let mut report = ScanReport::default();
    let mut prog = Progress::default();
    let mut writer = index.writer();
    let mut last_commit = Instant::now();
    let mut walk_result: Option<WalkDone> = None;
    let mut done = 0u64;
    // Distinct tracks among the files read in this scan.
    let mut read = ReadTally::default();

    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(), ScanError> {
        let before_w = before.clone();
        let jobs = pool.jobs.clone();
        let force = opts.force;
        let cancel = &cancel;
        std::thread::Builder::new()
            .name("tunemesh-walk".into())
            .spawn_scoped(s, move || {
                let done = walk_all(scopes, &before_w, force, cancel, &jobs, &walk_tx);
                drop(jobs);
                let _ = walk_tx.send(WalkMsg::Done(done));
            })
            .map_err(|e| ScanError::Internal(format!("cannot start the folder walker: {e}")))?;
        let mut drive = || -> Result<(), ScanError> {
            while walk_result.as_ref().is_none_or(|w| done < w.jobs) {
                crossbeam_channel::select! {
                    recv(pool.results) -> r => {
                        let Ok(results) = r else { break };
                        for r in results {
                            done += 1;
                            apply(&mut writer, r, &mut report, &mut read)?;
                        }
                        prog.read = done;
                    }
                    recv(walk_rx) -> m => match m {
                        Ok(WalkMsg::Found { found, to_read }) => {
                            prog.found = found;
                            prog.to_read = to_read;
                        }
                        Ok(WalkMsg::Done(d)) => {
                            // The walker is finished; stop listening to it.
                            walk_rx = crossbeam_channel::never();
                            tracing::debug!(ms = started.elapsed().as_millis() as u64, files = d.jobs, "walk finished");
                            prog.walk_done = true;
                            prog.to_read = d.jobs;
                            prog.found = d.found;
                            walk_result = Some(d);
                        }
                        Err(_) => return Err(ScanError::Internal("the folder walker stopped unexpectedly".into())),
                    },
                    default(Duration::from_millis(100)) => {}
                }
                for r in pool.reap(opts.file_timeout) {
                    done += 1;
                    apply(&mut writer, r, &mut report, &mut read)?;
                }
                let batch = COMMIT_OPS.max(writer.dirty_folder_entries());
                if writer.len() > batch || last_commit.elapsed() > Duration::from_millis(300) {
                    writer.commit_in_background()?;
                    last_commit = Instant::now();
                    progress(&prog);
                }
            }
            Ok(())
        };
        let r = drive();
        if r.is_err() {
            // Unblock the walker and workers so the scope can end.
            cancel.store(true, Ordering::SeqCst);
            while walk_result.is_none() && !prog.walk_done {
                crossbeam_channel::select! {
                    recv(pool.results) -> _ => {}
                    recv(walk_rx) -> m => match m {
                        Ok(WalkMsg::Done(d)) => walk_result = Some(d),
                        Ok(_) => {}
                        Err(_) => break,
                    },
                }
            }
        }
        r
    })?;
    pool.shutdown();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "all files read and applied"
    );
    let walked = walk_result.expect("walk finished");

    // Whatever was indexed below the scopes and not seen now is gone, unless
    // it sits below a folder that could not be read this time.
    for (dir, files) in before.iter() {
        if walked.unreadable.iter().any(|d| dir.starts_with(d)) {
            continue;
        }
        let seen = walked.seen.get(dir);
        for (name, state) in files {
            if seen.is_some_and(|s| s.contains(name)) {
                continue;
            }
            if matches!(state.outcome, Outcome::Track(_)) {
                report.removed += 1;
            }
            writer.remove_file(&dir.join(crate::index::path_from_bytes(name)))?;
        }
    }
    writer.commit()?;
    // Folder-level problems (errors of paths that are not files): replace
    // last scan's with this scan's. File errors live and die with the file.
    for scope in scopes {
        for e in index.errors(Some(scope))? {
            let keep = match index.file_state(&e.path)? {
                Some(s) => matches!(s.outcome, Outcome::Error(_)),
                None => walked.problems.iter().any(|p| p.0 == e.path),
            };
            if !keep {
                writer.clear_error(&e.path);
            }
        }
    }
    for (path, error) in &walked.problems {
        writer.set_error(path, error);
    }
    writer.commit()?;
    drop(writer);
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "removals and errors committed"
    );
    index.flush()?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "flushed");
    progress(&prog);

    // What is indexed under the scopes now: this scan's results, else what
    // was there before (unchanged files were skipped).
    let mut ids = read.ids;
    ids.extend(walked.kept.iter().copied());
    report.files = read.files + walked.kept.len();
    for scope in scopes {
        report.errors.extend(index.errors(Some(scope))?);
    }
    report.tracks = ids.len();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Audio files read in this scan and their distinct track ids.
#[derive(Default)]
struct ReadTally {
    files: usize,
    ids: FxHashSet<TrackId>,
}

fn apply(
    writer: &mut crate::index::Writer<'_>,
    r: FileResult,
    report: &mut ScanReport,
    read: &mut ReadTally,
) -> Result<(), ScanError> {
    let Some(state) = r.state else {
        // Vanished between listing and reading. It was listed, so the
        // removal pass would keep it: remove it here.
        if let Some(old) = &r.old {
            if matches!(old.outcome, Outcome::Track(_)) {
                report.removed += 1;
            }
            writer.remove_file(&r.path)?;
        }
        return Ok(());
    };
    if let Outcome::Track(id) = state.outcome {
        read.files += 1;
        read.ids.insert(id);
    }
    let was_track = matches!(r.old.as_ref().map(|s| &s.outcome), Some(Outcome::Track(_)));
    match (was_track, matches!(state.outcome, Outcome::Track(_))) {
        (true, true) => report.changed += 1,
        (false, true) => report.added += 1,
        (true, false) => report.removed += 1,
        (false, false) => {}
    }
    let (track, cover) = match r.track {
        Some((t, c, d)) => (Some((t, d)), c),
        None => (None, None),
    };
    let track = track.map(|(track, derived)| NewTrack {
        track,
        cover: cover.as_deref(),
        derived: Some(derived),
    });
    writer.set_file_after(&r.path, r.old.as_ref(), &state, track)?;
    Ok(())
}

// ----- walker ---------------------------------------------------------------

enum WalkMsg {
    Found { found: u64, to_read: u64 },
    Done(WalkDone),
}

struct WalkDone {
    /// Files listed.
    found: u64,
    /// Jobs handed to the pool.
    jobs: u64,
    /// Files listed in folders the index already knew: folder -> names.
    /// (In a folder it did not know, nothing can have been removed.)
    seen: HashMap<PathBuf, FxHashSet<Vec<u8>>>,
    /// Track ids of the unchanged files, which were not read again.
    kept: Vec<TrackId>,
    /// Folders that could not be listed.
    unreadable: Vec<PathBuf>,
    /// Folder-level problems (unreadable folders, symlink loops).
    problems: Vec<(PathBuf, String)>,
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Signature of a folder image from its metadata: lets a rescan see that a
/// folder's cover changed without reading it.
fn image_signature(path: &Path, m: &Metadata) -> CoverId {
    let mut h = blake3::Hasher::new();
    h.update(crate::index::path_bytes(path));
    h.update(&m.len().to_le_bytes());
    h.update(&mtime_ns(m).to_le_bytes());
    h.finalize().into()
}

fn walk_all(
    scopes: &[PathBuf],
    before: &HashMap<PathBuf, DirFiles>,
    force: bool,
    cancel: &AtomicBool,
    jobs: &Sender<Vec<Job>>,
    events: &Sender<WalkMsg>,
) -> WalkDone {
    let mut done = WalkDone {
        found: 0,
        jobs: 0,
        seen: HashMap::new(),
        kept: vec![],
        unreadable: vec![],
        problems: vec![],
    };
    let mut visited = HashSet::new();
    let mut found = 0u64;
    let mut last_event = Instant::now();
    for scope in scopes {
        let mut problems = vec![];
        walk::walk(
            scope,
            &mut visited,
            |dir| {
                let sig = dir
                    .folder_image
                    .as_ref()
                    .map(|(p, m)| image_signature(p, m));
                let mut folder_cover: Option<Option<Arc<Cover>>> = None;
                let known = before.get(&dir.dir);
                let mut seen = known.map(|_| done.seen.entry(dir.dir.clone()).or_default());
                let mut batch = Vec::new();
                for (path, meta) in dir.files {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    found += 1;
                    let name = path
                        .file_name()
                        .map(|n| crate::index::path_bytes(Path::new(n)).to_vec())
                        .unwrap_or_default();
                    let old = known.and_then(|k| k.get(&name));
                    // Only a known file needs a stat to decide; a new one is
                    // stat'ed by its reader, on the open file.
                    let meta = match (meta, old) {
                        (Some(m), _) => Some(m),
                        (None, Some(_)) => std::fs::metadata(&path).ok(),
                        (None, None) => None,
                    };
                    let unchanged = old.zip(meta.as_ref()).is_some_and(|(s, meta)| {
                        !force
                            && s.size == meta.len()
                            && s.mtime_ns == mtime_ns(meta)
                            && s.folder_cover == sig
                            && s.scanner_version == SCANNER_VERSION
                    });
                    if unchanged {
                        if let Some(Outcome::Track(id)) = old.map(|s| &s.outcome) {
                            done.kept.push(*id);
                        }
                    }
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(name);
                    }
                    if unchanged {
                        continue;
                    }
                    let cover = folder_cover
                        .get_or_insert_with(|| {
                            dir.folder_image
                                .as_ref()
                                .and_then(|(p, m)| read_image(p, m))
                        })
                        .clone();
                    let job = Job {
                        path,
                        old: old.cloned(),
                        stat: meta.map(|m| (m.len(), mtime_ns(&m))),
                        folder_sig: sig,
                        folder_cover: cover,
                    };
                    batch.push(job);
                    done.jobs += 1;
                    if batch.len() >= JOB_BATCH && jobs.send(std::mem::take(&mut batch)).is_err() {
                        return;
                    }
                }
                if !batch.is_empty() && jobs.send(batch).is_err() {
                    return;
                }
                if last_event.elapsed() > Duration::from_millis(100) {
                    last_event = Instant::now();
                    let _ = events.try_send(WalkMsg::Found {
                        found,
                        to_read: done.jobs,
                    });
                }
            },
            |p| problems.push(p),
        );
        for p in problems {
            if p.unreadable_dir {
                done.unreadable.push(p.path.clone());
            }
            done.problems.push((p.path, p.error));
        }
    }
    done.found = found;
    done
}

fn read_image(path: &Path, m: &Metadata) -> Option<Arc<Cover>> {
    if m.len() == 0 || m.len() > FOLDER_IMAGE_MAX {
        return None;
    }
    let data = std::fs::read(path).ok()?;
    let mime = tags::sniff_image_mime(&data);
    if !mime.starts_with("image/") {
        return None;
    }
    Some(Arc::new(Cover {
        id: CoverId::of(&data),
        mime: mime.to_owned(),
        data,
    }))
}

// ----- workers --------------------------------------------------------------

struct Job {
    path: PathBuf,
    /// What the index knew of this path before the scan.
    old: Option<FileState>,
    /// Size and mtime, if the walker already read them.
    stat: Option<(u64, i64)>,
    folder_sig: Option<CoverId>,
    folder_cover: Option<Arc<Cover>>,
}

struct FileResult {
    path: PathBuf,
    old: Option<FileState>,
    /// `None`: the file vanished before it could be read.
    state: Option<FileState>,
    /// The track, its cover, and what the index derives from it (computed
    /// here, on a worker, to keep the single writer light).
    track: Option<(Track, Option<Arc<Cover>>, Arc<Derived>)>,
}

impl FileResult {
    fn failed(path: PathBuf, old: Option<FileState>, error: String) -> FileResult {
        // Size 0 / mtime 0 never match a real file, so the next scan retries.
        FileResult {
            path,
            old,
            state: Some(FileState {
                size: 0,
                mtime_ns: 0,
                folder_cover: None,
                scanner_version: SCANNER_VERSION,
                outcome: Outcome::Error(error),
            }),
            track: None,
        }
    }
}

/// Files per job message: a folder's files travel together, so a worker
/// wakes up once per folder rather than once per file.
const JOB_BATCH: usize = 64;
/// Results a worker collects before sending them to the writer.
const RESULT_BATCH: usize = 32;

/// What a worker is doing, shared with the supervisor.
#[derive(Default)]
struct SlotState {
    /// The file being read, what the index knew of it, and since when.
    current: Option<(PathBuf, Option<FileState>, Instant)>,
    /// Jobs received but not started.
    queue: std::collections::VecDeque<Job>,
    /// Results not yet sent.
    results: Vec<FileResult>,
}

/// A worker's state and whether the supervisor gave up on it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    abandoned: AtomicBool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bounded pool of reader threads, supervised for per-file time limits.
struct Pool {
    jobs: Sender<Vec<Job>>,
    job_rx: Receiver<Vec<Job>>,
    results: Receiver<Vec<FileResult>>,
    result_tx: Sender<Vec<FileResult>>,
    slots: Vec<Arc<Slot>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize) -> Pool {
        let (jobs, job_rx) = bounded(threads * 2);
        let (result_tx, results) = bounded(threads * 4);
        let mut pool = Pool {
            jobs,
            job_rx,
            results,
            result_tx,
            slots: vec![],
            handles: vec![],
        };
        for _ in 0..threads {
            pool.spawn_worker(Default::default());
        }
        pool
    }

    /// Start a worker, with `queue` as its first jobs.
    fn spawn_worker(&mut self, queue: std::collections::VecDeque<Job>) {
        let slot = Arc::new(Slot::default());
        slot.lock().queue = queue;
        let rx = self.job_rx.clone();
        let tx = self.result_tx.clone();
        let my = slot.clone();
        let h = std::thread::Builder::new()
            .name("tunemesh-scan".into())
            .spawn(move || worker(&my, &rx, &tx))
            .expect("spawn scan worker");
        self.slots.push(slot);
        self.handles.push(h);
    }

    /// Give up on files that have run past `limit`: report each as an error
    /// and replace its worker, handing the replacement the jobs the stuck
    /// one had not started (a stuck thread cannot be killed; it is left to
    /// finish or die with the process, and its result is dropped). Returns
    /// the results to apply: the stuck worker's finished ones plus one error
    /// per stuck file.
    fn reap(&mut self, limit: Duration) -> Vec<FileResult> {
        let mut out = vec![];
        let mut stuck = vec![];
        for (i, slot) in self.slots.iter().enumerate() {
            let mut st = slot.lock();
            if st
                .current
                .as_ref()
                .is_none_or(|(_, _, t)| t.elapsed() <= limit)
            {
                continue;
            }
            slot.abandoned.store(true, Ordering::SeqCst);
            let (path, old, _) = st.current.take().expect("checked");
            tracing::warn!(path = %path.display(), "file took too long; skipped");
            out.append(&mut st.results);
            out.push(FileResult::failed(
                path,
                old,
                format!(
                    "reading this file took longer than {} s; skipped",
                    limit.as_secs()
                ),
            ));
            stuck.push((i, std::mem::take(&mut st.queue)));
        }
        for (i, queue) in stuck.into_iter().rev() {
            self.slots.remove(i);
            drop(self.handles.remove(i)); // detach
            self.spawn_worker(queue);
        }
        out
    }

    fn shutdown(self) {
        drop(self.jobs);
        drop(self.job_rx);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// A reader thread: takes jobs from its queue (refilled from the shared
/// channel), reads each file, and sends results in batches.
fn worker(slot: &Slot, rx: &Receiver<Vec<Job>>, tx: &Sender<Vec<FileResult>>) {
    loop {
        let next = {
            let mut st = slot.lock();
            if slot.abandoned.load(Ordering::SeqCst) {
                return;
            }
            match st.queue.pop_front() {
                Some(job) => {
                    st.current = Some((job.path.clone(), job.old.clone(), Instant::now()));
                    Some(job)
                }
                None => None,
            }
        };
        let Some(job) = next else {
            // Idle: deliver what is done before waiting for more.
            let results = std::mem::take(&mut slot.lock().results);
            if !results.is_empty() && tx.send(results).is_err() {
                return;
            }
            match rx.recv() {
                Ok(batch) => slot.lock().queue.extend(batch),
                Err(_) => return,
            }
            continue;
        };
        let r = read_file(job);
        let full = {
            let mut st = slot.lock();
            if slot.abandoned.load(Ordering::SeqCst) {
                return; // the supervisor already reported this file
            }
            st.current = None;
            st.results.push(r);
            (st.results.len() >= RESULT_BATCH).then(|| std::mem::take(&mut st.results))
        };
        if let Some(results) = full {
            if tx.send(results).is_err() {
                return;
            }
        }
    }
}

/// Extensions never worth opening: images, playlists, text. Anything else is
/// sniffed, so audio is recognised by content whatever its name.
const SKIP_EXTS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff", "txt", "nfo", "cue", "log", "pdf",
    "m3u", "m3u8", "pls", "db", "ini", "sfv", "md5", "ffp", "accurip", "xml", "json", "html",
    "htm", "lrc", "url", "md", "doc", "docx", "rtf", "zip", "rar", "7z", "par2", "sh", "exe",
];
/// Extensions that promise audio: if the content is not, that is an error.
const AUDIO_EXTS: &[&str] = &[
    "mp3", "mp2", "flac", "ogg", "oga", "opus", "m4a", "m4b", "mp4", "aac", "alac", "wav", "aif",
    "aiff", "aifc", "ape", "wv", "mpc", "spx", "wma",
];

fn ext_of(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

fn read_file(job: Job) -> FileResult {
    let ext = ext_of(&job.path);
    let promised_audio = ext.as_deref().is_some_and(|e| AUDIO_EXTS.contains(&e));
    let skip = !promised_audio && ext.as_deref().is_some_and(|e| SKIP_EXTS.contains(&e));
    let mut stat = job.stat;
    let (outcome, track) = match read_audio(&job, &mut stat, promised_audio, skip) {
        Ok(Some((track, cover))) => {
            let derived = Arc::new(crate::index::derive(&track));
            (
                Some(Outcome::Track(track.id)),
                Some((track, cover, derived)),
            )
        }
        Ok(None) => (Some(Outcome::NotAudio), None),
        Err(ReadError::Vanished) => (None, None),
        Err(ReadError::Bad(e)) => (Some(Outcome::Error(e)), None),
    };
    // Without a stat (the file could not even be opened), size 0 / mtime 0
    // never match a real file, so the next scan tries again.
    let (size, mtime_ns) = stat.unwrap_or((0, 0));
    FileResult {
        state: outcome.map(|outcome| FileState {
            size,
            mtime_ns,
            folder_cover: job.folder_sig,
            scanner_version: SCANNER_VERSION,
            outcome,
        }),
        track,
        path: job.path,
        old: job.old,
    }
}

enum ReadError {
    Vanished,
    Bad(String),
}

/// Read one file as a scan would (content checks, blake3 id, tags,
/// fallbacks), without the index: for commands given a path. A file that is
/// not audio, or is damaged, is an error saying why.
pub fn read_track(path: &Path) -> Result<Track, String> {
    let job = Job {
        path: path.to_owned(),
        old: None,
        stat: None,
        folder_sig: None,
        folder_cover: None,
    };
    match read_audio(&job, &mut None, true, false) {
        Ok(Some((track, _))) => Ok(track),
        Ok(None) => Err(format!("{}: not an audio file", path.display())),
        Err(ReadError::Vanished) => Err(format!("{}: no such file", path.display())),
        Err(ReadError::Bad(e)) => Err(format!("{}: {e}", path.display())),
    }
}

type ReadOk = Option<(Track, Option<Arc<Cover>>)>;

/// Read, check, hash and parse one file. `stat` is filled in from the open
/// file when the walker did not provide it.
fn read_audio(
    job: &Job,
    stat: &mut Option<(u64, i64)>,
    promised_audio: bool,
    skip: bool,
) -> Result<ReadOk, ReadError> {
    // Warnings about what a file claims name the file.
    let _span = tracing::warn_span!("scan", path = %job.path.display()).entered();
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::Vanished
        } else {
            ReadError::Bad(format!("cannot read file: {e}"))
        }
    };
    if skip {
        if stat.is_none() {
            let m = std::fs::metadata(&job.path).map_err(io)?;
            *stat = Some((m.len(), mtime_ns(&m)));
        }
        return Ok(None);
    }
    let mut file = std::fs::File::open(&job.path).map_err(io)?;
    if stat.is_none() {
        let m = file.metadata().map_err(io)?;
        *stat = Some((m.len(), mtime_ns(&m)));
    }
    // Size as of the stat; a file still growing is caught by the next scan
    // (its size or mtime will differ), and the read below goes to EOF.
    let len = stat.map_or(0, |s| s.0);
    if len == 0 {
        return if promised_audio {
            Err(ReadError::Bad("empty file (0 bytes)".into()))
        } else {
            Ok(None)
        };
    }
    let (id, parsed, len) = if len <= IN_MEMORY_MAX {
        let buf = read_whole(&mut file, len).map_err(io)?;
        if buf.is_empty() {
            return Err(ReadError::Bad("empty file (0 bytes)".into()));
        }
        let mut cur = Cursor::new(&buf);
        let Some(ft) = recognise(&mut cur, buf.len() as u64, promised_audio)? else {
            return Ok(None);
        };
        let checked = probe::check(&mut cur, buf.len() as u64, ft).map_err(ReadError::Bad)?;
        let id = TrackId::of(&buf);
        let parsed =
            tags::read(Cursor::new(&buf), ft, checked, buf.len() as u64).map_err(ReadError::Bad)?;
        (id, parsed, buf.len() as u64)
    } else {
        let mut reader = std::io::BufReader::new(file);
        let Some(ft) = recognise(&mut reader, len, promised_audio)? else {
            return Ok(None);
        };
        let checked = probe::check(&mut reader, len, ft).map_err(ReadError::Bad)?;
        reader.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut reader).map_err(io)?;
        let id: TrackId = h.finalize().into();
        reader.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        let parsed = tags::read(reader, ft, checked, len).map_err(ReadError::Bad)?;
        (id, parsed, len)
    };
    let cover = match parsed.picture {
        Some((mime, data)) => Some(Arc::new(Cover {
            id: CoverId::of(&data),
            mime,
            data,
        })),
        None => job.folder_cover.clone(),
    };
    let mut tags = parsed.tags;
    apply_fallbacks(&mut tags, &job.path);
    Ok(Some((
        Track {
            id,
            tags,
            audio: parsed.audio,
            size: len,
            cover: cover.as_ref().map(|c| c.id),
            paths: vec![job.path.clone()],
        },
        cover,
    )))
}

/// Read a whole regular file whose size is probably `len`, to its end (a
/// file that grew since the stat is read whole; the next scan sees the
/// change). Unlike `read_to_end`, it neither stats and seeks again nor
/// probes for EOF after a short read (a regular file reads short only at
/// its end): this is the hot path of a scan of many small files.
fn read_whole(file: &mut std::fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize + 1];
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(n * 2 + 4096, 0);
        }
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) if n + k < buf.len() => {
                n += k;
                break;
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// The audio format of the content, `None` if it is not audio and did not
/// claim to be, an error if it claimed to be or its header lies.
fn recognise<R: Read + Seek>(
    r: &mut R,
    len: u64,
    promised_audio: bool,
) -> Result<Option<probe::Format>, ReadError> {
    match probe::detect(r, len).map_err(ReadError::Bad)? {
        Some(ft) => Ok(Some(ft)),
        None if promised_audio => {
            let mut head = vec![0u8; 512];
            r.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| ReadError::Bad(e.to_string()))?;
            let n = r.read(&mut head).unwrap_or(0);
            head.truncate(n);
            Err(ReadError::Bad(format!(
                "not an audio file: {}",
                probe::describe(&head)
            )))
        }
        None => Ok(None),
    }
}

/// Title from the file name ("03 - Song.mp3" gives track 3, "Song"), album
/// from the folder name, when the tags do not say.
fn apply_fallbacks(tags: &mut Tags, path: &Path) {
    if tags.title.trim().is_empty() {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (num, rest) = split_track_number(&stem);
        tags.title = if rest.is_empty() {
            stem.clone()
        } else {
            rest.to_owned()
        };
        tags.title_from_path = true;
        if tags.track.is_none() {
            tags.track = num;
        }
    }
    if tags.album.trim().is_empty() {
        if let Some(dir) = path.parent().and_then(|p| p.file_name()) {
            tags.album = dir.to_string_lossy().into_owned();
            tags.album_from_path = true;
        }
    }
}

/// "03 - Song" -> (Some(3), "Song"); "1979" -> (None, "1979").
fn split_track_number(stem: &str) -> (Option<u32>, &str) {
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return (None, stem);
    }
    let rest = stem[digits..].trim_start_matches([' ', '.', '-', '_']);
    if rest.len() == stem.len() - digits || rest.is_empty() {
        return (None, stem);
    }
    (stem[..digits].parse().ok().filter(|&n| n > 0), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_number_from_file_name() {
        assert_eq!(split_track_number("03 - Song"), (Some(3), "Song"));
        assert_eq!(split_track_number("12. Intro"), (Some(12), "Intro"));
        assert_eq!(split_track_number("1979"), (None, "1979"));
        assert_eq!(split_track_number("2pac"), (None, "2pac"));
        assert_eq!(split_track_number("Song"), (None, "Song"));
    }

    /// A FIFO blocks whoever opens it until a writer shows up: a real hang.
    /// The supervisor must report it, replace the worker, and still deliver
    /// the files queued behind it.
    #[cfg(unix)]
    #[test]
    fn stuck_file_is_reported_and_the_rest_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stuck.mp3");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lib/Alpha Artist/First Album");
        let job = |path: PathBuf| Job {
            path,
            old: None,
            stat: None,
            folder_sig: None,
            folder_cover: None,
        };
        let mut pool = Pool::start(1);
        pool.jobs
            .send(vec![
                job(fifo.clone()),
                job(fixtures.join("01 - Opening.mp3")),
                job(fixtures.join("02 - Sigur.flac")),
            ])
            .unwrap();
        let mut results = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while results.len() < 3 && Instant::now() < deadline {
            results.extend(pool.reap(Duration::from_millis(200)));
            if let Ok(batch) = pool.results.recv_timeout(Duration::from_millis(50)) {
                results.extend(batch);
            }
        }
        // Release the stuck thread so the process can exit cleanly.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        pool.shutdown();
        assert_eq!(results.len(), 3);
        let stuck = results.iter().find(|r| r.path == fifo).unwrap();
        assert!(
            matches!(&stuck.state.as_ref().unwrap().outcome, Outcome::Error(e) if e.contains("longer than"))
        );
        let tracks = results.iter().filter(|r| r.track.is_some()).count();
        assert_eq!(tracks, 2, "the files behind the stuck one were read");
    }

    #[test]
    fn a_known_file_that_vanishes_before_it_is_read_leaves_the_index() {
        let data = tempfile::tempdir().unwrap();
        let index = Index::open(data.path()).unwrap();
        let path = PathBuf::from("/music/gone.mp3");
        let track = Track {
            id: TrackId::of(b"gone"),
            tags: Tags::default(),
            audio: Default::default(),
            size: 4,
            cover: None,
            paths: vec![path.clone()],
        };
        let state = FileState {
            size: 4,
            mtime_ns: 1,
            folder_cover: None,
            scanner_version: SCANNER_VERSION,
            outcome: Outcome::Track(track.id),
        };
        let mut w = index.writer();
        w.set_file(&path, &state, Some((&track, None))).unwrap();
        let vanished = FileResult {
            path: path.clone(),
            old: Some(state),
            state: None,
            track: None,
        };
        let mut report = ScanReport::default();
        apply(&mut w, vanished, &mut report, &mut ReadTally::default()).unwrap();
        w.commit().unwrap();
        drop(w);
        assert_eq!(report.removed, 1);
        assert!(index.file_state(&path).unwrap().is_none());
        assert!(index.track(&track.id).unwrap().is_none());
        assert_eq!(index.verify().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn fallbacks_from_path() {
        let mut t = Tags::default();
        apply_fallbacks(&mut t, Path::new("/m/Some Album/07_Track Name.flac"));
        assert_eq!(t.title, "Track Name");
        assert_eq!(t.track, Some(7));
        assert_eq!(t.album, "Some Album");
        assert!(t.title_from_path && t.album_from_path);
    }
}
