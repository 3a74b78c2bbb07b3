//! The durable, content-addressed library index. The only module that knows
//! sled.
//!
//! Everything lives in one sled tree under one-byte key prefixes, so that a
//! whole update (file states, track records, album/artist/cover reference
//! counts, error entries) is one atomic [`sled::Batch`]: after a crash at any
//! moment the index holds a consistent prefix of the batches, never half of
//! one.
//!
//! | prefix | key              | value                                            |
//! |--------|------------------|--------------------------------------------------|
//! | `T`    | track id         | search document, then `TrackRecord` (see below)  |
//! | `D`    | folder path      | `DirRecord`: the state of every file in it       |
//! | `E`    | path             | `ScanError`                                      |
//! | `A`    | album key (16)   | `AlbumRecord` with its track count               |
//! | `R`    | artist key (16)  | `ArtistRecord` with its track count              |
//! | `C`    | cover id         | `CoverBlob`                                      |
//! | `c`    | cover id         | number of tracks using the cover (u64 LE)        |
//! | `O`    | root path        | (library root)                                   |
//! | `M`    | name             | index metadata (format version)                  |
//! | `P`    | peer · track id  | a member's track record, as received (`remote.rs`) |
//! | `F`    | album id (16)    | when this device first saw the album (`first_seen.rs`) |
//!
//! Write cost is what shapes this layout: a new file costs one track insert
//! plus its share of one folder record and one album record, because sled
//! pays per key. Derived records are reference-counted in the same batch as
//! the tracks that use them, so none is ever orphaned or dangling.
//!
//! A track value is `u16 LE length, normalised search document, encoded
//! TrackRecord`: search loads documents without decoding records, and the
//! snapshot hashes only the record.
//!
//! This module must never read files or parse audio: the scanner hands it
//! finished facts.

mod codec;
mod first_seen;
mod remote;
pub mod search;
pub mod snapshot;

use crate::catalog::Prefix;
use crate::model::{
    Album, Artist, Cover, CoverId, FileError, FileState, Hash32, Outcome, Track, TrackId,
};
use crate::proto;
pub use codec::{path_bytes, path_from_bytes};
use prost::Message;
pub use remote::decode_record;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// sled's page cache. Reads are few after a scan (the catalog answers
/// listings from memory), so it stays small: it is most of an idle node's
/// memory otherwise.
const CACHE_BYTES: u64 = 16 << 20;

/// On-disk format of the index; a newer one is refused, not misread.
const FORMAT: u32 = 2;

const T: u8 = b'T';
const D: u8 = b'D';
const E: u8 = b'E';
const A: u8 = b'A';
const R: u8 = b'R';
const C: u8 = b'C';
const C_COUNT: u8 = b'c';
const O: u8 = b'O';
const M: u8 = b'M';

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process holds the lock on the index database at this path.
    #[error("the index at {0} is in use by another tunemesh process")]
    Locked(PathBuf),
    /// The database at `path` could not be opened.
    #[error("cannot open the index at {path}: {source}")]
    Open {
        /// The database directory: `index` inside the folder given to
        /// [`Index::open`].
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },
    /// A read or write of the database failed.
    #[error("index storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("corrupt index entry under key {key:?}: {reason}")]
    Corrupt {
        /// The key of the value, lossily as text (its first byte names the
        /// record kind).
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A track record received from a peer does not decode to the id it was
    /// sent under; nothing of that batch was stored.
    #[error("received track record rejected: {0}")]
    Rejected(String),
    /// The background thread applying committed batches has stopped.
    #[error("index writer: {0}")]
    Writer(String),
    /// The index was written by another version of tunemesh, in an on-disk
    /// format this build does not read (0: an index without a format marker).
    #[error("the index at {path} has format {found}; this tunemesh reads format {FORMAT}")]
    Format {
        /// The database directory.
        path: PathBuf,
        /// The format the index is marked with.
        found: u32,
    },
    /// Refused before sled saw it: an I/O error inside sled poisons the
    /// open database for the rest of the process, so the index keeps a
    /// reserve and stops writing short of a full disk.
    #[error("the index's disk is full ({available} bytes free, {reserve} kept in reserve): nothing was written; free some space")]
    DiskFull {
        /// Bytes free on the index's disk.
        available: u64,
        /// Bytes the index keeps free: 1% of the disk, clamped to 1–64 MiB.
        reserve: u64,
    },
}

/// Free space the index leaves on its disk: a batch is not applied with
/// less. 1% of the disk, at least 1 MiB and at most 64 MiB: room for
/// sled's own buffers to reach the disk whatever happens.
#[derive(Clone, Debug)]
struct Reserve {
    dir: PathBuf,
    bytes: u64,
}

impl Reserve {
    fn new(dir: &Path) -> Reserve {
        let total = fs2::total_space(dir).unwrap_or(0);
        Reserve {
            dir: dir.to_owned(),
            bytes: (total / 100).clamp(1 << 20, 64 << 20),
        }
    }

    /// `Err` when the disk has less than the reserve free.
    fn check(&self) -> Result<()> {
        match fs2::available_space(&self.dir) {
            Ok(available) if available < self.bytes => Err(IndexError::DiskFull {
                available,
                reserve: self.bytes,
            }),
            // Space unknown (an odd filesystem): let sled try.
            _ => Ok(()),
        }
    }
}

/// Result of an index operation; the error defaults to [`IndexError`].
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

