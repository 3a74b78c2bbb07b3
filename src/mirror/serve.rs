//! The holder's side of the mirror, on every device: what our recipes'
//! bytes are (records), the batch encodes that make the missing ones, and
//! the groups of a blob for a member.
//!
//! A record is answered only for bytes we hold whole: a copy in our store,
//! the original file (its hash is the track id), or a finished transcode
//! in the cache. A recipe we could make (we hold the track) is queued for
//! a batch encode and answered "pending". Batch encodes run one per core,
//! each on an encode thread at a lower priority (nice 10), so a listener's
//! stream is never starved by a batch.
//!
//! Must never: answer a record for bytes it does not hold whole, or send
//! bytes beyond the blob.

use super::{Mirror, Rec};
use crate::blob::{self, Outboard};
use crate::cache::{Key, Priority};
use crate::mesh::{BlobAnswer, MeshStream, Recipe, StreamHead, StreamOpen};
use crate::model::{Hash32, Track};
use crate::stream::{Bitrate, StreamRequest, Streamer, Via};
use crate::transcode::Kbps;
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most recipes waiting for a batch encode; more are answered "pending"
/// and asked again.
const MAX_QUEUED: usize = 4096;
/// Bytes per chunk sent.
const CHUNK: usize = 64 << 10;
/// A failed batch encode is tried again when asked after this long (the
/// cache's disk may have had room again).
const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(600);

/// The batch encode queue.
pub(super) struct Encoder {
    q: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Recipe>,
    queued: HashSet<Recipe>,
    failed: HashMap<Recipe, (String, std::time::Instant)>,
}

impl Encoder {
    pub(super) fn new() -> Encoder {
        Encoder {
            q: Mutex::new(Queue::default()),
            ready: Notify::new(),
        }
    }

    /// Queue `r` unless it is queued or failed; the failure if it failed.
    fn enqueue(&self, r: Recipe) -> Result<(), String> {
        let mut q = self.q.lock().unwrap();
        match q.failed.get(&r) {
            Some((_, at)) if at.elapsed() > RETRY_FAILED => {
                q.failed.remove(&r);
            }
            Some((e, _)) => return Err(e.clone()),
            None => {}
        }
        if q.queued.len() < MAX_QUEUED && q.queued.insert(r) {
            q.waiting.push_back(r);
            drop(q);
            self.ready.notify_one();
        }
        Ok(())
    }
}

/// Where a blob's bytes are here.
enum Source {
    /// A file: a store copy or the original.
    File(PathBuf),
    /// A finished transcode in the cache.
    Cache(Key),
}

impl Mirror {
    /// Start the batch encoders: one per core.
    pub(super) fn start_encoders(&self) {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..n {
            let m = self.clone();
            self.inner.tasks.spawn(async move {
                loop {
                    let next = m.inner.encoder.q.lock().unwrap().waiting.pop_front();
                    let Some(r) = next else {
                        m.inner.encoder.ready.notified().await;
                        continue;
                    };
                    let result = m.encode(r).await;
                    let mut q = m.inner.encoder.q.lock().unwrap();
                    q.queued.remove(&r);
                    if let Err(e) = result {
                        tracing::warn!(track = %r.track, kbps = r.kbps, "batch encode failed: {e}");
                        q.failed.insert(r, (e, std::time::Instant::now()));
                    }
                }
            });
        }
    }

