//! Our ids as the Subsonic API shows them: strings everywhere, stable
//! across runs and devices. A song is its track id (64 hex digits), an
//! album `al-` and an artist `ar-` with their catalog ids, a playlist
//! `pl-` with its id, a cover its cover id; the one music folder is 1.
//! Pure.

use crate::catalog::{AlbumId, ArtistId};
use crate::model::{CoverId, TrackId};
use crate::userdata::PlaylistId;

/// An id a client sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    /// A song.
    Song(TrackId),
    /// An album.
    Album(AlbumId),
    /// An artist.
    Artist(ArtistId),
    /// A playlist.
    Playlist(PlaylistId),
    /// A cover image.
    Cover(CoverId),
}

/// The only music folder: the merged library.
pub const FOLDER: u32 = 1;

/// An album's id.
pub fn album(a: &AlbumId) -> String {
    format!("al-{a}")
}

/// An artist's id.
pub fn artist(a: &ArtistId) -> String {
    format!("ar-{a}")
}

/// A playlist's id.
pub fn playlist(p: &PlaylistId) -> String {
    format!("pl-{p}")
}

/// A cover's id.
pub fn cover(c: &CoverId) -> String {
    format!("co-{}", c.to_hex())
}

/// Read an id; `None` when it names nothing we make.
pub fn parse(s: &str) -> Option<Id> {
    let s = s.trim();
    if let Some(r) = s.strip_prefix("al-") {
        return r.parse().ok().map(Id::Album);
    }
    if let Some(r) = s.strip_prefix("ar-") {
        return r.parse().ok().map(Id::Artist);
    }
    if let Some(r) = s.strip_prefix("pl-") {
        return r.parse().ok().map(Id::Playlist);
    }
    if let Some(r) = s.strip_prefix("co-") {
        return r.parse().ok().map(Id::Cover);
    }
    s.parse().ok().map(Id::Song)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let t = TrackId::of(b"x");
        let a = AlbumId([3; 16]);
        let r = ArtistId([4; 16]);
        let c = CoverId::of(b"c");
        assert_eq!(parse(&t.to_hex()), Some(Id::Song(t)));
        assert_eq!(parse(&album(&a)), Some(Id::Album(a)));
        assert_eq!(parse(&artist(&r)), Some(Id::Artist(r)));
        assert_eq!(parse(&cover(&c)), Some(Id::Cover(c)));
        let p = PlaylistId {
            device: crate::mesh::DeviceId::random(),
            seq: 7,
        };
        assert_eq!(parse(&playlist(&p)), Some(Id::Playlist(p)));
        assert_eq!(parse("al-zz"), None);
        assert_eq!(parse("12"), None);
    }
}
