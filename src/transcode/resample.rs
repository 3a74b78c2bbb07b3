//! Sample-rate conversion to an Opus rate (48 kHz, or the smallest Opus rate
//! that holds a low-rate source), with rubato.
//!
//! A synchronous FFT resampler (fixed ratio, band-limited, fast) for rates
//! whose ratio to the output reduces to small numbers (44.1 → 48 kHz is
//! 147:160), and a windowed-sinc one for any other rate: an FFT resampler's
//! tables grow with the reduced ratio (a 44 101 Hz source would need FFTs of
//! 44 101 points per channel, a lying 4 GHz header gigabytes), the sinc
//! one's do not. Either way memory is bounded by [`MAX_FFT_IN`] and the
//! sinc length, whatever the rate. Its delay is removed: the first output frame is the first input frame, and the
//! output has exactly `round(input_frames * out_rate / rate)` frames, so a
//! transcode is as long as its source and excerpts line up.

use super::TranscodeError;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Async, Fft, FixedAsync, FixedSync, SincInterpolationParameters, WindowFunction};

/// Opus's native rate: what every decoder outputs, and granules count.
pub const OUT_RATE: u32 = 48_000;

/// The rate to encode a `rate` source at: the smallest rate the Opus
/// encoder accepts that keeps all of the source's bandwidth (ffmpeg picks
/// the same). A 22.05 kHz source is coded as 24 kHz audio: the same sound,
/// fewer bands to code.
pub fn encode_rate(rate: u32) -> u32 {
    [8_000, 12_000, 16_000, 24_000]
        .into_iter()
        .find(|&r| r >= rate)
        .unwrap_or(OUT_RATE)
}
/// Input frames per FFT call. Larger chunks amortise the FFT; this is
/// ~23 ms at 44.1 kHz, well below a page of output.
const CHUNK: usize = 1024;

/// Largest reduced input rate (`rate / gcd(rate, out_rate)`) given to the
/// FFT resampler; beyond it the sinc resampler takes over. Every common
/// rate (8 … 768 kHz in the 44.1 and 48 kHz families) is far below.
const MAX_FFT_IN: u64 = 4096;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The resampler for `rate` → `out_rate`, `None` when they are equal.
fn make(
    rate: u32,
    out_rate: u32,
    channels: usize,
) -> Result<Option<Box<dyn rubato::Resampler<f32>>>, TranscodeError> {
    if rate == out_rate {
        return Ok(None);
    }
    let cannot = |e: rubato::ResamplerConstructionError| {
        TranscodeError::Unsupported(format!("cannot resample {rate} Hz: {e}"))
    };
    let reduced = u64::from(rate) / gcd(rate.into(), out_rate.into());
    if reduced <= MAX_FFT_IN {
        let fft = Fft::<f32>::new(
            rate as usize,
            out_rate as usize,
            CHUNK,
            channels,
            FixedSync::Input,
        )
        .map_err(cannot)?;
        return Ok(Some(Box::new(fft)));
    }
    let params = SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2);
    let sinc = Async::<f32>::new_sinc(
        f64::from(out_rate) / f64::from(rate),
        1.0,
        &params,
        CHUNK,
        channels,
        FixedAsync::Input,
    )
    .map_err(cannot)?;
    Ok(Some(Box::new(sinc)))
}

pub struct Resampler {
    channels: usize,
    rate: u32,
    out_rate: u32,
    fft: Option<Box<dyn rubato::Resampler<f32>>>,
    /// Interleaved input not yet processed (less than one chunk).
    pending: Vec<f32>,
    /// Output frames still to drop (the resampler's delay).
    drop: usize,
    frames_in: u64,
    frames_out: u64,
    out_buf: Vec<f32>,
}

impl Resampler {
    pub fn new(rate: u32, out_rate: u32, channels: usize) -> Result<Resampler, TranscodeError> {
        let fft = make(rate, out_rate, channels)?;
        let drop = fft.as_ref().map_or(0, |f| f.output_delay());
        let out_max = fft.as_ref().map_or(0, |f| f.output_frames_max());
        Ok(Resampler {
            channels,
            rate,
            out_rate,
            fft,
            pending: Vec::with_capacity(CHUNK * channels),
            drop,
            frames_in: 0,
            frames_out: 0,
            out_buf: vec![0.0; out_max * channels],
        })
    }

