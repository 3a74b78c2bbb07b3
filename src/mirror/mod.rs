//! The offline mirror: music the owner pins kept on this device,
//! compressed (Opus, 96 kb/s by default), within a byte budget, fetched
//! in checked 16 KiB groups from any member that holds the same bytes;
//! and, on every device, the holder's side of it (records of what our
//! recipes' bytes are, batch encodes, the groups themselves).
//!
//! - `plan`: what to fetch, keep and evict (pure);
//! - `store`: the blobs on disk (whole ones by hash, parts by group);
//! - `fetch`: one download, group by group, each checked before it is
//!   written; a holder that sends a wrong group is refused and the next
//!   one asked;
//! - `worker`: the loop that asks members for records, starts downloads,
//!   waits (saying why) when no allowed path reaches a holder, evicts;
//! - `serve`: answering members: records, batch encodes (one per core, at
//!   a lower priority than live streams), blob groups.
//!
//! The node turns pins into wants (it reads the catalog and the owner's
//! state); the mirror never reads either. Must never: write a group that
//! did not check, serve a part, or keep more than the budget.

mod fetch;
pub mod plan;
mod serve;
mod store;
mod worker;

pub use plan::{Class, Want};

use crate::blob::Outboard;
use crate::index::{BlobRecord, Index, IndexError};
use crate::mesh::{self, Recipe};
use crate::model::{Hash32, TrackId};
use crate::stream::Streamer;
use crate::tasks::{Stopped, Tasks};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use store::Store;
use tokio::sync::Notify;

/// Default budget for pinned music: 4 GiB.
pub const DEFAULT_BUDGET: u64 = 4 << 30;
/// Default budget for the play queue's prefetched tracks: 256 MiB.
pub const DEFAULT_PREFETCH_BUDGET: u64 = 256 << 20;
/// Default bitrate of offline copies (kb/s).
pub const DEFAULT_KBPS: u32 = 96;

/// Why a mirror operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store's folder failed.
    #[error("offline store: {0}")]
    Io(#[from] std::io::Error),
    /// The node is stopping.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// Stored settings that do not decode.
    #[error("offline settings: {0}")]
    Settings(String),
}

/// What a pin names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinKind {
    /// One track.
    Track,
    /// An album (its tracks as they are now and later).
    Album,
    /// Every album and track of an artist.
    Artist,
    /// A playlist of the owner's state, following its edits.
    Playlist,
    /// Every starred track (and the tracks of starred albums).
    Starred,
    /// The whole merged library.
    Library,
}

impl PinKind {
    /// Its name in the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            PinKind::Track => "track",
            PinKind::Album => "album",
            PinKind::Artist => "artist",
            PinKind::Playlist => "playlist",
            PinKind::Starred => "starred",
            PinKind::Library => "library",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<PinKind> {
        Some(match s {
            "track" => PinKind::Track,
            "album" => PinKind::Album,
            "artist" => PinKind::Artist,
            "playlist" => PinKind::Playlist,
            "starred" => PinKind::Starred,
            "library" => PinKind::Library,
            _ => return None,
        })
    }

    /// Whether the kind names one thing (an id follows it).
    pub fn takes_id(self) -> bool {
        !matches!(self, PinKind::Starred | PinKind::Library)
    }
}

/// One pin: something the owner wants on this device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// What it names.
    pub kind: PinKind,
    /// The whole id (hex track id, `al-`… album id, playlist op id);
    /// empty for `starred` and `library`.
    pub id: String,
    /// Opus kb/s of its copies; 0 for the original files.
    pub kbps: u32,
    /// When it was made (ms since the epoch).
    pub added_ms: u64,
}

/// Which paths offline downloads may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Only members on the local network.
    Lan,
    /// The local network or a direct connection (no relay).
    #[default]
    Direct,
    /// Any path, relayed ones too.
    Any,
}

impl Policy {
    /// Its name in the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lan => "lan",
            Policy::Direct => "direct",
            Policy::Any => "any",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "lan" => Policy::Lan,
            "direct" => Policy::Direct,
            "any" => Policy::Any,
            _ => return None,
        })
    }

    /// Whether a connection on `path` may carry offline downloads.
    pub fn allows(self, path: mesh::PathKind) -> bool {
        use mesh::PathKind::*;
        match self {
            Policy::Lan => path == Lan,
            Policy::Direct => path != Relayed,
            Policy::Any => true,
        }
    }
}

