//! One download: the missing groups of a blob from its holders, best
//! first. Every 16 KiB group is checked against the outboard before it is
//! written; a holder that sends one that does not match is refused (and
//! logged), the next one is asked for what is still missing. Groups are
//! written at their offsets in the part, so a download cut at any point
//! (a lost link, `kill -9`) resumes with only the missing groups.

use super::store::Part;
use super::{Mirror, Progress, Rec};
use crate::blob;
use crate::mesh::{BlobWant, DeviceId, Recipe, StreamOpen, MAX_GROUP_RANGES};
use futures::{FutureExt, StreamExt};

/// Why a download stopped short.
#[derive(Debug)]
pub(super) enum Failed {
    /// Cut or unreachable: try again soon.
    Retry(String),
    /// Every holder refused or sent bytes that do not match.
    Holders(String),
    /// The store's disk failed (full, read-only).
    Disk(String),
}

/// Groups a holder may send beyond the last we stored: what a cut (or
/// `kill -9`) loses at most, per download. Four groups (64 KiB) per round
/// trip keep a 1 Mbit/s link full with three downloads at 400 ms.
const WINDOW: u32 = 4;

/// Cuts the chunks of a blob stream into the groups asked, in order.
struct Assembler {
    order: std::iter::Peekable<std::vec::IntoIter<u64>>,
    cur: Vec<u8>,
    len: u64,
}

impl Assembler {
    fn new(order: Vec<u64>, len: u64) -> Assembler {
        Assembler {
            order: order.into_iter().peekable(),
            cur: Vec::with_capacity(blob::GROUP as usize),
            len,
        }
    }

    fn finished(&mut self) -> bool {
        self.order.peek().is_none()
    }

    /// The groups `bytes` completes (unchecked), or why the bytes are
    /// wrong (more than was asked).
    fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let mut done = vec![];
        while !bytes.is_empty() {
            let Some(&i) = self.order.peek() else {
                return Err("sent bytes past the groups asked".into());
            };
            let r = blob::group_range(self.len, i);
            let want = (r.end - r.start) as usize;
            let take = (want - self.cur.len()).min(bytes.len());
            self.cur.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.cur.len() == want {
                self.order.next();
                let g = std::mem::replace(&mut self.cur, Vec::with_capacity(blob::GROUP as usize));
                done.push((i, g));
            }
        }
        Ok(done)
    }
}

/// A failed file operation of the store: the disk's fault (full,
/// read-only, failing: pause every download) or this download's (retry).
fn storage(what: &str, e: std::io::Error) -> Failed {
    use std::io::ErrorKind::*;
    // ENOSPC 28, EROFS 30, EIO 5, EDQUOT 122 (Linux), as the kinds above
    // them may not name them on every platform.
    let disk = matches!(e.kind(), StorageFull | ReadOnlyFilesystem | QuotaExceeded)
        || matches!(e.raw_os_error(), Some(5 | 28 | 30 | 122));
    if disk {
        Failed::Disk(format!("{what}: {e}"))
    } else {
        Failed::Retry(format!("{what}: {e}"))
    }
}

/// What one holder's stream gave.
enum Outcome {
    /// It sent every group asked (some may remain past the ranges cap).
    Sent,
    /// It refused, or was cut (the reason).
    Cut(String),
    /// It sent a group that does not match.
    Bad(String),
}

impl Mirror {
    /// Download `recipe`, whose record is `rec`, from `holders`.
    pub(super) async fn download(
        &self,
        recipe: Recipe,
        rec: Rec,
        holders: Vec<DeviceId>,
    ) -> Result<(), Failed> {
        if self.inner.store.has(&rec.hash) {
            return Ok(()); // another recipe with the same bytes brought them
        }
        let disk = |what: &'static str| move |e: std::io::Error| storage(what, e);
        let (m, r) = (self.clone(), rec.clone());
        let (part, mut present) = self
            .inner
            .tasks
            .blocking(move || m.inner.store.open_part(&r.hash, &r.outboard))
            .await
            .map_err(|e| Failed::Retry(e.to_string()))?
            .map_err(disk("opening the part"))?;
        let mut part = Some(part);
        let here = present.iter().filter(|p| **p).count();
        if here > 0 {
            tracing::info!(track = %recipe.track, "resuming a download: {here} of {} groups here", present.len());
        }
        let mut errors = vec![];
        let mut bad = 0;
        for d in &holders {
            if present.iter().all(|p| *p) {
                break;
            }
            self.progress(recipe, &rec, &present, Some(*d));
            match self
                .fetch_groups(*d, recipe, &rec, &mut part, &mut present)
                .await?
            {
                Outcome::Sent => {}
                Outcome::Cut(e) => errors.push(format!("{d}: {e}")),
                Outcome::Bad(e) => {
                    bad += 1;
                    errors.push(format!("{d}: {e}"));
                }
            }
        }
        if !present.iter().all(|p| *p) {
            let why = if errors.is_empty() {
                "no holder could send it".into()
            } else {
                errors.join("; ")
            };
            return Err(if bad > 0 && bad == holders.len() {
                Failed::Holders(why)
            } else {
                Failed::Retry(why)
            });
        }
        let (m, hash) = (self.clone(), rec.hash);
        let part = part.take().expect("the part");
        self.inner
            .tasks
            .blocking(move || m.inner.store.finish(&hash, part))
            .await
            .map_err(|e| Failed::Retry(e.to_string()))?
            .map_err(disk("storing the copy"))?;
        tracing::info!(track = %recipe.track, kbps = recipe.kbps, hash = %rec.hash, "offline copy stored");
        Ok(())
    }

