//! The OpenSubsonic API of a real daemon: the wire format and the error
//! rules checked here by hand (XML by default, JSON types, `.view`, form
//! POST, JSONP, errors as documents also on binary endpoints, the Host
//! guard), then a real third-party client library (py-opensonic from PyPI,
//! `client.py`) doing what an app does; its streams are judged by ffprobe
//! and blake3. Last, a phone paired with a home: the phone's `/rest/`
//! lists and streams the home's tracks, and a star made there shows at
//! home.
//!
//! Without python3 and py-opensonic the client part says SKIPPED loudly
//! (CI installs it); the rest always runs.

#[path = "../common/mod.rs"]
mod common;

use common::daemon::{wait_until, Daemon};
use common::hostile::Wav;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const USER: &str = "ana";
const PASSWORD: &str = "sésame";

/// The fixtures, a 20 s tone to seek in, and (when ffmpeg is here to tag
/// it) a song with LRC lyrics. Returns the library and its track count.
fn library() -> (tempfile::TempDir, u64) {
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    let long = lib.path().join("Tone/Long Tone");
    std::fs::create_dir_all(&long).unwrap();
    let wav = Wav {
        frames: 44_100 * 20,
        ..Wav::default()
    };
    std::fs::write(long.join("01 - Twenty Seconds.wav"), wav.bytes()).unwrap();
    let sung = lib.path().join("Singer/Sung");
    std::fs::create_dir_all(&sung).unwrap();
    let tagged = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(fixtures().join("Alpha Artist/First Album/03 - Vorbis.ogg"))
        .args(["-c", "copy", "-map_metadata", "-1"])
        .args([
            "-metadata",
            "title=Sung",
            "-metadata",
            "artist=Singer",
            "-metadata",
            "album=Sung",
        ])
        .args([
            "-metadata",
            "LYRICS=[ar:Singer]\n[00:00.50]Hello\n[00:01.00]World",
        ])
        .arg(sung.join("01 - Sung.ogg"))
        .status()
        .is_ok_and(|s| s.success());
    if !tagged {
        eprintln!("\n*** SKIPPED the lyrics checks of tests/subsonic: no ffmpeg to tag a file (CI has it) ***\n");
        let _ = std::fs::remove_dir_all(&sung);
    }
    (lib, 11 + u64::from(tagged))
}

/// Lyrics from the tags: structured (synced, from LRC) and as text.
fn lyrics(base: &str) {
    let hit = json(base, "search3", "query=sung&albumCount=0&artistCount=0");
    let id = hit["searchResult3"]["song"][0]["id"]
        .as_str()
        .expect("the tagged song");
    let l = json(base, "getLyricsBySongId", &format!("id={id}"));
    let s = &l["lyricsList"]["structuredLyrics"][0];
    assert_eq!(s["synced"], true, "{l}");
    let first = (
        s["line"][0]["start"].as_u64(),
        s["line"][0]["value"].as_str(),
    );
    assert_eq!(first, (Some(500), Some("Hello")));
    assert_eq!(s["line"][1]["value"], "World");
    let t = json(base, "getLyrics", "artist=Singer&title=Sung");
    assert_eq!(t["lyrics"]["value"], "Hello\nWorld", "{t}");
}