    /// Make `r` (through the cache, at batch priority) and record its
    /// bytes.
    async fn encode(&self, r: Recipe) -> Result<(), String> {
        let (ix, streamer) = (self.inner.index.clone(), self.inner.streamer.clone());
        let made = self
            .inner
            .tasks
            .blocking(move || -> Result<(Hash32, Outboard), String> {
                let track = ix
                    .track(&r.track)
                    .map_err(|e| e.to_string())?
                    .ok_or("this device does not hold that track")?;
                let mut req = StreamRequest::new(Bitrate::Opus(Kbps::clamped(r.kbps)));
                req.priority = Priority::Background;
                let s = streamer
                    .open(&track, &req)
                    .map_err(|e| e.public_message())?;
                let via = s.via;
                let (hash, ob) = Outboard::compute(s).map_err(|e| e.to_string())?;
                if via == Via::Passthrough && hash != Hash32(*track.id.as_bytes()) {
                    return Err("the file changed while it was read".into());
                }
                Ok((hash, ob))
            })
            .await
            .map_err(|e| e.to_string())??;
        let rec = Rec {
            hash: made.0,
            outboard: Arc::new(made.1),
        };
        self.put_record(r, rec).await.map_err(|e| e.to_string())
    }

    /// Where the bytes of `r`'s record `hash` are here, if whole.
    fn source(&self, r: &Recipe, hash: &Hash32, len: u64) -> Option<Source> {
        if let Some(p) = self.inner.store.blob_path(hash) {
            return Some(Source::File(p));
        }
        let track = self.inner.index.track(&r.track).ok()??;
        if *hash == Hash32(*track.id.as_bytes()) {
            return original(&track).map(Source::File);
        }
        let cache = self.inner.streamer.cache()?;
        let key = Streamer::key(&track, r.kbps);
        // A cache entry of another length is another encode (a newer
        // pipeline): this record no longer names it.
        let entry = cache.open_at(&key, 0).ok()??;
        (entry.is_complete() && entry.total_len() == Some(len)).then_some(Source::Cache(key))
    }

    /// Answer a member's record request (blocking work in jobs).
    pub async fn answer_records(&self, recipes: Vec<Recipe>) -> Vec<BlobAnswer> {
        let mut out = Vec::with_capacity(recipes.len());
        let mut outboard_bytes = 0usize;
        for r in recipes {
            if outboard_bytes > crate::mesh::MAX_OUTBOARD_REPLY {
                out.push(BlobAnswer::Pending);
                continue;
            }
            let a = self.answer_one(r).await;
            if let BlobAnswer::Ready { outboard, .. } = &a {
                outboard_bytes += outboard.len();
            }
            out.push(a);
        }
        out
    }

    async fn answer_one(&self, r: Recipe) -> BlobAnswer {
        let ready = |rec: &Rec| BlobAnswer::Ready {
            hash: rec.hash,
            len: rec.outboard.len(),
            outboard: rec.outboard.to_bytes(),
        };
        let m = self.clone();
        let rec = self.record_of(&r);
        let rec2 = rec.clone();
        let held = self
            .inner
            .tasks
            .blocking(move || {
                let held = rec2
                    .as_ref()
                    .is_some_and(|rec| m.source(&r, &rec.hash, rec.outboard.len()).is_some());
                let track = m.inner.index.track(&r.track).ok().flatten();
                (held, track.filter(|t| original(t).is_some()))
            })
            .await;
        let Ok((held, track)) = held else {
            return BlobAnswer::Absent("shutting down".into());
        };
        if held {
            return ready(&rec.expect("held"));
        }
        let Some(track) = track else {
            return BlobAnswer::Absent("not held here".into());
        };
        if r.kbps == 0 {
            return match self.record_original(r, track).await {
                Ok(rec) => ready(&rec),
                Err(e) => BlobAnswer::Absent(e),
            };
        }
        match self.inner.encoder.enqueue(r) {
            Ok(()) => BlobAnswer::Pending,
            Err(e) => BlobAnswer::Absent(e),
        }
    }

