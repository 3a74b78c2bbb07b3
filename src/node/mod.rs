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

use crate::cache::Cache;
use crate::index::snapshot::{self, Entry, LEAF_MAX};
use crate::index::{self, Index, Snapshot};
use crate::library::{self, ScanOptions};
use crate::mesh::{
    self, Announcement, Device, DeviceId, Event, Mesh, MeshError, MeshStream, NodeReply, PeerInfo,
    Request, Response, StreamHead, StreamOpen,
};
use crate::model::{Hash32, Track, TrackId};
use crate::stream::{Profile, StreamRequest, Streamer, Via};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Chunk size of audio streams (mesh frames and the local pump).
const CHUNK: usize = 64 << 10;
/// First wait before the watcher starts again after a failed scan (the
/// index's disk full, say); it doubles up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// Most entries a sync asks for in one reply (and with records, when we
/// hold nothing under that part of the trie yet).
const MAX_ENTRIES: u32 = 1024;
/// Trie nodes asked for in one pipelined group (bounds what a sync holds
/// in memory: a group's replies, about 100 KB each when records come along).
const SYNC_GROUP: usize = 32;
/// Times a failed sync is tried again while the peer stays connected.
const SYNC_RETRIES: u32 = 5;
/// Records per GetRecords request.
const RECORD_BATCH: usize = 512;
/// Largest reply a node builds (under the wire limit).
const REPLY_BUDGET: usize = 6 << 20;
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
    pub track: Track,
    pub sources: Vec<Source>,
}

/// Progress of library syncs, for status and benchmarks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncStats {
    pub syncs: u64,
    pub requests: u64,
    /// Bytes of sync messages, both ways, as framed on the wire (before
    /// noise and muxer overhead, a few percent).
    pub bytes_in: u64,
    pub records: u64,
    pub last_ms: u64,
    pub last_bytes: u64,
}

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
    client: mesh::Client,
}

impl Holders {
    fn local(&self) -> Source {
        Source {
            device: self.me.to_string(),
            name: self.name.clone(),
            local: true,
            online: true,
        }
    }

    fn remote(&self, d: DeviceId) -> Source {
        Source {
            device: d.to_string(),
            name: self.names.get(&d.to_string()).cloned().unwrap_or_default(),
            local: false,
            online: self.online.contains(&d),
        }
    }

    /// The stored catalogs of current members (not this device).
    fn catalogs(&self, ix: &Index) -> Result<Vec<(Vec<u8>, DeviceId)>, NodeError> {
        Ok(ix
            .remote_peers()?
            .into_iter()
            .filter_map(|p| {
                let d = DeviceId::from_bytes(&p)?;
                (d != self.me && self.client.is_member(&d)).then_some((p, d))
            })
            .collect())
    }
}

/// An audio stream for the local player.
pub struct NodeStream {
    pub track: Track,
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

#[derive(Default)]
struct SyncSlot {
    running: bool,
    want: Option<Hash32>,
}

struct Inner {
    cfg: NodeConfig,
    index: Arc<Index>,
    client: mesh::Client,
    streamer: Arc<Streamer>,
    snap: RwLock<Arc<Snapshot>>,
    syncs: Mutex<HashMap<DeviceId, SyncSlot>>,
    stats: Mutex<SyncStats>,
    sync_bytes: AtomicU64,
    tasks: TaskTracker,
    cancel: CancellationToken,
    watch_stop: Arc<AtomicBool>,
    mesh: tokio::sync::Mutex<Option<Mesh>>,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A running node. Cheap to clone; [`Node::shutdown`] stops it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Unavailable(format!("worker failed: {e}")))
}

