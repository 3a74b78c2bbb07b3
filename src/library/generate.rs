//! Generates synthetic music libraries for benchmarks and tests: N tagged
//! MP3 files made from one template, with varied tags (including diacritics),
//! nested artist/album folders, and distinct contents (so distinct track ids).
//!
//! The audio is the template's, unchanged; only the ID3v2 tag differs. Writing
//! a tag is a few microseconds, so a 100k-file library takes seconds.

use lofty::config::WriteOptions;
use lofty::prelude::{ItemKey, TagExt};
use lofty::tag::{Tag, TagType};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why generating a library failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The template file cannot be read or is not an MP3 file (the path and
    /// why).
    #[error("template {0}: {1}")]
    Template(PathBuf, String),
    /// A folder or file of the library could not be created or written.
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Deterministic pseudo-random numbers (splitmix64), seeded by the
/// caller: the same seed gives the same library (or fuzz corpus).
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the sequence (uniform over all `u64` values).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next_u64() % from.len() as u64) as usize]
    }
}

/// Words the generated titles, artists and albums are made of (some with
/// diacritics, to exercise search folding).
pub const WORDS: &[&str] = &[
    "Midnight",
    "Rós",
    "Café",
    "Echo",
    "Naïve",
    "Glass",
    "River",
    "Ångström",
    "Neon",
    "Hollow",
    "Velvet",
    "Señor",
    "Crystal",
    "Static",
    "Über",
    "Summer",
    "Zoë",
    "Paper",
    "Ghost",
    "Fjörd",
    "Golden",
    "Electric",
    "Silent",
    "Wild",
    "Broken",
    "Distant",
    "Solar",
    "Crimson",
    "Blue",
    "Morning",
    "Ocean",
    "Desert",
    "Mirror",
    "Caves",
    "Storm",
    "Garden",
    "Satellite",
    "Machine",
];
const GENRES: &[&str] = &[
    "Rock",
    "Jazz",
    "Electronic",
    "Folk",
    "Ambient",
    "Classical",
    "Pop",
];

/// The audio part of an MP3 template: everything after its ID3v2 tag.
fn template_audio(path: &Path) -> Result<Vec<u8>, GenerateError> {
    let bytes =
        std::fs::read(path).map_err(|e| GenerateError::Template(path.into(), e.to_string()))?;
    let start = if bytes.len() >= 10 && &bytes[..3] == b"ID3" {
        let size = bytes[6..10]
            .iter()
            .fold(0usize, |a, &b| (a << 7) | usize::from(b & 0x7f));
        10 + size
    } else {
        0
    };
    let audio = bytes.get(start..).unwrap_or_default();
    if audio.len() < 4 || audio[0] != 0xFF || audio[1] & 0xE0 != 0xE0 {
        return Err(GenerateError::Template(
            path.into(),
            "not an MP3 file (no MPEG frame after the tag)".into(),
        ));
    }
    Ok(audio.to_vec())
}

/// Write `count` tagged files under `out` from the MP3 `template`. Returns
/// their paths. Same `seed`, same library, byte for byte.
pub fn generate(
    template: &Path,
    out: &Path,
    count: usize,
    seed: u64,
) -> Result<Vec<PathBuf>, GenerateError> {
    let audio = template_audio(template)?;
    let mut rng = Rng(seed);
    let mut paths = Vec::with_capacity(count);
    let tracks_per_album = 10;
    let albums_per_artist = 5;
    let mut i = 0;
    let mut album_no = 0;
    while i < count {
        let artist = format!(
            "{} {} {}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            album_no / albums_per_artist
        );
        let album = format!("{} {}", rng.pick(WORDS), rng.pick(WORDS));
        let year = 1960 + (rng.next_u64() % 60) as u32;
        let genre = rng.pick(GENRES);
        let dir = out
            .join(sanitize(&artist))
            .join(format!("{year} - {} [{album_no}]", sanitize(&album)));
        std::fs::create_dir_all(&dir).map_err(|e| GenerateError::Io(dir.clone(), e))?;
        let n = tracks_per_album.min(count - i);
        for t in 1..=n {
            let title = format!(
                "{} {} {}",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.pick(WORDS)
            );
            let mut tag = Tag::new(TagType::Id3v2);
            tag.insert_text(ItemKey::TrackTitle, title.clone());
            tag.insert_text(ItemKey::TrackArtist, artist.clone());
            tag.insert_text(ItemKey::AlbumTitle, album.clone());
            tag.insert_text(ItemKey::AlbumArtist, artist.clone());
            tag.insert_text(ItemKey::TrackNumber, t.to_string());
            tag.insert_text(ItemKey::TrackTotal, n.to_string());
            tag.insert_text(ItemKey::DiscNumber, "1".into());
            tag.insert_text(ItemKey::RecordingDate, year.to_string());
            tag.insert_text(ItemKey::Genre, genre.into());
            tag.insert_text(ItemKey::Comment, format!("generated #{i} seed {seed}"));
            let path = dir.join(format!("{t:02} - {}.mp3", sanitize(&title)));
            let mut buf = Vec::with_capacity(audio.len() + 512);
            tag.dump_to(&mut buf, WriteOptions::default())
                .map_err(|e| {
                    GenerateError::Io(path.clone(), std::io::Error::other(e.to_string()))
                })?;
            buf.extend_from_slice(&audio);
            let mut f =
                std::fs::File::create(&path).map_err(|e| GenerateError::Io(path.clone(), e))?;
            f.write_all(&buf)
                .map_err(|e| GenerateError::Io(path.clone(), e))?;
            paths.push(path);
            i += 1;
        }
        album_no += 1;
    }
    Ok(paths)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | ':' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}
