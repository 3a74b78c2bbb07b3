//! The transcoding engine: any library file to a gapless Ogg Opus stream.
//!
//! Pipeline, one pull at a time: [`source`] (demux + decode + gapless trims)
//! → [`mix`] (fold-down to stereo) → [`resample`] (to 48 kHz, delay
//! removed) → [`opus`] (encode 20 ms packets) → [`oggopus`] (pages). A
//! [`Transcode`] is a synchronous iterator of page bytes: the caller decides
//! which thread runs it (never an async runtime thread: it is pure CPU).
//!
//! Responsible for: the decoded length equalling the source's, sample-exact
//! start offsets, and clear errors for anything it cannot decode. It is the
//! only module that touches symphonia, rubato and the Opus codec. It must
//! never write files (the cache and the CLI do) nor block on anything but
//! reading its source.

mod input;
mod kbps;
mod mix;
pub mod mp3;
pub mod mp4;
mod oggopus;
pub mod opus;
mod resample;
mod source;
mod vorbis_resync;

use crate::model::TrackId;
use std::path::Path;

pub use kbps::{Kbps, KbpsError};
pub use resample::OUT_RATE;

/// Bumped whenever the pipeline would produce different bytes for the same
/// source and profile: it is part of every cache key.
/// 3: Vorbis streams that restart mid-stream are cut as libvorbis cuts them.
pub const PIPELINE_VERSION: u32 = 3;

/// Opus bitrates the profiles offer, kb/s. Any value in
/// [`MIN_KBPS`]..=[`MAX_KBPS`] is accepted; these are the named ones.
pub const PROFILES_KBPS: [u32; 4] = [64, 96, 128, 192];
/// The lowest Opus bitrate offered, kb/s.
pub const MIN_KBPS: u32 = 16;
/// The highest Opus bitrate offered, kb/s.
pub const MAX_KBPS: u32 = 256;

/// Why a transcode could not be opened or continued.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The source file could not be opened or read (the message names the
    /// path).
    #[error("cannot read the source: {0}")]
    Io(String),
    /// The file's format, codec, channel layout or sample rate is one the
    /// pipeline cannot decode or encode.
    #[error("cannot decode: {0}")]
    Unsupported(String),
    /// The file is damaged: its container or audio data does not decode.
    #[error("damaged file: {0}")]
    Corrupt(String),
    /// The [`Request`] is invalid: a bitrate outside
    /// [`MIN_KBPS`]..=[`MAX_KBPS`], or a start or duration that is not a
    /// non-negative (for duration: positive) finite number of seconds.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// libopus refused an operation (the message carries its error string
    /// and code).
    #[error("Opus encoder: {0}")]
    Encoder(String),
    /// A broken invariant inside the pipeline: a bug, not a property of the
    /// file.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to put in the stream's tags.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Written as `TUNEMESH_TRACK_ID` (hex) when set.
    pub track_id: Option<TrackId>,
    /// Written as `TITLE` unless empty.
    pub title: String,
    /// Each written as one `ARTIST` comment.
    pub artists: Vec<String>,
    /// Written as `ALBUM` unless empty.
    pub album: String,
}

/// One transcode to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// Target bitrate, kb/s (VBR).
    pub kbps: u32,
    /// Start offset in seconds; the output is a fresh stream from there.
    pub start: f64,
    /// Stop after this many seconds (an excerpt).
    pub duration: Option<f64>,
    /// Send an Opus or MP3 source at or below the bitrate unchanged (only
    /// for whole tracks: an offset always transcodes).
    pub passthrough: bool,
    /// Tags to write into the stream's comment header.
    pub meta: Meta,
}

impl Request {
    /// A whole-track request at `kbps`, passthrough allowed, no tags.
    pub fn new(kbps: u32) -> Request {
        Request {
            kbps,
            start: 0.0,
            duration: None,
            passthrough: true,
            meta: Meta::default(),
        }
    }

    fn validate(&self) -> Result<(), TranscodeError> {
        Kbps::new(self.kbps).map_err(|e| TranscodeError::BadRequest(e.to_string()))?;
        if !self.start.is_finite() || self.start < 0.0 {
            return Err(TranscodeError::BadRequest(format!(
                "start {} is not a time",
                self.start
            )));
        }
        if let Some(d) = self.duration {
            if !d.is_finite() || d <= 0.0 {
                return Err(TranscodeError::BadRequest(format!(
                    "duration {d} is not a time"
                )));
            }
        }
        Ok(())
    }
}

