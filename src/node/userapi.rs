//! The node's surface for the owner's shared state: ids resolved from
//! text, operations made from what a person asks ("move the 3rd entry to
//! the top"), and the merged state read back for the HTTP API and the CLI.

use super::{Node, NodeError};
use crate::catalog::Prefix;
use crate::model::TrackId;
use crate::userdata::{
    Body, EntryId, Item, Play, PlayStats, PlaylistId, PlaylistView, Position, Queue, Stamp, Views,
};
use tokio::sync::watch;

/// What the owner's state says about one track (shown beside it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mine {
    /// When it was starred (UTC ms), if it is.
    pub starred_at: Option<u64>,
    /// Its rating, 0 for none.
    pub rating: u8,
    /// Its plays, summed up.
    pub plays: PlayStats,
}

impl Mine {
    /// What `views` say about `item` (plays only count for tracks).
    pub fn of(views: &Views, item: &Item) -> Mine {
        Mine {
            starred_at: views.starred_at(item),
            rating: views.rating(item),
            plays: match item {
                Item::Track(t) => views.play_stats(t),
                _ => PlayStats::default(),
            },
        }
    }
}

/// How to refer to a playlist: its id, or its name when no other playlist
/// has it.
fn find_playlist(views: &Views, r: &str) -> Result<PlaylistView, NodeError> {
    if let Ok(id) = r.parse::<PlaylistId>() {
        if let Some(p) = views.playlist(&id) {
            return Ok(p);
        }
    }
    let mut named: Vec<PlaylistView> = views
        .playlists()
        .into_iter()
        .filter(|p| p.name == r)
        .collect();
    match named.len() {
        0 => Err(NodeError::NotFound(format!("no playlist {r:?}"))),
        1 => Ok(named.remove(0)),
        n => Err(NodeError::BadRequest(format!(
            "{n} playlists are called {r:?}; give its id (`tunemesh playlist ls`)"
        ))),
    }
}

