//! The API's JSON shapes: the only types the HTTP API serialises, and the
//! ones its clients (the `tunemesh` CLI) deserialise, so both sides agree by
//! construction. Each converts from the node's and the mesh's own types,
//! which need not be serialisable.
//!
//! Owns: field names and value forms of every JSON answer and body.
//!
//! Must never: do I/O, or hold more than the answer needs (a track view
//! borrows from the library it shows).

mod offline;
mod user;
pub use offline::*;
pub use user::*;

use crate::catalog::{AlbumId, AlbumInfo, ArtistId, ArtistInfo};
use crate::mesh::{Device, PeerInfo, RelayInfo};
use crate::model::{CoverId, Track, TrackId};
use crate::node::{LibraryTrack, Source, Status, SyncStats};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A track as the API shows it: its tags, audio properties, and the devices
/// that hold it. The same shape whether it comes from a running node or,
/// offline, from the local index (then `sources` is this device alone).
///
/// Serialised, it borrows from the track it shows (a 100k-track library is
/// one pass, no intermediate JSON tree); deserialised, it owns its strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackView<'a> {
    /// The track id (blake3 of the file), hex.
    #[serde(with = "hex")]
    pub id: TrackId,
    /// Title (from the file name when the file had no title tag).
    pub title: Cow<'a, str>,
    /// All artists as one display string.
    pub artist: Cow<'a, str>,
    /// The artists, one by one.
    pub artists: Cow<'a, [String]>,
    /// Album (from the folder name when the file had no album tag).
    pub album: Cow<'a, str>,
    /// Album artist; empty when the file names none.
    pub album_artist: Cow<'a, str>,
    /// Track number.
    pub track: Option<u32>,
    /// Tracks on the disc.
    pub track_total: Option<u32>,
    /// Disc number.
    pub disc: Option<u32>,
    /// Discs of the album.
    pub disc_total: Option<u32>,
    /// Release year.
    pub year: Option<u32>,
    /// Release date as tagged.
    pub date: Option<Cow<'a, str>>,
    /// Genres.
    pub genres: Cow<'a, [String]>,
    /// Part of a compilation.
    pub compilation: bool,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Codec, e.g. `flac`, `opus`.
    pub codec: Cow<'a, str>,
    /// Container, e.g. `flac`, `ogg`, `mp4`.
    pub container: Cow<'a, str>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u32,
    /// Bits per sample of lossless sources.
    pub bit_depth: Option<u32>,
    /// Average bitrate in kb/s.
    pub bitrate_kbps: Option<u32>,
    /// File size in bytes.
    pub size: u64,
    /// Cover art id, hex (for `/api/cover/{id}`).
    #[serde(with = "hex_opt")]
    pub cover: Option<CoverId>,
    /// The album's id (for `/api/albums/{id}`), when it names an album.
    pub album_id: Option<AlbumId>,
    /// Where this device holds the file; empty when only other devices do.
    pub paths: Vec<Cow<'a, str>>,
    /// The devices that hold it.
    pub sources: Vec<SourceView<'a>>,
    /// One of them is this device or online now, or an offline copy is
    /// here: it can be played.
    pub online: bool,
    /// When the owner starred it (UTC ms), if they did.
    #[serde(default)]
    pub starred_at_ms: Option<u64>,
    /// The owner's rating, 1–5; 0 for none.
    #[serde(default)]
    pub rating: u8,
    /// How many times it was played (on every device).
    #[serde(default)]
    pub play_count: u64,
    /// When the latest play started (UTC ms).
    #[serde(default)]
    pub last_played_ms: Option<i64>,
    /// A whole offline copy is on this device (it plays with no holder
    /// online).
    #[serde(default)]
    pub offline: bool,
}

