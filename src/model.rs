//! Domain types shared by every module: what a track, an album or a scan
//! error *is*, independent of how the index stores it or how it travels.
//!
//! This module must never depend on sled, lofty, prost or any I/O: it is the
//! vocabulary the other modules speak.

pub mod prefix;
pub mod time;

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A 32-byte blake3 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The blake3 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    /// The digest held in `bytes`; `None` unless it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Hash32(bytes.try_into().ok()?))
    }

    /// The digest as 64 lowercase hex characters (the `Display` form).
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for Hash32 {
    fn from(h: blake3::Hash) -> Self {
        Hash32(*h.as_bytes())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl FromStr for Hash32 {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        blake3::Hash::from_hex(s)
            .map(Hash32::from)
            .map_err(|_| InvalidId(s.to_owned()))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A string that is not a 64-character hex digest (the offending input),
/// returned when parsing a [`Hash32`], [`TrackId`] or [`CoverId`].
#[derive(Debug, thiserror::Error)]
#[error("not a 64-character hex id: {0:?}")]
pub struct InvalidId(pub String);

/// Defines an id that is a blake3 digest of some content, as its own type
/// (so one kind of id is never taken for another), with the same bytes and
/// the same text forms as [`Hash32`]: `Display`, `FromStr` and `Serialize`
/// give 64 lowercase hex characters, `Debug` the first 12.
macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Hash32);

        impl $name {
            /// The id of the content `bytes`: their blake3 digest.
            pub fn of(bytes: &[u8]) -> Self {
                $name(Hash32::of(bytes))
            }

            /// The id held in `bytes` (as stored or sent); `None` unless it
            /// is exactly 32 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Hash32::from_slice(bytes).map($name)
            }

            /// The id made of these 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(Hash32(bytes))
            }

            /// The id's 32 bytes, as stored and sent.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }

            /// The id as 64 lowercase hex characters (the `Display` form).
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                $name(Hash32::from(h))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                s.parse().map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
    };
}

digest_id! {
    /// Identity of a track: blake3 of the whole file's bytes. The same bytes
    /// at two paths are one track with two locations.
    TrackId
}

digest_id! {
    /// Identity of a cover image: blake3 of the image bytes.
    CoverId
}

/// Tags as read from a file, with fallbacks already applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tags {
    /// Title; from the file name (minus a leading track number) when the file
    /// has no title tag (then [`Tags::title_from_path`] is set). Several title
    /// tags are joined with `"; "`.
    pub title: String,
    /// Track artists, one per entry, duplicates removed; empty when untagged.
    pub artists: Vec<String>,
    /// Album; from the folder name when the file has no album tag (then
    /// [`Tags::album_from_path`] is set).
    pub album: String,
    /// Album artist; empty when the file names none.
    pub album_artist: String,
    /// Track number on its disc (the leading number of a tag like `"07/12"`),
    /// or from a file name like `"03 - Song"` when untagged; never 0.
    pub track: Option<u32>,
    /// Number of tracks on the disc: the track-total tag, else the number after
    /// the slash of the track number (`"07/12"` → 12).
    pub track_total: Option<u32>,
    /// Disc number (leading number of the disc tag); never 0.
    pub disc: Option<u32>,
    /// Number of discs: the disc-total tag, else the number after the slash of
    /// the disc number.
    pub disc_total: Option<u32>,
    /// Four-digit year taken from the start of [`Tags::date`]; `None` when the
    /// date does not start with a year between 1000 and 9999.
    pub year: Option<u32>,
    /// The date as tagged (recording date, else year, release date, original
    /// release date), unparsed, e.g. `"2001-02-03"` or `"1979"`.
    pub date: Option<String>,
    /// Genres as tagged, duplicates removed.
    pub genres: Vec<String>,
    /// The compilation flag is set (`1`, `true` or `yes`, any case).
    pub compilation: bool,
    /// The title was derived from the file name (the file had no title tag).
    pub title_from_path: bool,
    /// The album was derived from the folder name (the file had no album tag).
    pub album_from_path: bool,
    /// Lyrics as tagged (unsynchronised text, or LRC with `[mm:ss.xx]`
    /// times); empty when none. At most [`MAX_LYRICS`] bytes are kept.
    pub lyrics: String,
}

/// Longest lyrics kept from a tag (bytes; longer ones are cut at a
/// character boundary).
pub const MAX_LYRICS: usize = 64 << 10;

impl Tags {
    /// All artists as one display string.
    pub fn artist(&self) -> String {
        self.artists.join("; ")
    }

    /// The artist an album is filed under: album artist, else the track artist.
    pub fn album_owner(&self) -> String {
        if self.album_artist.is_empty() {
            self.artist()
        } else {
            self.album_artist.clone()
        }
    }
}

