//! A tunemesh node: the one type an app embeds, and that the CLI and the
//! HTTP API are thin layers over.
//!
//! Glue between the modules: the index and scanner (a home node indexes and
//! watches its folders), the mesh (members, announcements), library sync
//! (fetching the parts of a member's snapshot trie that differ from what we
//! hold), and streaming (serving local tracks to members; fetching remote
//! ones for the local player).
//!
//! Must never: run blocking work (sled, files, transcoding) on a runtime
//! thread, keep bytes of an original that fail their track id, or trust a
//! member's records beyond what their hashes prove.

pub mod state;

use crate::artwork;
use crate::cache::Cache;
use crate::catalog::{AlbumId, Catalog, CatalogTrack, IdError, Page, Paged, Paths, Prefix};
use crate::index::snapshot;
use crate::index::{self, Index, Snapshot};
use crate::library::{self, ScanOptions};
use crate::mesh::{
    self, Announcement, Device, DeviceId, Event, Mesh, MeshError, MeshStream, PeerInfo, Response,
    StreamHead, StreamOpen,
};
use crate::model::{Cover, CoverId, Hash32, Track, TrackId};
use crate::stream::{Bitrate, StreamRequest, Streamer, Via};
use crate::sync::{SyncError, Syncer};
use crate::tasks::{Stopped, Tasks};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Chunk size of audio streams (mesh frames and the local pump).
const CHUNK: usize = 64 << 10;
/// First wait before the watcher starts again after a failed scan (the
/// index's disk full, say); it doubles up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long an interrupted remote stream keeps trying to resume: a path
/// change takes milliseconds, roaming to another network seconds, and a
/// player has a buffer; a holder that is gone fails the stream after this.
const RESUME_WINDOW: Duration = Duration::from_secs(20);
/// Resumes in a row that bring no byte: the holder fails at that point.
const MAX_FRUITLESS_RESUMES: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Indexes and watches its folders, serves its library.
    Home,
    /// Needs no library of its own; consumes the mesh's.
    Phone,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Home => "home",
            Role::Phone => "phone",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub role: Role,
    /// Library folders to add (home).
    pub dirs: Vec<PathBuf>,
    /// Multiaddrs to listen on (empty: all interfaces, random ports).
    pub listen: Vec<String>,
    pub mdns: bool,
    /// Relays to keep a reservation on (`…/p2p/<relay id>`).
    pub relays: Vec<String>,
    /// Ask the router for a port mapping (UPnP).
    pub upnp: bool,
    /// Device name shown to the other members.
    pub name: String,
    pub cache_bytes: u64,
    pub scan: ScanOptions,
    /// Quiet period before a burst of folder changes is rescanned.
    pub debounce: Duration,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf, role: Role) -> NodeConfig {
        NodeConfig {
            data_dir,
            role,
            dirs: vec![],
            listen: vec![],
            mdns: true,
            relays: vec![],
            upnp: false,
            name: default_name(role),
            cache_bytes: crate::cache::DEFAULT_LIMIT,
            scan: ScanOptions::default(),
            debounce: Duration::from_millis(300),
        }
    }
}

fn default_name(role: Role) -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| role.as_str().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Stopped> for NodeError {
    fn from(e: Stopped) -> Self {
        NodeError::Unavailable(e.to_string())
    }
}

impl From<SyncError> for NodeError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Index(e) => NodeError::Index(e),
            SyncError::Mesh(e) => NodeError::Mesh(e),
            other => NodeError::Unavailable(other.to_string()),
        }
    }
}

impl From<IdError> for NodeError {
    fn from(e: IdError) -> Self {
        match e {
            IdError::NotFound(_) => NodeError::NotFound(e.to_string()),
            IdError::NotAnId(_) | IdError::Ambiguous { .. } => NodeError::BadRequest(e.to_string()),
        }
    }
}

/// Where a track can be played from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Source {
    pub device: String,
    pub name: String,
    /// This device.
    pub local: bool,
    pub online: bool,
}

/// A track of the merged library, with every device that holds it.
#[derive(Debug, Clone)]
pub struct LibraryTrack {
    pub track: Arc<Track>,
    /// The album it belongs to, if it names one.
    pub album: Option<AlbumId>,
    pub sources: Vec<Source>,
}

