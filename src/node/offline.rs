//! The node's side of the offline mirror: pins named by the owner's ids
//! (prefixes, names) stored as whole ids; pins expanded into wants from
//! the catalog and the owner's state (so a pinned playlist or album
//! follows its edits) every few seconds and at once on a change; the play
//! queue's next tracks as prefetch wants; and streams served from offline
//! copies when they are the best source or the only one.

use super::{LibraryTrack, Node, NodeError, NodeStream};
use crate::catalog::id::{AlbumId, ArtistId};
use crate::catalog::{CatalogTrack, Page};
use crate::mesh::Recipe;
use crate::mirror::{Class, Fallback, Pin, PinKind, Policy, Want};
use crate::model::{AudioInfo, Track, TrackId};
use crate::stream::Bitrate;
use crate::userdata::{Item, PlaylistId};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How often pins are expanded again (catalog changes are not signalled).
const REPLAN: Duration = Duration::from_secs(3);
/// Tracks of the play queue fetched ahead of the current one.
const PREFETCH_AHEAD: usize = 3;

/// A pin as listed: what it names, and how far its tracks are.
#[derive(Debug, Clone)]
pub struct PinView {
    /// The pin.
    pub pin: Pin,
    /// What it names, for people (album title, playlist name…).
    pub name: String,
    /// Its tracks now.
    pub tracks: usize,
    /// Of which whole here.
    pub done: usize,
}