/// What [`open`] decided.
pub enum Output {
    /// Send the source file as it is: it already is `codec` at or below
    /// the asked bitrate.
    Passthrough {
        /// The source codec as the decoder names it: `"MP3"` or `"Opus"`.
        codec: &'static str,
        /// The file's average bitrate in kb/s (file size over duration).
        kbps: u32,
    },
    /// Stream this transcode.
    Opus(Box<Transcode>),
}

/// The encoder's name and version, part of every cache key and written in
/// each stream's vendor string.
pub fn encoder_id() -> String {
    opus::version()
}

/// Open `path` for `req`: decide passthrough, or start a transcode whose
/// header pages are ready at once.
pub fn open(path: &Path, req: &Request) -> Result<Output, TranscodeError> {
    req.validate()?;
    let mut source = source::Source::open(path)?;
    let info = source.info().clone();
    if req.passthrough
        && req.start == 0.0
        && req.duration.is_none()
        && matches!(info.codec, "MP3" | "Opus")
    {
        if let (Some(frames), Ok(meta)) = (info.frames, std::fs::metadata(path)) {
            let secs = frames as f64 / info.rate as f64;
            if secs > 0.0 {
                let kbps = (meta.len() as f64 * 8.0 / secs / 1000.0).round() as u32;
                if kbps <= req.kbps {
                    return Ok(Output::Passthrough {
                        codec: info.codec,
                        kbps,
                    });
                }
            }
        }
    }
    let rate = info.rate as f64;
    let start = (req.start * rate).round() as u64;
    source.start_at(start);
    if let Some(d) = req.duration {
        source.stop_at(start + (d * rate).round() as u64);
    }
    let mixer = mix::Mixer::new(&info.layout);
    let channels = mixer.outputs();
    let enc_rate = resample::encode_rate(info.rate);
    let scale = (OUT_RATE / enc_rate) as u64;
    let resampler = resample::Resampler::new(info.rate, enc_rate, channels)?;
    let encoder = opus::Encoder::new(channels, enc_rate, req.kbps)?;
    let lookahead = encoder.lookahead() as u64;
    let pre_skip = u16::try_from(lookahead * scale)
        .map_err(|_| TranscodeError::Internal(format!("encoder lookahead {lookahead}")))?;
    let m = &req.meta;
    let serial = m.track_id.map_or(0x746d_7368, |id| {
        let b = id.as_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    });
    let mux = oggopus::Muxer::new(
        serial,
        &oggopus::Head {
            channels: channels as u8,
            pre_skip,
            input_rate: info.rate,
            tags: &tags_packet(req),
        },
    );
    let encoder_frame = encoder.frame();
    Ok(Output::Opus(Box::new(Transcode {
        source,
        mixer,
        resampler,
        encoder,
        mux,
        channels,
        pre_skip: lookahead,
        frame: encoder_frame,
        scale,
        decoded: Vec::new(),
        mixed: Vec::new(),
        pcm: Vec::new(),
        pcm_at: 0,
        frames: 0,
        packets_samples: 0,
        done: false,
        info,
    })))
}

/// The vendor string of every stream: this crate's version and the
/// encoder's (both change the bytes).
fn vendor() -> String {
    format!("tunemesh {} ({})", env!("CARGO_PKG_VERSION"), encoder_id())
}

/// The exact OpusTags packet a transcode for `req` carries: the vendor
/// string and the tags of `req.meta`.
fn tags_packet(req: &Request) -> Vec<u8> {
    let mut comments = Vec::new();
    let m = &req.meta;
    if !m.title.is_empty() {
        comments.push(("TITLE".to_string(), m.title.clone()));
    }
    for a in &m.artists {
        comments.push(("ARTIST".to_string(), a.clone()));
    }
    if !m.album.is_empty() {
        comments.push(("ALBUM".to_string(), m.album.clone()));
    }
    if let Some(id) = m.track_id {
        comments.push(("TUNEMESH_TRACK_ID".to_string(), id.to_hex()));
    }
    if req.start > 0.0 {
        comments.push(("TUNEMESH_START".to_string(), format!("{:.3}", req.start)));
    }
    oggopus::tags_packet(&vendor(), &comments)
}

