//! Reading tags and audio properties with lofty. The only place (with the
//! test-library generator) that touches lofty.
//!
//! Never trusts the file: lofty runs under `catch_unwind` (it can panic on
//! hostile input) and with its allocation limit, and every field is
//! optional. Fallbacks that need the path (title from the file name) are the
//! caller's job.

use crate::model::{AudioInfo, Tags};
use lofty::config::{ParseOptions, ParsingMode};
use lofty::file::{AudioFile, FileType, TaggedFile, TaggedFileExt};
use lofty::picture::{MimeType, PictureType};
use lofty::prelude::ItemKey;
use lofty::tag::Tag;
use std::io::{Read, Seek};

use super::probe::Checked;
pub use super::probe::Comments;
use crate::limits;

/// What a file says about itself.
#[derive(Debug, Default)]
pub struct Parsed {
    pub tags: Tags,
    pub audio: AudioInfo,
    /// The best embedded picture: the front cover if any, else the first.
    pub picture: Option<(String, Vec<u8>)>,
}

/// Parse tags and properties. `Err` carries a message for the user.
///
/// `checked` is what the structural checks learnt: the file's raw Vorbis
/// comments in file order (text fields are taken from them instead of
/// lofty's tag view, which reorders repeated fields), and what the bytes
/// say of the duration. `len` is the file's size.
///
/// A tag lofty cannot parse (an ID3v2 frame with a lying size, say) does
/// not cost the track: the audio properties are read again with tags
/// ignored, as ffmpeg plays such files.
pub fn read<R: Read + Seek>(
    mut reader: R,
    ft: FileType,
    checked: Checked,
    len: u64,
) -> Result<Parsed, String> {
    let first = guarded(|| read_inner(&mut reader, ft, &checked, len, TagPolicy::Read));
    match first {
        Err(e) if !matches!(ft, FileType::Vorbis | FileType::Opus | FileType::Flac) => {
            reader
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|io| io.to_string())?;
            match guarded(|| read_inner(&mut reader, ft, &checked, len, TagPolicy::Skip)) {
                Ok(p) => {
                    tracing::warn!("unreadable tags ({e}); indexed without them");
                    Ok(p)
                }
                Err(_) => match checked.pcm {
                    // lofty refuses what our own header reading accepted
                    // (and the decoder plays): index it from that.
                    Some(pcm) => {
                        tracing::warn!("{e}; indexed from its format header");
                        Ok(from_pcm_header(ft, pcm, &checked, len))
                    }
                    None => Err(e),
                },
            }
        }
        r => r,
    }
}

/// What a WAV or AIFF file is, from its raw header alone (no tags).
fn from_pcm_header(
    ft: FileType,
    pcm: super::probe::PcmFacts,
    checked: &Checked,
    len: u64,
) -> Parsed {
    let secs = checked.duration_from_bytes.unwrap_or(0.0);
    let bps = f64::from(pcm.rate) * f64::from(pcm.channels) * f64::from(pcm.bits);
    Parsed {
        tags: Tags::default(),
        audio: AudioInfo {
            codec: codec_name(&ft).to_owned(),
            container: container_name(&ft).to_owned(),
            duration_ms: (secs * 1000.0).round() as u64,
            sample_rate: pcm.rate,
            channels: pcm.channels,
            bit_depth: Some(pcm.bits).filter(|&b| b > 0),
            bitrate_kbps: Some((bps / 1000.0).round() as u32).filter(|&b| b > 0 && len > 0),
        },
        picture: None,
    }
}

/// Whether to read tags or only the audio properties.
#[derive(Clone, Copy, PartialEq)]
enum TagPolicy {
    Read,
    Skip,
}

/// Run lofty, turning a panic into an error.
fn guarded(f: impl FnOnce() -> Result<Parsed, String>) -> Result<Parsed, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(format!("the tag reader crashed on this file ({msg})"))
        }
    }
}

