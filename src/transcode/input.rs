//! The source file as the demuxer reads it: what a damaged header would
//! make symphonia refuse is corrected, and Ogg pages are checked as they
//! pass. ffmpeg plays all of these files; symphonia, stricter, refused
//! them whole.
//!
//! **RIFF/AIFF.** A `data` (or `SSND`) chunk that claims more bytes than
//! the file holds (a copy cut short, a recorder that never wrote the size)
//! is cut to what is present; a trailing chunk whose size runs past the end
//! (a tag) is left outside the container; metadata chunks (`LIST`, `ID3 `)
//! are renamed `JUNK`, as the tags are in the index already and a damaged
//! one must not cost the audio; AIFF's advisory block size is zeroed.
//!
//! **Ogg.** A header page, or the first audio page, whose CRC fails gets
//! a CRC that matches: symphonia reads them all while opening the stream
//! and refused the whole file for one bad page there (the header parsers
//! and the decoder still check what they read). Later audio pages are left
//! as they are: symphonia skips a page whose CRC fails and
//! resynchronises, quietly, so [`Input`] checks every page's CRC on its
//! way through and the transcode can say in the log what was skipped.
//!
//! Each correction is a 4-byte patch at a fixed offset, found at open from
//! chunk and page headers alone (a bounded number of them). Never changes
//! the file on disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

/// More chunks than this before the sound data: leave the file alone.
const MAX_CHUNKS: usize = 256;

/// A file seen through a few 4-byte patches at fixed offsets, with its
/// Ogg pages checked as they are read.
pub struct Input {
    file: File,
    len: u64,
    pos: u64,
    patches: Vec<(u64, [u8; 4])>,
    /// For Ogg files: the page checker and what it found.
    pages: Option<PageCheck>,
    damaged: Damaged,
}

/// Byte offsets of the damaged Ogg pages found so far, each once (a page
/// read twice, when the demuxer seeks back over it, is one page), in the
/// order found; at most [`MAX_DAMAGED`] are kept.
pub type Damaged = Arc<Mutex<Vec<u64>>>;

const MAX_DAMAGED: usize = 1024;

impl Input {
    /// `file`, with the corrections it needs.
    pub fn new(mut file: File) -> io::Result<Input> {
        let len = file.metadata()?.len();
        let patches = patches(&mut file, len).unwrap_or_default();
        let mut magic = [0u8; 4];
        file.seek(SeekFrom::Start(0))?;
        let is_ogg = file.read(&mut magic)? == 4 && &magic == b"OggS";
        file.seek(SeekFrom::Start(0))?;
        Ok(Input {
            file,
            len,
            pos: 0,
            patches,
            pages: is_ogg.then(PageCheck::default),
            damaged: Damaged::default(),
        })
    }

    /// The Ogg pages found damaged so far (bad CRC, or bytes between
    /// pages), shared with whoever reports the transcode's progress.
    pub fn damaged_pages(&self) -> Damaged {
        self.damaged.clone()
    }

    /// Whether any byte is corrected.
    #[cfg(test)]
    pub fn is_patched(&self) -> bool {
        !self.patches.is_empty()
    }
}

