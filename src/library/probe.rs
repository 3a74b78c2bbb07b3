//! Recognising audio by content, and cheap structural checks that catch
//! truncated or lying files without decoding any audio.
//!
//! Detection trusts bytes, never the file name. The checks read a few
//! kilobytes at known offsets: they must stay O(1) in the file size so a scan
//! keeps its speed, and they must never allocate what a header claims.

use lofty::file::FileType;
use std::io::{Read, Seek, SeekFrom};

pub type Format = FileType;

/// The audio format of the content, `Ok(None)` if it is not audio, `Err` if
/// it starts like audio but its header lies.
pub fn detect<R: Read + Seek>(r: &mut R, len: u64) -> Result<Option<Format>, String> {
    let mut head = [0u8; 10];
    let n = read_at(r, 0, &mut head).map_err(|e| e.to_string())?;
    if n == 10 && &head[..3] == b"ID3" {
        let size = syncsafe(&head[6..10]).ok_or("corrupt ID3v2 header (size is not syncsafe)")?;
        let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
        let end = 10 + u64::from(size) + footer;
        if end > len {
            return Err(format!(
                "ID3v2 tag claims {} bytes but the file has only {len}: truncated or corrupt",
                end
            ));
        }
    }
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let probe = lofty::probe::Probe::new(&mut *r)
        .guess_file_type()
        .map_err(|e| e.to_string())?;
    Ok(probe.file_type())
}

/// A short description of non-audio content for error messages.
pub fn describe(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".into();
    }
    let sample = &head[..head.len().min(512)];
    let printable = sample
        .iter()
        .filter(|&&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    if std::str::from_utf8(sample).is_ok() && printable * 10 >= sample.len() * 9 {
        "its content is text".into()
    } else {
        "its content matches no known audio format".into()
    }
}

/// Structural checks for a recognised format. `Err` says what is wrong.
pub fn check<R: Read + Seek>(r: &mut R, len: u64, ft: Format) -> Result<(), String> {
    match ft {
        FileType::Flac => check_flac(r, len),
        _ => Ok(()),
    }
    .map_err(|e| format!("{} file: {e}", crate::library::tags::container_name(&ft)))
}

fn read_at<R: Read + Seek>(r: &mut R, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    r.seek(SeekFrom::Start(pos))?;
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn syncsafe(b: &[u8]) -> Option<u32> {
    if b.iter().any(|x| x & 0x80 != 0) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, &x| (acc << 7) | u32::from(x)))
}

// ----- FLAC -------------------------------------------------------------------

struct StreamInfo {
    min_block: u32,
    max_block: u32,
    total_samples: u64,
}

/// Checks that the metadata blocks fit in the file and that the last audio
/// frame reaches the sample count STREAMINFO promises (a truncated file's
/// last frame ends early).
fn check_flac<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), String> {
    let mut pos = 0u64;
    let mut magic = [0u8; 4];
    read_at(r, 0, &mut magic).map_err(|e| e.to_string())?;
    if &magic == b"ID3" as &[u8] || magic[..3] == *b"ID3" {
        let mut h = [0u8; 10];
        read_at(r, 0, &mut h).map_err(|e| e.to_string())?;
        pos = 10 + u64::from(syncsafe(&h[6..10]).unwrap_or(0));
        read_at(r, pos, &mut magic).map_err(|e| e.to_string())?;
    }
    if &magic != b"fLaC" {
        return Err("missing fLaC marker".into());
    }
    pos += 4;
    let mut info = None;
    loop {
        let mut bh = [0u8; 4];
        if read_at(r, pos, &mut bh).map_err(|e| e.to_string())? < 4 {
            return Err("metadata ends before the audio starts (truncated)".into());
        }
        let last = bh[0] & 0x80 != 0;
        let kind = bh[0] & 0x7f;
        let size = u64::from(u32::from_be_bytes([0, bh[1], bh[2], bh[3]]));
        if pos + 4 + size > len {
            return Err(format!(
                "metadata block of {size} bytes runs past the end of the file (truncated)"
            ));
        }
        if kind == 0 {
            let mut si = [0u8; 34];
            if size < 34 || read_at(r, pos + 4, &mut si).map_err(|e| e.to_string())? < 34 {
                return Err("STREAMINFO block too short".into());
            }
            let packed = u64::from_be_bytes(si[10..18].try_into().expect("8 bytes"));
            info = Some(StreamInfo {
                min_block: u32::from(u16::from_be_bytes([si[0], si[1]])),
                max_block: u32::from(u16::from_be_bytes([si[2], si[3]])),
                total_samples: packed & 0xF_FFFF_FFFF,
            });
        }
        pos += 4 + size;
        if last {
            break;
        }
    }
    let info = info.ok_or("no STREAMINFO block")?;
    if pos >= len {
        return Err("no audio frames (truncated)".into());
    }
    if info.total_samples == 0 {
        return Ok(()); // length unknown: nothing to compare against
    }
    // Find the last frame header in the tail and see where it ends.
    let tail_len = (len - pos).min(256 << 10);
    let tail_start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    let n = read_at(r, tail_start, &mut tail).map_err(|e| e.to_string())?;
    tail.truncate(n);
    let fixed = info.min_block == info.max_block;
    let mut i = tail.len().saturating_sub(2);
    loop {
        if tail[i] == 0xFF && tail[i + 1] & 0xFE == 0xF8 {
            if let Some(end) = frame_end_sample(&tail[i..], fixed, info.max_block) {
                // The final frame may be short; any frame ending well before
                // the promised total means the rest is missing.
                if end + u64::from(info.max_block) < info.total_samples {
                    let have = end as f64 / info.total_samples as f64 * 100.0;
                    return Err(format!(
                        "truncated: the audio stops at sample {end} of {} ({have:.0}%)",
                        info.total_samples
                    ));
                }
                return Ok(());
            }
        }
        if i == 0 {
            return Err("no valid audio frame found near the end (truncated or corrupt)".into());
        }
        i -= 1;
    }
}

