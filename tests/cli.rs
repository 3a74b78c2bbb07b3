//! End-to-end behaviour of `tunemesh scan / ls / search / show / status`
//! on the committed fixture library, through the real binary.

mod common;
use common::*;
use serde_json::Value;

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn scan_indexes_every_format_with_tags_and_fallbacks() {
    let tm = Tm::new();
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    let r = tm.scan(lib.path());
    assert_eq!(num(&r, "files"), 10, "{r}");
    assert_eq!(num(&r, "tracks"), 10);
    assert_eq!(num(&r, "added"), 10);
    assert_eq!(num(&r, "changed"), 0);
    assert_eq!(num(&r, "removed"), 0);
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("fake.mp3"));
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("not an audio file"));

    let ls = tm.ls();
    assert_eq!(ls.len(), 10);
    let codecs: std::collections::BTreeSet<&str> =
        ls.iter().map(|t| t["codec"].as_str().unwrap()).collect();
    for c in ["mp3", "flac", "vorbis", "opus", "aac", "alac", "pcm"] {
        assert!(codecs.contains(c), "no {c} track in {codecs:?}");
    }
    for key in [
        "id",
        "title",
        "artist",
        "album",
        "album_artist",
        "track",
        "disc",
        "duration_ms",
        "codec",
        "sample_rate",
        "channels",
        "paths",
    ] {
        assert!(ls.iter().all(|t| t.get(key).is_some()), "ls lacks {key}");
    }

    let opening = by_title(&ls, "Opening");
    assert_eq!(opening["artist"], "Alpha Artist");
    assert_eq!(opening["album"], "First Album");
    assert_eq!(opening["album_artist"], "Alpha Artist");
    assert_eq!(opening["track"], 1);
    assert_eq!(opening["track_total"], 3);
    assert_eq!(opening["disc"], 1);
    assert_eq!(opening["year"], 2001);
    assert_eq!(opening["genres"], serde_json::json!(["Rock"]));
    assert_eq!(opening["sample_rate"], 44100);
    assert_eq!(opening["channels"], 2);
    let d = num(opening, "duration_ms");
    assert!((950..=1100).contains(&d), "duration {d}");

    let flac = by_title(&ls, "Sigur Rós Tribute");
    assert_eq!(flac["track"], 2);
    assert_eq!(flac["track_total"], 3);
    assert_eq!(flac["bit_depth"], 16);

    let alac = by_title(&ls, "Apple Lossless");
    assert_eq!(alac["codec"], "alac");
    assert_eq!(by_title(&ls, "Advanced")["codec"], "aac");

    let wav = by_title(&ls, "Wave Form");
    assert_eq!(wav["channels"], 1);
    assert_eq!(wav["sample_rate"], 22050);

    // Recognised by content although it has no extension.
    let noext = by_title(&ls, "No Extension");
    assert_eq!(noext["compilation"], true);
    assert!(noext["paths"][0]
        .as_str()
        .unwrap()
        .ends_with("song_without_extension"));

    // No tags: title from the file name, album from the folder.
    let untagged = by_title(&ls, "Untagged");
    assert_eq!(untagged["album"], "Compilation");
    assert_eq!(untagged["track"], 1);

    // The embedded cover wins over the folder image; the folder image
    // covers the album's other tracks.
    let third = by_title(&ls, "Third Song");
    assert!(opening["cover"].is_string() && third["cover"].is_string());
    assert_ne!(opening["cover"], third["cover"]);
    assert_eq!(flac["cover"], third["cover"]);
    assert!(by_title(&ls, "Opus One")["cover"].is_null());

    // Every track id is the blake3 of the file's bytes.
    for t in &ls {
        let path = t["paths"][0].as_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            t["id"].as_str().unwrap(),
            blake3::hash(&bytes).to_hex().as_str()
        );
    }
    tm.verify();
}

#[test]
fn search_ignores_case_and_diacritics_and_ranks() {
    let tm = Tm::new();
    tm.scan(&fixtures());
    let hits = tm.json(&["search", "sigur", "ros", "--json"]);
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_eq!(hits[0]["title"], "Sigur Rós Tribute");
    let hits = tm.json(&["search", "SIGUR RÓS", "--json"]);
    assert_eq!(hits[0]["title"], "Sigur Rós Tribute");
    // Artist match: all of the band's tracks.
    let hits = tm.json(&["search", "beta band", "--json"]);
    assert_eq!(hits.as_array().unwrap().len(), 5);
    // The exact title ranks first among album-name matches.
    let hits = tm.json(&["search", "opus", "--json"]);
    assert_eq!(hits[0]["title"], "Opus One", "{hits:#}");
    let hits = tm.json(&["search", "nothing-like-this", "--json"]);
    assert_eq!(hits, serde_json::json!([]));
}

