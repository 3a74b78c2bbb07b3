//! MP3 out, for players that cannot play Ogg Opus (Subsonic apps on some
//! platforms ask `format=mp3`): an Ogg Opus stream in, as the node already
//! serves it from any holder, decoded and encoded again by LAME. At the
//! 192 kb/s Opus it reads (transparent), the MP3 is as good as one made
//! from the original, and a phone needs no original over the mesh.
//!
//! Pushed a chunk at a time (the caller's reader sets the pace); bounded
//! memory: one Ogg page and one decoded packet at a time.
//!
//! Must never: hold a whole stream, or run on a runtime thread (the caller
//! runs `push` on a blocking job).

use super::opus::Decoder;
use super::TranscodeError;
use mp3lame_encoder::{Builder, FlushNoGap, InterleavedPcm, MonoPcm};

/// The Opus bitrate to read for an MP3 (transparent).
pub const SOURCE_KBPS: u32 = 192;

/// Longest Ogg page (27 + 255 segment lengths + 255 × 255 bytes).
const MAX_PAGE: usize = 27 + 255 + 255 * 255;

/// LAME's bitrates; the highest at or below what is asked is used.
const RATES: [(u32, mp3lame_encoder::Bitrate); 13] = {
    use mp3lame_encoder::Bitrate as B;
    [
        (32, B::Kbps32),
        (40, B::Kbps40),
        (48, B::Kbps48),
        (64, B::Kbps64),
        (80, B::Kbps80),
        (96, B::Kbps96),
        (112, B::Kbps112),
        (128, B::Kbps128),
        (160, B::Kbps160),
        (192, B::Kbps192),
        (224, B::Kbps224),
        (256, B::Kbps256),
        (320, B::Kbps320),
    ]
};

/// The MP3 bitrate used for a request of `kbps`.
pub fn mp3_kbps(kbps: u32) -> u32 {
    RATES
        .iter()
        .rev()
        .find(|(k, _)| *k <= kbps)
        .map_or(32, |(k, _)| *k)
}

fn lame(e: impl std::fmt::Debug) -> TranscodeError {
    TranscodeError::Encoder(format!("LAME: {e:?}"))
}

/// One stream's conversion.
pub struct OpusToMp3 {
    kbps: u32,
    /// Ogg bytes not yet parsed (less than one page).
    buf: Vec<u8>,
    /// A packet continued across pages.
    packet: Vec<u8>,
    packets: u64,
    decoder: Option<Decoder>,
    encoder: Option<mp3lame_encoder::Encoder>,
    channels: usize,
    /// Decoded frames still to drop (the Opus pre-skip).
    skip: usize,
    pcm: Vec<f32>,
}

impl OpusToMp3 {
    /// A conversion to MP3 at about `kbps` (see [`mp3_kbps`]).
    pub fn new(kbps: u32) -> OpusToMp3 {
        OpusToMp3 {
            kbps: mp3_kbps(kbps),
            buf: Vec::new(),
            packet: Vec::new(),
            packets: 0,
            decoder: None,
            encoder: None,
            channels: 2,
            skip: 0,
            pcm: Vec::new(),
        }
    }

    /// Take the next bytes of the Ogg Opus stream; the MP3 bytes they make.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, TranscodeError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let b = &self.buf[at..];
            if b.len() < 27 {
                break;
            }
            if &b[..4] != b"OggS" {
                return Err(TranscodeError::Corrupt("not an Ogg page".into()));
            }
            let nsegs = b[26] as usize;
            if b.len() < 27 + nsegs {
                break;
            }
            let segs = &b[27..27 + nsegs];
            let body: usize = segs.iter().map(|&s| s as usize).sum();
            let len = 27 + nsegs + body;
            if b.len() < len {
                break;
            }
            let mut pos = 27 + nsegs;
            let segs = segs.to_vec();
            for s in segs {
                let s = s as usize;
                self.packet
                    .extend_from_slice(&self.buf[at + pos..at + pos + s]);
                pos += s;
                if s < 255 {
                    let p = std::mem::take(&mut self.packet);
                    self.packet_in(&p, &mut out)?;
                }
            }
            at += len;
        }
        self.buf.drain(..at);
        if self.buf.len() > MAX_PAGE || self.packet.len() > 8 * MAX_PAGE {
            return Err(TranscodeError::Corrupt(
                "an Ogg page or packet too large".into(),
            ));
        }
        Ok(out)
    }

    fn packet_in(&mut self, p: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        self.packets += 1;
        match self.packets {
            1 => {
                if p.len() < 19 || &p[..8] != b"OpusHead" {
                    return Err(TranscodeError::Corrupt("no OpusHead".into()));
                }
                self.channels = usize::from(p[9]).clamp(1, 2);
                self.skip = usize::from(u16::from_le_bytes([p[10], p[11]]));
                self.decoder = Some(Decoder::new(p)?);
                let enc = Builder::new()
                    .ok_or_else(|| lame("cannot allocate"))?
                    .with_num_channels(self.channels as u8)
                    .map_err(lame)?
                    .with_sample_rate(48_000)
                    .map_err(lame)?
                    .with_brate(
                        RATES
                            .iter()
                            .find(|(k, _)| *k == self.kbps)
                            .map_or(mp3lame_encoder::Bitrate::Kbps128, |(_, b)| *b),
                    )
                    .map_err(lame)?
                    .with_quality(mp3lame_encoder::Quality::NearBest)
                    .map_err(lame)?
                    .build()
                    .map_err(lame)?;
                self.encoder = Some(enc);
                Ok(())
            }
            2 => Ok(()), // OpusTags
            _ => {
                let (Some(dec), Some(enc)) = (self.decoder.as_mut(), self.encoder.as_mut()) else {
                    return Ok(());
                };
                self.pcm.clear();
                let frames = dec.decode(p, &mut self.pcm)?;
                let drop = self.skip.min(frames);
                self.skip -= drop;
                let pcm = &self.pcm[drop * self.channels..];
                let n = pcm.len() / self.channels;
                out.reserve(mp3lame_encoder::max_required_buffer_size(n));
                if self.channels == 1 {
                    enc.encode_to_vec(MonoPcm(pcm), out).map_err(lame)?;
                } else {
                    enc.encode_to_vec(InterleavedPcm(pcm), out).map_err(lame)?;
                }
                Ok(())
            }
        }
    }

    /// The stream ended: the last MP3 frames.
    pub fn finish(&mut self) -> Result<Vec<u8>, TranscodeError> {
        let mut out = Vec::new();
        if let Some(enc) = self.encoder.as_mut() {
            out.reserve(7200);
            enc.flush_to_vec::<FlushNoGap>(&mut out).map_err(lame)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_round_down_to_lames() {
        assert_eq!(mp3_kbps(128), 128);
        assert_eq!(mp3_kbps(150), 128);
        assert_eq!(mp3_kbps(1000), 320);
        assert_eq!(mp3_kbps(10), 32);
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let mut c = OpusToMp3::new(128);
        assert!(c
            .push(b"not an ogg stream at all, sorry about that")
            .is_err());
        let mut c = OpusToMp3::new(128);
        assert!(c.push(b"OggS").unwrap().is_empty());
        assert!(c.finish().unwrap().is_empty());
    }
}
