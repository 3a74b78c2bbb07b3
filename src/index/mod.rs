//! The durable, content-addressed library index. The only module that knows
//! sled.
//!
//! Everything lives in one sled tree under one-byte key prefixes, so that a
//! whole update (a file's new state, its track record, album and artist
//! memberships, cover, error entry) is one atomic [`sled::Batch`]: after a
//! crash at any moment the index holds a consistent prefix of the batches,
//! never half of one. Derived records (albums, artists, covers) are kept by
//! membership keys and orphans are swept by [`Index::gc`], so no crash can
//! leave a dangling reference that a later scan would not remove.
//!
//! | prefix | key                     | value                           |
//! |--------|-------------------------|---------------------------------|
//! | `T`    | track id                | `TrackRecord`                   |
//! | `S`    | track id                | normalised search document      |
//! | `P`    | path bytes              | `FileState`                     |
//! | `E`    | path bytes              | `ScanError`                     |
//! | `A`    | album key (16)          | `AlbumRecord`                   |
//! | `a`    | album key + track id    | (membership)                    |
//! | `R`    | artist key (16)         | `ArtistRecord`                  |
//! | `r`    | artist key + track id   | (membership)                    |
//! | `C`    | cover id                | `CoverBlob`                     |
//! | `c`    | cover id + track id     | (reference)                     |
//! | `O`    | root path bytes         | (library root)                  |
//! | `M`    | name                    | index metadata (format version) |
//!
//! This module must never read files or parse audio: the scanner hands it
//! finished facts.

mod codec;
pub mod search;
pub mod snapshot;

use crate::model::{
    Album, Artist, Cover, CoverId, FileError, FileState, Hash32, Outcome, Track, TrackId,
};
use crate::proto;
pub use codec::{path_bytes, path_from_bytes};
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// On-disk format of the index; a newer one is refused, not misread.
const FORMAT: u32 = 1;

const T: u8 = b'T';
const S: u8 = b'S';
const P: u8 = b'P';
const E: u8 = b'E';
const A: u8 = b'A';
const A_MEM: u8 = b'a';
const R: u8 = b'R';
const R_MEM: u8 = b'r';
const C: u8 = b'C';
const C_REF: u8 = b'c';
const O: u8 = b'O';
const M: u8 = b'M';

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the index at {0} is in use by another tunemesh process")]
    Locked(PathBuf),
    #[error("cannot open the index at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("index storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt index entry under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the index at {path} has format {found}; this tunemesh reads format {FORMAT}: upgrade tunemesh")]
    TooNew { path: PathBuf, found: u32 },
}

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

fn key2(prefix: u8, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = key(prefix, a);
    k.extend_from_slice(b);
    k
}

/// Key prefix of everything at or below `scope` (a directory or a file).
fn scope_prefix(scope: &Path) -> Vec<u8> {
    let mut p = path_bytes(scope).to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p
}

fn in_scope(path: &[u8], scope: &Path) -> bool {
    let s = path_bytes(scope);
    path == s || path.starts_with(&scope_prefix(scope))
}

fn album_key(t: &Track) -> Option<[u8; 16]> {
    if t.tags.album.is_empty() {
        return None;
    }
    let doc = format!(
        "{}\0{}",
        search::normalize(&t.tags.album_owner()),
        search::normalize(&t.tags.album)
    );
    Some(
        Hash32::of(doc.as_bytes()).0[..16]
            .try_into()
            .expect("16 bytes"),
    )
}

fn artist_key(name: &str) -> [u8; 16] {
    Hash32::of(search::normalize(name).as_bytes()).0[..16]
        .try_into()
        .expect("16 bytes")
}

fn artist_names(t: &Track) -> BTreeSet<&str> {
    t.tags
        .artists
        .iter()
        .map(String::as_str)
        .chain((!t.tags.album_artist.is_empty()).then_some(t.tags.album_artist.as_str()))
        .collect()
}

/// Membership keys of a track: album, artists, cover.
fn memberships(t: &Track) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    if let Some(ak) = album_key(t) {
        keys.insert(key2(A_MEM, &ak, &t.id.0));
    }
    for name in artist_names(t) {
        keys.insert(key2(R_MEM, &artist_key(name), &t.id.0));
    }
    if let Some(c) = t.cover {
        keys.insert(key2(C_REF, &c.0, &t.id.0));
    }
    keys
}