/// An account on `tm`'s node, and a fresh API key for it.
fn account(tm: &Tm) -> String {
    let mut c = tm
        .cmd()
        .args(["user", "add", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    tm.ok(&["user", "apikey", USER]).trim().to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET `/rest/NAME?QUERY` with the account's password: (status,
/// content type, body).
fn rest(base: &str, name: &str, query: &str) -> (u16, String, String) {
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let url = format!("{base}/rest/{name}?u={USER}&p=enc:{pw}&v=1.16.1&c=test&{query}");
    let r = agent().get(&url).call().unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ct,
        r.into_body().read_to_string().unwrap_or_default(),
    )
}

fn json(base: &str, name: &str, query: &str) -> Value {
    let (st, _, body) = rest(base, name, &format!("f=json&{query}"));
    assert_eq!(st, 200, "{name}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
    v["subsonic-response"].clone()
}

fn by_hand(base: &str) {
    // XML by default, with the root's fields.
    let (st, ct, body) = rest(base, "ping.view", "");
    assert_eq!((st, ct.as_str()), (200, "text/xml; charset=utf-8"));
    assert!(body.contains(r#"<subsonic-response xmlns="http://subsonic.org/restapi" status="ok" version="1.16.1" type="tunemesh""#), "{body}");
    assert!(body.contains(r#"openSubsonic="true""#));
    // JSON types: the one folder's id is an integer, lists stay lists.
    let f = json(base, "getMusicFolders", "");
    assert_eq!(f["musicFolders"]["musicFolder"][0]["id"], 1);
    let a = json(base, "getArtists", "");
    assert!(a["artists"]["index"].is_array() && a["artists"]["index"][0]["artist"].is_array());
    // An album's JSON: ids are strings, counts numbers.
    let l = json(base, "getAlbumList2", "type=alphabeticalByName&size=50");
    let first = &l["albumList2"]["album"][0];
    assert!(
        first["id"].is_string() && first["songCount"].is_number() && first["created"].is_string(),
        "{first}"
    );
    // Form POST (the formPost extension) answers the same.
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let r = agent()
        .post(&format!("{base}/rest/getAlbumList2"))
        .content_type("application/x-www-form-urlencoded")
        .send(format!(
            "u={USER}&p=enc:{pw}&v=1.16.1&c=test&f=json&type=alphabeticalByName&size=50"
        ))
        .unwrap();
    let posted: Value = serde_json::from_str(&r.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(posted["subsonic-response"]["albumList2"], l["albumList2"]);
    // JSONP, with the callback name checked.
    let (_, ct, body) = rest(base, "ping", "f=jsonp&callback=cb_1");
    assert!(
        ct.starts_with("application/javascript") && body.starts_with("cb_1({"),
        "{body}"
    );
    // Errors: HTTP 200, the spec's codes, also on binary endpoints (as a
    // document in the asked format).
    let e = json(base, "getAlbum", "id=al-00000000000000000000000000000000");
    assert_eq!(
        (e["status"].as_str(), e["error"]["code"].as_u64()),
        (Some("failed"), Some(70))
    );
    assert_eq!(json(base, "getAlbum", "")["error"]["code"], 10);
    let (st, ct, body) = rest(base, "stream", "id=nope");
    assert_eq!((st, ct.as_str()), (200, "text/xml; charset=utf-8"));
    assert!(
        body.contains(r#"status="failed""#) && body.contains(r#"code="70""#),
        "{body}"
    );
    assert_eq!(json(base, "getNowhere", "")["status"], "failed");
    // No credentials: code 10; the discovery call needs none.
    let r = agent()
        .get(&format!("{base}/rest/ping?f=json"))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(v["subsonic-response"]["error"]["code"], 10);
    let r = agent()
        .get(&format!("{base}/rest/getOpenSubsonicExtensions?f=json"))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.into_body().read_to_string().unwrap()).unwrap();
    assert!(v["subsonic-response"]["openSubsonicExtensions"].is_array());
    // The DNS-rebinding guard holds here too.
    let r = agent()
        .get(&format!("{base}/rest/ping?f=json"))
        .header("host", "evil.example")
        .call()
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
}

/// DSub resumes a cached download with `Range: bytes=N-`: on a transcode
/// still being encoded, the answer waits for the encode and is exactly the
/// rest (206), not the whole stream again.
fn resume_a_transcode(base: &str) {
    let hit = json(
        base,
        "search3",
        "query=twenty%20seconds&albumCount=0&artistCount=0",
    );
    let id = hit["searchResult3"]["song"][0]["id"]
        .as_str()
        .expect("the tone")
        .to_string();
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let url = format!("{base}/rest/stream?u={USER}&p=enc:{pw}&v=1.16.1&c=t&id={id}&maxBitRate=64");
    // Cold: nothing of this transcode exists yet.
    let r = agent()
        .get(&url)
        .header("range", "bytes=1000-")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206, "a resume into a live encode");
    let cr = r
        .headers()
        .get("content-range")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let tail = r.into_body().read_to_vec().unwrap();
    let whole = agent()
        .get(&url)
        .call()
        .unwrap()
        .into_body()
        .read_to_vec()
        .unwrap();
    assert_eq!(
        cr,
        format!("bytes 1000-{}/{}", whole.len() - 1, whole.len())
    );
    assert_eq!(tail, whole[1000..]);
}

/// `estimateContentLength`: the exact length, on a cold transcode.
fn content_length(base: &str) {
    let hit = json(
        base,
        "search3",
        "query=twenty%20seconds&albumCount=0&artistCount=0",
    );
    let id = hit["searchResult3"]["song"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let url = format!("{base}/rest/stream?u={USER}&p=enc:{pw}&v=1.16.1&c=t&id={id}&maxBitRate=48&estimateContentLength=true");
    let r = agent().get(&url).call().unwrap();
    let len: usize = r
        .headers()
        .get("content-length")
        .expect("a length")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.into_body().read_to_vec().unwrap().len(), len);
}

/// `format=mp3`: made from the Opus stream for a FLAC and a seek into
/// the tone; an MP3 source within the limit goes as it is.
fn mp3(base: &str) {
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let song = |q: &str| -> String {
        let hit = json(
            base,
            "search3",
            &format!("query={q}&albumCount=0&artistCount=0"),
        );
        hit["searchResult3"]["song"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let get = |id: &str, extra: &str| -> (String, Vec<u8>) {
        let url = format!(
            "{base}/rest/stream?u={USER}&p=enc:{pw}&v=1.16.1&c=t&id={id}&format=mp3{extra}"
        );
        let r = agent().get(&url).call().unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        (ct, r.into_body().read_to_vec().unwrap())
    };
    let out = tempfile::tempdir().unwrap();
    for (q, extra, secs) in [
        ("sigur", "&maxBitRate=128", 1.0),
        ("twenty", "&maxBitRate=96&timeOffset=5", 15.0),
    ] {
        let (ct, bytes) = get(&song(q), extra);
        assert_eq!(ct, "audio/mpeg");
        let f = out.path().join(format!("{q}.mp3"));
        std::fs::write(&f, &bytes).unwrap();
        if common::proc::have_ffprobe() {
            assert_eq!(common::proc::ffprobe_codec(&f), "mp3", "{q}");
            let got = common::proc::ffprobe_seconds(&f).unwrap();
            assert!((got - secs).abs() < 0.2, "{q}: {got} s, not {secs}");
        }
    }
    let id = song("opening");
    let (_, bytes) = get(&id, "");
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        id,
        "an MP3 source as it is"
    );
}

/// Where python3 with py-opensonic is, if it is.
fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import libopensonic"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some("python3")
}

fn with_client(d: &Daemon, key: &str, songs: u64) {
    let Some(py) = python() else {
        eprintln!("\n*** SKIPPED the py-opensonic client half of tests/subsonic: no python3 with libopensonic (pip install py-opensonic; CI does) ***\n");
        return;
    };
    let (url, _) = d.api();
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/subsonic/client.py");
    let o = Command::new(py)
        .arg(&script)
        .args([port.as_str(), USER, PASSWORD, key])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "client.py failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.logs()
    );
    let found: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The original byte for byte; the transcode and the seek are Opus.
    let orig = std::fs::read(out.path().join("original.bin")).unwrap();
    assert_eq!(
        blake3::hash(&orig).to_hex().as_str(),
        found["song_id"].as_str().unwrap()
    );
    if common::proc::have_ffprobe() {
        for f in ["transcode.opus", "offset.opus"] {
            assert_eq!(
                common::proc::ffprobe_codec(&out.path().join(f)),
                "opus",
                "{f}"
            );
        }
        let secs = common::proc::ffprobe_seconds(&out.path().join("offset.opus")).unwrap();
        assert!(
            (secs - 15.0).abs() < 0.1,
            "a 20 s track from 5 s lasts 15 s, not {secs}"
        );
    }
    assert_eq!(
        found["songs_by_empty_search"], songs,
        "every song by empty search: {found}"
    );
    // What the app did is the shared state's.
    let starred = d.json(&["starred", "--json"]);
    assert_eq!(starred["tracks"][0]["id"], found["song_id"]);
    assert_eq!(starred["tracks"][0]["rating"], 4);
    let plays = d.json(&["plays", "--json"]);
    assert!(
        plays["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["started_ms"] == 1_700_000_000_000u64),
        "{plays}"
    );
    let lists = d.json(&["playlist", "ls", "--json"]);
    assert_eq!(lists[0]["name"], "Road trip");
    assert_eq!(lists[0]["entry_count"], 2);
}

#[test]
fn the_subsonic_api_answers_apps_and_a_real_client() {
    let (lib, n) = library();
    let tm = Tm::new();
    let key = account(&tm);
    let d = Daemon::start(
        tm,
        &[lib.path().to_str().unwrap(), "--role", "home", "--no-upnp"],
    );
    wait_until("the scan", 60, || {
        d.json(&["status", "--json"])["tracks"].as_u64() == Some(n)
    });
    let (base, _) = d.api();
    let base = base.trim_end_matches('/').to_string();
    by_hand(&base);
    resume_a_transcode(&base);
    mp3(&base);
    content_length(&base);
    if n == 12 {
        lyrics(&base);
    }
    with_client(&d, &key, n);
}

#[test]
fn a_phone_serves_the_homes_library_and_its_stars_reach_home() {
    let (lib, n) = library();
    let home = Daemon::start(
        Tm::new(),
        &[lib.path().to_str().unwrap(), "--role", "home", "--no-upnp"],
    );
    let ptm = Tm::new();
    account(&ptm);
    let phone = Daemon::start(ptm, &["--role", "phone"]);
    let ticket = home.tm.ok(&["invite", "--quiet"]).trim().to_string();
    phone.tm.ok(&["join", &ticket]);
    let (base, _) = phone.api();
    let base = base.trim_end_matches('/').to_string();
    wait_until("the phone's /rest/ to list the home's songs", 60, || {
        json(&base, "search3", "query=&songCount=100")["searchResult3"]["song"]
            .as_array()
            .is_some_and(|s| s.len() as u64 == n)
    });
    let hit = json(&base, "search3", "query=sigur%20ros");
    let id = hit["searchResult3"]["song"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Streamed through the phone from the home, checked against its id.
    let pw = data_encoding::HEXLOWER.encode(PASSWORD.as_bytes());
    let r = agent()
        .get(&format!(
            "{base}/rest/stream?u={USER}&p=enc:{pw}&v=1.16.1&c=t&id={id}&format=raw"
        ))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.into_body().read_to_vec().unwrap();
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), id);
    // A star in the phone's app shows at home.
    assert_eq!(json(&base, "star", &format!("id={id}"))["status"], "ok");
    wait_until("the star at home", 20, || {
        home.json(&["starred", "--json"])["tracks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["id"] == id.as_str()))
    });
}