pub use crate::sync::SyncStats;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub device: String,
    pub name: String,
    pub role: Role,
    pub mesh: String,
    pub root: String,
    pub tracks: u64,
    pub members: usize,
    pub connected: usize,
    pub listen: Vec<String>,
    /// "public", "private" or "unknown" (AutoNAT through our relays).
    pub reachability: String,
    pub relays: Vec<mesh::RelayInfo>,
    pub sync: SyncStats,
}

/// This device and the members, for labelling where tracks are.
struct Holders {
    me: DeviceId,
    name: String,
    online: HashSet<DeviceId>,
    names: HashMap<String, String>,
}

impl Holders {
    fn source(&self, d: DeviceId) -> Source {
        if d == self.me {
            return Source {
                device: d.to_string(),
                name: self.name.clone(),
                local: true,
                online: true,
            };
        }
        let device = d.to_string();
        Source {
            name: self.names.get(&device).cloned().unwrap_or_default(),
            online: self.online.contains(&d),
            local: false,
            device,
        }
    }

    fn label(&self, t: CatalogTrack) -> LibraryTrack {
        LibraryTrack {
            sources: t.holders.iter().map(|d| self.source(*d)).collect(),
            album: t.album,
            track: t.track,
        }
    }
}

/// An audio stream for the local player.
pub struct NodeStream {
    pub track: Arc<Track>,
    pub mime: String,
    /// Length of the whole stream, when known.
    pub total_len: Option<u64>,
    /// `total_len` is final: byte ranges may be served.
    pub complete: bool,
    pub via: String,
    /// "local" or the serving device's id.
    pub source: String,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

struct Inner {
    cfg: NodeConfig,
    index: Arc<Index>,
    catalog: Arc<Catalog>,
    client: mesh::Client,
    streamer: Arc<Streamer>,
    snap: RwLock<Arc<Snapshot>>,
    syncer: Arc<Syncer>,
    tasks: Tasks,
    watch_stop: Arc<AtomicBool>,
    mesh: tokio::sync::Mutex<Option<Mesh>>,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A running node. Cheap to clone; [`Node::shutdown`] stops it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Open the data dir, start the mesh and (home) the scanner and watcher.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let tasks = Tasks::new();
        std::fs::create_dir_all(&cfg.data_dir)?;
        let dir = cfg.data_dir.clone();
        let index = Arc::new(tasks.blocking(move || Index::open(&dir)).await??);
        if !cfg.dirs.is_empty() {
            let mut canon = Vec::new();
            for d in &cfg.dirs {
                let c = std::fs::canonicalize(d).map_err(|e| {
                    NodeError::BadRequest(format!("cannot use {}: {e}", d.display()))
                })?;
                if !c.is_dir() {
                    return Err(NodeError::BadRequest(format!(
                        "{} is not a folder",
                        d.display()
                    )));
                }
                canon.push(c);
            }
            let ix = index.clone();
            tasks
                .blocking(move || {
                    let mut w = ix.writer();
                    for c in &canon {
                        w.add_root(c);
                    }
                    w.commit()
                })
                .await??;
        }
        // Opening the cache lists and sweeps its folder: off the runtime.
        let (cache_dir, cache_bytes) = (cfg.data_dir.join("cache"), cfg.cache_bytes);
        let cache = tasks
            .blocking(move || Cache::open(&cache_dir, cache_bytes))
            .await??;
        let ix = index.clone();
        let snap = Arc::new(tasks.blocking(move || ix.snapshot()).await??);
        let (tx, rx) = mpsc::channel(256);
        let mesh = Mesh::start(
            mesh::Config {
                data_dir: cfg.data_dir.clone(),
                listen: cfg.listen.clone(),
                mdns: cfg.mdns,
                name: cfg.name.clone(),
                role: cfg.role.as_str().into(),
                relays: cfg.relays.clone(),
                upnp: cfg.upnp,
            },
            Announcement {
                root: snap.root,
                tracks: snap.entries.len() as u64,
                name: cfg.name.clone(),
                role: cfg.role.as_str().into(),
            },
            tx,
        )
        .await?;
        let client = mesh.client();
        let catalog = Arc::new(Catalog::new());
        load_catalog(&tasks, &index, &catalog, &client).await?;
        let syncer = Syncer::new(
            index.clone(),
            catalog.clone(),
            client.clone(),
            tasks.clone(),
        );
        let node = Node {
            inner: Arc::new(Inner {
                client,
                catalog,
                syncer,
                index,
                streamer: Arc::new(Streamer::new(Some(cache))),
                snap: RwLock::new(snap),
                tasks,
                watch_stop: Arc::new(AtomicBool::new(false)),
                mesh: tokio::sync::Mutex::new(Some(mesh)),
                watcher: Mutex::new(None),
                cfg,
            }),
        };
        let n = node.clone();
        node.spawn(async move { n.event_loop(rx).await });
        node.prune_catalogs().await;
        if node.inner.cfg.role == Role::Home {
            node.start_watcher()?;
        }
        tracing::info!(device = %node.device_id(), "node started");
        Ok(node)
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.inner.tasks.spawn(f);
    }

