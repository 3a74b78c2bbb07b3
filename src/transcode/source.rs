//! Decoding: any supported file to interleaved f32 frames at the source's
//! own rate, with the encoder delay and padding of the source removed.
//!
//! Symphonia demuxes and decodes everything but Opus, which goes to the
//! Opus decoder of [`super::opus`]. Decoders run with their own gapless
//! trimming off: the trims are applied here, from the packets' trim fields
//! (set by the demuxer from LAME/Xing headers, Ogg granules and pre-skip)
//! and from the MP4 edit list (see [`super::mp4`]), because symphonia 0.6
//! neither reads MP4 edit lists nor trims Vorbis correctly across some page
//! boundaries. Positions count *valid* frames from the start of the track,
//! never container timestamps.

use super::{opus, TranscodeError};
use std::fs::File;
use std::io::Seek;
use std::path::Path;
use symphonia::core::audio::{Channels, Position};
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

/// What the decoder learned about the source before the first frame.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Human name of the codec ("FLAC", "MP3", …).
    pub codec: &'static str,
    pub rate: u32,
    /// Speaker position of each interleaved channel, in order.
    pub layout: Vec<Position>,
    /// Valid frames in the track, when the container says.
    pub frames: Option<u64>,
}

enum Decoder {
    Symphonia(Box<dyn AudioDecoder>),
    Opus(opus::Decoder),
}

pub struct Source {
    reader: Box<dyn FormatReader>,
    decoder: Decoder,
    track_id: u32,
    info: SourceInfo,
    /// Honour packet trims (the container carries gapless information).
    packet_trims: bool,
    /// Frames still to drop from the start (MP4 edit list priming).
    skip: u64,
    /// Valid frames delivered so far: the position of the next frame.
    pos: u64,
    /// Frames before this position are decoded but not delivered.
    start: u64,
    /// Last valid frame + 1, when an edit list bounds the track.
    end: Option<u64>,
    /// The packet after the one being decoded.
    next: Option<Packet>,
    /// Scratch space for one decoded packet.
    scratch: Vec<f32>,
    finished: bool,
    /// Damaged packets and pages skipped so far.
    skipped: u64,
    /// Damaged Ogg pages the input has seen (symphonia's Ogg reader skips
    /// them itself, quietly), and how many of them were reported.
    damaged_pages: super::input::Damaged,
    damaged_seen: usize,
    /// Names the file in every warning about it.
    span: tracing::Span,
    /// Vorbis restarts in mid-stream, cut as libvorbis cuts them (see
    /// [`super::vorbis_resync`]); the next one first.
    resyncs: std::collections::VecDeque<super::vorbis_resync::Resync>,
    /// Index of the next packet of our track, counted as the pages do.
    packet_index: u64,
    /// Samples counted since the last restart, libvorbis's way.
    since_restart: Option<i64>,
}

/// Consecutive damaged packets or pages after which a file is taken to
/// have no more decodable audio (each skip makes progress through the
/// file, so this only bounds the time spent on garbage).
const MAX_CONSECUTIVE_SKIPS: u32 = 1_000;

