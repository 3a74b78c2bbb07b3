//! Streams: one indexed track, as the bytes a player receives.
//!
//! Given a [`Track`] and a [`Profile`], picks the cheapest way to deliver
//! it: the original file, a complete cached transcode, a live encode that
//! other listeners may already be following, a passthrough (an Opus or MP3
//! source that already fits the bitrate), or, for a start offset, a
//! one-off transcode from that point (never cached). Callers (the CLI now,
//! the mesh and the HTTP API later) only read bytes.
//!
//! Responsible for the choice and for the content type. It must never
//! decode audio itself (that is [`crate::transcode`]) nor manage cache files
//! (that is [`crate::cache`]).

use crate::cache::{Cache, CacheError, CacheReader, Key, Priority, Producer};
use crate::model::Track;
use crate::transcode::{self, Kbps, Output, Request, Transcode, TranscodeError};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;

/// Content type of every transcoded stream (and of original Ogg Opus files).
pub const OPUS_MIME: &str = "audio/ogg; codecs=opus";

/// Why a stream could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// None of the track's paths is a readable file here (the hex track id).
    #[error("no copy of track {0} is readable here")]
    NoSource(String),
    /// The transcode could not start or failed midway.
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    /// The transcode cache failed (see [`CacheError`]).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Opening, reading or skipping into the track's file failed.
    #[error("{path}: {source}")]
    Io {
        /// The track's file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl StreamError {
    /// The error as a listener may see it (an HTTP client, another
    /// device): what went wrong, without file-system paths. The full error
    /// goes to the node's log.
    pub fn public_message(&self) -> String {
        match self {
            StreamError::NoSource(id) => format!("no copy of track {id} is readable here"),
            StreamError::Transcode(TranscodeError::Io(_)) => "cannot read the track's file".into(),
            StreamError::Transcode(e) => e.to_string(),
            StreamError::Cache(CacheError::Io { source, .. }) => {
                format!("transcode cache: {}", source.kind())
            }
            StreamError::Cache(e) => e.to_string(),
            StreamError::Io { source, .. } => {
                format!("cannot read the track's file: {}", source.kind())
            }
        }
    }
}

/// What the listener asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    /// The file as it is on disk.
    Original,
    /// Ogg Opus at this bitrate, kb/s.
    Opus(u32),
}

/// What a listener names when it asks for a track: the original file, or
/// Ogg Opus at a bitrate in range. The one parser of `--bitrate`,
/// `?bitrate=` and the like: `original`, `128` or `128k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bitrate {
    /// The file as it is on disk.
    Original,
    /// Ogg Opus at this bitrate.
    Opus(Kbps),
}

/// A bitrate that is neither `original` nor kb/s in range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bitrate must be original or {}..={} kb/s, not {given:?}",
    transcode::MIN_KBPS,
    transcode::MAX_KBPS
)]
pub struct BitrateError {
    /// What was given.
    pub given: String,
}

impl Bitrate {
    /// What a listener gets when it names no bitrate: Opus at 128 kb/s.
    pub const DEFAULT: Bitrate = Bitrate::Opus(Kbps::DEFAULT);

    /// From the mesh's wire form (`OpenStream.kbps`): 0 is the original,
    /// anything else Opus at the nearest bitrate in range.
    pub fn from_wire(kbps: u32) -> Bitrate {
        match kbps {
            0 => Bitrate::Original,
            k => Bitrate::Opus(Kbps::clamped(k)),
        }
    }

    /// The mesh's wire form: 0 for the original, else kb/s.
    pub fn wire(self) -> u32 {
        match self {
            Bitrate::Original => 0,
            Bitrate::Opus(k) => k.get(),
        }
    }
}

impl Default for Bitrate {
    fn default() -> Bitrate {
        Bitrate::DEFAULT
    }
}

impl FromStr for Bitrate {
    type Err = BitrateError;

    fn from_str(s: &str) -> Result<Bitrate, BitrateError> {
        if s == "original" {
            return Ok(Bitrate::Original);
        }
        s.parse().map(Bitrate::Opus).map_err(|_| BitrateError {
            given: s.to_owned(),
        })
    }
}

/// `original` or the kb/s, as [`FromStr`] reads it back (a query value).
impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bitrate::Original => f.write_str("original"),
            Bitrate::Opus(k) => k.fmt(f),
        }
    }
}

impl From<Bitrate> for Profile {
    fn from(b: Bitrate) -> Profile {
        match b {
            Bitrate::Original => Profile::Original,
            Bitrate::Opus(k) => Profile::Opus(k.get()),
        }
    }
}

