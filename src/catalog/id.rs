//! Ids of the catalog: album and artist ids derived from names (so the same
//! album held by two devices is one album, and its id survives restarts),
//! and (re-exported from `model::prefix`) the one resolver of hex id
//! prefixes that every surface uses.
//!
//! Pure: no storage, no locks.

use crate::index::search;
pub use crate::model::prefix::{IdError, Prefix, MIN_PREFIX};
use crate::model::{Hash32, Tags};
use std::fmt;
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
