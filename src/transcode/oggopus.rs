//! Ogg Opus encapsulation (RFC 7845): identification and comment headers,
//! granule positions that include the pre-skip, end trimming, and pages
//! flushed early so a player can start after a few packets.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Packets per page in steady state: 50 × 20 ms = 1 s, the granularity
/// opusenc uses. The first audio pages are smaller (1, 2, 4 … packets) so
/// the first audio reaches the listener within one packet's encode time.
const PACKETS_PER_PAGE: usize = 50;

/// Header fields of an Ogg Opus stream.
pub struct Head<'a> {
    pub channels: u8,
    pub pre_skip: u16,
    /// Sample rate of the original source (informational, RFC 7845 §5.1).
    pub input_rate: u32,
    /// The comment header packet, from [`tags_packet`].
    pub tags: &'a [u8],
}

/// The OpusTags packet (RFC 7845 §5.2): `vendor`, then `KEY=value` user
/// comments. Its exact bytes are part of a transcode's identity.
pub fn tags_packet(vendor: &str, comments: &[(String, String)]) -> Vec<u8> {
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    put_str(&mut tags, vendor);
    tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for (k, v) in comments {
        put_str(&mut tags, &format!("{k}={v}"));
    }
    tags
}

pub struct Muxer {
    writer: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    in_page: usize,
    page_target: usize,
}

impl Muxer {
    /// A new stream; its two header pages are ready in [`take`](Self::take)
    /// at once.
    pub fn new(serial: u32, head: &Head<'_>) -> Muxer {
        let mut writer = PacketWriter::new(Vec::with_capacity(64 << 10));
        let mut id = Vec::with_capacity(19);
        id.extend_from_slice(b"OpusHead");
        id.push(1); // version
        id.push(head.channels);
        id.extend_from_slice(&head.pre_skip.to_le_bytes());
        id.extend_from_slice(&head.input_rate.to_le_bytes());
        id.extend_from_slice(&0i16.to_le_bytes()); // output gain
        id.push(0); // channel mapping family 0: mono or stereo
                    // Writing to a Vec cannot fail.
        let _ = writer.write_packet(id, serial, PacketWriteEndInfo::EndPage, 0);
        let _ = writer.write_packet(head.tags.to_vec(), serial, PacketWriteEndInfo::EndPage, 0);
        Muxer {
            writer,
            serial,
            in_page: 0,
            page_target: 1,
        }
    }

    /// Add one audio packet. `granule` counts the 48 kHz samples decoded
    /// through the end of this packet, pre-skip included (RFC 7845 §4); for
    /// the last packet it is pre-skip + the exact length of the track,
    /// which ends inside the packet (end trimming).
    pub fn packet(&mut self, data: Vec<u8>, granule: u64, last: bool) {
        self.in_page += 1;
        let end = if last {
            PacketWriteEndInfo::EndStream
        } else if self.in_page >= self.page_target {
            self.in_page = 0;
            self.page_target = (self.page_target * 2).min(PACKETS_PER_PAGE);
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        let _ = self.writer.write_packet(data, self.serial, end, granule);
    }

    /// The bytes of every page completed since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.inner_mut())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The granule position of the last whole page in `tail` whose CRC holds.
pub fn last_granule(tail: &[u8]) -> Option<u64> {
    let mut at = tail.len();
    while let Some(i) = memchr::memmem::rfind(&tail[..at], b"OggS") {
        let page = &tail[i..];
        if let Some(len) = super::input::page_len(page).filter(|&n| n <= page.len()) {
            if super::input::crc_holds(&page[..len]) {
                return Some(u64::from_le_bytes(page[6..14].try_into().expect("8 bytes")));
            }
        }
        at = i;
    }
    None
}
