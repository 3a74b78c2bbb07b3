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
use futures::StreamExt;

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
            }),
        };
        let (head, mut chunks) = match self.inner.client.open_stream(&d, &open).await {
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
        let mut next = order.into_iter().peekable();
        let mut cur: Vec<u8> = Vec::with_capacity(blob::GROUP as usize);
        let mut batch: Vec<(u64, Vec<u8>)> = vec![];
        let mut outcome = Outcome::Sent;
        'read: while next.peek().is_some() {
            let chunk = match chunks.next().await {
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
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let Some(&i) = next.peek() else {
                    outcome = Outcome::Bad("sent bytes past the groups asked".into());
                    break 'read;
                };
                let r = blob::group_range(len, i);
                let want = (r.end - r.start) as usize;
                let take = (want - cur.len()).min(rest.len());
                cur.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if cur.len() < want {
                    continue;
                }
                next.next();
                let group = std::mem::replace(&mut cur, Vec::with_capacity(blob::GROUP as usize));
                if let Err(e) = rec.outboard.verify_group(&rec.hash, i, &group) {
                    self.inner.state.lock().unwrap().groups_refused += 1;
                    tracing::warn!(peer = %d, track = %recipe.track, group = i, "refused a group that does not match: {e}");
                    outcome = Outcome::Bad(format!("sent group {i}, which does not match"));
                    break 'read;
                }
                batch.push((i, group));
            }
            // What a chunk completed is written before the next is read,
            // so a cut (or kill -9) loses at most the groups in flight.
            if !batch.is_empty() {
                self.write(part, &mut batch, present).await?;
                self.progress(recipe, rec, present, Some(d));
            }
        }
        self.write(part, &mut batch, present).await?;
        self.progress(recipe, rec, present, Some(d));
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