fn corrupt(key: &[u8], reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// Split a path into (folder bytes, file name bytes).
fn split_path(path: &Path) -> (&[u8], &[u8]) {
    let dir = path.parent().map(path_bytes).unwrap_or(b"/");
    let name = path
        .file_name()
        .map(|n| path_bytes(Path::new(n)))
        .unwrap_or_default();
    (dir, name)
}

fn join(dir: &[u8], name: &[u8]) -> PathBuf {
    let mut b = dir.to_vec();
    if b.last() != Some(&b'/') {
        b.push(b'/');
    }
    b.extend_from_slice(name);
    path_from_bytes(&b)
}

/// Is `path` (raw bytes) `scope` or below it?
fn in_scope(path: &[u8], scope: &Path) -> bool {
    let s = path_bytes(scope);
    path == s
        || (path.starts_with(s) && (s.last() == Some(&b'/') || path.get(s.len()) == Some(&b'/')))
}

/// Key of an album record, from the folded names of its owner (album
/// artist, else artist) and title.
fn album_key(owner_folded: &str, album_folded: &str) -> Vec<u8> {
    let doc = format!("{owner_folded}\0{album_folded}");
    key(A, &Hash32::of(doc.as_bytes()).0[..16])
}

/// Key of an artist record, from the folded name.
fn artist_key(folded: &str) -> Vec<u8> {
    key(R, &Hash32::of(folded.as_bytes()).0[..16])
}

/// What the index derives from a track: its search document, the album and
/// artist records it counts towards, and its encoded value. Pure and costly
/// (text folding, hashing, encoding), so the scanner computes it on its
/// reader threads ([`derive`]) and the single writer does not have to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    doc: String,
    /// Album and artist record keys, with the artist name for artist keys.
    owners: BTreeMap<Vec<u8>, String>,
    /// The stored value of the track exactly as derived (same paths); used
    /// as is when the writer does not change the track.
    value: Option<Vec<u8>>,
}

/// Derive search text, owner keys and the encoded value of a track.
pub fn derive(t: &Track) -> Derived {
    let mut d = derive_keys(t);
    d.value = Some(encode_track(t, &d.doc));
    d
}

fn derive_keys(t: &Track) -> Derived {
    // Each distinct string is folded once: the album, artist and album
    // artist appear in the document and in the record keys.
    let artist = t.tags.artist();
    let n_title = search::normalize(&t.tags.title);
    let n_artist = search::normalize(&artist);
    let n_album = search::normalize(&t.tags.album);
    let fold = |s: &str| {
        if s == artist {
            n_artist.clone()
        } else {
            search::normalize(s)
        }
    };
    let mut owners: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for name in &t.tags.artists {
        owners.insert(artist_key(&fold(name)), name.clone());
    }
    // The album is filed under the album artist, else the artist.
    let n_owner = if t.tags.album_artist.is_empty() {
        n_artist.clone()
    } else {
        let n = fold(&t.tags.album_artist);
        owners.insert(artist_key(&n), t.tags.album_artist.clone());
        n
    };
    if !t.tags.album.is_empty() {
        owners.insert(album_key(&n_owner, &n_album), String::new());
    }
    let mut doc = format!("{n_title}{}{n_artist}{}{n_album}", search::SEP, search::SEP);
    if doc.len() > usize::from(u16::MAX) {
        let mut cut = usize::from(u16::MAX);
        while !doc.is_char_boundary(cut) {
            cut -= 1;
        }
        doc.truncate(cut);
    }
    Derived {
        doc,
        owners,
        value: None,
    }
}

/// A track for [`Writer::set_file_after`]: the track found at a path, its
/// cover image if the index may not have it yet, and optionally what the
/// index derives from it (computed by the caller, off the writer's thread).
pub struct NewTrack<'a> {
    /// The track; its `paths` field is ignored (the path given to the writer
    /// is what gets recorded).
    pub track: Track,
    /// Its cover image, stored if the index does not have it yet.
    pub cover: Option<&'a Cover>,
    /// Must be `derive(&track)` if given.
    pub derived: Option<Arc<Derived>>,
}

/// A track with what the index derives from it.
#[derive(Clone)]
struct Staged {
    track: Track,
    derived: Arc<Derived>,
    /// The track is exactly what `derived` was computed from, so its
    /// pre-encoded value can be stored as is.
    pristine: bool,
}

