//! The Opus codec: a safe wrapper over `unsafe-libopus`, libopus 1.3.1
//! translated to Rust (so `cargo build` needs no C toolchain, cmake or
//! system library, and the encoder is libopus itself: same analysis, same
//! VBR, same bits as ffmpeg's libopus at equal settings).
//!
//! The only module that calls the codec; every `unsafe` block of the crate
//! is here, each next to the invariant that makes it sound.

use super::TranscodeError;
use unsafe_libopus::*;

/// The largest packet libopus can produce (RFC 6716 §3.2.1 bound).
const MAX_PACKET: usize = 1276 * 3 + 7;
/// The longest Opus packet decodes to 120 ms.
const MAX_DECODED: usize = 5760;

/// Codec name and version: part of cache keys and stream vendor strings.
pub fn version() -> String {
    format!("{} via unsafe-libopus 0.2.0", opus_get_version_string())
}

fn opus_error(what: &str, code: i32) -> TranscodeError {
    TranscodeError::Encoder(format!("{what}: {} ({code})", opus_strerror(code)))
}

/// A libopus encoder (music application, VBR) that turns 20 ms frames of
/// interleaved samples into Opus packets; freed on drop.
pub struct Encoder {
    st: *mut OpusEncoder,
    channels: usize,
    /// Samples per channel in one 20 ms packet at the encoder's rate.
    frame: usize,
    out: Vec<u8>,
}

// SAFETY: the encoder state is a plain heap block owned by this value and
// touched only through `&mut self`; libopus keeps no thread-local state.
unsafe impl Send for Encoder {}

impl Encoder {
    /// A music encoder fed at `rate` (48, 24, 16, 12 or 8 kHz), `kbps` VBR
    /// (unconstrained, as ffmpeg's libopus default), complexity 10.
    pub fn new(channels: usize, rate: u32, kbps: u32) -> Result<Encoder, TranscodeError> {
        if !(1..=2).contains(&channels) {
            return Err(TranscodeError::Internal(format!(
                "{channels} channels for the encoder"
            )));
        }
        let mut err = 0i32;
        // SAFETY: valid arguments; `err` outlives the call.
        let st = unsafe {
            opus_encoder_create(
                rate as i32,
                channels as i32,
                OPUS_APPLICATION_AUDIO,
                &mut err,
            )
        };
        if st.is_null() || err != OPUS_OK {
            return Err(opus_error("cannot create the encoder", err));
        }
        let enc = Encoder {
            st,
            channels,
            frame: rate as usize / 50,
            out: vec![0; MAX_PACKET],
        };
        for (req, val, what) in [
            (OPUS_SET_BITRATE_REQUEST, kbps as i32 * 1000, "bitrate"),
            (OPUS_SET_VBR_REQUEST, 1, "VBR"),
            (OPUS_SET_VBR_CONSTRAINT_REQUEST, 0, "unconstrained VBR"),
            (OPUS_SET_COMPLEXITY_REQUEST, 10, "complexity"),
            (OPUS_SET_SIGNAL_REQUEST, OPUS_SIGNAL_MUSIC, "signal type"),
        ] {
            // SAFETY: `st` is a live encoder; each request takes one i32.
            let r = unsafe { opus_encoder_ctl!(enc.st, req, val) };
            if r != OPUS_OK {
                return Err(opus_error(what, r));
            }
        }
        Ok(enc)
    }

    /// Samples per channel in one 20 ms packet.
    pub fn frame(&self) -> usize {
        self.frame
    }

    /// The encoder's lookahead at its own rate (the OpusHead pre-skip,
    /// once scaled to 48 kHz).
    pub fn lookahead(&self) -> u16 {
        let mut la = 0i32;
        // SAFETY: live encoder; the request writes one i32 through the pointer.
        let r = unsafe { opus_encoder_ctl!(self.st, OPUS_GET_LOOKAHEAD_REQUEST, &mut la) };
        if r != OPUS_OK {
            return (312 * self.frame / 960) as u16; // libopus's value in audio mode
        }
        la.clamp(0, u16::MAX as i32) as u16
    }

