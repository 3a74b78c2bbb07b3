//! Conversions between domain types and their stored (protobuf) encoding.
//!
//! Prost types never leave the index module: everything above it sees
//! `crate::model`. Encodings must be deterministic (sorted repeated fields),
//! because the snapshot root hashes the encoded track records.

use crate::model::{AudioInfo, CoverId, FileState, Outcome, Tags, Track, TrackId};
use crate::proto;
use std::path::{Path, PathBuf};

/// Raw bytes of a path, exactly as the OS gave them (non-UTF-8 safe).
#[cfg(unix)]
pub fn path_bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

/// The path whose raw bytes are `b`: the inverse of [`path_bytes`].
#[cfg(unix)]
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
pub fn path_bytes(p: &Path) -> &[u8] {
    p.to_str().unwrap_or_default().as_bytes()
}

#[cfg(not(unix))]
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

fn opt(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

pub fn track_to_proto(t: &Track) -> proto::TrackRecord {
    let mut paths: Vec<Vec<u8>> = t.paths.iter().map(|p| path_bytes(p).to_vec()).collect();
    paths.sort();
    paths.dedup();
    proto::TrackRecord {
        id: t.id.as_bytes().to_vec(),
        tags: Some(proto::TrackTags {
            title: t.tags.title.clone(),
            artists: t.tags.artists.clone(),
            album: t.tags.album.clone(),
            album_artist: t.tags.album_artist.clone(),
            track: t.tags.track.unwrap_or(0),
            track_total: t.tags.track_total.unwrap_or(0),
            disc: t.tags.disc.unwrap_or(0),
            disc_total: t.tags.disc_total.unwrap_or(0),
            year: t.tags.year.unwrap_or(0),
            date: t.tags.date.clone().unwrap_or_default(),
            genres: t.tags.genres.clone(),
            compilation: t.tags.compilation,
            title_from_path: t.tags.title_from_path,
            album_from_path: t.tags.album_from_path,
            lyrics: t.tags.lyrics.clone(),
        }),
        audio: Some(proto::AudioProperties {
            codec: t.audio.codec.clone(),
            container: t.audio.container.clone(),
            duration_ms: t.audio.duration_ms,
            sample_rate: t.audio.sample_rate,
            channels: t.audio.channels,
            bit_depth: t.audio.bit_depth.unwrap_or(0),
            bitrate_kbps: t.audio.bitrate_kbps.unwrap_or(0),
        }),
        size: t.size,
        cover: t.cover.map(|c| c.as_bytes().to_vec()).unwrap_or_default(),
        paths,
    }
}

pub fn track_from_proto(r: proto::TrackRecord) -> Option<Track> {
    let tags = r.tags.unwrap_or_default();
    let audio = r.audio.unwrap_or_default();
    Some(Track {
        id: TrackId::from_slice(&r.id)?,
        tags: Tags {
            title: tags.title,
            artists: tags.artists,
            album: tags.album,
            album_artist: tags.album_artist,
            track: opt(tags.track),
            track_total: opt(tags.track_total),
            disc: opt(tags.disc),
            disc_total: opt(tags.disc_total),
            year: opt(tags.year),
            date: (!tags.date.is_empty()).then_some(tags.date),
            genres: tags.genres,
            compilation: tags.compilation,
            title_from_path: tags.title_from_path,
            album_from_path: tags.album_from_path,
            lyrics: tags.lyrics,
        },
        audio: AudioInfo {
            codec: audio.codec,
            container: audio.container,
            duration_ms: audio.duration_ms,
            sample_rate: audio.sample_rate,
            channels: audio.channels,
            bit_depth: opt(audio.bit_depth),
            bitrate_kbps: opt(audio.bitrate_kbps),
        },
        size: r.size,
        cover: cover_id_opt(&r.cover),
        paths: r.paths.iter().map(|p| path_from_bytes(p)).collect(),
    })
}

pub fn state_to_proto(s: &FileState) -> proto::FileState {
    use proto::file_state::Outcome as P;
    proto::FileState {
        size: s.size,
        mtime_ns: s.mtime_ns,
        folder_cover: s
            .folder_cover
            .map(|c| c.as_bytes().to_vec())
            .unwrap_or_default(),
        scanner_version: s.scanner_version,
        outcome: Some(match &s.outcome {
            Outcome::Track(id) => P::Track(id.as_bytes().to_vec()),
            Outcome::Error(e) => P::Error(e.clone()),
            Outcome::NotAudio => P::NotAudio(true),
        }),
    }
}

pub fn state_from_proto(p: proto::FileState) -> Option<FileState> {
    use proto::file_state::Outcome as P;
    let outcome = match p.outcome? {
        P::Track(id) => Outcome::Track(TrackId::from_slice(&id)?),
        P::Error(e) => Outcome::Error(e),
        P::NotAudio(_) => Outcome::NotAudio,
    };
    Some(FileState {
        size: p.size,
        mtime_ns: p.mtime_ns,
        folder_cover: cover_id_opt(&p.folder_cover),
        scanner_version: p.scanner_version,
        outcome,
    })
}

pub fn cover_id_opt(b: &[u8]) -> Option<CoverId> {
    CoverId::from_slice(b)
}
