//! Recognising audio by content, and cheap structural checks that catch
//! truncated or lying files without decoding any audio.
//!
//! Detection trusts bytes, never the file name. The checks read a few
//! kilobytes at known offsets: they must stay O(1) in the file size so a scan
//! keeps its speed, and they must never allocate what a header claims.

use crate::limits;
use lofty::file::FileType;
use std::io::{Read, Seek, SeekFrom};

mod pcm;

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
    let ft = probe.file_type();
    // lofty guesses MPEG from any frame-sync-like bytes in the first KiB;
    // random data has plenty. Demand two consecutive valid frame headers.
    if ft == Some(FileType::Mpeg) {
        let start = id3v2_end(r);
        if first_mpeg_frame(r, start).is_none() {
            return Ok(None);
        }
    }
    Ok(ft)
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

/// Raw Vorbis comments in file order, `(KEY uppercased, value)`.
pub type Comments = Vec<(String, String)>;

/// What the structural checks learnt beyond "it is whole".
#[derive(Debug, Default)]
pub struct Checked {
    /// For Vorbis-comment formats, the raw comments in file order (lofty
    /// 0.25 reorders repeated fields such as several TITLEs).
    pub comments: Option<Comments>,
    /// How the bytes relate to the duration, when the header says (PCM in
    /// WAV and AIFF, MPEG audio).
    pub density: Option<limits::Density>,
    /// The duration the audio bytes really hold, when a header's own
    /// count is not to be trusted: exact for PCM, estimated from the first
    /// frame's bitrate for MPEG (as ffmpeg does).
    pub duration_from_bytes: Option<f64>,
    /// A WAV or AIFF header's stream facts, read raw: enough to index the
    /// file when lofty refuses it (a data chunk that claims more than the
    /// file holds, which ffmpeg plays).
    pub pcm: Option<PcmFacts>,
}

/// The stream of a WAV or AIFF file, as its header says (checked against
/// the limits).
#[derive(Debug, Clone, Copy)]
pub struct PcmFacts {
    pub rate: u32,
    pub channels: u32,
    pub bits: u32,
}

/// Structural checks for a recognised format. `Err` says what is wrong.
/// Plausibility limits ([`limits::check_stream`]) are applied to the raw
/// header fields here, before any parser sizes anything from them.
pub fn check<R: Read + Seek>(r: &mut R, len: u64, ft: Format) -> Result<Checked, String> {
    match ft {
        FileType::Flac => check_flac(r, len).map(|comments| Checked {
            comments,
            density: Some(limits::Density::Compressed),
            ..Checked::default()
        }),
        FileType::Vorbis | FileType::Opus => check_ogg(r, ft).map(|comments| Checked {
            comments,
            density: Some(limits::Density::Compressed),
            ..Checked::default()
        }),
        FileType::Mpeg => check_mpeg(r, len),
        FileType::Wav => pcm::check_wav(r, len),
        FileType::Aiff => pcm::check_aiff(r, len),
        _ => Ok(Checked::default()),
    }
    .map_err(|e| format!("{} file: {e}", crate::library::tags::container_name(&ft)))
}

/// Parse a Vorbis comment structure (after any packet-type prefix).
fn parse_comments(b: &[u8]) -> Option<Comments> {
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let vendor = u32_at(0)?;
    let mut i = 4usize.checked_add(vendor)?;
    let n = u32_at(i)?;
    i += 4;
    let mut out = Vec::new();
    for _ in 0..n {
        let l = u32_at(i)?;
        i += 4;
        let field = b.get(i..i.checked_add(l)?)?;
        i += l;
        let field = String::from_utf8_lossy(field);
        if let Some((k, v)) = field.split_once('=') {
            out.push((k.to_ascii_uppercase(), v.to_owned()));
        }
    }
    Some(out)
}

// ----- Ogg --------------------------------------------------------------------

/// Most bytes of one Ogg packet we keep while looking at headers.
const OGG_PACKET_MAX: usize = 32 << 20;

/// The first `want` packets of the first logical stream.
fn ogg_packets<R: Read + Seek>(r: &mut R, want: usize) -> Result<Vec<Vec<u8>>, String> {
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut serial = None;
    let mut header = [0u8; 27];
    let mut pages = 0usize;
    while packets.len() < want {
        let n = read_up_to(r, &mut header).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if n < 27 || &header[..4] != b"OggS" {
            return Err(format!("broken Ogg page #{pages} (no capture pattern)"));
        }
        pages += 1;
        let nsegs = usize::from(header[26]);
        let mut table = vec![0u8; nsegs];
        if read_up_to(r, &mut table).map_err(|e| e.to_string())? < nsegs {
            return Err("truncated Ogg page".into());
        }
        let body: usize = table.iter().map(|&x| usize::from(x)).sum();
        let mut data = vec![0u8; body];
        if read_up_to(r, &mut data).map_err(|e| e.to_string())? < body {
            return Err("truncated Ogg page".into());
        }
        let this_serial = u32::from_le_bytes(header[14..18].try_into().expect("4 bytes"));
        if *serial.get_or_insert(this_serial) != this_serial {
            continue; // another logical stream
        }
        let mut off = 0;
        for &seg in &table {
            let seg = usize::from(seg);
            if current.len() < OGG_PACKET_MAX {
                current.extend_from_slice(&data[off..off + seg]);
            }
            off += seg;
            if seg < 255 {
                packets.push(std::mem::take(&mut current));
                if packets.len() >= want {
                    break;
                }
            }
        }
    }
    Ok(packets)
}