    fn progress(&self, recipe: Recipe, rec: &Rec, present: &[bool], from: Option<DeviceId>) {
        let len = rec.outboard.len();
        let have: u64 = present
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(i, _)| {
                let r = blob::group_range(len, i as u64);
                r.end - r.start
            })
            .sum();
        let mut st = self.inner.state.lock().unwrap();
        st.downloading.insert(
            recipe,
            Progress {
                recipe,
                have,
                len,
                from,
            },
        );
    }

    /// Ask `d` for the missing groups and store what checks.
    async fn fetch_groups(
        &self,
        d: DeviceId,
        recipe: Recipe,
        rec: &Rec,
        part: &mut Option<Part>,
        present: &mut [bool],
    ) -> Result<Outcome, Failed> {
        let len = rec.outboard.len();
        let missing = (0..present.len() as u64).filter(|i| !present[*i as usize]);
        let mut groups = blob::ranges_of(missing);
        groups.truncate(MAX_GROUP_RANGES);
        let order: Vec<u64> = groups.iter().flat_map(|g| g.clone()).collect();
        let open = StreamOpen {
            track: recipe.track,
            kbps: recipe.kbps,
            start_ms: 0,
            offset: 0,
            blob: Some(BlobWant {
                hash: rec.hash,
                groups,
                window: WINDOW,
            }),
        };
        let (head, chunks, mut acker) = match self.inner.client.open_blob(&d, &open).await {
            Ok(x) => x,
            Err(e) => return Ok(Outcome::Cut(e.to_string())),
        };
        if let Some(e) = head.error {
            return Ok(Outcome::Cut(e));
        }
        if head.total_len != Some(len) {
            return Ok(Outcome::Bad(format!(
                "announced {:?} bytes, not {len}",
                head.total_len
            )));
        }
        // Fused: the reader must not be polled past its end.
        let mut chunks = chunks.fuse();
        let mut asm = Assembler::new(order, len);
        let mut stored = 0u64;
        let mut outcome = Outcome::Sent;
        while !asm.finished() {
            // One chunk, and whichever more are already here: one write.
            let mut got = vec![chunks.next().await];
            while got.len() < 8 && matches!(got.last(), Some(Some(Ok(_)))) {
                match chunks.next().now_or_never() {
                    Some(c) => got.push(c),
                    None => break,
                }
            }
            let mut batch = vec![];
            for c in got {
                let chunk = match c {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        outcome = Outcome::Cut(e.to_string());
                        break;
                    }
                    None => {
                        outcome = Outcome::Cut("the stream ended early".into());
                        break;
                    }
                };
                self.inner.state.lock().unwrap().bytes_fetched += chunk.len() as u64;
                match asm.push(&chunk) {
                    Ok(done) => batch.extend(done),
                    Err(e) => {
                        outcome = Outcome::Bad(e);
                        break;
                    }
                }
            }
            // Each group is checked before anything of it is written.
            if let Some(pos) = batch
                .iter()
                .position(|(i, g)| rec.outboard.verify_group(&rec.hash, *i, g).is_err())
            {
                let i = batch[pos].0;
                batch.truncate(pos);
                self.inner.state.lock().unwrap().groups_refused += 1;
                tracing::warn!(peer = %d, track = %recipe.track, group = i, "refused a group that does not match");
                outcome = Outcome::Bad(format!("sent group {i}, which does not match"));
            }
            stored += batch.len() as u64;
            self.write(part, &mut batch, present).await?;
            self.progress(recipe, rec, present, Some(d));
            if !matches!(outcome, Outcome::Sent) {
                break;
            }
            if acker.ack(stored).await.is_err() {
                outcome = Outcome::Cut("the holder went away".into());
                break;
            }
        }
        Ok(outcome)
    }

    /// Write checked groups at their offsets (one blocking job).
    async fn write(
        &self,
        part: &mut Option<Part>,
        batch: &mut Vec<(u64, Vec<u8>)>,
        present: &mut [bool],
    ) -> Result<(), Failed> {
        if batch.is_empty() {
            return Ok(());
        }
        let groups = std::mem::take(batch);
        let mut p = part.take().expect("the part");
        let (p, groups, r) = self
            .inner
            .tasks
            .blocking(move || {
                let r = groups
                    .iter()
                    .try_for_each(|(i, g)| p.write_at(i * blob::GROUP, g));
                (p, groups, r)
            })
            .await
            .map_err(|e| Failed::Retry(e.to_string()))?;
        *part = Some(p);
        r.map_err(|e| storage("writing", e))?;
        for (i, _) in groups {
            present[i as usize] = true;
        }
        Ok(())
    }
}
