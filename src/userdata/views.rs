//! The merged state: what the operations of every device add up to. Every
//! piece is a join of its operations (a last-writer-wins register, a
//! grow-only set, a sticky tombstone), so applying the same operations in
//! any order gives the same state. Pure: no storage, no clock.

use super::op::{Body, EntryId, Item, Op, Play, PlaylistId, Queue, Stamp, VersionVector};
use super::position::Position;
use crate::model::TrackId;
use std::collections::{BTreeMap, HashMap};

/// What applying an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was new and is now part of the state.
    New,
    /// It was already applied.
    Duplicate,
    /// An earlier operation of its device is missing: not applied (ask for
    /// the missing ones first).
    Gap,
}

/// A track's plays, summed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlayStats {
    /// How many plays.
    pub count: u64,
    /// When the latest one started (UTC ms). An older play arriving later
    /// never moves it back.
    pub last_ms: i64,
    /// Time played in all.
    pub total_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct EntryState {
    track: Option<TrackId>,
    position: Option<(Stamp, Position)>,
    removed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PlaylistState {
    created: Option<Stamp>,
    name: Option<(Stamp, String)>,
    comment: Option<(Stamp, String)>,
    deleted: bool,
    changed: Option<Stamp>,
    entries: BTreeMap<EntryId, EntryState>,
}

/// A playlist as the surfaces show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistView {
    /// Its id.
    pub id: PlaylistId,
    /// Its name.
    pub name: String,
    /// Its comment.
    pub comment: String,
    /// When it was made (UTC ms, the creating device's clock).
    pub created_ms: u64,
    /// When it last changed.
    pub changed_ms: u64,
    /// Its entries, in order.
    pub entries: Vec<EntryView>,
}

/// One entry of a playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// The entry's own id (a track may be in a playlist twice).
    pub id: EntryId,
    /// The track.
    pub track: TrackId,
    /// Where it sits.
    pub position: Position,
}

/// The merged state of every operation applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Views {
    vv: VersionVector,
    stars: HashMap<Item, (Stamp, bool)>,
    ratings: HashMap<Item, (Stamp, u8)>,
    /// Plays by start time (then id), for "recently played".
    plays: BTreeMap<(i64, super::op::OpId), Play>,
    stats: HashMap<TrackId, PlayStats>,
    playlists: BTreeMap<PlaylistId, PlaylistState>,
    queue: Option<(Stamp, Queue)>,
}

/// Keep the later of a register's values.
fn lww<T>(slot: &mut Option<(Stamp, T)>, stamp: Stamp, value: T) {
    if slot.as_ref().is_none_or(|(s, _)| stamp > *s) {
        *slot = Some((stamp, value));
    }
}

impl Views {
    /// Apply one operation (see [`Applied`]).
    pub fn apply(&mut self, op: &Op) -> Applied {
        let have = self.vv.get(&op.id.device);
        if op.id.seq <= have {
            return Applied::Duplicate;
        }
        if op.id.seq != have + 1 {
            return Applied::Gap;
        }
        self.vv.0.insert(op.id.device, op.id.seq);
        self.fold(op);
        Applied::New
    }

    fn fold(&mut self, op: &Op) {
        let stamp = op.stamp();
        match &op.body {
            Body::Star { item, starred } => {
                let slot = self.stars.entry(*item).or_insert((stamp, *starred));
                if stamp > slot.0 {
                    *slot = (stamp, *starred);
                }
            }
            Body::Rate { item, rating } => {
                let slot = self.ratings.entry(*item).or_insert((stamp, *rating));
                if stamp > slot.0 {
                    *slot = (stamp, *rating);
                }
            }
            Body::Play(p) => {
                if self.plays.insert((p.started_ms, op.id), *p).is_none() {
                    let s = self.stats.entry(p.track).or_default();
                    s.last_ms = if s.count == 0 {
                        p.started_ms
                    } else {
                        s.last_ms.max(p.started_ms)
                    };
                    s.count += 1;
                    s.total_ms += u64::from(p.ms_played);
                }
            }
            Body::SetQueue(q) => lww(&mut self.queue, stamp, q.clone()),
            _ => self.fold_playlist(op, stamp),
        }
    }

