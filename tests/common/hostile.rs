//! Small reproducers of damaged and hostile audio files, written byte by
//! byte: every header field a test wants to lie about is a parameter.
//!
//! The PCM files (WAV, AIFF) are made from scratch (a sine tone); the
//! compressed ones start from the committed fixtures (`tests/fixtures/lib`)
//! and patch them. `cargo run --example hostile -- DIR` writes every one of
//! them to a folder, to try the node by hand.
#![allow(dead_code)]

use std::path::Path;

/// A sine tone, 16-bit, interleaved (`channels` copies of it).
pub fn sine_s16(rate: u32, channels: u16, frames: u32) -> Vec<i16> {
    let mut v = Vec::with_capacity(frames as usize * channels as usize);
    for i in 0..frames {
        let x = (i as f64 * 440.0 * std::f64::consts::TAU / f64::from(rate.max(1))).sin();
        for _ in 0..channels {
            v.push((x * 12_000.0) as i16);
        }
    }
    v
}

/// The header fields of a PCM WAV file. `Default` is an honest 1 s of
/// 44.1 kHz stereo.
#[derive(Clone, Debug)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    pub bits: u16,
    /// Frames of audio actually present.
    pub frames: u32,
    /// What the `data` chunk's size field says (`None`: the truth).
    pub data_len: Option<u32>,
}

impl Default for Wav {
    fn default() -> Wav {
        Wav {
            rate: 44_100,
            channels: 2,
            bits: 16,
            frames: 44_100,
            data_len: None,
        }
    }
}

impl Wav {
    pub fn bytes(&self) -> Vec<u8> {
        let samples = sine_s16(self.rate.min(48_000), self.channels.min(2), self.frames);
        let ch = u32::from(self.channels);
        // The data: 16-bit samples of the tone, as many bytes as the
        // declared format says one frame has.
        let frame_bytes = (ch * u32::from(self.bits) / 8).max(1) as usize;
        let mut data = Vec::with_capacity(self.frames as usize * frame_bytes);
        for f in 0..self.frames as usize {
            for b in 0..frame_bytes {
                let s = samples[(f * usize::from(self.channels.min(2))) % samples.len().max(1)];
                data.push(s.to_le_bytes()[b % 2]);
            }
        }
        let block_align = (ch * u32::from(self.bits) / 8) as u16;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.rate.to_le_bytes());
        out.extend_from_slice(&(self.rate.wrapping_mul(u32::from(block_align))).to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&self.bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&self.data_len.unwrap_or(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }
}

/// An IEEE 754 80-bit extended float (AIFF's sample rate), big endian.
pub fn extended(x: f64) -> [u8; 10] {
    let mut out = [0u8; 10];
    if x <= 0.0 {
        return out;
    }
    let exp = x.log2().floor() as i32;
    let mantissa = (x / 2f64.powi(exp) * 2f64.powi(63)) as u64;
    let e = (exp + 16_383) as u16;
    out[..2].copy_from_slice(&e.to_be_bytes());
    out[2..].copy_from_slice(&mantissa.to_be_bytes());
    out
}

/// The header fields of an AIFF file (16-bit big-endian PCM).
#[derive(Clone, Debug)]
pub struct Aiff {
    /// The COMM chunk's 80-bit sample rate, raw.
    pub rate: [u8; 10],
    pub channels: u16,
    /// Frames of audio actually present.
    pub frames: u32,
    /// What COMM's frame count says (`None`: the truth).
    pub declared_frames: Option<u32>,
}

impl Default for Aiff {
    fn default() -> Aiff {
        Aiff {
            rate: extended(44_100.0),
            channels: 2,
            frames: 44_100,
            declared_frames: None,
        }
    }
}

impl Aiff {
    /// An absurd rate: the largest finite exponent (about 10^4932 Hz).
    pub fn absurd_rate() -> [u8; 10] {
        let mut r = [0u8; 10];
        r[0] = 0x7F;
        r[1] = 0xFE;
        r[2] = 0x80;
        r
    }

