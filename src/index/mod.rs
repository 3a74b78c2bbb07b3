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
//! | `L`    | device · seq     | a signed user operation (`userlog.rs`)           |
//! | `B`    | track id · kbps  | an offline copy's blob: hash, length, outboard (`mirror.rs`) |
//! | `Y`    | —                | the offline mirror's pins, budget, policy (`mirror.rs`) |
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
mod mirror;
mod remote;
pub mod search;
pub mod snapshot;
mod userlog;
mod writer;

use crate::model::prefix::Prefix;
use crate::model::{
    Album, Artist, Cover, CoverId, FileError, FileState, Hash32, Outcome, Track, TrackId,
};
use crate::proto;
pub use codec::{path_bytes, path_from_bytes};
pub use mirror::BlobRecord;
use prost::Message;
pub use remote::decode_record;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
pub use userlog::LoggedOp;
pub use writer::Writer;

/// sled's page cache. Reads are few after a scan (the catalog answers
/// listings from memory, a page's records are ~100 reads), so it stays
/// small: it is most of an idle node's memory otherwise. sled counts it
/// loosely: 16 MiB held 32 MB of nodes (heaptrack, 100k tracks).
const CACHE_BYTES: u64 = 8 << 20;

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
        Writer::new(self)
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
        let k = key(T, id.as_bytes());
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
        let range = key(T, lo.as_bytes())..=key(T, hi.as_bytes());
        let mut out = vec![];
        for r in self.tree.range(range).keys() {
            let k = r?;
            out.push(TrackId::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?);
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
            let id = TrackId::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?;
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
        let k = key(C, id.as_bytes());
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
            let id = TrackId::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?;
            let (_, rec) = split_track_value(&k, &v)?;
            entries.push((id, Hash32::of(rec)));
        }
        // sled iterates in key order, so entries are already sorted by id.
        // Kept for the node's life: no room for growth kept with it.
        entries.shrink_to_fit();
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
            let id = CoverId::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad cover key"))?;
            let have = u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(&k, "bad count"))?,
            );
            if covers.remove(&id) != Some(have) {
                problems.push(format!("cover {id} count {have} is wrong"));
            }
            if self.tree.get(key(C, id.as_bytes()))?.is_none() {
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

#[cfg(test)]
mod tests;