fn check_ogg<R: Read + Seek>(r: &mut R, ft: Format) -> Result<Option<Comments>, String> {
    if ft == FileType::Opus {
        let p = ogg_packets(r, 2)?;
        let tags = p
            .get(1)
            .filter(|p| p.starts_with(b"OpusTags"))
            .ok_or("missing OpusTags header")?;
        return Ok(parse_comments(&tags[8..]));
    }
    let p = ogg_packets(r, 4)?;
    let is_header = |p: &[u8], t: u8| p.len() >= 7 && p[0] == t && &p[1..7] == b"vorbis";
    if !p.first().is_some_and(|x| is_header(x, 1)) {
        return Err("missing Vorbis identification header".into());
    }
    let comment = p
        .get(1)
        .filter(|x| is_header(x, 3))
        .ok_or("missing Vorbis comment header")?;
    if !p.get(2).is_some_and(|x| is_header(x, 5)) {
        return Err("missing Vorbis setup header".into());
    }
    // A fourth packet must be audio (even first byte). A header here means
    // the stream restarts its headers before any audio, which many decoders
    // (ffmpeg 5.1 among them) refuse.
    if p.get(3)
        .is_some_and(|x| x.len() >= 7 && x[0] & 1 == 1 && &x[1..7] == b"vorbis")
    {
        return Err(
            "repeated Vorbis headers before the first audio packet: not a valid stream for \
             common decoders (ffmpeg cannot open it)"
                .into(),
        );
    }
    Ok(parse_comments(&comment[7..]))
}

// ----- MPEG -------------------------------------------------------------------

/// Frame length in bytes of an MPEG audio frame header, if valid.
fn mpeg_frame_len(h: [u8; 4]) -> Option<usize> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0 = 2.5, 2 = 2, 3 = 1
    let layer = (h[1] >> 1) & 3; // 1 = III, 2 = II, 3 = I
    let br_idx = usize::from(h[2] >> 4);
    let sr_idx = usize::from((h[2] >> 2) & 3);
    if version == 1 || layer == 0 || br_idx == 0 || br_idx == 15 || sr_idx == 3 {
        return None;
    }
    let padding = usize::from((h[2] >> 1) & 1);
    const BR_V1: [[u32; 15]; 3] = [
        [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
    ];
    const BR_V2: [[u32; 15]; 2] = [
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let sr = [
        [11025, 12000, 8000],
        [0, 0, 0],
        [22050, 24000, 16000],
        [44100, 48000, 32000],
    ][usize::from(version)][sr_idx];
    let layer_i = layer == 3;
    let br = if version == 3 {
        BR_V1[usize::from(3 - layer)][br_idx]
    } else {
        BR_V2[usize::from(!layer_i)][br_idx]
    } * 1000;
    let len = if layer_i {
        (12 * br / sr + padding as u32) * 4
    } else {
        let k = if layer == 1 && version != 3 { 72 } else { 144 };
        k * br / sr + padding as u32
    };
    Some(len as usize)
}

/// The first MPEG frame (two consecutive valid headers) within 64 KiB of
/// `start`: its offset and the frame bytes read.
/// Only the head of the frame is returned: enough for a Xing/Info header.
fn first_mpeg_frame<R: Read + Seek>(r: &mut R, start: u64) -> Option<(u64, Vec<u8>)> {
    let len = r.seek(SeekFrom::End(0)).ok()?;
    // Usually the frame is right there: look at 8 KiB first, and at the
    // whole 64 KiB junk allowance only if that finds nothing.
    for window in [8 << 10, 64 << 10] {
        let mut buf = vec![0u8; len.saturating_sub(start).min(window) as usize];
        let n = read_at(r, start, &mut buf).ok()?;
        buf.truncate(n);
        if let Some(found) = find_mpeg_frame(&buf, start) {
            return Some(found);
        }
        if (n as u64) < window {
            break; // that was the whole file
        }
    }
    None
}

fn find_mpeg_frame(buf: &[u8], start: u64) -> Option<(u64, Vec<u8>)> {
    let mut i = 0;
    while i + 4 <= buf.len() {
        if buf[i] == 0xFF {
            if let Some(len) = mpeg_frame_len(buf[i..i + 4].try_into().ok()?) {
                let next = i + len;
                let confirmed = match buf.get(next..next + 4) {
                    Some(h) => mpeg_frame_len(h.try_into().ok()?).is_some(),
                    // The file or buffer ends right after this frame.
                    None => next >= buf.len(),
                };
                if confirmed {
                    let end = next.min(buf.len()).min(i + 256);
                    return Some((start + i as u64, buf[i..end].to_vec()));
                }
            }
        }
        i += 1;
    }
    None
}

fn id3v2_end<R: Read + Seek>(r: &mut R) -> u64 {
    let mut h = [0u8; 10];
    match read_at(r, 0, &mut h) {
        Ok(10) if &h[..3] == b"ID3" => {
            let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
            10 + u64::from(syncsafe(&h[6..10]).unwrap_or(0)) + footer
        }
        _ => 0,
    }
}

/// Checks that real MPEG frames follow the tag, and that the audio is as
/// long as the Xing/Info header (written by LAME and most encoders) says.
/// A Xing frame count that the bytes cannot hold (a lying header) is
/// ignored: the duration is then estimated from the bytes and the first
/// frame's bitrate.
fn check_mpeg<R: Read + Seek>(r: &mut R, len: u64) -> Result<Checked, String> {
    let start = id3v2_end(r);
    let (pos, frame) = first_mpeg_frame(r, start).ok_or("no valid MPEG audio frame found")?;
    let mut checked = Checked {
        density: Some(limits::Density::Mpeg),
        ..Checked::default()
    };
    let present = len - pos;
    let head: [u8; 4] = frame[..4].try_into().expect("a frame header");
    let Some(x) = memchr::memmem::find(&frame[..frame.len().min(64)], b"Xing")
        .or_else(|| memchr::memmem::find(&frame[..frame.len().min(64)], b"Info"))
    else {
        return Ok(checked);
    };
    let be32 = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
    };
    let Some(flags) = be32(x + 4) else {
        return Ok(checked);
    };
    let mut at = x + 8;
    if flags & 1 != 0 {
        if let (Some(frames), Some((rate, per_frame))) = (be32(at), mpeg_timing(head)) {
            let claimed = f64::from(frames) * f64::from(per_frame) / f64::from(rate);
            if let limits::Claim::Capped { .. } =
                limits::check_duration(claimed, present, limits::Density::Mpeg)
            {
                checked.duration_from_bytes =
                    mpeg_bitrate(head).map(|bps| present as f64 * 8.0 / f64::from(bps));
            }
        }
        at += 4; // frame count
    }
    if flags & 2 == 0 {
        return Ok(checked);
    }
    let Some(declared) = be32(at).map(u64::from) else {
        return Ok(checked);
    };
    // Encoders differ on whether the byte count includes trailing tags;
    // allow an ID3v1 tag plus a little slack.
    if declared > present + 128 + 1024 {
        return Err(format!(
            "truncated: the header promises {declared} bytes of audio, only {present} are present ({:.0}%)",
            present as f64 / declared as f64 * 100.0
        ));
    }
    Ok(checked)
}