/// A longest common subsequence of `a` and `b`, as index pairs in order.
fn lcs(a: &[TrackId], b: &[TrackId]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut t = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[at(i, j)] = if a[i] == b[j] {
                t[at(i + 1, j + 1)] + 1
            } else {
                t[at(i + 1, j)].max(t[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if a[i] == b[j] {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if t[at(i + 1, j)] >= t[at(i, j + 1)] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// A 1-based position in a list of `len`, checked.
fn index(pos: usize, len: usize) -> Result<usize, NodeError> {
    if pos == 0 || pos > len {
        return Err(NodeError::BadRequest(format!(
            "position {pos} is not in a playlist of {len} entries (positions count from 1)"
        )));
    }
    Ok(pos - 1)
}

impl Node {
    /// The merged state, read.
    pub fn user_state<R>(&self, f: impl FnOnce(&Views) -> R) -> R {
        self.inner.user.read(f)
    }

    /// Changes to the owner's state (made here or merged from members).
    pub fn user_changes(&self) -> watch::Receiver<u64> {
        self.inner.user.subscribe()
    }

    /// What the owner's state says about `item`.
    pub fn mine(&self, item: &Item) -> Mine {
        self.user_state(|v| Mine::of(v, item))
    }

    /// An item by id or unique id prefix: a track, album or artist of the
    /// catalog (`track:`, `album:` or `artist:` in front picks the kind). A
    /// whole track id counts even when no device holds the track now.
    pub fn resolve_item(&self, id: &str) -> Result<Item, NodeError> {
        let id = id.trim();
        let (kind, rest) = match id.split_once(':') {
            Some((k @ ("track" | "album" | "artist"), rest)) => (Some(k), rest),
            _ => (None, id),
        };
        let prefix: Prefix = rest.parse()?;
        let cat = &self.inner.catalog;
        let mut found: Vec<Item> = Vec::new();
        if kind.is_none_or(|k| k == "track") {
            match cat.resolve(&prefix) {
                Ok(t) => found.push(Item::Track(t)),
                Err(crate::catalog::IdError::NotFound(_)) => {
                    if let Some(t) = prefix.whole() {
                        found.push(Item::Track(t));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if kind.is_none_or(|k| k == "album") {
            found.extend(cat.albums_with(&prefix).into_iter().map(Item::Album));
        }
        if kind.is_none_or(|k| k == "artist") {
            found.extend(cat.artists_with(&prefix).into_iter().map(Item::Artist));
        }
        match found.len() {
            0 => Err(NodeError::NotFound(format!(
                "no track, album or artist {rest}"
            ))),
            1 => Ok(found[0]),
            n => Err(NodeError::BadRequest(format!(
                "{n} tracks, albums or artists start with {rest}; give more digits"
            ))),
        }
    }

    /// A track by id or unique prefix (whole ids of tracks no device holds
    /// now count too: a playlist keeps them).
    pub fn resolve_track_id(&self, id: &str) -> Result<TrackId, NodeError> {
        match self.resolve_item(&format!("track:{}", id.trim()))? {
            Item::Track(t) => Ok(t),
            _ => unreachable!("asked for tracks only"),
        }
    }

    /// Star (or unstar) items; durable when it returns.
    pub async fn star(&self, items: Vec<Item>, starred: bool) -> Result<(), NodeError> {
        let bodies = items
            .into_iter()
            .map(|item| Body::Star { item, starred })
            .collect();
        self.inner.user.make(bodies).await?;
        Ok(())
    }

    /// Rate an item 1–5, or 0 to clear its rating.
    pub async fn rate(&self, item: Item, rating: u8) -> Result<(), NodeError> {
        if rating > 5 {
            return Err(NodeError::BadRequest(format!(
                "a rating is 0 to 5, not {rating}"
            )));
        }
        self.inner
            .user
            .make(vec![Body::Rate { item, rating }])
            .await?;
        Ok(())
    }

    /// Record plays (with when they really started).
    pub async fn record_plays(&self, plays: Vec<Play>) -> Result<(), NodeError> {
        self.inner
            .user
            .make(plays.into_iter().map(Body::Play).collect())
            .await?;
        Ok(())
    }

    /// Every playlist, by name.
    pub fn playlists(&self) -> Vec<PlaylistView> {
        self.user_state(Views::playlists)
    }

    /// A playlist by id or name.
    pub fn playlist(&self, r: &str) -> Result<PlaylistView, NodeError> {
        self.user_state(|v| find_playlist(v, r))
    }

    /// Make a playlist, optionally with tracks.
    pub async fn create_playlist(
        &self,
        name: &str,
        tracks: Vec<TrackId>,
    ) -> Result<PlaylistView, NodeError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(NodeError::BadRequest("a playlist needs a name".into()));
        }
        let ops = self
            .inner
            .user
            .make(vec![Body::CreatePlaylist { name: name.into() }])
            .await?;
        let id = ops[0].id;
        if !tracks.is_empty() {
            self.add_to_playlist(&id.to_string(), tracks, None).await?;
        }
        self.playlist(&id.to_string())
    }

    /// Change a playlist's name and/or comment.
    pub async fn edit_playlist(
        &self,
        r: &str,
        name: Option<String>,
        comment: Option<String>,
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(NodeError::BadRequest("a playlist needs a name".into()));
        }
        let body = Body::EditPlaylist {
            playlist: p.id,
            name,
            comment,
        };
        self.inner.user.make(vec![body]).await?;
        self.playlist(&p.id.to_string())
    }

    /// Delete a playlist (on every device).
    pub async fn delete_playlist(&self, r: &str) -> Result<(), NodeError> {
        let p = self.playlist(r)?;
        self.inner
            .user
            .make(vec![Body::DeletePlaylist { playlist: p.id }])
            .await?;
        Ok(())
    }

    /// Add tracks to a playlist: at the end, or before the entry at 1-based
    /// position `at`.
    pub async fn add_to_playlist(
        &self,
        r: &str,
        tracks: Vec<TrackId>,
        at: Option<usize>,
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        if tracks.is_empty() {
            return Ok(p);
        }
        let at = match at {
            None => p.entries.len(),
            Some(a) if a == p.entries.len() + 1 => p.entries.len(),
            Some(a) => index(a, p.entries.len())?,
        };
        let hi = p.entries.get(at).map(|e| &e.position);
        let mut last = at.checked_sub(1).map(|i| p.entries[i].position.clone());
        let mut entries = Vec::with_capacity(tracks.len());
        for t in tracks {
            let pos = Position::between(last.as_ref(), hi);
            entries.push((t, pos.clone()));
            last = Some(pos);
        }
        let mut bodies = Vec::new();
        for chunk in entries.chunks(crate::userdata::op::MAX_TRACKS) {
            bodies.push(Body::AddEntries {
                playlist: p.id,
                entries: chunk.to_vec(),
            });
        }
        self.inner.user.make(bodies).await?;
        self.playlist(&p.id.to_string())
    }

    /// Move the entry at 1-based position `from` to position `to`.
    pub async fn move_in_playlist(
        &self,
        r: &str,
        from: usize,
        to: usize,
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        let from = index(from, p.entries.len())?;
        let to = index(to, p.entries.len())?;
        self.move_entry(&p, p.entries[from].id, to).await
    }

    /// Move entry `entry` so that it ends at 0-based `to`.
    async fn move_entry(
        &self,
        p: &PlaylistView,
        entry: EntryId,
        to: usize,
    ) -> Result<PlaylistView, NodeError> {
        let rest: Vec<&Position> = p
            .entries
            .iter()
            .filter(|e| e.id != entry)
            .map(|e| &e.position)
            .collect();
        let to = to.min(rest.len());
        let lo = to.checked_sub(1).map(|i| rest[i]);
        let position = Position::between(lo, rest.get(to).copied());
        self.inner
            .user
            .make(vec![Body::MoveEntry {
                playlist: p.id,
                entry,
                position,
            }])
            .await?;
        self.playlist(&p.id.to_string())
    }

    /// Move an entry by id to 1-based position `to`.
    pub async fn move_entry_to(
        &self,
        r: &str,
        entry: EntryId,
        to: usize,
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        if !p.entries.iter().any(|e| e.id == entry) {
            return Err(NodeError::NotFound(format!(
                "no entry {entry} in {:?}",
                p.name
            )));
        }
        let to = index(to, p.entries.len())?;
        self.move_entry(&p, entry, to).await
    }

    /// Remove entries: by 1-based positions (all against the playlist as it
    /// is now) and/or by entry id.
    pub async fn remove_from_playlist(
        &self,
        r: &str,
        positions: &[usize],
        entries: &[EntryId],
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        let mut ids: Vec<EntryId> = Vec::new();
        for &pos in positions {
            ids.push(p.entries[index(pos, p.entries.len())?].id);
        }
        for e in entries {
            if !p.entries.iter().any(|x| x.id == *e) {
                return Err(NodeError::NotFound(format!("no entry {e} in {:?}", p.name)));
            }
            ids.push(*e);
        }
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            self.inner
                .user
                .make(vec![Body::RemoveEntries {
                    playlist: p.id,
                    entries: ids,
                }])
                .await?;
        }
        self.playlist(&p.id.to_string())
    }

    /// Make a playlist hold exactly `tracks`, in that order, by the
    /// smallest change: the entries of a longest common subsequence stay
    /// (so a concurrent edit elsewhere to one of them survives), the rest
    /// are removed, and the missing tracks are added between their
    /// neighbours (what Subsonic's `createPlaylist` with an id asks).
    pub async fn set_playlist_tracks(
        &self,
        r: &str,
        tracks: Vec<TrackId>,
    ) -> Result<PlaylistView, NodeError> {
        let p = self.playlist(r)?;
        let old: Vec<TrackId> = p.entries.iter().map(|e| e.track).collect();
        if old.len().saturating_mul(tracks.len()) > 25_000_000 {
            return Err(NodeError::BadRequest("playlist too long to compare".into()));
        }
        let keep = lcs(&old, &tracks);
        let kept_old: std::collections::HashSet<usize> = keep.iter().map(|(i, _)| *i).collect();
        let removed: Vec<EntryId> = p
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !kept_old.contains(i))
            .map(|(_, e)| e.id)
            .collect();
        // New tracks go between the kept entries around them.
        let mut bodies = Vec::new();
        if !removed.is_empty() {
            bodies.push(Body::RemoveEntries {
                playlist: p.id,
                entries: removed,
            });
        }
        let mut k = 0; // next kept pair
        let mut lo: Option<Position> = None;
        let mut run: Vec<(TrackId, Position)> = Vec::new();
        for (j, t) in tracks.iter().enumerate() {
            if k < keep.len() && keep[k].1 == j {
                if !run.is_empty() {
                    bodies.push(Body::AddEntries {
                        playlist: p.id,
                        entries: std::mem::take(&mut run),
                    });
                }
                lo = Some(p.entries[keep[k].0].position.clone());
                k += 1;
                continue;
            }
            let hi = keep.get(k).map(|(i, _)| &p.entries[*i].position);
            let pos = Position::between(lo.as_ref(), hi);
            run.push((*t, pos.clone()));
            lo = Some(pos);
        }
        if !run.is_empty() {
            bodies.push(Body::AddEntries {
                playlist: p.id,
                entries: run,
            });
        }
        self.inner.user.make(bodies).await?;
        self.playlist(&p.id.to_string())
    }

    /// Save the play queue.
    pub async fn set_queue(&self, q: Queue) -> Result<(), NodeError> {
        self.inner.user.make(vec![Body::SetQueue(q)]).await?;
        Ok(())
    }

    /// The play queue, with when and where it was saved.
    pub fn queue(&self) -> Option<(Stamp, Queue)> {
        self.user_state(|v| v.queue().map(|(s, q)| (s, q.clone())))
    }

    /// What the owner's state exchanges with members cost so far.
    pub fn user_sync_stats(&self) -> super::user::UserSyncStats {
        self.inner.user.stats()
    }

    /// Fetch what a member holds of the owner's state that we lack (also
    /// done by itself on connecting); returns how many operations came.
    pub async fn pull_user_state(&self, peer: crate::mesh::DeviceId) -> Result<usize, NodeError> {
        self.inner.user.pull(peer).await
    }
}