/// A request to [`Streamer::open`]: which form of the track, and from where.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Original file or an Opus transcode at a bitrate.
    pub profile: Profile,
    /// Start offset in seconds into the track; above 0 the stream is a
    /// one-off transcode that starts there (never cached, never passthrough).
    /// Ignored for [`Profile::Original`].
    pub start: f64,
    /// Stop after this many seconds (an excerpt); `None` for the rest of the
    /// track. Like `start`, makes the stream a one-off transcode.
    pub duration: Option<f64>,
    /// Allow sending an Opus or MP3 file unchanged when its average bitrate
    /// is at or below the asked one (whole tracks only).
    pub passthrough: bool,
    /// Skip this many bytes of the stream (a resumed download, an HTTP
    /// range). Transcodes are deterministic, so a skipped encode gives the
    /// same bytes as the first one did.
    pub offset: u64,
    /// How urgently a new encode is wanted (the offline mirror's batch
    /// encodes yield to listeners).
    pub priority: Priority,
}

impl StreamRequest {
    /// A whole-track request for `profile` (a [`Profile`] or a
    /// [`Bitrate`]), passthrough allowed.
    pub fn new(profile: impl Into<Profile>) -> StreamRequest {
        StreamRequest {
            profile: profile.into(),
            start: 0.0,
            duration: None,
            passthrough: true,
            offset: 0,
            priority: Priority::Live,
        }
    }
}

/// How a stream is being produced (shown to users, asserted by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The original file, as asked ([`Profile::Original`]).
    Original,
    /// The original file, sent unchanged because it is already Opus or MP3
    /// at or below the asked bitrate.
    Passthrough,
    /// A complete transcode read from the cache.
    CacheHit,
    /// A live encode, started for this request or shared with another.
    Encode,
    /// A one-off transcode from a start offset.
    Live,
}

/// An open stream: a [`Read`] of the bytes a player receives.
pub struct Stream {
    /// Content type of the bytes, e.g. [`OPUS_MIME`] or `audio/flac`.
    pub mime: &'static str,
    /// How the bytes are produced.
    pub via: Via,
    /// Total length when known in advance (originals, complete entries).
    pub len: Option<u64>,
    body: Body,
}

enum Body {
    File(File),
    Cache {
        reader: CacheReader,
        /// How to make the same bytes without the cache, should its disk
        /// fail under a live encode.
        redo: Option<Redo>,
    },
    Live {
        transcode: Box<Transcode>,
        pending: Vec<u8>,
        at: usize,
    },
}

impl Stream {
    /// Whether `len` is final (a file or a finished cache entry): byte
    /// ranges can be served.
    pub fn is_complete(&self) -> bool {
        match &self.body {
            Body::File(_) => true,
            Body::Cache { reader, .. } => reader.is_complete(),
            Body::Live { .. } => false,
        }
    }

    /// Skip `n` bytes: a seek for files, reading and dropping otherwise.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        if let Body::File(f) = &mut self.body {
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(n))?;
            return Ok(());
        }
        let copied = io::copy(&mut (&mut *self).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("offset {n} is past the end of the stream ({copied} bytes)"),
            ));
        }
        Ok(())
    }
}

/// A transcode to open again: its source and request.
struct Redo {
    path: PathBuf,
    req: Request,
}

impl Redo {
    fn open(&self) -> Result<Box<Transcode>, TranscodeError> {
        match transcode::open(&self.path, &self.req)? {
            Output::Opus(t) => Ok(t),
            Output::Passthrough { .. } => Err(TranscodeError::Internal(
                "a passthrough where an encode was cached".into(),
            )),
        }
    }
}

/// Whether `e` says the cache's disk failed (not the encode).
fn is_storage_failure(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|x| x.downcast_ref::<CacheError>())
        .is_some_and(|c| matches!(c, CacheError::Storage(_)))
}

impl Stream {
    /// The cache could not keep the encode this stream follows: go on with
    /// an encode of our own from the same byte (transcodes are
    /// deterministic, so the bytes are the same).
    fn continue_uncached(&mut self, why: &io::Error) -> io::Result<()> {
        let Body::Cache {
            reader,
            redo: Some(redo),
        } = &self.body
        else {
            return Err(io::Error::other(why.to_string()));
        };
        tracing::warn!("{why}; streaming uncached");
        let pos = reader.position();
        let transcode = redo.open().map_err(io::Error::other)?;
        self.body = Body::Live {
            transcode,
            pending: Vec::new(),
            at: 0,
        };
        self.via = Via::Live;
        self.skip(pos)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Body::Cache { reader, .. } = &mut self.body {
            match reader.read(buf) {
                Err(e) if is_storage_failure(&e) => self.continue_uncached(&e)?,
                r => return r,
            }
        }
        match &mut self.body {
            Body::File(f) => f.read(buf),
            Body::Cache { reader, .. } => reader.read(buf),
            Body::Live {
                transcode,
                pending,
                at,
            } => {
                while *at == pending.len() {
                    match transcode.next_pages().map_err(io::Error::other)? {
                        Some(p) => {
                            *pending = p;
                            *at = 0;
                        }
                        None => return Ok(0),
                    }
                }
                let n = (pending.len() - *at).min(buf.len());
                buf[..n].copy_from_slice(&pending[*at..*at + n]);
                *at += n;
                Ok(n)
            }
        }
    }
}