/// Technical properties of the audio stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AudioInfo {
    /// Codec name in lowercase, e.g. `flac`, `mp3`, `aac`, `alac`, `opus`.
    pub codec: String,
    /// Container name in lowercase, e.g. `flac`, `ogg`, `mp4`, `wav`.
    pub container: String,
    /// Duration in milliseconds (0 when unknown).
    pub duration_ms: u64,
    /// Sample rate in Hz; never 0 for an indexed track.
    pub sample_rate: u32,
    /// Number of audio channels; never 0 for an indexed track.
    pub channels: u32,
    /// Bits per sample, for formats that have one (PCM and lossless); `None`
    /// when unknown or not applicable.
    pub bit_depth: Option<u32>,
    /// Average audio bitrate in kb/s; `None` when unknown.
    pub bitrate_kbps: Option<u32>,
}

/// One indexed track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// blake3 of the file's bytes.
    pub id: TrackId,
    /// Tags as read, with fallbacks applied.
    pub tags: Tags,
    /// Properties of the audio stream.
    pub audio: AudioInfo,
    /// File size in bytes.
    pub size: u64,
    /// The track's cover image: embedded art, else the image in its folder.
    pub cover: Option<CoverId>,
    /// Every path holding these bytes, sorted.
    pub paths: Vec<PathBuf>,
}

/// An album: the tracks sharing one album title and album owner (see
/// [`Tags::album_owner`]), compared after search normalisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Album {
    /// Album title.
    pub title: String,
    /// The artist the album is filed under.
    pub artist: String,
    /// Release year: the first one a member track gave; `None` when none did.
    pub year: Option<u32>,
    /// Cover image of the album: the first one a member track had.
    pub cover: Option<CoverId>,
    /// The album's tracks.
    pub tracks: Vec<TrackId>,
}

/// An artist and the tracks naming them as track artist or album artist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artist {
    /// Artist name, as first tagged.
    pub name: String,
    /// The artist's tracks.
    pub tracks: Vec<TrackId>,
}

/// A cover image, stored once per distinct content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cover {
    /// blake3 of [`Cover::data`].
    pub id: CoverId,
    /// MIME type of the image, e.g. `image/jpeg`.
    pub mime: String,
    /// The encoded image bytes.
    pub data: Vec<u8>,
}

/// A path that could not be indexed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    /// The path, as found by the scanner.
    #[serde(serialize_with = "ser_path")]
    pub path: PathBuf,
    /// Why it could not be indexed, as a sentence for the user.
    pub error: String,
}

/// Serialises a path as a string (lossily for non-UTF-8 names).
pub fn ser_path<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What the scanner last saw at one path; lets a rescan skip unchanged files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    /// File size in bytes when read.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when the
    /// filesystem gives none).
    pub mtime_ns: i64,
    /// The folder image this file was linked to when it was read.
    pub folder_cover: Option<CoverId>,
    /// Version of the scanner that read the file; a newer scanner re-reads.
    pub scanner_version: u32,
    /// What the scanner made of the file.
    pub outcome: Outcome,
}

/// What a scan made of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Indexed as this track.
    Track(TrackId),
    /// Could not be indexed.
    Error(String),
    /// Not an audio file: ignored.
    NotAudio,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_roundtrip() {
        let h = Hash32::of(b"abc");
        assert_eq!(h.to_hex().len(), 64);
        assert_eq!(h.to_hex().parse::<Hash32>().unwrap(), h);
        assert!("xyz".parse::<Hash32>().is_err());
    }

    #[test]
    fn ids_show_and_parse_like_their_digest() {
        let h = Hash32::of(b"abc");
        let (t, c) = (TrackId::of(b"abc"), CoverId::of(b"abc"));
        assert_eq!(t.as_bytes(), &h.0);
        assert_eq!(t.to_string(), h.to_string());
        assert_eq!(c.to_string(), h.to_string());
        assert_eq!(format!("{t:?} {c:?}"), format!("{h:?} {h:?}"));
        assert_eq!(h.to_hex().parse::<TrackId>().unwrap(), t);
        assert_eq!(h.to_hex().parse::<CoverId>().unwrap(), c);
        assert!("xyz".parse::<TrackId>().is_err());
        assert_eq!(TrackId::from_slice(&h.0), Some(t));
        assert_eq!(CoverId::from_bytes(h.0), c);
        assert_eq!(TrackId::from_slice(&h.0[1..]), None);
        let json = serde_json::to_string(&(t, Some(c))).unwrap();
        assert_eq!(json, serde_json::to_string(&(h, Some(h))).unwrap());
    }
}