/// Parses a FLAC frame header at `b` (CRC-8 checked) and returns the sample
/// number just after the frame.
fn frame_end_sample(b: &[u8], fixed: bool, max_block: u32) -> Option<u64> {
    if b.len() < 6 {
        return None;
    }
    let bs_code = b[2] >> 4;
    let sr_code = b[2] & 0x0f;
    let ch = b[3] >> 4;
    let bps = (b[3] >> 1) & 0x07;
    if bs_code == 0 || sr_code == 0x0f || ch > 10 || bps == 3 || b[3] & 1 != 0 {
        return None;
    }
    // UTF-8-like coded frame or sample number.
    let first = b[4];
    let extra = match first.leading_ones() {
        0 => 0,
        n @ 2..=7 => n as usize - 1,
        _ => return None,
    };
    let mut num: u64 = u64::from(first & (0x7f >> extra.min(6)));
    let mut p = 5;
    for _ in 0..extra {
        let c = *b.get(p)?;
        if c & 0xC0 != 0x80 {
            return None;
        }
        num = (num << 6) | u64::from(c & 0x3f);
        p += 1;
    }
    let block = match bs_code {
        1 => 192,
        2..=5 => 576 << (bs_code - 2),
        6 => {
            let v = u32::from(*b.get(p)?) + 1;
            p += 1;
            v
        }
        7 => {
            let v = u32::from(u16::from_be_bytes([*b.get(p)?, *b.get(p + 1)?])) + 1;
            p += 2;
            v
        }
        _ => 256 << (bs_code - 8),
    };
    match sr_code {
        12 => p += 1,
        13 | 14 => p += 2,
        _ => {}
    }
    if crc8(b.get(..p)?) != *b.get(p)? {
        return None;
    }
    let start = if fixed { num * u64::from(max_block) } else { num };
    Some(start + u64::from(block))
}

fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn id3_size_beyond_file_is_an_error() {
        let mut f = b"ID3\x04\x00\x00\x10\x00\x00\x00".to_vec(); // claims 32 MiB
        f.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        let len = f.len() as u64;
        let e = detect(&mut Cursor::new(f), len).unwrap_err();
        assert!(e.contains("ID3v2 tag claims"), "{e}");
    }

    #[test]
    fn describes_text() {
        assert_eq!(describe(b"hello world\n"), "its content is text");
        assert_eq!(describe(&[0, 1, 2, 250, 251]), "its content matches no known audio format");
    }

    #[test]
    fn crc8_known_value() {
        // CRC-8/SMBUS ("123456789") = 0xF4.
        assert_eq!(crc8(b"123456789"), 0xF4);
    }
}