struct Pages(Box<Transcode>);

impl Producer for Pages {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.0.next_pages().map_err(|e| e.to_string())
    }

    fn check_output(&mut self, tail: &[u8]) -> Result<(), String> {
        let want = self.0.end_granule().map_err(|e| e.to_string())?;
        match transcode::last_granule(tail) {
            Some(g) if g == want => Ok(()),
            got => Err(format!("the last page ends at granule {got:?}, not {want}")),
        }
    }
}

/// Opens streams; holds the cache (if any).
pub struct Streamer {
    cache: Option<Cache>,
}

impl Streamer {
    /// A streamer caching whole-track transcodes in `cache`, or caching
    /// nothing when `None`.
    pub fn new(cache: Option<Cache>) -> Streamer {
        Streamer { cache }
    }

    /// The transcode cache, if there is one.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The cache key of a whole-track transcode of `track` at `kbps`: the
    /// track id and every other input that decides the output's bytes
    /// (its tags among them).
    pub fn key(track: &Track, kbps: u32) -> Key {
        let whole = StreamRequest::new(Profile::Opus(kbps));
        Self::key_of(track, &Self::request(track, kbps, &whole))
    }

    fn key_of(track: &Track, treq: &Request) -> Key {
        Key::new(track.id, &transcode::output_spec(treq))
    }

    /// Open `track` for `req`, choosing the cheapest way to produce it and
    /// skipping the first `req.offset` bytes.
    ///
    /// Fails when no path of the track is a readable file
    /// ([`StreamError::NoSource`]), when the file cannot be opened or skipped
    /// into ([`StreamError::Io`]), when the transcode cannot start (bad
    /// request, undecodable file) or when the cache fails; a cache whose
    /// disk refuses to start a new entry gives an uncached stream instead.
    pub fn open(&self, track: &Track, req: &StreamRequest) -> Result<Stream, StreamError> {
        let mut s = self.open_at_zero(track, req)?;
        if req.offset > 0 {
            s.skip(req.offset).map_err(|source| StreamError::Io {
                path: track.paths.first().cloned().unwrap_or_default(),
                source,
            })?;
        }
        Ok(s)
    }

