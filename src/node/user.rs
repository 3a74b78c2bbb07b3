//! The owner's shared state on this node (stars, ratings, plays,
//! playlists, the play queue): operations made here are numbered, stamped,
//! signed, logged durably and only then applied and acknowledged;
//! operations from members are checked, logged and applied in their
//! devices' order; and members are kept level by version vector: a pull on
//! connecting, a push of every change, a forward of what arrived to the
//! other members.
//!
//! Must never: acknowledge an operation before it is on disk, apply one
//! twice or out of its device's order, keep one from a device that is not
//! a member, or touch sled on a runtime thread.

use super::NodeError;
use crate::index::Index;
use crate::mesh::{self, DeviceId, Request, Response};
use crate::tasks::Tasks;
use crate::userdata::{Applied, Body, Clock, Op, OpId, SignedOp, VersionVector, Views};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Most bytes of operations in one answer to a pull (the control reply
/// limit is 8 MiB).
const PULL_BYTES: usize = 1 << 20;
/// Most bytes of operations in one push (the control request limit is
/// 256 KiB).
const PUSH_BYTES: usize = 192 << 10;
/// Most operations in one push (the receiver takes 4096 at most).
const PUSH_OPS: usize = 4096;
/// Rounds of "you still lack something" per push, at most.
const PUSH_ROUNDS: usize = 16;
/// How often connected members are checked for what they lack (a push
/// that failed while a link was down, say, is made good within this).
const ANTI_ENTROPY_TICK: Duration = Duration::from_secs(5);
/// Every this many ticks, members are asked even when we know of nothing
/// they lack (so what *we* lack is found too, without a reconnect).
const ANTI_ENTROPY_FULL: u64 = 12;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shared state service of one node.
pub(super) struct UserState {
    index: Arc<Index>,
    client: mesh::Client,
    tasks: Tasks,
    me: DeviceId,
    /// The merged state (never held across an await).
    views: RwLock<Views>,
    clock: Mutex<Clock>,
    /// Held while operations are numbered, stored and applied, so each
    /// device's operations land in order and numbers are never reused.
    write: tokio::sync::Mutex<()>,
    /// Counts changes (local or merged), for anyone waiting on one.
    changed: watch::Sender<u64>,
    /// What each member last said it holds.
    known: Mutex<HashMap<DeviceId, VersionVector>>,
    /// Members a background check is talking to now (one at a time each).
    checking: Mutex<HashSet<DeviceId>>,
    /// Wire bytes of the exchanges this node started (both ways).
    bytes: AtomicU64,
    /// Operations received from members that were new here.
    received: AtomicU64,
}

/// What this node's user state exchanges cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSyncStats {
    /// Wire bytes (frames, both ways) of the pulls and pushes this node
    /// started; a member's exchanges with us count on its side.
    pub bytes: u64,
    /// Operations received that were new here.
    pub received: u64,
    /// Operations held, of every device.
    pub held: u64,
}

impl UserState {
    /// Rebuild the views from the log.
    pub(super) async fn load(
        index: Arc<Index>,
        client: mesh::Client,
        tasks: Tasks,
    ) -> Result<Arc<UserState>, NodeError> {
        let ix = index.clone();
        let (views, clock) = tasks
            .blocking(move || -> Result<(Views, Clock), NodeError> {
                let mut views = Views::default();
                let mut clock = Clock::default();
                for wire in ix.log_all()? {
                    match mesh::decode_stored_op(&wire) {
                        Ok(op) => {
                            clock.observe(op.at);
                            views.apply(&op);
                        }
                        Err(e) => tracing::error!("a stored user operation does not decode: {e}"),
                    }
                }
                Ok((views, clock))
            })
            .await??;
        tracing::info!(
            ops = views.version_vector().0.values().sum::<u64>(),
            "user state loaded"
        );
        Ok(Arc::new(UserState {
            index,
            me: client.device_id(),
            client,
            tasks,
            views: RwLock::new(views),
            clock: Mutex::new(clock),
            write: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
            known: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }))
    }

