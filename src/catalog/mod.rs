//! The catalog: the merged library of every member (this device included),
//! with albums and artists across all of them, in memory and kept up to
//! date incrementally as the index and the syncs change it.
//!
//! Every surface that lists music (HTTP API, CLI, the web player and
//! Subsonic API to come) reads it here: one sort key ([`sort_key`]), one
//! id-prefix resolver ([`id::Prefix`]), one search, paged queries that cost
//! the page (plus a skip over the offset), not the library.
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

pub use id::{AlbumId, ArtistId, IdError, Prefix};

use crate::index::search::{self, Query};
use crate::mesh::DeviceId;
use crate::model::{CoverId, Track, TrackId};
use docs::Docs;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

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

impl AlbumSort {
    const ALL: [AlbumSort; 4] = [
        AlbumSort::Name,
        AlbumSort::Artist,
        AlbumSort::Year,
        AlbumSort::Added,
    ];
}

/// A track of the merged library and the devices holding it.
#[derive(Debug, Clone)]
pub struct CatalogTrack {
    /// The track as its first holder described it (this device's own
    /// record when it holds the track, with its paths; others without).
    pub track: Arc<Track>,
    /// The album it belongs to, if it names one.
    pub album: Option<AlbumId>,
    /// Devices holding the bytes, this device first when it is one.
    pub holders: Vec<DeviceId>,
}

