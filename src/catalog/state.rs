//! The catalog's data behind its lock: compact track entries in slots,
//! albums (with the disc/track order of their tracks), artists, the
//! listing orders and the search documents.

use super::docs::{self, Docs};
use super::{
    disc_of, number_of, sort_key, AlbumId, AlbumInfo, ArtistId, ArtistInfo, CatalogTrack, Found,
    Page,
};
use crate::index::search::{self, Query};
use crate::mesh::DeviceId;
use crate::model::{CoverId, Hash32, Track, TrackId};
use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;

/// A track's place within its album: disc, number, title key, id.
type InAlbum<'a> = (u16, u16, u64, &'a TrackId);

/// One track: 56 bytes, plus about 10 in the id table, 4 in its album's
/// list and its search document.
#[derive(Clone, Copy)]
struct Entry {
    id: TrackId,
    /// Bit `i`: `devices[i]` holds it; 0 for a free slot.
    holders: u64,
    /// The first 8 bytes of the title's sort key.
    title_key: u64,
    /// Slot of its album (a pseudo-album for tracks that name none).
    album: u32,
    disc: u16,
    number: u16,
}

impl Entry {
    const FREE: Entry = Entry {
        id: TrackId::from_bytes([0; 32]),
        holders: 0,
        title_key: 0,
        album: 0,
        disc: 0,
        number: 0,
    };

    fn place(&self) -> InAlbum<'_> {
        (self.disc, self.number, self.title_key, &self.id)
    }
}

/// An album, or the pseudo-album of one artist's tracks without one.
pub(super) struct AlbumEntry {
    id: AlbumId,
    /// Named by the tracks (pseudo-albums are listed only as tracks).
    real: bool,
    name: String,
    artist: String,
    artist_id: ArtistId,
    year: Option<u32>,
    cover: Option<CoverId>,
    genres: Vec<String>,
    duration_ms: u64,
    /// The entry slots of its tracks, in disc/track order.
    pub(super) tracks: Vec<u32>,
    added: u64,
    seq: u64,
    /// Its keys in `album_orders` (by `AlbumSort`), and in `walk`.
    pub(super) keys: [Box<[u8]>; 4],
    walk: Box<[u8]>,
}

pub(super) struct ArtistEntry {
    name: String,
    /// Slots of its (real) albums.
    pub(super) albums: BTreeSet<u32>,
    tracks: usize,
    key: Box<[u8]>,
}

#[derive(Default)]
pub(super) struct State {
    devices: Vec<DeviceId>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// The slot of every live entry, hashed by its id (ids are not kept
    /// twice: the table holds slots, hashed and compared through
    /// `entries`).
    by_id: HashTable<u32>,
    /// Keys the id hashes: ids come from members, not from blake3 alone.
    hasher: RandomState,
    pub(super) albums: Vec<Option<AlbumEntry>>,
    album_free: Vec<u32>,
    pub(super) album_slot: HashMap<AlbumId, u32>,
    /// Every album and pseudo-album in track order (album artist, title).
    walk: BTreeSet<(Box<[u8]>, u32)>,
    /// Real albums in each `AlbumSort` order.
    pub(super) album_orders: [BTreeSet<(Box<[u8]>, u32)>; 4],
    pub(super) artists: HashMap<ArtistId, ArtistEntry>,
    pub(super) artist_order: BTreeSet<(Box<[u8]>, ArtistId)>,
    track_docs: Docs<u32>,
    album_docs: Docs<u32>,
    artist_docs: Docs<ArtistId>,
    seq: u64,
    pub(super) first_seen: HashMap<AlbumId, u64>,
    pub(super) fresh: Vec<(AlbumId, u64)>,
}

fn cat(parts: &[&[u8]]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v.into_boxed_slice()
}

/// The first 8 bytes of a title's sort key: enough to order a disc's
/// unnumbered tracks (ties fall to the id).
fn title_key(title: &str) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(sort_key(title).bytes()) {
        *d = s;
    }
    u64::from_be_bytes(b)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `limit` best hits: highest score first, equal scores by key.
/// Selects before it sorts: a broad query matches most of the library,
/// and only a page of it is wanted.
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

impl State {
    /// The bit of `d`, `None` past 64 devices.
    pub(super) fn device_slot(&mut self, d: DeviceId) -> Option<u32> {
        if let Some(i) = self.devices.iter().position(|x| *x == d) {
            return Some(i as u32);
        }
        if self.devices.len() == 64 {
            return None;
        }
        self.devices.push(d);
        Some(self.devices.len() as u32 - 1)
    }