/// Duration and size of tracks, for estimates before a record is known.
pub(super) type Sizes = std::sync::Mutex<HashMap<TrackId, (u64, u64)>>;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Pin something for this device: `kind` and, unless it is `starred`
    /// or `library`, an id (any unique prefix; a playlist's name). A pin
    /// of the same thing replaces the old one's bitrate.
    pub async fn offline_add(
        &self,
        kind: PinKind,
        id: Option<&str>,
        bitrate: Bitrate,
    ) -> Result<Pin, NodeError> {
        let id = self.pin_id(kind, id)?;
        let pin = Pin {
            kind,
            id,
            kbps: bitrate.wire(),
            added_ms: now_ms(),
        };
        let p = pin.clone();
        let pin = self
            .inner
            .mirror
            .update(
                move |s| match s.pins.iter_mut().find(|x| x.kind == p.kind && x.id == p.id) {
                    Some(old) => {
                        old.kbps = p.kbps;
                        old.clone()
                    }
                    None => {
                        s.pins.push(p.clone());
                        p
                    }
                },
            )
            .await
            .map_err(mirror_err)?;
        self.replan().await;
        Ok(pin)
    }

    /// Unpin; its copies go unless another pin needs them.
    pub async fn offline_remove(&self, kind: PinKind, id: Option<&str>) -> Result<(), NodeError> {
        let id = self.pin_id(kind, id)?;
        let gone = self
            .inner
            .mirror
            .update(move |s| {
                let before = s.pins.len();
                s.pins.retain(|p| !(p.kind == kind && p.id == id));
                before != s.pins.len()
            })
            .await
            .map_err(mirror_err)?;
        if !gone {
            return Err(NodeError::NotFound("no such pin".into()));
        }
        self.replan().await;
        Ok(())
    }

    /// Set the budget of pinned copies.
    pub async fn offline_budget(&self, bytes: u64) -> Result<(), NodeError> {
        self.inner
            .mirror
            .update(|s| s.budget = bytes)
            .await
            .map_err(mirror_err)
    }

    /// Set which paths offline downloads may use.
    pub async fn offline_policy(&self, policy: Policy) -> Result<(), NodeError> {
        self.inner
            .mirror
            .update(|s| s.policy = policy)
            .await
            .map_err(mirror_err)
    }

    /// Where the mirror stands.
    pub fn offline_status(&self) -> crate::mirror::Status {
        self.inner.mirror.status()
    }

    /// The mirror's settings.
    pub fn offline_settings(&self) -> crate::mirror::Settings {
        self.inner.mirror.settings()
    }

    /// The pins, with their names and progress.
    pub fn offline_pins(&self) -> Vec<PinView> {
        let held = self.inner.mirror.tracks_held();
        self.offline_settings()
            .pins
            .into_iter()
            .map(|pin| {
                let tracks = self.expand(&pin);
                PinView {
                    name: self.pin_name(&pin),
                    done: tracks.iter().filter(|t| held.contains(&t.id)).count(),
                    tracks: tracks.len(),
                    pin,
                }
            })
            .collect()
    }

    /// Whether a whole offline copy of `track` is here.
    pub fn offline_has(&self, track: &TrackId) -> bool {
        self.inner.mirror.tracks_held().contains(track)
    }

    /// The whole id a pin stores for `id`.
    fn pin_id(&self, kind: PinKind, id: Option<&str>) -> Result<String, NodeError> {
        let id = id.map(str::trim).filter(|s| !s.is_empty());
        match (kind.takes_id(), id) {
            (false, None) => Ok(String::new()),
            (false, Some(_)) => Err(NodeError::BadRequest(format!(
                "{} takes no id",
                kind.as_str()
            ))),
            (true, None) => Err(NodeError::BadRequest(format!(
                "{} needs an id",
                kind.as_str()
            ))),
            (true, Some(id)) => Ok(match kind {
                PinKind::Track => self.resolve_track_id(id)?.to_string(),
                PinKind::Album => match self.resolve_item(&format!("album:{id}"))? {
                    Item::Album(a) => a.to_string(),
                    _ => unreachable!("asked for albums only"),
                },
                PinKind::Artist => match self.resolve_item(&format!("artist:{id}"))? {
                    Item::Artist(a) => a.to_string(),
                    _ => unreachable!("asked for artists only"),
                },
                PinKind::Playlist => self.playlist(id)?.id.to_string(),
                PinKind::Starred | PinKind::Library => unreachable!("take no id"),
            }),
        }
    }

    fn pin_name(&self, pin: &Pin) -> String {
        let cat = &self.inner.catalog;
        match pin.kind {
            PinKind::Album => pin
                .id
                .parse::<AlbumId>()
                .ok()
                .and_then(|a| cat.album(&a))
                .map(|(a, _)| match a.artist.is_empty() {
                    true => a.name,
                    false => format!("{} – {}", a.artist, a.name),
                }),
            PinKind::Artist => pin
                .id
                .parse::<ArtistId>()
                .ok()
                .and_then(|a| cat.artist(&a))
                .map(|(a, _)| a.name),
            PinKind::Playlist => self.playlist(&pin.id).ok().map(|p| p.name),
            PinKind::Track => None,
            PinKind::Starred => Some("starred".into()),
            PinKind::Library => Some("the whole library".into()),
        }
        .unwrap_or_else(|| pin.id.clone())
    }

    /// A pin's tracks now, in order.
    fn expand(&self, pin: &Pin) -> Vec<CatalogTrack> {
        let cat = &self.inner.catalog;
        let album = |a: &AlbumId| cat.album(a).map(|(_, t)| t).unwrap_or_default();
        let artist = |a: &ArtistId| -> Vec<CatalogTrack> {
            cat.artist(a)
                .map(|(_, albums)| albums.iter().flat_map(|al| album(&al.id)).collect())
                .unwrap_or_default()
        };
        match pin.kind {
            PinKind::Track => pin
                .id
                .parse::<TrackId>()
                .ok()
                .and_then(|t| cat.track(&t))
                .into_iter()
                .collect(),
            PinKind::Album => pin.id.parse().map(|a| album(&a)).unwrap_or_default(),
            PinKind::Artist => pin.id.parse().map(|a| artist(&a)).unwrap_or_default(),
            PinKind::Playlist => {
                let ids: Vec<TrackId> = pin
                    .id
                    .parse::<PlaylistId>()
                    .ok()
                    .and_then(|p| self.user_state(|v| v.playlist(&p)))
                    .map(|p| p.entries.iter().map(|e| e.track).collect())
                    .unwrap_or_default();
                ids.iter().filter_map(|t| cat.track(t)).collect()
            }
            PinKind::Starred => {
                let items = self.user_state(|v| v.starred());
                items
                    .iter()
                    .flat_map(|(i, _)| match i {
                        Item::Track(t) => cat.track(t).into_iter().collect(),
                        Item::Album(a) => album(a),
                        Item::Artist(a) => artist(a),
                    })
                    .collect()
            }
            PinKind::Library => cat.tracks(Page::ALL).items,
        }
    }

    /// Expand the pins and the queue into the mirror's wants.
    async fn replan(&self) {
        let me = self.device_id();
        // The queue's next tracks, nearest first: fetched before the pins.
        let ahead: Vec<CatalogTrack> = self
            .user_state(|v| v.queue().map(|(_, q)| q.clone()))
            .map(|q| {
                q.tracks
                    .iter()
                    .skip(q.current as usize + 1)
                    .take(PREFETCH_AHEAD)
                    .filter_map(|t| self.inner.catalog.track(t))
                    .filter(|t| !t.holders.contains(&me))
                    .collect()
            })
            .unwrap_or_default();
        let place = |t: &TrackId| ahead.iter().position(|a| a.id == *t);
        let mut order: Vec<(CatalogTrack, u32, Class)> = vec![];
        let mut seen: HashMap<TrackId, usize> = HashMap::new();
        let rank = |k: u32| if k == 0 { u32::MAX } else { k };
        for pin in self.offline_settings().pins {
            for t in self.expand(&pin) {
                if t.holders.contains(&me) {
                    continue; // our own files are here already
                }
                match seen.get(&t.id) {
                    // The best bitrate any pin asks for wins.
                    Some(&i) if rank(pin.kbps) > rank(order[i].1) => order[i].1 = pin.kbps,
                    Some(_) => {}
                    None => {
                        seen.insert(t.id, order.len());
                        order.push((t, pin.kbps, Class::Pinned));
                    }
                }
            }
        }
        for t in ahead.iter() {
            if let Entry::Vacant(e) = seen.entry(t.id) {
                e.insert(order.len());
                order.push((t.clone(), Bitrate::DEFAULT.wire(), Class::Prefetch));
            }
        }
        let sizes = match self
            .sizes(order.iter().map(|(t, _, _)| t.clone()).collect())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read track sizes for the offline plan: {e}");
                return;
            }
        };
        let wants = order
            .into_iter()
            .map(|(t, kbps, class)| {
                let (ms, size) = sizes.get(&t.id).copied().unwrap_or((0, 0));
                Want {
                    recipe: Recipe { track: t.id, kbps },
                    estimate: estimate(kbps, ms, size),
                    class,
                    ahead: place(&t.id),
                }
            })
            .collect();
        self.inner.mirror.set_wants(wants);
    }

    /// Duration and size of `tracks` (records read once, then remembered).
    async fn sizes(
        &self,
        tracks: Vec<CatalogTrack>,
    ) -> Result<HashMap<TrackId, (u64, u64)>, NodeError> {
        let missing: Vec<CatalogTrack> = {
            let known = self.inner.sizes.lock().unwrap();
            let mut seen = HashSet::new();
            tracks
                .iter()
                .filter(|t| !known.contains_key(&t.id) && seen.insert(t.id))
                .cloned()
                .collect()
        };
        for chunk in missing.chunks(2048) {
            let labelled: Vec<LibraryTrack> = self.label(chunk.to_vec()).await?;
            let mut known = self.inner.sizes.lock().unwrap();
            for lt in labelled {
                known.insert(lt.track.id, (lt.track.audio.duration_ms, lt.track.size));
            }
        }
        let known = self.inner.sizes.lock().unwrap();
        Ok(tracks
            .iter()
            .filter_map(|t| Some((t.id, *known.get(&t.id)?)))
            .collect())
    }

    /// Expand the pins every few seconds, and at once when the owner's
    /// state changes.
    pub(super) fn start_offline_planner(&self) {
        let n = self.clone();
        let mut changes = self.user_changes();
        self.spawn(async move {
            loop {
                n.replan().await;
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(REPLAN) => {}
                }
            }
        });
    }

    /// A stream of `lt` from an offline copy here, if one is good enough
    /// (`fallback`). Its bytes are the copy's: an Opus copy is sent as it
    /// is when it fits the asked bitrate, else transcoded from it.
    pub(super) async fn open_offline(
        &self,
        lt: &LibraryTrack,
        bitrate: Bitrate,
        fallback: Fallback,
        start_ms: u64,
        offset: u64,
    ) -> Result<Option<NodeStream>, NodeError> {
        let Some(copy) = self
            .inner
            .mirror
            .local_copy(&lt.track.id, bitrate.wire(), fallback)
        else {
            return Ok(None);
        };
        let (m, hash) = (self.inner.mirror.clone(), copy.hash);
        self.inner.tasks.blocking(move || m.touch(&hash)).await?;
        let orig = &lt.track;
        // A recipe whose bytes are the original (an Opus or MP3 file
        // already within the bitrate: a passthrough) is the original.
        let original = copy.kbps == 0 || copy.hash.0 == *orig.id.as_bytes();
        let audio = if original {
            orig.audio.clone()
        } else {
            AudioInfo {
                codec: "opus".into(),
                container: "ogg".into(),
                sample_rate: 48_000,
                bit_depth: None,
                bitrate_kbps: Some(copy.kbps),
                ..orig.audio.clone()
            }
        };
        // The copy is a file of its own: its id is its hash, so no cache
        // entry made from it can pass for one made from the original.
        let copy_track = Track {
            id: TrackId::from_bytes(copy.hash.0),
            audio,
            size: if original { orig.size } else { 0 },
            paths: vec![copy.path],
            ..(**orig).clone()
        };
        let mut s = self
            .inner
            .playback
            .open_local(Arc::new(copy_track), bitrate, start_ms, offset)
            .await?;
        s.track = orig.clone();
        s.source = "offline".into();
        Ok(Some(s))
    }
}

/// Bytes a copy will take before its record says: the original's size,
/// or duration × bitrate with Ogg's overhead (about 2%) and headers.
fn estimate(kbps: u32, duration_ms: u64, size: u64) -> u64 {
    if kbps == 0 {
        return size;
    }
    duration_ms * u64::from(kbps) / 8 * 102 / 100 + 4096
}

fn mirror_err(e: crate::mirror::MirrorError) -> NodeError {
    match e {
        crate::mirror::MirrorError::Index(i) => NodeError::Index(i),
        other => NodeError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn estimates_are_the_bitrate_over_the_duration_or_the_file() {
        // Four minutes at 96 kb/s: 2.88 MB plus 2% and a header.
        assert_eq!(
            super::estimate(96, 240_000, 9),
            2_880_000 * 102 / 100 + 4096
        );
        assert_eq!(super::estimate(0, 240_000, 31_000_000), 31_000_000);
    }
}
