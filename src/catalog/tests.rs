use super::*;
use crate::model::{AudioInfo, CoverId, Tags, TrackId};

fn dev(n: u8) -> DeviceId {
    // An identity multihash of an Ed25519 public key's protobuf: the
    // shape of every device id, no key pair needed.
    let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    b.extend([n; 32]);
    DeviceId::from_bytes(&b).expect("a peer id")
}

fn track(n: u32, artist: &str, album: &str, disc: u32, no: u32, title: &str) -> Track {
    Track {
        id: TrackId::of(format!("{n}").as_bytes()),
        tags: Tags {
            title: title.into(),
            artists: vec![artist.into()],
            album: album.into(),
            disc: Some(disc),
            track: Some(no),
            year: Some(2000 + n % 7),
            genres: vec!["Rock".into()],
            ..Default::default()
        },
        audio: AudioInfo {
            duration_ms: 1000,
            ..Default::default()
        },
        size: 10,
        cover: None,
        paths: vec![format!("/m/{n}.flac").into()],
    }
}

/// Titles of catalog tracks, looked up in the tracks given (the catalog
/// keeps ids; records are the index's).
fn titles(v: &[CatalogTrack], all: &[Track]) -> Vec<String> {
    v.iter()
        .map(|c| {
            all.iter()
                .find(|t| t.id == c.id)
                .unwrap()
                .tags
                .title
                .clone()
        })
        .collect()
}

#[test]
fn two_devices_holding_one_album_make_one_album() {
    let c = Catalog::new();
    let (me, phone) = (dev(1), dev(2));
    let a1 = track(1, "Sigur Rós", "Takk", 1, 2, "Glósóli");
    let a2 = track(2, "Sigur Rós", "Takk", 1, 1, "Takk");
    let a3 = track(3, "sigur ros", "TAKK", 1, 3, "Hoppípolla");
    c.apply(me, vec![a1.clone(), a2.clone()], &[]);
    c.apply(phone, vec![a2.clone(), a3.clone()], &[]);
    let all = vec![a1.clone(), a2.clone(), a3.clone()];
    let albums = c.albums(AlbumSort::Name, Page::ALL);
    assert_eq!(albums.total, 1);
    let al = &albums.items[0];
    assert_eq!((al.tracks, al.duration_ms), (3, 3000));
    assert_eq!(al.holders, vec![me, phone]);
    let (_, tracks) = c.album(&al.id).unwrap();
    assert_eq!(titles(&tracks, &all), ["Takk", "Glósóli", "Hoppípolla"]);
    // Held by both, this device first.
    let t2 = c.track(&a2.id).unwrap();
    assert_eq!(t2.holders, vec![me, phone]);
    assert_eq!(c.track(&a3.id).unwrap().holders, vec![phone]);
    let artists = c.artists(Page::ALL);
    assert_eq!(artists.total, 1);
    assert_eq!((artists.items[0].albums, artists.items[0].tracks), (1, 3));
}

#[test]
fn removals_drop_holders_then_tracks_albums_and_artists() {
    let c = Catalog::new();
    let (me, phone) = (dev(1), dev(2));
    let a = track(1, "A", "X", 1, 1, "one");
    let b = track(2, "B", "Y", 1, 1, "two");
    c.apply(me, vec![a.clone(), b.clone()], &[]);
    c.apply(phone, vec![a.clone()], &[]);
    c.apply(me, vec![], &[a.id, b.id]);
    assert_eq!(c.len(), 1);
    assert_eq!(c.track(&a.id).unwrap().holders, vec![phone]);
    assert_eq!(c.albums(AlbumSort::Name, Page::ALL).total, 1);
    assert_eq!(c.artists(Page::ALL).items[0].name, "A");
    assert!(c.search("two", 10).tracks.is_empty());
    assert!(c.search("y", 10).albums.is_empty());
    c.forget(phone);
    assert!(c.is_empty());
    assert_eq!(c.albums(AlbumSort::Artist, Page::ALL).total, 0);
    assert_eq!(c.artists(Page::ALL).total, 0);
}