/// Counts shown by `tunemesh status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub tracks: usize,
    pub files: usize,
    pub albums: usize,
    pub artists: usize,
    pub covers: usize,
    pub errors: usize,
}

/// A point-in-time content-addressed view of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub root: Hash32,
    pub entries: Vec<snapshot::Entry>,
}

type SearchDocs = Arc<Vec<(TrackId, Box<str>)>>;

pub struct Index {
    db: sled::Db,
    tree: sled::Tree,
    /// Search documents, loaded on first search and dropped on every write.
    search_docs: Mutex<Option<SearchDocs>>,
}

impl Index {
    /// Open (or create) the index stored in `dir`.
    pub fn open(dir: &Path) -> Result<Index> {
        let path = dir.join("index");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(500))
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
            None => {
                tree.insert(fkey, &FORMAT.to_le_bytes())?;
            }
            Some(v) => {
                let found = u32::from_le_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt(&fkey, "bad format marker"))?,
                );
                if found > FORMAT {
                    return Err(IndexError::TooNew { path, found });
                }
            }
        }
        Ok(Index {
            db,
            tree,
            search_docs: Mutex::new(None),
        })
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Start a batch of updates; nothing is visible until [`Writer::commit`].
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            index: self,
            batch: sled::Batch::default(),
            overlay: HashMap::new(),
        }
    }

    fn decode<M: Message + Default>(k: &[u8], v: &[u8]) -> Result<M> {
        M::decode(v).map_err(|e| corrupt(k, e.to_string()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map_err(IndexError::from))
    }

    // ----- queries -------------------------------------------------------

    pub fn roots(&self) -> Result<Vec<PathBuf>> {
        self.scan_prefix(&[O])
            .map(|r| r.map(|(k, _)| path_from_bytes(&k[1..])))
            .collect()
    }

    pub fn file_state(&self, path: &Path) -> Result<Option<FileState>> {
        let k = key(P, path_bytes(path));
        match self.tree.get(&k)? {
            None => Ok(None),
            Some(v) => {
                let p: proto::FileState = Self::decode(&k, &v)?;
                codec::state_from_proto(p)
                    .map(Some)
                    .ok_or_else(|| corrupt(&k, "incomplete file state"))
            }
        }
    }

    /// Every known path at or below `scope`, with its state.
    pub fn files_under(&self, scope: &Path) -> Result<Vec<(PathBuf, FileState)>> {
        let mut out = Vec::new();
        if let Some(s) = self.file_state(scope)? {
            out.push((scope.to_path_buf(), s));
        }
        for r in self.scan_prefix(&key(P, &scope_prefix(scope))) {
            let (k, v) = r?;
            let p: proto::FileState = Self::decode(&k, &v)?;
            let s =
                codec::state_from_proto(p).ok_or_else(|| corrupt(&k, "incomplete file state"))?;
            out.push((path_from_bytes(&k[1..]), s));
        }
        Ok(out)
    }

    pub fn track(&self, id: &TrackId) -> Result<Option<Track>> {
        let k = key(T, &id.0);
        match self.tree.get(&k)? {
            None => Ok(None),
            Some(v) => Ok(Some(Self::track_from(&k, &v)?)),
        }
    }

    fn track_from(k: &[u8], v: &[u8]) -> Result<Track> {
        let r: proto::TrackRecord = Self::decode(k, v)?;
        codec::track_from_proto(r).ok_or_else(|| corrupt(k, "track record without id"))
    }

    /// Every track, in track-id order.
    pub fn tracks(&self) -> impl Iterator<Item = Result<Track>> + '_ {
        self.scan_prefix(&[T])
            .map(|r| r.and_then(|(k, v)| Self::track_from(&k, &v)))
    }

    /// Track ids starting with a hex prefix (as `git` resolves short ids).
    pub fn resolve(&self, hex_prefix: &str) -> Result<Vec<TrackId>> {
        let hex = hex_prefix.to_ascii_lowercase();
        if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(vec![]);
        }
        let even = &hex[..hex.len() / 2 * 2];
        let bytes: Vec<u8> = (0..even.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&even[i..i + 2], 16).expect("hex digits"))
            .collect();
        let mut out = vec![];
        for r in self.scan_prefix(&key(T, &bytes)) {
            let (k, _) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad track key"))?;
            if id.to_hex().starts_with(&hex) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn docs(&self) -> Result<SearchDocs> {
        let mut cache = self.search_docs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = cache.as_ref() {
            return Ok(d.clone());
        }
        let mut docs = Vec::new();
        for r in self.scan_prefix(&[S]) {
            let (k, v) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad search key"))?;
            let text = std::str::from_utf8(&v).map_err(|_| corrupt(&k, "search text not UTF-8"))?;
            docs.push((id, text.into()));
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
        // Best score first; ties broken by the document text, then the id,
        // so results are stable.
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

    pub fn albums(&self) -> Result<Vec<Album>> {
        let mut out = vec![];
        for r in self.scan_prefix(&[A]) {
            let (k, v) = r?;
            let rec: proto::AlbumRecord = Self::decode(&k, &v)?;
            let tracks = self.members(A_MEM, &k[1..])?;
            out.push(Album {
                title: rec.title,
                artist: rec.artist,
                year: (rec.year != 0).then_some(rec.year),
                cover: codec::cover_id_opt(&rec.cover),
                tracks,
            });
        }
        Ok(out)
    }

    pub fn artists(&self) -> Result<Vec<Artist>> {
        let mut out = vec![];
        for r in self.scan_prefix(&[R]) {
            let (k, v) = r?;
            let rec: proto::ArtistRecord = Self::decode(&k, &v)?;
            out.push(Artist {
                name: rec.name,
                tracks: self.members(R_MEM, &k[1..])?,
            });
        }
        Ok(out)
    }

    fn members(&self, prefix: u8, owner: &[u8]) -> Result<Vec<TrackId>> {
        let p = key(prefix, owner);
        self.scan_prefix(&p)
            .map(|r| {
                let (k, _) = r?;
                Hash32::from_slice(&k[p.len()..]).ok_or_else(|| corrupt(&k, "bad membership key"))
            })
            .collect()
    }

    pub fn cover(&self, id: &CoverId) -> Result<Option<Cover>> {
        let k = key(C, &id.0);
        match self.tree.get(&k)? {
            None => Ok(None),
            Some(v) => {
                let b: proto::CoverBlob = Self::decode(&k, &v)?;
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
            let e: proto::ScanError = Self::decode(&k, &v)?;
            out.push(FileError {
                path: path_from_bytes(&k[1..]),
                error: e.error,
            });
        }
        Ok(out)
    }

    pub fn counts(&self) -> Result<Counts> {
        let n = |p: u8| self.tree.scan_prefix([p]).keys().count();
        let files = self
            .scan_prefix(&[P])
            .filter(|r| {
                r.as_ref().is_ok_and(|(k, v)| {
                    Self::decode::<proto::FileState>(k, v).is_ok_and(|s| {
                        matches!(s.outcome, Some(proto::file_state::Outcome::Track(_)))
                    })
                })
            })
            .count();
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
            entries.push((id, Hash32::of(&v)));
        }
        // sled iterates in key order, so entries are already sorted by id.
        Ok(Snapshot {
            root: snapshot::root(&entries),
            entries,
        })
    }

    /// Remove albums, artists and covers that no track refers to any more.
    /// Returns how many records were removed.
    pub fn gc(&self) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for (owner, member) in [(A, A_MEM), (R, R_MEM), (C, C_REF)] {
            for r in self.tree.scan_prefix([owner]).keys() {
                let k = r?;
                if self.tree.scan_prefix(key(member, &k[1..])).next().is_none() {
                    batch.remove(k);
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(removed)
    }

    /// Check every cross-reference of the index; returns the problems found
    /// (empty when consistent). Used by `tunemesh status --verify` and tests.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems = vec![];
        let mut tracks: HashMap<TrackId, Track> = HashMap::new();
        for t in self.tracks() {
            let t = t?;
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
            if self.tree.get(key(S, &id.0))?.is_none() {
                problems.push(format!("track {id} has no search document"));
            }
            for m in memberships(t) {
                if self.tree.get(&m)?.is_none() {
                    problems.push(format!("track {id} misses membership {:?}", m[0] as char));
                }
            }
        }
        for (path, s) in self.files_under(Path::new("/"))? {
            if let Outcome::Track(id) = s.outcome {
                match tracks.get(&id) {
                    Some(t) if t.paths.contains(&path) => {}
                    Some(_) => problems.push(format!(
                        "{} -> {id}, which does not list it",
                        path.display()
                    )),
                    None => problems.push(format!("{} -> missing track {id}", path.display())),
                }
            }
        }
        for r in self.scan_prefix(&[S]) {
            let (k, _) = r?;
            let id = Hash32::from_slice(&k[1..]).ok_or_else(|| corrupt(&k, "bad key"))?;
            if !tracks.contains_key(&id) {
                problems.push(format!("search document for missing track {id}"));
            }
        }
        for (owner, member) in [(A, A_MEM), (R, R_MEM), (C, C_REF)] {
            for r in self.tree.scan_prefix([member]).keys() {
                let k = r?;
                let split = k.len() - 32;
                let id = Hash32::from_slice(&k[split..]).ok_or_else(|| corrupt(&k, "bad key"))?;
                if !tracks.contains_key(&id) {
                    problems.push(format!(
                        "{:?} membership of missing track {id}",
                        member as char
                    ));
                }
                if self.tree.get(key(owner, &k[1..split]))?.is_none() {
                    problems.push(format!(
                        "{:?} membership without its record",
                        member as char
                    ));
                }
            }
            for r in self.tree.scan_prefix([owner]).keys() {
                let k = r?;
                if self.tree.scan_prefix(key(member, &k[1..])).next().is_none() {
                    problems.push(format!("{:?} record with no member", owner as char));
                }
            }
        }
        Ok(problems)
    }
}

/// A batch of index updates, applied atomically by [`Writer::commit`].
///
/// Reads through the writer see its own uncommitted writes, so one batch may
/// touch the same track from several paths.
pub struct Writer<'a> {
    index: &'a Index,
    batch: sled::Batch,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Writer<'_> {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.index.tree.get(k)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.batch.insert(k.as_slice(), v.as_slice());
        self.overlay.insert(k, Some(v));
    }

    fn del(&mut self, k: Vec<u8>) {
        self.batch.remove(k.as_slice());
        self.overlay.insert(k, None);
    }

    fn get_track(&self, id: &TrackId) -> Result<Option<Track>> {
        let k = key(T, &id.0);
        self.get(&k)?.map(|v| Index::track_from(&k, &v)).transpose()
    }

    fn get_state(&self, path: &Path) -> Result<Option<FileState>> {
        let k = key(P, path_bytes(path));
        match self.get(&k)? {
            None => Ok(None),
            Some(v) => {
                let p: proto::FileState = Index::decode(&k, &v)?;
                Ok(codec::state_from_proto(p))
            }
        }
    }

    /// Number of keys touched by this batch so far.
    pub fn len(&self) -> usize {
        self.overlay.len()
    }

    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    pub fn add_root(&mut self, root: &Path) {
        self.put(key(O, path_bytes(root)), vec![]);
    }

    pub fn remove_root(&mut self, root: &Path) {
        self.del(key(O, path_bytes(root)));
    }

    /// Record what the scanner found at `path`. With `track`, the path holds
    /// that track (its `paths` field is ignored) and `cover` is its cover
    /// image if the index may not have it yet.
    pub fn set_file(
        &mut self,
        path: &Path,
        state: &FileState,
        track: Option<(&Track, Option<&Cover>)>,
    ) -> Result<()> {
        let new_id = track.map(|(t, _)| t.id);
        if let Some(FileState {
            outcome: Outcome::Track(old),
            ..
        }) = self.get_state(path)?
        {
            if Some(old) != new_id {
                self.detach(path, &old)?;
            }
        }
        if let Some((t, cover)) = track {
            if let Some(c) = cover {
                let ck = key(C, &c.id.0);
                if self.get(&ck)?.is_none() {
                    let blob = proto::CoverBlob {
                        mime: c.mime.clone(),
                        data: c.data.clone(),
                    };
                    self.put(ck, blob.encode_to_vec());
                }
            }
            self.attach(path, t)?;
        }
        let pb = path_bytes(path);
        self.put(key(P, pb), codec::state_to_proto(state).encode_to_vec());
        match &state.outcome {
            Outcome::Error(e) => self.set_error(path, e),
            _ => self.clear_error(path),
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
        let pb = path_bytes(path);
        self.del(key(P, pb));
        self.del(key(E, pb));
        Ok(())
    }

    /// Record an error for a path that is not a file (an unreadable folder).
    pub fn set_error(&mut self, path: &Path, error: &str) {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let e = proto::ScanError {
            error: error.to_owned(),
            at_unix_ms,
        };
        self.put(key(E, path_bytes(path)), e.encode_to_vec());
    }

    pub fn clear_error(&mut self, path: &Path) {
        let k = key(E, path_bytes(path));
        if self.overlay.get(&k).is_some_and(Option::is_none) {
            return;
        }
        self.del(k);
    }

    fn attach(&mut self, path: &Path, t: &Track) -> Result<()> {
        let old = self.get_track(&t.id)?;
        let mut new = match &old {
            Some(o) => o.clone(),
            None => Track {
                paths: vec![],
                ..t.clone()
            },
        };
        let pos = new.paths.binary_search_by(|p| p.as_path().cmp(path));
        if let Err(i) = pos {
            new.paths.insert(i, path.to_path_buf());
        }
        // Metadata comes from the first path in sorted order, whatever order
        // the paths were scanned in: file-name fallbacks stay deterministic.
        if new.paths[0] == path {
            new.tags = t.tags.clone();
            new.audio = t.audio.clone();
            new.cover = t.cover;
            new.size = t.size;
        }
        self.write_track(old.as_ref(), Some(&new))
    }

    fn detach(&mut self, path: &Path, id: &TrackId) -> Result<()> {
        let Some(old) = self.get_track(id)? else {
            return Ok(());
        };
        let mut new = old.clone();
        new.paths.retain(|p| p != path);
        if new.paths.is_empty() {
            self.write_track(Some(&old), None)
        } else {
            self.write_track(Some(&old), Some(&new))
        }
    }

    fn write_track(&mut self, old: Option<&Track>, new: Option<&Track>) -> Result<()> {
        let old_m = old.map(memberships).unwrap_or_default();
        let new_m = new.map(memberships).unwrap_or_default();
        for k in old_m.difference(&new_m) {
            self.del(k.clone());
        }
        for k in new_m.difference(&old_m) {
            self.put(k.clone(), vec![]);
        }
        match new {
            None => {
                let id = old.expect("old or new").id;
                self.del(key(T, &id.0));
                self.del(key(S, &id.0));
            }
            Some(t) => {
                self.put(key(T, &t.id.0), codec::track_to_proto(t).encode_to_vec());
                let doc = search::document(&t.tags.title, &t.tags.artist(), &t.tags.album);
                self.put(key(S, &t.id.0), doc.into_bytes());
                self.upsert_owners(t)?;
            }
        }
        Ok(())
    }

    /// Create the album and artist records a track belongs to, and fill in
    /// what an existing album record lacks (year, cover).
    fn upsert_owners(&mut self, t: &Track) -> Result<()> {
        if let Some(ak) = album_key(t) {
            let k = key(A, &ak);
            let existing = match self.get(&k)? {
                Some(v) => Some(Index::decode::<proto::AlbumRecord>(&k, &v)?),
                None => None,
            };
            let mut rec = existing.clone().unwrap_or_else(|| proto::AlbumRecord {
                title: t.tags.album.clone(),
                artist: t.tags.album_owner(),
                ..Default::default()
            });
            if rec.year == 0 {
                rec.year = t.tags.year.unwrap_or(0);
            }
            if rec.cover.is_empty() {
                rec.cover = t.cover.map(|c| c.0.to_vec()).unwrap_or_default();
            }
            if existing.as_ref() != Some(&rec) {
                self.put(k, rec.encode_to_vec());
            }
        }
        for name in artist_names(t) {
            let k = key(R, &artist_key(name));
            if self.get(&k)?.is_none() {
                let rec = proto::ArtistRecord {
                    name: name.to_owned(),
                };
                self.put(k, rec.encode_to_vec());
            }
        }
        Ok(())
    }

    /// Apply the batch atomically.
    pub fn commit(&mut self) -> Result<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.overlay.clear();
        self.index.tree.apply_batch(batch)?;
        *self
            .index
            .search_docs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}
