//! WAV and AIFF headers, read raw: the fields lofty narrows (an AIFF's
//! 16-bit channel count arrives as a `u8`, a 4 GHz WAV rate as a plausible
//! `u32`) are checked against [`limits`] at their full width, and the
//! duration is what the sound data really holds, whatever the chunk sizes
//! claim.
//!
//! O(chunks): reads chunk headers only, never a chunk body but the format
//! chunk, and gives up after a bounded number of chunks.

use super::{read_at, Checked, PcmFacts};
use crate::limits::{self, Density};
use std::io::{Read, Seek};

/// More chunks than this before the sound data: not a file we believe.
const MAX_CHUNKS: usize = 256;

/// The header facts of one PCM-like file.
struct Header {
    rate: u64,
    channels: u64,
    bits: u32,
    /// Uncompressed integer or float samples (else a compressed codec in a
    /// WAV/AIFF wrapper: ADPCM, μ-law, …).
    pcm: bool,
    /// Where the sound data starts, and how long its chunk says it is.
    data: Option<(u64, u64)>,
}

impl Header {
    fn into_checked(self, len: u64) -> Result<Checked, String> {
        limits::check_stream(self.rate, self.channels).map_err(|e| e.to_string())?;
        let (at, declared) = self.data.ok_or("no sound data chunk")?;
        let present = len.saturating_sub(at).min(declared);
        let density = if self.pcm && self.bits > 0 {
            Density::pcm(self.rate as u32, self.channels as u32, self.bits)
        } else {
            Density::Compressed
        };
        let duration_from_bytes = match density {
            Density::Pcm { .. } => Some(density.max_seconds(present)),
            _ => None,
        };
        Ok(Checked {
            comments: None,
            density: Some(density),
            duration_from_bytes,
            pcm: Some(PcmFacts {
                rate: self.rate as u32,
                channels: self.channels as u32,
                bits: self.bits,
            }),
        })
    }
}

pub fn check_wav<R: Read + Seek>(r: &mut R, len: u64) -> Result<Checked, String> {
    let mut riff = [0u8; 12];
    if read_at(r, 0, &mut riff).map_err(|e| e.to_string())? < 12 || &riff[8..12] != b"WAVE" {
        return Err("not a RIFF WAVE file".into());
    }
    let mut h = Header {
        rate: 0,
        channels: 0,
        bits: 0,
        pcm: false,
        data: None,
    };
    let mut fmt_seen = false;
    let mut pos = 12u64;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        if read_at(r, pos, &mut ch).map_err(|e| e.to_string())? < 8 {
            break;
        }
        let size = u64::from(u32::from_le_bytes(ch[4..8].try_into().expect("4")));
        match &ch[..4] {
            b"fmt " => {
                let mut f = [0u8; 16];
                if size < 16 || read_at(r, pos + 8, &mut f).map_err(|e| e.to_string())? < 16 {
                    return Err("format chunk too short".into());
                }
                let tag = u16::from_le_bytes([f[0], f[1]]);
                h.channels = u64::from(u16::from_le_bytes([f[2], f[3]]));
                h.rate = u64::from(u32::from_le_bytes(f[4..8].try_into().expect("4")));
                h.bits = u32::from(u16::from_le_bytes([f[14], f[15]]));
                // PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE (PCM or float
                // inside, in practice).
                h.pcm = matches!(tag, 1 | 3 | 0xFFFE);
                fmt_seen = true;
            }
            b"data" => {
                h.data = Some((pos + 8, size));
                break;
            }
            _ => {}
        }
        pos += 8 + size + (size & 1);
        if pos >= len {
            break;
        }
    }
    if !fmt_seen {
        return Err("no format chunk".into());
    }
    h.into_checked(len)
}

pub fn check_aiff<R: Read + Seek>(r: &mut R, len: u64) -> Result<Checked, String> {
    let mut form = [0u8; 12];
    if read_at(r, 0, &mut form).map_err(|e| e.to_string())? < 12
        || !matches!(&form[8..12], b"AIFF" | b"AIFC")
    {
        return Err("not an AIFF file".into());
    }
    let aifc = &form[8..12] == b"AIFC";
    let mut h = Header {
        rate: 0,
        channels: 0,
        bits: 0,
        pcm: !aifc,
        data: None,
    };
    let mut comm_seen = false;
    let mut pos = 12u64;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        if read_at(r, pos, &mut ch).map_err(|e| e.to_string())? < 8 {
            break;
        }
        let size = u64::from(u32::from_be_bytes(ch[4..8].try_into().expect("4")));
        match &ch[..4] {
            b"COMM" => {
                let mut c = [0u8; 22];
                let n = read_at(r, pos + 8, &mut c).map_err(|e| e.to_string())?;
                if size < 18 || n < 18 {
                    return Err("COMM chunk too short".into());
                }
                h.channels = u64::from(u16::from_be_bytes([c[0], c[1]]));
                h.bits = u32::from(u16::from_be_bytes([c[6], c[7]]));
                h.rate = extended_to_u64(c[8..18].try_into().expect("10"));
                if aifc && n >= 22 {
                    // Uncompressed AIFC variants: big/little endian
                    // integers and floats.
                    h.pcm = matches!(&c[18..22], b"NONE" | b"sowt" | b"twos" | b"fl32" | b"fl64");
                }
                comm_seen = true;
            }
            b"SSND" => {
                // 8 bytes of offset and block size before the samples.
                h.data = Some((pos + 16, size.saturating_sub(8)));
            }
            _ => {}
        }
        pos += 8 + size + (size & 1);
        if pos >= len || (comm_seen && h.data.is_some()) {
            break;
        }
    }
    if !comm_seen {
        return Err("no COMM chunk".into());
    }
    h.into_checked(len)
}

/// An IEEE 754 80-bit extended float (AIFF's sample rate) as an integer,
/// saturating: absurd exponents give `u64::MAX`, negatives and NaN 0.
pub fn extended_to_u64(b: [u8; 10]) -> u64 {
    let sign = b[0] & 0x80 != 0;
    let exp = i32::from(u16::from_be_bytes([b[0] & 0x7f, b[1]])) - 16_383;
    let mantissa = u64::from_be_bytes(b[2..10].try_into().expect("8"));
    if sign || mantissa == 0 || exp < 0 {
        return 0;
    }
    if exp > 63 {
        return u64::MAX;
    }
    // The mantissa has an explicit integer bit at bit 63.
    mantissa >> (63 - exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_floats() {
        // 44100 = 0x400E AC44 0000 0000 0000 0000
        let b = [0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0];
        assert_eq!(extended_to_u64(b), 44_100);
        let b = [0x40, 0x0E, 0xBB, 0x80, 0, 0, 0, 0, 0, 0];
        assert_eq!(extended_to_u64(b), 48_000);
        let absurd = [0x7F, 0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(extended_to_u64(absurd), u64::MAX);
        assert_eq!(extended_to_u64([0; 10]), 0);
        let negative = [0xC0, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0];
        assert_eq!(extended_to_u64(negative), 0);
    }
}