    fn fold_playlist(&mut self, op: &Op, stamp: Stamp) {
        let id = match &op.body {
            Body::CreatePlaylist { .. } => op.id,
            Body::EditPlaylist { playlist, .. }
            | Body::DeletePlaylist { playlist }
            | Body::AddEntries { playlist, .. }
            | Body::MoveEntry { playlist, .. }
            | Body::RemoveEntries { playlist, .. } => *playlist,
            _ => return,
        };
        let pl = self.playlists.entry(id).or_default();
        pl.changed = pl.changed.max(Some(stamp));
        match &op.body {
            Body::CreatePlaylist { name } => {
                pl.created = Some(stamp);
                lww(&mut pl.name, stamp, name.clone());
            }
            Body::EditPlaylist { name, comment, .. } => {
                if let Some(n) = name {
                    lww(&mut pl.name, stamp, n.clone());
                }
                if let Some(c) = comment {
                    lww(&mut pl.comment, stamp, c.clone());
                }
            }
            Body::DeletePlaylist { .. } => pl.deleted = true,
            Body::AddEntries { entries, .. } => {
                for (i, (track, pos)) in entries.iter().enumerate() {
                    let id = EntryId {
                        op: op.id,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                    };
                    let e = pl.entries.entry(id).or_default();
                    if !e.removed {
                        e.track = Some(*track);
                        lww(&mut e.position, stamp, pos.clone());
                    }
                }
            }
            Body::MoveEntry {
                entry, position, ..
            } => {
                let e = pl.entries.entry(*entry).or_default();
                if !e.removed {
                    lww(&mut e.position, stamp, position.clone());
                }
            }
            Body::RemoveEntries { entries, .. } => {
                for id in entries {
                    let e = pl.entries.entry(*id).or_default();
                    e.removed = true;
                    // A removed entry never returns: it keeps nothing but
                    // the tombstone (so any order of add, move and remove
                    // leaves the same state).
                    e.position = None;
                    e.track = None;
                }
            }
            _ => {}
        }
    }

    /// The highest sequence number applied of each device.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// When `item` was starred (the starring device's clock, UTC ms), if it
    /// is.
    pub fn starred_at(&self, item: &Item) -> Option<u64> {
        match self.stars.get(item) {
            Some((s, true)) => Some(s.at.ms()),
            _ => None,
        }
    }

    /// Every starred item with when it was starred, latest first.
    pub fn starred(&self) -> Vec<(Item, u64)> {
        let mut v: Vec<(Item, u64)> = self
            .stars
            .iter()
            .filter(|(_, (_, on))| *on)
            .map(|(i, (s, _))| (*i, s.at.ms()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// `item`'s rating, 0 when it has none.
    pub fn rating(&self, item: &Item) -> u8 {
        self.ratings.get(item).map_or(0, |(_, r)| *r)
    }

    /// Every rated item, with its rating.
    pub fn ratings(&self) -> Vec<(Item, u8)> {
        let mut v: Vec<(Item, u8)> = self
            .ratings
            .iter()
            .filter(|(_, (_, r))| *r > 0)
            .map(|(i, (_, r))| (*i, *r))
            .collect();
        v.sort();
        v
    }

    /// A track's plays summed up.
    pub fn play_stats(&self, track: &TrackId) -> PlayStats {
        self.stats.get(track).copied().unwrap_or_default()
    }

    /// The most played tracks, most first (then the latest played).
    pub fn most_played(&self, limit: usize) -> Vec<(TrackId, PlayStats)> {
        let mut v: Vec<(TrackId, PlayStats)> = self.stats.iter().map(|(t, s)| (*t, *s)).collect();
        v.sort_by_key(|(t, s)| std::cmp::Reverse((s.count, s.last_ms, *t)));
        v.truncate(limit);
        v
    }

    /// The latest plays by their start time, latest first.
    pub fn recent_plays(&self, limit: usize) -> Vec<(super::op::OpId, Play)> {
        self.plays
            .iter()
            .rev()
            .take(limit)
            .map(|((_, id), p)| (*id, *p))
            .collect()
    }

    /// Plays in all.
    pub fn play_count(&self) -> usize {
        self.plays.len()
    }

    /// Every playlist made and not deleted, by name.
    pub fn playlists(&self) -> Vec<PlaylistView> {
        let mut v: Vec<PlaylistView> = self
            .playlists
            .keys()
            .filter_map(|id| self.playlist(id))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        v
    }

    /// One playlist, with its entries in order; `None` when it is unknown
    /// or deleted.
    pub fn playlist(&self, id: &PlaylistId) -> Option<PlaylistView> {
        let pl = self.playlists.get(id)?;
        let created = pl.created?;
        if pl.deleted {
            return None;
        }
        let mut entries: Vec<EntryView> = pl
            .entries
            .iter()
            .filter(|(_, e)| !e.removed)
            .filter_map(|(id, e)| {
                Some(EntryView {
                    id: *id,
                    track: e.track?,
                    position: e.position.as_ref()?.1.clone(),
                })
            })
            .collect();
        entries.sort_by(|a, b| a.position.cmp(&b.position).then(a.id.cmp(&b.id)));
        Some(PlaylistView {
            id: *id,
            name: pl.name.as_ref().map(|(_, n)| n.clone()).unwrap_or_default(),
            comment: pl
                .comment
                .as_ref()
                .map(|(_, c)| c.clone())
                .unwrap_or_default(),
            created_ms: created.at.ms(),
            changed_ms: pl.changed.map_or(0, |s| s.at.ms()),
            entries,
        })
    }

    /// The play queue, with when it was saved (UTC ms) and by whom.
    pub fn queue(&self) -> Option<(Stamp, &Queue)> {
        self.queue.as_ref().map(|(s, q)| (*s, q))
    }
}
