//! Plausibility limits for audio: what a header may claim before anything
//! is allocated or decoded on its word. The one place the scanner
//! ([`crate::library`]) and the transcoder ([`crate::transcode`]) both ask,
//! so that what the scanner accepts is what the transcoder will play.
//!
//! A header field is the cheapest lie there is: a WAV that says 4 GHz, an
//! AIFF that says 65535 channels or an MP3 whose Xing frame count says
//! 3.5 years would otherwise size buffers, resampler tables and durations.
//! Every limit here is generous for real music (no recording uses more than
//! 32 channels or a rate outside 8–768 kHz) and tight enough that a
//! transcode's memory and time stay bounded by the bytes really present.
//!
//! Pure: no I/O, no foreign types. Must never be bypassed: a new reader of
//! headers calls [`check_stream`] before it builds anything from them.

use std::fmt;

/// Lowest sample rate accepted, Hz (telephone audio).
pub const MIN_RATE: u32 = 8_000;
/// Highest sample rate accepted, Hz (the highest DXD/PCM rate in use).
pub const MAX_RATE: u32 = 768_000;
/// Most channels accepted (Opus itself has no mapping beyond 255, and no
/// music release uses more than 24 or so).
pub const MAX_CHANNELS: u32 = 32;
/// Lowest mean bitrate a compressed stream may have, bits/s: a header
/// whose duration would need less is lying. Far below any codec's real
/// floor (a FLAC of digital silence is still above 1 kb/s), so only lies
/// trip it.
pub const MIN_COMPRESSED_BPS: f64 = 500.0;
/// MPEG audio frames never carry less than 8 kb/s.
pub const MIN_MPEG_BPS: f64 = 8_000.0;

/// Why a stream's parameters are not believable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Implausible {
    #[error(
        "sample rate {0} Hz is outside {MIN_RATE}..={MAX_RATE} Hz (a lying or corrupt header)"
    )]
    /// The sample rate (Hz, as the header gives it) is outside
    /// [`MIN_RATE`]..=[`MAX_RATE`].
    Rate(u64),
    /// The header claims more than [`MAX_CHANNELS`] channels (the count given).
    #[error("{0} channels: more than {MAX_CHANNELS} is not music (a lying or corrupt header)")]
    Channels(u64),
    /// The header claims zero channels.
    #[error("no channels")]
    NoChannels,
}

/// Check a stream's rate and channel count, as the header says them.
/// Takes `u64` so that callers pass the raw field, never a truncated one
/// (an AIFF's 65535 channels must not arrive here as 255).
pub fn check_stream(rate: u64, channels: u64) -> Result<(), Implausible> {
    if !(u64::from(MIN_RATE)..=u64::from(MAX_RATE)).contains(&rate) {
        return Err(Implausible::Rate(rate));
    }
    if channels == 0 {
        return Err(Implausible::NoChannels);
    }
    if channels > u64::from(MAX_CHANNELS) {
        return Err(Implausible::Channels(channels));
    }
    Ok(())
}

/// How a stream's bytes relate to its duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Density {
    /// Uncompressed PCM: exactly this many bytes per second.
    Pcm {
        /// Rate × channels × bytes per sample (bits rounded up to whole
        /// bytes).
        bytes_per_second: f64,
    },
    /// MPEG audio (MP1/2/3): at least 8 kb/s.
    Mpeg,
    /// Any other compressed codec.
    Compressed,
}

impl Density {
    /// PCM of `rate` Hz, `channels` channels, `bits` per sample.
    pub fn pcm(rate: u32, channels: u32, bits: u32) -> Density {
        let bytes = f64::from(bits.div_ceil(8).max(1));
        Density::Pcm {
            bytes_per_second: f64::from(rate) * f64::from(channels) * bytes,
        }
    }

    /// The longest audio, in seconds, that `bytes` of this kind can hold.
    pub fn max_seconds(self, bytes: u64) -> f64 {
        let b = bytes as f64;
        match self {
            Density::Pcm { bytes_per_second } if bytes_per_second > 0.0 => b / bytes_per_second,
            Density::Pcm { .. } => 0.0,
            Density::Mpeg => b * 8.0 / MIN_MPEG_BPS,
            Density::Compressed => b * 8.0 / MIN_COMPRESSED_BPS,
        }
    }
}