    pub fn device_id(&self) -> DeviceId {
        self.inner.client.device_id()
    }

    pub fn role(&self) -> Role {
        self.inner.cfg.role
    }

    /// Stop everything: the watcher, every task, the mesh; flush the index.
    pub async fn shutdown(&self) {
        self.inner.watch_stop.store(true, Ordering::SeqCst);
        self.inner.tasks.shutdown().await;
        if let Some(m) = self.inner.mesh.lock().await.take() {
            m.shutdown().await;
        }
        let w = self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = w {
            let _ = self.inner.tasks.blocking(move || w.join()).await;
        }
        if let Some(c) = self.inner.streamer.cache() {
            let c = c.clone();
            let _ = self
                .inner
                .tasks
                .blocking(move || {
                    c.shutdown();
                    c.wait_idle();
                })
                .await;
        }
        let ix = self.inner.index.clone();
        if let Ok(Err(e)) = self.inner.tasks.blocking(move || ix.flush()).await {
            tracing::error!("flushing the index: {e}");
        }
        tracing::info!("node stopped");
    }

    // ----- status and membership ------------------------------------------

    pub fn status(&self) -> Status {
        let snap = self.snapshot();
        let c = &self.inner.client;
        Status {
            device: c.device_id().to_string(),
            name: self.inner.cfg.name.clone(),
            role: self.inner.cfg.role,
            mesh: c.mesh_id().to_string(),
            root: snap.root.to_hex(),
            tracks: snap.entries.len() as u64,
            members: c.devices().len(),
            connected: c.connected_members().len(),
            listen: c.listen_addrs(),
            reachability: c.reachability().to_string(),
            relays: c.relays(),
            sync: self.sync_stats(),
        }
    }

    pub fn sync_stats(&self) -> SyncStats {
        self.inner.syncer.stats()
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.client.peers()
    }

    pub fn devices(&self) -> Vec<Device> {
        self.inner.client.devices()
    }

    pub fn invite(&self, ttl: Duration) -> Result<String, NodeError> {
        Ok(self.inner.client.invite(ttl)?)
    }

    pub async fn join(&self, ticket: &str) -> Result<Vec<Device>, NodeError> {
        Ok(self.inner.client.join(ticket).await?)
    }

