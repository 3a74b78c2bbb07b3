//! Damaged and hostile input, as the mutation fuzz run of issue 11 found it:
//! each defect's reproducer (written byte by byte by `common/hostile.rs`)
//! is refused with a clear error or played with the damage skipped, in
//! bounded memory and time; the HTTP listener answers bad ranges with 416
//! and closes silent connections; a full disk is survived.

mod common;
use common::daemon::*;
use common::hostile;
use common::proc::{ffprobe_seconds, have_ffprobe, run_bounded};
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Peak RSS bound of one transcode, on any input (the floor).
const TRANSCODE_RSS_KIB: u64 = 64 << 10;

#[test]
fn lying_headers_are_refused_and_damaged_files_play_in_bounded_memory_and_time() {
    let dir = tempfile::tempdir().unwrap();
    hostile::write_all(dir.path());
    let tm = Tm::new();
    let report = tm.scan(dir.path());
    let errors: Vec<(String, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = Path::new(e["path"].as_str().unwrap());
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, e["error"].as_str().unwrap().to_owned())
        })
        .collect();
    let error_of = |name: &str| {
        errors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{name}: no error reported, errors {errors:?}"))
    };
    // Refused, with what is wrong.
    for (name, says) in [
        ("wav_rate_ffffffff.wav", "sample rate 4294967295 Hz"),
        ("wav_rate_1hz.wav", "sample rate 1 Hz"),
        ("aiff_absurd_rate.aiff", "sample rate"),
        ("aiff_65535_channels.aiff", "65535 channels"),
    ] {
        let e = error_of(name);
        assert!(e.contains(says), "{name}: {e}");
    }
    assert_eq!(errors.len(), 4, "{errors:?}");
    // Accepted, with durations the bytes can hold: trust the audio.
    let tracks = tm.ls();
    assert_eq!(tracks.len(), hostile::all().len() - 4, "{tracks:#?}");
    for t in &tracks {
        let ms = t["duration_ms"].as_u64().unwrap();
        assert!((900..=1200).contains(&ms), "{}: {ms} ms", t["title"]);
    }

    let probe = have_ffprobe();
    let out_dir = tempfile::tempdir().unwrap();
    for (name, _) in hostile::all() {
        let src = dir.path().join(name);
        let out = out_dir.path().join(format!("{name}.opus"));
        let mut cmd = tm.cmd();
        cmd.args(["transcode"])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(["--bitrate", "96", "--no-passthrough"])
            .env("RUST_LOG", "warn");
        let r = run_bounded(cmd, Duration::from_secs(30));
        assert!(!r.killed, "{name}: still running after {:?}", r.took);
        assert!(
            r.took < Duration::from_secs(10),
            "{name}: took {:?}",
            r.took
        );
        assert!(
            r.peak_kib < TRANSCODE_RSS_KIB,
            "{name}: peak RSS {} KiB",
            r.peak_kib
        );
        assert!(!r.stderr.contains("panicked"), "{name}: {}", r.stderr);
        let refused = errors.iter().any(|(n, _)| n == name);
        if refused {
            assert!(
                !r.ok && r.stderr.contains("error: "),
                "{name}: {}",
                r.stderr
            );
            assert!(!out.exists(), "{name}: left an output");
            continue;
        }
        assert!(
            r.ok,
            "{name}: refused what the scanner accepted: {}",
            r.stderr
        );
        if name.contains("first_audio_page") {
            assert!(
                r.stderr.contains("is damaged (bad CRC)"),
                "{name}: silent: {}",
                r.stderr
            );
        } else if name.contains("bad_crc") {
            assert!(
                r.stderr.contains("skipped"),
                "{name}: silent skip: {}",
                r.stderr
            );
        }
        if probe {
            let secs = ffprobe_seconds(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!((0.9..=1.1).contains(&secs), "{name}: {secs} s");
        }
    }

    // The engine alone, with no scanner in front, refuses the lying
    // headers before it allocates anything on their word.
    let req = tunemesh::transcode::Request::new(96);
    for name in [
        "wav_rate_ffffffff.wav",
        "wav_rate_1hz.wav",
        "aiff_absurd_rate.aiff",
    ] {
        match tunemesh::transcode::open(&dir.path().join(name), &req) {
            Err(e) => assert!(e.to_string().contains("sample rate"), "{name}: {e}"),
            Ok(_) => panic!("{name}: the engine opened it"),
        }
    }
}

