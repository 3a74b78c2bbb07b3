//! Vorbis streams that restart inside one Ogg stream, cut as libvorbis
//! (the reference decoder, so `oggdec` and every libvorbisfile player)
//! cuts them.
//!
//! Some encoders write the three header packets again in the middle of
//! a stream and restart their granule count (a corpus file does it on its
//! third page, with granule -104). libvorbis skips the non-audio packets,
//! and because the packet sequence then has a gap it forgets its sample
//! count; at the next packet that carries a granule position it applies
//! the stream-start rule again: samples counted since the gap beyond that
//! granule are cut from the front of what is pending (that packet's
//! output). symphonia drops the headers quietly and cuts nothing, so the
//! source applies the rule itself, from the pages read here.
//!
//! Only restarts in the middle count; the stream's start is left to the
//! demuxer, which agrees with libvorbis there. Pure parsing: no decoding.

use std::io::Read;

/// Most pages read (a 10-hour stream has about 200k).
const MAX_PAGES: usize = 1 << 20;

/// One restart: where the count begins again and where it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// Index (among audio packets, from 0) of the first one after the gap.
    pub first: u64,
    /// Index of the first audio packet from there that carries a granule.
    pub judged: u64,
    /// That granule.
    pub granule: i64,
}

/// Every mid-stream restart of the single Vorbis stream in `r`; empty
/// for ordinary files (and for anything this does not understand).
pub fn restarts(r: &mut impl Read) -> Vec<Resync> {
    let mut out = Vec::new();
    let mut serial = None;
    let mut packet: Vec<u8> = Vec::new();
    let (mut headers, mut audio) = (0u32, 0u64);
    let mut pending: Option<u64> = None; // first audio packet after a gap
    for _ in 0..MAX_PAGES {
        let mut head = [0u8; 27];
        if r.read_exact(&mut head).is_err() || &head[..4] != b"OggS" {
            break;
        }
        let s = u32::from_le_bytes([head[14], head[15], head[16], head[17]]);
        if *serial.get_or_insert(s) != s {
            return Vec::new(); // multiplexed: not ours to judge
        }
        let granule = i64::from_le_bytes(head[6..14].try_into().unwrap_or([0xff; 8]));
        let mut lacing = vec![0u8; usize::from(head[26])];
        let mut body = Vec::new();
        if r.read_exact(&mut lacing).is_err() {
            break;
        }
        body.resize(lacing.iter().map(|&l| usize::from(l)).sum(), 0);
        if r.read_exact(&mut body).is_err() {
            break;
        }
        let (mut at, mut last_audio_here) = (0usize, None);
        for &l in &lacing {
            packet.extend_from_slice(&body[at..at + usize::from(l)]);
            at += usize::from(l);
            if l == 255 {
                continue;
            }
            let is_audio = packet.first().is_some_and(|b| b & 1 == 0);
            packet.clear();
            if !is_audio {
                headers += 1;
                if headers > 3 && audio > 0 && pending.is_none() {
                    pending = Some(audio);
                }
                continue;
            }
            last_audio_here = Some(audio);
            audio += 1;
        }
        // The granule belongs to the page's last completed packet, when
        // that is an audio packet.
        if let (Some(first), Some(idx), true) = (pending, last_audio_here, granule != -1) {
            out.push(Resync {
                first,
                judged: idx,
                granule,
            });
            pending = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of whole packets, each `len` bytes, the first byte saying
    /// audio (0) or header (1).
    fn page(granule: i64, packets: &[(u8, usize)]) -> Vec<u8> {
        let mut lacing = vec![];
        let mut body = vec![];
        for &(kind, len) in packets {
            lacing.extend(std::iter::repeat_n(255u8, len / 255));
            lacing.push((len % 255) as u8);
            body.push(kind);
            body.extend(std::iter::repeat_n(0u8, len - 1));
        }
        let mut v = b"OggS\0\0".to_vec();
        v.extend(granule.to_le_bytes());
        v.extend(9u32.to_le_bytes());
        v.extend([0u8; 8]);
        v.push(lacing.len() as u8);
        v.extend(lacing);
        v.extend(body);
        v
    }

    #[test]
    fn a_restart_with_headers_mid_stream_is_found_and_judged_at_its_granule() {
        let mut f = page(0, &[(1, 30)]);
        f.extend(page(0, &[(1, 76), (1, 300)]));
        f.extend(page(5312, &[(0, 167), (0, 183), (0, 564)]));
        // Headers again, then the first audio packet, on one page.
        f.extend(page(-104, &[(1, 30), (1, 76), (1, 600), (0, 167)]));
        f.extend(page(6232, &[(0, 183), (0, 716)]));
        let r = restarts(&mut std::io::Cursor::new(f));
        assert_eq!(
            r,
            vec![Resync {
                first: 3,
                judged: 3,
                granule: -104
            }]
        );
    }

    #[test]
    fn ordinary_streams_have_no_restarts() {
        let mut f = page(0, &[(1, 30)]);
        f.extend(page(0, &[(1, 76), (1, 300)]));
        f.extend(page(900, &[(0, 100), (0, 600)]));
        f.extend(page(-1, &[(0, 300)]));
        f.extend(page(2000, &[(0, 100)]));
        assert!(restarts(&mut std::io::Cursor::new(f)).is_empty());
        assert!(restarts(&mut std::io::Cursor::new(b"fLaC....".to_vec())).is_empty());
    }
}