#[test]
fn show_resolves_id_prefixes() {
    let tm = Tm::new();
    tm.scan(&fixtures());
    let ls = tm.ls();
    let id = by_title(&ls, "Opening")["id"].as_str().unwrap().to_owned();
    let out = tm.ok(&["show", &id[..10]]);
    assert!(out.contains("Opening") && out.contains(&id), "{out}");
    let v = tm.json(&["show", &id, "--json"]);
    assert_eq!(v["title"], "Opening");
    let o = tm.run(&["show", "ffffffffffffffff0000"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no track"));
}

#[test]
fn rescan_is_incremental_and_tracks_changes_moves_and_deletions() {
    let tm = Tm::new();
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    tm.scan(lib.path());
    let root0 = tm.root();

    // No change: nothing read again, same root.
    let r = tm.json(&["scan", "--json"]);
    assert_eq!(
        (num(&r, "added"), num(&r, "changed"), num(&r, "removed")),
        (0, 0, 0)
    );
    assert_eq!(num(&r, "files"), 10);
    assert_eq!(tm.root(), root0);

    // Move a file: same track id, new path; root changes (paths are content).
    let album = lib.path().join("Alpha Artist/First Album");
    let id_before = by_title(&tm.ls(), "Third Song")["id"].clone();
    std::fs::create_dir(lib.path().join("Moved")).unwrap();
    std::fs::rename(
        album.join("03 - Vorbis.ogg"),
        lib.path().join("Moved/03 - Vorbis.ogg"),
    )
    .unwrap();
    let r = tm.json(&["scan", "--json"]);
    assert_eq!((num(&r, "added"), num(&r, "removed")), (1, 1), "{r}");
    let moved = by_title(&tm.ls(), "Third Song").clone();
    assert_eq!(moved["id"], id_before);
    assert!(moved["paths"][0].as_str().unwrap().contains("/Moved/"));
    assert_eq!(moved["paths"].as_array().unwrap().len(), 1);

    // Change content: re-read, new id, old id gone.
    let flac = album.join("02 - Sigur.flac");
    let old_id = by_title(&tm.ls(), "Sigur Rós Tribute")["id"].clone();
    let mut bytes = std::fs::read(&flac).unwrap();
    bytes.extend_from_slice(&[0u8; 16]); // trailing junk: same tags, new content
    std::fs::write(&flac, &bytes).unwrap();
    let r = tm.json(&["scan", "--json"]);
    assert_eq!(num(&r, "changed"), 1, "{r}");
    let ls = tm.ls();
    assert_ne!(by_title(&ls, "Sigur Rós Tribute")["id"], old_id);
    assert!(ls.iter().all(|t| t["id"] != old_id));

    // Duplicate bytes at a second path: one track, two locations.
    std::fs::copy(
        album.join("01 - Opening.mp3"),
        lib.path().join("Moved/copy.mp3"),
    )
    .unwrap();
    let r = tm.json(&["scan", "--json"]);
    assert_eq!((num(&r, "files"), num(&r, "tracks")), (11, 10), "{r}");
    assert_eq!(
        by_title(&tm.ls(), "Opening")["paths"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Delete: gone from the index, and the root goes back to what the same
    // files gave before.
    let root_with_copy = tm.root();
    std::fs::remove_file(lib.path().join("Moved/copy.mp3")).unwrap();
    let r = tm.json(&["scan", "--json"]);
    assert_eq!(num(&r, "removed"), 1);
    assert_ne!(tm.root(), root_with_copy);
    assert_eq!(
        by_title(&tm.ls(), "Opening")["paths"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    tm.verify();
}

#[test]
fn same_files_give_same_root_in_any_data_dir() {
    let a = Tm::new();
    let b = Tm::new();
    a.scan(&fixtures());
    b.json(&[
        "scan",
        fixtures().to_str().unwrap(),
        "--json",
        "--threads",
        "1",
    ]);
    assert_eq!(a.root(), b.root());
    b.json(&["scan", "--json", "--force"]);
    assert_eq!(a.root(), b.root(), "a forced re-read changes nothing");
}

#[test]
fn odd_file_names_and_symlink_loops_are_handled() {
    let tm = Tm::new();
    let lib = tempfile::tempdir().unwrap();
    let src = fixtures().join("Alpha Artist/First Album/01 - Opening.mp3");
    // A non-UTF-8 file name.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9 latin1.mp3");
        std::fs::copy(&src, lib.path().join(name)).unwrap();
    }
    std::fs::create_dir(lib.path().join("sub")).unwrap();
    std::fs::copy(
        fixtures().join("Alpha Artist/First Album/02 - Sigur.flac"),
        lib.path().join("sub/x.flac"),
    )
    .unwrap();
    // A symlink loop: sub/loop -> ..
    #[cfg(unix)]
    std::os::unix::fs::symlink("..", lib.path().join("sub/loop")).unwrap();
    let r = tm.scan(lib.path());
    assert_eq!(num(&r, "files"), 2, "{r}");
    let errors = r["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["error"].as_str().unwrap().contains("loop")),
        "{errors:?}"
    );
    let ls = tm.ls();
    assert!(ls
        .iter()
        .any(|t| t["paths"][0].as_str().unwrap().contains("caf")));
    tm.verify();
}

#[test]
fn unreadable_folder_is_reported_and_keeps_its_tracks() {
    use std::os::unix::fs::PermissionsExt;
    // Root reads everything: run the binary as `nobody` so the folder's
    // permissions really apply.
    let tm = if is_root() {
        Tm::unprivileged()
    } else {
        Tm::new()
    };
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    std::fs::set_permissions(lib.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tm.scan(lib.path());
    let locked = lib.path().join("Beta Band");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let r = tm.json(&["scan", "--json"]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        num(&r, "removed"),
        0,
        "tracks under an unreadable folder stay: {r}"
    );
    assert!(r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["error"].as_str().unwrap().contains("cannot read folder")));
    assert_eq!(tm.ls().len(), 10);
    // Readable again: the folder error goes away.
    let r = tm.json(&["scan", "--json"]);
    assert_eq!(r["errors"].as_array().unwrap().len(), 1, "{r}");
}

#[test]
fn bad_arguments_and_locked_index_give_clear_errors() {
    let tm = Tm::new();
    let o = tm.run(&["scan", "/definitely/not/here"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot scan /definitely/not/here"), "{err}");
    let o = tm.run(&["scan"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no library folders"));
    // A second process while one holds the index.
    let mut watcher = tm
        .cmd()
        .args(["watch", fixtures().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let o = tm.run(&["ls"]);
    watcher.kill().unwrap();
    let _ = watcher.wait();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use by another tunemesh process"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ls --json` and `search --json` print one schema, the API's track view,
/// whether they read the local index (no node running) or ask the node.
#[test]
fn ls_and_search_json_are_one_schema_with_or_without_a_node() {
    fn keys(v: &Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }
    fn by_id(v: &Value) -> std::collections::BTreeMap<String, Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| (t["id"].as_str().unwrap().to_owned(), t.clone()))
            .collect()
    }
    let tm = Tm::new();
    tm.scan(&fixtures());
    let offline = tm.ls();
    let offline_hits = tm.json(&["search", "beta", "band", "--json"]);
    assert_eq!(offline.len(), 10);
    // Offline, the only source is this device.
    for t in &offline {
        let s = t["sources"].as_array().unwrap();
        assert_eq!(s.len(), 1, "{t}");
        assert_eq!(s[0]["local"], true);
    }

    let home = common::daemon::Daemon::start(tm, &["--name", "home"]);
    let online = home.json(&["ls", "--json"]);
    let online = online.as_array().unwrap();
    let online_hits = home.json(&["search", "beta", "band", "--json"]);
    assert_eq!(online.len(), offline.len());
    for (a, b) in offline.iter().zip(online) {
        assert_eq!(keys(a), keys(b), "offline {a}\nonline {b}");
        assert_eq!(a["id"], b["id"], "same order");
    }
    let (off, on) = (by_id(&offline_hits), by_id(&online_hits));
    assert_eq!(
        off.keys().collect::<Vec<_>>(),
        on.keys().collect::<Vec<_>>()
    );
    for (id, a) in &off {
        assert_eq!(keys(a), keys(&on[id]));
    }

    // After a run the device is known: offline and online agree entirely.
    let tm = home.stop();
    let again = tm.ls();
    assert_eq!(again[..], online[..]);
    assert_eq!(again[0]["sources"][0]["name"], "home");
}
