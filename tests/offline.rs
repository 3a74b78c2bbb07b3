//! The offline mirror through real daemons: a phone pins an album from
//! its home, the copies arrive (Opus 96 kb/s, checked group by group), and
//! with the home gone the phone still plays every track through
//! `/stream` and `/rest/stream`; the budget refuses what does not fit and
//! says by how much; a holder whose bytes do not match is refused and the
//! copy fetched from another; a phone killed mid-download resumes.

mod common;
use common::daemon::*;
use common::proc::{ffprobe_codec, ffprobe_seconds, have_ffprobe};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

fn call(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    let (url, token) = d.api();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let url = format!("{url}{path}");
    let r = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
        ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b),
        _ => unreachable!(),
    }
    .unwrap();
    let status = r.status().as_u16();
    (status, r.into_body().read_to_vec().unwrap())
}

fn ok(d: &Daemon, path: &str) -> Value {
    let (status, body) = call(d, "GET", path, None);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn status(d: &Daemon) -> Value {
    d.json(&["offline", "status", "--json"])
}

/// Bytes of the files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            bytes_under(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn start_home(lib: &Path) -> Daemon {
    Daemon::start(
        Tm::new(),
        &[lib.to_str().unwrap(), "--name", "home", "--no-upnp"],
    )
}

/// A phone-role device on `tm`, joined to `home`, once it lists `tracks`.
fn join(home: &Daemon, tm: Tm, name: &str, tracks: u64) -> Daemon {
    let d = Daemon::start(tm, &["--role", "phone", "--name", name]);
    let ticket = home.tm.ok(&["invite", "--quiet"]);
    d.tm.ok(&["join", ticket.trim()]);
    wait_until("the new device to list the home's tracks", 30, || {
        ok(&d, "/api/tracks")["total"] == tracks
    });
    d
}

fn home_and_phone(lib: &Path, phone_tm: Tm) -> (Daemon, Daemon) {
    let home = start_home(lib);
    let phone = join(&home, phone_tm, "phone", 10);
    (home, phone)
}

fn album_id(d: &Daemon, name: &str) -> String {
    let albums = ok(d, "/api/albums?sort=name");
    albums["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no album {name}: {albums}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

const USER: &str = "ana";
const PASSWORD: &str = "sesame";

fn account(tm: &Tm) {
    let mut c = tm
        .cmd()
        .args(["user", "add", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    drop(stdin);
    assert!(c.wait().unwrap().success());
}

/// Fetch `path` from the phone into a file and judge it with ffprobe:
/// Opus, or the original file itself (an MP3 or Opus source already
/// within the bitrate is its own copy).
fn plays(d: &Daemon, path: &str, dir: &Path, id: &str, want_secs: f64) {
    let (status, body) = call(d, "GET", path, None);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    let f = dir.join(format!("{}.audio", blake3::hash(path.as_bytes()).to_hex()));
    std::fs::write(&f, &body).unwrap();
    if !have_ffprobe() {
        return;
    }
    if blake3::hash(&body).to_hex().as_str() != id {
        assert_eq!(ffprobe_codec(&f), "opus", "{path}");
    }
    let secs = ffprobe_seconds(&f).unwrap();
    assert!(
        (secs - want_secs).abs() < 0.2,
        "{path}: {secs} s, want {want_secs}"
    );
}

#[test]
fn a_pinned_album_plays_on_the_phone_with_the_home_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let ptm = Tm::new();
    account(&ptm);
    let (home, phone) = home_and_phone(&lib, ptm);
    let album = album_id(&phone, "First Album");
    let pins = phone.json(&["offline", "add", "album", &album[..8], "--json"]);
    assert_eq!(pins["pins"][0]["kind"], "album");
    assert_eq!(pins["pins"][0]["id"], album.as_str());
    assert_eq!(pins["pins"][0]["bitrate"], "96");
    wait_until("the album to be offline", 60, || {
        let s = status(&phone);
        s["done"] == true && s["tracks_done"] == 3
    });
    let s = status(&phone);
    let data = phone.tm.data.path();
    assert_eq!(s["used_bytes"], bytes_under(&data.join("offline")));
    assert!(s["tracks_failed"].as_array().unwrap().is_empty(), "{s}");
    let tracks = ok(&phone, &format!("/api/albums/{album}"))["tracks"].clone();
    let tracks = tracks.as_array().unwrap();
    assert_eq!(tracks.len(), 3);
    assert!(tracks.iter().all(|t| t["offline"] == true), "{tracks:?}");
    // The home's other albums are not offline.
    let other = album_id(&phone, "Lossless");
    let rest = ok(&phone, &format!("/api/albums/{other}"))["tracks"].clone();
    assert!(rest
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["offline"] == false));

    home.stop();
    wait_until("the phone to see the home gone", 30, || {
        ok(&phone, "/api/peers")
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] != true)
    });
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    for t in tracks {
        let id = t["id"].as_str().unwrap();
        let secs = t["duration_ms"].as_u64().unwrap() as f64 / 1000.0;
        plays(&phone, &format!("/stream/{id}"), tmp.path(), id, secs);
        plays(
            &phone,
            &format!("/stream/{id}?bitrate=64"),
            tmp.path(),
            id,
            secs,
        );
        let rest = format!("/rest/stream?u={USER}&p=enc:{pw}&v=1.16.1&c=t&id={id}");
        plays(&phone, &rest, tmp.path(), id, secs);
    }
    // A track that is not offline is not playable, and says so.
    let gone = rest[0]["id"].as_str().unwrap();
    let (code, _) = call(&phone, "GET", &format!("/stream/{gone}"), None);
    assert_eq!(code, 503);
    // Nothing partial is left, and the copies re-verify at restart.
    let st = status(&phone);
    assert_eq!(st["used_bytes"], bytes_under(&data.join("offline")));
}