/// Everything besides the source file's bytes that decides the bytes of
/// the transcode [`open`] makes for `req`, as one byte string: the
/// pipeline and encoder versions, the bitrate, start and duration, and the
/// exact OpusTags packet (vendor string with this crate's version, tags).
/// Whatever else the output holds (channels, pre-skip, input rate, Ogg
/// serial) follows from the source and these. Two requests with the same
/// spec on the same source give the same bytes; a cache key is the source's
/// track id and this (see [`crate::cache::Key::new`]).
///
/// `passthrough` is not in it: when it is honoured there is no transcode,
/// and when it is not the bytes do not depend on it.
pub fn output_spec(req: &Request) -> Vec<u8> {
    let mut spec = Vec::with_capacity(256);
    spec.extend_from_slice(b"ogg-opus\0");
    spec.extend_from_slice(&PIPELINE_VERSION.to_le_bytes());
    let encoder = encoder_id();
    spec.extend_from_slice(&(encoder.len() as u32).to_le_bytes());
    spec.extend_from_slice(encoder.as_bytes());
    spec.extend_from_slice(&req.kbps.to_le_bytes());
    spec.extend_from_slice(&req.start.to_bits().to_le_bytes());
    match req.duration {
        None => spec.push(0),
        Some(d) => {
            spec.push(1);
            spec.extend_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    let tags = tags_packet(req);
    spec.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    spec.extend_from_slice(&tags);
    spec
}

/// The granule position of the last complete Ogg page in `tail` (the end
/// of a stream's bytes), if there is one whose CRC holds.
pub fn last_granule(tail: &[u8]) -> Option<u64> {
    oggopus::last_granule(tail)
}

/// A running transcode: call [`next_pages`](Self::next_pages) until it
/// returns `None`.
pub struct Transcode {
    source: source::Source,
    mixer: mix::Mixer,
    resampler: resample::Resampler,
    encoder: opus::Encoder,
    mux: oggopus::Muxer,
    channels: usize,
    /// Encoder lookahead, at the encoder's rate (all counts below are at
    /// that rate; granules are at 48 kHz, `scale` times larger).
    pre_skip: u64,
    /// Samples per channel in one 20 ms packet at the encoder's rate.
    frame: usize,
    scale: u64,
    decoded: Vec<f32>,
    mixed: Vec<f32>,
    /// 48 kHz interleaved samples waiting for the encoder, from `pcm_at`.
    pcm: Vec<f32>,
    pcm_at: usize,
    /// Frames produced by the resampler so far.
    frames: u64,
    /// Samples covered by the packets written so far.
    packets_samples: u64,
    done: bool,
    info: source::SourceInfo,
}

impl Transcode {
    /// Codec of the source ("FLAC", "MP3" …).
    pub fn source_codec(&self) -> &'static str {
        self.info.codec
    }

    /// Channels of the output (1 or 2).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The last granule position the stream ends on (48 kHz samples, the
    /// pre-skip included), once [`next_pages`](Self::next_pages) has
    /// returned `None`. Checks the pipeline's own accounting: the samples
    /// encoded must be exactly what the source decoded to, resampled. The
    /// cache keeps an output only if its last page carries this granule.
    pub fn end_granule(&self) -> Result<u64, TranscodeError> {
        if !self.done {
            return Err(TranscodeError::Internal(
                "the transcode has not ended".into(),
            ));
        }
        let decoded = self.source.delivered();
        let rate = u128::from(self.info.rate);
        let enc_rate = u128::from(OUT_RATE) / u128::from(self.scale);
        let want = ((u128::from(decoded) * enc_rate + rate / 2) / rate) as u64;
        if want != self.frames {
            return Err(TranscodeError::Internal(format!(
                "the source decoded to {decoded} frames but {} were encoded (want {want})",
                self.frames
            )));
        }
        Ok((self.frames + self.pre_skip) * self.scale)
    }

    /// The next complete pages, or `None` when the stream has ended. The
    /// first call returns the two header pages without decoding anything.
    pub fn next_pages(&mut self) -> Result<Option<Vec<u8>>, TranscodeError> {
        loop {
            let bytes = self.mux.take();
            if !bytes.is_empty() {
                return Ok(Some(bytes));
            }
            if self.done {
                return Ok(None);
            }
            self.step()?;
        }
    }

    /// Decode one packet's worth of the source and encode whatever whole
    /// Opus frames that completes; at the end, flush everything.
    fn step(&mut self) -> Result<(), TranscodeError> {
        self.decoded.clear();
        let more = self.source.read(&mut self.decoded)?;
        let before = self.pcm.len();
        if more {
            self.mixed.clear();
            self.mixer.mix(&self.decoded, &mut self.mixed);
            self.resampler.process(&self.mixed, &mut self.pcm)?;
        } else {
            self.source.check_complete()?;
            self.resampler.finish(&mut self.pcm)?;
        }
        self.frames += ((self.pcm.len() - before) / self.channels) as u64;
        let (ch, frame, scale) = (self.channels, self.frame, self.scale);
        while self.pcm.len() - self.pcm_at >= frame * ch {
            let packet = self
                .encoder
                .encode(&self.pcm[self.pcm_at..self.pcm_at + frame * ch])?;
            self.pcm_at += frame * ch;
            self.packets_samples += frame as u64;
            if more || self.packets_samples < self.frames + self.pre_skip {
                self.mux.packet(packet, self.packets_samples * scale, false);
            } else {
                // The input ended exactly here, pre-skip included.
                self.mux
                    .packet(packet, (self.frames + self.pre_skip) * scale, true);
                self.done = true;
                return Ok(());
            }
        }
        // Keep the unencoded tail at the front of the buffer.
        self.pcm.drain(..self.pcm_at);
        self.pcm_at = 0;
        if !more {
            // Pad with silence so the decoder returns every input frame
            // after the pre-skip; the last granule trims the padding.
            let needed = self.frames + self.pre_skip;
            while self.packets_samples < needed {
                self.pcm.resize(frame * ch, 0.0);
                let packet = self.encoder.encode(&self.pcm[..frame * ch])?;
                self.pcm.clear();
                self.packets_samples += frame as u64;
                let last = self.packets_samples >= needed;
                let granule = if last { needed } else { self.packets_samples };
                self.mux.packet(packet, granule * scale, last);
            }
            self.done = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short 16-bit stereo WAV at 44.1 kHz.
    fn wav(dir: &Path) -> std::path::PathBuf {
        let frames = 4410u32;
        let data = frames * 4;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&44_100u32.to_le_bytes());
        b.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        for i in 0..frames {
            let v = ((i as f32 * 0.05).sin() * 8000.0) as i16;
            b.extend_from_slice(&v.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
        }
        let path = dir.join("tone.wav");
        std::fs::write(&path, b).unwrap();
        path
    }

    fn request(title: &str) -> Request {
        let mut req = Request::new(96);
        req.passthrough = false;
        req.meta = Meta {
            track_id: Some(TrackId::from_bytes([3; 32])),
            title: title.into(),
            artists: vec!["A".into(), "B".into()],
            album: "C".into(),
        };
        req
    }

    #[test]
    fn the_output_spec_holds_the_exact_tags_packet_the_stream_carries() {
        let dir = tempfile::tempdir().unwrap();
        let path = wav(dir.path());
        let req = request("Song");
        let Output::Opus(mut t) = open(&path, &req).unwrap() else {
            panic!("a WAV is transcoded")
        };
        let headers = t.next_pages().unwrap().unwrap();
        let tags = tags_packet(&req);
        assert!(tags.starts_with(b"OpusTags"));
        assert!(
            memchr::memmem::find(&headers, &tags).is_some(),
            "the header pages carry the packet the spec names"
        );
        let spec = output_spec(&req);
        assert!(spec.ends_with(&tags));
        let vendor = vendor();
        assert!(vendor.contains(env!("CARGO_PKG_VERSION")) && vendor.contains(&encoder_id()));
        assert!(memchr::memmem::find(&spec, vendor.as_bytes()).is_some());
    }

    #[test]
    fn specs_differ_exactly_when_the_bytes_would() {
        let base = output_spec(&request("Song"));
        assert_eq!(base, output_spec(&request("Song")));
        assert_ne!(base, output_spec(&request("Song 2")));
        let mut r = request("Song");
        r.meta.artists.pop();
        assert_ne!(base, output_spec(&r));
        let mut r = request("Song");
        r.kbps = 128;
        assert_ne!(base, output_spec(&r));
        let mut r = request("Song");
        r.duration = Some(10.0);
        assert_ne!(base, output_spec(&r));
        // Passthrough decides whether there is a transcode, not its bytes.
        let mut r = request("Song");
        r.passthrough = true;
        assert_eq!(base, output_spec(&r));
    }
}