    pub async fn remove_device(&self, id: &str) -> Result<(), NodeError> {
        let d: DeviceId = id.parse()?;
        if d == self.device_id() {
            return Err(NodeError::BadRequest(
                "this is the device itself; remove it from another member".into(),
            ));
        }
        self.inner.client.remove_device(&d).await?;
        self.prune_catalogs().await;
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .snap
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recompute the snapshot after the index changed; announce it.
    async fn refresh_snapshot(&self) -> Result<(), NodeError> {
        let ix = self.inner.index.clone();
        let old = self.snapshot();
        let catalog = self.inner.catalog.clone();
        let me = self.device_id();
        let snap = self
            .inner
            .tasks
            .blocking(move || -> Result<Arc<Snapshot>, index::IndexError> {
                let snap = Arc::new(ix.snapshot()?);
                // What changed, into the catalog: a changed record (same
                // bytes, new paths) goes out and comes back.
                let (put, remove) = snapshot::diff(&old.entries, &snap.entries);
                let mut tracks = Vec::with_capacity(put.len());
                for id in &put {
                    tracks.extend(ix.track(id)?);
                }
                let fresh = catalog.apply(me, tracks, &remove, Paths::Keep);
                store_first_seen(&ix, &fresh)?;
                Ok(snap)
            })
            .await??;
        let (root, n) = (snap.root, snap.entries.len() as u64);
        *self.inner.snap.write().unwrap_or_else(|e| e.into_inner()) = snap;
        self.inner.client.set_local(root, n);
        Ok(())
    }

    /// Forget the catalogs of devices that are no longer members.
    async fn prune_catalogs(&self) {
        let ix = self.inner.index.clone();
        let client = self.inner.client.clone();
        let catalog = self.inner.catalog.clone();
        let r = self
            .inner
            .tasks
            .blocking(move || -> Result<(), index::IndexError> {
                for p in ix.remote_peers()? {
                    let d = DeviceId::from_bytes(&p);
                    if let Some(d) = d.filter(|d| !client.is_member(d)) {
                        catalog.forget(d);
                    }
                    let gone = d.is_none_or(|d| !client.is_member(&d));
                    if gone {
                        let n = ix.remote_forget(&p)?;
                        tracing::info!("forgot {n} tracks of a removed device");
                    }
                }
                Ok(())
            })
            .await;
        if let Ok(Err(e)) | Err(e) = r.map_err(|e| index::IndexError::Writer(e.to_string())) {
            tracing::error!("pruning catalogs: {e}");
        }
    }

    // ----- scanning ---------------------------------------------------------

    fn start_watcher(&self) -> Result<(), NodeError> {
        let node = self.clone();
        let handle = tokio::runtime::Handle::current();
        let stop = self.inner.watch_stop.clone();
        let t = std::thread::Builder::new()
            .name("tunemesh-watch".into())
            .spawn(move || {
                let ix = node.inner.index.clone();
                let roots = match ix.roots() {
                    Ok(r) => library::watch::minimal_scopes(r),
                    Err(e) => {
                        tracing::error!("cannot read library folders: {e}");
                        return;
                    }
                };
                if roots.is_empty() {
                    tracing::warn!("home node without library folders: serving nothing");
                    return;
                }
                // A scan or the watch can fail (the index's disk full, a
                // folder gone): say so, wait, and start again with a full
                // rescan, which finds whatever changed meanwhile. Only a
                // shutdown ends this loop.
                let mut backoff = WATCH_RETRY_MIN;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match node.scan_and_watch(&roots, &handle, &stop) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!("watching stopped: {e}; trying again in {backoff:?}");
                        }
                    }
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(WATCH_RETRY_MAX);
                }
            })?;
        *self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    /// Scan the library folders, then watch them until `stop` is set (Ok)
    /// or a scan fails (Err). Runs on the watcher thread.
    fn scan_and_watch(
        &self,
        roots: &[PathBuf],
        handle: &tokio::runtime::Handle,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), library::watch::WatchError> {
        let ix = self.inner.index.clone();
        let opts = self.inner.cfg.scan.clone();
        let r = library::scan(&ix, roots, &opts, &|_| {})?;
        tracing::info!(
            files = r.files,
            tracks = r.tracks,
            added = r.added,
            removed = r.removed,
            "library scanned"
        );
        let refresh_snapshot = || {
            if let Err(e) = handle.block_on(self.refresh_snapshot()) {
                tracing::error!("snapshot: {e}");
            }
        };
        refresh_snapshot();
        library::watch::watch(
            &ix,
            roots,
            &opts,
            self.inner.cfg.debounce,
            stop,
            |scopes, report| {
                tracing::info!(
                    ?scopes,
                    added = report.added,
                    changed = report.changed,
                    removed = report.removed,
                    "rescanned"
                );
                refresh_snapshot();
            },
        )
    }

    // ----- events from the mesh ----------------------------------------------

    async fn event_loop(&self, mut rx: mpsc::Receiver<Event>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Announced { from, announcement } => {
                    self.inner.syncer.announced(from, announcement.root)
                }
                Event::Request {
                    from,
                    request,
                    reply,
                } => {
                    let n = self.clone();
                    self.spawn(async move {
                        let r = n.inner.syncer.answer(n.snapshot(), request).await;
                        if let Response::Error(e) = &r {
                            tracing::info!(%from, "sync request refused: {e}");
                        }
                        let _ = reply.send(r);
                    });
                }
                Event::Stream { from, open, stream } => {
                    let n = self.clone();
                    let span = tracing::info_span!("serve", peer = %from, track = %open.track.to_hex()[..12].to_string(), kbps = open.kbps);
                    self.spawn(async move { n.serve_stream(open, stream).await }.instrument(span));
                }
                Event::MembersChanged => {
                    // Forgetting a catalog writes sled: not inline here.
                    let n = self.clone();
                    self.spawn(async move { n.prune_catalogs().await });
                }
                Event::Connected(d) => tracing::info!(peer = %d, "member connected"),
                Event::Disconnected(d) => tracing::info!(peer = %d, "member disconnected"),
            }
        }
    }

    // ----- the merged library -------------------------------------------------

    /// The merged library: every track of every member, albums, artists.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Every track of every member (this device included), in library
    /// order. Builds the whole list: surfaces page through
    /// [`Node::tracks`] instead.
    pub async fn library(&self) -> Result<Vec<LibraryTrack>, NodeError> {
        Ok(self.tracks(Page::ALL).items)
    }

    /// A page of the merged library's tracks, labelled with their sources.
    pub fn tracks(&self, page: Page) -> Paged<LibraryTrack> {
        let p = self.inner.catalog.tracks(page);
        let h = self.holders();
        Paged {
            total: p.total,
            items: p.items.into_iter().map(|t| h.label(t)).collect(),
        }
    }

    /// Label catalog entries with where they can be played from, as of now.
    pub fn label(&self, tracks: Vec<CatalogTrack>) -> Vec<LibraryTrack> {
        let h = self.holders();
        tracks.into_iter().map(|t| h.label(t)).collect()
    }

    /// Where the devices in `holders` stand (names, online), as of now.
    pub fn sources(&self, holders: &[DeviceId]) -> Vec<Source> {
        let h = self.holders();
        holders.iter().map(|d| h.source(*d)).collect()
    }

    /// Who holds tracks: this device and the members, as of now.
    fn holders(&self) -> Holders {
        let c = &self.inner.client;
        Holders {
            me: self.device_id(),
            name: self.inner.cfg.name.clone(),
            online: c.connected_members().into_iter().collect(),
            names: c.devices().into_iter().map(|d| (d.id, d.name)).collect(),
        }
    }

    /// Tracks of the merged library matching every word of `query`
    /// (case and accents ignored), best first.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<LibraryTrack>, NodeError> {
        Ok(self.label(self.inner.catalog.search(query, limit).tracks))
    }

    /// A track of the merged library by id or unique id prefix (at least
    /// [`crate::catalog::id::MIN_PREFIX`] hex digits).
    pub async fn resolve(&self, id: &str) -> Result<LibraryTrack, NodeError> {
        let prefix: Prefix = id.parse()?;
        let id = self.inner.catalog.resolve(&prefix)?;
        let t = self
            .inner
            .catalog
            .track(&id)
            .ok_or_else(|| NodeError::NotFound(format!("no track {id} in the library")))?;
        Ok(self.holders().label(t))
    }

    /// A cover image by id; with `size`, scaled so its longest side is at
    /// most that many pixels (a JPEG, cached in `covers/` of the data dir).
    pub async fn cover(&self, id: CoverId, size: Option<u32>) -> Result<Option<Cover>, NodeError> {
        if let Some(size) = size.filter(|s| !artwork::SIZES.contains(s)) {
            return Err(NodeError::BadRequest(
                artwork::ArtworkError::Size(size).to_string(),
            ));
        }
        let ix = self.inner.index.clone();
        let dir = self.inner.cfg.data_dir.join("covers");
        self.inner
            .tasks
            .blocking(move || -> Result<Option<Cover>, NodeError> {
                let cached = size.map(|s| dir.join(format!("{}-{s}.jpg", id.to_hex())));
                if let Some(data) = cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
                    let mime = "image/jpeg".into();
                    return Ok(Some(Cover { id, mime, data }));
                }
                let Some(original) = ix.cover(&id)? else {
                    return Ok(None);
                };
                let (Some(size), Some(path)) = (size, cached) else {
                    return Ok(Some(original));
                };
                let (mime, data) = artwork::resize(&original.data, size)
                    .map_err(|e| NodeError::Unavailable(e.to_string()))?;
                // A cache: failing to keep a copy only costs a resize next time.
                if let Err(e) = write_whole(&dir, &path, &data) {
                    tracing::warn!("cannot cache a resized cover: {e}");
                }
                Ok(Some(Cover {
                    id,
                    mime: mime.into(),
                    data,
                }))
            })
            .await?
    }

    // ----- streaming ---------------------------------------------------------------

    /// Open a track for the local player: from this device if it holds it,
    /// else from the online member with the lowest round trip. The
    /// original file ([`Bitrate::Original`]) is checked against the track
    /// id as it arrives (the reader fails at the end if it does not match).
    pub async fn open_stream(
        &self,
        id: &str,
        bitrate: Bitrate,
        start_ms: u64,
        offset: u64,
    ) -> Result<NodeStream, NodeError> {
        let lt = self.resolve(id).await?;
        let kbps = bitrate.wire();
        if lt.sources.iter().any(|s| s.local) {
            let track = lt.track.clone();
            if track.paths.iter().any(|p| p.is_file()) {
                return self.open_local(track, kbps, start_ms, offset).await;
            }
        }
        let rtts: HashMap<String, f64> = self
            .peers()
            .into_iter()
            .filter_map(|p| Some((p.id, p.rtt_ms?)))
            .collect();
        let mut sources: Vec<&Source> =
            lt.sources.iter().filter(|s| s.online && !s.local).collect();
        sources.sort_by(|a, b| {
            let ra = rtts.get(&a.device).copied().unwrap_or(f64::MAX);
            let rb = rtts.get(&b.device).copied().unwrap_or(f64::MAX);
            ra.total_cmp(&rb)
        });
        if sources.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "no device holding {} is online",
                lt.track.id
            )));
        }
        let open = StreamOpen {
            track: lt.track.id,
            kbps,
            start_ms,
            offset,
        };
        let holders: Vec<DeviceId> = sources
            .iter()
            .filter_map(|s| s.device.parse().ok())
            .collect();
        let mut errors = vec![];
        for s in sources {
            let d: DeviceId = s.device.parse()?;
            match self.inner.client.open_stream(&d, &open).await {
                Ok((head, stream)) => {
                    if let Some(e) = head.error {
                        errors.push(format!("{}: {e}", s.device));
                        continue;
                    }
                    // The serving device first, then the other holders.
                    let order = std::iter::once(d)
                        .chain(holders.iter().copied().filter(|h| *h != d))
                        .collect();
                    let framed = tokio_util::io::StreamReader::new(resuming(Resume {
                        client: self.inner.client.clone(),
                        open: open.clone(),
                        received: 0,
                        at_last_resume: None,
                        fruitless: 0,
                        holders: order,
                        chunks: Box::pin(stream),
                        closed: Some(self.inner.client.watch_closed()),
                        cancel: self.inner.tasks.cancel_token().clone(),
                    }));
                    let reader: Pin<Box<dyn AsyncRead + Send>> = if kbps == 0 && offset == 0 {
                        Box::pin(Verify::new(framed, lt.track.id, lt.track.size))
                    } else {
                        Box::pin(framed)
                    };
                    return Ok(NodeStream {
                        track: lt.track,
                        mime: head.mime,
                        total_len: head.total_len,
                        complete: head.complete,
                        via: head.via,
                        source: d.to_string(),
                        reader,
                    });
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(NodeError::Unavailable(format!(
            "cannot stream {}: {}",
            lt.track.id,
            errors.join("; ")
        )))
    }

    /// Open a local track: the stream is read on a blocking thread and
    /// handed over in chunks through a small channel (back-pressure: the
    /// thread waits while the reader is slow).
    async fn open_local(
        &self,
        track: Arc<Track>,
        kbps: u32,
        start_ms: u64,
        offset: u64,
    ) -> Result<NodeStream, NodeError> {
        let streamer = self.inner.streamer.clone();
        let t = track.clone();
        let tasks = self.inner.tasks.clone();
        let opened = tasks
            .blocking(move || {
                // A member's wire value: 0 is the original, others clamped.
                let mut req = StreamRequest::new(Bitrate::from_wire(kbps));
                req.start = start_ms as f64 / 1000.0;
                req.offset = offset;
                streamer.open(&t, &req).map_err(|e| {
                    tracing::warn!(track = %t.id, "cannot stream: {e}");
                    e.public_message()
                })
            })
            .await?
            .map_err(NodeError::Unavailable)?;
        let complete =
            opened.is_complete() || matches!(opened.via, Via::Original | Via::Passthrough);
        let (mime, len, via) = (
            opened.mime.to_string(),
            opened.len,
            format!("{:?}", opened.via).to_lowercase(),
        );
        // The pump: one chunk at a time on the blocking pool, sent on when
        // the reader has room. A paused player holds a task and a channel
        // slot, never a blocking-pool thread.
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let pump = tasks.clone();
        tasks.spawn(async move {
            let mut s = Some((opened, vec![0u8; CHUNK]));
            while let Some((mut st, mut buf)) = s.take() {
                let read = pump
                    .blocking(move || {
                        let r = st.read(&mut buf).map(|n| Bytes::copy_from_slice(&buf[..n]));
                        (st, buf, r)
                    })
                    .await;
                let Ok((st, buf, r)) = read else { break };
                let more = matches!(&r, Ok(b) if !b.is_empty());
                if matches!(&r, Ok(b) if b.is_empty()) || tx.send(r).await.is_err() {
                    break;
                }
                if more {
                    s = Some((st, buf));
                }
            }
        });
        let body =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        Ok(NodeStream {
            track,
            mime,
            total_len: len,
            complete,
            via,
            source: "local".into(),
            reader: Box::pin(tokio_util::io::StreamReader::new(body)),
        })
    }

    /// Serve a member's stream request: head, then chunks, then the end
    /// marker (`mesh::audio`; a stream without it was cut).
    async fn serve_stream(&self, open: StreamOpen, mut stream: MeshStream) {
        let started = Instant::now();
        let ix = self.inner.index.clone();
        let id = open.track;
        let track = match self.inner.tasks.blocking(move || ix.track(&id)).await {
            Ok(Ok(Some(t))) => t,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "this device does not hold that track".into(),
                };
                let _ = stream
                    .write_head(&StreamHead {
                        error: Some(why),
                        ..Default::default()
                    })
                    .await;
                return;
            }
        };
        let ns = match self
            .open_local(Arc::new(track), open.kbps, open.start_ms, open.offset)
            .await
        {
            Ok(ns) => ns,
            Err(e) => {
                tracing::warn!("cannot serve: {e}");
                let _ = stream
                    .write_head(&StreamHead {
                        error: Some(e.to_string()),
                        ..Default::default()
                    })
                    .await;
                return;
            }
        };
        let head = StreamHead {
            error: None,
            mime: ns.mime.clone(),
            total_len: ns.total_len,
            complete: ns.complete,
            via: ns.via.clone(),
        };
        if let Err(e) = stream.write_head(&head).await {
            tracing::info!("peer went away: {e}");
            return;
        }
        let mut reader = ns.reader;
        let mut out = stream.into_writer();
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            use tokio::io::AsyncReadExt;
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("stream failed after {sent} bytes: {e}");
                    return; // no end marker: the receiver sees a cut stream
                }
            };
            if let Err(e) = out.send(Bytes::copy_from_slice(&buf[..n])).await {
                tracing::info!("peer stopped reading after {sent} bytes: {e}");
                return;
            }
            sent += n as u64;
        }
        let _ = out.finish().await;
        tracing::info!(bytes = sent, ms = started.elapsed().as_millis() as u64, via = %head.via, "stream served");
    }
}