    /// Encode one 20 ms frame of interleaved samples into a packet.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, TranscodeError> {
        assert_eq!(pcm.len(), self.frame * self.channels, "one 20 ms frame");
        // SAFETY: `pcm` holds exactly `frame` frames of `channels` samples,
        // `out` has MAX_PACKET writable bytes, and `st` is live.
        let n = unsafe {
            opus_encode_float(
                self.st,
                pcm.as_ptr(),
                self.frame as i32,
                self.out.as_mut_ptr(),
                MAX_PACKET as i32,
            )
        };
        if n < 0 {
            return Err(opus_error("encode", n));
        }
        Ok(self.out[..n as usize].to_vec())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { opus_encoder_destroy(self.st) }
    }
}

/// Decoder for Opus sources (symphonia has none).
pub struct Decoder {
    st: *mut OpusDecoder,
    channels: usize,
    pcm: Vec<f32>,
}

// SAFETY: as for Encoder.
unsafe impl Send for Decoder {}
unsafe impl Sync for Decoder {}

impl Decoder {
    /// A decoder configured from the stream's OpusHead packet (RFC 7845
    /// §5.1): channel count, mapping family and output gain.
    pub fn new(head: &[u8]) -> Result<Decoder, TranscodeError> {
        if head.len() < 19 || &head[..8] != b"OpusHead" {
            return Err(TranscodeError::Corrupt(
                "Opus: missing or short OpusHead".into(),
            ));
        }
        let channels = head[9] as usize;
        let gain = i16::from_le_bytes([head[16], head[17]]);
        let family = head[18];
        if channels == 0 || channels > 2 {
            return Err(TranscodeError::Unsupported(format!(
                "Opus with {channels} channels (mapping family {family}) is not supported"
            )));
        }
        if family == 1 && (head.len() < 21 + channels || head[19] != 1) {
            return Err(TranscodeError::Unsupported(format!(
                "Opus with {} streams is not supported",
                head.get(19).copied().unwrap_or(0)
            )));
        }
        if family > 1 {
            return Err(TranscodeError::Unsupported(format!(
                "Opus channel mapping family {family} is not supported"
            )));
        }
        let mut err = 0i32;
        // SAFETY: valid arguments; `err` outlives the call.
        let st = unsafe { opus_decoder_create(48_000, channels as i32, &mut err) };
        if st.is_null() || err != OPUS_OK {
            return Err(opus_error("cannot create the decoder", err));
        }
        let dec = Decoder {
            st,
            channels,
            pcm: vec![0.0; MAX_DECODED * channels],
        };
        if gain != 0 {
            // SAFETY: live decoder; the request takes one i32 (Q7.8 dB).
            let r = unsafe { opus_decoder_ctl!(dec.st, OPUS_SET_GAIN_REQUEST, gain as i32) };
            if r != OPUS_OK {
                return Err(opus_error("output gain", r));
            }
        }
        Ok(dec)
    }

    /// Decode one packet, appending interleaved samples to `out`; returns
    /// the frames decoded. A damaged packet is an error naming it.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, TranscodeError> {
        // SAFETY: `pcm` has room for MAX_DECODED frames of `channels`
        // samples, the longest packet's output; `packet` is a valid slice.
        let n = unsafe {
            opus_decode_float(
                self.st,
                packet.as_ptr(),
                packet.len() as i32,
                self.pcm.as_mut_ptr(),
                MAX_DECODED as i32,
                0,
            )
        };
        if n < 0 {
            return Err(TranscodeError::Corrupt(format!(
                "Opus: undecodable packet: {}",
                opus_strerror(n)
            )));
        }
        out.extend_from_slice(&self.pcm[..n as usize * self.channels]);
        Ok(n as usize)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { opus_decoder_destroy(self.st) }
    }
}
