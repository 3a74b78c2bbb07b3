//! The catalog: the merged library of every member (this device included),
//! with albums and artists across all of them, in memory and kept up to
//! date incrementally as the index and the syncs change it.
//!
//! Every surface that lists music (HTTP API, CLI, the web player and
//! Subsonic API to come) reads it here: one sort key ([`sort_key`]), one
//! id-prefix resolver ([`id::Prefix`]), one search, paged queries that cost
//! the page (plus a walk over the albums before it), not the library.
//!
//! Compact on purpose: a track is a small entry (id, holders as a bit
//! mask, album, disc/number, a title key, its search document), never its
//! whole record; a page's records are read from the index by the node.
//! The track order is the albums' order (album artist, then title) and,
//! within an album, disc, number and title, so no order key per track is
//! kept. About 250 bytes a track, most of it the search document
//! (heaptrack, 100k tracks: 25 MB).
//!
//! Album and artist ids ([`AlbumId`], [`ArtistId`]) are derived from folded
//! names, so the same album held by two devices is one album and keeps its
//! id across runs and devices.
//!
//! Must never: touch sled, files or the mesh (the node feeds it tracks and
//! tells it who is online), or block for longer than one batch of updates
//! (readers share a lock with the updater).

mod docs;
pub mod id;
mod state;

pub use id::{AlbumId, ArtistId, IdError, Prefix};

use crate::index::search::{self, Query};
use crate::mesh::DeviceId;
use crate::model::{CoverId, Track, TrackId};
use state::State;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The key names and titles sort by: folded (case and accents ignored,
/// punctuation as spaces) with a leading article dropped, as record shops
/// file "The Beatles" under B.
pub fn sort_key(s: &str) -> String {
    let f = search::normalize(s);
    for article in ["the ", "a ", "an "] {
        if let Some(rest) = f.strip_prefix(article) {
            if !rest.is_empty() {
                return rest.to_string();
            }
        }
    }
    f
}

/// A track's place in the library order: album artist, album, disc,
/// number, title (by [`sort_key`]). Every listing of tracks sorts this
/// way, the catalog and the CLI offline alike (ties: by id).
pub fn track_order(t: &Track) -> Box<[u8]> {
    let g = &t.tags;
    let mut v = Vec::new();
    for (i, part) in [
        sort_key(&g.album_owner()).into_bytes(),
        sort_key(&g.album).into_bytes(),
        disc_of(t).to_be_bytes().to_vec(),
        number_of(t).to_be_bytes().to_vec(),
        sort_key(&g.title).into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            v.push(0);
        }
        v.extend(part);
    }
    v.into_boxed_slice()
}

/// No disc number is disc 1.
fn disc_of(t: &Track) -> u32 {
    t.tags.disc.unwrap_or(1)
}

/// Tracks without a number go last on their disc.
fn number_of(t: &Track) -> u32 {
    t.tags.track.unwrap_or(u32::MAX)
}

/// A slice of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items to skip.
    pub offset: usize,
    /// Most items to return.
    pub limit: usize,
}

impl Page {
    /// Everything.
    pub const ALL: Page = Page {
        offset: 0,
        limit: usize::MAX,
    };
}

/// A page of a listing and the size of the whole listing.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    /// Items in the whole listing.
    pub total: usize,
    /// The page's items, in order.
    pub items: Vec<T>,
}

/// How albums are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlbumSort {
    /// By title, then artist.
    Name,
    /// By artist, then title.
    Artist,
    /// By year (albums without one last), then artist and title.
    Year,
    /// Most recently added first (first seen by this device).
    Added,
}

/// A track of the merged library: its id, album and holders. Its record
/// is the index's (this device's own, or the first holder's as synced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTrack {
    /// The track.
    pub id: TrackId,
    /// The album it belongs to, if it names one.
    pub album: Option<AlbumId>,
    /// Devices holding the bytes, in the order devices were first seen by
    /// this catalog (this device first once it has given its own tracks).
    pub holders: Vec<DeviceId>,
}

/// An album of the merged library.
#[derive(Debug, Clone)]
pub struct AlbumInfo {
    /// Stable id.
    pub id: AlbumId,
    /// Title, as the first track seen spells it.
    pub name: String,
    /// Album artist (else the artist) of that track.
    pub artist: String,
    /// Id of that artist.
    pub artist_id: ArtistId,
    /// Year of the first track seen that has one.
    pub year: Option<u32>,
    /// Cover of the first track seen that has one.
    pub cover: Option<CoverId>,
    /// Genres of its tracks, first seen first.
    pub genres: Vec<String>,
    /// Number of tracks.
    pub tracks: usize,
    /// Sum of the tracks' durations.
    pub duration_ms: u64,
    /// Every device holding at least one of its tracks.
    pub holders: Vec<DeviceId>,
    /// When this device first saw it (UTC ms).
    pub added_ms: u64,
}

/// An artist of the merged library (an album artist, or the artist of
/// albums without one).
#[derive(Debug, Clone)]
pub struct ArtistInfo {
    /// Stable id.
    pub id: ArtistId,
    /// Name as first seen.
    pub name: String,
    /// Albums filed under the artist.
    pub albums: usize,
    /// Tracks on those albums.
    pub tracks: usize,
}

/// What a search found, best first in each kind.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Matching tracks (title, artist or album).
    pub tracks: Vec<CatalogTrack>,
    /// Matching albums (title).
    pub albums: Vec<AlbumInfo>,
    /// Matching artists (name).
    pub artists: Vec<ArtistInfo>,
}