impl Staged {
    fn new(track: Track) -> Staged {
        let derived = Arc::new(derive_keys(&track));
        Staged {
            track,
            derived,
            pristine: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match &self.derived.value {
            Some(v) if self.pristine => v.clone(),
            _ => encode_track(&self.track, &self.derived.doc),
        }
    }
}

/// Encode a track value: search document first, then the record.
fn encode_track(t: &Track, doc: &str) -> Vec<u8> {
    let rec = codec::track_to_proto(t);
    let mut v = Vec::with_capacity(2 + doc.len() + rec.encoded_len());
    v.extend_from_slice(&(doc.len() as u16).to_le_bytes());
    v.extend_from_slice(doc.as_bytes());
    rec.encode(&mut v).expect("Vec grows");
    v
}

/// Split a track value into (search document, encoded record).
fn split_track_value<'v>(k: &[u8], v: &'v [u8]) -> Result<(&'v str, &'v [u8])> {
    let n = v
        .get(..2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(|| corrupt(k, "short track value"))?;
    let doc = v
        .get(2..2 + n)
        .ok_or_else(|| corrupt(k, "short track value"))?;
    let doc = std::str::from_utf8(doc).map_err(|_| corrupt(k, "search document not UTF-8"))?;
    Ok((doc, &v[2 + n..]))
}

fn decode<M: Message + Default>(k: &[u8], v: &[u8]) -> Result<M> {
    M::decode(v).map_err(|e| corrupt(k, e.to_string()))
}

fn track_from(k: &[u8], v: &[u8]) -> Result<Track> {
    let (_, rec) = split_track_value(k, v)?;
    codec::track_from_proto(decode(k, rec)?).ok_or_else(|| corrupt(k, "track record without id"))
}

/// A folder's file states by file name (raw bytes).
pub type DirFiles = BTreeMap<Vec<u8>, FileState>;

fn dir_from(k: &[u8], v: &[u8]) -> Result<DirFiles> {
    let rec: proto::DirRecord = decode(k, v)?;
    rec.files
        .into_iter()
        .map(|f| {
            let s = f
                .state
                .and_then(codec::state_from_proto)
                .ok_or_else(|| corrupt(k, "incomplete file state"))?;
            Ok((f.name, s))
        })
        .collect()
}

fn encode_dir(files: &DirFiles) -> Vec<u8> {
    proto::DirRecord {
        files: files
            .iter()
            .map(|(name, s)| proto::FileEntry {
                name: name.clone(),
                state: Some(codec::state_to_proto(s)),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Counts shown by `tunemesh status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Distinct tracks (distinct file contents).
    pub tracks: usize,
    /// Files indexed as a track (several files can hold one track).
    pub files: usize,
    /// Albums.
    pub albums: usize,
    /// Artists, track artists and album artists together.
    pub artists: usize,
    /// Distinct cover images stored.
    pub covers: usize,
    /// Paths (files, or folders that cannot be read) recorded as failing to
    /// index.
    pub errors: usize,
}

/// A point-in-time content-addressed view of the index (local tracks only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Merkle root over the entries: equal roots mean equal libraries.
    pub root: Hash32,
    /// Every `(track id, blake3 of its stored record)`, sorted by id.
    pub entries: Vec<snapshot::Entry>,
}

type SearchDocs = Arc<Vec<(TrackId, Box<str>)>>;

/// The local library index: tracks, folder and file states, albums,
/// artists, covers and scan errors, stored in one sled database.
///
/// Reads go straight to the database; writes go through the single
/// [`Writer`] returned by [`Index::writer`].
pub struct Index {
    db: sled::Db,
    tree: sled::Tree,
    /// Search documents, loaded on first search and dropped on every write.
    search_docs: Arc<Mutex<Option<SearchDocs>>>,
    /// Held by the one live [`Writer`]: writers cache records, which is
    /// only sound while nobody else writes.
    write_lock: Mutex<()>,
    /// Free space every batch leaves on the disk.
    reserve: Reserve,
}

impl Index {
    /// Open (or create) the index stored in `dir`.
    pub fn open(dir: &Path) -> Result<Index> {
        let path = dir.join("index");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(500))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    IndexError::Locked(path.clone())
                }
                _ => IndexError::Open {
                    path: path.clone(),
                    source: e,
                },
            })?;
        let tree = db.open_tree("library")?;
        let fkey = key(M, b"format");
        match tree.get(&fkey)? {
            None if tree.is_empty() => {
                tree.insert(fkey, &FORMAT.to_le_bytes())?;
            }
            None => return Err(IndexError::Format { path, found: 0 }),
            Some(v) => {
                let found = u32::from_le_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt(&fkey, "bad format marker"))?,
                );
                if found != FORMAT {
                    return Err(IndexError::Format { path, found });
                }
            }
        }
        Ok(Index {
            db,
            tree,
            search_docs: Default::default(),
            write_lock: Mutex::new(()),
            reserve: Reserve::new(&path),
        })
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Start a batch of updates; nothing is visible until [`Writer::commit`].
    /// One writer at a time: a second call waits for the first to drop.
    pub fn writer(&self) -> Writer<'_> {
        let lock = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = self.tree.scan_prefix([T]).next().is_none();
        Writer {
            _lock: lock,
            index: self,
            batch: sled::Batch::default(),
            ops: 0,
            tracks: FxHashMap::default(),
            dirs: FxHashMap::default(),
            owners: FxHashMap::default(),
            covers: FxHashMap::default(),
            fresh_ids: fresh.then(FxHashSet::default),
            committer: None,
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map_err(IndexError::from))
    }

    // ----- queries -------------------------------------------------------

    /// The library roots registered with [`Writer::add_root`].
    pub fn roots(&self) -> Result<Vec<PathBuf>> {
        self.scan_prefix(&[O])
            .map(|r| r.map(|(k, _)| path_from_bytes(&k[1..])))
            .collect()
    }

    fn dir(&self, dir: &[u8]) -> Result<Option<DirFiles>> {
        let k = key(D, dir);
        self.tree.get(&k)?.map(|v| dir_from(&k, &v)).transpose()
    }

    /// What the scanner last recorded for the file at `path`; `None` if the
    /// index has no entry for it.
    pub fn file_state(&self, path: &Path) -> Result<Option<FileState>> {
        let (dir, name) = split_path(path);
        Ok(self.dir(dir)?.and_then(|mut d| d.remove(name)))
    }

    /// Every known file at or below `scope` (a folder or a file), grouped by
    /// folder: folder path → file name → state.
    pub fn files_under(&self, scope: &Path) -> Result<HashMap<PathBuf, DirFiles>> {
        let mut out = HashMap::new();
        // The scope as a file: one entry of its parent's record.
        let (parent, name) = split_path(scope);
        if let Some(s) = self.dir(parent)?.and_then(|mut d| d.remove(name)) {
            out.insert(
                path_from_bytes(parent),
                DirFiles::from([(name.to_vec(), s)]),
            );
        }
        // The scope as a folder: its record and those of every folder below.
        let sb = path_bytes(scope);
        if let Some(d) = self.dir(sb)? {
            out.insert(scope.to_path_buf(), d);
        }
        let mut prefix = key(D, sb);
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        for r in self.scan_prefix(&prefix) {
            let (k, v) = r?;
            out.insert(path_from_bytes(&k[1..]), dir_from(&k, &v)?);
        }
        Ok(out)
    }

    /// The track with this id; `None` if it is not indexed.
    pub fn track(&self, id: &TrackId) -> Result<Option<Track>> {
        let k = key(T, &id.0);
        self.tree.get(&k)?.map(|v| track_from(&k, &v)).transpose()
    }

    /// Every track, in track-id order.
    pub fn tracks(&self) -> impl Iterator<Item = Result<Track>> + '_ {
        self.scan_prefix(&[T])
            .map(|r| r.and_then(|(k, v)| track_from(&k, &v)))
    }

    /// Track ids starting with `prefix` (as `git` resolves short ids):
    /// one range scan between the prefix's bounds. [`Prefix::pick`] makes
    /// the one answer of it, the same the catalog gives.
    pub fn ids_with(&self, prefix: &Prefix) -> Result<Vec<TrackId>> {
        let (lo, hi) = prefix.bounds();
        let mut out = vec![];
        for r in self.tree.range(key(T, &lo.0)..=key(T, &hi.0)).keys() {
            let k = r?;
            out.push(Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?);
        }
        Ok(out)
    }

    fn docs(&self) -> Result<SearchDocs> {
        let mut cache = self.search_docs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = cache.as_ref() {
            return Ok(d.clone());
        }
        let mut docs = Vec::new();
        for r in self.scan_prefix(&[T]) {
            let (k, v) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?;
            let (doc, _) = split_track_value(&k, &v)?;
            docs.push((id, doc.into()));
        }
        let docs = Arc::new(docs);
        *cache = Some(docs.clone());
        Ok(docs)
    }

    /// Ranked search over title, artist and album; case- and
    /// diacritic-insensitive. Best match first, at most `limit` results.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<(Track, u32)>> {
        let q = search::Query::new(query);
        if q.is_empty() {
            return Ok(vec![]);
        }
        let docs = self.docs()?;
        let mut hits: Vec<(u32, TrackId)> = docs
            .iter()
            .filter_map(|(id, doc)| q.score(doc).map(|s| (s, *id)))
            .collect();
        // Best score first; ties broken by id so results are stable.
        hits.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(limit);
        let mut out = Vec::with_capacity(hits.len());
        for (score, id) in hits {
            if let Some(t) = self.track(&id)? {
                out.push((t, score));
            }
        }
        Ok(out)
    }

    /// Tracks by the album (`A`) or artist (`R`) records they count towards.
    fn owner_members(&self, prefix: u8) -> Result<HashMap<Vec<u8>, Vec<TrackId>>> {
        let mut members: HashMap<Vec<u8>, Vec<TrackId>> = HashMap::new();
        for t in self.tracks() {
            let t = t?;
            for k in derive_keys(&t).owners.into_keys() {
                if k[0] == prefix {
                    members.entry(k).or_default().push(t.id);
                }
            }
        }
        Ok(members)
    }

    /// Every album with its tracks (one pass over the tracks).
    pub fn albums(&self) -> Result<Vec<Album>> {
        let mut members = self.owner_members(A)?;
        let mut out = vec![];
        for r in self.scan_prefix(&[A]) {
            let (k, v) = r?;
            let rec: proto::AlbumRecord = decode(&k, &v)?;
            out.push(Album {
                title: rec.title,
                artist: rec.artist,
                year: (rec.year != 0).then_some(rec.year),
                cover: codec::cover_id_opt(&rec.cover),
                tracks: members.remove(k.as_ref()).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Every artist with their tracks (one pass over the tracks).
    pub fn artists(&self) -> Result<Vec<Artist>> {
        let mut members = self.owner_members(R)?;
        let mut out = vec![];
        for r in self.scan_prefix(&[R]) {
            let (k, v) = r?;
            let rec: proto::ArtistRecord = decode(&k, &v)?;
            out.push(Artist {
                name: rec.name,
                tracks: members.remove(k.as_ref()).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The cover image with this id; `None` if it is not stored.
    pub fn cover(&self, id: &CoverId) -> Result<Option<Cover>> {
        let k = key(C, &id.0);
        match self.tree.get(&k)? {
            None => Ok(None),
            Some(v) => {
                let b: proto::CoverBlob = decode(&k, &v)?;
                Ok(Some(Cover {
                    id: *id,
                    mime: b.mime,
                    data: b.data,
                }))
            }
        }
    }

    /// Paths that could not be indexed, at or below `scope` (all if `None`).
    pub fn errors(&self, scope: Option<&Path>) -> Result<Vec<FileError>> {
        let mut out = vec![];
        for r in self.scan_prefix(&[E]) {
            let (k, v) = r?;
            if scope.is_some_and(|s| !in_scope(&k[1..], s)) {
                continue;
            }
            let e: proto::ScanError = decode(&k, &v)?;
            out.push(FileError {
                path: path_from_bytes(&k[1..]),
                error: e.error,
            });
        }
        Ok(out)
    }

    /// Counts of the records in the index (walks every folder record to count
    /// files).
    pub fn counts(&self) -> Result<Counts> {
        let n = |p: u8| self.tree.scan_prefix([p]).keys().count();
        let mut files = 0;
        for r in self.scan_prefix(&[D]) {
            let (k, v) = r?;
            files += dir_from(&k, &v)?
                .values()
                .filter(|s| matches!(s.outcome, Outcome::Track(_)))
                .count();
        }
        Ok(Counts {
            tracks: n(T),
            files,
            albums: n(A),
            artists: n(R),
            covers: n(C),
            errors: n(E),
        })
    }

    /// The content-addressed snapshot: entries and their Merkle root.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut entries = Vec::new();
        for r in self.scan_prefix(&[T]) {
            let (k, v) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?;
            let (_, rec) = split_track_value(&k, &v)?;
            entries.push((id, Hash32::of(rec)));
        }
        // sled iterates in key order, so entries are already sorted by id.
        Ok(Snapshot {
            root: snapshot::root(&entries),
            entries,
        })
    }

    /// Check every cross-reference and count of the index; returns the
    /// problems found (empty when consistent). Used by `tunemesh status
    /// --verify` and tests.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems = vec![];
        let mut tracks: HashMap<TrackId, Track> = HashMap::new();
        let mut albums: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut artists: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut covers: HashMap<CoverId, u64> = HashMap::new();
        for r in self.scan_prefix(&[T]) {
            let (k, v) = r?;
            let t = track_from(&k, &v)?;
            let (doc, _) = split_track_value(&k, &v)?;
            let want = search::document(&t.tags.title, &t.tags.artist(), &t.tags.album);
            if !want.starts_with(doc) {
                problems.push(format!("track {} has a stale search document", t.id));
            }
            for k in derive_keys(&t).owners.into_keys() {
                let counts = if k[0] == A { &mut albums } else { &mut artists };
                *counts.entry(k).or_default() += 1;
            }
            if let Some(c) = t.cover {
                *covers.entry(c).or_default() += 1;
            }
            tracks.insert(t.id, t);
        }
        for (id, t) in &tracks {
            if t.paths.is_empty() {
                problems.push(format!("track {id} has no path"));
            }
            for p in &t.paths {
                match self.file_state(p)? {
                    Some(FileState {
                        outcome: Outcome::Track(pid),
                        ..
                    }) if pid == *id => {}
                    other => problems.push(format!(
                        "track {id} lists {} but that path is {other:?}",
                        p.display()
                    )),
                }
            }
        }
        for r in self.scan_prefix(&[D]) {
            let (k, v) = r?;
            let files = dir_from(&k, &v)?;
            if files.is_empty() {
                problems.push(format!(
                    "empty folder record {}",
                    String::from_utf8_lossy(&k[1..])
                ));
            }
            for (name, s) in files {
                let path = join(&k[1..], &name);
                match s.outcome {
                    Outcome::Track(id) => match tracks.get(&id) {
                        Some(t) if t.paths.contains(&path) => {}
                        Some(_) => problems.push(format!(
                            "{} -> {id}, which does not list it",
                            path.display()
                        )),
                        None => problems.push(format!("{} -> missing track {id}", path.display())),
                    },
                    Outcome::Error(_) => {
                        if self.tree.get(key(E, path_bytes(&path)))?.is_none() {
                            problems
                                .push(format!("{} failed but has no error entry", path.display()));
                        }
                    }
                    Outcome::NotAudio => {}
                }
            }
        }
        let mut check_counts =
            |prefix: u8, want: &HashMap<Vec<u8>, u64>, what: &str| -> Result<()> {
                let mut seen = 0;
                for r in self.scan_prefix(&[prefix]) {
                    let (k, v) = r?;
                    let have = match prefix {
                        A => decode::<proto::AlbumRecord>(&k, &v)?.tracks,
                        _ => decode::<proto::ArtistRecord>(&k, &v)?.tracks,
                    };
                    match want.get(k.as_ref()) {
                        Some(&n) if n == have => seen += 1,
                        Some(&n) => {
                            seen += 1;
                            problems.push(format!("{what} counts {have} tracks, {n} refer to it"))
                        }
                        None => problems.push(format!("{what} record with no track")),
                    }
                }
                if seen != want.len() {
                    problems.push(format!("{} {what} records missing", want.len() - seen));
                }
                Ok(())
            };
        check_counts(A, &albums, "album")?;
        check_counts(R, &artists, "artist")?;
        for r in self.scan_prefix(&[C_COUNT]) {
            let (k, v) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad cover key"))?;
            let have = u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(&k, "bad count"))?,
            );
            if covers.remove(&id) != Some(have) {
                problems.push(format!("cover {id} count {have} is wrong"));
            }
            if self.tree.get(key(C, &id.0))?.is_none() {
                problems.push(format!("cover {id} is counted but not stored"));
            }
        }
        for id in covers.keys() {
            problems.push(format!("cover {id} is used but not counted"));
        }
        if self.tree.scan_prefix([C]).count() != self.tree.scan_prefix([C_COUNT]).count() {
            problems.push("stored covers and cover counts differ".into());
        }
        Ok(problems)
    }
}

/// A derived record cached by a writer: its current value (`None`: absent)
/// and whether it must be written at commit.
struct Cached<V> {
    value: Option<V>,
    dirty: bool,
}

/// A batch of index updates, applied atomically by [`Writer::commit`].
///
/// Reads through the writer see its own uncommitted writes, so one batch may
/// touch the same track or folder from several paths. Album, artist and
/// cover records stay cached for the writer's life (it is the only writer).
pub struct Writer<'a> {
    _lock: MutexGuard<'a, ()>,
    index: &'a Index,
    /// Blind writes (errors, roots, cover blobs).
    batch: sled::Batch,
    ops: usize,
    /// Track records touched by this batch.
    tracks: FxHashMap<TrackId, Option<Staged>>,
    /// Folder records touched by this batch.
    dirs: FxHashMap<Vec<u8>, Cached<DirFiles>>,
    /// Album (`A` key) and artist (`R` key) records.
    owners: FxHashMap<Vec<u8>, Cached<Owner>>,
    /// Cover reference counts.
    covers: FxHashMap<CoverId, Cached<u64>>,
    /// When the writer started on an index without tracks: every track id
    /// it has written since. Any other id is known to be absent, which
    /// spares a first import one lookup per file.
    fresh_ids: Option<FxHashSet<TrackId>>,
    /// Applies batches in the background while the next one is built.
    committer: Option<Committer>,
}

