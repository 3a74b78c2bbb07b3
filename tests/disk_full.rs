//! A full disk under a running node (root: the data dir is a small tmpfs
//! that the test fills). Streams go on uncached, the watcher says what
//! failed and starts again by itself once space is back, and the index is
//! consistent afterwards.

mod common;
use common::daemon::*;
use common::*;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros into `path` until the disk refuses: the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    let mut n = 0;
    while f.write_all(&block).is_ok() {
        n += block.len() as u64;
    }
    // The last partial block, byte-sized.
    while f.write_all(&[0]).is_ok() {
        n += 1;
    }
    let _ = f.sync_all();
    n
}

fn titles(d: &Daemon) -> Vec<String> {
    let v: Value = d.json(&["ls", "--json"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_full_disk_is_survived_and_recovered_from() {
    if !is_root() {
        eprintln!("SKIPPED disk-full test: needs root to mount a small tmpfs (CI runs it as root)");
        return;
    }
    let tm = Tm::new();
    let Some(_fs) = Tmpfs::mount(tm.data.path(), "24m") else {
        eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here");
        return;
    };
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    let home = Daemon::start(tm, &[lib.path().to_str().unwrap(), "--name", "home"]);
    wait_until("the library indexed", 30, || titles(&home).len() >= 10);
    let n0 = titles(&home).len();
    let (url, token) = home.api();
    let flac = lib.path().join("Alpha Artist/First Album/02 - Sigur.flac");
    let id = blake3::hash(&std::fs::read(&flac).unwrap())
        .to_hex()
        .to_string();

    // The disk fills up, once what the scan wrote is on disk (sled
    // flushes every 500 ms; the node flushes after a rescan settles). A
    // disk filled by someone else within that window fails sled's flush
    // and leaves the index unwritable until a restart: a known limit.
    std::thread::sleep(Duration::from_millis(1000));
    let filler = home.tm.data.path().join("filler");
    let filled = fill(&filler);
    eprintln!("filled the data dir's disk with {filled} bytes");

    // A stream that would be cached plays all the same, uncached.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(format!("{url}/stream/{id}?bitrate=80&token={token}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", home.logs());
    let mut body = Vec::new();
    r.into_body().into_reader().read_to_end(&mut body).unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(out.path(), &body).unwrap();
    if common::proc::have_ffprobe() {
        let secs = common::proc::ffprobe_seconds(out.path()).unwrap();
        assert!((0.9..1.1).contains(&secs), "{secs} s of a 1 s track");
    }
    assert!(
        !home
            .tm
            .data
            .path()
            .join("cache/tmp")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "part")),
        "a partial cache entry was left"
    );

    // A file added while the disk is full is not lost: once space is
    // back, the watcher picks it up by itself.
    // Enough of them that the index must grow on disk (sled writes into
    // space it already holds as long as it can).
    const ADDED: usize = 400;
    let staged = tempfile::tempdir().unwrap();
    let template = lib.path().join("Alpha Artist/First Album/01 - Opening.mp3");
    tunemesh::library::generate::generate(&template, staged.path(), ADDED, 7).unwrap();
    // (The failed cache entry gave back a little space: take it too.)
    let filler2 = home.tm.data.path().join("filler2");
    fill(&filler2);
    std::fs::rename(staged.path(), lib.path().join("added")).unwrap();
    wait_until("the index to say its disk is full", 30, || {
        let logs = home.logs();
        logs.contains("watching stopped: the index's disk is full")
    });
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler2).unwrap();
    let t = std::time::Instant::now();
    while titles(&home).len() != n0 + ADDED {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the files added during the full disk were not indexed: {} of {ADDED}\n{}",
            titles(&home).len() - n0,
            home.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = home.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains("IO error"), "sled saw the full disk: {logs}");
    // The index is whole, and kept the file added while the disk was full.
    let tm = home.stop();
    tm.verify();
    assert_eq!(tm.ls().len(), n0 + ADDED, "after a restart");
}

fn offline_status(d: &Daemon) -> Value {
    d.json(&["offline", "status", "--json"])
}

/// The phone's offline store on a disk that fills: the status says why
/// downloads pause, no partial copy is ever kept as whole or served, and
/// once there is room again the downloads go on by themselves.
#[test]
fn a_full_offline_store_pauses_downloads_until_there_is_room() {
    if !is_root() {
        eprintln!("SKIPPED offline disk-full test: needs root to mount a small tmpfs (CI runs it as root)");
        return;
    }
    let lib = tempfile::tempdir().unwrap();
    let album = lib.path().join("Tones/Long Tones");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..3u32 {
        let wav = common::hostile::Wav {
            frames: 44_100 * 20 + i * 441,
            ..Default::default()
        };
        std::fs::write(album.join(format!("{i:02} Tone.wav")), wav.bytes()).unwrap();
    }
    let home = Daemon::start(Tm::new(), &[lib.path().to_str().unwrap(), "--no-upnp"]);
    let ptm = Tm::new();
    let store = ptm.data.path().join("offline");
    std::fs::create_dir_all(&store).unwrap();
    // Room for the folders and one ~250 KB copy, not three.
    let Some(fs) = Tmpfs::mount(&store, "400k") else {
        eprintln!("SKIPPED offline disk-full test: cannot mount a tmpfs here");
        return;
    };
    let phone = Daemon::start(ptm, &["--role", "phone"]);
    let ticket = home.tm.ok(&["invite", "--quiet"]);
    phone.tm.ok(&["join", ticket.trim()]);
    wait_until("the phone to list the tones", 30, || {
        phone
            .json(&["ls", "--all", "--json"])
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    let id = phone.json(&["ls", "--all", "--json"])[0]["album_id"]
        .as_str()
        .unwrap()
        .to_string();
    phone.tm.ok(&["offline", "add", "album", &id]);
    wait_until("the status to say the store is full", 60, || {
        offline_status(&phone)["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("cannot be written"))
    });
    let s = offline_status(&phone);
    assert!(s["tracks_done"].as_u64().unwrap() < 3, "{s}");
    // Every whole copy is whole; parts are never listed as copies.
    for e in std::fs::read_dir(store.join("blobs")).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            e.file_name().to_str().unwrap()
        );
    }
    // Room again: the downloads resume by themselves.
    let ok = Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&fs.0)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot grow the tmpfs");
    wait_until("the copies after the disk has room", 90, || {
        let s = offline_status(&phone);
        s["done"] == true && s["tracks_done"] == 3
    });
    assert!(offline_status(&phone)["waiting"].is_null());
    let logs = phone.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    drop(phone);
}