#[test]
fn the_budget_refuses_what_does_not_fit_and_evicts_down_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let (_home, phone) = home_and_phone(&lib, Tm::new());
    let data = phone.tm.data.path().to_owned();
    phone.tm.ok(&["offline", "budget", "1KB"]);
    let album = album_id(&phone, "First Album");
    phone.tm.ok(&["offline", "add", "album", &album]);
    wait_until("the plan to see the album", 20, || {
        status(&phone)["tracks_over_budget"] == 3
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let s = status(&phone);
    assert_eq!(
        (s["tracks_done"].as_u64(), s["used_bytes"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert!(s["short_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(bytes_under(&data.join("offline")), 0);
    let text = phone.tm.ok(&["offline", "status"]);
    assert!(text.contains("wait for space"), "{text}");
    // Room for all: done, and within the budget.
    phone.tm.ok(&["offline", "budget", "10MB"]);
    wait_until("the album to fit", 60, || {
        status(&phone)["tracks_done"] == 3
    });
    let s = status(&phone);
    assert!(s["used_bytes"].as_u64().unwrap() <= 10_000_000);
    assert_eq!(s["short_bytes"], 0);
    // Room for none again: the copies go (nothing beyond the budget).
    phone.tm.ok(&["offline", "budget", "1"]);
    wait_until("the copies to be dropped", 20, || {
        bytes_under(&data.join("offline")) == 0
    });
    assert_eq!(status(&phone)["tracks_over_budget"], 3);
    // Bad sizes are refused with a reason.
    let out = phone.tm.run(&["offline", "budget", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));
}

#[test]
fn pins_follow_their_source_and_share_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let (_home, phone) = home_and_phone(&lib, Tm::new());
    let tracks = ok(
        &phone,
        &format!("/api/albums/{}", album_id(&phone, "Lossless")),
    )["tracks"]
        .clone();
    let t: Vec<String> = (0..2)
        .map(|i| tracks[i]["id"].as_str().unwrap().to_string())
        .collect();
    phone.tm.ok(&["playlist", "create", "Trip", &t[0]]);
    phone.tm.ok(&["offline", "add", "playlist", "Trip"]);
    phone.tm.ok(&["offline", "add", "track", &t[1][..10]]);
    let held = |id: &str| {
        ok(&phone, "/api/tracks?offset=0&limit=100")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id && x["offline"] == true)
    };
    wait_until("both pins done", 60, || held(&t[0]) && held(&t[1]));
    // A track added to the pinned playlist is fetched; one removed goes
    // unless another pin still needs it.
    let third = tracks[2]["id"].as_str().unwrap().to_string();
    phone.tm.ok(&["playlist", "add", "Trip", &third, &t[1]]);
    wait_until("the added track offline", 60, || held(&third));
    let ls = phone.json(&["offline", "ls", "--json"]);
    assert_eq!(ls["pins"][0]["tracks"], 3, "{ls}");
    assert_eq!(ls["pins"][0]["name"], "Trip");
    phone.tm.ok(&["playlist", "rm", "Trip", "1", "3"]); // t[0] and t[1]
    wait_until("the removed track dropped", 20, || !held(&t[0]));
    assert!(held(&t[1]) && held(&third), "the track pin keeps t[1]");
    phone.tm.ok(&["offline", "rm", "track", &t[1]]);
    wait_until("the unpinned track dropped", 20, || !held(&t[1]));
    assert!(held(&third));
    let out = phone.tm.run(&["offline", "rm", "album", &t[1]]);
    assert!(!out.status.success());
}

/// A library of `n` distinct tones of about `secs` seconds each (WAV, so
/// every copy is a real encode at the home).
fn tones(dir: &Path, n: u32, secs: u32) {
    let album = dir.join("Tones/Long Tones");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..n {
        let wav = common::hostile::Wav {
            frames: 44_100 * secs + i * 441,
            ..Default::default()
        };
        std::fs::write(album.join(format!("{i:02} Tone.wav")), wav.bytes()).unwrap();
    }
}

fn kill_9(d: Daemon) -> Tm {
    let mut d = d;
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let tm = std::mem::replace(&mut d.tm, Tm::new());
    drop(d);
    let _ = std::fs::remove_file(tm.data.path().join("api.json"));
    tm
}

/// Every whole copy re-verifies: its blake3 is its name.
fn verify_store(data: &Path) -> usize {
    let blobs = data.join("offline/blobs");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            e.file_name().to_str().unwrap(),
            "a stored copy does not match its name"
        );
        n += 1;
    }
    n
}

#[test]
fn a_phone_killed_mid_download_resumes_without_fetching_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tones(&lib, 16, 40);
    let home = start_home(&lib);
    let mut phone = join(&home, Tm::new(), "phone", 16);
    let album = album_id(&phone, "Long Tones");
    phone.tm.ok(&["offline", "add", "album", &album]);
    // Cut at pseudo-random points while the copies arrive.
    let mut logs = String::new();
    let mut seed = 0x9e37_79b9_u32;
    for cut in 0..3 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let wait = 300 + u64::from(seed % 900);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        let done = status(&phone)["tracks_done"].as_u64().unwrap();
        eprintln!("cut {cut} after {wait} ms, {done} done");
        logs.push_str(&phone.logs());
        let tm = kill_9(phone);
        phone = Daemon::start(tm, &["--role", "phone"]);
    }
    wait_until("the album offline after the cuts", 120, || {
        let s = status(&phone);
        s["done"] == true && s["tracks_done"] == 16
    });
    let data = phone.tm.data.path().to_owned();
    assert_eq!(verify_store(&data), 16);
    assert!(std::fs::read_dir(data.join("offline/part"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(
        status(&phone)["used_bytes"],
        bytes_under(&data.join("offline"))
    );
    // What the home sent, against what the copies hold: at most the groups
    // in flight at each cut (3 downloads × 4 groups of 16 KiB) again.
    let served = status(&home)["bytes_served"].as_u64().unwrap();
    let stored = bytes_under(&data.join("offline/blobs"));
    assert!(served >= stored, "{served} < {stored}");
    logs.push_str(&phone.logs());
    assert!(
        served - stored <= 3 * 3 * 4 * 16384,
        "fetched twice: {} of {stored}\n{logs}",
        served - stored
    );
}

#[test]
fn a_holder_whose_bytes_do_not_match_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tones(&lib, 2, 8);
    let home = start_home(&lib);
    let laptop = join(&home, Tm::new(), "laptop", 2);
    let album = album_id(&laptop, "Long Tones");
    laptop.tm.ok(&["offline", "add", "album", &album]);
    wait_until("the laptop's copies", 60, || {
        status(&laptop)["tracks_done"] == 2
    });
    // Rot on the laptop's disk: one byte of each copy flipped.
    for e in std::fs::read_dir(laptop.tm.data.path().join("offline/blobs"))
        .unwrap()
        .flatten()
    {
        let mut b = std::fs::read(e.path()).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x40;
        std::fs::write(e.path(), b).unwrap();
    }
    let phone = join(&home, Tm::new(), "phone", 2);
    let htm = home.stop();
    phone.tm.ok(&["offline", "add", "album", &album]);
    wait_until("the laptop's bytes refused", 30, || {
        let s = status(&phone);
        s["tracks_failed"].as_array().unwrap().len() == 2
    });
    let s = status(&phone);
    assert!(s["groups_refused"].as_u64().unwrap() >= 2, "{s}");
    let why = s["tracks_failed"][0]["reason"].as_str().unwrap();
    assert!(why.contains("does not match"), "{why}");
    assert_eq!(s["tracks_done"], 0);
    // Nothing of the bad bytes is kept or served.
    assert!(
        std::fs::read_dir(phone.tm.data.path().join("offline/blobs"))
            .unwrap()
            .next()
            .is_none()
    );
    // The home is back: the copies come from it, whole.
    let _home = Daemon::start(htm, &[lib.to_str().unwrap(), "--name", "home", "--no-upnp"]);
    wait_until("the copies from the home", 90, || {
        status(&phone)["tracks_done"] == 2
    });
    assert_eq!(verify_store(phone.tm.data.path()), 2);
}

#[test]
fn downloads_wait_for_an_unreachable_home_and_the_queue_is_prefetched() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let (home, phone) = home_and_phone(&lib, Tm::new());
    let album = album_id(&phone, "Lossless");
    let lossless = ok(&phone, &format!("/api/albums/{album}"))["tracks"].clone();
    let htm = home.stop();
    wait_until("the phone to see the home gone", 30, || {
        ok(&phone, "/api/peers")
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] != true)
    });
    phone.tm.ok(&["offline", "add", "album", &album]);
    wait_until("the status to say why it waits", 20, || {
        status(&phone)["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("no member is reachable"))
    });
    let text = phone.tm.ok(&["offline", "status"]);
    assert!(text.contains("no member is reachable"), "{text}");
    let home = Daemon::start(htm, &[lib.to_str().unwrap(), "--name", "home", "--no-upnp"]);
    wait_until("the album once the home is back", 90, || {
        let s = status(&phone);
        s["done"] == true && s["tracks_done"] == 3
    });
    assert!(status(&phone)["waiting"].is_null());

    // The play queue: the tracks after the current one are fetched ahead,
    // at the streaming bitrate, besides the pins.
    let first = ok(
        &phone,
        &format!("/api/albums/{}", album_id(&phone, "First Album")),
    )["tracks"]
        .clone();
    let ids: Vec<String> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(lossless.as_array().unwrap())
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let q = json!({"ids": ids[..3], "current": 0, "position_ms": 0});
    let (code, body) = call(&phone, "PUT", "/api/queue", Some(q));
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
    let offline = |id: &str| {
        ok(&phone, "/api/tracks?offset=0&limit=100")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["offline"] == true)
    };
    wait_until("the queue's next tracks prefetched", 60, || {
        status(&phone)["prefetched"] == 2 && offline(&ids[1]) && offline(&ids[2])
    });
    assert!(!offline(&ids[0]), "the current track is not fetched ahead");
    // They play with the home gone, and the pins were not touched.
    home.stop();
    wait_until("the phone to see the home gone", 30, || {
        ok(&phone, "/api/peers")
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] != true)
    });
    for id in &ids[1..3] {
        let (code, _) = call(&phone, "GET", &format!("/stream/{id}"), None);
        assert_eq!(code, 200, "a prefetched track plays offline");
    }
    assert_eq!(status(&phone)["tracks_done"], 3);
}