/// An album of the merged library.
#[derive(Debug, Clone)]
pub struct AlbumInfo {
    /// Stable id.
    pub id: AlbumId,
    /// Title, as the album's first track spells it.
    pub name: String,
    /// Album artist (else the artist) of the first track.
    pub artist: String,
    /// Id of that artist.
    pub artist_id: ArtistId,
    /// Year of the first track that has one.
    pub year: Option<u32>,
    /// Cover of the first track that has one.
    pub cover: Option<CoverId>,
    /// Genres over all its tracks, first seen first.
    pub genres: Vec<String>,
    /// Number of tracks.
    pub tracks: usize,
    /// Sum of the tracks' durations.
    pub duration_ms: u64,
    /// Every device holding at least one of its tracks.
    pub holders: Vec<DeviceId>,
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

/// One track in the catalog.
struct Item {
    track: Arc<Track>,
    /// Slots (into `State::devices`) of the devices holding it.
    holders: Vec<u16>,
    album: Option<AlbumId>,
    /// Its place in the track order (shared with the order sets: one
    /// copy per track).
    order: Arc<[u8]>,
}

struct AlbumEntry {
    /// Tracks by their place in the track order (disc, number, title
    /// within the album).
    tracks: BTreeSet<(Arc<[u8]>, TrackId)>,
    /// When this device first saw it (unix ms), for [`AlbumSort::Added`].
    added: u64,
    /// Creation order in this catalog: ties of `added` newest first.
    seq: u64,
    /// Its keys in each of `State::album_orders`, as last inserted.
    keys: [Box<[u8]>; 4],
    artist: ArtistId,
}

struct ArtistEntry {
    name: String,
    albums: BTreeSet<AlbumId>,
    tracks: usize,
    key: Box<[u8]>,
}

#[derive(Default)]
struct State {
    devices: Vec<DeviceId>,
    items: BTreeMap<TrackId, Item>,
    order: BTreeSet<(Arc<[u8]>, TrackId)>,
    albums: HashMap<AlbumId, AlbumEntry>,
    album_orders: [BTreeSet<(Box<[u8]>, AlbumId)>; 4],
    artists: HashMap<ArtistId, ArtistEntry>,
    artist_order: BTreeSet<(Box<[u8]>, ArtistId)>,
    track_docs: Docs<TrackId>,
    album_docs: Docs<AlbumId>,
    artist_docs: Docs<ArtistId>,
    /// Albums created so far (for `AlbumEntry::seq`).
    seq: u64,
    /// When albums were first seen: stored ones (given at start) and new.
    first_seen: HashMap<AlbumId, u64>,
    /// First-seen times not yet handed back by `apply` for storing.
    fresh: Vec<(AlbumId, u64)>,
}

/// The merged library. Shared by reference (`Arc<Catalog>`); every method
/// takes `&self`.
pub struct Catalog {
    state: RwLock<State>,
}

fn cat(parts: &[&[u8]]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v.into_boxed_slice()
}

/// The `limit` best hits: highest score first, equal scores by id (the
/// same on every device). Selects before it sorts: a broad query matches
/// most of the library, and only a page of it is wanted.
fn best<K: Ord + Copy>(mut hits: Vec<(K, u32)>, limit: usize) -> Vec<K> {
    let rank = |a: &(K, u32), b: &(K, u32)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if limit == 0 {
        return vec![];
    }
    if hits.len() > limit {
        hits.select_nth_unstable_by(limit - 1, rank);
        hits.truncate(limit);
    }
    hits.sort_unstable_by(rank);
    hits.into_iter().map(|(k, _)| k).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A track's place in the library order: album artist, album, disc,
/// number, title (by [`sort_key`]). Ties: by id. Every listing of tracks
/// sorts by this, the catalog and the CLI offline alike.
pub fn track_order(t: &Track) -> Box<[u8]> {
    let g = &t.tags;
    cat(&[
        sort_key(&g.album_owner()).as_bytes(),
        sort_key(&g.album).as_bytes(),
        // No disc number is disc 1; tracks without a number go last.
        &g.disc.unwrap_or(1).to_be_bytes(),
        &g.track.unwrap_or(u32::MAX).to_be_bytes(),
        sort_key(&g.title).as_bytes(),
    ])
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
    /// artists nothing is left of. Only this device's own tracks keep
    /// their paths ([`Paths::Keep`]): others' mean nothing here and cost
    /// memory.
    ///
    /// Returns the albums seen for the first time (with the time, unix
    /// ms): the caller stores them and gives them back through
    /// [`Catalog::remember_first_seen`] after a restart.
    pub fn apply(
        &self,
        device: DeviceId,
        put: Vec<Track>,
        remove: &[TrackId],
        paths: Paths,
    ) -> Vec<(AlbumId, u64)> {
        let mut s = self.write();
        let slot = s.slot(device);
        for id in remove {
            s.drop_holder(id, slot);
        }
        for mut t in put {
            if paths == Paths::Drop {
                t.paths = Vec::new();
            }
            s.add(t, slot, paths);
        }
        std::mem::take(&mut s.fresh)
    }

    /// First-seen times stored earlier (before any [`Catalog::apply`]), so
    /// "recently added" survives restarts.
    pub fn remember_first_seen(&self, seen: impl IntoIterator<Item = (AlbumId, u64)>) {
        self.write().first_seen.extend(seen);
    }

    /// Forget everything `device` held (a removed member).
    pub fn forget(&self, device: DeviceId) {
        let mut s = self.write();
        let Some(slot) = s.devices.iter().position(|d| *d == device) else {
            return;
        };
        let held: Vec<TrackId> = s
            .items
            .iter()
            .filter(|(_, it)| it.holders.contains(&(slot as u16)))
            .map(|(id, _)| *id)
            .collect();
        for id in &held {
            s.drop_holder(id, slot as u16);
        }
    }

    /// Tracks in the catalog.
    pub fn len(&self) -> usize {
        self.read().items.len()
    }

    /// No tracks at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One track by whole id.
    pub fn track(&self, id: &TrackId) -> Option<CatalogTrack> {
        let s = self.read();
        s.items.get(id).map(|it| s.view(it))
    }

    /// The one track whose id starts with `prefix`.
    pub fn resolve(&self, prefix: &Prefix) -> Result<TrackId, IdError> {
        let (lo, hi) = prefix.bounds();
        prefix.pick(self.read().items.range(lo..=hi).map(|(id, _)| *id))
    }

    /// Every device holding a track whose cover is `id` (to fetch it from).
    pub fn cover_holders(&self, id: &CoverId) -> Vec<DeviceId> {
        let s = self.read();
        let mut slots: Vec<u16> = vec![];
        for it in s
            .items
            .values()
            .filter(|it| it.track.cover.as_ref() == Some(id))
        {
            for h in &it.holders {
                if !slots.contains(h) {
                    slots.push(*h);
                }
            }
        }
        slots.into_iter().map(|h| s.devices[h as usize]).collect()
    }

    /// Tracks in library order: album artist, album, disc, number, title.
    pub fn tracks(&self, page: Page) -> Paged<CatalogTrack> {
        let s = self.read();
        let items = s
            .order
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .filter_map(|(_, id)| s.items.get(id).map(|it| s.view(it)))
            .collect();
        Paged {
            total: s.items.len(),
            items,
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
            .filter_map(|(_, id)| s.album_info(id))
            .collect();
        Paged {
            total: s.albums.len(),
            items,
        }
    }

    /// One album and its tracks in disc/track order.
    pub fn album(&self, id: &AlbumId) -> Option<(AlbumInfo, Vec<CatalogTrack>)> {
        let s = self.read();
        let info = s.album_info(id)?;
        let tracks = s.albums[id]
            .tracks
            .iter()
            .filter_map(|(_, t)| s.items.get(t).map(|it| s.view(it)))
            .collect();
        Some((info, tracks))
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
            total: s.artists.len(),
            items,
        }
    }

    /// One artist and its albums by title.
    pub fn artist(&self, id: &ArtistId) -> Option<(ArtistInfo, Vec<AlbumInfo>)> {
        let s = self.read();
        let info = s.artist_info(id)?;
        let mut albums: Vec<(&[u8], AlbumInfo)> = s.artists[id]
            .albums
            .iter()
            .filter_map(|a| {
                let key = &s.albums.get(a)?.keys[AlbumSort::Name as usize];
                Some((&key[..], s.album_info(a)?))
            })
            .collect();
        albums.sort_by(|a, b| a.0.cmp(b.0));
        Some((info, albums.into_iter().map(|(_, a)| a).collect()))
    }

    /// Tracks, albums and artists matching every word of `query` (case and
    /// accents ignored), best first, at most `limit` of each kind.
    pub fn search(&self, query: &str, limit: usize) -> Found {
        let q = Query::new(query);
        if q.is_empty() {
            return Found::default();
        }
        let s = self.read();
        let tracks = best(s.track_docs.matches(&q), limit)
            .into_iter()
            .filter_map(|id| s.items.get(&id).map(|it| s.view(it)))
            .collect();
        let albums = best(s.album_docs.matches(&q), limit)
            .into_iter()
            .filter_map(|a| s.album_info(&a))
            .collect();
        let artists = best(s.artist_docs.matches(&q), limit)
            .into_iter()
            .filter_map(|a| s.artist_info(&a))
            .collect();
        Found {
            tracks,
            albums,
            artists,
        }
    }
}

/// Whether a device's track paths are kept in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    /// This device's own tracks: their paths are where to play them from.
    Keep,
    /// Another device's: the paths mean nothing here.
    Drop,
}

impl State {
    fn slot(&mut self, d: DeviceId) -> u16 {
        match self.devices.iter().position(|x| *x == d) {
            Some(i) => i as u16,
            None => {
                self.devices.push(d);
                (self.devices.len() - 1) as u16
            }
        }
    }