/// Raw HTTP/1.1 over a socket: (status, headers, body).
fn http(addr: &str, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn get(addr: &str, path: &str, token: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let range = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{range}Connection: close\r\n\r\n"
        ),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Chunked bodies, decoded (a finished transcode is sent with a length,
/// but a live one is chunked).
fn body_len(head: &str, body: &[u8]) -> usize {
    if header(head, "transfer-encoding") != Some("chunked") {
        return body.len();
    }
    let (mut n, mut at) = (0, 0);
    loop {
        let eol = at + body[at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[at..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return n;
        }
        n += size;
        at = eol + 2 + size + 2;
    }
}

#[test]
fn http_ranges_errors_and_connection_limits() {
    let lib = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), lib.path());
    hostile::write_all(&lib.path().join("hostile"));
    let home = Daemon::start(Tm::new(), &[lib.path().to_str().unwrap(), "--name", "home"]);
    let (url, token) = home.api();
    let addr = url.trim_start_matches("http://").to_owned();
    let tracks: Vec<Value> = {
        let t = Instant::now();
        loop {
            let v: Value = home.json(&["ls", "--json"]);
            if v.as_array().unwrap().len() >= 10 + hostile::all().len() - 4
                || t.elapsed() > Duration::from_secs(30)
            {
                break v.as_array().unwrap().clone();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let flac = by_title(&tracks, "Sigur Rós Tribute")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Every track of the library, hostile ones included, streams; the node
    // stays small.
    for t in &tracks {
        let id = t["id"].as_str().unwrap();
        let (status, head, body) = get(&addr, &format!("/stream/{id}?bitrate=96"), &token, None);
        assert_eq!(status, 200, "{}: {head}", t["title"]);
        assert!(body_len(&head, &body) > 1000, "{}", t["title"]);
    }
    let peak = peak_rss_kib(home.child.id());
    assert!(peak < 200 << 10, "the node peaked at {peak} KiB");

    for (path, what) in [
        (format!("/stream/{flac}?bitrate=original"), "an original"),
        (format!("/stream/{flac}?bitrate=96"), "a finished transcode"),
    ] {
        let (status, head, whole) = get(&addr, &path, &token, None);
        assert_eq!(status, 200, "{what}: {head}");
        let len = whole.len();
        assert_eq!(
            header(&head, "content-length"),
            Some(len.to_string().as_str()),
            "{what}"
        );
        for bad in [
            "bytes=500-100".to_string(),
            format!("bytes={len}-"),
            format!("bytes={}-{}", len + 10, len + 20),
            "bytes=-0".into(),
        ] {
            let (status, head, body) = get(&addr, &path, &token, Some(&bad));
            assert_eq!(status, 416, "{what}, {bad}: {head}");
            assert_eq!(
                header(&head, "content-range"),
                Some(format!("bytes */{len}").as_str()),
                "{what}, {bad}"
            );
            assert!(body.is_empty(), "{what}, {bad}");
        }
        let (status, head, body) = get(&addr, &path, &token, Some("bytes=-500"));
        assert_eq!(status, 206, "{what}: {head}");
        assert_eq!(
            header(&head, "content-range"),
            Some(format!("bytes {}-{}/{len}", len - 500, len - 1).as_str())
        );
        assert_eq!(body, whole[len - 500..], "{what}: the last 500 bytes");
        let (status, _, body) = get(&addr, &path, &token, Some("bytes=100-199"));
        assert_eq!(status, 206);
        assert_eq!(body, whole[100..200], "{what}");
    }

    // No error body names a file-system path.
    let home_dir = lib.path().to_string_lossy().into_owned();
    for path in [
        "/stream/ffffffffffff?bitrate=96".to_string(),
        "/stream/zz".into(),
        format!("/stream/{flac}?bitrate=9999"),
        format!("/stream/{flac}?start=-1"),
    ] {
        let (status, _, body) = get(&addr, &path, &token, None);
        let body = String::from_utf8_lossy(&body);
        assert!(status >= 400, "{path}: {status}");
        assert!(
            !body.contains(&home_dir) && !body.contains("/tmp"),
            "{path}: {body}"
        );
    }
    // A file removed behind the node's back: a clear error, no path.
    let victim = lib.path().join("Alpha Artist/First Album/03 - Vorbis.ogg");
    let vid = blake3::hash(&std::fs::read(&victim).unwrap())
        .to_hex()
        .to_string();
    std::fs::remove_file(&victim).unwrap();
    let (status, _, body) = get(&addr, &format!("/stream/{vid}?bitrate=64"), &token, None);
    let body = String::from_utf8_lossy(&body);
    assert!(status >= 400, "{status}");
    assert!(!body.contains(&home_dir), "{body}");

    // Silent and half-sent connections are closed by the header timeout.
    let silent = TcpStream::connect(&addr).unwrap();
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The connection cap: beyond it nothing more is accepted, so no
    // process can exhaust the node's descriptors; a request waits.
    let mut held = Vec::new();
    for _ in 0..tunemesh::http::MAX_CONNECTIONS {
        held.push(TcpStream::connect(&addr).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", home.child.id()))
        .unwrap()
        .count();
    assert!(
        fds < tunemesh::http::MAX_CONNECTIONS + 150,
        "{fds} descriptors open with {} connections offered",
        held.len() + 2
    );
    let mut waiting = TcpStream::connect(&addr).unwrap();
    waiting
        .write_all(format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(waiting.read(&mut buf).is_err(), "served beyond the cap");
    drop(held);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let closed_within = |mut s: TcpStream| {
        s.set_read_timeout(Some(
            tunemesh::http::HEADER_TIMEOUT + Duration::from_secs(10),
        ))
        .unwrap();
        let t = Instant::now();
        let mut sink = Vec::new();
        let r = s.read_to_end(&mut sink);
        (r.is_ok(), t.elapsed())
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| closed_within(silent));
        let b = sc.spawn(|| closed_within(half));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (what, (closed, _)) in [("silent", a), ("half-sent", b)] {
        assert!(
            closed,
            "a {what} connection is still open after the header timeout"
        );
    }
    home.stop();
}
