//! Ids of the catalog: album and artist ids derived from names (so the same
//! album held by two devices is one album, and its id survives restarts),
//! and the one resolver of hex id prefixes that every surface uses.
//!
//! Pure: no storage, no locks.

use crate::index::search;
use crate::model::{Hash32, Tags, TrackId};
use std::fmt;
use std::str::FromStr;

/// Fewest hex digits a short id may have (as `git` asks for at least 4).
/// The same everywhere: the CLI offline, a running node, the HTTP API.
pub const MIN_PREFIX: usize = 4;

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// 32 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..8])
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let b = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.trim().as_bytes())
                    .map_err(|_| IdError::NotAnId(s.to_string()))?;
                Ok($name(b.try_into().map_err(|_| IdError::NotAnId(s.to_string()))?))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// An album of the merged library: its owner (album artist, else the
    /// artist) and title, folded (case and accents ignored), hashed. The
    /// same on every device and every run.
    AlbumId
);
name_id!(
    /// An artist of the merged library: the folded name, hashed.
    ArtistId
);

impl AlbumId {
    /// The album `tags` file the track under, if it names an album.
    pub fn of(tags: &Tags) -> Option<AlbumId> {
        if tags.album.is_empty() {
            return None;
        }
        let doc = format!(
            "{}\0{}",
            search::normalize(&tags.album_owner()),
            search::normalize(&tags.album)
        );
        Some(AlbumId(Hash32::of(doc.as_bytes()).0[..16].try_into().ok()?))
    }
}

impl ArtistId {
    /// The artist called `name`.
    pub fn of(name: &str) -> ArtistId {
        let h = Hash32::of(search::normalize(name).as_bytes());
        ArtistId(h.0[..16].try_into().unwrap_or([0; 16]))
    }
}

/// Why an id or id prefix names nothing, or more than one thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not hex, too short or too long.
    #[error("{0:?} is not an id (at least {MIN_PREFIX} hex digits)")]
    NotAnId(String),
    /// Nothing starts with it.
    #[error("no track {0} in the library")]
    NotFound(String),
    /// Several things start with it.
    #[error("{count} tracks start with {prefix}; give more digits")]
    Ambiguous {
        /// The prefix as given.
        prefix: String,
        /// How many ids start with it (at least 2).
        count: usize,
    },
}

/// A hex prefix of a track id, checked: at least [`MIN_PREFIX`] digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    hex: String,
}

impl FromStr for Prefix {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Prefix, IdError> {
        let hex = s.trim().to_ascii_lowercase();
        if hex.len() < MIN_PREFIX || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::NotAnId(s.trim().to_string()));
        }
        Ok(Prefix { hex })
    }
}

impl Prefix {
    /// The digits, lowercase.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The whole id, when all 64 digits are given.
    pub fn whole(&self) -> Option<TrackId> {
        self.hex.parse().ok()
    }

    /// The smallest and largest ids with this prefix (inclusive): a range
    /// query over any id-ordered map finds every match.
    pub fn bounds(&self) -> (TrackId, TrackId) {
        let mut lo = [0u8; 32];
        let mut hi = [0xffu8; 32];
        for (i, c) in self.hex.bytes().enumerate() {
            let v = (c as char).to_digit(16).unwrap_or(0) as u8;
            let (b, shift) = (i / 2, if i % 2 == 0 { 4 } else { 0 });
            let mask = 0x0f << shift;
            lo[b] = (lo[b] & !mask) | (v << shift);
            hi[b] = (hi[b] & !mask) | (v << shift);
        }
        (Hash32(lo), Hash32(hi))
    }

    /// The one id among `matches` (the ids within [`Prefix::bounds`]).
    pub fn pick(&self, mut matches: impl Iterator<Item = TrackId>) -> Result<TrackId, IdError> {
        let first = matches
            .next()
            .ok_or_else(|| IdError::NotFound(self.hex.clone()))?;
        match matches.count() {
            0 => Ok(first),
            more => Err(IdError::Ambiguous {
                prefix: self.hex.clone(),
                count: more + 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(hex_start: &str) -> TrackId {
        let mut s = hex_start.to_string();
        while s.len() < 64 {
            s.push('0');
        }
        s.parse().unwrap()
    }

    #[test]
    fn prefix_needs_four_hex_digits() {
        assert!("5d".parse::<Prefix>().is_err());
        assert!("5d2x".parse::<Prefix>().is_err());
        assert!(" 5D2A ".parse::<Prefix>().is_ok());
        assert!("a".repeat(65).parse::<Prefix>().is_err());
    }

    #[test]
    fn bounds_cover_exactly_the_ids_with_the_prefix() {
        let ids: BTreeSet<TrackId> = ["5d2a", "5d2b", "5d2a9", "5d3", "5d29f"]
            .iter()
            .map(|h| id(h))
            .collect();
        for (p, want) in [
            ("5d2a", 2),
            ("5d2b", 1),
            ("5d2a9", 1),
            ("5d29", 1),
            ("ffff", 0),
        ] {
            let p: Prefix = p.parse().unwrap();
            let (lo, hi) = p.bounds();
            let got: Vec<TrackId> = ids.range(lo..=hi).copied().collect();
            assert_eq!(got.len(), want, "prefix {}", p.as_str());
            assert!(got.iter().all(|i| i.to_hex().starts_with(p.as_str())));
        }
    }

    #[test]
    fn pick_one_none_or_ambiguous() {
        let p: Prefix = "5d2a".parse().unwrap();
        assert_eq!(p.pick([id("5d2a")].into_iter()), Ok(id("5d2a")));
        assert!(matches!(
            p.pick(std::iter::empty()),
            Err(IdError::NotFound(_))
        ));
        assert!(matches!(
            p.pick([id("5d2a"), id("5d2a1")].into_iter()),
            Err(IdError::Ambiguous { count: 2, .. })
        ));
    }

    #[test]
    fn album_ids_ignore_case_and_accents_and_follow_the_album_artist() {
        let t = |artist: &str, album_artist: &str, album: &str| Tags {
            artists: vec![artist.into()],
            album_artist: album_artist.into(),
            album: album.into(),
            ..Default::default()
        };
        let a = AlbumId::of(&t("Sigur Rós", "", "Ágætis byrjun")).unwrap();
        assert_eq!(AlbumId::of(&t("sigur ros", "", "agaetis BYRJUN")), Some(a));
        // A guest on one track does not split the album.
        let b = AlbumId::of(&t("X feat. Y", "X", "Album")).unwrap();
        assert_eq!(AlbumId::of(&t("X", "X", "Album")), Some(b));
        assert_eq!(AlbumId::of(&t("X", "", "")), None);
        assert_eq!(a.to_hex().parse::<AlbumId>().unwrap(), a);
        assert_eq!(ArtistId::of("Björk"), ArtistId::of("bjork"));
    }
}