    /// Hash an original file we hold (its hash must be the track id).
    async fn record_original(&self, r: Recipe, track: Track) -> Result<Rec, String> {
        let made = self
            .inner
            .tasks
            .blocking(move || -> Result<Outboard, String> {
                let path = original(&track).ok_or("the file is gone")?;
                let f = File::open(path).map_err(|e| e.kind().to_string())?;
                let (hash, ob) = Outboard::compute(f).map_err(|e| e.kind().to_string())?;
                if hash != Hash32(*track.id.as_bytes()) {
                    return Err("the file changed since it was scanned".into());
                }
                Ok(ob)
            })
            .await
            .map_err(|e| e.to_string())??;
        let rec = Rec {
            hash: Hash32(*r.track.as_bytes()),
            outboard: Arc::new(made),
        };
        self.put_record(r, rec.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(rec)
    }

    /// Send a member the groups it asked of a blob we hold.
    pub async fn serve_blob(&self, open: StreamOpen, mut stream: MeshStream) {
        let want = open.blob.clone().expect("a blob request");
        let r = Recipe {
            track: open.track,
            kbps: open.kbps,
        };
        let rec = self.record_of(&r).filter(|rec| rec.hash == want.hash);
        let m = self.clone();
        let src = match rec {
            Some(rec) => {
                let len = rec.outboard.len();
                let found = self
                    .inner
                    .tasks
                    .blocking(move || m.source(&r, &rec.hash, len))
                    .await;
                found.ok().flatten().map(|s| (s, len))
            }
            None => None,
        };
        let Some((src, len)) = src else {
            let head = StreamHead {
                error: Some("those bytes are not held here".into()),
                ..Default::default()
            };
            let _ = stream.write_head(&head).await;
            return;
        };
        let head = StreamHead {
            error: None,
            mime: "application/octet-stream".into(),
            total_len: Some(len),
            complete: true,
            via: "blob".into(),
        };
        if stream.write_head(&head).await.is_err() {
            return;
        }
        let (mut out, mut acks) = stream.into_blob_writer();
        let src = Arc::new(src);
        let window = u64::from(want.window);
        let (mut sent, mut acked) = (0u64, 0u64);
        for g in &want.groups {
            let start = g.start.saturating_mul(blob::GROUP).min(len);
            let end = g.end.saturating_mul(blob::GROUP).min(len);
            let mut at = start;
            while at < end {
                let (m, s, n) = (self.clone(), src.clone(), ((end - at) as usize).min(CHUNK));
                let read = self
                    .inner
                    .tasks
                    .blocking(move || m.read_at(&s, at, n))
                    .await;
                let bytes = match read {
                    Ok(Ok(b)) => Bytes::from(b),
                    Ok(Err(e)) => {
                        tracing::warn!("cannot read a blob for a member: {e}");
                        return; // no end marker: the member sees a cut stream
                    }
                    Err(_) => return,
                };
                at += bytes.len() as u64;
                // A group a chunk, each only while the asker has fewer than
                // its window unacknowledged.
                for off in (0..bytes.len()).step_by(blob::GROUP as usize) {
                    while sent - acked >= window {
                        match acks.next().await {
                            Ok(a) if a <= sent => acked = acked.max(a),
                            _ => return,
                        }
                    }
                    let piece = bytes.slice(off..(off + blob::GROUP as usize).min(bytes.len()));
                    let n = piece.len() as u64;
                    if out.send(piece).await.is_err() {
                        return;
                    }
                    sent += 1;
                    self.inner.state.lock().unwrap().bytes_served += n;
                }
            }
        }
        let _ = out.finish().await;
    }

    /// `n` bytes of a source from `offset` (blocking).
    fn read_at(&self, src: &Source, offset: u64, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        match src {
            Source::File(p) => {
                let mut f = File::open(p)?;
                f.seek(SeekFrom::Start(offset))?;
                f.read_exact(&mut buf)?;
            }
            Source::Cache(key) => {
                let cache = self.inner.streamer.cache().ok_or(io::ErrorKind::NotFound)?;
                let mut r = cache
                    .open_at(key, offset)
                    .map_err(io::Error::other)?
                    .ok_or(io::ErrorKind::NotFound)?;
                r.read_exact(&mut buf)?;
            }
        }
        Ok(buf)
    }
}

/// The first readable path of a track we hold.
fn original(t: &Track) -> Option<PathBuf> {
    t.paths.iter().find(|p| p.is_file()).cloned()
}