/// A duration a header claims, checked against the bytes present.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim {
    /// Believable as claimed.
    Plausible(f64),
    /// The header claims more than the bytes can hold: this is the most
    /// they can (for PCM, exactly what they hold).
    Capped {
        /// What the header claims, in seconds (possibly not finite).
        claimed: f64,
        /// The longest the bytes can hold, in seconds.
        at_most: f64,
    },
}

impl Claim {
    /// The duration to believe, in seconds: the claim, or the cap when the
    /// claim was too long.
    pub fn seconds(self) -> f64 {
        match self {
            Claim::Plausible(s) => s,
            Claim::Capped { at_most, .. } => at_most,
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Plausible(s) => write!(f, "{s:.2} s"),
            Claim::Capped { claimed, at_most } => write!(
                f,
                "the header claims {claimed:.2} s, the bytes hold at most {at_most:.2} s"
            ),
        }
    }
}

/// Check a claimed duration (seconds) of a stream of `bytes` bytes. One
/// second of slack covers headers, tags and rounding.
pub fn check_duration(claimed: f64, bytes: u64, density: Density) -> Claim {
    let at_most = density.max_seconds(bytes);
    if claimed.is_finite() && claimed <= at_most + 1.0 {
        Claim::Plausible(claimed.max(0.0))
    } else {
        Claim::Capped { claimed, at_most }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_channels() {
        assert!(check_stream(44_100, 2).is_ok());
        assert!(check_stream(8_000, 1).is_ok());
        assert!(check_stream(768_000, 32).is_ok());
        assert_eq!(check_stream(1, 2), Err(Implausible::Rate(1)));
        assert_eq!(
            check_stream(u64::from(u32::MAX), 2),
            Err(Implausible::Rate(u64::from(u32::MAX)))
        );
        assert_eq!(check_stream(7_999, 2), Err(Implausible::Rate(7_999)));
        assert_eq!(
            check_stream(44_100, 65_535),
            Err(Implausible::Channels(65_535))
        );
        assert_eq!(check_stream(44_100, 33), Err(Implausible::Channels(33)));
        assert_eq!(check_stream(44_100, 0), Err(Implausible::NoChannels));
        let msg = check_stream(44_100, 65_535).unwrap_err().to_string();
        assert!(msg.contains("65535 channels"), "{msg}");
    }

    #[test]
    fn pcm_durations_are_what_the_bytes_hold() {
        let d = Density::pcm(44_100, 2, 16);
        // 1 s of CD audio is 176400 bytes.
        assert_eq!(
            check_duration(1.0, 176_400, d),
            Claim::Plausible(1.0),
            "honest"
        );
        match check_duration(12_000.0, 176_400, d) {
            Claim::Capped { claimed, at_most } => {
                assert_eq!(claimed, 12_000.0);
                assert!((at_most - 1.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        // 24-bit counts 3 bytes a sample; 20-bit rounds up to 3.
        assert_eq!(Density::pcm(48_000, 2, 20), Density::pcm(48_000, 2, 24));
    }

    #[test]
    fn compressed_durations_need_a_bitrate_floor() {
        // A 9 KB MP3 claiming 3.5 years (a lying Xing frame count).
        let d = check_duration(112_195_063.99, 9_000, Density::Mpeg);
        assert!(matches!(d, Claim::Capped { .. }), "{d:?}");
        assert!(d.seconds() <= 9.0 + 1e-9, "{d:?}");
        // A real 64 kb/s MP3: 1 s in 8 KB.
        assert_eq!(
            check_duration(1.0, 8_000, Density::Mpeg),
            Claim::Plausible(1.0)
        );
        // A FLAC of silence at 1.3 kb/s: believable.
        assert_eq!(
            check_duration(600.0, 100_000, Density::Compressed),
            Claim::Plausible(600.0)
        );
        assert!(matches!(
            check_duration(f64::INFINITY, 100, Density::Compressed),
            Claim::Capped { .. }
        ));
    }
}
