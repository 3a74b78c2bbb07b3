//! The mirror's loop: plan, evict, ask members for the records of what is
//! missing, start downloads (a few at a time), wait. It says why when it
//! cannot move (no member reachable, only a relayed path that the policy
//! forbids, a full disk) and goes on by itself when that changes.

use super::fetch::Failed;
use super::plan::{self, Class, Known, Want};
use super::{Mirror, Rec};
use crate::blob::Outboard;
use crate::mesh::{BlobAnswer, DeviceId, Recipe, Request, Response, MAX_RECIPES};
use crate::playback::by_round_trip;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Downloads at once.
const PARALLEL: usize = 3;
/// Recipes asked about in one round (the home encodes them meanwhile).
const RECORD_BATCH: usize = 32;
/// A track every holder failed waits this long before it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// A cut download waits this long.
const RETRY_CUT: Duration = Duration::from_secs(2);
/// After a disk error, downloads pause this long.
const RETRY_DISK: Duration = Duration::from_secs(15);
/// A round runs at least this often.
const TICK: Duration = Duration::from_secs(1);

/// One recipe to fetch this round.
struct Job {
    recipe: Recipe,
    /// The members it may come from (the policy's, or any for the queue).
    from: Vec<DeviceId>,
    /// Which slots it may take.
    lane: Lane,
}

/// The download slots a job may take.
enum Lane {
    /// The play queue is about to reach it: one slot more than the pins.
    Queue,
    /// A pin's.
    Pins,
}