impl Source {
    pub fn open(path: &Path) -> Result<Source, TranscodeError> {
        let span = tracing::warn_span!("decode", path = %path.display());
        let _entered = span.clone().entered();
        let file =
            File::open(path).map_err(|e| TranscodeError::Io(format!("{}: {e}", path.display())))?;
        let edit = super::mp4::edit_list(&mut &file).unwrap_or(None);
        (&file)
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| TranscodeError::Io(format!("{}: {e}", path.display())))?;
        let file = super::input::Input::new(file)
            .map_err(|e| TranscodeError::Io(format!("{}: {e}", path.display())))?;
        let damaged_pages = file.damaged_pages();
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymError::Unsupported(_) => {
                    TranscodeError::Unsupported("no decoder recognises this file's format".into())
                }
                e => TranscodeError::Corrupt(format!("cannot read the container: {e}")),
            })?;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| TranscodeError::Unsupported("the file has no audio track".into()))?;
        let track_id = track.id;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| TranscodeError::Unsupported("the file has no audio track".into()))?
            .clone();
        let codec = codec_name(params.codec);
        let channels = params
            .channels
            .clone()
            .ok_or_else(|| TranscodeError::Corrupt(format!("{codec}: channel count unknown")))?;
        // Plausibility first: nothing below may size a buffer or a
        // resampler table from a header field that lies.
        let raw_rate = params.sample_rate.unwrap_or(48_000);
        crate::limits::check_stream(raw_rate.into(), channels.count() as u64)
            .map_err(|e| TranscodeError::Corrupt(format!("{codec}: {e}")))?;
        let layout = layout_of(&channels);
        let packet_trims = track.delay.is_some() || track.padding.is_some();
        let decoder = if params.codec == CODEC_ID_OPUS {
            let head = params.extra_data.as_deref().unwrap_or(&[]);
            Decoder::Opus(opus::Decoder::new(head)?)
        } else {
            let opts = AudioDecoderOptions::default().gapless(false);
            match symphonia::default::get_codecs().make_audio_decoder(&params, &opts) {
                Ok(d) => Decoder::Symphonia(d),
                Err(_) => {
                    return Err(TranscodeError::Unsupported(format!(
                        "no decoder for {codec} audio"
                    )))
                }
            }
        };
        let rate = match &decoder {
            Decoder::Opus(_) => 48_000,
            Decoder::Symphonia(_) => params
                .sample_rate
                .filter(|r| *r > 0)
                .ok_or_else(|| TranscodeError::Corrupt(format!("{codec}: sample rate unknown")))?,
        };
        let (mut skip, end, mut frames) = match edit {
            Some(e) if e.timescale == rate as u64 || e.timescale == 0 => {
                (e.skip, e.frames, e.frames)
            }
            _ => (0, None, track.num_frames),
        };
        // A frame count the bytes cannot hold is a lying header (a Xing
        // count of years in a small MP3): forget it, the audio decides.
        let bytes = file_len(path);
        let density = if params.codec == CODEC_ID_MP3 {
            crate::limits::Density::Mpeg
        } else {
            crate::limits::Density::Compressed
        };
        if let Some(n) = frames {
            let claim = crate::limits::check_duration(n as f64 / f64::from(rate), bytes, density);
            if let crate::limits::Claim::Capped { .. } = claim {
                tracing::warn!("{codec}: {claim}; trusting the audio");
                frames = None;
            }
        }
        let is_opus = matches!(decoder, Decoder::Opus(_));
        if is_opus {
            // Symphonia's Ogg reader reports the pre-skip as the track delay
            // but leaves it in the packets (it trims only the end).
            let pre_skip = track.delay.unwrap_or(0) as u64;
            skip += pre_skip;
            frames = frames.map(|f| f.saturating_sub(pre_skip));
        }
        let resyncs = if params.codec == CODEC_ID_VORBIS {
            File::open(path)
                .map(|f| super::vorbis_resync::restarts(&mut std::io::BufReader::new(f)))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Source {
            resyncs: resyncs.into(),
            packet_index: 0,
            since_restart: None,
            reader,
            decoder,
            track_id,
            info: SourceInfo {
                codec,
                rate,
                layout,
                frames,
            },
            packet_trims,
            skip,
            pos: 0,
            start: 0,
            end,
            next: None,
            scratch: Vec::new(),
            finished: false,
            skipped: 0,
            damaged_pages,
            damaged_seen: 0,
            span,
        })
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Start delivering at valid frame `frame`: what comes before it is
    /// decoded and dropped. Decoding from the start is exact for every
    /// format (container timestamps are not: symphonia's Ogg timestamps
    /// drift at some page boundaries), and decoding runs at 300-1500x
    /// realtime, so a seek deep into a long track costs a fraction of a
    /// second.
    pub fn start_at(&mut self, frame: u64) {
        self.start = frame;
    }

    /// Stop before valid frame `frame` (an excerpt).
    pub fn stop_at(&mut self, frame: u64) {
        self.end = Some(self.end.map_or(frame, |e| e.min(frame)));
    }

    /// Append the next decoded frames (interleaved) to `out`. Returns
    /// `false` at the end of the track.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, TranscodeError> {
        let _entered = self.span.clone().entered();
        loop {
            if self.finished || self.end.is_some_and(|e| self.pos >= e) {
                self.finished = true;
                return Ok(false);
            }
            let Some((frames, trim_start, trim_end)) = self.decode_next()? else {
                self.finished = true;
                return Ok(false);
            };
            if self.deliver(
                trim_start.min(frames),
                frames.saturating_sub(trim_end).max(trim_start.min(frames)),
                out,
            ) {
                return Ok(true);
            }
        }
    }

    /// Decode the next packet into `scratch`: its frame count and the trims
    /// that apply to it (start, end).
    fn decode_next(&mut self) -> Result<Option<(usize, usize, usize)>, TranscodeError> {
        let ch = self.info.layout.len();
        let mut failures = 0u32;
        loop {
            // One packet of lookahead tells whether this one is the last.
            let packet = match self.next.take() {
                Some(p) => p,
                None => match self.fetch()? {
                    Some(p) => p,
                    None => return Ok(None),
                },
            };
            self.next = self.fetch()?;
            let last = self.next.is_none();
            let index = self.packet_index;
            self.packet_index += 1;
            self.scratch.clear();
            let frames = match &mut self.decoder {
                Decoder::Symphonia(d) => match d.decode(&packet) {
                    Ok(buf) if buf.spec().channels().count() == ch => {
                        self.scratch.resize(buf.samples_interleaved(), 0.0);
                        buf.copy_to_slice_interleaved(&mut self.scratch[..]);
                        Ok(buf.frames())
                    }
                    Ok(_) => Err("its channel count differs from the stream's".to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Decoder::Opus(d) => d
                    .decode(&packet.data, &mut self.scratch)
                    .map_err(|e| e.to_string()),
            };
            // One damaged packet: drop it and go on, as players do. A long
            // run of them is the end of the decodable audio.
            let frames = match frames {
                Ok(f) => f,
                Err(e) if failures < MAX_CONSECUTIVE_SKIPS => {
                    failures += 1;
                    self.scratch.clear();
                    self.skip_damage(format_args!("a damaged packet ({e})"));
                    continue;
                }
                Err(e) => {
                    self.warn_end(format_args!(
                        "{MAX_CONSECUTIVE_SKIPS} damaged packets in a row, the last: {e}"
                    ));
                    return Ok(None);
                }
            };
            self.note_damaged_pages();
            // Trims count only at the edges: leading packets (nothing
            // delivered yet) and the very last one. Symphonia's Ogg reader
            // also puts bogus end trims on some mid-stream packets where
            // its timestamps drift; honouring those would cut audio.
            let (mut trim_start, mut trim_end) = (0, 0);
            if self.packet_trims {
                if self.pos == 0 && !matches!(self.decoder, Decoder::Opus(_)) {
                    trim_start = packet.trim_start.get() as usize;
                }
                if last {
                    trim_end = packet.trim_end.get() as usize;
                }
            }
            trim_start = trim_start.max(self.restart_cut(index, frames));
            return Ok(Some((frames, trim_start, trim_end)));
        }
    }

    /// Deliver `scratch[from..to]` (frames) through the edit-list skip, the
    /// excerpt end and the start position; whether anything came out.
    fn deliver(&mut self, mut from: usize, mut to: usize, out: &mut Vec<f32>) -> bool {
        let ch = self.info.layout.len();
        if self.skip > 0 {
            let s = self.skip.min((to - from) as u64) as usize;
            self.skip -= s as u64;
            from += s;
        }
        if let Some(end) = self.end {
            let room = end.saturating_sub(self.pos) as usize;
            to = to.min(from + room);
        }
        let first = self.pos;
        self.pos += (to - from) as u64;
        // Frames before the start position are dropped.
        from += self.start.saturating_sub(first).min((to - from) as u64) as usize;
        if to > from {
            out.extend_from_slice(&self.scratch[from * ch..to * ch]);
            return true;
        }
        false
    }

    /// Frames to cut from the front of packet `index` (of `frames`) by the
    /// libvorbis rule for a restart: counting begins again at the first
    /// packet after it (which adds nothing), and at the first packet with
    /// a granule what was counted beyond that granule goes.
    fn restart_cut(&mut self, index: u64, frames: usize) -> usize {
        let Some(r) = self.resyncs.front().copied() else {
            return 0;
        };
        if index == r.first {
            self.since_restart = Some(0);
        } else if let Some(n) = self.since_restart.as_mut() {
            *n += frames as i64;
        }
        if index < r.judged {
            return 0;
        }
        self.resyncs.pop_front();
        let counted = self.since_restart.take().unwrap_or(0);
        (counted - r.granule).clamp(0, frames as i64) as usize
    }

    /// The next packet of our track, `None` at the end of the audio.
    ///
    /// Forgiving where ffmpeg is: a damaged page (a bad Ogg CRC, a lost
    /// MPEG sync) is skipped and the demuxer resynchronises; a file that
    /// ends early ends the audio there. Only a file with no decodable audio
    /// at all is an error (see [`check_complete`](Self::check_complete)).
    fn fetch(&mut self) -> Result<Option<Packet>, TranscodeError> {
        let mut consecutive = 0u32;
        loop {
            match self.reader.next_packet() {
                Ok(Some(p)) if p.track_id == self.track_id => return Ok(Some(p)),
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(None),
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.warn_end(format_args!("the file ends early"));
                    return Ok(None);
                }
                Err(SymError::DecodeError(e)) if consecutive < MAX_CONSECUTIVE_SKIPS => {
                    consecutive += 1;
                    self.skip_damage(format_args!("a damaged page ({e})"));
                }
                Err(e) if self.pos > 0 || self.skipped > 0 => {
                    self.warn_end(format_args!("{e}"));
                    return Ok(None);
                }
                Err(e) => return Err(TranscodeError::Corrupt(format!("{}: {e}", self.info.codec))),
            }
        }
    }

    /// Report damaged Ogg pages the demuxer skipped since the last call.
    fn note_damaged_pages(&mut self) {
        let new: Vec<u64> = {
            let d = self.damaged_pages.lock().unwrap_or_else(|e| e.into_inner());
            d[self.damaged_seen.min(d.len())..].to_vec()
        };
        for at in new {
            self.damaged_seen += 1;
            self.skip_damage(format_args!("a damaged Ogg page at byte {at}"));
        }
    }

    fn skip_damage(&mut self, what: std::fmt::Arguments<'_>) {
        self.skipped += 1;
        // The first few say so; the rest would flood the log.
        if self.skipped <= 3 {
            tracing::warn!(
                codec = self.info.codec,
                at_s = self.pos as f64 / f64::from(self.info.rate),
                "skipped {what}"
            );
        }
    }

    fn warn_end(&self, why: std::fmt::Arguments<'_>) {
        tracing::warn!(
            codec = self.info.codec,
            at_s = self.pos as f64 / f64::from(self.info.rate),
            "the audio ends here: {why}"
        );
    }

    /// Frames delivered to the caller so far (after the start position).
    pub fn delivered(&self) -> u64 {
        self.pos.saturating_sub(self.start)
    }

    /// Called at the end. The audio decides, not the header: a container
    /// that promised more frames than it held plays what it held (the
    /// scanner has already refused files whose bytes show truncation).
    /// Only a track with no decodable audio is an error.
    pub fn check_complete(&self) -> Result<(), TranscodeError> {
        let _entered = self.span.enter();
        if self.pos == 0 {
            return Err(TranscodeError::Corrupt(format!(
                "{}: no decodable audio",
                self.info.codec
            )));
        }
        if let Some(n) = self.info.frames {
            // One second of slack: frame counts in headers are often
            // approximate (VBR MP3 without a LAME tag, odd Ogg granules).
            if self.end.is_none() && self.pos + u64::from(self.info.rate) < n {
                tracing::warn!("{}; playing what is there", self.truncated());
            }
        }
        Ok(())
    }

    fn truncated(&self) -> TranscodeError {
        let rate = self.info.rate as f64;
        match self.info.frames {
            Some(n) => TranscodeError::Corrupt(format!(
                "{}: truncated: the audio stops at {:.2} s of {:.2} s",
                self.info.codec,
                self.pos as f64 / rate,
                n as f64 / rate
            )),
            None => TranscodeError::Corrupt(format!(
                "{}: truncated: the audio stops at {:.2} s",
                self.info.codec,
                self.pos as f64 / rate
            )),
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(u64::MAX, |m| m.len())
}

/// Speaker positions of the interleaved channels, in buffer order.
fn layout_of(ch: &Channels) -> Vec<Position> {
    match ch {
        Channels::Positioned(p) => p.iter().collect(),
        other => {
            let n = other.count() as u32;
            match Position::from_count(n) {
                Some(p) if n > 0 => p.iter().collect(),
                // Unknown layouts: treat as front channels, alternating.
                _ => (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            Position::FRONT_LEFT
                        } else {
                            Position::FRONT_RIGHT
                        }
                    })
                    .collect(),
            }
        }
    }
}

