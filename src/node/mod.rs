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

mod covers;
mod dispatch;
mod holders;
use holders::{load_catalog, Holders};
mod offline;
pub mod state;
mod user;
mod userapi;
mod watcher;

pub use offline::PinView;
pub use user::UserSyncStats;
pub use userapi::Mine;

use crate::cache::Cache;
use crate::catalog::{AlbumId, Catalog, CatalogTrack, IdError, Page, Paged, Prefix};
use crate::index::snapshot;
use crate::index::{self, Index, Snapshot};
use crate::library::ScanOptions;
use crate::mesh::{self, Announcement, Device, DeviceId, Mesh, MeshError, PeerInfo};
use crate::mirror::{Fallback, Mirror};
use crate::model::Track;
use crate::playback::{self, PlayStream, Playback, PlaybackError};
use crate::stream::{Bitrate, Streamer};
use crate::sync::{SyncError, Syncer};
use crate::tasks::{Stopped, Tasks};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Tracks read from the index and fed to the catalog at a time after a
/// rescan.
const FEED_CHUNK: usize = 2048;

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Indexes and watches its folders, serves its library.
    Home,
    /// Needs no library of its own; consumes the mesh's.
    Phone,
}

impl Role {
    /// `home` or `phone`, as shown to members and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Home => "home",
            Role::Phone => "phone",
        }
    }
}

/// How to start a [`Node`]: [`NodeConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the node keeps everything: index, cache, keys, member list.
    pub data_dir: PathBuf,
    /// Home (indexes folders) or phone.
    pub role: Role,
    /// Library folders to add (home).
    pub dirs: Vec<PathBuf>,
    /// Multiaddrs to listen on (empty: all interfaces, random ports).
    pub listen: Vec<String>,
    /// Find other members on the LAN by mDNS.
    pub mdns: bool,
    /// Relays to keep a reservation on (`…/p2p/<relay id>`).
    pub relays: Vec<String>,
    /// Ask the router for a port mapping (UPnP).
    pub upnp: bool,
    /// Device name shown to the other members.
    pub name: String,
    /// Most bytes the transcode cache keeps (least recently used go first).
    pub cache_bytes: u64,
    /// Scanner options (threads, per-file time limit).
    pub scan: ScanOptions,
    /// Quiet period before a burst of folder changes is rescanned.
    pub debounce: Duration,
}