/// The owner's settings of the mirror, stored in the index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Bytes pinned copies may take.
    pub budget: u64,
    /// Bytes prefetched copies may take.
    pub prefetch_budget: u64,
    /// Which paths downloads may use.
    pub policy: Policy,
    /// The pins, oldest first (the order budgets are filled in).
    pub pins: Vec<Pin>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            budget: DEFAULT_BUDGET,
            prefetch_budget: DEFAULT_PREFETCH_BUDGET,
            policy: Policy::Direct,
            pins: vec![],
        }
    }
}

/// A download in progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What.
    pub recipe: Recipe,
    /// Bytes there (checked).
    pub have: u64,
    /// Bytes in all.
    pub len: u64,
    /// The member sending it now.
    pub from: Option<mesh::DeviceId>,
}

/// Where the mirror stands.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The settings.
    pub budget: u64,
    /// Bytes for prefetched copies.
    pub prefetch_budget: u64,
    /// Which paths downloads may use.
    pub policy: Policy,
    /// Bytes of the store's files (whole copies and parts).
    pub used_bytes: u64,
    /// Bytes every pin needs (known lengths, else estimates).
    pub needed_bytes: u64,
    /// How many more bytes the budget would need.
    pub short_bytes: u64,
    /// Pinned tracks whole here.
    pub tracks_done: usize,
    /// Pinned tracks that fit and are not here yet.
    pub tracks_queued: usize,
    /// Pinned tracks waiting for space.
    pub tracks_over_budget: usize,
    /// Tracks that could not be fetched, with the reason (retried later).
    pub failed: Vec<(Recipe, String)>,
    /// Downloads in progress.
    pub downloading: Vec<Progress>,
    /// Why nothing moves now, if so (no member reachable, a relayed path,
    /// a full disk).
    pub waiting: Option<String>,
    /// Prefetched copies here for the queue.
    pub prefetched: usize,
    /// Tracks a holder is encoding for us now.
    pub tracks_preparing: usize,
    /// Bytes received for downloads since start (checked or not).
    pub bytes_fetched: u64,
    /// Groups refused because they did not match.
    pub groups_refused: u64,
    /// Bytes of blob groups served to members since start.
    pub bytes_served: u64,
}

/// A recipe whose record we hold.
#[derive(Debug, Clone)]
struct Rec {
    hash: Hash32,
    outboard: Arc<Outboard>,
}

/// The worker's state, shared with the status and the downloads.
#[derive(Default)]
struct RunState {
    wants: Vec<Want>,
    wants_set: bool,
    records: HashMap<Recipe, Rec>,
    holders: HashMap<Hash32, Vec<mesh::DeviceId>>,
    failed: HashMap<Recipe, (String, Instant)>,
    backoff: HashMap<Recipe, Instant>,
    pending: std::collections::HashSet<Recipe>,
    /// Blobs fetched for the queue: kept as a cache (prefetch budget).
    cached: std::collections::HashSet<Hash32>,
    downloading: HashMap<Recipe, Progress>,
    waiting: Option<String>,
    disk_error: Option<(String, Instant)>,
    plan: plan::Plan,
    bytes_fetched: u64,
    groups_refused: u64,
    bytes_served: u64,
}

struct Inner {
    index: Arc<Index>,
    client: mesh::Client,
    streamer: Arc<Streamer>,
    tasks: Tasks,
    store: Store,
    settings: Mutex<Settings>,
    state: Mutex<RunState>,
    wake: Notify,
    encoder: serve::Encoder,
}

/// The mirror of a node. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

/// A whole offline copy of a track here.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    /// Its bitrate (0: the original file).
    pub kbps: u32,
    /// blake3 of its bytes.
    pub hash: Hash32,
    /// The file.
    pub path: PathBuf,
}

