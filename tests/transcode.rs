//! The transcoding engine, end to end: the real binary on the shared corpus,
//! judged by an independent decoder (ffmpeg/ffprobe, installed by CI):
//! valid Ogg Opus at 48 kHz with the right channels and tags, the decoded
//! length of the source, aligned with it sample for sample, exact start
//! offsets, excerpts that join without a gap, clear errors for broken
//! files, and a cache that shares one encode and survives a kill.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunemesh::cache::Cache;
use tunemesh::stream::{Profile, StreamRequest, Streamer, Via};

const RATE: usize = 48_000;

fn corpus() -> Option<PathBuf> {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !c.join("MANIFEST.json").exists() {
        eprintln!("SKIPPED transcode corpus test: ../shared/corpus not found (CI has it)");
        return None;
    }
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("SKIPPED transcode test: ffmpeg is not installed (.ci/run installs it)");
        return None;
    }
    Some(c.canonicalize().unwrap())
}

fn manifest(corpus: &Path) -> HashMap<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(corpus.join("MANIFEST.json")).unwrap()).unwrap()
}

/// Decode with ffmpeg to mono f32 at 48 kHz (its own resampler and
/// gapless handling: the independent reference).
fn pcm(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Source frames per codec frame, for the lossy length tolerance.
fn source_frame(codec: &str, rate: u64) -> u64 {
    match codec {
        "mp3" if rate < 32_000 => 576,
        "mp3" => 1152,
        "aac" => 1024,
        "vorbis" => 2048,
        "opus" => 960 * rate / 48_000,
        _ => 0,
    }
}

/// The lag (within ±`max_lag`) at which `out[at..at+len]` best matches
/// `src` around the same position, and the normalised correlation there.
fn best_lag(
    out: &[f32],
    src: &[f32],
    at: usize,
    src_at: usize,
    len: usize,
    max_lag: usize,
) -> (i64, f64) {
    let a = &out[at..at + len];
    let ea: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let mut best = (0i64, f64::MIN);
    for lag in -(max_lag as i64)..=max_lag as i64 {
        let s = (src_at as i64 + lag) as usize;
        let b = &src[s..s + len];
        let eb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum();
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let c = dot / (ea * eb).sqrt().max(1e-12);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// A window where the source is loud enough to compare.
fn loud_window(src: &[f32], from: usize, len: usize) -> usize {
    let mut at = from;
    while at + 2 * len < src.len() {
        let e: f32 = src[at..at + len].iter().map(|x| x * x).sum::<f32>() / len as f32;
        if e > 1e-4 {
            return at;
        }
        at += len;
    }
    from
}

fn transcode(tm: &Tm, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = tm.cmd();
    c.arg("transcode").arg(input).arg("-o").arg(out).args(extra);
    c.output().unwrap()
}

fn probe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels:stream_tags",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["streams"][0].clone()
}

fn tag(stream: &Value, key: &str) -> Option<String> {
    stream["tags"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str().unwrap_or_default().to_owned())
}

#[test]
fn every_corpus_file_transcodes_to_valid_aligned_opus_of_the_right_length() {
    let Some(corpus) = corpus() else { return };
    let manifest = manifest(&corpus);
    let files: Vec<(String, Value)> = manifest
        .iter()
        .filter(|(k, v)| !k.starts_with("broken/") && v.get("codec").is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        files.len() >= 20,
        "corpus has {} playable files",
        files.len()
    );
    let tm = Arc::new(Tm::new());
    let out_dir = tempfile::tempdir().unwrap();
    // Two workers: the machine has two cores.
    let queue = Arc::new(std::sync::Mutex::new(files));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some((rel, m)) = queue.lock().unwrap().pop() else {
                    break;
                };
                if let Err(e) = check_one(&tm, &corpus, out_dir.path(), &rel, &m) {
                    failures.lock().unwrap().push(format!("{rel}: {e}"));
                }
            });
        }
    });
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_one(tm: &Tm, corpus: &Path, out_dir: &Path, rel: &str, m: &Value) -> Result<(), String> {
    let src_path = corpus.join(rel);
    let out = out_dir.join(rel.replace('/', "_") + ".opus");
    let r = transcode(tm, &src_path, &out, &["--no-passthrough", "--no-cache"]);
    if !r.status.success() {
        return Err(format!(
            "transcode failed: {}",
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    // ffprobe sees Opus 48 kHz with the right channels and the tags.
    let st = probe(&out);
    let want_ch = if m["channels"].as_u64() == Some(1) {
        1
    } else {
        2
    };
    if st["codec_name"] != "opus" || st["sample_rate"] != "48000" || st["channels"] != want_ch {
        return Err(format!("ffprobe sees {st}"));
    }
    if tag(&st, "TUNEMESH_TRACK_ID").as_deref() != m["blake3"].as_str() {
        return Err(format!(
            "track id tag {:?} != {}",
            tag(&st, "TUNEMESH_TRACK_ID"),
            m["blake3"]
        ));
    }
    // ffprobe joins repeated fields with ';', the index with "; ".
    let parts = |s: &str| {
        s.split(';')
            .map(|p| p.trim().to_owned())
            .collect::<Vec<_>>()
    };
    if let Some(title) = m["tags"]["title"].as_str() {
        if tag(&st, "TITLE").map(|t| parts(&t)) != Some(parts(title)) {
            return Err(format!("title tag {:?} != {title:?}", tag(&st, "TITLE")));
        }
    }
    // ffmpeg decodes it without a single complaint.
    let errs = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&out)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    if !errs.stderr.is_empty() {
        return Err(format!(
            "ffmpeg complains: {}",
            String::from_utf8_lossy(&errs.stderr)
        ));
    }
    // The decoded length is the source's as ffmpeg decodes it.
    let src = pcm(&src_path);
    let got = pcm(&out);
    let codec = m["codec"].as_str().unwrap();
    let rate = m["sample_rate"].as_u64().unwrap();
    let tolerance = match codec {
        "flac" | "alac" | "pcm_s16le" | "pcm_s16be" | "pcm_s24le" | "pcm_f32le" => 48, // 1 ms
        c => source_frame(c, rate) * 48_000 / rate,
    } as i64;
    let diff = got.len() as i64 - src.len() as i64;
    if diff.abs() > tolerance.max(48) {
        return Err(format!(
            "{codec}: decoded {} samples, source {} (diff {diff}, tolerance {tolerance})",
            got.len(),
            src.len()
        ));
    }
    // Aligned at zero lag (within one source sample: the two resamplers'
    // filters differ by a fraction of one), at the start and in the middle.
    // Correlation, not equality: Opus keeps the spectrum, not every phase.
    let len = RATE / 4;
    let max_lag = 48_000u64.div_ceil(rate) as i64;
    // hr-savino-palace.ogg restarts on its third page (the headers again,
    // granule -104): we cut as libvorbis does (its own test below), ffmpeg
    // cuts 344 samples more there, so against ffmpeg only its middle is
    // compared, 374 samples (48 kHz) later.
    let windows: &[usize] = if rel.ends_with("hr-savino-palace.ogg") {
        &[src.len() / 2]
    } else {
        &[0, src.len() / 2]
    };
    for &from in windows {
        let at = loud_window(&src, from.max(RATE / 50), len);
        let shift = if rel.ends_with("hr-savino-palace.ogg") {
            374
        } else {
            0
        };
        let (lag, corr) = best_lag(&got, &src, at + shift, at, len, RATE / 100);
        if lag.abs() > max_lag || corr < 0.75 {
            return Err(format!(
                "window at {:.2} s: best lag {lag} samples, correlation {corr:.3}",
                at as f64 / 48e3
            ));
        }
    }
    Ok(())
}

#[test]
fn start_offset_and_consecutive_excerpts_line_up_with_the_source() {
    let Some(corpus) = corpus() else { return };
    let tm = Tm::new();
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "formats/caves_16_44.flac",
        "formats/caves_vbr_id3v23.mp3",
        "formats/caves_vorbis.ogg",
        "formats/caves_aac.m4a",
    ] {
        let src_path = corpus.join(rel);
        let src = pcm(&src_path);
        let head = dir.path().join("head.opus");
        let tail = dir.path().join("tail.opus");
        let r = transcode(&tm, &src_path, &head, &["--duration", "10"]);
        assert!(
            r.status.success(),
            "{rel}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let r = transcode(&tm, &src_path, &tail, &["--start", "10"]);
        assert!(
            r.status.success(),
            "{rel}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let (h, t) = (pcm(&head), pcm(&tail));
        assert_eq!(
            h.len(),
            10 * RATE,
            "{rel}: the first excerpt is exactly 10 s"
        );
        let total = (h.len() + t.len()) as i64;
        assert!(
            (total - src.len() as i64).abs() <= 48,
            "{rel}: excerpts total {total}, source {}",
            src.len()
        );
        // --start 10 starts at the source's 10 s, not a sample off.
        let (lag, corr) = best_lag(
            &t,
            &src,
            RATE / 50,
            10 * RATE + RATE / 50,
            RATE / 4,
            RATE / 100,
        );
        assert!(
            lag.abs() <= 1 && corr > 0.9,
            "{rel}: --start 10 is off by {lag} samples (corr {corr:.3})"
        );
        // Joined, the two excerpts run across the seam without a gap.
        let joined: Vec<f32> = h.iter().chain(&t).copied().collect();
        let at = 10 * RATE - RATE / 8;
        let (lag, corr) = best_lag(&joined, &src, at, at, RATE / 4, RATE / 100);
        assert!(
            lag.abs() <= 1 && corr > 0.9,
            "{rel}: the seam is off by {lag} samples (corr {corr:.3})"
        );
    }
}

#[test]
fn passthrough_sends_fitting_sources_unchanged_and_transcodes_the_rest() {
    let Some(corpus) = corpus() else { return };
    let tm = Tm::new();
    let dir = tempfile::tempdir().unwrap();
    // An 80 kb/s MP3 asked at 128 kb/s: the file itself.
    let mp3 = corpus.join("real/ASC/machine_wars.mp3");
    let out = dir.path().join("a");
    let r = transcode(&tm, &mp3, &out, &["--bitrate", "128"]);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("copied as it is"));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&mp3).unwrap());
    // The same file asked at 64 kb/s is transcoded.
    let r = transcode(&tm, &mp3, &out, &["--bitrate", "64"]);
    assert!(r.status.success());
    assert_eq!(probe(&out)["codec_name"], "opus");
    // A ~158 kb/s Opus file: passed through at 192, transcoded at 96.
    let opus = corpus.join("formats/caves.opus");
    transcode(&tm, &opus, &out, &["--bitrate", "192"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&opus).unwrap());
    transcode(&tm, &opus, &out, &["--bitrate", "96"]);
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&opus).unwrap());
    assert_eq!(probe(&out)["codec_name"], "opus");
    // `original` is the file, byte for byte; stdout works too.
    let flac = corpus.join("formats/caves_16_44.flac");
    let r = tm
        .cmd()
        .args(["transcode"])
        .arg(&flac)
        .args(["--bitrate", "original", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(r.stdout, std::fs::read(&flac).unwrap());
}

#[test]
fn broken_files_are_clear_errors_without_output() {
    let Some(corpus) = corpus() else { return };
    let tm = Tm::new();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(corpus.join("broken")).unwrap() {
        let path = e.unwrap().path();
        let out = dir.path().join("out.opus");
        let t = Instant::now();
        let r = transcode(&tm, &path, &out, &[]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{}: accepted", path.display());
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{}: {err}",
            path.display()
        );
        assert!(!out.exists(), "{}: left an output file", path.display());
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{}: took {:?}",
            path.display(),
            t.elapsed()
        );
        // The engine alone (no scanner checks in front) fails cleanly too,
        // or decodes what is there: never a panic or a hang.
        let mut req = tunemesh::transcode::Request::new(96);
        req.passthrough = false;
        if let Ok(tunemesh::transcode::Output::Opus(mut t)) = tunemesh::transcode::open(&path, &req)
        {
            while let Ok(Some(_)) = t.next_pages() {}
        }
    }
}