    fn view(&self, it: &Item) -> CatalogTrack {
        CatalogTrack {
            track: it.track.clone(),
            album: it.album,
            holders: it
                .holders
                .iter()
                .map(|&h| self.devices[h as usize])
                .collect(),
        }
    }

    fn add(&mut self, t: Track, slot: u16, paths: Paths) {
        if let Some(it) = self.items.get_mut(&t.id) {
            if !it.holders.contains(&slot) {
                it.holders.push(slot);
            }
            // This device's record wins: it has the paths to play from.
            if paths == Paths::Keep {
                it.holders.retain(|&h| h != slot);
                it.holders.insert(0, slot);
                it.track = Arc::new(t);
            }
            return;
        }
        let id = t.id;
        let order: Arc<[u8]> = Arc::from(track_order(&t));
        let album = AlbumId::of(&t.tags);
        self.order.insert((order.clone(), id));
        self.track_docs.put(
            id,
            &search::document(&t.tags.title, &t.tags.artist(), &t.tags.album),
        );
        if let Some(a) = album {
            self.album_add(a, &t, &order);
        }
        self.items.insert(
            id,
            Item {
                track: Arc::new(t),
                holders: vec![slot],
                album,
                order,
            },
        );
        if let Some(a) = album {
            self.album_refresh(&a);
        }
    }

    fn drop_holder(&mut self, id: &TrackId, slot: u16) {
        let Some(it) = self.items.get_mut(id) else {
            return;
        };
        it.holders.retain(|&h| h != slot);
        if !it.holders.is_empty() {
            return;
        }
        let Some(it) = self.items.remove(id) else {
            return;
        };
        self.order.remove(&(it.order.clone(), *id));
        self.track_docs.remove(id);
        if let Some(a) = it.album {
            self.album_remove(&a, &it);
        }
    }