impl Mirror {
    /// The loop, until the node stops.
    pub(super) async fn run(&self) {
        loop {
            self.round().await;
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn round(&self) {
        let s = self.settings();
        let p = {
            let st = self.inner.state.lock().unwrap();
            if !st.wants_set {
                return; // the node has not said what it wants yet: keep all
            }
            let store = &self.inner.store;
            let known = |r: &Recipe| {
                st.records.get(r).map(|rec| Known {
                    hash: rec.hash,
                    len: rec.outboard.len(),
                    done: store.has(&rec.hash),
                })
            };
            plan::plan(&st.wants, known, s.budget, s.prefetch_budget)
        };
        self.evict(&p, s.prefetch_budget).await;
        let Some(todo) = self.todo(p) else { return };
        let (allowed, everyone, blocked) = self.reachable(s.policy);
        // A pin waits for a path the policy allows. The queue's read-ahead
        // does not: it moves what playback would stream over that same path
        // a minute later (the policy guards bulk downloads, not listening).
        let jobs: Vec<Job> = todo
            .iter()
            .filter_map(|w| {
                let from = match w.class {
                    Class::Prefetch => &everyone,
                    Class::Pinned => &allowed,
                };
                (!from.is_empty()).then(|| Job {
                    recipe: w.recipe,
                    from: from.clone(),
                    lane: if w.ahead.is_some() {
                        Lane::Queue
                    } else {
                        Lane::Pins
                    },
                })
            })
            .collect();
        let pins_wait = todo.iter().any(|w| w.class == Class::Pinned) && allowed.is_empty();
        let why = pins_wait.then(|| match blocked {
            Some(path) => format!(
                "waiting: members are reachable only over a {path} path, and the offline policy is {} (`tunemesh offline policy any` allows it)",
                s.policy.as_str()
            ),
            None => "waiting: no member is reachable".into(),
        });
        self.inner.state.lock().unwrap().waiting = why;
        if jobs.is_empty() {
            return;
        }
        self.ask_records(&jobs).await;
        self.start_downloads(&jobs);
    }

    /// Store the plan; what to fetch now (`None`: nothing, or paused).
    fn todo(&self, p: plan::Plan) -> Option<Vec<Want>> {
        let now = Instant::now();
        let mut st = self.inner.state.lock().unwrap();
        st.backoff.retain(|_, until| *until > now);
        st.failed.retain(|_, (_, until)| *until > now);
        let todo: Vec<Want> = p
            .fetch
            .iter()
            .filter(|w| !st.downloading.contains_key(&w.recipe))
            .filter(|w| !st.backoff.contains_key(&w.recipe) && !st.failed.contains_key(&w.recipe))
            .cloned()
            .collect();
        st.plan = p;
        if let Some((why, until)) = &st.disk_error {
            if *until > now {
                st.waiting = Some(format!("paused: {why}"));
                return None;
            }
        }
        st.disk_error = None;
        if todo.is_empty() {
            st.waiting = None;
            return None;
        }
        Some(todo)
    }

    /// Connected members whose path the policy allows (best first), every
    /// connected member (best first), and the path of one the policy left
    /// out, if any.
    fn reachable(
        &self,
        policy: super::Policy,
    ) -> (Vec<DeviceId>, Vec<DeviceId>, Option<crate::mesh::PathKind>) {
        let (mut ok, mut all) = (vec![], vec![]);
        let mut rtt = HashMap::new();
        let mut blocked = None;
        for p in self.inner.client.peers() {
            let (Some(path), true, true) = (p.path, p.connected, p.member) else {
                continue;
            };
            let Ok(d) = p.id.parse::<DeviceId>() else {
                continue;
            };
            if let Some(r) = p.rtt_ms {
                rtt.insert(d, r);
            }
            all.push(d);
            if policy.allows(path) {
                ok.push(d);
            } else {
                blocked = Some(path);
            }
        }
        (by_round_trip(ok, &rtt), by_round_trip(all, &rtt), blocked)
    }

    /// Learn the records and holders of the first jobs that have no
    /// holder they may fetch from, asking every member any of them may.
    async fn ask_records(&self, jobs: &[Job]) {
        let (ask, members): (Vec<Recipe>, Vec<DeviceId>) = {
            let st = self.inner.state.lock().unwrap();
            let lacking: Vec<&Job> = jobs
                .iter()
                .filter(|j| {
                    let rec = st.records.get(&j.recipe);
                    let held = rec.and_then(|rec| st.holders.get(&rec.hash));
                    !held.is_some_and(|h| h.iter().any(|d| j.from.contains(d)))
                })
                .take(RECORD_BATCH.min(MAX_RECIPES))
                .collect();
            let mut members: Vec<DeviceId> = vec![];
            for d in lacking.iter().flat_map(|j| &j.from) {
                if !members.contains(d) {
                    members.push(*d);
                }
            }
            (lacking.iter().map(|j| j.recipe).collect(), members)
        };
        if ask.is_empty() {
            return;
        }
        let replies = futures::future::join_all(members.iter().map(|d| {
            let req = Request::GetBlobRecords(ask.clone());
            async move { (*d, self.inner.client.request(d, req).await) }
        }))
        .await;
        let mut found: HashMap<Recipe, Vec<(DeviceId, Rec)>> = HashMap::new();
        let mut pending: HashSet<Recipe> = HashSet::new();
        let mut absent: HashMap<Recipe, Vec<String>> = HashMap::new();
        for (d, reply) in replies {
            let answers = match reply {
                Ok((Response::BlobRecords(a), _)) if a.len() == ask.len() => a,
                Ok((Response::Error(e), _)) => {
                    tracing::info!(peer = %d, "no blob records: {e}");
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::info!(peer = %d, "cannot ask for blob records: {e}");
                    continue;
                }
            };
            for (r, a) in ask.iter().zip(answers) {
                match a {
                    BlobAnswer::Ready {
                        hash,
                        len,
                        outboard,
                    } => match Outboard::from_bytes(&hash, len, &outboard) {
                        Ok(ob) => found.entry(*r).or_default().push((
                            d,
                            Rec {
                                hash,
                                outboard: Arc::new(ob),
                            },
                        )),
                        Err(e) => tracing::warn!(peer = %d, "refused a blob record: {e}"),
                    },
                    BlobAnswer::Pending => {
                        pending.insert(*r);
                    }
                    BlobAnswer::Absent(e) => {
                        absent.entry(*r).or_default().push(format!("{d}: {e}"))
                    }
                }
            }
        }
        for r in &ask {
            if let Some(offers) = found.remove(r) {
                self.adopt(*r, offers).await;
            } else if !pending.contains(r) {
                let why = absent
                    .remove(r)
                    .map(|v| v.join("; "))
                    .unwrap_or_else(|| "no member answered".into());
                let until = Instant::now() + RETRY_FAILED;
                self.inner
                    .state
                    .lock()
                    .unwrap()
                    .failed
                    .insert(*r, (why, until));
            }
        }
        self.inner.state.lock().unwrap().pending = pending;
    }

    /// Take a recipe's record from the members that offer it: ours if one
    /// still has it (a part may be under way), else the most offered.
    async fn adopt(&self, r: Recipe, offers: Vec<(DeviceId, Rec)>) {
        let ours = self.record_of(&r).map(|rec| rec.hash);
        let mut by_hash: HashMap<_, (Rec, Vec<DeviceId>)> = HashMap::new();
        for (d, rec) in offers {
            by_hash
                .entry(rec.hash)
                .or_insert_with(|| (rec, vec![]))
                .1
                .push(d);
        }
        let pick = ours
            .filter(|h| by_hash.contains_key(h))
            .or_else(|| {
                by_hash
                    .iter()
                    .max_by_key(|(_, (_, ds))| ds.len())
                    .map(|(h, _)| *h)
            })
            .expect("at least one offer");
        let (rec, ds) = by_hash.remove(&pick).expect("picked");
        if ours != Some(pick) {
            if let Some(old) = ours {
                let m = self.clone();
                let _ = self
                    .inner
                    .tasks
                    .blocking(move || m.inner.store.remove(&old))
                    .await;
            }
            if let Err(e) = self.put_record(r, rec).await {
                tracing::warn!("cannot store a blob record: {e}");
                return;
            }
        }
        self.inner.state.lock().unwrap().holders.insert(pick, ds);
    }

    /// Start downloads of `jobs` (in order) with a known holder, up to
    /// [`PARALLEL`] at once, one per blob; the queue's may take one slot
    /// more, so a track about to play never waits for a pin's download.
    fn start_downloads(&self, jobs: &[Job]) {
        let mut st = self.inner.state.lock().unwrap();
        let mut busy: HashSet<_> = st
            .downloading
            .keys()
            .filter_map(|r| st.records.get(r).map(|rec| rec.hash))
            .collect();
        for job in jobs {
            let slots = match job.lane {
                Lane::Queue => PARALLEL + 1,
                Lane::Pins => PARALLEL,
            };
            if st.downloading.len() >= slots {
                continue;
            }
            let r = &job.recipe;
            let Some(rec) = st.records.get(r).cloned() else {
                continue;
            };
            // Finished since this round's plan was made.
            if self.inner.store.has(&rec.hash) {
                continue;
            }
            let holders: Vec<DeviceId> = job
                .from
                .iter()
                .filter(|d| st.holders.get(&rec.hash).is_some_and(|h| h.contains(d)))
                .copied()
                .collect();
            if holders.is_empty() || !busy.insert(rec.hash) {
                continue;
            }
            st.downloading.insert(
                *r,
                super::Progress {
                    recipe: *r,
                    have: 0,
                    len: rec.outboard.len(),
                    from: None,
                },
            );
            let (m, r) = (self.clone(), *r);
            self.inner.tasks.spawn(async move {
                let result = m.download(r, rec.clone(), holders.clone()).await;
                m.finished(r, &rec, &holders, result);
            });
        }
    }

    fn finished(&self, r: Recipe, rec: &Rec, holders: &[DeviceId], result: Result<(), Failed>) {
        let now = Instant::now();
        let mut st = self.inner.state.lock().unwrap();
        st.downloading.remove(&r);
        match result {
            Ok(()) => {
                st.failed.remove(&r);
            }
            Err(Failed::Retry(why)) => {
                tracing::info!(track = %r.track, "offline download cut, resuming soon: {why}");
                st.backoff.insert(r, now + RETRY_CUT);
            }
            Err(Failed::Holders(why)) => {
                tracing::warn!(track = %r.track, "offline download failed: {why}");
                // Forget these holders for these bytes: ask again later.
                if let Some(h) = st.holders.get_mut(&rec.hash) {
                    h.retain(|d| !holders.contains(d));
                }
                st.failed.insert(r, (why, now + RETRY_FAILED));
            }
            Err(Failed::Disk(why)) => {
                tracing::error!("offline store: {why}; downloads paused");
                st.disk_error = Some((
                    format!("the offline store cannot be written: {why}"),
                    now + RETRY_DISK,
                ));
            }
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Drop what the plan no longer keeps, and parts nobody fetches.
    async fn evict(&self, p: &plan::Plan, prefetch_budget: u64) {
        let held: Vec<_> = self
            .inner
            .store
            .held()
            .into_iter()
            .map(|(h, x)| (h, x.len, x.used))
            .collect();
        let (mut drop_, wanted) = {
            let mut st = self.inner.state.lock().unwrap();
            // What the queue wanted stays a cache after the queue moves on.
            st.cached.extend(p.prefetch.iter().copied());
            let drop_ = plan::evict(&held, p, &st.cached, prefetch_budget);
            for h in &drop_ {
                st.cached.remove(h);
            }
            let wanted: HashSet<_> = p
                .fetch
                .iter()
                .filter_map(|w| st.records.get(&w.recipe).map(|r| r.hash))
                .collect();
            (drop_, wanted)
        };
        let m = self.clone();
        let _ = self
            .inner
            .tasks
            .blocking(move || {
                drop_.extend(
                    m.inner
                        .store
                        .parts()
                        .into_iter()
                        .map(|(h, _)| h)
                        .filter(|h| !wanted.contains(h)),
                );
                for h in drop_ {
                    match m.inner.store.remove(&h) {
                        Ok(()) => tracing::info!(hash = %h, "offline copy dropped"),
                        Err(e) => tracing::warn!(hash = %h, "cannot drop an offline copy: {e}"),
                    }
                }
            })
            .await;
    }
}
