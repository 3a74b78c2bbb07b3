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

use crate::index::{Index, IndexError};
use crate::model::{Cover, CoverId, FileError, FileState, Hash32, Outcome, Tags, Track};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bumped whenever the scanner would read a file differently: every file read
/// by an older scanner is read again on the next scan.
pub const SCANNER_VERSION: u32 = 1;

/// Files up to this size are read into memory once, hashed and parsed from
/// the same buffer; bigger ones are streamed.
const IN_MEMORY_MAX: u64 = 32 << 20;
/// Folder images bigger than this are ignored.
const FOLDER_IMAGE_MAX: u64 = 20 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot scan {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("scan failed: {0}")]
    Internal(String),
}

#[derive(Clone)]
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
    let mut before: HashMap<PathBuf, FileState> = HashMap::new();
    for s in scopes {
        before.extend(index.files_under(s)?);
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

    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(), ScanError> {
        let before_w = before.clone();
        let jobs = pool.jobs.clone();
        let force = opts.force;
        let cancel = &cancel;
        s.spawn(move || {
            let done = walk_all(scopes, &before_w, force, cancel, &jobs, &walk_tx);
            drop(jobs);
            let _ = walk_tx.send(WalkMsg::Done(done));
        });
        let mut drive = || -> Result<(), ScanError> {
            while walk_result.as_ref().is_none_or(|w| done < w.jobs) {
                crossbeam_channel::select! {
                    recv(pool.results) -> r => {
                        let Ok(r) = r else { break };
                        done += 1;
                        prog.read = done;
                        apply(&mut writer, &before, r, &mut report)?;
                    }
                    recv(walk_rx) -> m => match m {
                        Ok(WalkMsg::Found { found, to_read }) => {
                            prog.found = found;
                            prog.to_read = to_read;
                        }
                        Ok(WalkMsg::Done(d)) => {
                            // The walker is finished; stop listening to it.
                            walk_rx = crossbeam_channel::never();
                            prog.walk_done = true;
                            prog.to_read = d.jobs;
                            walk_result = Some(d);
                        }
                        Err(_) => return Err(ScanError::Internal("the folder walker stopped unexpectedly".into())),
                    },
                    default(Duration::from_millis(100)) => {}
                }
                for (path, error) in pool.reap(opts.file_timeout) {
                    done += 1;
                    let r = FileResult::failed(path, error);
                    apply(&mut writer, &before, r, &mut report)?;
                }
                if writer.len() > 4096 || last_commit.elapsed() > Duration::from_millis(300) {
                    writer.commit()?;
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
    let walked = walk_result.expect("walk finished");

    // Whatever was indexed below the scopes and not seen now is gone, unless
    // it sits below a folder that could not be read this time.
    for (path, state) in before.iter() {
        if walked.seen.contains(path) || walked.unreadable.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        if matches!(state.outcome, Outcome::Track(_)) {
            report.removed += 1;
        }
        writer.remove_file(path)?;
    }
    writer.commit()?;
    // Folder-level problems (errors of paths that are not files): replace
    // last scan's with this scan's. File errors live and die with the file.
    for scope in scopes {
        for e in index.errors(Some(scope))? {
            let is_file = index.file_state(&e.path)?.is_some();
            if !is_file && !walked.problems.iter().any(|p| p.0 == e.path) {
                writer.clear_error(&e.path);
            }
        }
    }
    for (path, error) in &walked.problems {
        writer.set_error(path, error);
    }
    writer.commit()?;
    index.gc()?;
    index.flush()?;
    progress(&prog);

    let mut ids = HashSet::new();
    for scope in scopes {
        for (_, st) in index.files_under(scope)? {
            if let Outcome::Track(id) = st.outcome {
                report.files += 1;
                ids.insert(id);
            }
        }
        report.errors.extend(index.errors(Some(scope))?);
    }
    report.tracks = ids.len();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn apply(
    writer: &mut crate::index::Writer<'_>,
    before: &HashMap<PathBuf, FileState>,
    r: FileResult,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    let Some(state) = r.state else {
        // Vanished between listing and reading: the removal pass handles it.
        return Ok(());
    };
    if let Outcome::Track(_) = state.outcome {
        match before.get(&r.path).map(|s| &s.outcome) {
            Some(Outcome::Track(_)) => report.changed += 1,
            _ => report.added += 1,
        }
    } else if let Some(Outcome::Track(_)) = before.get(&r.path).map(|s| &s.outcome) {
        report.removed += 1;
    }
    let track = r.track.as_ref().map(|(t, c)| (t, c.as_deref()));
    writer.set_file(&r.path, &state, track)?;
    Ok(())
}

// ----- walker ---------------------------------------------------------------

enum WalkMsg {
    Found { found: u64, to_read: u64 },
    Done(WalkDone),
}

struct WalkDone {
    /// Jobs handed to the pool.
    jobs: u64,
    /// Every file path listed (read or skipped as unchanged).
    seen: HashSet<PathBuf>,
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
    before: &HashMap<PathBuf, FileState>,
    force: bool,
    cancel: &AtomicBool,
    jobs: &Sender<Job>,
    events: &Sender<WalkMsg>,
) -> WalkDone {
    let mut done = WalkDone {
        jobs: 0,
        seen: HashSet::new(),
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
                for (path, meta) in dir.files {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    found += 1;
                    let unchanged = before.get(&path).is_some_and(|s| {
                        !force
                            && s.size == meta.len()
                            && s.mtime_ns == mtime_ns(&meta)
                            && s.folder_cover == sig
                            && s.scanner_version == SCANNER_VERSION
                    });
                    done.seen.insert(path.clone());
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
                        size: meta.len(),
                        mtime_ns: mtime_ns(&meta),
                        folder_sig: sig,
                        folder_cover: cover,
                    };
                    if jobs.send(job).is_err() {
                        return;
                    }
                    done.jobs += 1;
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
        id: Hash32::of(&data),
        mime: mime.to_owned(),
        data,
    }))
}

// ----- workers --------------------------------------------------------------

struct Job {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    folder_sig: Option<CoverId>,
    folder_cover: Option<Arc<Cover>>,
}

struct FileResult {
    path: PathBuf,
    /// `None`: the file vanished before it could be read.
    state: Option<FileState>,
    track: Option<(Track, Option<Arc<Cover>>)>,
}

impl FileResult {
    fn failed(path: PathBuf, error: String) -> FileResult {
        // Size 0 / mtime 0 never match a real file, so the next scan retries.
        FileResult {
            path,
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

/// A worker's current job and whether the supervisor gave up on it.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<(PathBuf, Instant)>>,
    abandoned: AtomicBool,
}

/// Bounded pool of reader threads, supervised for per-file time limits.
struct Pool {
    jobs: Sender<Job>,
    job_rx: Receiver<Job>,
    results: Receiver<FileResult>,
    result_tx: Sender<FileResult>,
    slots: Vec<Arc<Slot>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize) -> Pool {
        let (jobs, job_rx) = bounded(threads * 8);
        let (result_tx, results) = bounded(threads * 8 + 64);
        let mut pool = Pool {
            jobs,
            job_rx,
            results,
            result_tx,
            slots: vec![],
            handles: vec![],
        };
        for _ in 0..threads {
            pool.spawn_worker();
        }
        pool
    }

    fn spawn_worker(&mut self) {
        let slot = Arc::new(Slot::default());
        let rx = self.job_rx.clone();
        let tx = self.result_tx.clone();
        let my = slot.clone();
        let h = std::thread::Builder::new()
            .name("tunemesh-scan".into())
            .spawn(move || {
                for job in rx {
                    *my.current.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((job.path.clone(), Instant::now()));
                    let r = read_file(job);
                    let mut cur = my.current.lock().unwrap_or_else(|e| e.into_inner());
                    if my.abandoned.load(Ordering::SeqCst) {
                        return; // the supervisor already reported this file
                    }
                    *cur = None;
                    drop(cur);
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn scan worker");
        self.slots.push(slot);
        self.handles.push(h);
    }

    /// Give up on files that have run past `limit`: report each as an error
    /// and replace its worker (a stuck thread cannot be killed; it is left
    /// to finish or die with the process, and its result is dropped).
    fn reap(&mut self, limit: Duration) -> Vec<(PathBuf, String)> {
        let mut out = vec![];
        let mut stuck = vec![];
        for (i, slot) in self.slots.iter().enumerate() {
            let mut cur = slot.current.lock().unwrap_or_else(|e| e.into_inner());
            if cur.as_ref().is_some_and(|(_, t)| t.elapsed() > limit) {
                slot.abandoned.store(true, Ordering::SeqCst);
                let (path, _) = cur.take().expect("checked");
                tracing::warn!(path = %path.display(), "file took too long; skipped");
                out.push((
                    path,
                    format!(
                        "reading this file took longer than {} s; skipped",
                        limit.as_secs()
                    ),
                ));
                stuck.push(i);
            }
        }
        for i in stuck.into_iter().rev() {
            self.slots.remove(i);
            drop(self.handles.remove(i)); // detach
            self.spawn_worker();
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
    let mk = |outcome: Outcome| FileState {
        size: job.size,
        mtime_ns: job.mtime_ns,
        folder_cover: job.folder_sig,
        scanner_version: SCANNER_VERSION,
        outcome,
    };
    if !promised_audio && ext.as_deref().is_some_and(|e| SKIP_EXTS.contains(&e)) {
        return FileResult {
            state: Some(mk(Outcome::NotAudio)),
            path: job.path,
            track: None,
        };
    }
    match read_audio(&job, promised_audio) {
        Ok(Some((track, cover))) => FileResult {
            state: Some(mk(Outcome::Track(track.id))),
            track: Some((track, cover)),
            path: job.path,
        },
        Ok(None) => FileResult {
            state: Some(mk(Outcome::NotAudio)),
            path: job.path,
            track: None,
        },
        Err(ReadError::Vanished) => FileResult {
            state: None,
            path: job.path,
            track: None,
        },
        Err(ReadError::Bad(e)) => FileResult {
            state: Some(mk(Outcome::Error(e))),
            path: job.path,
            track: None,
        },
    }
}

enum ReadError {
    Vanished,
    Bad(String),
}

type ReadOk = Option<(Track, Option<Arc<Cover>>)>;

fn read_audio(job: &Job, promised_audio: bool) -> Result<ReadOk, ReadError> {
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::Vanished
        } else {
            ReadError::Bad(format!("cannot read file: {e}"))
        }
    };
    let mut file = std::fs::File::open(&job.path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return if promised_audio {
            Err(ReadError::Bad("empty file (0 bytes)".into()))
        } else {
            Ok(None)
        };
    }
    let (id, parsed) = if len <= IN_MEMORY_MAX {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).map_err(io)?;
        let mut cur = Cursor::new(&buf);
        let Some(ft) = recognise(&mut cur, buf.len() as u64, promised_audio)? else {
            return Ok(None);
        };
        let comments = probe::check(&mut cur, buf.len() as u64, ft).map_err(ReadError::Bad)?;
        let id = Hash32::of(&buf);
        (
            id,
            tags::read(Cursor::new(&buf), ft, comments).map_err(ReadError::Bad)?,
        )
    } else {
        let mut reader = std::io::BufReader::new(file);
        let Some(ft) = recognise(&mut reader, len, promised_audio)? else {
            return Ok(None);
        };
        let comments = probe::check(&mut reader, len, ft).map_err(ReadError::Bad)?;
        reader.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut reader).map_err(io)?;
        let id: Hash32 = h.finalize().into();
        reader.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        (
            id,
            tags::read(reader, ft, comments).map_err(ReadError::Bad)?,
        )
    };
    let cover = match parsed.picture {
        Some((mime, data)) => Some(Arc::new(Cover {
            id: Hash32::of(&data),
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