/// The merged library. Shared by reference (`Arc<Catalog>`); every method
/// takes `&self`.
pub struct Catalog {
    state: RwLock<State>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog {
            state: RwLock::new(State::default()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `device` now holds `put` and no longer holds `remove`. Tracks no
    /// device holds any more leave the catalog, and with them albums and
    /// artists nothing is left of. The records themselves are not kept.
    ///
    /// Returns the albums seen for the first time (with the time, unix
    /// ms): the caller stores them and gives them back through
    /// [`Catalog::remember_first_seen`] after a restart.
    pub fn apply(
        &self,
        device: DeviceId,
        put: Vec<Track>,
        remove: &[TrackId],
    ) -> Vec<(AlbumId, u64)> {
        let mut s = self.write();
        let Some(slot) = s.device_slot(device) else {
            tracing::warn!(%device, "more than 64 devices: its tracks are not listed");
            return vec![];
        };
        for id in remove {
            s.drop_holder(id, slot);
        }
        for t in &put {
            s.add(t, slot);
        }
        std::mem::take(&mut s.fresh)
    }

    /// Give back spare capacity once a batch of changes is complete (a
    /// whole sync, a rescan): never per group, or the next group's growth
    /// would copy the tables again.
    pub fn settle(&self) {
        self.write().shrink();
    }

    /// First-seen times stored earlier (before any [`Catalog::apply`]), so
    /// "recently added" survives restarts.
    pub fn remember_first_seen(&self, seen: impl IntoIterator<Item = (AlbumId, u64)>) {
        self.write().first_seen.extend(seen);
    }

    /// Forget everything `device` held (a removed member).
    pub fn forget(&self, device: DeviceId) {
        self.write().forget(device);
    }

    /// Tracks in the catalog.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// No tracks at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One track by whole id.
    pub fn track(&self, id: &TrackId) -> Option<CatalogTrack> {
        let s = self.read();
        s.view(s.slot_of(id)?)
    }

    /// The one track whose id starts with `prefix`.
    pub fn resolve(&self, prefix: &Prefix) -> Result<TrackId, IdError> {
        let (lo, hi) = prefix.bounds();
        prefix.pick(self.read().ids_within(&lo, &hi).into_iter())
    }

    /// Tracks in library order: album artist, album, disc, number, title.
    pub fn tracks(&self, page: Page) -> Paged<CatalogTrack> {
        let s = self.read();
        Paged {
            total: s.len(),
            items: s.track_page(page),
        }
    }

    /// Albums in the order asked for.
    pub fn albums(&self, sort: AlbumSort, page: Page) -> Paged<AlbumInfo> {
        let s = self.read();
        let order = &s.album_orders[sort as usize];
        let items = order
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .map(|(_, a)| s.album_info(*a))
            .collect();
        Paged {
            total: order.len(),
            items,
        }
    }

    /// One album and its tracks in disc/track order.
    pub fn album(&self, id: &AlbumId) -> Option<(AlbumInfo, Vec<CatalogTrack>)> {
        let s = self.read();
        let a = *s.album_slot.get(id)?;
        let tracks = s.albums[a as usize]
            .as_ref()?
            .tracks
            .iter()
            .filter_map(|e| s.view(*e))
            .collect();
        Some((s.album_info(a), tracks))
    }

    /// Artists by name.
    pub fn artists(&self, page: Page) -> Paged<ArtistInfo> {
        let s = self.read();
        let items = s
            .artist_order
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .filter_map(|(_, id)| s.artist_info(id))
            .collect();
        Paged {
            total: s.artist_order.len(),
            items,
        }
    }

    /// One artist and its albums by title.
    pub fn artist(&self, id: &ArtistId) -> Option<(ArtistInfo, Vec<AlbumInfo>)> {
        let s = self.read();
        let info = s.artist_info(id)?;
        let mut albums: Vec<(&[u8], u32)> = s.artists[id]
            .albums
            .iter()
            .filter_map(|a| {
                let e = s.albums[*a as usize].as_ref()?;
                Some((&e.keys[AlbumSort::Name as usize][..], *a))
            })
            .collect();
        albums.sort();
        Some((
            info,
            albums.into_iter().map(|(_, a)| s.album_info(a)).collect(),
        ))
    }

    /// Tracks, albums and artists matching every word of `query` (case and
    /// accents ignored), best first, at most `limit` of each kind.
    pub fn search(&self, query: &str, limit: usize) -> Found {
        let q = Query::new(query);
        if q.is_empty() {
            return Found::default();
        }
        self.read().search(&q, limit)
    }

    /// Albums whose id starts with `prefix`'s digits (to resolve a short
    /// album id; a linear pass, as albums are few beside tracks).
    pub fn albums_with(&self, prefix: &Prefix) -> Vec<AlbumId> {
        let s = self.read();
        s.album_slot
            .keys()
            .filter(|id| id.to_hex().starts_with(prefix.as_str()))
            .copied()
            .collect()
    }

    /// Artists whose id starts with `prefix`'s digits.
    pub fn artists_with(&self, prefix: &Prefix) -> Vec<ArtistId> {
        let s = self.read();
        s.artists
            .keys()
            .filter(|id| id.to_hex().starts_with(prefix.as_str()))
            .copied()
            .collect()
    }

    /// Every device holding a track of an album whose cover is `id` (to
    /// fetch the cover from).
    pub fn cover_holders(&self, id: &CoverId) -> Vec<DeviceId> {
        self.read().cover_holders(id)
    }
}

#[cfg(test)]
mod tests;
