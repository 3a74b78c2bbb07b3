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
        // An MP3 source at or below the limit goes as it is; others are
        // made by `mp3_stream`.
        Some("mp3") => return Ok(Bitrate::Original),
        Some(f) => {
            return Err(Failure::new(
                0,
                format!("unknown format {f:?}: raw, opus or mp3"),
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
    let lt = super::browse::song_of(c).await?;
    let (node, t) = (&c.s.node, lt.track.id);
    if kind == Kind::Stream && c.p.get("format") == Some("mp3") {
        let max: u32 = c.p.num("maxBitRate", 0u32)?;
        let is_mp3 = lt.track.audio.codec == "mp3";
        let fits = max == 0 || lt.track.audio.bitrate_kbps.is_some_and(|k| k <= max);
        if !(is_mp3 && fits) {
            let kbps = if max == 0 { 192 } else { max };
            let offset_s: f64 = c.p.num("timeOffset", 0.0f64)?;
            return mp3_stream(c, &t.to_hex(), kbps, (offset_s.max(0.0) * 1000.0) as u64).await;
        }
    }
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
    // `estimateContentLength`: we give the exact length instead (an encode
    // is many times faster than real time, so waiting for it costs little).
    let length = if c.p.flag("estimateContentLength", false) {
        crate::http::stream::Length::Exact
    } else {
        crate::http::stream::Length::AsItComes
    };
    match crate::http::stream::respond(node, &t.to_hex(), br, start_ms, &c.headers, length).await {
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

/// An MP3 made here from the Opus stream any holder serves (see
/// `transcode::mp3`): a pump task reads the stream, converts a chunk per
/// blocking job, and feeds a bounded channel the body reads from.
async fn mp3_stream(c: &Ctx, id: &str, kbps: u32, start_ms: u64) -> Result<Reply, Failure> {
    use crate::transcode::mp3::{OpusToMp3, SOURCE_KBPS};
    use tokio::io::AsyncReadExt;
    let mut ns =
        c.s.node
            .open_stream(id, Bitrate::from_wire(SOURCE_KBPS), start_ms, 0)
            .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let tasks = c.s.web.tasks.clone();
    let jobs = tasks.clone();
    tasks.spawn(async move {
        let mut conv = Some(OpusToMp3::new(kbps));
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match ns.reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let chunk = buf[..n].to_vec();
            let Some(mut cv) = conv.take() else { return };
            let r = jobs
                .blocking(move || {
                    let out = if n == 0 { cv.finish() } else { cv.push(&chunk) };
                    (cv, out)
                })
                .await;
            let (cv, out) = match r {
                Ok(x) => x,
                Err(_) => return,
            };
            conv = Some(cv);
            match out {
                Ok(bytes) if !bytes.is_empty() => {
                    if tx.send(Ok(bytes.into())).await.is_err() {
                        return; // the player went away
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_of(rx));
    Ok(Reply::Raw(
        (
            [
                (header::CONTENT_TYPE, "audio/mpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
    ))
}

/// A receiver as a stream of body chunks.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
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

/// `getLyrics` (by `artist` and `title`): the lyrics tag of the best
/// matching song that has one, as text.
pub(super) async fn lyrics(c: &Ctx) -> Result<Reply, Failure> {
    let node = &c.s.node;
    let (artist, title) = (
        c.p.get("artist").unwrap_or(""),
        c.p.get("title").unwrap_or(""),
    );
    let query = format!("{artist} {title}");
    let found = node.catalog().search(query.trim(), 20).tracks;
    let labelled = node.label(found).await?;
    let hit = labelled.iter().find(|t| !t.track.tags.lyrics.is_empty());
    let e = match hit {
        Some(t) => Elem::new()
            .attr("artist", t.track.tags.artist())
            .attr("title", t.track.tags.title.as_str())
            .text(
                lines(&t.track.tags.lyrics)
                    .into_iter()
                    .map(|(_, l)| l)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        None => Elem::new(),
    };
    Ok(Reply::Doc(vec![("lyrics", e)]))
}

/// `getLyricsBySongId` (the `songLyrics` extension): the song's lyrics
/// tag as structured lyrics, synced when it is LRC.
pub(super) async fn lyrics_by_song(c: &Ctx) -> Result<Reply, Failure> {
    let lt = super::browse::song_of(c).await?;
    let g = &lt.track.tags;
    let mut list = Vec::new();
    if !g.lyrics.is_empty() {
        let ls = lines(&g.lyrics);
        let synced = ls.iter().any(|(t, _)| t.is_some());
        let line = ls
            .into_iter()
            .filter(|(t, _)| !synced || t.is_some())
            .map(|(t, v)| Elem::new().opt("start", t).attr("value", v))
            .collect();
        list.push(
            Elem::new()
                .attr("displayArtist", g.artist())
                .attr("displayTitle", g.title.as_str())
                .attr("lang", "xxx")
                .attr("synced", synced)
                .list("line", line),
        );
    }
    Ok(Reply::Doc(vec![(
        "lyricsList",
        Elem::new().list("structuredLyrics", list),
    )]))
}

/// Lyrics as lines, each with its LRC start time in ms when it has one
/// (`[mm:ss.xx]text`; tags like `[ar:…]` are dropped). Pure.
pub(super) fn lines(text: &str) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let mut rest = raw.trim_end_matches('\r');
        let mut times = Vec::new();
        let mut tag_only = false;
        while let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            let inner = &after[..end];
            match lrc_time(inner) {
                Some(ms) => times.push(ms),
                None if inner.contains(':') && times.is_empty() => tag_only = true,
                None => break,
            }
            rest = &after[end + 1..];
        }
        if tag_only && times.is_empty() {
            continue;
        }
        if times.is_empty() {
            out.push((None, rest.to_string()));
        }
        for t in times {
            out.push((Some(t), rest.trim().to_string()));
        }
    }
    if out.iter().any(|(t, _)| t.is_some()) {
        out.sort_by_key(|(t, _)| t.unwrap_or(u64::MAX));
    }
    out
}

/// `mm:ss`, `mm:ss.xx` or `mm:ss.xxx` in ms.
fn lrc_time(s: &str) -> Option<u64> {
    let (m, rest) = s.split_once(':')?;
    let (sec, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if m.is_empty()
        || !m.bytes().all(|b| b.is_ascii_digit())
        || sec.len() != 2
        || !sec.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 3
    {
        return None;
    }
    let mut f = frac.to_string();
    while f.len() < 3 {
        f.push('0');
    }
    Some(
        m.parse::<u64>().ok()? * 60_000
            + sec.parse::<u64>().ok()? * 1000
            + f.parse::<u64>().ok()?,
    )
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn lrc_and_plain_lyrics() {
        let l = lines("[ar:Someone]\n[00:01.50]Hello\n[00:00.20][00:03.00]Again\nnot timed");
        assert_eq!(
            l,
            vec![
                (Some(200), "Again".into()),
                (Some(1500), "Hello".into()),
                (Some(3000), "Again".into()),
                (None, "not timed".into())
            ]
        );
        assert_eq!(
            lines("one\ntwo"),
            vec![(None, "one".into()), (None, "two".into())]
        );
        assert_eq!(lines("[1:02.5]x")[0].0, Some(62_500));
    }
}