    /// What the exchanges cost so far.
    pub(super) fn stats(&self) -> UserSyncStats {
        UserSyncStats {
            bytes: self.bytes.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            held: self.read(|v| v.version_vector().0.values().sum()),
        }
    }

    /// Read the merged state.
    pub(super) fn read<R>(&self, f: impl FnOnce(&Views) -> R) -> R {
        f(&self.views.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A receiver that sees every change.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What we hold, by device.
    pub(super) fn version_vector(&self) -> VersionVector {
        self.read(|v| v.version_vector().clone())
    }

    fn apply_all(&self, ops: &[SignedOp]) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        for s in ops {
            clock.observe(s.op.at);
            views.apply(&s.op);
        }
        drop((views, clock));
        self.changed.send_modify(|n| *n += 1);
    }

    async fn store(&self, ops: &[SignedOp]) -> Result<(), NodeError> {
        let rows: Vec<(Vec<u8>, u64, Vec<u8>)> = ops
            .iter()
            .map(|s| (s.op.id.device.to_bytes(), s.op.id.seq, s.wire.clone()))
            .collect();
        let ix = self.index.clone();
        self.tasks
            .blocking(move || {
                let refs: Vec<_> = rows
                    .iter()
                    .map(|(d, n, w)| (d.as_slice(), *n, w.as_slice()))
                    .collect();
                ix.log_append(&refs)
            })
            .await??;
        Ok(())
    }

    /// Make operations on this device: numbered, stamped, signed, stored
    /// (durable), applied; then sent to the connected members. Returns them
    /// once they are durable.
    pub(super) async fn make(self: &Arc<Self>, bodies: Vec<Body>) -> Result<Vec<Op>, NodeError> {
        for b in &bodies {
            b.check().map_err(NodeError::BadRequest)?;
        }
        if bodies.is_empty() {
            return Ok(vec![]);
        }
        let guard = self.write.lock().await;
        let mut seq = self.read(|v| v.version_vector().get(&self.me));
        let signed: Vec<SignedOp> = bodies
            .into_iter()
            .map(|body| {
                seq += 1;
                let at = self
                    .clock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tick(now_ms());
                self.client.seal_op(Op {
                    id: OpId {
                        device: self.me,
                        seq,
                    },
                    at,
                    body,
                })
            })
            .collect();
        self.store(&signed).await?;
        self.apply_all(&signed);
        drop(guard);
        self.spread(None, signed.iter().map(|s| s.wire.clone()).collect());
        Ok(signed.into_iter().map(|s| s.op).collect())
    }

    /// Take operations a member sent: each is checked (a refused one is
    /// logged with its reason and the rest go on), those that continue
    /// their device's run are stored and applied, and the new ones go on to
    /// the other connected members. Returns how many were new.
    pub(super) async fn merge(
        self: &Arc<Self>,
        from: DeviceId,
        wires: Vec<Vec<u8>>,
    ) -> Result<usize, NodeError> {
        if wires.is_empty() {
            return Ok(0);
        }
        // Signature checks are CPU work (~50 µs each, thousands a batch):
        // off the runtime.
        let client = self.client.clone();
        let mut opened = self
            .tasks
            .blocking(move || {
                let mut opened: Vec<SignedOp> = Vec::with_capacity(wires.len());
                for w in wires {
                    match client.open_op(w) {
                        Ok(s) => opened.push(s),
                        Err(why) => tracing::warn!(peer = %from, "user operation refused: {why}"),
                    }
                }
                opened
            })
            .await?;
        opened.sort_by_key(|s| s.op.id);
        let guard = self.write.lock().await;
        let mut vv = self.version_vector();
        let mut fresh = Vec::new();
        for s in opened {
            let have = vv.get(&s.op.id.device);
            if s.op.id.seq == have + 1 {
                vv.0.insert(s.op.id.device, s.op.id.seq);
                fresh.push(s);
            } else if s.op.id.seq > have + 1 {
                tracing::debug!(peer = %from, "user operation {} of {} arrived before {}; asked again later", s.op.id.seq, s.op.id.device, have + 1);
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        self.store(&fresh).await?;
        self.apply_all(&fresh);
        drop(guard);
        let n = fresh.len();
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        self.spread(Some(from), fresh.into_iter().map(|s| s.wire).collect());
        Ok(n)
    }

    /// Push `wires` to every connected member but `except`, each in a task.
    fn spread(self: &Arc<Self>, except: Option<DeviceId>, mut wires: Vec<Vec<u8>>) {
        // One request's worth; `push` sends the rest when the answer shows
        // the member lacks it (a batch of thousands of plays, say).
        let mut bytes = 0;
        let fit = wires
            .iter()
            .take(PUSH_OPS)
            .take_while(|w| {
                bytes += w.len();
                bytes <= PUSH_BYTES
            })
            .count();
        wires.truncate(fit.max(1));
        for peer in self.client.connected_members() {
            if Some(peer) == except || peer == self.me {
                continue;
            }
            let me = self.clone();
            let wires = wires.clone();
            self.tasks.spawn(async move {
                if let Err(e) = me.push(peer, wires).await {
                    tracing::info!(%peer, "cannot send user operations: {e}");
                }
            });
        }
    }

    fn note(&self, peer: DeviceId, have: &VersionVector) {
        let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        k.insert(peer, have.clone());
    }

    /// Check the connected members every few seconds: one that lacks what
    /// we hold (as far as we know) gets it; every minute each is asked what
    /// it holds, so what we lack comes too. A change made while a link was
    /// down therefore arrives without waiting for a reconnect.
    pub(super) fn start_anti_entropy(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(ANTI_ENTROPY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for n in 0u64.. {
                tick.tick().await;
                let ours = me.version_vector();
                for peer in me.client.connected_members() {
                    let known = me
                        .known
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&peer)
                        .cloned();
                    let behind = known.is_none_or(|k| ours.has_beyond(&k));
                    if peer == me.me || !(behind || n % ANTI_ENTROPY_FULL == 0) {
                        continue;
                    }
                    if !me
                        .checking
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(peer)
                    {
                        continue;
                    }
                    let m = me.clone();
                    me.tasks.spawn(async move {
                        if let Err(e) = m.push(peer, vec![]).await {
                            tracing::debug!(%peer, "user state check: {e}");
                        }
                        m.checking
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&peer);
                    });
                }
            }
        });
    }