    fn open_at_zero(&self, track: &Track, req: &StreamRequest) -> Result<Stream, StreamError> {
        let path = track
            .paths
            .iter()
            .find(|p| p.is_file())
            .ok_or_else(|| StreamError::NoSource(track.id.to_hex()))?
            .clone();
        let original = |via| -> Result<Stream, StreamError> {
            let file = File::open(&path).map_err(|source| StreamError::Io {
                path: path.clone(),
                source,
            })?;
            let len = file.metadata().ok().map(|m| m.len());
            Ok(Stream {
                mime: mime_of(&track.audio.codec, &track.audio.container),
                via,
                len,
                body: Body::File(file),
            })
        };
        let kbps = match req.profile {
            Profile::Original => return original(Via::Original),
            Profile::Opus(k) => k,
        };
        let whole = req.start == 0.0 && req.duration.is_none();
        let treq = Self::request(track, kbps, req);
        let key = Self::key_of(track, &treq);
        if whole {
            if let Some(cache) = &self.cache {
                if let Some(r) = cache.open_at(&key, 0)? {
                    let redo = (!r.is_complete()).then(|| Redo {
                        path: path.clone(),
                        req: treq.clone(),
                    });
                    return Ok(cached(r, redo));
                }
            }
        }
        let t = match transcode::open(&path, &treq)? {
            Output::Passthrough { .. } => return original(Via::Passthrough),
            Output::Opus(t) => t,
        };
        if let (Some(cache), true) = (&self.cache, whole) {
            let mut t = Some(t);
            let producer = || Ok(Pages(t.take().expect("called once")));
            match cache.get_or_start(key, producer, req.priority) {
                Ok(r) => {
                    let redo = Redo { path, req: treq };
                    return Ok(cached(r, Some(redo)));
                }
                // The cache's disk refuses even a new file: stream uncached.
                Err(e @ (CacheError::Io { .. } | CacheError::Storage(_))) => {
                    tracing::warn!("{e}; streaming uncached");
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(live(Redo { path, req: treq }.open()?));
        }
        Ok(live(t))
    }

    /// The transcode request for `track` at `kbps`.
    fn request(track: &Track, kbps: u32, req: &StreamRequest) -> Request {
        let mut treq = Request::new(kbps);
        treq.start = req.start;
        treq.duration = req.duration;
        treq.passthrough = req.passthrough;
        treq.meta = transcode::Meta {
            track_id: Some(track.id),
            title: track.tags.title.clone(),
            artists: track.tags.artists.clone(),
            album: track.tags.album.clone(),
        };
        treq
    }
}

/// A stream read from the cache (a complete entry or a live encode).
fn cached(r: CacheReader, redo: Option<Redo>) -> Stream {
    let via = if r.is_complete() {
        Via::CacheHit
    } else {
        Via::Encode
    };
    Stream {
        mime: OPUS_MIME,
        via,
        len: r.total_len(),
        body: Body::Cache { reader: r, redo },
    }
}

/// A stream straight from a transcode, cached nowhere.
fn live(transcode: Box<Transcode>) -> Stream {
    Stream {
        mime: OPUS_MIME,
        via: Via::Live,
        len: None,
        body: Body::Live {
            transcode,
            pending: Vec::new(),
            at: 0,
        },
    }
}

/// The content type of an original file, from the scanner's container and
/// codec names.
pub fn mime_of(codec: &str, container: &str) -> &'static str {
    match (container, codec) {
        ("mpeg", _) => "audio/mpeg",
        ("flac", _) => "audio/flac",
        ("ogg", "opus") => OPUS_MIME,
        ("ogg", "flac") => "audio/ogg; codecs=flac",
        ("ogg", _) => "audio/ogg",
        ("mp4", _) => "audio/mp4",
        ("wav", _) => "audio/wav",
        ("aiff", _) => "audio/aiff",
        ("adts", _) => "audio/aac",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AudioInfo, Tags, TrackId};

    fn track(title: &str) -> Track {
        Track {
            id: TrackId::from_bytes([7; 32]),
            tags: Tags {
                title: title.into(),
                artists: vec!["Someone".into()],
                album: "An Album".into(),
                ..Tags::default()
            },
            audio: AudioInfo {
                channels: 2,
                ..AudioInfo::default()
            },
            size: 1000,
            cover: None,
            paths: Vec::new(),
        }
    }

    #[test]
    fn a_key_names_the_tags_the_output_carries() {
        let a = track("Song");
        assert_eq!(Streamer::key(&a, 128), Streamer::key(&a.clone(), 128));
        // Same source bytes, bitrate and pipeline; only a tag differs (the
        // OpusTags bytes differ, so must the key).
        assert_ne!(Streamer::key(&a, 128), Streamer::key(&track("Other"), 128));
        let mut b = a.clone();
        b.tags.artists.push("Guest".into());
        assert_ne!(Streamer::key(&a, 128), Streamer::key(&b, 128));
        assert_ne!(Streamer::key(&a, 128), Streamer::key(&a, 96));
        // A tag the output does not carry leaves the key alone.
        let mut c = a.clone();
        c.tags.genres = vec!["Jazz".into()];
        assert_eq!(Streamer::key(&a, 128), Streamer::key(&c, 128));
    }

    #[test]
    fn bitrates_parse_once_for_every_surface() {
        assert_eq!("original".parse(), Ok(Bitrate::Original));
        assert_eq!("96".parse(), Ok(Bitrate::Opus(Kbps::new(96).unwrap())));
        assert_eq!("96k".parse(), Ok(Bitrate::Opus(Kbps::new(96).unwrap())));
        for bad in ["Original", "", "15", "257", "fast", "0"] {
            let e = bad.parse::<Bitrate>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("bitrate must be original or 16..=256 kb/s, not {bad:?}")
            );
        }
        for b in [Bitrate::Original, Bitrate::DEFAULT] {
            assert_eq!(b.to_string().parse(), Ok(b));
            assert_eq!(Bitrate::from_wire(b.wire()), b);
        }
        assert_eq!(Bitrate::DEFAULT.to_string(), "128");
        assert_eq!(Bitrate::from_wire(1000).wire(), transcode::MAX_KBPS);
        assert_eq!(Profile::from(Bitrate::DEFAULT), Profile::Opus(128));
        assert_eq!(Profile::from(Bitrate::Original), Profile::Original);
    }
}