impl NodeConfig {
    /// Defaults: listen everywhere on random ports, mDNS on, no relays, no
    /// UPnP, the host's name, the default cache size.
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

/// Why a node operation failed; the HTTP API maps the kinds to statuses.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The index failed (storage, corruption, a full disk).
    #[error(transparent)]
    Index(#[from] index::IndexError),
    /// The mesh failed or refused.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The transcode cache could not be opened.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// No such track, album, artist or cover (404).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// Right request, but it cannot be served now: no holder online, the
    /// node stopping (503).
    #[error("{0}")]
    Unavailable(String),
    /// A file of the data dir.
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

impl From<PlaybackError> for NodeError {
    fn from(e: PlaybackError) -> Self {
        match e {
            PlaybackError::Index(e) => NodeError::Index(e),
            PlaybackError::Mesh(e) => NodeError::Mesh(e),
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
#[derive(Debug, Clone)]
pub struct Source {
    /// The holder's device id.
    pub device: String,
    /// Its name (empty when unknown).
    pub name: String,
    /// This device.
    pub local: bool,
    /// Connected now (this device always is).
    pub online: bool,
}

/// A track of the merged library, with every device that holds it.
#[derive(Debug, Clone)]
pub struct LibraryTrack {
    /// The track (with paths only when this device holds it).
    pub track: Arc<Track>,
    /// The album it belongs to, if it names one.
    pub album: Option<AlbumId>,
    /// Every holder, this device first when it is one.
    pub sources: Vec<Source>,
    /// What the owner's state says of it (star, rating, plays).
    pub mine: Mine,
    /// A whole offline copy of it is on this device.
    pub offline: bool,
}

pub use crate::sync::SyncStats;

/// What `tunemesh status` shows of a running node.
#[derive(Debug, Clone)]
pub struct Status {
    /// This device's id.
    pub device: String,
    /// Its name.
    pub name: String,
    /// Home or phone.
    pub role: Role,
    /// The mesh id (its founder's device id).
    pub mesh: String,
    /// Snapshot root of the local index, hex.
    pub root: String,
    /// Tracks in the local index.
    pub tracks: u64,
    /// Members of the mesh (this device included).
    pub members: usize,
    /// Members connected now.
    pub connected: usize,
    /// Mesh addresses it listens on.
    pub listen: Vec<String>,
    /// "public", "private" or "unknown" (AutoNAT through our relays).
    pub reachability: String,
    /// The relays it keeps reservations on.
    pub relays: Vec<mesh::RelayInfo>,
    /// Library sync figures.
    pub sync: SyncStats,
}

/// An audio stream for the local player.
pub type NodeStream = PlayStream;

struct Inner {
    cfg: NodeConfig,
    index: Arc<Index>,
    catalog: Arc<Catalog>,
    client: mesh::Client,
    streamer: Arc<Streamer>,
    playback: Playback,
    snap: RwLock<Arc<Snapshot>>,
    syncer: Arc<Syncer>,
    user: Arc<user::UserState>,
    mirror: Mirror,
    sizes: offline::Sizes,
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
        let user = user::UserState::load(index.clone(), client.clone(), tasks.clone()).await?;
        let streamer = Arc::new(Streamer::new(Some(cache)));
        let playback = Playback::new(
            index.clone(),
            client.clone(),
            streamer.clone(),
            tasks.clone(),
        );
        let mirror = Mirror::start(
            &cfg.data_dir.join("offline"),
            index.clone(),
            client.clone(),
            streamer.clone(),
            tasks.clone(),
        )
        .await
        .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let node = Node {
            inner: Arc::new(Inner {
                mirror,
                sizes: Default::default(),
                client,
                catalog,
                syncer,
                user,
                index,
                streamer,
                playback,
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
        node.inner.user.start_anti_entropy();
        node.start_offline_planner();
        if node.inner.cfg.role == Role::Home {
            node.start_watcher()?;
        }
        tracing::info!(device = %node.device_id(), "node started");
        Ok(node)
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.inner.tasks.spawn(f);
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.inner.client.device_id()
    }

    /// The mesh client (membership, requests to members, signing).
    pub fn mesh(&self) -> &mesh::Client {
        &self.inner.client
    }

    /// Home or phone.
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

    /// This node as of now.
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

    /// Library sync figures so far.
    pub fn sync_stats(&self) -> SyncStats {
        self.inner.syncer.stats()
    }

    /// Members and relays we know, with their paths and round trips.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.client.peers()
    }

    /// The signed member list.
    pub fn devices(&self) -> Vec<Device> {
        self.inner.client.devices()
    }

    /// A ticket (`TM1…`) a new device joins with, valid for `ttl`, once.
    pub fn invite(&self, ttl: Duration) -> Result<String, NodeError> {
        Ok(self.inner.client.invite(ttl)?)
    }

    /// Join the mesh a ticket invites to; returns its members.
    pub async fn join(&self, ticket: &str) -> Result<Vec<Device>, NodeError> {
        let devices = self.inner.client.join(ticket).await?;
        // Level the owner's state with the members now (the connection to
        // the inviter was up before we were one of them).
        let me = self.device_id();
        for peer in self.inner.client.connected_members() {
            if peer == me {
                continue;
            }
            let user = self.inner.user.clone();
            self.spawn(async move {
                if let Err(e) = user.pull(peer).await {
                    tracing::info!(%peer, "cannot fetch user state: {e}");
                }
            });
        }
        Ok(devices)
    }

    /// Revoke a member (signed, spread to every member) and forget its
    /// catalog.
    pub async fn remove_device(&self, id: &str) -> Result<(), NodeError> {
        let d: DeviceId = id.parse()?;
        if d == self.device_id() {
            return Err(NodeError::BadRequest(
                "this is the device itself; remove it from another member".into(),
            ));
        }
        let kept = self.inner.user.version_vector().get(&d);
        self.inner.client.remove_device(&d, kept).await?;
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
                // In chunks: a first scan's 100k whole records at once
                // would be a transient 40 MB that the allocator keeps.
                let mut remove = &remove[..];
                for ids in put.chunks(FEED_CHUNK) {
                    let mut tracks = Vec::with_capacity(ids.len());
                    for id in ids {
                        tracks.extend(ix.track(id)?);
                    }
                    let fresh = catalog.apply(me, tracks, std::mem::take(&mut remove));
                    ix.set_first_seen(fresh.iter().map(|(a, t)| (a.0, *t)))?;
                }
                if !remove.is_empty() {
                    catalog.apply(me, vec![], remove);
                }
                catalog.settle();
                // A settled rescan is on disk now, not within sled's 500 ms:
                // a disk that fills up meanwhile would fail that flush and
                // leave the index unwritable until a restart.
                ix.flush()?;
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

    // ----- the merged library -------------------------------------------------

    /// The merged library: every track of every member, albums, artists.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Every track of every member (this device included), in library
    /// order. Builds the whole list: surfaces page through
    /// [`Node::tracks`] instead.
    pub async fn library(&self) -> Result<Vec<LibraryTrack>, NodeError> {
        Ok(self.tracks(Page::ALL).await?.items)
    }

    /// A page of the merged library's tracks, labelled with their sources.
    pub async fn tracks(&self, page: Page) -> Result<Paged<LibraryTrack>, NodeError> {
        let p = self.inner.catalog.tracks(page);
        Ok(Paged {
            total: p.total,
            items: self.label(p.items).await?,
        })
    }

    /// Catalog entries with their records (read from the index: this
    /// device's own, else the first holder's as synced, without its paths)
    /// and where they can be played from, as of now. An entry whose record
    /// went away meanwhile is left out.
    pub async fn label(&self, tracks: Vec<CatalogTrack>) -> Result<Vec<LibraryTrack>, NodeError> {
        let h = self.holders();
        let me = h.me;
        let ix = self.inner.index.clone();
        let records = self
            .inner
            .tasks
            .blocking(
                move || -> Result<Vec<(CatalogTrack, Track)>, index::IndexError> {
                    let mut out = Vec::with_capacity(tracks.len());
                    for t in tracks {
                        let record = if t.holders.contains(&me) {
                            ix.track(&t.id)?
                        } else if let Some(h) = t.holders.first() {
                            ix.remote_track(&h.to_bytes(), &t.id)?.map(|mut r| {
                                r.paths.clear();
                                r
                            })
                        } else {
                            None
                        };
                        if let Some(r) = record {
                            out.push((t, r));
                        }
                    }
                    Ok(out)
                },
            )
            .await??;
        let held = self.inner.mirror.tracks_held();
        Ok(self.user_state(|views| {
            records
                .into_iter()
                .map(|(mut t, r)| {
                    // This device first, where it is a holder.
                    if let Some(i) = t.holders.iter().position(|d| *d == me) {
                        t.holders[..=i].rotate_right(1);
                    }
                    let mut lt = h.label(t, Arc::new(r));
                    lt.mine = Mine::of(views, &crate::userdata::Item::Track(lt.track.id));
                    lt.offline = held.contains(&lt.track.id);
                    lt
                })
                .collect()
        }))
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
        self.label(self.inner.catalog.search(query, limit).tracks)
            .await
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
        self.label(vec![t])
            .await?
            .pop()
            .ok_or_else(|| NodeError::NotFound(format!("no track {id} in the library")))
    }

    // ----- streaming ---------------------------------------------------------------

    /// Open a track for the local player: from this device if it holds it
    /// (its files, or an offline copy at or above the asked bitrate), else
    /// from the online member with the lowest round trip, else from any
    /// offline copy here. The original file ([`Bitrate::Original`]) is
    /// checked against the track id as it arrives (the reader fails at the
    /// end if it does not match).
    pub async fn open_stream(
        &self,
        id: &str,
        bitrate: Bitrate,
        start_ms: u64,
        offset: u64,
    ) -> Result<NodeStream, NodeError> {
        let lt = self.resolve(id).await?;
        let pb = &self.inner.playback;
        if lt.sources.iter().any(|s| s.local) && lt.track.paths.iter().any(|p| p.is_file()) {
            return Ok(pb.open_local(lt.track, bitrate, start_ms, offset).await?);
        }
        let at_least = Fallback::AtLeastAsked;
        if let Some(s) = self
            .open_offline(&lt, bitrate, at_least, start_ms, offset)
            .await?
        {
            return Ok(s);
        }
        let rtts: HashMap<DeviceId, f64> = self
            .peers()
            .into_iter()
            .filter_map(|p| Some((p.id.parse().ok()?, p.rtt_ms?)))
            .collect();
        let online: Vec<DeviceId> = lt
            .sources
            .iter()
            .filter(|s| s.online && !s.local)
            .filter_map(|s| s.device.parse().ok())
            .collect();
        let holders = playback::by_round_trip(online, &rtts);
        match pb
            .fetch(lt.track.clone(), holders, bitrate, start_ms, offset)
            .await
        {
            Ok(s) => Ok(s),
            Err(e) => match self
                .open_offline(&lt, bitrate, Fallback::Any, start_ms, offset)
                .await?
            {
                Some(s) => Ok(s),
                None => Err(e.into()),
            },
        }
    }
}
