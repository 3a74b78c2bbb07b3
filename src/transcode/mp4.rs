//! Gapless information of MP4/M4A files: the edit list of the sound track.
//!
//! AAC encoders prime the decoder with silence (1024 frames for ffmpeg and
//! most encoders, 2112 for iTunes) and pad the last frame; the MP4 edit list
//! (`moov/trak/edts/elst`) says which decoded frames are the track. Symphonia
//! 0.6 parses the atom but does not expose it, so this module reads just
//! that: a bounded walk over the few container boxes on the way, never
//! trusting a size beyond the file.

use std::io::{Read, Seek, SeekFrom};

/// The part of the decoded stream that is the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditList {
    /// Media timescale (frames per second for audio).
    pub timescale: u64,
    /// Decoded frames to drop at the start (encoder priming).
    pub skip: u64,
    /// Valid frames after the skip, when the edit says.
    pub frames: Option<u64>,
}

/// Reads the edit list of the first sound track of an MP4 file. `Ok(None)`
/// for other files, and for MP4 files without an edit list.
pub fn edit_list<R: Read + Seek>(r: &mut R) -> std::io::Result<Option<EditList>> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 8];
    if r.read_exact(&mut head).is_err() || &head[4..8] != b"ftyp" {
        return Ok(None);
    }
    let Some((moov, moov_end)) = find(r, 0, len, b"moov")? else {
        return Ok(None);
    };
    let movie_scale = match find(r, moov, moov_end, b"mvhd")? {
        Some((at, end)) => timescale(r, at, end, 12, 20)?,
        None => None,
    };
    let mut at = moov;
    while let Some((trak, trak_end)) = find(r, at, moov_end, b"trak")? {
        at = trak_end;
        let Some((mdia, mdia_end)) = find(r, trak, trak_end, b"mdia")? else {
            continue;
        };
        let Some((hdlr, hdlr_end)) = find(r, mdia, mdia_end, b"hdlr")? else {
            continue;
        };
        if hdlr_end - hdlr < 12 || read_at::<4>(r, hdlr + 8)? != *b"soun" {
            continue;
        }
        let Some(media_scale) = (match find(r, mdia, mdia_end, b"mdhd")? {
            Some((at, end)) => timescale(r, at, end, 12, 20)?,
            None => None,
        }) else {
            continue;
        };
        let Some((edts, edts_end)) = find(r, trak, trak_end, b"edts")? else {
            return Ok(None);
        };
        let Some((elst, elst_end)) = find(r, edts, edts_end, b"elst")? else {
            return Ok(None);
        };
        return read_elst(r, elst, elst_end, media_scale, movie_scale);
    }
    Ok(None)
}

/// First box of type `kind` among the boxes in `[from, to)`: its payload
/// start and end.
fn find<R: Read + Seek>(
    r: &mut R,
    mut from: u64,
    to: u64,
    kind: &[u8; 4],
) -> std::io::Result<Option<(u64, u64)>> {
    while from + 8 <= to {
        let h = read_at::<8>(r, from)?;
        let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        let (size, header) = match size32 {
            0 => (to - from, 8),
            1 => {
                if from + 16 > to {
                    return Ok(None);
                }
                (u64::from_be_bytes(read_at::<8>(r, from + 8)?), 16)
            }
            s => (s, 8),
        };
        if size < header || from + size > to {
            return Ok(None); // a lying size: stop, read nothing beyond
        }
        if &h[4..8] == kind {
            return Ok(Some((from + header, from + size)));
        }
        from += size;
    }
    Ok(None)
}

/// The timescale of an `mvhd`/`mdhd` full box (version 0 or 1).
fn timescale<R: Read + Seek>(
    r: &mut R,
    at: u64,
    end: u64,
    v0_offset: u64,
    v1_offset: u64,
) -> std::io::Result<Option<u64>> {
    if at + 4 > end {
        return Ok(None);
    }
    let off = if read_at::<1>(r, at)?[0] == 1 {
        v1_offset
    } else {
        v0_offset
    };
    if at + off + 4 > end {
        return Ok(None);
    }
    let ts = u32::from_be_bytes(read_at::<4>(r, at + off)?) as u64;
    Ok((ts > 0).then_some(ts))
}

fn read_elst<R: Read + Seek>(
    r: &mut R,
    at: u64,
    end: u64,
    media_scale: u64,
    movie_scale: Option<u64>,
) -> std::io::Result<Option<EditList>> {
    if at + 8 > end {
        return Ok(None);
    }
    let vf = read_at::<4>(r, at)?;
    let count = u32::from_be_bytes(read_at::<4>(r, at + 4)?) as u64;
    let entry = if vf[0] == 1 { 20 } else { 12 };
    if at + 8 + count.min(1 << 20) * entry > end {
        return Ok(None);
    }
    for i in 0..count.min(64) {
        let e = at + 8 + i * entry;
        let (duration, media_time) = if vf[0] == 1 {
            (
                u64::from_be_bytes(read_at::<8>(r, e)?),
                i64::from_be_bytes(read_at::<8>(r, e + 8)?),
            )
        } else {
            (
                u32::from_be_bytes(read_at::<4>(r, e)?) as u64,
                i32::from_be_bytes(read_at::<4>(r, e + 4)?) as i64,
            )
        };
        if media_time < 0 {
            continue; // an empty edit (a delay before the track): ignored
        }
        let frames = match movie_scale {
            Some(ms) if duration > 0 => {
                Some((duration as u128 * media_scale as u128 / ms as u128) as u64)
            }
            _ => None,
        };
        return Ok(Some(EditList {
            timescale: media_scale,
            skip: media_time as u64,
            frames,
        }));
    }
    Ok(None)
}

fn read_at<const N: usize>(r: &mut (impl Read + Seek), at: u64) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.seek(SeekFrom::Start(at))?;
    r.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn file(elst: &[u8]) -> Vec<u8> {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&44100u32.to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"soun");
        let mdia = [boxed(b"mdhd", &mdhd), boxed(b"hdlr", &hdlr)].concat();
        let trak = [boxed(b"edts", &boxed(b"elst", elst)), boxed(b"mdia", &mdia)].concat();
        let moov = [boxed(b"mvhd", &mvhd), boxed(b"trak", &trak)].concat();
        [boxed(b"ftyp", b"M4A \0\0\0\0"), boxed(b"moov", &moov)].concat()
    }

    #[test]
    fn reads_priming_and_length() {
        // One edit: 30 s of movie time (timescale 1000) from media time 1024.
        let mut elst = vec![0, 0, 0, 0, 0, 0, 0, 1];
        elst.extend_from_slice(&30_000u32.to_be_bytes());
        elst.extend_from_slice(&1024u32.to_be_bytes());
        elst.extend_from_slice(&[0, 1, 0, 0]);
        let e = edit_list(&mut Cursor::new(file(&elst))).unwrap().unwrap();
        assert_eq!(
            e,
            EditList {
                timescale: 44100,
                skip: 1024,
                frames: Some(1_323_000)
            }
        );
    }

    #[test]
    fn lying_sizes_read_nothing() {
        let mut elst = vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        elst.extend_from_slice(&[0; 12]);
        assert_eq!(edit_list(&mut Cursor::new(file(&elst))).unwrap(), None);
        let mut f = file(&elst);
        let n = f.len();
        f[n - 200..].fill(0xff);
        assert!(edit_list(&mut Cursor::new(f)).unwrap_or(None).is_none());
        assert_eq!(
            edit_list(&mut Cursor::new(b"ID3 not mp4".to_vec())).unwrap(),
            None
        );
    }
}