    /// Resample interleaved `input`, appending what is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        self.frames_in += (input.len() / self.channels) as u64;
        if self.fft.is_none() {
            out.extend_from_slice(input);
            self.frames_out = self.frames_in;
            return Ok(());
        }
        let ch = self.channels;
        let mut input = input;
        // Top up a partial chunk first, then run whole chunks straight from
        // the caller's buffer.
        if !self.pending.is_empty() {
            let need = (CHUNK * ch - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..need]);
            input = &input[need..];
            if self.pending.len() == CHUNK * ch {
                let chunk = std::mem::take(&mut self.pending);
                self.run(&chunk, None, out)?;
                self.pending = chunk;
                self.pending.clear();
            }
        }
        while input.len() >= CHUNK * ch {
            self.run(&input[..CHUNK * ch], None, out)?;
            input = &input[CHUNK * ch..];
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Flush: the last partial chunk, then silence until every output frame
    /// owed for the input has come out.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        if self.fft.is_none() {
            return Ok(());
        }
        let want = (self.frames_in as u128 * self.out_rate as u128 + self.rate as u128 / 2)
            / self.rate as u128;
        let want = want as u64;
        let ch = self.channels;
        let mut chunk = std::mem::take(&mut self.pending);
        let mut valid = chunk.len() / ch;
        chunk.resize(CHUNK * ch, 0.0);
        while self.frames_out < want {
            let before = out.len();
            self.run(&chunk, Some(valid), out)?;
            let got = ((out.len() - before) / ch) as u64;
            if got > 0 && self.frames_out > want {
                let extra = (self.frames_out - want) as usize;
                out.truncate(out.len() - extra * ch);
                self.frames_out = want;
            }
            valid = 0;
        }
        Ok(())
    }

    fn run(
        &mut self,
        chunk: &[f32],
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), TranscodeError> {
        let ch = self.channels;
        let fft = self.fft.as_mut().expect("resampling");
        let frames_in = chunk.len() / ch;
        let input = InterleavedSlice::new(chunk, ch, frames_in).map_err(internal)?;
        let out_frames = self.out_buf.len() / ch;
        let mut output =
            InterleavedSlice::new_mut(&mut self.out_buf, ch, out_frames).map_err(internal)?;
        let idx = partial.map(|n| rubato::Indexing::new().partial_len(n));
        let (_, produced) = fft
            .process_into_buffer(&input, &mut output, idx.as_ref())
            .map_err(internal)?;
        let skip = self.drop.min(produced);
        self.drop -= skip;
        out.extend_from_slice(&self.out_buf[skip * ch..produced * ch]);
        self.frames_out += (produced - skip) as u64;
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Internal(format!("resampler: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, frames: usize, hz: f32) -> Vec<f32> {
        (0..frames)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn exact_length_and_no_delay() {
        for (rate, frames) in [
            (44_100u32, 44_100usize),
            (22_050, 12_345),
            (96_000, 1000),
            (8000, 77),
            (48_000, 500),
            // Rates with no small ratio to 48 kHz take the sinc path.
            (44_101, 30_000),
            (767_999, 100_000),
        ] {
            let input = sine(rate, frames, 440.0);
            let mut r = Resampler::new(rate, 48_000, 1).unwrap();
            let mut out = Vec::new();
            // Feed in odd pieces to exercise the partial-chunk path.
            for piece in input.chunks(777) {
                r.process(piece, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            let want = ((frames as u64 * 48_000 + rate as u64 / 2) / rate as u64) as usize;
            assert_eq!(out.len(), want, "{rate} Hz, {frames} frames");
            if frames >= 10_000 {
                // No delay: the output sine is in phase with the input one.
                let expect = sine(48_000, want, 440.0);
                let mid = want / 2;
                let err: f32 = (mid..mid + 480)
                    .map(|i| (out[i] - expect[i]).abs())
                    .sum::<f32>()
                    / 480.0;
                // The sinc path (rates with no small ratio to 48 kHz)
                // rounds its delay to a whole output frame: within one
                // sample, not exact.
                let tol = if 48_000 % rate == 0 || rate % 100 == 0 {
                    0.01
                } else {
                    0.02
                };
                assert!(err < tol, "{rate} Hz: mean error {err}");
            }
        }
    }
}