impl Mirror {
    /// Open the mirror in `dir` (the store) with the index's records and
    /// settings; start its worker and encoders.
    pub async fn start(
        dir: &Path,
        index: Arc<Index>,
        client: mesh::Client,
        streamer: Arc<Streamer>,
        tasks: Tasks,
    ) -> Result<Mirror, MirrorError> {
        let (d, ix) = (dir.to_owned(), index.clone());
        let (store, settings, records) = tasks
            .blocking(move || -> Result<_, MirrorError> {
                let store = Store::open(&d)?;
                let settings = match ix.mirror_settings()? {
                    Some(b) => serde_json::from_slice(&b)
                        .map_err(|e| MirrorError::Settings(e.to_string()))?,
                    None => Settings::default(),
                };
                Ok((store, settings, ix.blob_records()?))
            })
            .await??;
        let mut state = RunState::default();
        for (track, kbps, r) in records {
            match Outboard::from_bytes(&r.hash, r.len, &r.outboard) {
                Ok(ob) => {
                    let rec = Rec {
                        hash: r.hash,
                        outboard: Arc::new(ob),
                    };
                    state.records.insert(Recipe { track, kbps }, rec);
                }
                Err(e) => tracing::warn!(%track, "dropping a stored blob record: {e}"),
            }
        }
        let m = Mirror {
            inner: Arc::new(Inner {
                encoder: serve::Encoder::new(),
                index,
                client,
                streamer,
                tasks,
                store,
                settings: Mutex::new(settings),
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        };
        m.start_encoders();
        // Every copy is hashed again once per start (rot, a hand-edited
        // file): what fails is dropped and fetched again.
        let s = m.clone();
        m.inner.tasks.spawn(async move {
            let st = s.clone();
            if let Ok(n @ 1..) = s.inner.tasks.blocking(move || st.inner.store.scrub()).await {
                tracing::warn!("{n} offline copies failed their check and will be fetched again");
                s.inner.wake.notify_one();
            }
        });
        let w = m.clone();
        m.inner.tasks.spawn(async move { w.run().await });
        Ok(m)
    }

    /// The settings now.
    pub fn settings(&self) -> Settings {
        self.inner.settings.lock().unwrap().clone()
    }

    /// Change the settings with `f` and store them (durable when this
    /// returns); the worker replans at once.
    pub async fn update<T>(&self, f: impl FnOnce(&mut Settings) -> T) -> Result<T, MirrorError> {
        let (out, bytes) = {
            let mut s = self.inner.settings.lock().unwrap();
            let out = f(&mut s);
            (out, serde_json::to_vec(&*s).expect("settings serialize"))
        };
        let ix = self.inner.index.clone();
        self.inner
            .tasks
            .blocking(move || ix.set_mirror_settings(&bytes))
            .await??;
        self.inner.wake.notify_one();
        Ok(out)
    }

    /// What the owner wants here now (pinned recipes in pin order, then
    /// the queue's), as the node read them from its pins.
    pub fn set_wants(&self, wants: Vec<Want>) {
        let mut st = self.inner.state.lock().unwrap();
        if st.wants_set && st.wants == wants {
            return;
        }
        st.wants = wants;
        st.wants_set = true;
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Where the mirror stands.
    pub fn status(&self) -> Status {
        let s = self.settings();
        let st = self.inner.state.lock().unwrap();
        let mut downloading: Vec<Progress> = st.downloading.values().cloned().collect();
        downloading.sort_by_key(|p| p.recipe);
        let mut failed: Vec<(Recipe, String)> = st
            .failed
            .iter()
            .map(|(r, (why, _))| (*r, why.clone()))
            .collect();
        failed.sort();
        Status {
            budget: s.budget,
            prefetch_budget: s.prefetch_budget,
            policy: s.policy,
            used_bytes: self.inner.store.used_bytes(),
            needed_bytes: st.plan.needed,
            short_bytes: st.plan.short(s.budget),
            tracks_done: st.plan.done,
            tracks_queued: st
                .plan
                .fetch
                .iter()
                .filter(|w| w.class == Class::Pinned)
                .count(),
            tracks_over_budget: st.plan.over.len(),
            failed,
            downloading,
            waiting: st.waiting.clone(),
            prefetched: st.plan.prefetch.len(),
            tracks_preparing: st.pending.len(),
            bytes_fetched: st.bytes_fetched,
            groups_refused: st.groups_refused,
            bytes_served: st.bytes_served,
        }
    }

    /// Whether the copy of `recipe` is whole here.
    pub fn has(&self, recipe: &Recipe) -> bool {
        let st = self.inner.state.lock().unwrap();
        st.records
            .get(recipe)
            .is_some_and(|r| self.inner.store.has(&r.hash))
    }

    /// The best whole copy of `track` here for a listener asking
    /// `kbps` (0: the original): the original if we have it, else the
    /// highest bitrate at or above the asked one, else the highest of
    /// all when `any` is [`Fallback::Any`].
    pub fn local_copy(&self, track: &TrackId, kbps: u32, fallback: Fallback) -> Option<LocalCopy> {
        let st = self.inner.state.lock().unwrap();
        let mut copies: Vec<(u32, Hash32)> = st
            .records
            .iter()
            .filter(|(r, rec)| r.track == *track && self.inner.store.has(&rec.hash))
            .map(|(r, rec)| (r.kbps, rec.hash))
            .collect();
        drop(st);
        // The original ranks above every bitrate.
        copies.sort_by_key(|(k, _)| std::cmp::Reverse(if *k == 0 { u32::MAX } else { *k }));
        let asked = if kbps == 0 { u32::MAX } else { kbps };
        let rank = |k: u32| if k == 0 { u32::MAX } else { k };
        let pick = copies
            .iter()
            .rfind(|(k, _)| rank(*k) >= asked)
            .or(match fallback {
                Fallback::Any => copies.first(),
                Fallback::AtLeastAsked => None,
            })?;
        let path = self.inner.store.blob_path(&pick.1)?;
        Some(LocalCopy {
            kbps: pick.0,
            hash: pick.1,
            path,
        })
    }

    /// Mark a copy as played now (least recently played eviction).
    /// Blocking.
    pub fn touch(&self, hash: &Hash32) {
        self.inner.store.touch(hash);
    }

    /// The tracks with a whole copy here.
    pub fn tracks_held(&self) -> std::collections::HashSet<TrackId> {
        let st = self.inner.state.lock().unwrap();
        st.records
            .iter()
            .filter(|(_, rec)| self.inner.store.has(&rec.hash))
            .map(|(r, _)| r.track)
            .collect()
    }

    fn record_of(&self, recipe: &Recipe) -> Option<Rec> {
        self.inner
            .state
            .lock()
            .unwrap()
            .records
            .get(recipe)
            .cloned()
    }

    /// Store a checked record (durable) and keep it in memory.
    async fn put_record(&self, recipe: Recipe, rec: Rec) -> Result<(), MirrorError> {
        let stored = BlobRecord {
            hash: rec.hash,
            len: rec.outboard.len(),
            outboard: rec.outboard.to_bytes(),
        };
        let ix = self.inner.index.clone();
        self.inner
            .tasks
            .blocking(move || ix.put_blob_records(&[(recipe.track, recipe.kbps, stored)], &[]))
            .await??;
        self.inner.state.lock().unwrap().records.insert(recipe, rec);
        Ok(())
    }
}

/// What [`Mirror::local_copy`] may fall back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Only a copy at or above the asked bitrate.
    AtLeastAsked,
    /// Any copy (no holder can serve the track).
    Any,
}

/// A size as people write it: bytes (`1000000`), or a number with a unit:
/// `KB`, `MB`, `GB`, `TB` (powers of 1000), `KiB`… `TiB` and the bare
/// `K`, `M`, `G`, `T` (powers of 1024); case and a space before the unit
/// do not matter; fractions are allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a size: {s:?} (try 4GiB or 500MB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?} (try GiB, GB, MiB, MB)")),
    };
    let v = n * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 gib"), Ok(4 << 30));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn the_policy_decides_by_path() {
        use crate::mesh::PathKind::*;
        assert!(Policy::Lan.allows(Lan) && !Policy::Lan.allows(Direct));
        assert!(Policy::Direct.allows(Direct) && !Policy::Direct.allows(Relayed));
        assert!(Policy::Any.allows(Relayed));
    }
}