/// Write `data` to `path` in `dir` whole or not at all.
fn write_whole(dir: &std::path::Path, path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::fsutil::write_atomic(path, data, crate::fsutil::FileMode::Default)
}

/// Keep when albums were first seen, for "recently added" after a restart.
fn store_first_seen(ix: &Index, fresh: &[(AlbumId, u64)]) -> Result<(), index::IndexError> {
    let rows: Vec<([u8; 16], u64)> = fresh.iter().map(|(a, t)| (a.0, *t)).collect();
    ix.set_first_seen(&rows)
}

/// Fill the catalog from the index: this device's tracks, then the stored
/// catalogs of current members.
async fn load_catalog(
    tasks: &Tasks,
    index: &Arc<Index>,
    catalog: &Arc<Catalog>,
    client: &mesh::Client,
) -> Result<(), NodeError> {
    let (ix, cat, client) = (index.clone(), catalog.clone(), client.clone());
    tasks
        .blocking(move || -> Result<(), index::IndexError> {
            let me = client.device_id();
            let seen = ix.first_seen()?;
            cat.remember_first_seen(seen.into_iter().map(|(a, t)| (AlbumId(a), t)));
            let mut fresh = vec![];
            let mut batch = Vec::with_capacity(4096);
            for t in ix.tracks() {
                batch.push(t?);
                if batch.len() == 4096 {
                    let b = std::mem::take(&mut batch);
                    fresh.extend(cat.apply(me, b, &[], Paths::Keep));
                }
            }
            fresh.extend(cat.apply(me, batch, &[], Paths::Keep));
            for p in ix.remote_peers()? {
                let Some(d) = DeviceId::from_bytes(&p).filter(|d| *d != me && client.is_member(d))
                else {
                    continue;
                };
                fresh.extend(cat.apply(d, ix.remote_tracks(&p)?, &[], Paths::Drop));
            }
            store_first_seen(&ix, &fresh)
        })
        .await??;
    Ok(())
}