impl<'a> TrackView<'a> {
    /// The view of `track`, held by `sources`. Paths are shown only when
    /// this device is one of them (a member's paths are its own business).
    pub fn new(track: &'a Track, sources: Vec<SourceView<'a>>) -> TrackView<'a> {
        let (g, a) = (&track.tags, &track.audio);
        let paths = if sources.iter().any(|s| s.local) {
            track.paths.iter().map(|p| p.to_string_lossy()).collect()
        } else {
            vec![]
        };
        TrackView {
            id: track.id,
            title: Cow::Borrowed(&g.title),
            artist: Cow::Owned(g.artist()),
            artists: Cow::Borrowed(&g.artists),
            album: Cow::Borrowed(&g.album),
            album_artist: Cow::Borrowed(&g.album_artist),
            track: g.track,
            track_total: g.track_total,
            disc: g.disc,
            disc_total: g.disc_total,
            year: g.year,
            date: g.date.as_deref().map(Cow::Borrowed),
            genres: Cow::Borrowed(&g.genres),
            compilation: g.compilation,
            duration_ms: a.duration_ms,
            codec: Cow::Borrowed(&a.codec),
            container: Cow::Borrowed(&a.container),
            sample_rate: a.sample_rate,
            channels: a.channels,
            bit_depth: a.bit_depth,
            bitrate_kbps: a.bitrate_kbps,
            size: track.size,
            cover: track.cover,
            album_id: AlbumId::of(g),
            paths,
            online: sources.iter().any(|s| s.online),
            sources,
            starred_at_ms: None,
            rating: 0,
            play_count: 0,
            last_played_ms: None,
            offline: false,
        }
    }

    /// The view of a track of the merged library.
    pub fn of(t: &'a LibraryTrack) -> TrackView<'a> {
        let mut v = TrackView::new(&t.track, t.sources.iter().map(SourceView::from).collect());
        v.starred_at_ms = t.mine.starred_at;
        v.rating = t.mine.rating;
        v.play_count = t.mine.plays.count;
        v.last_played_ms = (t.mine.plays.count > 0).then_some(t.mine.plays.last_ms);
        v.offline = t.offline;
        v.online |= t.offline;
        v
    }
}

/// A device that holds a track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView<'a> {
    /// Its device id.
    pub device: Cow<'a, str>,
    /// Its name (empty when unknown).
    pub name: Cow<'a, str>,
    /// It is this device.
    pub local: bool,
    /// It is connected now (this device always is).
    pub online: bool,
}

impl<'a> From<&'a Source> for SourceView<'a> {
    fn from(s: &'a Source) -> Self {
        SourceView {
            device: Cow::Borrowed(&s.device),
            name: Cow::Borrowed(&s.name),
            local: s.local,
            online: s.online,
        }
    }
}

/// `GET /api/status`: this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Its device id.
    pub device: String,
    /// Its name.
    pub name: String,
    /// `home` or `phone`.
    pub role: String,
    /// The mesh id (the device id of its founder).
    pub mesh: String,
    /// Snapshot root of its index, hex.
    pub root: String,
    /// Tracks in its index.
    pub tracks: u64,
    /// Members of the mesh.
    pub members: usize,
    /// Members connected now.
    pub connected: usize,
    /// Mesh addresses it listens on.
    pub listen: Vec<String>,
    /// `public`, `private` or `unknown` (AutoNAT through our relays).
    pub reachability: String,
    /// The relays it uses.
    pub relays: Vec<RelayView>,
    /// Library sync figures.
    pub sync: SyncView,
}

impl From<&Status> for StatusView {
    fn from(s: &Status) -> Self {
        StatusView {
            device: s.device.clone(),
            name: s.name.clone(),
            role: s.role.as_str().to_string(),
            mesh: s.mesh.clone(),
            root: s.root.clone(),
            tracks: s.tracks,
            members: s.members,
            connected: s.connected,
            listen: s.listen.clone(),
            reachability: s.reachability.clone(),
            relays: s.relays.iter().map(RelayView::from).collect(),
            sync: SyncView::from(&s.sync),
        }
    }
}

/// A relay the node uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// Its device id.
    pub id: String,
    /// The address configured for it.
    pub addr: Option<String>,
    /// Configured with `--relay`: a reservation is kept there.
    pub configured: bool,
    /// Connected now.
    pub connected: bool,
    /// It accepted us as a member of a mesh it serves.
    pub accepted: bool,
    /// We hold a reservation: members can reach us through it.
    pub reserved: bool,
    /// Our addresses through it.
    pub addrs: Vec<String>,
    /// The last error with it.
    pub error: Option<String>,
}

impl From<&RelayInfo> for RelayView {
    fn from(r: &RelayInfo) -> Self {
        RelayView {
            id: r.id.to_string(),
            addr: r.addr.clone(),
            configured: r.configured,
            connected: r.connected,
            accepted: r.accepted,
            reserved: r.reserved,
            addrs: r.addrs.clone(),
            error: r.error.clone(),
        }
    }
}

/// Library sync figures (see the node's `SyncStats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    /// Syncs finished.
    pub syncs: u64,
    /// Requests sent.
    pub requests: u64,
    /// Bytes of sync messages, both ways, as framed on the wire.
    pub bytes_in: u64,
    /// Records received.
    pub records: u64,
    /// Duration of the last sync, ms.
    pub last_ms: u64,
    /// Bytes of the last sync.
    pub last_bytes: u64,
}

impl From<&SyncStats> for SyncView {
    fn from(s: &SyncStats) -> Self {
        SyncView {
            syncs: s.syncs,
            requests: s.requests,
            bytes_in: s.bytes_in,
            records: s.records,
            last_ms: s.last_ms,
            last_bytes: s.last_bytes,
        }
    }
}

