//! The JSON shapes of the owner's shared state: stars, ratings, plays,
//! playlists and the play queue (requests and answers).

use super::{AlbumView, ArtistView, TrackView};
use crate::model::TrackId;
use serde::{Deserialize, Serialize};

/// `POST /api/star`, `/api/unstar`: items by id or unique prefix (tracks,
/// albums, artists; `album:`/`artist:` in front picks the kind).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StarRequest {
    /// The items.
    pub ids: Vec<String>,
}

/// `POST /api/rate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateRequest {
    /// The item, by id or unique prefix.
    pub id: String,
    /// 1–5; 0 clears.
    pub rating: u8,
}

/// What a star, unstar or rating changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemsChanged {
    /// The items, resolved (`track:…`, `album:…`, `artist:…`, whole ids).
    pub items: Vec<String>,
}

/// `POST /api/plays`: a play, with when it really started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayRequest {
    /// The track, by id or unique prefix.
    pub id: String,
    /// When it started (UTC ms); now when absent.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// How long it played; the whole track when absent.
    #[serde(default)]
    pub ms_played: Option<u32>,
}

/// An item starred, rated or played that no device holds now (its state
/// is kept; it shows again when a device has the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsentItem {
    /// `track:…`, `album:…` or `artist:…`.
    pub item: String,
    /// When it was starred (UTC ms).
    pub starred_at_ms: Option<u64>,
}

/// `GET /api/starred`: starred tracks, albums and artists, latest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StarredView<'a> {
    /// Tracks.
    pub tracks: Vec<TrackView<'a>>,
    /// Albums.
    pub albums: Vec<AlbumView>,
    /// Artists.
    pub artists: Vec<ArtistView>,
    /// Starred items the merged library does not hold now.
    pub absent: Vec<AbsentItem>,
}

/// A track's plays, summed up (`GET /api/plays`, most played).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayedView<'a> {
    /// The track id.
    #[serde(with = "super::hex")]
    pub id: TrackId,
    /// Plays on every device.
    pub count: u64,
    /// When the latest started (UTC ms).
    pub last_played_ms: i64,
    /// Time played in all.
    pub total_ms: u64,
    /// The track, when the merged library holds it.
    pub track: Option<TrackView<'a>>,
}

/// One play (`GET /api/plays`, recent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayEventView<'a> {
    /// The track id.
    #[serde(with = "super::hex")]
    pub id: TrackId,
    /// When it started (UTC ms).
    pub started_ms: i64,
    /// How long it played.
    pub ms_played: u32,
    /// The device it was played on.
    pub device: String,
    /// The track, when the merged library holds it.
    pub track: Option<TrackView<'a>>,
}

/// `GET /api/plays`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaysView<'a> {
    /// Most played first.
    pub most: Vec<PlayedView<'a>>,
    /// Latest first, by when they started.
    pub recent: Vec<PlayEventView<'a>>,
    /// Plays in all.
    pub total: usize,
}

/// A playlist in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaylistSummary {
    /// Its id (`<device>-<n>`: the device that made it, and its operation).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its comment.
    pub comment: String,
    /// Entries in it.
    pub entry_count: usize,
    /// When it was made (UTC ms).
    pub created_ms: u64,
    /// When it last changed.
    pub changed_ms: u64,
}

/// One entry of a playlist.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaylistEntryView<'a> {
    /// The entry's id (a track may be in a playlist twice).
    pub entry: String,
    /// Its place, from 1.
    pub position: usize,
    /// The track id.
    #[serde(with = "super::hex")]
    pub id: TrackId,
    /// The track, when the merged library holds it.
    pub track: Option<TrackView<'a>>,
}

/// `GET /api/playlists/{id}`: a playlist with its entries in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaylistPage<'a> {
    /// What the listing shows.
    #[serde(flatten)]
    pub playlist: PlaylistSummary,
    /// Total time of the entries the library holds.
    pub duration_ms: u64,
    /// The entries.
    pub entries: Vec<PlaylistEntryView<'a>>,
}

/// `POST /api/playlists`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePlaylist {
    /// Its name.
    pub name: String,
    /// Tracks to start with.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// `PATCH /api/playlists/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditPlaylist {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new comment.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `POST /api/playlists/{id}/entries`: tracks added at the end, or before
/// position `at` (from 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddEntries {
    /// The tracks, by id or unique prefix.
    pub ids: Vec<String>,
    /// Where.
    #[serde(default)]
    pub at: Option<usize>,
}

/// `POST /api/playlists/{id}/move`: the entry at `from` (or entry `entry`)
/// to position `to` (positions from 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveEntry {
    /// The entry's position now.
    #[serde(default)]
    pub from: Option<usize>,
    /// Or its id.
    #[serde(default)]
    pub entry: Option<String>,
    /// Where it goes.
    pub to: usize,
}

/// `POST /api/playlists/{id}/remove`: entries by position (against the
/// playlist as it is) and/or by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveEntries {
    /// Positions, from 1.
    #[serde(default)]
    pub positions: Vec<usize>,
    /// Entry ids.
    #[serde(default)]
    pub entries: Vec<String>,
}

/// `PUT /api/queue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueRequest {
    /// The tracks, by id or unique prefix.
    pub ids: Vec<String>,
    /// The index of the current one.
    #[serde(default)]
    pub current: u32,
    /// How far into it.
    #[serde(default)]
    pub position_ms: u64,
}

/// `GET /api/queue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueView<'a> {
    /// The track ids, in order.
    pub ids: Vec<String>,
    /// The index of the current one.
    pub current: u32,
    /// How far into it.
    pub position_ms: u64,
    /// When it was saved (UTC ms); 0 when never.
    pub changed_ms: u64,
    /// The device that saved it.
    pub changed_by: String,
    /// The tracks the merged library holds, in order.
    pub tracks: Vec<TrackView<'a>>,
}