fn track_of(path: &Path) -> tunemesh::model::Track {
    tunemesh::library::read_track(path).unwrap()
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn concurrent_requests_share_one_encode_and_entries_read_from_any_offset() {
    let Some(corpus) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let streamer = Streamer::new(Some(Cache::open(dir.path(), 1 << 30).unwrap()));
    let track = track_of(&corpus.join("formats/caves_16_44.flac"));
    let req = StreamRequest::new(Profile::Opus(128));
    let (a, b) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            let st = streamer.open(&track, &req).unwrap();
            (st.via, read_all(st))
        });
        let tb = s.spawn(|| {
            let st = streamer.open(&track, &req).unwrap();
            (st.via, read_all(st))
        });
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let cache = streamer.cache().unwrap();
    assert_eq!(
        cache.encodes_started(),
        1,
        "two concurrent requests, one encode"
    );
    assert_eq!(a.1, b.1, "both listeners got the same bytes");
    assert!(a.1.len() > 100_000 && a.1.starts_with(b"OggS"));
    assert!(
        matches!(a.0, Via::Encode | Via::CacheHit) && matches!(b.0, Via::Encode | Via::CacheHit)
    );
    // Now complete: a hit, readable from any byte offset.
    let st = streamer.open(&track, &req).unwrap();
    assert_eq!(st.via, Via::CacheHit);
    assert_eq!(st.len, Some(a.1.len() as u64));
    let key = Streamer::key(&track, 128);
    let tail = read_all(cache.open_at(&key, 12_345).unwrap().unwrap());
    assert_eq!(tail, a.1[12_345..]);
    assert_eq!(cache.encodes_started(), 1);
    // A start offset is a one-off live transcode, never cached.
    let mut r = StreamRequest::new(Profile::Opus(128));
    r.start = 5.0;
    assert_eq!(streamer.open(&track, &r).unwrap().via, Via::Live);
    assert_eq!(cache.encodes_started(), 1);
}