/// The patches a file needs: RIFF WAVE and AIFF sizes, Ogg header pages.
fn patches(f: &mut File, len: u64) -> io::Result<Vec<(u64, [u8; 4])>> {
    let mut head = [0u8; 12];
    f.seek(SeekFrom::Start(0))?;
    if f.read(&mut head)? < 12 {
        return Ok(Vec::new());
    }
    match (&head[..4], &head[8..12]) {
        (b"RIFF", b"WAVE") => chunk_patches(f, len, Endian::Little, b"data"),
        (b"FORM", b"AIFF" | b"AIFC") => chunk_patches(f, len, Endian::Big, b"SSND"),
        (b"OggS", _) => header_page_patches(f, len),
        _ => Ok(Vec::new()),
    }
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn encode(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    fn decode(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
}

/// RIFF/AIFF: metadata chunks are hidden from the demuxer (renamed JUNK);
/// a sound chunk that overruns the file is cut to it; a chunk
/// after the sound that overruns the file (a trailing tag with a lying
/// size) is left outside the container; an outer size that the chunks
/// overrun, or that overruns the file, becomes what they need.
fn chunk_patches(
    f: &mut File,
    len: u64,
    endian: Endian,
    sound: &[u8; 4],
) -> io::Result<Vec<(u64, [u8; 4])>> {
    let mut outer = [0u8; 4];
    f.seek(SeekFrom::Start(4))?;
    f.read_exact(&mut outer)?;
    let declared_end = 8 + u64::from(endian.decode(outer));
    let mut out = Vec::new();
    let mut sound_seen = false;
    // Where the container should end.
    let mut end_at = declared_end.min(len);
    let mut pos = 12u64;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        f.seek(SeekFrom::Start(pos))?;
        if f.read(&mut ch)? < 8 {
            break;
        }
        let size = u64::from(endian.decode(ch[4..8].try_into().expect("4")));
        let present = len - (pos + 8);
        let mut end = pos + 8 + size + (size & 1);
        if &ch[..4] == sound {
            sound_seen = true;
            if sound == b"SSND" {
                // AIFF's block size is advisory (and 0 in practice);
                // symphonia refuses others, ffmpeg ignores it.
                let mut block = [0u8; 4];
                f.seek(SeekFrom::Start(pos + 12))?;
                if f.read(&mut block)? == 4 && block != [0; 4] {
                    out.push((pos + 12, [0; 4]));
                }
            }
            if size > present {
                tracing::warn!(
                    "the sound chunk claims {size} bytes, the file holds {present}; playing what is there"
                );
                let cut = u32::try_from(present).unwrap_or(u32::MAX);
                out.push((pos + 4, endian.encode(cut)));
                end = len;
            }
        } else if matches!(&ch[..4], b"LIST" | b"id3 " | b"ID3 ") {
            // Metadata: the index has the tags already, and a damaged
            // LIST must not cost the audio (symphonia refuses the file
            // when a sub-chunk overruns it). The demuxer skips JUNK.
            out.push((pos, *b"JUNK"));
            if end > len {
                // A trailing tag that lies: the container ends before it.
                end_at = pos;
                break;
            }
        } else if end > len && sound_seen {
            // A trailing chunk that lies: the container ends before it.
            end_at = pos;
            break;
        } else if end > len {
            return Ok(Vec::new()); // before the sound: nothing to make right
        }
        end_at = end_at.max(end.min(len));
        if end >= len {
            break;
        }
        pos = end;
    }
    if !sound_seen {
        return Ok(Vec::new());
    }
    if end_at != declared_end {
        let size = u32::try_from(end_at - 8).unwrap_or(u32::MAX);
        out.push((4, endian.encode(size)));
    }
    Ok(out)
}

/// Most header pages looked at (Vorbis has three headers, Opus two, and a
/// big comment or cover can spread over a few pages).
const MAX_HEADER_PAGES: usize = 64;

/// Ogg: a header page (granule 0), or the first audio page, whose CRC
/// fails gets its CRC recomputed. symphonia reads all of them while
/// opening the stream and refuses the whole file on one bad CRC there;
/// without headers nothing plays, and a flipped bit in them is nearly
/// always in the comments. The header parsers still check what they read,
/// and the decoder skips a packet it cannot decode. Later audio pages with
/// bad CRCs are left for the demuxer to skip.
fn header_page_patches(f: &mut File, len: u64) -> io::Result<Vec<(u64, [u8; 4])>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for _ in 0..MAX_HEADER_PAGES {
        let mut h = [0u8; 27 + 255];
        f.seek(SeekFrom::Start(pos))?;
        let n = read_full(f, &mut h)?;
        if n < 27 || &h[..4] != b"OggS" {
            break;
        }
        let granule = u64::from_le_bytes(h[6..14].try_into().expect("8"));
        // The first page with a granule is the first audio page: symphonia
        // reads it while opening the stream, and a CRC error there fails
        // the open, so it is the last page looked at.
        let first_audio = granule != 0;
        let Some(page_len) = page_len(&h[..n]) else {
            break;
        };
        if pos + page_len as u64 > len {
            break;
        }
        let mut page = vec![0u8; page_len];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut page)?;
        let crc = page_crc(&page);
        if crc != u32::from_le_bytes(page[22..26].try_into().expect("4")) {
            let what = if first_audio { "first audio" } else { "header" };
            tracing::warn!("the {what} page at byte {pos} is damaged (bad CRC); reading it anyway");
            out.push((pos + 22, crc.to_le_bytes()));
        }
        pos += page_len as u64;
        if first_audio {
            break;
        }
    }
    Ok(out)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let abs = at + i as u64;
                if abs >= self.pos && abs < self.pos + n as u64 {
                    buf[(abs - self.pos) as usize] = *b;
                }
            }
        }
        if let Some(pages) = &mut self.pages {
            let bad = pages.feed(self.pos, &buf[..n]);
            if !bad.is_empty() {
                let mut d = self.damaged.lock().unwrap_or_else(|e| e.into_inner());
                for at in bad {
                    if !d.contains(&at) && d.len() < MAX_DAMAGED {
                        d.push(at);
                    }
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Input {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// Checks Ogg pages in a byte stream read in order. After a seek (the
/// demuxer looks at the last page for the duration, then comes back) it
/// starts again at the next capture pattern.
#[derive(Default)]
struct PageCheck {
    /// Stream offset the checker has reached.
    at: u64,
    /// The page being assembled (header, segment table, body).
    page: Vec<u8>,
    /// Bytes of garbage seen since the last page (counted once per run).
    in_garbage: bool,
}

impl PageCheck {
    /// Feed bytes read at stream offset `pos`; the offsets of the damaged
    /// pages (or stretches of garbage) found. Bytes are copied a run at a
    /// time: a page's length is known once its segment table is in.
    fn feed(&mut self, pos: u64, mut bytes: &[u8]) -> Vec<u64> {
        if pos != self.at {
            // A jump: start again at the next capture pattern, and do not
            // take the bytes before it for garbage.
            self.page.clear();
            self.in_garbage = true;
            self.at = pos;
        }
        let mut bad = Vec::new();
        while !bytes.is_empty() {
            if self.page.len() < 4 {
                // Looking for (the rest of) a capture pattern, a byte at
                // a time.
                let b = bytes[0];
                bytes = &bytes[1..];
                self.at += 1;
                self.page.push(b);
                while !self.page.is_empty() && self.page[..] != b"OggS"[..self.page.len()] {
                    self.page.remove(0);
                    if !self.in_garbage {
                        self.in_garbage = true;
                        bad.push(self.at - 1);
                    }
                }
                continue;
            }
            // The header and segment table first, then the whole page.
            let want = if self.page.len() < 27 {
                27
            } else {
                page_len(&self.page).unwrap_or(27 + usize::from(self.page[26]))
            };
            let n = (want - self.page.len()).min(bytes.len());
            self.page.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.at += n as u64;
            if page_len(&self.page) == Some(self.page.len()) {
                if !crc_holds(&self.page) {
                    bad.push(self.at - self.page.len() as u64);
                }
                self.in_garbage = false;
                self.page.clear();
            }
        }
        bad
    }
}

/// The whole length of the page `p` starts, once its segment table is in.
pub(super) fn page_len(p: &[u8]) -> Option<usize> {
    let nseg = usize::from(*p.get(26)?);
    let table = p.get(27..27 + nseg)?;
    Some(27 + nseg + table.iter().map(|&x| usize::from(x)).sum::<usize>())
}

/// Whether a whole page's CRC matches its bytes.
pub(super) fn crc_holds(page: &[u8]) -> bool {
    page_crc(page) == u32::from_le_bytes(page[22..26].try_into().expect("4 bytes"))
}

/// The CRC a whole page should carry (its own CRC field taken as zero).
fn page_crc(page: &[u8]) -> u32 {
    let mut crc = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        crc = (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// Ogg's CRC-32 (polynomial 0x04c11db7, unreflected), a byte at a time.
static CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl symphonia::core::io::MediaSource for Input {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wav(data_claim: u32, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&(36 + data_claim).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&[1, 0, 1, 0, 0x44, 0xac, 0, 0, 0x88, 0x58, 1, 0, 2, 0, 16, 0]);
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_claim.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn read_through(bytes: &[u8]) -> (bool, Vec<u8>) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        let mut p = Input::new(f).unwrap();
        let mut out = Vec::new();
        // Odd read sizes cross the patched offsets.
        let mut buf = [0u8; 7];
        loop {
            let n = p.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (p.is_patched(), out)
    }

    #[test]
    fn an_overrunning_data_chunk_is_cut_to_the_file() {
        let lying = wav(0x7fff_0000, &[1, 2, 3, 4, 5, 6]);
        let (patched, seen) = read_through(&lying);
        assert!(patched);
        assert_eq!(seen, wav(6, &[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn ogg_pages_with_bad_crcs_are_counted() {
        let ogg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lib/Beta Band/Opus Works/01 Opus.opus"
        ))
        .unwrap();
        let count = |bytes: &[u8]| {
            let mut c = PageCheck::default();
            // Odd read sizes cross page boundaries.
            let mut bad = 0;
            for (i, piece) in bytes.chunks(333).enumerate() {
                bad += c.feed(i as u64 * 333, piece).len();
            }
            bad
        };
        assert_eq!(count(&ogg), 0, "a whole file");
        let mut damaged = ogg.clone();
        let last = damaged.len() - 10;
        damaged[last] ^= 0x40;
        assert_eq!(count(&damaged), 1, "one flipped byte in the last page");
        let mut junk = ogg[..300].to_vec();
        junk.extend_from_slice(b"garbage between pages");
        junk.extend_from_slice(&ogg[300..]);
        assert!(count(&junk) >= 1, "bytes between pages");
    }

    #[test]
    fn honest_files_are_untouched() {
        let honest = wav(6, &[1, 2, 3, 4, 5, 6]);
        let (patched, seen) = read_through(&honest);
        assert!(!patched);
        assert_eq!(seen, honest);
        let (patched, seen) = read_through(b"fLaC and more");
        assert!(!patched);
        assert_eq!(seen, b"fLaC and more");
    }
}