    pub fn bytes(&self) -> Vec<u8> {
        // The sound data holds `frames` frames of the declared width
        // (capped, so a 65535-channel lie stays a small file).
        let ch = usize::from(self.channels);
        let samples = sine_s16(44_100, 1, self.frames);
        let mut data = Vec::new();
        'outer: for s in &samples {
            for _ in 0..ch {
                data.extend_from_slice(&s.to_be_bytes());
                if data.len() >= 400_000 {
                    break 'outer;
                }
            }
        }
        let mut comm = Vec::new();
        comm.extend_from_slice(&self.channels.to_be_bytes());
        comm.extend_from_slice(&self.declared_frames.unwrap_or(self.frames).to_be_bytes());
        comm.extend_from_slice(&16u16.to_be_bytes());
        comm.extend_from_slice(&self.rate);
        let mut ssnd = Vec::new();
        ssnd.extend_from_slice(&0u32.to_be_bytes()); // offset
        ssnd.extend_from_slice(&0u32.to_be_bytes()); // block size
        ssnd.extend_from_slice(&data);
        let mut body = Vec::new();
        body.extend_from_slice(b"AIFF");
        for (id, chunk) in [(b"COMM", &comm), (b"SSND", &ssnd)] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"FORM".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lib");
    std::fs::read(lib.join(rel)).unwrap()
}

/// The fixture MP3 (64 kb/s CBR, ID3v2.4 with a cover, a LAME "Info" frame).
pub fn mp3_fixture() -> Vec<u8> {
    fixture("Alpha Artist/First Album/01 - Opening.mp3")
}

fn id3_len(b: &[u8]) -> usize {
    assert_eq!(&b[..3], b"ID3");
    let size = b[6..10]
        .iter()
        .fold(0usize, |a, &x| (a << 7) | usize::from(x & 0x7f));
    10 + size
}

/// The fixture MP3 whose Xing/Info header claims `frames` frames (the
/// byte count stays true).
pub fn mp3_lying_xing(frames: u32) -> Vec<u8> {
    let mut b = mp3_fixture();
    let start = id3_len(&b);
    let at = start
        + b[start..start + 200]
            .windows(4)
            .position(|w| w == b"Xing" || w == b"Info")
            .expect("the fixture has a Xing/Info frame");
    let flags = u32::from_be_bytes(b[at + 4..at + 8].try_into().unwrap());
    assert!(flags & 1 != 0, "the Info frame carries a frame count");
    b[at + 8..at + 12].copy_from_slice(&frames.to_be_bytes());
    b
}

/// The fixture MP3 whose first ID3v2 frame claims more bytes than the tag
/// holds (a broken tag writer); the audio is intact.
pub fn mp3_lying_id3_frame() -> Vec<u8> {
    let mut b = mp3_fixture();
    let end = id3_len(&b);
    assert!(end > 20);
    // ID3v2.4 frame: id(4) size(4, syncsafe) flags(2). The first frame
    // starts right after the 10-byte header (no extended header).
    assert!(
        b[10..14].iter().all(u8::is_ascii_alphanumeric),
        "a frame id"
    );
    b[14..18].copy_from_slice(&[0x7f, 0x7f, 0x7f, 0x7f]);
    b
}

/// Ogg pages of a file: (offset, length) of each.
pub fn ogg_pages(b: &[u8]) -> Vec<(usize, usize)> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at + 27 <= b.len() && &b[at..at + 4] == b"OggS" {
        let nseg = usize::from(b[at + 26]);
        let body: usize = b[at + 27..at + 27 + nseg]
            .iter()
            .map(|&x| usize::from(x))
            .sum();
        let len = 27 + nseg + body;
        pages.push((at, len));
        at += len;
    }
    pages
}