    fn album_add(&mut self, a: AlbumId, t: &Track, order: &Arc<[u8]>) {
        let owner = t.tags.album_owner();
        let artist = ArtistId::of(&owner);
        if !self.albums.contains_key(&a) {
            let added = match self.first_seen.get(&a) {
                Some(ms) => *ms,
                None => {
                    let now = now_ms();
                    self.first_seen.insert(a, now);
                    self.fresh.push((a, now));
                    now
                }
            };
            self.seq += 1;
            let e = AlbumEntry {
                tracks: BTreeSet::new(),
                added,
                seq: self.seq,
                keys: Default::default(),
                artist,
            };
            self.albums.insert(a, e);
        }
        let Some(e) = self.albums.get_mut(&a) else {
            return;
        };
        e.tracks.insert((order.clone(), t.id));
        if e.tracks.len() == 1 {
            self.album_docs
                .put(a, &docs::name_doc(&search::normalize(&t.tags.album)));
            let ar = self.artists.entry(artist).or_insert_with(|| ArtistEntry {
                name: owner.clone(),
                albums: BTreeSet::new(),
                tracks: 0,
                key: cat(&[sort_key(&owner).as_bytes()]),
            });
            let fresh = ar.albums.is_empty();
            ar.albums.insert(a);
            if fresh {
                let key = ar.key.clone();
                self.artist_order.insert((key, artist));
                self.artist_docs
                    .put(artist, &docs::name_doc(&search::normalize(&owner)));
            }
        }
        if let Some(ar) = self.artists.get_mut(&artist) {
            ar.tracks += 1;
        }
    }

    fn album_remove(&mut self, a: &AlbumId, it: &Item) {
        let Some(e) = self.albums.get_mut(a) else {
            return;
        };
        e.tracks.remove(&(it.order.clone(), it.track.id));
        let artist = e.artist;
        let empty = e.tracks.is_empty();
        if let Some(ar) = self.artists.get_mut(&artist) {
            ar.tracks = ar.tracks.saturating_sub(1);
            if empty {
                ar.albums.remove(a);
                if ar.albums.is_empty() {
                    let key = ar.key.clone();
                    self.artists.remove(&artist);
                    self.artist_order.remove(&(key, artist));
                    self.artist_docs.remove(&artist);
                }
            }
        }
        if empty {
            if let Some(e) = self.albums.remove(a) {
                for (i, k) in e.keys.into_iter().enumerate() {
                    self.album_orders[i].remove(&(k, *a));
                }
            }
            self.album_docs.remove(a);
        } else {
            self.album_refresh(a);
        }
    }

    /// Recompute an album's place in each order from its first track.
    fn album_refresh(&mut self, a: &AlbumId) {
        let Some(info) = self.album_info(a) else {
            return;
        };
        let Some(e) = self.albums.get_mut(a) else {
            return;
        };
        let name = sort_key(&info.name);
        let artist = sort_key(&info.artist);
        let year = info.year.unwrap_or(u32::MAX).to_be_bytes();
        let added = (u64::MAX - e.added).to_be_bytes();
        let seq = (u64::MAX - e.seq).to_be_bytes();
        let keys = [
            cat(&[name.as_bytes(), artist.as_bytes()]),
            cat(&[artist.as_bytes(), name.as_bytes()]),
            cat(&[&year, artist.as_bytes(), name.as_bytes()]),
            cat(&[&added, &seq]),
        ];
        for sort in AlbumSort::ALL {
            let i = sort as usize;
            if e.keys[i] != keys[i] {
                let old = std::mem::replace(&mut e.keys[i], keys[i].clone());
                self.album_orders[i].remove(&(old, *a));
                self.album_orders[i].insert((keys[i].clone(), *a));
            }
        }
    }

    fn album_info(&self, a: &AlbumId) -> Option<AlbumInfo> {
        let e = self.albums.get(a)?;
        let tracks: Vec<&Item> = e
            .tracks
            .iter()
            .filter_map(|(_, id)| self.items.get(id))
            .collect();
        let first = &tracks.first()?.track.tags;
        let mut holders: Vec<u16> = vec![];
        let mut genres: Vec<String> = vec![];
        for it in &tracks {
            for h in &it.holders {
                if !holders.contains(h) {
                    holders.push(*h);
                }
            }
            for g in &it.track.tags.genres {
                if !genres.contains(g) {
                    genres.push(g.clone());
                }
            }
        }
        holders.sort_unstable();
        Some(AlbumInfo {
            id: *a,
            name: first.album.clone(),
            artist: first.album_owner(),
            artist_id: e.artist,
            year: tracks.iter().find_map(|it| it.track.tags.year),
            cover: tracks.iter().find_map(|it| it.track.cover),
            genres,
            tracks: tracks.len(),
            duration_ms: tracks.iter().map(|it| it.track.audio.duration_ms).sum(),
            holders: holders
                .into_iter()
                .map(|h| self.devices[h as usize])
                .collect(),
        })
    }

    fn artist_info(&self, a: &ArtistId) -> Option<ArtistInfo> {
        let e = self.artists.get(a)?;
        Some(ArtistInfo {
            id: *a,
            name: e.name.clone(),
            albums: e.albums.len(),
            tracks: e.tracks,
        })
    }
}

#[cfg(test)]
mod tests;
