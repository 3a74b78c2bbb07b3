//! Bytes through Subsonic: `stream` (with `maxBitRate`, `format`,
//! `timeOffset`, ranges), `download` (the original), `getCoverArt` (any of
//! our ids, with `size`), and the lyrics endpoints. Errors are documents
//! (HTTP 200), as the spec wants even for binary endpoints.

use super::ids::{self, Id};
use super::response::Elem;
use super::{Ctx, Failure, Reply};
use crate::stream::Bitrate;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;

/// `stream` or `download`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `stream`: transcoded unless asked otherwise.
    Stream,
    /// `download`: the original file.
    Download,
}

/// The bitrate a `stream` call asks for: `format=raw` (or a source at or
/// below `maxBitRate`) is the original; otherwise Opus at `maxBitRate`
/// (clamped to what the encoder takes), 128 kb/s when no limit is given.
fn bitrate(c: &Ctx, source_kbps: Option<u32>) -> Result<Bitrate, Failure> {
    let max: u32 = c.p.num("maxBitRate", 0u32)?;
    match c.p.get("format") {
        Some("raw") => return Ok(Bitrate::Original),
        None | Some("") | Some("opus") | Some("ogg") => {}
        Some("mp3") => {
            return Err(Failure::new(
                0,
                "mp3 output is not available on this server yet; ask for format=opus or raw",
            ))
        }
        Some(f) => {
            return Err(Failure::new(
                0,
                format!("unknown format {f:?}: raw or opus"),
            ))
        }
    }
    if max > 0 && source_kbps.is_some_and(|s| s <= max) {
        return Ok(Bitrate::Original);
    }
    if max == 0 {
        return Ok(Bitrate::DEFAULT);
    }
    let clamped = max.clamp(crate::transcode::MIN_KBPS, crate::transcode::MAX_KBPS);
    Ok(Bitrate::from_wire(clamped))
}

/// `stream` / `download`.
pub(super) async fn stream(c: &Ctx, kind: Kind) -> Result<Reply, Failure> {
    let id = c.p.need("id")?;
    let Some(Id::Song(t)) = ids::parse(id) else {
        return Err(Failure::not_found("that song"));
    };
    let node = &c.s.node;
    let ct = node
        .catalog()
        .track(&t)
        .ok_or_else(|| Failure::not_found("that song"))?;
    let lt = node
        .label(vec![ct])
        .await?
        .pop()
        .ok_or_else(|| Failure::not_found("that song"))?;
    let br = match kind {
        Kind::Download => Bitrate::Original,
        Kind::Stream => bitrate(c, lt.track.audio.bitrate_kbps)?,
    };
    let offset_s: f64 = c.p.num("timeOffset", 0.0f64)?;
    if !offset_s.is_finite() || offset_s < 0.0 {
        return Err(Failure::new(0, "timeOffset must be ≥ 0 seconds"));
    }
    // A time offset on an original cannot be cut from the file: it is
    // served as a transcode from there (the `transcodeOffset` extension).
    let (br, start_ms) = match (br, (offset_s * 1000.0) as u64) {
        (Bitrate::Original, ms) if ms > 0 && kind == Kind::Stream => (Bitrate::DEFAULT, ms),
        (b, ms) => (b, ms),
    };
    match crate::http::stream::respond(node, &t.to_hex(), br, start_ms, &c.headers).await {
        Ok(mut r) => {
            if kind == Kind::Download {
                let name = format!(
                    "attachment; filename=\"{}.{}\"",
                    t.to_hex(),
                    super::browse::suffix(&lt.track)
                );
                if let Ok(v) = name.parse() {
                    r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
                }
            }
            Ok(Reply::Raw(r))
        }
        Err(e) => Err(Failure::new(
            if e.0 == axum::http::StatusCode::NOT_FOUND {
                70
            } else {
                0
            },
            e.1,
        )),
    }
}

/// `getCoverArt` (`id`: a cover, an album, a song or an artist; `size`).
pub(super) async fn cover(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let id = c.p.need("id")?;
    let cover = match ids::parse(id) {
        Some(Id::Cover(cv)) => Some(cv),
        Some(Id::Album(a)) => node.catalog().album(&a).and_then(|(i, _)| i.cover),
        Some(Id::Artist(a)) => node
            .catalog()
            .artist(&a)
            .and_then(|(_, albums)| albums.iter().find_map(|al| al.cover)),
        Some(Id::Song(t)) => {
            let ct = node.catalog().track(&t);
            node.label(ct.into_iter().collect())
                .await?
                .first()
                .and_then(|lt| lt.track.cover)
        }
        _ => None,
    }
    .ok_or_else(|| Failure::not_found("cover art"))?;
    let size: Option<u32> = match c.p.get("size") {
        None | Some("") => None,
        Some(_) => Some(c.p.num("size", 0u32)?.clamp(8, 2048)),
    };
    let img = node
        .cover(cover, size)
        .await?
        .ok_or_else(|| Failure::not_found("cover art"))?;
    Ok(Reply::Raw(
        (
            [
                (header::CONTENT_TYPE, img.mime),
                (
                    header::CACHE_CONTROL,
                    "private, max-age=31536000, immutable".to_string(),
                ),
            ],
            Body::from(img.data),
        )
            .into_response(),
    ))
}

/// `getLyrics` (by artist and title): none are kept yet; a valid, empty
/// answer.
pub(super) fn lyrics(c: &Ctx) -> Reply {
    let e = Elem::new()
        .opt("artist", c.p.get("artist").map(str::to_string))
        .opt("title", c.p.get("title").map(str::to_string));
    Reply::Doc(vec![("lyrics", e)])
}

/// `getLyricsBySongId` (the `songLyrics` extension): an empty list.
pub(super) fn lyrics_by_song(_c: &Ctx) -> Reply {
    Reply::Doc(vec![(
        "lyricsList",
        Elem::new().list("structuredLyrics", vec![]),
    )])
}