fn read_inner<R: Read + Seek>(
    mut reader: R,
    ft: FileType,
    checked: &Checked,
    len: u64,
    policy: TagPolicy,
) -> Result<Parsed, String> {
    let opts = ParseOptions::new()
        .parsing_mode(ParsingMode::BestAttempt)
        .read_tags(policy == TagPolicy::Read)
        .read_cover_art(policy == TagPolicy::Read);
    let err = |e: lofty::error::FileParseError| format!("cannot read {}: {e}", container_name(&ft));
    let (tagged, codec): (TaggedFile, &'static str) = match ft {
        FileType::Mp4 => {
            let f = lofty::mp4::Mp4File::read_from(&mut reader, opts).map_err(err)?;
            let codec = match f.properties().codec() {
                Some(lofty::mp4::Mp4Codec::AAC) => "aac",
                Some(lofty::mp4::Mp4Codec::ALAC) => "alac",
                Some(lofty::mp4::Mp4Codec::MP3) => "mp3",
                Some(lofty::mp4::Mp4Codec::FLAC) => "flac",
                _ => "unknown",
            };
            (f.into(), codec)
        }
        FileType::Mpeg => {
            let f = lofty::mpeg::MpegFile::read_from(&mut reader, opts).map_err(err)?;
            let codec = match f.properties().layer() {
                lofty::mpeg::Layer::Layer1 => "mp1",
                lofty::mpeg::Layer::Layer2 => "mp2",
                _ => "mp3",
            };
            (f.into(), codec)
        }
        other => {
            let f = lofty::probe::Probe::with_file_type(&mut reader, other)
                .options(opts)
                .read()
                .map_err(err)?;
            (f, codec_name(&other))
        }
    };
    let props = tagged.properties();
    let mut audio = AudioInfo {
        codec: codec.to_owned(),
        container: container_name(&ft).to_owned(),
        duration_ms: props.duration().as_millis() as u64,
        sample_rate: props.sample_rate().unwrap_or(0),
        channels: u32::from(props.channels().unwrap_or(0)),
        bit_depth: props.bit_depth().map(u32::from).filter(|&b| b > 0),
        bitrate_kbps: props.audio_bitrate().filter(|&b| b > 0),
    };
    if audio.sample_rate == 0 || audio.channels == 0 {
        return Err(format!(
            "{} file without a usable audio stream (sample rate {}, channels {})",
            container_name(&ft),
            audio.sample_rate,
            audio.channels
        ));
    }
    limits::check_stream(audio.sample_rate.into(), audio.channels.into())
        .map_err(|e| format!("{} file: {e}", container_name(&ft)))?;
    audio.duration_ms = plausible_duration_ms(audio.duration_ms, checked, len);
    // Primary tag first, then the others (ID3v1 behind ID3v2, ...).
    let mut tags: Vec<&Tag> = Vec::new();
    if let Some(p) = tagged.primary_tag() {
        tags.push(p);
    }
    tags.extend(
        tagged
            .tags()
            .iter()
            .filter(|t| Some(t.tag_type()) != tagged.primary_tag().map(|p| p.tag_type())),
    );
    let text = match &checked.comments {
        Some(c) => tags_from(&Source::Comments(c)),
        None => tags_from(&Source::Tags(&tags)),
    };
    Ok(Parsed {
        tags: text,
        audio,
        picture: best_picture(&tags),
    })
}

/// The duration to believe: the header's, unless the bytes present cannot
/// hold it (then what they hold, exactly for PCM, estimated otherwise).
fn plausible_duration_ms(claimed_ms: u64, checked: &Checked, len: u64) -> u64 {
    let claimed = claimed_ms as f64 / 1000.0;
    let density = checked.density.unwrap_or(limits::Density::Compressed);
    let secs = match (limits::check_duration(claimed, len, density), density) {
        // PCM: the bytes are the truth, and a data chunk that claims more
        // than the file holds is the usual lie.
        (_, limits::Density::Pcm { .. }) => checked
            .duration_from_bytes
            .map_or(claimed, |b| b.min(claimed)),
        (limits::Claim::Plausible(s), _) => checked.duration_from_bytes.unwrap_or(s),
        (capped @ limits::Claim::Capped { .. }, _) => {
            tracing::warn!("{capped}");
            checked.duration_from_bytes.unwrap_or(capped.seconds())
        }
    };
    (secs * 1000.0).round() as u64
}

/// Where text fields come from.
enum Source<'a> {
    /// lofty's tags, primary first.
    Tags(&'a [&'a Tag]),
    /// Raw Vorbis comments in file order.
    Comments(&'a Comments),
}

/// Vorbis comment field names for a key, preferred first.
fn vorbis_names(key: &ItemKey) -> &'static [&'static str] {
    match key {
        ItemKey::TrackTitle => &["TITLE"],
        ItemKey::TrackArtist => &["ARTIST"],
        ItemKey::TrackArtists => &["ARTISTS"],
        ItemKey::AlbumTitle => &["ALBUM"],
        ItemKey::AlbumArtist => &["ALBUMARTIST", "ALBUM ARTIST"],
        ItemKey::TrackNumber => &["TRACKNUMBER"],
        ItemKey::TrackTotal => &["TRACKTOTAL", "TOTALTRACKS"],
        ItemKey::DiscNumber => &["DISCNUMBER"],
        ItemKey::DiscTotal => &["DISCTOTAL", "TOTALDISCS"],
        ItemKey::RecordingDate => &["DATE"],
        ItemKey::Year => &["YEAR"],
        ItemKey::ReleaseDate => &["RELEASEDATE"],
        ItemKey::OriginalReleaseDate => &["ORIGINALDATE", "ORIGINALYEAR"],
        ItemKey::Genre => &["GENRE"],
        ItemKey::FlagCompilation => &["COMPILATION"],
        ItemKey::Lyrics => &["LYRICS", "UNSYNCEDLYRICS"],
        _ => &[],
    }
}

fn strings<'a>(src: &Source<'a>, key: ItemKey) -> Vec<&'a str> {
    let clean = |v: Vec<&'a str>| -> Vec<&'a str> {
        v.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    };
    match src {
        Source::Tags(tags) => {
            for t in tags.iter() {
                let v = clean(t.get_strings(key).collect());
                if !v.is_empty() {
                    return v;
                }
            }
            vec![]
        }
        Source::Comments(c) => {
            for name in vorbis_names(&key) {
                let v = clean(
                    c.iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .collect(),
                );
                if !v.is_empty() {
                    return v;
                }
            }
            vec![]
        }
    }
}