pub fn codec_name(id: AudioCodecId) -> &'static str {
    match id {
        CODEC_ID_MP3 => "MP3",
        CODEC_ID_MP2 => "MP2",
        CODEC_ID_MP1 => "MP1",
        CODEC_ID_AAC => "AAC",
        CODEC_ID_ALAC => "ALAC",
        CODEC_ID_FLAC => "FLAC",
        CODEC_ID_VORBIS => "Vorbis",
        CODEC_ID_OPUS => "Opus",
        CODEC_ID_WAVPACK => "WavPack",
        CODEC_ID_MONKEYS_AUDIO => "Monkey's Audio",
        CODEC_ID_AC3 => "AC-3",
        CODEC_ID_EAC3 => "E-AC-3",
        CODEC_ID_DCA => "DTS",
        CODEC_ID_WMA => "WMA",
        CODEC_ID_SPEEX => "Speex",
        CODEC_ID_MUSEPACK => "Musepack",
        CODEC_ID_TTA => "TTA",
        // Symphonia numbers PCM variants 0x100.. and ADPCM ones 0x200..
        id => match u32::from_str_radix(id.to_string().trim_start_matches("0x"), 16) {
            Ok(0x100..=0x1ff) => "PCM",
            Ok(0x200..=0x2ff) => "ADPCM",
            _ => "an unknown codec",
        },
    }
}
