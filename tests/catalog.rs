//! The catalog through the HTTP API of real daemons: albums and artists of
//! the merged library with stable ids, paged listings, search across kinds,
//! covers resized, and who holds what (online or not).

mod common;
use common::daemon::*;
use common::*;
use serde_json::Value;

fn get(d: &Daemon, path: &str) -> (u16, Value) {
    let (url, token) = d.api();
    let r = ureq::get(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().read_to_vec().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn ok(d: &Daemon, path: &str) -> Value {
    let (status, v) = get(d, path);
    assert_eq!(status, 200, "{path}: {v}");
    v
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_phone_sees_albums_and_artists_of_the_merged_library() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let home = Daemon::start(Tm::new(), &[lib.to_str().unwrap(), "--name", "home"]);
    let phone = Daemon::start(Tm::new(), &["--role", "phone", "--name", "phone"]);
    let ticket = home.tm.ok(&["invite", "--quiet"]);
    phone.tm.ok(&["join", ticket.trim()]);
    wait_until("the phone to list the home's tracks", 30, || {
        ok(&phone, "/api/tracks")["total"] == 10
    });

    // Albums by name, the same ids on both devices.
    let albums = ok(&phone, "/api/albums?sort=name");
    // Two albums called Compilation: one tagged by Gamma, one untagged
    // (its name from the folder, no artist).
    assert_eq!(
        names(&albums, "items"),
        [
            "Compilation",
            "Compilation",
            "First Album",
            "Lossless",
            "Opus Works"
        ]
    );
    assert_eq!(albums["items"][0]["artist"], "");
    assert_eq!(albums["items"][1]["artist"], "Gamma");
    assert_eq!(albums, {
        let mut h = ok(&home, "/api/albums?sort=name");
        // Sources differ only in which device is "local".
        for a in h["items"].as_array_mut().unwrap() {
            a["sources"] = Value::Null;
        }
        let mut p = albums.clone();
        for a in p["items"].as_array_mut().unwrap() {
            a["sources"] = Value::Null;
        }
        assert_eq!(h, p);
        albums.clone()
    });
    let first = &albums["items"][2];
    assert_eq!(first["artist"], "Alpha Artist");
    assert_eq!(first["track_count"], 3);
    assert_eq!(first["year"], 2001);
    assert_eq!(first["online"], true);
    assert_eq!(first["sources"][0]["name"], "home");
    assert_eq!(first["sources"][0]["local"], false);
    let by_artist = ok(&phone, "/api/albums?sort=artist&limit=2");
    assert_eq!(by_artist["total"], 5);
    assert_eq!(names(&by_artist, "items"), ["Compilation", "First Album"]);

    // An album's tracks in disc/track order, with its total time.
    let id = first["id"].as_str().unwrap();
    let album = ok(&phone, &format!("/api/albums/{id}"));
    let titles: Vec<&str> = album["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Opening", "Sigur Rós Tribute", "Third Song"]);
    let sum: u64 = album["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["duration_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(album["duration_ms"].as_u64(), Some(sum));
    assert!(album["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["album_id"] == id && t["online"] == true));

    // Artists and one artist's albums.
    let artists = ok(&phone, "/api/artists");
    let an = names(&artists, "items");
    assert!(an.contains(&"Alpha Artist".to_string()) && an.contains(&"Beta Band".to_string()));
    let beta = artists["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Beta Band")
        .unwrap();
    assert_eq!(beta["album_count"], 2);
    let page = ok(
        &phone,
        &format!("/api/artists/{}", beta["id"].as_str().unwrap()),
    );
    assert_eq!(names(&page, "albums"), ["Lossless", "Opus Works"]);

    // Search finds each kind, accents and case ignored.
    let found = ok(&phone, "/api/search?q=SIGUR%20ROS");
    assert_eq!(found["tracks"][0]["title"], "Sigur Rós Tribute");
    let found = ok(&phone, "/api/search?q=beta");
    assert_eq!(names(&found, "artists"), ["Beta Band"]);
    let found = ok(&phone, "/api/search?q=opus%20works");
    assert_eq!(names(&found, "albums"), ["Opus Works"]);

    // Pages of tracks are slices of the whole library, in its order.
    let all = ok(&phone, "/api/library");
    let page = ok(&phone, "/api/tracks?offset=2&limit=3");
    assert_eq!(
        page["items"].as_array().unwrap()[..],
        all.as_array().unwrap()[2..5]
    );
    assert_eq!(
        ok(&phone, "/api/library?offset=9&limit=5")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(&phone, "/api/library?scope=local"), Value::Array(vec![]));

    // A cover, resized, on the home; the phone fetches it through the mesh.
    let cover = first["cover"].as_str().unwrap().to_string();
    let on_home = image(&home, &format!("/api/cover/{cover}"));
    assert_eq!(image(&phone, &format!("/api/cover/{cover}")), on_home);
    for d in [&home, &phone] {
        let jpg = image(d, &format!("/api/cover/{cover}?size=8"));
        assert_eq!(&jpg[..2], [0xff, 0xd8]);
        // The frame header (SOF0) gives 8 x 8 pixels (the original is 16 x 16).
        let sof = jpg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        assert_eq!(&jpg[sof + 5..sof + 9], [0, 8, 0, 8]);
    }

    // Bad requests are refused with a reason, unknown ids are 404s.
    for (path, want) in [
        ("/api/albums?sort=bogus", 400),
        ("/api/albums/zz", 400),
        (&format!("/api/albums/{}", "0".repeat(32)), 404),
        (&format!("/api/artists/{}", "0".repeat(32)), 404),
        (&format!("/api/cover/{cover}?size=0"), 400),
    ] {
        let (status, v) = get(&home, path);
        assert_eq!(status, want, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }

    // With the home gone, the phone still lists everything, offline.
    home.stop();
    wait_until("the phone to see the home offline", 30, || {
        ok(&phone, "/api/albums")["items"][2]["online"] == false
    });
    let album = ok(&phone, &format!("/api/albums/{id}"));
    assert!(album["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["online"] == false));
    // Its cover was kept: still there, and resized to new sizes.
    assert_eq!(image(&phone, &format!("/api/cover/{cover}")), on_home);
    assert_eq!(
        &image(&phone, &format!("/api/cover/{cover}?size=12"))[..2],
        [0xff, 0xd8]
    );
}

/// The bytes of an image endpoint (200 with an image content type).
fn image(d: &Daemon, path: &str) -> Vec<u8> {
    let (url, token) = d.api();
    let r = ureq::get(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("image/"), "{path}: {ct}");
    r.into_body().read_to_vec().unwrap()
}