impl Node {
    /// Open the data dir, start the mesh and (home) the scanner and watcher.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let dir = cfg.data_dir.clone();
        let index = Arc::new(blocking(move || Index::open(&dir)).await??);
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
            blocking(move || {
                let mut w = ix.writer();
                for c in &canon {
                    w.add_root(c);
                }
                w.commit()
            })
            .await??;
        }
        let cache = Cache::open(&cfg.data_dir.join("cache"), cfg.cache_bytes)?;
        let ix = index.clone();
        let snap = Arc::new(blocking(move || ix.snapshot()).await??);
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
        let node = Node {
            inner: Arc::new(Inner {
                client: mesh.client(),
                index,
                streamer: Arc::new(Streamer::new(Some(cache))),
                snap: RwLock::new(snap),
                syncs: Mutex::new(HashMap::new()),
                stats: Mutex::new(SyncStats::default()),
                sync_bytes: AtomicU64::new(0),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
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
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
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
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
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
            let _ = blocking(move || w.join()).await;
        }
        if let Some(c) = self.inner.streamer.cache() {
            let c = c.clone();
            let _ = blocking(move || {
                c.shutdown();
                c.wait_idle();
            })
            .await;
        }
        let ix = self.inner.index.clone();
        if let Ok(Err(e)) = blocking(move || ix.flush()).await {
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
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let snap = Arc::new(blocking(move || ix.snapshot()).await??);
        let (root, n) = (snap.root, snap.entries.len() as u64);
        *self.inner.snap.write().unwrap_or_else(|e| e.into_inner()) = snap;
        self.inner.client.set_local(root, n);
        Ok(())
    }

    /// Forget the catalogs of devices that are no longer members.
    async fn prune_catalogs(&self) {
        let ix = self.inner.index.clone();
        let client = self.inner.client.clone();
        let r = blocking(move || -> Result<(), index::IndexError> {
            for p in ix.remote_peers()? {
                let gone = DeviceId::from_bytes(&p).is_none_or(|d| !client.is_member(&d));
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
                Event::Announced { from, announcement } => self.maybe_sync(from, announcement.root),
                Event::Request {
                    from,
                    request,
                    reply,
                } => {
                    let n = self.clone();
                    self.spawn(async move {
                        let r = n.answer(request).await;
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
                Event::MembersChanged => self.prune_catalogs().await,
                Event::Connected(d) => tracing::info!(peer = %d, "member connected"),
                Event::Disconnected(d) => tracing::info!(peer = %d, "member disconnected"),
            }
        }
    }

    /// Answer a member's sync request from the current snapshot.
    async fn answer(&self, req: Request) -> Response {
        let snap = self.snapshot();
        let ix = self.inner.index.clone();
        let r = blocking(move || match req {
            Request::GetNode {
                root,
                path,
                max_entries,
                with_records,
            } => {
                if root != snap.root {
                    return Response::Error(format!("stale root; the root is now {}", snap.root));
                }
                let run = snapshot::subtree(&snap.entries, &path);
                let limit = (max_entries as usize).clamp(LEAF_MAX, 4 * MAX_ENTRIES as usize);
                if run.len() > limit {
                    let mut c = [Hash32([0; 32]); 16];
                    for (h, part) in c.iter_mut().zip(snapshot::children(run, path.len())) {
                        *h = snapshot::node_hash(part, path.len() + 1);
                    }
                    return Response::Node(NodeReply {
                        root,
                        children: Some(Box::new(c)),
                        entries: vec![],
                        records: vec![],
                    });
                }
                let mut records = vec![];
                if with_records {
                    let mut budget = REPLY_BUDGET;
                    for (id, _) in run {
                        match ix.record_bytes(id) {
                            Ok(Some(r)) if r.len() <= budget => {
                                budget -= r.len();
                                records.push(r);
                            }
                            // Over budget or gone: the peer asks by id.
                            _ => {
                                records.clear();
                                break;
                            }
                        }
                    }
                }
                Response::Node(NodeReply {
                    root,
                    children: None,
                    entries: run.to_vec(),
                    records,
                })
            }
            Request::GetRecords(ids) => {
                let mut out = vec![];
                let mut budget = REPLY_BUDGET;
                for id in ids {
                    match ix.record_bytes(&id) {
                        Ok(Some(r)) if r.len() <= budget => {
                            budget -= r.len();
                            out.push(r);
                        }
                        Ok(Some(_)) => break,
                        Ok(None) => {}
                        Err(e) => return Response::Error(e.to_string()),
                    }
                }
                Response::Records(out)
            }
        })
        .await;
        r.unwrap_or_else(|e| Response::Error(e.to_string()))
    }

    // ----- library sync ---------------------------------------------------------

    fn maybe_sync(&self, peer: DeviceId, root: Hash32) {
        {
            let mut syncs = self.inner.syncs.lock().unwrap_or_else(|e| e.into_inner());
            let slot = syncs.entry(peer).or_default();
            if slot.running {
                slot.want = Some(root);
                return;
            }
            slot.running = true;
        }
        let n = self.clone();
        self.spawn(
            async move {
                let mut root = root;
                let mut failures = 0u32;
                loop {
                    match n.sync_once(peer, root).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            tracing::warn!("library sync failed (attempt {failures}): {e}");
                        }
                    }
                    let next = {
                        let mut syncs = n.inner.syncs.lock().unwrap_or_else(|e| e.into_inner());
                        let slot = syncs.entry(peer).or_default();
                        let next = slot.want.take();
                        // Try a failed sync again (what it fetched is kept)
                        // while the peer stays connected.
                        let retry = failures > 0
                            && failures <= SYNC_RETRIES
                            && n.inner.client.connected_members().contains(&peer);
                        if next.is_none() && !retry {
                            slot.running = false;
                        }
                        next.or(retry.then_some(root))
                    };
                    match next {
                        Some(r) => {
                            if failures > 0 && r == root {
                                tokio::time::sleep(Duration::from_millis(500 << failures.min(6)))
                                    .await;
                            }
                            root = r;
                        }
                        None => break,
                    }
                }
            }
            .instrument(tracing::info_span!("sync", %peer)),
        );
    }

    /// Bring our copy of `peer`'s catalog to `root`, fetching only the parts
    /// of its trie whose hashes differ from ours. Requests go out pipelined
    /// in groups; each group's changes are stored before the next is asked
    /// for, so an interrupted sync keeps what it got.
    async fn sync_once(&self, peer: DeviceId, root: Hash32) -> Result<(), NodeError> {
        let started = Instant::now();
        let pb = peer.to_bytes();
        let ix = self.inner.index.clone();
        let p2 = pb.clone();
        let mut local: Vec<Entry> = blocking(move || ix.remote_entries(&p2)).await??;
        if snapshot::root(&local) == root {
            return Ok(());
        }
        let mut bytes = 0u64;
        let mut requests = 0u64;
        let mut records_in = 0u64;
        // Breadth first, a level at a time.
        let mut level: Vec<Vec<u8>> = vec![vec![]];
        while !level.is_empty() {
            let mut next = vec![];
            for group in level.chunks(SYNC_GROUP) {
                let reqs: Vec<Request> = group
                    .iter()
                    .map(|path| {
                        let under = snapshot::subtree(&local, path).len();
                        Request::GetNode {
                            root,
                            path: path.clone(),
                            max_entries: if under == 0 {
                                MAX_ENTRIES
                            } else {
                                4 * LEAF_MAX as u32
                            },
                            with_records: under == 0,
                        }
                    })
                    .collect();
                requests += reqs.len() as u64;
                let replies = self.inner.client.request_many(&peer, reqs).await?;
                let mut put: Vec<(TrackId, Vec<u8>)> = vec![];
                let mut remove: Vec<TrackId> = vec![];
                let mut want: Vec<Entry> = vec![];
                for (path, (reply, wire)) in group.iter().zip(replies) {
                    bytes += wire;
                    let reply = match reply {
                        Response::Node(n) => n,
                        Response::Error(e) => {
                            return Err(NodeError::Unavailable(format!(
                                "{peer} refused a sync request: {e}"
                            )))
                        }
                        Response::Records(_) => {
                            return Err(NodeError::Unavailable(format!(
                                "{peer} answered out of turn"
                            )))
                        }
                    };
                    let mine = snapshot::subtree(&local, path);
                    if let Some(children) = &reply.children {
                        for (i, part) in snapshot::children(mine, path.len()).iter().enumerate() {
                            if snapshot::node_hash(part, path.len() + 1) != children[i] {
                                let mut p = path.clone();
                                p.push(i as u8);
                                next.push(p);
                            }
                        }
                        continue;
                    }
                    // Every entry under the path: diff against ours.
                    let theirs: HashSet<TrackId> =
                        reply.entries.iter().map(|(id, _)| *id).collect();
                    remove.extend(
                        mine.iter()
                            .map(|(id, _)| *id)
                            .filter(|id| !theirs.contains(id)),
                    );
                    let have: HashSet<Entry> = mine.iter().copied().collect();
                    let new: Vec<Entry> = reply
                        .entries
                        .iter()
                        .filter(|e| !have.contains(e))
                        .copied()
                        .collect();
                    if !reply.records.is_empty() && reply.records.len() == reply.entries.len() {
                        let wanted: HashSet<TrackId> = new.iter().map(|(id, _)| *id).collect();
                        for ((id, h), rec) in reply.entries.iter().zip(reply.records) {
                            if Hash32::of(&rec) != *h {
                                return Err(NodeError::Unavailable(format!(
                                    "{peer} sent a record for {id} that does not match its entry"
                                )));
                            }
                            if wanted.contains(id) {
                                put.push((*id, rec));
                            }
                        }
                    } else {
                        want.extend(new);
                    }
                }
                // Records not sent along: by id, in batches, until all came.
                while !want.is_empty() {
                    let reqs: Vec<Request> = want
                        .chunks(RECORD_BATCH)
                        .map(|b| Request::GetRecords(b.iter().map(|(id, _)| *id).collect()))
                        .collect();
                    requests += reqs.len() as u64;
                    let mut by_hash: HashMap<Hash32, Vec<u8>> = HashMap::new();
                    for (reply, wire) in self.inner.client.request_many(&peer, reqs).await? {
                        bytes += wire;
                        match reply {
                            Response::Records(r) => {
                                by_hash.extend(r.into_iter().map(|r| (Hash32::of(&r), r)));
                            }
                            Response::Error(e) => return Err(NodeError::Unavailable(e)),
                            Response::Node(_) => {
                                return Err(NodeError::Unavailable(format!(
                                    "{peer} answered out of turn"
                                )))
                            }
                        }
                    }
                    let before = want.len();
                    want.retain(|(id, h)| match by_hash.remove(h) {
                        Some(r) => {
                            put.push((*id, r));
                            false
                        }
                        None => true,
                    });
                    if want.len() == before {
                        return Err(NodeError::Unavailable(format!(
                            "{peer} no longer has {} of the records it listed",
                            want.len()
                        )));
                    }
                }
                records_in += put.len() as u64;
                if put.is_empty() && remove.is_empty() {
                    continue;
                }
                // Keep the in-memory copy in step (sorted by id), then store.
                let gone: HashSet<TrackId> = remove.iter().copied().collect();
                local.retain(|(id, _)| !gone.contains(id));
                let fresh: HashMap<TrackId, Hash32> =
                    put.iter().map(|(id, r)| (*id, Hash32::of(r))).collect();
                local.retain(|(id, _)| !fresh.contains_key(id));
                local.extend(fresh);
                local.sort_unstable();
                let ix = self.inner.index.clone();
                let p2 = pb.clone();
                blocking(move || ix.remote_apply(&p2, &put, &remove)).await??;
            }
            level = next;
        }
        let got = snapshot::root(&local);
        self.inner.sync_bytes.fetch_add(bytes, Ordering::Relaxed);
        {
            let mut s = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.syncs += 1;
            s.requests += requests;
            s.records += records_in;
            s.bytes_in += bytes;
            s.last_ms = started.elapsed().as_millis() as u64;
            s.last_bytes = bytes;
        }
        if got != root {
            return Err(NodeError::Unavailable(format!(
                "after syncing, {peer}'s catalog hashes to {got}, not the {root} it announced (it changed meanwhile?)"
            )));
        }
        tracing::info!(
            tracks = local.len(),
            records = records_in,
            requests,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "library synced"
        );
        Ok(())
    }

    // ----- the merged library -------------------------------------------------

    /// Every track of every member (this device included), merged by id.
    pub async fn library(&self) -> Result<Vec<LibraryTrack>, NodeError> {
        let holders = self.holders();
        let ix = self.inner.index.clone();
        blocking(move || -> Result<Vec<LibraryTrack>, NodeError> {
            let mut out: HashMap<TrackId, LibraryTrack> = HashMap::new();
            for t in ix.tracks() {
                let t = t?;
                out.insert(
                    t.id,
                    LibraryTrack {
                        track: t,
                        sources: vec![holders.local()],
                    },
                );
            }
            for (p, d) in holders.catalogs(&ix)? {
                let src = holders.remote(d);
                for t in ix.remote_tracks(&p)? {
                    out.entry(t.id)
                        .or_insert_with(|| LibraryTrack {
                            track: t,
                            sources: vec![],
                        })
                        .sources
                        .push(src.clone());
                }
            }
            let mut v: Vec<LibraryTrack> = out.into_values().collect();
            v.sort_by_cached_key(|t| {
                let g = &t.track.tags;
                (
                    g.album_owner().to_lowercase(),
                    g.album.to_lowercase(),
                    g.disc.unwrap_or(0),
                    g.track.unwrap_or(0),
                    g.title.to_lowercase(),
                    t.track.id,
                )
            });
            Ok(v)
        })
        .await?
    }

    /// Who holds tracks: this device and the members, as of now.
    fn holders(&self) -> Holders {
        let c = &self.inner.client;
        Holders {
            me: self.device_id(),
            name: self.inner.cfg.name.clone(),
            online: c.connected_members().into_iter().collect(),
            names: c.devices().into_iter().map(|d| (d.id, d.name)).collect(),
            client: c.clone(),
        }
    }

    /// Tracks of the merged library matching every word of `query`
    /// (case and accents ignored), best first.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<LibraryTrack>, NodeError> {
        let q = crate::index::search::Query::new(query);
        if q.is_empty() {
            return Ok(vec![]);
        }
        let mut hits: Vec<(u32, LibraryTrack)> = self
            .library()
            .await?
            .into_iter()
            .filter_map(|t| {
                let g = &t.track.tags;
                let doc = crate::index::search::document(&g.title, &g.artist(), &g.album);
                q.score(&doc).map(|s| (s, t))
            })
            .collect();
        hits.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
        Ok(hits.into_iter().take(limit).map(|(_, t)| t).collect())
    }

    /// One track of the merged library and its sources, by whole id.
    async fn lookup(&self, id: TrackId) -> Result<Option<LibraryTrack>, NodeError> {
        let holders = self.holders();
        let ix = self.inner.index.clone();
        blocking(move || -> Result<Option<LibraryTrack>, NodeError> {
            let mut found: Option<LibraryTrack> = ix.track(&id)?.map(|t| LibraryTrack {
                track: t,
                sources: vec![holders.local()],
            });
            for (p, d) in holders.catalogs(&ix)? {
                if let Some(t) = ix.remote_track(&p, &id)? {
                    found
                        .get_or_insert_with(|| LibraryTrack {
                            track: t,
                            sources: vec![],
                        })
                        .sources
                        .push(holders.remote(d));
                }
            }
            Ok(found)
        })
        .await?
    }

    /// A track of the merged library by id or unique id prefix.
    pub async fn resolve(&self, id: &str) -> Result<LibraryTrack, NodeError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NodeError::BadRequest(format!(
                "{id:?} is not a track id (at least 4 hex digits)"
            )));
        }
        if let Ok(tid) = id.parse::<TrackId>() {
            // A whole id: direct lookups, not a walk of the library.
            return self
                .lookup(tid)
                .await?
                .ok_or_else(|| NodeError::NotFound(format!("no track {id} in the library")));
        }
        let mut hits: Vec<LibraryTrack> = self
            .library()
            .await?
            .into_iter()
            .filter(|t| t.track.id.to_hex().starts_with(&id))
            .collect();
        match hits.len() {
            0 => Err(NodeError::NotFound(format!("no track {id} in the library"))),
            1 => Ok(hits.remove(0)),
            n => Err(NodeError::BadRequest(format!(
                "{n} tracks start with {id}; give more digits"
            ))),
        }
    }

    // ----- streaming ---------------------------------------------------------------

    /// Open a track for the local player: from this device if it holds it,
    /// else from the online member with the lowest round trip. `kbps` 0 is
    /// the original file, which is checked against the track id as it
    /// arrives (the reader fails at the end if it does not match).
    pub async fn open_stream(
        &self,
        id: &str,
        kbps: u32,
        start_ms: u64,
        offset: u64,
    ) -> Result<NodeStream, NodeError> {
        let lt = self.resolve(id).await?;
        let kbps = if kbps == 0 {
            0
        } else {
            kbps.clamp(crate::transcode::MIN_KBPS, crate::transcode::MAX_KBPS)
        };
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
                        cancel: self.inner.cancel.clone(),
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
        track: Track,
        kbps: u32,
        start_ms: u64,
        offset: u64,
    ) -> Result<NodeStream, NodeError> {
        let streamer = self.inner.streamer.clone();
        let t = track.clone();
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let cancel = self.inner.cancel.clone();
        let rt = tokio::runtime::Handle::current();
        self.inner.tasks.spawn_blocking(move || {
            let mut req = StreamRequest::new(if kbps == 0 {
                Profile::Original
            } else {
                Profile::Opus(kbps)
            });
            req.start = start_ms as f64 / 1000.0;
            req.offset = offset;
            let mut s = match streamer.open(&t, &req) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(track = %t.id, "cannot stream: {e}");
                    let _ = head_tx.send(Err(e.public_message()));
                    return;
                }
            };
            let complete = s.is_complete() || matches!(s.via, Via::Original | Via::Passthrough);
            let _ = head_tx.send(Ok((
                s.mime.to_string(),
                s.len,
                complete,
                format!("{:?}", s.via).to_lowercase(),
            )));
            let mut buf = vec![0u8; CHUNK];
            loop {
                if cancel.is_cancelled() {
                    break;
                }
                let r = match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => Err(e),
                };
                let failed = r.is_err();
                // Wait for room (a paused player), but not past shutdown.
                let sent = rt.block_on(async {
                    tokio::select! {
                        r = tx.send(r) => r.is_ok(),
                        _ = cancel.cancelled() => false,
                    }
                });
                if !sent || failed {
                    break;
                }
            }
        });
        let (mime, len, complete, via) = head_rx
            .await
            .map_err(|_| NodeError::Unavailable("stream worker failed".into()))?
            .map_err(NodeError::Unavailable)?;
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
        let track = match blocking(move || ix.track(&id)).await {
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
            .open_local(track, open.kbps, open.start_ms, open.offset)
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
