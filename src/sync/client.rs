//! The fetching side of a library sync: brings our copy of one member's
//! catalog to the root it announced, a trie level at a time, storing each
//! group of changes (index and catalog) before asking for the next.

use super::diff::{self, LeafDiff};
use super::{SyncError, Syncer};
use crate::index::snapshot::{self, Entry};
use crate::mesh::{DeviceId, Request, Response};
use crate::model::{Hash32, TrackId};
use std::time::Instant;

/// Trie nodes asked for in one pipelined group (bounds what a sync holds
/// in memory: a group's replies, about 100 KB each when records come along).
const SYNC_GROUP: usize = 32;
/// Records per GetRecords request.
const RECORD_BATCH: usize = 512;

/// Counters of one sync run.
#[derive(Default)]
struct Run {
    bytes: u64,
    requests: u64,
    records: u64,
}

impl Syncer {
    /// Bring our copy of `peer`'s catalog to `root`, fetching only the
    /// parts of its trie whose hashes differ from ours. Requests go out
    /// pipelined in groups; each group's changes are stored before the
    /// next is asked for, so an interrupted sync keeps what it got.
    pub(super) async fn sync_once(&self, peer: DeviceId, root: Hash32) -> Result<(), SyncError> {
        let started = Instant::now();
        let pb = peer.to_bytes();
        let ix = self.index.clone();
        let mut local: Vec<Entry> = self
            .tasks
            .blocking(move || ix.remote_entries(&pb))
            .await??;
        if snapshot::root(&local) == root {
            return Ok(());
        }
        let mut run = Run::default();
        // Breadth first, a level at a time.
        let mut level: Vec<Vec<u8>> = vec![vec![]];
        while !level.is_empty() {
            let mut next = vec![];
            for group in level.chunks(SYNC_GROUP) {
                self.group(peer, root, group, &mut local, &mut next, &mut run)
                    .await?;
            }
            level = next;
        }
        let got = snapshot::root(&local);
        self.record(&run, started);
        if run.records > 0 {
            let catalog = self.catalog.clone();
            self.tasks.blocking(move || catalog.settle()).await?;
        }
        if got != root {
            return Err(SyncError::Peer(format!(
                "after syncing, {peer}'s catalog hashes to {got}, not the {root} it announced (it changed meanwhile?)"
            )));
        }
        tracing::info!(
            tracks = local.len(),
            records = run.records,
            requests = run.requests,
            bytes = run.bytes,
            ms = started.elapsed().as_millis() as u64,
            "library synced"
        );
        Ok(())
    }

    /// One pipelined group of trie nodes: children that differ go to
    /// `next`; leaves are diffed, their records fetched and stored.
    async fn group(
        &self,
        peer: DeviceId,
        root: Hash32,
        group: &[Vec<u8>],
        local: &mut Vec<Entry>,
        next: &mut Vec<Vec<u8>>,
        run: &mut Run,
    ) -> Result<(), SyncError> {
        let reqs: Vec<Request> = group
            .iter()
            .map(|path| diff::node_request(local, root, path))
            .collect();
        run.requests += reqs.len() as u64;
        let replies = self.client.request_many(&peer, reqs).await?;
        let mut put: Vec<(TrackId, Vec<u8>)> = vec![];
        let mut remove: Vec<TrackId> = vec![];
        let mut want: Vec<Entry> = vec![];
        for (path, (reply, wire)) in group.iter().zip(replies) {
            run.bytes += wire;
            let reply = match reply {
                Response::Node(n) => n,
                Response::Error(e) => {
                    return Err(SyncError::Peer(format!(
                        "{peer} refused a sync request: {e}"
                    )))
                }
                Response::Records(_)
                | Response::Cover { .. }
                | Response::UserOps { .. }
                | Response::BlobRecords(_) => {
                    return Err(SyncError::Peer(format!("{peer} answered out of turn")))
                }
            };
            if let Some(children) = &reply.children {
                next.extend(diff::differing_children(local, path, children));
                continue;
            }
            let LeafDiff { remove: gone, new } = diff::diff_leaf(local, path, &reply.entries);
            remove.extend(gone);
            if !reply.records.is_empty() && reply.records.len() == reply.entries.len() {
                let sent =
                    diff::leaf_records(&reply.entries, reply.records, &new).map_err(|id| {
                        SyncError::Peer(format!(
                            "{peer} sent a record for {id} that does not match its entry"
                        ))
                    })?;
                put.extend(sent);
            } else {
                want.extend(new);
            }
        }
        self.fetch_records(peer, &mut want, &mut put, run).await?;
        run.records += put.len() as u64;
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        diff::apply(local, &put, &remove);
        let (ix, catalog, pb) = (self.index.clone(), self.catalog.clone(), peer.to_bytes());
        self.tasks
            .blocking(move || -> Result<(), crate::index::IndexError> {
                ix.remote_apply(&pb, &put, &remove)?;
                let tracks = put
                    .iter()
                    .filter_map(|(_, rec)| crate::index::decode_record(rec))
                    .collect();
                let fresh = catalog.apply(peer, tracks, &remove);
                ix.set_first_seen(fresh.iter().map(|(a, t)| (a.0, *t)))
            })
            .await??;
        Ok(())
    }

    /// Records not sent along: by id, in batches, until all came.
    async fn fetch_records(
        &self,
        peer: DeviceId,
        want: &mut Vec<Entry>,
        put: &mut Vec<(TrackId, Vec<u8>)>,
        run: &mut Run,
    ) -> Result<(), SyncError> {
        while !want.is_empty() {
            let reqs: Vec<Request> = want
                .chunks(RECORD_BATCH)
                .map(|b| Request::GetRecords(b.iter().map(|(id, _)| *id).collect()))
                .collect();
            run.requests += reqs.len() as u64;
            let mut got = vec![];
            for (reply, wire) in self.client.request_many(&peer, reqs).await? {
                run.bytes += wire;
                match reply {
                    Response::Records(r) => got.extend(r),
                    Response::Error(e) => return Err(SyncError::Peer(e)),
                    Response::Node(_)
                    | Response::Cover { .. }
                    | Response::UserOps { .. }
                    | Response::BlobRecords(_) => {
                        return Err(SyncError::Peer(format!("{peer} answered out of turn")))
                    }
                }
            }
            let before = want.len();
            diff::match_records(want, got, put);
            if want.len() == before {
                return Err(SyncError::Peer(format!(
                    "{peer} no longer has {} of the records it listed",
                    want.len()
                )));
            }
        }
        Ok(())
    }

    fn record(&self, run: &Run, started: Instant) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.syncs += 1;
        s.requests += run.requests;
        s.records += run.records;
        s.bytes_in += run.bytes;
        s.last_ms = started.elapsed().as_millis() as u64;
        s.last_bytes = run.bytes;
    }
}
