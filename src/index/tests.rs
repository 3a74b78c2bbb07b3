use super::*;

#[test]
fn scope_matching() {
    assert!(in_scope(b"/m/a/x.mp3", Path::new("/m/a")));
    assert!(in_scope(b"/m/a", Path::new("/m/a")));
    assert!(!in_scope(b"/m/ab/x.mp3", Path::new("/m/a")));
    assert!(in_scope(b"/m/a/x.mp3", Path::new("/")));
}

#[test]
fn dirty_folder_entries_counts_what_a_commit_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let state = FileState {
        size: 1,
        mtime_ns: 1,
        folder_cover: None,
        scanner_version: 1,
        outcome: Outcome::NotAudio,
    };
    let mut w = index.writer();
    for i in 0..10 {
        w.set_file(Path::new(&format!("/big/{i}.txt")), &state, None)
            .unwrap();
    }
    w.set_file(Path::new("/small/a.txt"), &state, None).unwrap();
    assert_eq!(w.dirty_folder_entries(), 11);
    w.commit().unwrap();
    assert_eq!(w.dirty_folder_entries(), 0);
    // One more file in the big folder: its whole record is rewritten.
    w.set_file(Path::new("/big/10.txt"), &state, None).unwrap();
    assert_eq!(w.dirty_folder_entries(), 11);
}

#[test]
fn derived_keys_fold_names_and_file_the_album_under_its_album_artist() {
    let t = Track {
        id: TrackId::of(b"k"),
        tags: crate::model::Tags {
            title: "Hoppípolla".into(),
            artists: vec!["Sigur Rós".into(), "Amiina".into()],
            album: "Takk…".into(),
            album_artist: "Sigur Rós".into(),
            ..Default::default()
        },
        audio: Default::default(),
        size: 1,
        cover: None,
        paths: vec!["/a/b.flac".into()],
    };
    let d = derive_keys(&t);
    let fold = search::normalize;
    let want: BTreeMap<Vec<u8>, String> = [
        (artist_key(&fold("Sigur Rós")), "Sigur Rós".to_string()),
        (artist_key(&fold("Amiina")), "Amiina".to_string()),
        (album_key(&fold("Sigur Rós"), &fold("Takk…")), String::new()),
    ]
    .into();
    assert_eq!(d.owners, want);
    assert_eq!(
        d.doc,
        search::document(&t.tags.title, &t.tags.artist(), &t.tags.album)
    );
}

#[test]
fn track_value_roundtrip() {
    let t = Track {
        id: TrackId::of(b"x"),
        tags: crate::model::Tags {
            title: "Rós".into(),
            ..Default::default()
        },
        audio: Default::default(),
        size: 1,
        cover: None,
        paths: vec!["/a/b.mp3".into()],
    };
    let v = encode_track(&t, &derive(&t).doc);
    let (doc, _) = split_track_value(b"k", &v).unwrap();
    assert!(doc.starts_with("ros"));
    assert_eq!(track_from(b"k", &v).unwrap(), t);
}
