//! Library sync: keeps our copy of every member's catalog equal to the
//! snapshot root it announced, fetching only the parts of its Merkle trie
//! that differ (see ARCHITECTURE.md, "Library sync").
//!
//! - [`diff`]: the trie diff as pure functions;
//! - `server`: answers members' `GetNode` / `GetRecords`;
//! - `client`: one sync run against one member;
//! - here, the scheduler: one run per member at a time, the latest
//!   announced root remembered while one runs, failed runs retried (what
//!   they fetched is kept) while the member stays connected.
//!
//! Must never: store a record that does not hash to its entry, or call a
//! sync done whose result does not hash to the announced root.

mod client;
pub mod diff;
mod server;

use crate::catalog::Catalog;
use crate::index::{Index, IndexError, Snapshot};
use crate::mesh::{self, DeviceId, MeshError, Request, Response};
use crate::model::Hash32;
use crate::tasks::{Stopped, Tasks};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// Times a failed sync is tried again while the peer stays connected.
const SYNC_RETRIES: u32 = 5;

/// Why a sync run failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Our index could not be read or written.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The member could not be asked.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The member answered something we refuse.
    #[error("{0}")]
    Peer(String),
    /// The node is stopping.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// Progress of library syncs, for status and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    /// Finished sync runs.
    pub syncs: u64,
    /// Requests sent.
    pub requests: u64,
    /// Bytes of sync messages, both ways, as framed on the wire (before
    /// noise and muxer overhead, a few percent).
    pub bytes_in: u64,
    /// Records fetched.
    pub records: u64,
    /// Time of the last run.
    pub last_ms: u64,
    /// Bytes of the last run.
    pub last_bytes: u64,
}

#[derive(Default)]
struct Slot {
    running: bool,
    want: Option<Hash32>,
}

/// The sync service of a node.
pub struct Syncer {
    index: Arc<Index>,
    catalog: Arc<Catalog>,
    client: mesh::Client,
    tasks: Tasks,
    slots: Mutex<HashMap<DeviceId, Slot>>,
    stats: Mutex<SyncStats>,
}

impl Syncer {
    /// A syncer storing into `index` and `catalog`, asking through `client`.
    pub fn new(
        index: Arc<Index>,
        catalog: Arc<Catalog>,
        client: mesh::Client,
        tasks: Tasks,
    ) -> Arc<Syncer> {
        Arc::new(Syncer {
            index,
            catalog,
            client,
            tasks,
            slots: Mutex::new(HashMap::new()),
            stats: Mutex::new(SyncStats::default()),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answer a member's sync request from `snap` (off the runtime).
    pub async fn answer(&self, snap: Arc<Snapshot>, req: Request) -> Response {
        let ix = self.index.clone();
        self.tasks
            .blocking(move || server::answer(&ix, &snap, req))
            .await
            .unwrap_or_else(|e| Response::Error(e.to_string()))
    }

    /// `peer` announced `root`: sync to it, now or after the run under way.
    pub fn announced(self: &Arc<Self>, peer: DeviceId, root: Hash32) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(peer).or_default();
            if slot.running {
                slot.want = Some(root);
                return;
            }
            slot.running = true;
        }
        let me = self.clone();
        self.tasks.spawn(
            async move { me.run(peer, root).await }.instrument(tracing::info_span!("sync", %peer)),
        );
    }

    /// Sync runs for `peer` until nothing newer is wanted.
    async fn run(&self, peer: DeviceId, mut root: Hash32) {
        let mut failures = 0u32;
        loop {
            match self.sync_once(peer, root).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!("library sync failed (attempt {failures}): {e}");
                }
            }
            let next = {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                let slot = slots.entry(peer).or_default();
                let next = slot.want.take();
                // Try a failed sync again (what it fetched is kept) while
                // the peer stays connected.
                let retry = failures > 0
                    && failures <= SYNC_RETRIES
                    && self.client.connected_members().contains(&peer);
                if next.is_none() && !retry {
                    slot.running = false;
                }
                next.or(retry.then_some(root))
            };
            match next {
                Some(r) => {
                    if failures > 0 && r == root {
                        tokio::time::sleep(Duration::from_millis(500 << failures.min(6))).await;
                    }
                    root = r;
                }
                None => break,
            }
        }
    }
}