fn first<'a>(src: &Source<'a>, key: ItemKey) -> Option<&'a str> {
    strings(src, key).into_iter().next()
}

/// Leading number of "7", "07/12", "2;5", " 3 ".
fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&n| n > 0)
}

/// Number after a slash in "7/12".
fn after_slash(s: &str) -> Option<u32> {
    s.split_once('/').and_then(|(_, t)| leading_number(t))
}

fn dedup(v: Vec<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

fn tags_from(tags: &Source<'_>) -> Tags {
    let track_raw = first(tags, ItemKey::TrackNumber);
    let disc_raw = first(tags, ItemKey::DiscNumber);
    let date = [
        ItemKey::RecordingDate,
        ItemKey::Year,
        ItemKey::ReleaseDate,
        ItemKey::OriginalReleaseDate,
    ]
    .into_iter()
    .find_map(|k| first(tags, k));
    let year = date.and_then(|d| {
        let y: String = d.chars().take_while(char::is_ascii_digit).take(4).collect();
        y.parse::<u32>().ok().filter(|y| (1000..=9999).contains(y))
    });
    let compilation = first(tags, ItemKey::FlagCompilation)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let mut artists = dedup(strings(tags, ItemKey::TrackArtist));
    if artists.is_empty() {
        artists = dedup(strings(tags, ItemKey::TrackArtists));
    }
    Tags {
        title: strings(tags, ItemKey::TrackTitle).join("; "),
        artists,
        album: first(tags, ItemKey::AlbumTitle)
            .unwrap_or_default()
            .to_owned(),
        album_artist: first(tags, ItemKey::AlbumArtist)
            .unwrap_or_default()
            .to_owned(),
        track: track_raw.and_then(leading_number),
        track_total: first(tags, ItemKey::TrackTotal)
            .and_then(leading_number)
            .or_else(|| track_raw.and_then(after_slash)),
        disc: disc_raw.and_then(leading_number),
        disc_total: first(tags, ItemKey::DiscTotal)
            .and_then(leading_number)
            .or_else(|| disc_raw.and_then(after_slash)),
        year,
        date: date.map(str::to_owned),
        genres: dedup(strings(tags, ItemKey::Genre)),
        compilation,
        title_from_path: false,
        album_from_path: false,
        lyrics: first(tags, ItemKey::Lyrics)
            .map(cut_lyrics)
            .unwrap_or_default(),
    }
}

/// Lyrics within [`crate::model::MAX_LYRICS`], cut at a character boundary.
fn cut_lyrics(s: &str) -> String {
    let mut end = s.len().min(crate::model::MAX_LYRICS);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn best_picture(tags: &[&Tag]) -> Option<(String, Vec<u8>)> {
    let pics = tags.iter().flat_map(|t| t.pictures());
    let best = pics
        .clone()
        .find(|p| p.pic_type() == PictureType::CoverFront)
        .or_else(|| pics.clone().next())?;
    if best.data().is_empty() {
        return None;
    }
    let mime = match best.mime_type() {
        Some(MimeType::Unknown(m)) if !m.is_empty() => m.clone(),
        Some(MimeType::Unknown(_)) | None => sniff_image_mime(best.data()).to_owned(),
        Some(m) => m.as_str().to_owned(),
    };
    Some((mime, best.data().to_vec()))
}

/// MIME type of an image from its first bytes.
pub fn sniff_image_mime(data: &[u8]) -> &'static str {
    match data {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'B', b'M', ..] => "image/bmp",
        _ => "application/octet-stream",
    }
}

pub fn container_name(ft: &FileType) -> &'static str {
    match ft {
        FileType::Mpeg => "mpeg",
        FileType::Flac => "flac",
        FileType::Vorbis | FileType::Opus | FileType::Speex => "ogg",
        FileType::Mp4 => "mp4",
        FileType::Wav => "wav",
        FileType::Aiff => "aiff",
        FileType::Aac => "adts",
        FileType::Ape => "ape",
        FileType::WavPack => "wavpack",
        FileType::Mpc => "musepack",
        _ => "unknown",
    }
}

fn codec_name(ft: &FileType) -> &'static str {
    match ft {
        FileType::Flac => "flac",
        FileType::Vorbis => "vorbis",
        FileType::Opus => "opus",
        FileType::Speex => "speex",
        FileType::Wav | FileType::Aiff => "pcm",
        FileType::Aac => "aac",
        FileType::Ape => "ape",
        FileType::WavPack => "wavpack",
        FileType::Mpc => "musepack",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(leading_number("07/12"), Some(7));
        assert_eq!(after_slash("07/12"), Some(12));
        assert_eq!(leading_number("2;5;10"), Some(2));
        assert_eq!(leading_number("x"), None);
        assert_eq!(leading_number("0"), None);
    }
}