    /// Send operations to a member; while its answer shows it lacks more
    /// of what we hold, send that too. If it holds what we lack, pull.
    pub(super) async fn push(
        self: &Arc<Self>,
        peer: DeviceId,
        mut wires: Vec<Vec<u8>>,
    ) -> Result<(), NodeError> {
        for _ in 0..PUSH_ROUNDS {
            let (resp, bytes) = self
                .client
                .request(&peer, Request::PushUserOps(wires))
                .await?;
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            let have = match resp {
                Response::UserOps { have, .. } => have,
                Response::Error(e) => return Err(NodeError::Unavailable(e)),
                _ => return Err(NodeError::Unavailable("unexpected answer".into())),
            };
            self.note(peer, &have);
            let ours = self.version_vector();
            if have.has_beyond(&ours) {
                let me = self.clone();
                self.tasks.spawn(async move {
                    if let Err(e) = me.pull(peer).await {
                        tracing::info!(%peer, "cannot fetch user operations: {e}");
                    }
                });
            }
            let (more, _) = self.ops_beyond(have, PUSH_BYTES).await?;
            if more.is_empty() {
                return Ok(());
            }
            wires = more;
        }
        Ok(())
    }

    /// Fetch what a member holds beyond our version vector, until it has
    /// nothing more.
    pub(super) async fn pull(self: &Arc<Self>, peer: DeviceId) -> Result<usize, NodeError> {
        let mut total = 0;
        loop {
            let have = self.version_vector();
            let (resp, bytes) = self
                .client
                .request(&peer, Request::GetUserOps(have))
                .await?;
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            let (ops, more) = match resp {
                Response::UserOps { ops, more, have } => {
                    self.note(peer, &have);
                    (ops, more)
                }
                Response::Error(e) => return Err(NodeError::Unavailable(e)),
                _ => return Err(NodeError::Unavailable("unexpected answer".into())),
            };
            let got = ops.len();
            let new = self.merge(peer, ops).await?;
            total += new;
            if !more || new == 0 || got == 0 {
                // What it lacks it pulls itself (on connecting, on joining)
                // or gets at the next check; pushing it here as well sent
                // a new device everything twice.
                return Ok(total);
            }
        }
    }