/// `GET /api/peers`: a peer the node sees, and how it reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its device id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `home`, `phone` or `relay`.
    pub role: String,
    /// A member of our mesh.
    pub member: bool,
    /// Connected now.
    pub connected: bool,
    /// `lan`, `direct` or `relayed` (empty when not connected).
    pub path: String,
    /// The address of the connection.
    pub addr: Option<String>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// The relay's device id when the path is `relayed`.
    pub relay: Option<String>,
    /// Snapshot root it last announced.
    pub root: Option<String>,
    /// Track count it last announced.
    pub tracks: Option<u64>,
}

impl From<&PeerInfo> for PeerView {
    fn from(p: &PeerInfo) -> Self {
        PeerView {
            id: p.id.to_string(),
            name: p.name.clone(),
            role: p.role.to_string(),
            member: p.member,
            connected: p.connected,
            path: p.path.map_or("", crate::mesh::PathKind::as_str).to_string(),
            addr: p.addr.clone(),
            rtt_ms: p.rtt_ms,
            relay: p.relay.as_ref().map(|r| r.to_string()),
            root: p.root.clone(),
            tracks: p.tracks,
        }
    }
}

/// `GET /api/devices`: a member of the mesh, as the signed list names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Its device id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `home` or `phone`.
    pub role: String,
    /// Addresses it was known at when added.
    pub addrs: Vec<String>,
    /// The member that added it.
    pub added_by: String,
    /// When, in Unix milliseconds.
    pub added_at_unix_ms: i64,
    /// It is the device answering.
    pub this_device: bool,
}

impl DeviceView {
    /// The view of `d`; `me` is the answering device's id.
    pub fn new(d: &Device, me: &str) -> DeviceView {
        let id = d.id.to_string();
        DeviceView {
            this_device: id == me,
            id,
            name: d.name.clone(),
            role: d.role.to_string(),
            addrs: d.addrs.clone(),
            added_by: d.added_by.to_string(),
            added_at_unix_ms: d.added_at_unix_ms,
        }
    }
}

/// `POST /api/invite`: a one-time ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteView {
    /// The ticket (`TM1…`).
    pub ticket: String,
    /// Seconds until it expires.
    pub expires_in_s: u64,
}

/// `POST /api/join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// A ticket another member printed.
    pub ticket: String,
}

/// `POST /api/join`: the mesh joined and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinView {
    /// The mesh id.
    pub mesh: String,
    /// Its members.
    pub devices: Vec<DeviceView>,
}

/// `DELETE /api/devices/{id}`: the device revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedView {
    /// Its device id as given.
    pub removed: String,
}

/// Any failed request: the message, without paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// What went wrong.
    pub error: String,
}

/// A login: a one-time code (`tunemesh open`) or an account's name and
/// password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoginRequest {
    /// The code from `tunemesh open`.
    Code {
        /// The code.
        code: String,
    },
    /// An account (`tunemesh user add`).
    Password {
        /// Its name.
        user: String,
        /// Its password.
        password: String,
    },
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoginRequest::Code { .. } => "LoginRequest::Code(…)",
            LoginRequest::Password { .. } => "LoginRequest::Password(…)",
        })
    }
}

/// Who the browser is logged in as (`/api/web/me`, and a login's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeView {
    /// The account's name, or "owner".
    pub user: Option<String>,
    /// The device's owner (devices, invitations).
    pub owner: bool,
    /// Whether any account exists (the login page offers a password form).
    pub accounts: bool,
}

/// A one-time login code for `tunemesh open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCodeView {
    /// The code; it goes into the URL's fragment, never to a server log.
    pub code: String,
    /// Seconds it stays good.
    pub expires_in_s: u64,
}

/// An account as `tunemesh user ls --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// Its name.
    pub name: String,
    /// When it was made (Unix ms).
    pub created_unix_ms: u64,
}

/// Ids as hex text (their `Display` / `FromStr`).
/// A page of a listing (`/api/tracks`, `/api/albums`, `/api/artists`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageView<T> {
    /// Items in the whole listing.
    pub total: usize,
    /// Offset of the first item.
    pub offset: usize,
    /// The page's items.
    pub items: Vec<T>,
}

