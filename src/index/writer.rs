//! The index's one writer: batches of updates (file states, tracks,
//! album/artist/cover counts, errors) built in memory, read back through
//! the writer, and applied as one `sled::Batch` by a background committer.

use super::*;

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
                            Some(s) => batch.insert(key(T, id.as_bytes()), s.encode()),
                            None => batch.remove(key(T, id.as_bytes())),
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
            let k = key(C_COUNT, id.as_bytes());
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
                self.batch
                    .insert(key(C, c.id.as_bytes()), blob.encode_to_vec());
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
                        a.cover = t.cover.map(|c| c.as_bytes().to_vec()).unwrap_or_default();
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
                        self.batch.remove(key(C, c.as_bytes()));
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
                Some(n) => batch.insert(key(C_COUNT, id.as_bytes()), n.to_le_bytes().to_vec()),
                None => batch.remove(key(C_COUNT, id.as_bytes())),
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

impl<'a> Writer<'a> {
    /// The one writer of `index` (waits for the current one to finish).
    pub(super) fn new(index: &'a Index) -> Writer<'a> {
        let lock = index.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = index.tree.scan_prefix([T]).next().is_none();
        Writer {
            _lock: lock,
            index,
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
}