/// Sample rate and samples per frame of a valid MPEG frame header.
fn mpeg_timing(h: [u8; 4]) -> Option<(u32, u32)> {
    let version = (h[1] >> 3) & 3; // 0 = 2.5, 2 = 2, 3 = 1
    let layer = (h[1] >> 1) & 3; // 1 = III, 2 = II, 3 = I
    let sr_idx = usize::from((h[2] >> 2) & 3);
    let base = [11025, 12000, 8000].get(sr_idx)?;
    let rate = match version {
        3 => base * 4,
        2 => base * 2,
        0 => *base,
        _ => return None,
    };
    let per_frame = match (layer, version) {
        (3, _) => 384,
        (2, _) | (1, 3) => 1152,
        (1, _) => 576,
        _ => return None,
    };
    Some((rate, per_frame))
}

/// Bitrate in bits/s of a valid MPEG frame header.
fn mpeg_bitrate(h: [u8; 4]) -> Option<u32> {
    let len = mpeg_frame_len(h)? as u64;
    let (rate, per_frame) = mpeg_timing(h)?;
    Some((len * 8 * u64::from(rate) / u64::from(per_frame)) as u32)
}

pub(super) fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub(super) fn read_at<R: Read + Seek>(
    r: &mut R,
    pos: u64,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    r.seek(SeekFrom::Start(pos))?;
    read_up_to(r, buf)
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
fn check_flac<R: Read + Seek>(r: &mut R, len: u64) -> Result<Option<Comments>, String> {
    let mut pos = 0u64;
    let mut magic = [0u8; 4];
    read_at(r, 0, &mut magic).map_err(|e| e.to_string())?;
    if magic[..3] == *b"ID3" {
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
    let mut comments = None;
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
        if kind == 4 && comments.is_none() && size <= OGG_PACKET_MAX as u64 {
            let mut block = vec![0u8; size as usize];
            read_at(r, pos + 4, &mut block).map_err(|e| e.to_string())?;
            comments = parse_comments(&block);
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
        return Ok(comments); // length unknown: nothing to compare against
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
                return Ok(comments);
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
    let start = if fixed {
        num * u64::from(max_block)
    } else {
        num
    };
    Some(start + u64::from(block))
}

fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
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
        assert_eq!(
            describe(&[0, 1, 2, 250, 251]),
            "its content matches no known audio format"
        );
    }

    #[test]
    fn crc8_known_value() {
        // CRC-8/SMBUS ("123456789") = 0xF4.
        assert_eq!(crc8(b"123456789"), 0xF4);
    }
}
