//! Domain types shared by every module: what a track, an album or a scan
//! error *is*, independent of how the index stores it or how it travels.
//!
//! This module must never depend on sled, lofty, prost or any I/O: it is the
//! vocabulary the other modules speak.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A 32-byte blake3 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub fn of(bytes: &[u8]) -> Self {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Hash32(bytes.try_into().ok()?))
    }

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

#[derive(Debug, thiserror::Error)]
#[error("not a 64-character hex id: {0:?}")]
pub struct InvalidId(pub String);

/// Identity of a track: blake3 of the whole file's bytes. The same bytes at
/// two paths are one track with two locations.
pub type TrackId = Hash32;
/// Identity of a cover image: blake3 of the image bytes.
pub type CoverId = Hash32;

/// Tags as read from a file, with fallbacks already applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tags {
    pub title: String,
    pub artists: Vec<String>,
    pub album: String,
    pub album_artist: String,
    pub track: Option<u32>,
    pub track_total: Option<u32>,
    pub disc: Option<u32>,
    pub disc_total: Option<u32>,
    pub year: Option<u32>,
    pub date: Option<String>,
    pub genres: Vec<String>,
    pub compilation: bool,
    /// The title was derived from the file name (the file had no title tag).
    pub title_from_path: bool,
    /// The album was derived from the folder name (the file had no album tag).
    pub album_from_path: bool,
}

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
    pub codec: String,
    pub container: String,
    pub duration_ms: u64,
    pub sample_rate: u32,
    pub channels: u32,
    pub bit_depth: Option<u32>,
    pub bitrate_kbps: Option<u32>,
}

/// One indexed track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: TrackId,
    pub tags: Tags,
    pub audio: AudioInfo,
    pub size: u64,
    pub cover: Option<CoverId>,
    /// Every path holding these bytes, sorted.
    pub paths: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Album {
    pub title: String,
    pub artist: String,
    pub year: Option<u32>,
    pub cover: Option<CoverId>,
    pub tracks: Vec<TrackId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artist {
    pub name: String,
    pub tracks: Vec<TrackId>,
}

/// A cover image, stored once per distinct content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cover {
    pub id: CoverId,
    pub mime: String,
    pub data: Vec<u8>,
}

/// A path that could not be indexed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    #[serde(serialize_with = "ser_path")]
    pub path: PathBuf,
    pub error: String,
}

/// Serialises a path as a string (lossily for non-UTF-8 names).
pub fn ser_path<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What the scanner last saw at one path; lets a rescan skip unchanged files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    /// The folder image this file was linked to when it was read.
    pub folder_cover: Option<CoverId>,
    /// Version of the scanner that read the file; a newer scanner re-reads.
    pub scanner_version: u32,
    pub outcome: Outcome,
}

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
}