/// The receiving side of a served stream, chunk by chunk.
type Chunks = Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A remote stream that outlives the connection carrying it.
///
/// Streams do not migrate between connections by themselves: when the one
/// carrying it closes (a relayed connection dropped once a direct one is
/// punched, a network change, the holder restarting), the stream is opened
/// again from the byte already received, on whatever connection the mesh
/// has then, from the same holder or another. The bytes are the same
/// (originals, cached or deterministic transcodes), so the reader sees one
/// seamless stream.
struct Resume {
    client: mesh::Client,
    open: StreamOpen,
    received: u64,
    at_last_resume: Option<u64>,
    fruitless: u32,
    holders: Vec<DeviceId>,
    chunks: Chunks,
    /// Connections of our peers that closed (None once the mesh is gone).
    closed: Option<tokio::sync::broadcast::Receiver<DeviceId>>,
    cancel: CancellationToken,
}

impl Resume {
    /// `failed`: the stream itself broke (not merely a connection of its
    /// holder closing), which counts towards giving up.
    async fn reopen(&mut self, cause: std::io::Error, failed: bool) -> Result<(), std::io::Error> {
        if failed {
            if self.at_last_resume == Some(self.received) {
                self.fruitless += 1;
            } else {
                self.fruitless = 1;
            }
            self.at_last_resume = Some(self.received);
        }
        let give_up = |why: String| std::io::Error::new(cause.kind(), format!("{cause}; {why}"));
        if self.fruitless > MAX_FRUITLESS_RESUMES {
            return Err(give_up("resuming brought nothing".into()));
        }
        tracing::info!(
            track = %self.open.track,
            at = self.received,
            "stream interrupted ({cause}): resuming"
        );
        let deadline = Instant::now() + RESUME_WINDOW;
        let mut wait = Duration::from_millis(100);
        let mut last = String::new();
        loop {
            for i in 0..self.holders.len() {
                let d = self.holders[i];
                let mut open = self.open.clone();
                open.offset += self.received;
                match self.client.open_stream(&d, &open).await {
                    Ok((head, s)) => match head.error {
                        None => {
                            tracing::info!(track = %self.open.track, from = %d, at = self.received, "stream resumed");
                            // Closes reported while reopening are behind us.
                            if let Some(c) = self.closed.as_mut() {
                                while c.try_recv().is_ok() {}
                            }
                            self.chunks = Box::pin(s);
                            self.holders.swap(0, i);
                            return Ok(());
                        }
                        Some(e) => last = e,
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() + wait > deadline {
                return Err(give_up(format!("could not resume: {last}")));
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(give_up("shutting down".into())),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

fn resuming(r: Resume) -> Chunks {
    Box::pin(futures::stream::unfold(Some(r), |state| async move {
        let mut r = state?;
        loop {
            let next = match r.closed.as_mut() {
                Some(closed) => tokio::select! {
                    biased;
                    c = r.chunks.next() => Some(c),
                    lost = closed.recv() => match lost {
                        Ok(d) if d != r.holders[0] => continue,
                        // Ours, or too many to tell: reopen to be sure.
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            r.closed = None;
                            continue;
                        }
                    },
                },
                None => Some(r.chunks.next().await),
            };
            let (cause, failed) = match next {
                // The end marker: the stream is whole.
                Some(None) => return None,
                Some(Some(Ok(b))) => {
                    r.received += b.len() as u64;
                    return Some((Ok(b), Some(r)));
                }
                Some(Some(Err(e))) => (e, true),
                None => (
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "a connection to the serving device closed",
                    ),
                    false,
                ),
            };
            if let Err(e) = r.reopen(cause, failed).await {
                return Some((Err(e), None));
            }
        }
    }))
}

/// Passes an original file through while hashing it; at the end, fails
/// unless the bytes are exactly the track (blake3 = id, same length).
struct Verify<R> {
    inner: R,
    hasher: blake3::Hasher,
    id: TrackId,
    len: u64,
    seen: u64,
}

impl<R> Verify<R> {
    fn new(inner: R, id: TrackId, len: u64) -> Verify<R> {
        Verify {
            inner,
            hasher: blake3::Hasher::new(),
            id,
            len,
            seen: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verify<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if got.is_empty() {
                    let h: Hash32 = this.hasher.finalize().into();
                    if h != this.id || this.seen != this.len {
                        return std::task::Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the file received ({} bytes, blake3 {h}) is not track {}",
                                this.seen, this.id
                            ),
                        )));
                    }
                } else {
                    this.seen += got.len() as u64;
                    this.hasher.update(got);
                }
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