    /// The operations we hold beyond `have`, each device's in order, up to
    /// about `max_bytes`; and whether more remain.
    async fn ops_beyond(
        &self,
        have: VersionVector,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), NodeError> {
        let ours = self.version_vector();
        let wanted: Vec<(Vec<u8>, u64, u64)> = ours
            .0
            .iter()
            .filter(|(d, &n)| n > have.get(d))
            .map(|(d, &n)| (d.to_bytes(), have.get(d) + 1, n))
            .collect();
        if wanted.is_empty() {
            return Ok((vec![], false));
        }
        let ix = self.index.clone();
        let r = self
            .tasks
            .blocking(move || -> Result<(Vec<Vec<u8>>, bool), NodeError> {
                let mut out = Vec::new();
                let mut bytes = 0;
                for (device, from, to) in wanted {
                    if bytes >= max_bytes {
                        return Ok((out, true));
                    }
                    let got = ix.log_from(&device, from, max_bytes - bytes)?;
                    let n = got.len() as u64;
                    bytes += got.iter().map(Vec::len).sum::<usize>();
                    out.extend(got);
                    if from + n <= to {
                        return Ok((out, true));
                    }
                }
                Ok((out, false))
            })
            .await??;
        Ok(r)
    }

    /// Answer a member's `GetUserOps` or `PushUserOps`.
    pub(super) async fn answer(self: &Arc<Self>, from: DeviceId, req: Request) -> Response {
        let r = match req {
            Request::GetUserOps(have) => {
                self.note(from, &have);
                self.ops_beyond(have, PULL_BYTES).await
            }
            Request::PushUserOps(ops) => self.merge(from, ops).await.map(|_| (vec![], false)),
            _ => return Response::Error("not a user state request".into()),
        };
        match r {
            Ok((ops, more)) => Response::UserOps {
                ops,
                more,
                have: self.version_vector(),
            },
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// Drop what revoked devices made beyond what their revocations keep
    /// (operations that reached us before the revocation did), and rebuild
    /// the views if anything went.
    pub(super) async fn prune_revoked(&self) -> Result<(), NodeError> {
        let vv = self.version_vector();
        let cut: Vec<(Vec<u8>, u64)> =
            vv.0.iter()
                .filter_map(|(d, &n)| {
                    let kept = self.client.user_ops_kept(d)?;
                    (n > kept).then(|| (d.to_bytes(), kept))
                })
                .collect();
        if cut.is_empty() {
            return Ok(());
        }
        let _guard = self.write.lock().await;
        let ix = self.index.clone();
        let views = self
            .tasks
            .blocking(move || -> Result<Views, NodeError> {
                for (d, kept) in &cut {
                    let n = ix.log_truncate(d, *kept)?;
                    tracing::warn!(dropped = n, "user operations of a revoked device dropped");
                }
                let mut views = Views::default();
                for wire in ix.log_all()? {
                    if let Ok(op) = mesh::decode_stored_op(&wire) {
                        let _: Applied = views.apply(&op);
                    }
                }
                Ok(views)
            })
            .await??;
        *self.views.write().unwrap_or_else(|e| e.into_inner()) = views;
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}