    fn devices_of(&self, mask: u64) -> Vec<DeviceId> {
        (0..self.devices.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| self.devices[i])
            .collect()
    }

    fn entry(&self, e: u32) -> Option<&Entry> {
        self.entries.get(e as usize).filter(|en| en.holders != 0)
    }

    /// The slot of the live entry of `id`.
    pub(super) fn slot_of(&self, id: &TrackId) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.by_id
            .find(h, |&s| self.entries[s as usize].id == *id)
            .copied()
    }

    /// Tracks in the catalog.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every id within `lo..=hi` (the bounds of a prefix), in no order: a
    /// scan, as prefixes are resolved once per command, not per track.
    pub(super) fn ids_within(&self, lo: &TrackId, hi: &TrackId) -> Vec<TrackId> {
        self.entries
            .iter()
            .filter(|e| e.holders != 0 && (lo..=hi).contains(&&e.id))
            .map(|e| e.id)
            .collect()
    }

    /// The track in slot `e` (every slot the maps name is live).
    pub(super) fn view(&self, e: u32) -> Option<CatalogTrack> {
        let en = self.entry(e)?;
        let album = self.albums[en.album as usize]
            .as_ref()
            .filter(|a| a.real)
            .map(|a| a.id);
        Some(CatalogTrack {
            id: en.id,
            album,
            holders: self.devices_of(en.holders),
        })
    }

    pub(super) fn add(&mut self, t: &Track, slot: u32) {
        if let Some(e) = self.slot_of(&t.id) {
            self.entries[e as usize].holders |= 1 << slot;
            return;
        }
        let a = self.album_for(t);
        let entry = Entry {
            id: t.id,
            holders: 1 << slot,
            title_key: title_key(&t.tags.title),
            album: a,
            disc: disc_of(t).try_into().unwrap_or(u16::MAX),
            number: number_of(t).try_into().unwrap_or(u16::MAX),
        };
        let e = match self.free.pop() {
            Some(e) => e,
            None => {
                self.entries.push(Entry::FREE);
                self.entries.len() as u32 - 1
            }
        };
        self.entries[e as usize] = entry;
        let h = self.hasher.hash_one(t.id);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_id
            .insert_unique(h, e, |&s| hasher.hash_one(entries[s as usize].id));
        let g = &t.tags;
        self.track_docs
            .put(e, &search::document(&g.title, &g.artist(), &g.album));
        let Some(al) = self.albums[a as usize].as_mut() else {
            return;
        };
        let place = entry.place();
        let at = al
            .tracks
            .partition_point(|&s| self.entries[s as usize].place() < place);
        al.tracks.insert(at, e);
        al.duration_ms += t.audio.duration_ms;
        for genre in &g.genres {
            if !al.genres.contains(genre) {
                al.genres.push(genre.clone());
            }
        }
        al.cover = al.cover.or(t.cover);
        let year_was = al.year;
        al.year = al.year.or(g.year);
        let (real, artist) = (al.real, al.artist_id);
        if real {
            if let Some(ar) = self.artists.get_mut(&artist) {
                ar.tracks += 1;
            }
            if year_was != self.albums[a as usize].as_ref().and_then(|x| x.year) {
                self.album_refresh(a);
            }
        }
    }

    /// The slot of `t`'s album, created (with its artist) if new.
    fn album_for(&mut self, t: &Track) -> u32 {
        let owner = t.tags.album_owner();
        let (id, real) = match AlbumId::of(&t.tags) {
            Some(id) => (id, true),
            None => {
                let h = Hash32::of(format!("\u{1}{}", search::normalize(&owner)).as_bytes());
                (AlbumId(h.0[..16].try_into().unwrap_or([0; 16])), false)
            }
        };
        if let Some(&a) = self.album_slot.get(&id) {
            return a;
        }
        let added = if real {
            *self.first_seen.entry(id).or_insert_with(|| {
                let now = now_ms();
                self.fresh.push((id, now));
                now
            })
        } else {
            0
        };
        self.seq += 1;
        let artist_id = ArtistId::of(&owner);
        let walk = cat(&[
            sort_key(&owner).as_bytes(),
            sort_key(&t.tags.album).as_bytes(),
        ]);
        let entry = AlbumEntry {
            id,
            real,
            name: t.tags.album.clone(),
            artist: owner.clone(),
            artist_id,
            year: None,
            cover: None,
            genres: vec![],
            duration_ms: 0,
            tracks: vec![],
            added,
            seq: self.seq,
            keys: Default::default(),
            walk: walk.clone(),
        };
        let a = match self.album_free.pop() {
            Some(a) => a,
            None => {
                self.albums.push(None);
                self.albums.len() as u32 - 1
            }
        };
        self.albums[a as usize] = Some(entry);
        self.album_slot.insert(id, a);
        self.walk.insert((walk, a));
        if real {
            self.album_docs
                .put(a, &docs::name_doc(&search::normalize(&t.tags.album)));
            let ar = self
                .artists
                .entry(artist_id)
                .or_insert_with(|| ArtistEntry {
                    name: owner.clone(),
                    albums: BTreeSet::new(),
                    tracks: 0,
                    key: cat(&[sort_key(&owner).as_bytes()]),
                });
            let first = ar.albums.is_empty();
            ar.albums.insert(a);
            if first {
                let key = ar.key.clone();
                self.artist_order.insert((key, artist_id));
                self.artist_docs
                    .put(artist_id, &docs::name_doc(&search::normalize(&owner)));
            }
            self.album_refresh(a);
        }
        a
    }

    /// Put a real album in each order under its current keys.
    fn album_refresh(&mut self, a: u32) {
        let Some(al) = self.albums[a as usize].as_mut() else {
            return;
        };
        let name = sort_key(&al.name);
        let artist = sort_key(&al.artist);
        let year = al.year.unwrap_or(u32::MAX).to_be_bytes();
        let added = (u64::MAX - al.added).to_be_bytes();
        let seq = (u64::MAX - al.seq).to_be_bytes();
        let keys = [
            cat(&[name.as_bytes(), artist.as_bytes()]),
            cat(&[artist.as_bytes(), name.as_bytes()]),
            cat(&[&year, artist.as_bytes(), name.as_bytes()]),
            cat(&[&added, &seq]),
        ];
        for (i, key) in keys.into_iter().enumerate() {
            if al.keys[i] != key {
                let old = std::mem::replace(&mut al.keys[i], key.clone());
                self.album_orders[i].remove(&(old, a));
                self.album_orders[i].insert((key, a));
            }
        }
    }

    pub(super) fn drop_holder(&mut self, id: &TrackId, slot: u32) {
        let Some(e) = self.slot_of(id) else {
            return;
        };
        let en = &mut self.entries[e as usize];
        en.holders &= !(1 << slot);
        if en.holders != 0 {
            return;
        }
        // Out of its album while its place can still be read.
        self.album_drop_track(e);
        self.entries[e as usize] = Entry::FREE;
        self.free.push(e);
        let h = self.hasher.hash_one(id);
        if let Ok(found) = self.by_id.find_entry(h, |&s| s == e) {
            found.remove();
        }
        self.track_docs.remove(&e);
    }

    fn album_drop_track(&mut self, e: u32) {
        let en = self.entries[e as usize];
        let a = en.album;
        let Some(al) = self.albums[a as usize].as_mut() else {
            return;
        };
        let place = en.place();
        let found = al
            .tracks
            .binary_search_by(|&s| self.entries[s as usize].place().cmp(&place));
        if let Ok(i) = found {
            al.tracks.remove(i);
        }
        let (real, artist, empty) = (al.real, al.artist_id, al.tracks.is_empty());
        // The duration is only ever summed: recomputing needs records.
        if real {
            if let Some(ar) = self.artists.get_mut(&artist) {
                ar.tracks = ar.tracks.saturating_sub(1);
            }
        }
        if !empty {
            return;
        }
        let Some(al) = self.albums[a as usize].take() else {
            return;
        };
        self.album_free.push(a);
        self.album_slot.remove(&al.id);
        self.walk.remove(&(al.walk, a));
        if !real {
            return;
        }
        for (i, k) in al.keys.into_iter().enumerate() {
            self.album_orders[i].remove(&(k, a));
        }
        self.album_docs.remove(&a);
        if let Some(ar) = self.artists.get_mut(&artist) {
            ar.albums.remove(&a);
            if ar.albums.is_empty() {
                let key = ar.key.clone();
                self.artists.remove(&artist);
                self.artist_order.remove(&(key, artist));
                self.artist_docs.remove(&artist);
            }
        }
    }

    /// Give back the spare capacity growth left (up to half of each
    /// table: 100k tracks grow `entries` to room for 131k).
    pub(super) fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        self.free.shrink_to_fit();
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_id
            .shrink_to_fit(|&s| hasher.hash_one(entries[s as usize].id));
        self.track_docs.shrink();
        self.album_docs.shrink();
        self.artist_docs.shrink();
        self.albums.shrink_to_fit();
        for al in self.albums.iter_mut().flatten() {
            al.tracks.shrink_to_fit();
        }
    }

    pub(super) fn forget(&mut self, device: DeviceId) {
        let Some(slot) = self.devices.iter().position(|d| *d == device) else {
            return;
        };
        let held: Vec<TrackId> = self
            .entries
            .iter()
            .filter(|e| e.holders & (1 << slot) != 0)
            .map(|e| e.id)
            .collect();
        for id in &held {
            self.drop_holder(id, slot as u32);
        }
    }

    /// A page of tracks in library order: the albums walked in order, each
    /// album's tracks in disc/track order.
    pub(super) fn track_page(&self, page: Page) -> Vec<CatalogTrack> {
        let mut skip = page.offset;
        let mut out = Vec::new();
        for (_, a) in &self.walk {
            if out.len() >= page.limit {
                break;
            }
            let Some(al) = self.albums[*a as usize].as_ref() else {
                continue;
            };
            if skip >= al.tracks.len() {
                skip -= al.tracks.len();
                continue;
            }
            for e in al.tracks.iter().skip(skip) {
                if out.len() >= page.limit {
                    break;
                }
                out.extend(self.view(*e));
            }
            skip = 0;
        }
        out
    }

    pub(super) fn album_info(&self, a: u32) -> AlbumInfo {
        let al = self.albums[a as usize].as_ref();
        let mask = al.map_or(0, |al| {
            al.tracks
                .iter()
                .filter_map(|e| self.entry(*e))
                .fold(0, |m, en| m | en.holders)
        });
        match al {
            Some(al) => AlbumInfo {
                id: al.id,
                name: al.name.clone(),
                artist: al.artist.clone(),
                artist_id: al.artist_id,
                year: al.year,
                cover: al.cover,
                genres: al.genres.clone(),
                tracks: al.tracks.len(),
                duration_ms: al.duration_ms,
                holders: self.devices_of(mask),
                added_ms: al.added,
            },
            None => AlbumInfo {
                id: AlbumId([0; 16]),
                name: String::new(),
                artist: String::new(),
                artist_id: ArtistId([0; 16]),
                year: None,
                cover: None,
                genres: vec![],
                tracks: 0,
                duration_ms: 0,
                holders: vec![],
                added_ms: 0,
            },
        }
    }

    pub(super) fn artist_info(&self, a: &ArtistId) -> Option<ArtistInfo> {
        let e = self.artists.get(a)?;
        Some(ArtistInfo {
            id: *a,
            name: e.name.clone(),
            albums: e.albums.len(),
            tracks: e.tracks,
        })
    }

    pub(super) fn search(&self, q: &Query, limit: usize) -> Found {
        // Keyed (id, slot): ties rank by id, and the slot is at hand.
        let tracks: Vec<((TrackId, u32), u32)> = self
            .track_docs
            .matches(q)
            .into_iter()
            .filter_map(|(e, sc)| Some(((self.entry(e)?.id, e), sc)))
            .collect();
        let tracks = best(tracks, limit)
            .into_iter()
            .filter_map(|(_, e)| self.view(e))
            .collect();
        let albums: Vec<(AlbumId, u32)> = self
            .album_docs
            .matches(q)
            .into_iter()
            .filter_map(|(a, sc)| Some((self.albums[a as usize].as_ref()?.id, sc)))
            .collect();
        let albums = best(albums, limit)
            .into_iter()
            .filter_map(|id| self.album_slot.get(&id).map(|a| self.album_info(*a)))
            .collect();
        let artists = best(self.artist_docs.matches(q), limit)
            .into_iter()
            .filter_map(|a| self.artist_info(&a))
            .collect();
        Found {
            tracks,
            albums,
            artists,
        }
    }

    pub(super) fn cover_holders(&self, id: &CoverId) -> Vec<DeviceId> {
        let mut mask = 0u64;
        for al in self
            .albums
            .iter()
            .flatten()
            .filter(|a| a.cover.as_ref() == Some(id))
        {
            for e in &al.tracks {
                mask |= self.entry(*e).map_or(0, |en| en.holders);
            }
        }
        self.devices_of(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::best;

    #[test]
    fn best_selects_then_sorts_by_score_then_key() {
        let hits = vec![(5u32, 1), (1, 9), (3, 9), (2, 4), (4, 1)];
        assert_eq!(best(hits.clone(), 3), vec![1, 3, 2]);
        assert_eq!(best(hits.clone(), 10), vec![1, 3, 2, 4, 5]);
        assert!(best(hits, 0).is_empty());
    }
}