#[test]
fn orders_and_pages() {
    let c = Catalog::new();
    let me = dev(1);
    let lib = vec![
        track(1, "The Zombies", "Odessey", 1, 1, "Care of Cell 44"),
        track(2, "Abba", "Voulez-Vous", 1, 1, "As Good as New"),
        track(3, "Björk", "Debut", 2, 1, "Come to Me"),
        track(4, "Björk", "Debut", 1, 2, "Venus as a Boy"),
        track(5, "Björk", "Debut", 1, 1, "Human Behaviour"),
    ];
    c.apply(me, lib.clone(), &[]);
    let all = c.tracks(Page::ALL);
    assert_eq!(
        titles(&all.items, &lib),
        [
            "As Good as New",
            "Human Behaviour",
            "Venus as a Boy",
            "Come to Me",
            "Care of Cell 44"
        ]
    );
    let page = c.tracks(Page {
        offset: 1,
        limit: 2,
    });
    assert_eq!(page.total, 5);
    assert_eq!(
        titles(&page.items, &lib),
        ["Human Behaviour", "Venus as a Boy"]
    );
    let names = |s| -> Vec<String> {
        c.albums(s, Page::ALL)
            .items
            .into_iter()
            .map(|a| a.name)
            .collect()
    };
    assert_eq!(names(AlbumSort::Name), ["Debut", "Odessey", "Voulez-Vous"]);
    // "The Zombies" files under Z.
    assert_eq!(
        names(AlbumSort::Artist),
        ["Voulez-Vous", "Debut", "Odessey"]
    );
    assert_eq!(names(AlbumSort::Added), ["Debut", "Voulez-Vous", "Odessey"]);
    assert_eq!(names(AlbumSort::Year)[0], "Odessey");
    // First-seen times given back after a restart order "added".
    let c2 = Catalog::new();
    let ids: Vec<AlbumId> = c
        .albums(AlbumSort::Name, Page::ALL)
        .items
        .iter()
        .map(|a| a.id)
        .collect();
    c2.remember_first_seen([(ids[0], 3), (ids[1], 1), (ids[2], 2)]);
    assert!(c2.apply(me, lib.clone(), &[]).is_empty(), "nothing new");
    let added: Vec<String> = c2
        .albums(AlbumSort::Added, Page::ALL)
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(added, ["Debut", "Voulez-Vous", "Odessey"]);
    let artists: Vec<String> = c
        .artists(Page::ALL)
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(artists, ["Abba", "Björk", "The Zombies"]);
    let (artist, albums) = c.artist(&ArtistId::of("bjork")).unwrap();
    assert_eq!((artist.albums, artist.tracks), (1, 3));
    assert_eq!(albums[0].name, "Debut");
}

#[test]
fn search_finds_tracks_albums_and_artists_ignoring_accents() {
    let c = Catalog::new();
    let lib = vec![
        track(1, "Björk", "Debut", 1, 1, "Human Behaviour"),
        track(2, "Björk", "Post", 1, 1, "Army of Me"),
        track(3, "Someone", "Bjork Covers", 1, 1, "Joga"),
    ];
    c.apply(dev(1), lib.clone(), &[]);
    let f = c.search("BJORK", 10);
    assert_eq!(f.tracks.len(), 3);
    assert_eq!(f.artists.len(), 1);
    assert_eq!(f.albums.len(), 1);
    assert_eq!(f.albums[0].name, "Bjork Covers");
    // An exact title ranks first.
    assert_eq!(
        titles(&c.search("army of me", 10).tracks, &lib)[0],
        "Army of Me"
    );
    assert_eq!(c.search("bjork", 1).tracks.len(), 1);
    assert!(c.search("  ", 10).tracks.is_empty());
}

#[test]
fn prefixes_resolve_against_the_merged_library() {
    let c = Catalog::new();
    let a = track(1, "A", "X", 1, 1, "one");
    let b = track(2, "B", "Y", 1, 1, "two");
    c.apply(dev(1), vec![a.clone()], &[]);
    c.apply(dev(2), vec![b.clone()], &[]);
    for t in [&a, &b] {
        let p: Prefix = t.id.to_hex()[..8].parse().unwrap();
        assert_eq!(c.resolve(&p), Ok(t.id));
    }
    let p: Prefix = "0000".parse().unwrap();
    assert!(matches!(c.resolve(&p), Err(IdError::NotFound(_))));
}

#[test]
fn tracks_without_an_album_are_listed_but_make_no_album() {
    let c = Catalog::new();
    let mut loose = track(9, "Solo", "", 1, 1, "Loose");
    loose.tags.disc = None;
    loose.tags.track = None;
    c.apply(
        dev(1),
        vec![loose.clone(), track(1, "Solo", "LP", 1, 1, "In")],
        &[],
    );
    assert_eq!(c.tracks(Page::ALL).total, 2);
    assert_eq!(c.tracks(Page::ALL).items.len(), 2);
    assert_eq!(c.albums(AlbumSort::Name, Page::ALL).total, 1);
    assert_eq!(c.track(&loose.id).unwrap().album, None);
    c.apply(dev(1), vec![], &[loose.id]);
    assert_eq!(c.tracks(Page::ALL).items.len(), 1);
}

#[test]
fn covers_name_their_holders() {
    let c = Catalog::new();
    let mut t = track(1, "A", "X", 1, 1, "one");
    t.cover = Some(CoverId::from_bytes([7; 32]));
    c.apply(dev(2), vec![t], &[]);
    assert_eq!(c.cover_holders(&CoverId::from_bytes([7; 32])), vec![dev(2)]);
    assert!(c.cover_holders(&CoverId::from_bytes([8; 32])).is_empty());
}
