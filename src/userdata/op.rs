//! Operations: what one device did to the owner's state, as it is logged,
//! signed (by `mesh`) and sent. Each carries its device, a sequence number
//! (1, 2, 3… per device, no gaps) and a hybrid logical clock time.

use super::hlc::Hlc;
use super::position::Position;
use crate::catalog::{AlbumId, ArtistId};
use crate::mesh::DeviceId;
use crate::model::TrackId;
use std::collections::BTreeMap;
use std::fmt;

/// Most tracks in one playlist addition or one play queue.
pub const MAX_TRACKS: usize = 5000;
/// Longest playlist name or comment kept (characters).
pub const MAX_TEXT: usize = 1000;

/// One operation, by the device and number it was made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    /// The device that made it.
    pub device: DeviceId,
    /// Its number on that device, from 1.
    pub seq: u64,
}

/// When an operation was made, as last-writer-wins compares them: by clock
/// time, then by device (two devices never share a stamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The hybrid logical clock time.
    pub at: Hlc,
    /// The device.
    pub device: DeviceId,
}

/// What a star or a rating is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// A track, by its content hash.
    Track(TrackId),
    /// An album of the catalog.
    Album(AlbumId),
    /// An artist of the catalog.
    Artist(ArtistId),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Track(t) => write!(f, "track {t}"),
            Item::Album(a) => write!(f, "album {a}"),
            Item::Artist(a) => write!(f, "artist {a}"),
        }
    }
}

/// A playlist: named by the operation that created it.
pub type PlaylistId = OpId;

/// One entry of a playlist: the addition that made it and its place in it
/// (an addition may add several tracks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The addition.
    pub op: OpId,
    /// Which of its tracks.
    pub index: u32,
}

/// A play: a track listened to, from when, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Play {
    /// The track.
    pub track: TrackId,
    /// When it started playing, in UTC ms since the Unix epoch (the real
    /// time, also for plays recorded offline and sent later).
    pub started_ms: i64,
    /// How long it played.
    pub ms_played: u32,
}

/// What the play queue holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Queue {
    /// The tracks, in order.
    pub tracks: Vec<TrackId>,
    /// The index of the current one.
    pub current: u32,
    /// How far into it.
    pub position_ms: u64,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Star or unstar an item.
    Star {
        /// The item.
        item: Item,
        /// Starred (true) or not.
        starred: bool,
    },
    /// Rate an item, 1–5; 0 clears the rating.
    Rate {
        /// The item.
        item: Item,
        /// 0–5.
        rating: u8,
    },
    /// A play happened.
    Play(Play),
    /// Make a playlist (its id is this operation's).
    CreatePlaylist {
        /// Its name.
        name: String,
    },
    /// Change a playlist's name and/or comment.
    EditPlaylist {
        /// The playlist.
        playlist: PlaylistId,
        /// Its new name.
        name: Option<String>,
        /// Its new comment.
        comment: Option<String>,
    },
    /// Delete a playlist, for good.
    DeletePlaylist {
        /// The playlist.
        playlist: PlaylistId,
    },
    /// Add tracks to a playlist, each at its position (entry ids are this
    /// operation's id and the track's index here).
    AddEntries {
        /// The playlist.
        playlist: PlaylistId,
        /// The tracks and their positions.
        entries: Vec<(TrackId, Position)>,
    },
    /// Move an entry.
    MoveEntry {
        /// The playlist.
        playlist: PlaylistId,
        /// The entry.
        entry: EntryId,
        /// Its new position.
        position: Position,
    },
    /// Remove entries, for good (a concurrent move does not bring them back).
    RemoveEntries {
        /// The playlist.
        playlist: PlaylistId,
        /// The entries.
        entries: Vec<EntryId>,
    },
    /// Replace the play queue.
    SetQueue(Queue),
}

impl Body {
    /// Why a body received from a member cannot be applied, if it cannot
    /// (the limits every body must respect).
    pub fn check(&self) -> Result<(), String> {
        let text = |s: &str| {
            if s.chars().count() > MAX_TEXT {
                Err(format!("a text of over {MAX_TEXT} characters"))
            } else {
                Ok(())
            }
        };
        match self {
            Body::Rate { rating, .. } if *rating > 5 => Err(format!("rating {rating} is over 5")),
            Body::CreatePlaylist { name } => text(name),
            Body::EditPlaylist { name, comment, .. } => {
                text(name.as_deref().unwrap_or(""))?;
                text(comment.as_deref().unwrap_or(""))
            }
            Body::AddEntries { entries, .. } if entries.len() > MAX_TRACKS => {
                Err(format!("over {MAX_TRACKS} tracks at once"))
            }
            Body::RemoveEntries { entries, .. } if entries.len() > MAX_TRACKS => {
                Err(format!("over {MAX_TRACKS} entries at once"))
            }
            Body::SetQueue(q) if q.tracks.len() > MAX_TRACKS => {
                Err(format!("a queue of over {MAX_TRACKS} tracks"))
            }
            _ => Ok(()),
        }
    }
}

/// An operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Who made it and its number there.
    pub id: OpId,
    /// When (the clock time; `Stamp` adds the device).
    pub at: Hlc,
    /// What it does.
    pub body: Body,
}

impl Op {
    /// Its last-writer-wins stamp.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            at: self.at,
            device: self.id.device,
        }
    }
}

/// An operation as received or made: decoded, with the signed bytes it
/// travels and is stored as.
#[derive(Debug, Clone)]
pub struct SignedOp {
    /// The operation.
    pub op: Op,
    /// The signed envelope (opaque here: `mesh` makes and checks it).
    pub wire: Vec<u8>,
}

/// The highest sequence number held of each device: what a member has,
/// in a few bytes per device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector(pub BTreeMap<DeviceId, u64>);

impl VersionVector {
    /// The highest number held of `device` (0: none).
    pub fn get(&self, device: &DeviceId) -> u64 {
        self.0.get(device).copied().unwrap_or(0)
    }

    /// Does this hold something `other` lacks?
    pub fn has_beyond(&self, other: &VersionVector) -> bool {
        self.0.iter().any(|(d, &n)| n > other.get(d))
    }
}

impl fmt::Display for OpId {
    /// `<device>-<seq>` (device ids hold no `-`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.device, self.seq)
    }
}

impl std::str::FromStr for OpId {
    type Err = String;
    fn from_str(s: &str) -> Result<OpId, String> {
        let bad = || format!("{s:?} is not a playlist or entry id");
        let (d, n) = s.trim().rsplit_once('-').ok_or_else(bad)?;
        Ok(OpId {
            device: d.parse().map_err(|_| bad())?,
            seq: n.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for EntryId {
    /// `<device>-<seq>-<index>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.op, self.index)
    }
}

impl std::str::FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> Result<EntryId, String> {
        let (op, i) = s
            .trim()
            .rsplit_once('-')
            .ok_or_else(|| format!("{s:?} is not an entry id"))?;
        Ok(EntryId {
            op: op.parse()?,
            index: i.parse().map_err(|_| format!("{s:?} is not an entry id"))?,
        })
    }
}