#[test]
fn a_killed_encode_leaves_no_cache_entry() {
    let Some(corpus) = corpus() else { return };
    let tm = Tm::new();
    let cache_dir = tm.data.path().join("cache");
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(&cache_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "opus"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let src = corpus.join("real/ASC/frontiers.mp3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.opus");
    let mut child = tm
        .cmd()
        .args(["transcode"])
        .arg(&src)
        .args(["--no-passthrough", "-o"])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the encode is under way (its part file has grown).
    let t = Instant::now();
    loop {
        let grown = std::fs::read_dir(cache_dir.join("tmp"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 20_000).unwrap_or(false))
            })
            .unwrap_or(false);
        if grown {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the encode never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        entries().is_empty(),
        "a killed encode left an entry: {:?}",
        entries()
    );
    assert!(!out.exists(), "a killed transcode left an output file");
    // The next run cleans the debris and completes the entry.
    let r = transcode(&tm, &src, &out, &["--no-passthrough"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(entries().len(), 1);
    let parts: Vec<_> = std::fs::read_dir(cache_dir.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(parts.is_empty(), "debris left: {parts:?}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&entries()[0]).unwrap()
    );
}

/// A Vorbis stream that restarts mid-stream (headers again on its third
/// page, granule -104) decodes as the reference decoder has it: the same
/// length as libvorbisfile's (`oggdec`), aligned from start to end.
#[test]
fn a_restarting_vorbis_stream_matches_libvorbisfile() {
    let Some(corpus) = corpus() else { return };
    let src = corpus.join("real/HyperRogue/hr-savino-palace.ogg");
    if Command::new("oggdec").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have oggdec (.ci/run installs vorbis-tools)"
        );
        eprintln!("SKIPPED libvorbisfile comparison: oggdec (vorbis-tools) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("ref.wav");
    let st = Command::new("oggdec")
        .arg("-Q")
        .arg("-o")
        .arg(&wav)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.path().join("out.opus");
    let tm = Tm::new();
    let r = transcode(&tm, &src, &out, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (want, got) = (pcm(&wav), pcm(&out));
    let diff = got.len() as i64 - want.len() as i64;
    assert!(
        diff.abs() <= 2,
        "decoded {} samples, libvorbisfile {} ({diff})",
        got.len(),
        want.len()
    );
    for at in [
        RATE / 100,
        RATE / 10,
        RATE / 5,
        want.len() / 2,
        want.len() - RATE,
    ] {
        let (lag, corr) = best_lag(&got, &want, at, at, RATE / 20, RATE / 100);
        assert!(
            lag.abs() <= 1 && corr > 0.95,
            "at {:.3} s: lag {lag} samples against libvorbisfile (corr {corr:.3})",
            at as f64 / RATE as f64
        );
    }
}