/// An album of the merged library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlbumView {
    /// Stable id (32 hex digits), the same on every device.
    pub id: AlbumId,
    /// Title.
    pub name: String,
    /// Album artist, else the artist.
    pub artist: String,
    /// Id of that artist.
    pub artist_id: ArtistId,
    /// Year, when the tracks say.
    pub year: Option<u32>,
    /// Cover id (for `/api/cover/{id}`), when a track has one.
    #[serde(with = "hex_opt")]
    pub cover: Option<CoverId>,
    /// Genres of its tracks.
    pub genres: Vec<String>,
    /// Number of tracks.
    pub track_count: usize,
    /// Total time.
    pub duration_ms: u64,
    /// Devices holding at least one of its tracks.
    pub sources: Vec<SourceView<'static>>,
    /// One of them is this device or online now.
    pub online: bool,
    /// When the owner starred it (UTC ms), if they did.
    #[serde(default)]
    pub starred_at_ms: Option<u64>,
    /// The owner's rating, 1–5; 0 for none.
    #[serde(default)]
    pub rating: u8,
}

impl AlbumView {
    /// The view of `a`, its holders labelled as `sources`.
    pub fn new(a: AlbumInfo, sources: &[Source]) -> AlbumView {
        let sources: Vec<SourceView<'static>> = sources
            .iter()
            .map(|s| SourceView {
                device: Cow::Owned(s.device.clone()),
                name: Cow::Owned(s.name.clone()),
                local: s.local,
                online: s.online,
            })
            .collect();
        AlbumView {
            online: sources.iter().any(|s| s.online),
            id: a.id,
            name: a.name,
            artist: a.artist,
            artist_id: a.artist_id,
            year: a.year,
            cover: a.cover,
            genres: a.genres,
            track_count: a.tracks,
            duration_ms: a.duration_ms,
            sources,
            starred_at_ms: None,
            rating: 0,
        }
    }
}

/// An artist of the merged library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtistView {
    /// Stable id (32 hex digits).
    pub id: ArtistId,
    /// Name.
    pub name: String,
    /// Albums filed under the artist.
    pub album_count: usize,
    /// Tracks on them.
    pub track_count: usize,
    /// When the owner starred the artist (UTC ms), if they did.
    #[serde(default)]
    pub starred_at_ms: Option<u64>,
    /// The owner's rating, 1–5; 0 for none.
    #[serde(default)]
    pub rating: u8,
}

impl From<ArtistInfo> for ArtistView {
    fn from(a: ArtistInfo) -> ArtistView {
        ArtistView {
            id: a.id,
            name: a.name,
            album_count: a.albums,
            track_count: a.tracks,
            starred_at_ms: None,
            rating: 0,
        }
    }
}

/// `GET /api/albums/{id}`: an album and its tracks in disc/track order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlbumPage<'a> {
    /// The album.
    #[serde(flatten)]
    pub album: AlbumView,
    /// Its tracks.
    pub tracks: Vec<TrackView<'a>>,
}

/// `GET /api/artists/{id}`: an artist and its albums by title.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtistPage {
    /// The artist.
    #[serde(flatten)]
    pub artist: ArtistView,
    /// Its albums.
    pub albums: Vec<AlbumView>,
}

/// `GET /api/search`: what matched, best first in each kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchView<'a> {
    /// Tracks (title, artist or album matched).
    pub tracks: Vec<TrackView<'a>>,
    /// Albums (title matched).
    pub albums: Vec<AlbumView>,
    /// Artists (name matched).
    pub artists: Vec<ArtistView>,
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Optional ids as hex text or `null`.
mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<std::borrow::Cow<str>>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AudioInfo, Tags};

    fn track() -> Track {
        Track {
            id: TrackId::from_bytes([7; 32]),
            size: 1234,
            tags: Tags {
                title: "Song".into(),
                artists: vec!["A".into(), "B".into()],
                album: "Album".into(),
                genres: vec!["Rock".into()],
                date: Some("2001-02-03".into()),
                ..Tags::default()
            },
            audio: AudioInfo {
                codec: "flac".into(),
                ..AudioInfo::default()
            },
            cover: Some(CoverId::from_bytes([9; 32])),
            paths: vec!["/music/song.flac".into()],
        }
    }

    #[test]
    fn a_track_view_round_trips_and_shows_paths_only_locally() {
        let t = track();
        let here = Source {
            device: "me".into(),
            name: "pc".into(),
            local: true,
            online: true,
        };
        let there = Source {
            local: false,
            device: "other".into(),
            ..here.clone()
        };
        let v = TrackView::new(&t, vec![SourceView::from(&here)]);
        let json = serde_json::to_string(&v).unwrap();
        let back: TrackView<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.artist, "A; B");
        assert_eq!(back.paths, ["/music/song.flac"]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["id"], "07".repeat(32));
        assert_eq!(value["cover"], "09".repeat(32));
        let remote = TrackView::new(&t, vec![SourceView::from(&there)]);
        assert!(remote.paths.is_empty());
    }
}
