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

use crate::cache::{Cache, CacheError, CacheReader, Key, Producer};
use crate::model::Track;
use crate::transcode::{self, Output, Request, Transcode, TranscodeError};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

pub const OPUS_MIME: &str = "audio/ogg; codecs=opus";

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no copy of track {0} is readable here")]
    NoSource(String),
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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

#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub profile: Profile,
    pub start: f64,
    pub duration: Option<f64>,
    pub passthrough: bool,
    /// Skip this many bytes of the stream (a resumed download, an HTTP
    /// range). Transcodes are deterministic, so a skipped encode gives the
    /// same bytes as the first one did.
    pub offset: u64,
}

impl StreamRequest {
    pub fn new(profile: Profile) -> StreamRequest {
        StreamRequest {
            profile,
            start: 0.0,
            duration: None,
            passthrough: true,
            offset: 0,
        }
    }
}

/// How a stream is being produced (shown to users, asserted by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Original,
    Passthrough,
    CacheHit,
    /// A live encode, started for this request or shared with another.
    Encode,
    /// A one-off transcode from a start offset.
    Live,
}

pub struct Stream {
    pub mime: &'static str,
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
    pub fn new(cache: Option<Cache>) -> Streamer {
        Streamer { cache }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The cache key of a whole-track transcode of `track` at `kbps`.
    pub fn key(track: &Track, kbps: u32) -> Key {
        let channels = if track.audio.channels == 1 { 1 } else { 2 };
        Key::new(
            track.id,
            "opus",
            kbps,
            channels,
            &transcode::encoder_id(),
            transcode::PIPELINE_VERSION,
        )
    }

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
        let key = Self::key(track, kbps);
        if whole {
            if let Some(cache) = &self.cache {
                if let Some(r) = cache.open_at(&key, 0)? {
                    let redo = (!r.is_complete()).then(|| Redo {
                        path: path.clone(),
                        req: self.request(track, kbps, req),
                    });
                    return Ok(cached(r, redo));
                }
            }
        }
        let treq = self.request(track, kbps, req);
        let t = match transcode::open(&path, &treq)? {
            Output::Passthrough { .. } => return original(Via::Passthrough),
            Output::Opus(t) => t,
        };
        if let (Some(cache), true) = (&self.cache, whole) {
            let mut t = Some(t);
            match cache.get_or_start(key, || Ok(Pages(t.take().expect("called once")))) {
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
    fn request(&self, track: &Track, kbps: u32, req: &StreamRequest) -> Request {
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
