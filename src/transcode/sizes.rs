//! Chunk sizes that lie, corrected before the demuxer reads them.
//!
//! A WAV whose `data` chunk (or an AIFF whose `SSND` chunk) claims more
//! bytes than the file holds is the most common damage a PCM file has: a
//! copy cut short, a recorder that never went back to write the size.
//! ffmpeg plays what is there; symphonia refuses the whole file ("chunk
//! length exceeds parent chunk length"). [`Patched`] is the file as it
//! should have been written: the container's and the sound chunk's size
//! fields say what is really present, every other byte is the file's own.
//!
//! Reads chunk headers only (a bounded number of them); never changes the
//! file on disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// More chunks than this before the sound data: leave the file alone.
const MAX_CHUNKS: usize = 256;

/// A file seen through a few 4-byte patches at fixed offsets.
pub struct Patched {
    file: File,
    len: u64,
    pos: u64,
    patches: Vec<(u64, [u8; 4])>,
}

impl Patched {
    /// `file`, with its RIFF/AIFF sizes corrected when they overrun it.
    pub fn new(mut file: File) -> io::Result<Patched> {
        let len = file.metadata()?.len();
        let patches = patches(&mut file, len).unwrap_or_default();
        file.seek(SeekFrom::Start(0))?;
        Ok(Patched {
            file,
            len,
            pos: 0,
            patches,
        })
    }

    /// Whether any size was corrected.
    pub fn is_patched(&self) -> bool {
        !self.patches.is_empty()
    }
}

/// The patches a RIFF WAVE or AIFF file needs, none for anything else.
fn patches(f: &mut File, len: u64) -> io::Result<Vec<(u64, [u8; 4])>> {
    let mut head = [0u8; 12];
    f.seek(SeekFrom::Start(0))?;
    if f.read(&mut head)? < 12 {
        return Ok(Vec::new());
    }
    let (big_endian, sound): (bool, &[u8; 4]) = match (&head[..4], &head[8..12]) {
        (b"RIFF", b"WAVE") => (false, b"data"),
        (b"FORM", b"AIFF" | b"AIFC") => (true, b"SSND"),
        _ => return Ok(Vec::new()),
    };
    let encode = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut pos = 12u64;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        f.seek(SeekFrom::Start(pos))?;
        if f.read(&mut ch)? < 8 {
            break;
        }
        let raw: [u8; 4] = ch[4..8].try_into().expect("4");
        let size = u64::from(if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        });
        if &ch[..4] == sound {
            let present = len - (pos + 8);
            if size <= present {
                return Ok(Vec::new());
            }
            // Whole sample frames only would be nicer, but the demuxer
            // already stops at the last whole block.
            let present = u32::try_from(present).unwrap_or(u32::MAX);
            let outer = u32::try_from(len - 8).unwrap_or(u32::MAX);
            return Ok(vec![(4, encode(outer)), (pos + 4, encode(present))]);
        }
        pos += 8 + size + (size & 1);
        if pos >= len {
            break;
        }
    }
    Ok(Vec::new())
}

impl Read for Patched {
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
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Patched {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

impl symphonia::core::io::MediaSource for Patched {
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
        let mut p = Patched::new(f).unwrap();
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