/// An Ogg file re-paged so that every audio packet has a page of its own
/// (the fixtures are too short to have more than one audio page). Each
/// page's granule is where its packet ends, as symphonia (an independent
/// reader of the original) times the packets.
pub fn ogg_one_packet_per_page(src: &[u8]) -> Vec<u8> {
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    let mss = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(src.to_vec())),
        Default::default(),
    );
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .unwrap();
    let mut ends = Vec::new();
    while let Ok(Some(p)) = format.next_packet() {
        ends.push((p.pts.get() + p.dur.get() as i64).max(0) as u64);
    }
    let mut packets = Vec::new();
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(src));
    while let Some(p) = reader.read_packet().unwrap() {
        packets.push(p);
    }
    let headers = packets.len() - ends.len();
    let mut out = Vec::new();
    let mut w = ogg::PacketWriter::new(&mut out);
    let n = packets.len();
    for (i, p) in packets.into_iter().enumerate() {
        let end = if i + 1 == n {
            ogg::PacketWriteEndInfo::EndStream
        } else if i + 1 == headers || i == 0 || i >= headers {
            ogg::PacketWriteEndInfo::EndPage
        } else {
            ogg::PacketWriteEndInfo::NormalPacket
        };
        let granule = if i < headers {
            0
        } else if i + 1 == n {
            p.absgp_page()
        } else {
            ends[i - headers]
        };
        let serial = p.stream_serial();
        w.write_packet(p.data, serial, end, granule).unwrap();
    }
    drop(w);
    out
}

/// The fixture Vorbis file, one packet per page, with a byte of the audio
/// page at `page` (counting all pages from 0) flipped: its CRC no longer
/// matches.
pub fn ogg_bad_crc(rel: &str, page: usize) -> Vec<u8> {
    let mut b = ogg_one_packet_per_page(&fixture(rel));
    let pages = ogg_pages(&b);
    assert!(pages.len() > page + 2, "{rel}: only {} pages", pages.len());
    let (at, len) = pages[page];
    b[at + len - 3] ^= 0x5a;
    b
}

pub const VORBIS_FIXTURE: &str = "Alpha Artist/First Album/03 - Vorbis.ogg";
pub const OPUS_FIXTURE: &str = "Beta Band/Opus Works/01 Opus.opus";

/// Every reproducer, by file name.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "wav_rate_ffffffff.wav",
            Wav {
                rate: u32::MAX,
                ..Wav::default()
            }
            .bytes(),
        ),
        (
            "wav_rate_1hz.wav",
            Wav {
                rate: 1,
                ..Wav::default()
            }
            .bytes(),
        ),
        (
            "wav_data_len_lies.wav",
            Wav {
                data_len: Some(0x7fff_0000),
                ..Wav::default()
            }
            .bytes(),
        ),
        (
            "aiff_absurd_rate.aiff",
            Aiff {
                rate: Aiff::absurd_rate(),
                ..Aiff::default()
            }
            .bytes(),
        ),
        (
            "aiff_65535_channels.aiff",
            Aiff {
                channels: 65_535,
                frames: 4,
                ..Aiff::default()
            }
            .bytes(),
        ),
        ("mp3_xing_lies.mp3", mp3_lying_xing(0x7fff_ffff)),
        ("mp3_id3_frame_lies.mp3", mp3_lying_id3_frame()),
        ("vorbis_bad_crc.ogg", ogg_bad_crc(VORBIS_FIXTURE, 4)),
        // The first page with a granule: the demuxer reads it while
        // opening the stream, where one bad CRC refused the whole file.
        (
            "vorbis_bad_crc_first_audio_page.ogg",
            ogg_bad_crc(VORBIS_FIXTURE, 3),
        ),
        ("opus_bad_crc.opus", ogg_bad_crc(OPUS_FIXTURE, 6)),
    ]
}

/// Write every reproducer into `dir`.
pub fn write_all(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in all() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