/// Records of a batch handed to the committer: encoded there, and readable
/// by the writer until the batch is applied.
#[derive(Default)]
struct Records {
    tracks: FxHashMap<TrackId, Option<Staged>>,
    dirs: FxHashMap<Vec<u8>, Option<DirFiles>>,
}

/// The writer's background thread: encodes a batch's records and applies
/// the batch, one batch at a time. Owned by its writer, which joins it.
struct Committer {
    tx: Option<std::sync::mpsc::SyncSender<(Arc<Records>, sled::Batch)>>,
    done: std::sync::mpsc::Receiver<Result<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// The batch being applied, if any.
    inflight: Option<Arc<Records>>,
}

impl Committer {
    fn start(
        tree: sled::Tree,
        search_docs: Arc<Mutex<Option<SearchDocs>>>,
        reserve: Reserve,
    ) -> Committer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Arc<Records>, sled::Batch)>(1);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("tunemesh-commit".into())
            .spawn(move || {
                for (records, mut batch) in rx {
                    for (id, t) in &records.tracks {
                        match t {
                            Some(s) => batch.insert(key(T, &id.0), s.encode()),
                            None => batch.remove(key(T, &id.0)),
                        }
                    }
                    for (dir, files) in &records.dirs {
                        match files {
                            Some(f) => batch.insert(key(D, dir), encode_dir(f)),
                            None => batch.remove(key(D, dir)),
                        }
                    }
                    let r = reserve
                        .check()
                        .and_then(|()| tree.apply_batch(batch).map_err(IndexError::from));
                    *search_docs.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if done_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn index committer");
        Committer {
            tx: Some(tx),
            done,
            handle: Some(handle),
            inflight: None,
        }
    }

    /// Wait until the batch in flight, if any, is applied.
    fn wait(&mut self) -> Result<()> {
        if self.inflight.take().is_some() {
            return self.done.recv().unwrap_or_else(|_| {
                Err(IndexError::Writer(
                    "the background committer stopped".into(),
                ))
            });
        }
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Err(e) = self.wait() {
            tracing::error!("index write failed: {e}");
        }
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An album or artist record.
#[derive(Clone)]
enum Owner {
    Album(proto::AlbumRecord),
    Artist(proto::ArtistRecord),
}

impl Owner {
    fn count(&mut self) -> &mut u64 {
        match self {
            Owner::Album(a) => &mut a.tracks,
            Owner::Artist(a) => &mut a.tracks,
        }
    }
}

impl Writer<'_> {
    fn inflight(&self) -> Option<&Records> {
        self.committer.as_ref().and_then(|c| c.inflight.as_deref())
    }

    fn get_track(&mut self, id: &TrackId) -> Result<Option<Staged>> {
        if let Some(t) = self.tracks.get(id) {
            return Ok(t.clone());
        }
        if let Some(t) = self.inflight().and_then(|r| r.tracks.get(id)) {
            return Ok(t.clone());
        }
        if self.fresh_ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
            return Ok(None);
        }
        Ok(self.index.track(id)?.map(Staged::new))
    }

    fn dir_mut(&mut self, dir: &[u8]) -> Result<&mut Cached<DirFiles>> {
        if !self.dirs.contains_key(dir) {
            let value = match self.inflight().and_then(|r| r.dirs.get(dir)) {
                Some(files) => files.clone(),
                None => self.index.dir(dir)?,
            };
            self.dirs.insert(
                dir.to_vec(),
                Cached {
                    value,
                    dirty: false,
                },
            );
        }
        Ok(self.dirs.get_mut(dir).expect("just inserted"))
    }

    fn get_state(&mut self, path: &Path) -> Result<Option<FileState>> {
        let (dir, name) = split_path(path);
        Ok(self
            .dir_mut(dir)?
            .value
            .as_ref()
            .and_then(|d| d.get(name).cloned()))
    }

    fn set_state(&mut self, path: &Path, state: Option<&FileState>) -> Result<()> {
        let (dir, name) = split_path(path);
        let d = self.dir_mut(dir)?;
        let files = d.value.get_or_insert_with(DirFiles::new);
        match state {
            Some(s) => {
                files.insert(name.to_vec(), s.clone());
            }
            None => {
                files.remove(name);
            }
        }
        d.dirty = true;
        self.ops += 1;
        Ok(())
    }

    fn owner_mut(&mut self, k: &[u8]) -> Result<&mut Cached<Owner>> {
        if !self.owners.contains_key(k) {
            let value = match self.index.tree.get(k)? {
                None => None,
                Some(v) if k[0] == A => Some(Owner::Album(decode(k, &v)?)),
                Some(v) => Some(Owner::Artist(decode(k, &v)?)),
            };
            self.owners.insert(
                k.to_vec(),
                Cached {
                    value,
                    dirty: false,
                },
            );
        }
        Ok(self.owners.get_mut(k).expect("just inserted"))
    }

    fn cover_count(&mut self, id: &CoverId) -> Result<&mut Cached<u64>> {
        if !self.covers.contains_key(id) {
            let k = key(C_COUNT, &id.0);
            let value = match self.index.tree.get(&k)? {
                None => None,
                Some(v) => Some(u64::from_le_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt(&k, "bad count"))?,
                )),
            };
            self.covers.insert(
                *id,
                Cached {
                    value,
                    dirty: false,
                },
            );
        }
        Ok(self.covers.get_mut(id).expect("just inserted"))
    }

    /// Number of operations in the uncommitted batch.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Entries of the folder records this batch has changed: what its commit
    /// will rewrite. A caller sizing batches keeps a batch at least this many
    /// operations long, so a huge folder is rewritten a logarithmic number of
    /// times, not once per fixed-size batch.
    pub fn dirty_folder_entries(&self) -> usize {
        self.dirs
            .values()
            .filter(|d| d.dirty)
            .map(|d| d.value.as_ref().map_or(0, BTreeMap::len))
            .sum()
    }

    /// No operation is queued in this batch.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Register `root` as a library root (listed by [`Index::roots`]).
    pub fn add_root(&mut self, root: &Path) {
        self.batch.insert(key(O, path_bytes(root)), vec![]);
        self.ops += 1;
    }

    /// Record what the scanner found at `path`. With `track`, the path holds
    /// that track (its `paths` field is ignored) and `cover` is its cover
    /// image, stored if the index does not have it yet.
    pub fn set_file(
        &mut self,
        path: &Path,
        state: &FileState,
        track: Option<(&Track, Option<&Cover>)>,
    ) -> Result<()> {
        let old = self.get_state(path)?;
        let track = track.map(|(track, cover)| NewTrack {
            track: track.clone(),
            cover,
            derived: None,
        });
        self.set_file_after(path, old.as_ref(), state, track)
    }

    /// [`Writer::set_file`] for a caller that already knows the path's
    /// current state (`old`, `None` if the index has no entry for it), as a
    /// scanner does.
    pub fn set_file_after(
        &mut self,
        path: &Path,
        old: Option<&FileState>,
        state: &FileState,
        track: Option<NewTrack<'_>>,
    ) -> Result<()> {
        let new_id = track.as_ref().map(|n| n.track.id);
        if let Some(FileState {
            outcome: Outcome::Track(old_id),
            ..
        }) = old
        {
            if Some(*old_id) != new_id {
                self.detach(path, old_id)?;
            }
        }
        if let Some(n) = track {
            self.attach(path, n)?;
        }
        self.set_state(path, Some(state))?;
        match &state.outcome {
            Outcome::Error(e) => self.set_error(path, e),
            // A file's error entry exists only while its state is an error.
            _ if matches!(
                old,
                Some(FileState {
                    outcome: Outcome::Error(_),
                    ..
                })
            ) =>
            {
                self.clear_error(path)
            }
            _ => {}
        }
        Ok(())
    }

    /// The file at `path` is gone.
    pub fn remove_file(&mut self, path: &Path) -> Result<()> {
        if let Some(FileState {
            outcome: Outcome::Track(old),
            ..
        }) = self.get_state(path)?
        {
            self.detach(path, &old)?;
        }
        self.set_state(path, None)?;
        self.clear_error(path);
        Ok(())
    }

    /// Record an error for a path (a file, or a folder that cannot be read).
    pub fn set_error(&mut self, path: &Path, error: &str) {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let e = proto::ScanError {
            error: error.to_owned(),
            at_unix_ms,
        };
        self.batch
            .insert(key(E, path_bytes(path)), e.encode_to_vec());
        self.ops += 1;
    }

    /// Drop the error recorded for `path`, if any.
    pub fn clear_error(&mut self, path: &Path) {
        self.batch.remove(key(E, path_bytes(path)));
        self.ops += 1;
    }

    fn attach(&mut self, path: &Path, n: NewTrack<'_>) -> Result<()> {
        let old = self.get_track(&n.track.id)?;
        let cover = n.cover;
        let new = match &old {
            // The common case: new content, seen at this one path. The
            // reader's track and derivations are stored as they are.
            None if n.track.paths.len() == 1 && n.track.paths[0] == path => {
                let pristine = n.derived.is_some();
                let derived = n.derived.unwrap_or_else(|| Arc::new(derive_keys(&n.track)));
                Staged {
                    track: n.track,
                    derived,
                    pristine,
                }
            }
            None => {
                let mut track = n.track;
                track.paths = vec![path.to_path_buf()];
                Staged::new(track)
            }
            Some(o) => {
                let mut new = o.clone();
                new.pristine = false;
                let t = n.track;
                let paths = &mut new.track.paths;
                if let Err(i) = paths.binary_search_by(|p| p.as_path().cmp(path)) {
                    paths.insert(i, path.to_path_buf());
                }
                // Metadata comes from the first path in sorted order,
                // whatever order the paths were scanned in: file-name
                // fallbacks stay deterministic.
                if new.track.paths[0] == path {
                    if new.track.tags != t.tags {
                        new.track.tags = t.tags;
                        new.derived = Arc::new(derive_keys(&new.track));
                    }
                    new.track.audio = t.audio;
                    new.track.cover = t.cover;
                    new.track.size = t.size;
                }
                new
            }
        };
        if let Some(c) = cover.filter(|c| new.track.cover == Some(c.id)) {
            let count = self.cover_count(&c.id)?;
            if count.value.is_none() {
                let blob = proto::CoverBlob {
                    mime: c.mime.clone(),
                    data: c.data.clone(),
                };
                self.batch.insert(key(C, &c.id.0), blob.encode_to_vec());
            }
        }
        self.write_track(old.as_ref(), Some(new))
    }

    fn detach(&mut self, path: &Path, id: &TrackId) -> Result<()> {
        let Some(old) = self.get_track(id)? else {
            return Ok(());
        };
        let mut new = old.clone();
        new.pristine = false;
        new.track.paths.retain(|p| p != path);
        if new.track.paths.is_empty() {
            self.write_track(Some(&old), None)
        } else {
            self.write_track(Some(&old), Some(new))
        }
    }

    /// Replace a track record and move the album, artist and cover counts
    /// from what `old` referred to to what `new` refers to.
    fn write_track(&mut self, old: Option<&Staged>, new: Option<Staged>) -> Result<()> {
        let none = BTreeMap::new();
        let old_owners = old.map_or(&none, |o| &o.derived.owners);
        let new_owners = new.as_ref().map_or(&none, |n| &n.derived.owners);
        let (old_cover, new_cover) = (
            old.and_then(|s| s.track.cover),
            new.as_ref().and_then(|s| s.track.cover),
        );
        for k in old_owners.keys().filter(|k| !new_owners.contains_key(*k)) {
            let o = self.owner_mut(k)?;
            if let Some(rec) = o.value.as_mut() {
                let n = rec.count();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.value = None;
                }
                o.dirty = true;
            }
        }
        if let Some(Staged { track: t, .. }) = &new {
            for (k, name) in new_owners
                .iter()
                .filter(|(k, _)| !old_owners.contains_key(*k))
            {
                let o = self.owner_mut(k)?;
                let rec = o.value.get_or_insert_with(|| {
                    if k[0] == A {
                        Owner::Album(proto::AlbumRecord {
                            title: t.tags.album.clone(),
                            artist: t.tags.album_owner(),
                            ..Default::default()
                        })
                    } else {
                        Owner::Artist(proto::ArtistRecord {
                            name: name.clone(),
                            tracks: 0,
                        })
                    }
                });
                *rec.count() += 1;
                o.dirty = true;
            }
            // Fill in what the album record lacks.
            if let Some(k) = new_owners.keys().find(|k| k[0] == A) {
                let o = self.owner_mut(k)?;
                if let Some(Owner::Album(a)) = o.value.as_mut() {
                    if a.year == 0 && t.tags.year.is_some() {
                        a.year = t.tags.year.unwrap_or(0);
                        o.dirty = true;
                    }
                    if a.cover.is_empty() && t.cover.is_some() {
                        a.cover = t.cover.map(|c| c.0.to_vec()).unwrap_or_default();
                        o.dirty = true;
                    }
                }
            }
        }
        if old_cover != new_cover {
            if let Some(c) = old_cover {
                let cc = self.cover_count(&c)?;
                if let Some(n) = cc.value.as_mut() {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        cc.value = None;
                        self.batch.remove(key(C, &c.0));
                    }
                    self.covers.get_mut(&c).expect("cached").dirty = true;
                }
            }
            if let Some(c) = new_cover {
                let cc = self.cover_count(&c)?;
                *cc.value.get_or_insert(0) += 1;
                cc.dirty = true;
            }
        }
        let id = old
            .or(new.as_ref())
            .map(|s| s.track.id)
            .expect("old or new");
        if let Some(ids) = self.fresh_ids.as_mut() {
            ids.insert(id);
        }
        self.tracks.insert(id, new);
        self.ops += 1;
        Ok(())
    }

    /// Apply the batch atomically and wait until it is durable in the tree
    /// (visible to every reader).
    pub fn commit(&mut self) -> Result<()> {
        self.commit_in_background()?;
        match self.committer.as_mut() {
            Some(c) => c.wait(),
            None => Ok(()),
        }
    }

    /// Hand the batch to the background committer and return at once; the
    /// next batch can be built meanwhile, and reads through this writer see
    /// it. Waits for the previous batch first, so at most one is in flight;
    /// an error applying it is returned here or by the next commit.
    pub fn commit_in_background(&mut self) -> Result<()> {
        if self.ops == 0 {
            return Ok(());
        }
        let committer = match &mut self.committer {
            Some(c) => c,
            None => self.committer.insert(Committer::start(
                self.index.tree.clone(),
                self.index.search_docs.clone(),
                self.index.reserve.clone(),
            )),
        };
        committer.wait()?;
        let mut batch = std::mem::take(&mut self.batch);
        for (k, o) in self.owners.iter_mut().filter(|(_, o)| o.dirty) {
            match &o.value {
                Some(Owner::Album(a)) => batch.insert(k.as_slice(), a.encode_to_vec()),
                Some(Owner::Artist(a)) => batch.insert(k.as_slice(), a.encode_to_vec()),
                None => batch.remove(k.as_slice()),
            }
            o.dirty = false;
        }
        for (id, c) in self.covers.iter_mut().filter(|(_, c)| c.dirty) {
            match c.value {
                Some(n) => batch.insert(key(C_COUNT, &id.0), n.to_le_bytes().to_vec()),
                None => batch.remove(key(C_COUNT, &id.0)),
            }
            c.dirty = false;
        }
        // Folder records are reloaded by the next batch that needs them;
        // keeping them would grow without bound on a big library.
        let records = Records {
            tracks: std::mem::take(&mut self.tracks),
            dirs: self
                .dirs
                .drain()
                .filter(|(_, d)| d.dirty)
                .map(|(dir, d)| (dir, d.value.filter(|f| !f.is_empty())))
                .collect(),
        };
        self.ops = 0;
        let records = Arc::new(records);
        committer.inflight = Some(records.clone());
        if let Some(tx) = &committer.tx {
            if tx.send((records, batch)).is_err() {
                committer.inflight = None;
                return Err(IndexError::Writer(
                    "the background committer stopped".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matching() {
        assert!(in_scope(b"/m/a/x.mp3", Path::new("/m/a")));
        assert!(in_scope(b"/m/a", Path::new("/m/a")));
        assert!(!in_scope(b"/m/ab/x.mp3", Path::new("/m/a")));
        assert!(in_scope(b"/m/a/x.mp3", Path::new("/")));
    }

    #[test]
    fn dirty_folder_entries_counts_what_a_commit_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let state = FileState {
            size: 1,
            mtime_ns: 1,
            folder_cover: None,
            scanner_version: 1,
            outcome: Outcome::NotAudio,
        };
        let mut w = index.writer();
        for i in 0..10 {
            w.set_file(Path::new(&format!("/big/{i}.txt")), &state, None)
                .unwrap();
        }
        w.set_file(Path::new("/small/a.txt"), &state, None).unwrap();
        assert_eq!(w.dirty_folder_entries(), 11);
        w.commit().unwrap();
        assert_eq!(w.dirty_folder_entries(), 0);
        // One more file in the big folder: its whole record is rewritten.
        w.set_file(Path::new("/big/10.txt"), &state, None).unwrap();
        assert_eq!(w.dirty_folder_entries(), 11);
    }

    #[test]
    fn derived_keys_fold_names_and_file_the_album_under_its_album_artist() {
        let t = Track {
            id: Hash32::of(b"k"),
            tags: crate::model::Tags {
                title: "Hoppípolla".into(),
                artists: vec!["Sigur Rós".into(), "Amiina".into()],
                album: "Takk…".into(),
                album_artist: "Sigur Rós".into(),
                ..Default::default()
            },
            audio: Default::default(),
            size: 1,
            cover: None,
            paths: vec!["/a/b.flac".into()],
        };
        let d = derive_keys(&t);
        let fold = search::normalize;
        let want: BTreeMap<Vec<u8>, String> = [
            (artist_key(&fold("Sigur Rós")), "Sigur Rós".to_string()),
            (artist_key(&fold("Amiina")), "Amiina".to_string()),
            (album_key(&fold("Sigur Rós"), &fold("Takk…")), String::new()),
        ]
        .into();
        assert_eq!(d.owners, want);
        assert_eq!(
            d.doc,
            search::document(&t.tags.title, &t.tags.artist(), &t.tags.album)
        );
    }

    #[test]
    fn track_value_roundtrip() {
        let t = Track {
            id: Hash32::of(b"x"),
            tags: crate::model::Tags {
                title: "Rós".into(),
                ..Default::default()
            },
            audio: Default::default(),
            size: 1,
            cover: None,
            paths: vec!["/a/b.mp3".into()],
        };
        let v = encode_track(&t, &derive(&t).doc);
        let (doc, _) = split_track_value(b"k", &v).unwrap();
        assert!(doc.starts_with("ros"));
        assert_eq!(track_from(b"k", &v).unwrap(), t);
    }
}
