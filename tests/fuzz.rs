//! A mutation fuzz run over tiny fixtures, seeded and reproducible: bit
//! flips, truncations, zeroed ranges, swapped and duplicated stretches and
//! lying header fields, as an attacker would try them. Every mutant goes
//! through the real scanner, and every one it accepts through the real
//! transcoder, each in its own process under a time limit.
//!
//! What must hold: no panic, no hang, no transcode over the memory bound,
//! every output readable by ffprobe, and what the scanner accepts the
//! transcoder plays (the "scanner accepts, transcoder refuses"
//! count; where the transcoder refuses, ffmpeg must refuse too).
//!
//! `TUNEMESH_FUZZ_CASES` (default 1500) and `TUNEMESH_FUZZ_SEED` change
//! the run, `TUNEMESH_FUZZ_KEEP=DIR` keeps the mutants there, and
//! `TUNEMESH_FUZZ_BIN=PATH` runs another tunemesh binary on them (an older
//! build, to compare; the asserts then report what it gets wrong); the
//! summary line prints the figures.

mod common;
use common::hostile;
use common::proc::{ffprobe_seconds, have_ffprobe, run_bounded, Run};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TRANSCODE_RSS_KIB: u64 = 64 << 10;
const TRANSCODE_LIMIT: Duration = Duration::from_secs(60);

/// The generator's seeded splitmix64, and a number below `n` from it.
use tunemesh::library::generate::Rng;

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// The seeds: every audio fixture, plus short PCM files made here.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for rel in AUDIO_FIXTURES {
        let ext = Path::new(rel)
            .extension()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        v.push((ext, std::fs::read(fixtures().join(rel)).unwrap()));
    }
    let wav = hostile::Wav {
        frames: 8_000,
        ..hostile::Wav::default()
    };
    v.push(("wav".into(), wav.bytes()));
    let aiff = hostile::Aiff {
        frames: 8_000,
        ..hostile::Aiff::default()
    };
    v.push(("aiff".into(), aiff.bytes()));
    v
}

/// One mutation of `b`, chosen by `rng`.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) -> &'static str {
    let len = b.len();
    match below(rng, 6) {
        0 => {
            for _ in 0..1 + below(rng, 16) {
                let i = below(rng, len);
                b[i] ^= 1 << below(rng, 8);
            }
            "bit flips"
        }
        1 => {
            b.truncate(below(rng, len));
            "truncation"
        }
        2 => {
            let at = below(rng, len);
            let n = (1 + below(rng, 512)).min(len - at);
            b[at..at + n].fill(0);
            "zeroed range"
        }
        3 => {
            let n = 1 + below(rng, len / 4);
            let (x, y) = (below(rng, len - n), below(rng, len - n));
            let a = b[x..x + n].to_vec();
            let c = b[y..y + n].to_vec();
            b[y..y + n].copy_from_slice(&a);
            b[x..x + n].copy_from_slice(&c);
            "swapped stretches"
        }
        4 => {
            let n = 1 + below(rng, 256);
            let at = below(rng, len);
            let stretch = b[at..(at + n).min(len)].to_vec();
            let to = below(rng, len);
            b.splice(to..to, stretch);
            "duplicated stretch"
        }
        _ => {
            // A header field that lies: a 2- or 4-byte value somewhere in
            // the first 256 bytes set to something extreme.
            let values: [u32; 7] = [0, 1, 2, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, u32::MAX];
            let v = values[below(rng, values.len())];
            let at = below(rng, len.min(256).saturating_sub(4));
            let bytes = if below(rng, 2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let width = if below(rng, 2) == 0 { 2 } else { 4 };
            b[at..at + width].copy_from_slice(&bytes[..width]);
            "lying field"
        }
    }
}

/// Whether ffmpeg decodes `path` to at least 100 ms of audio (it exits
/// happily on files it decodes nothing of).
fn ffmpeg_decodes(path: &Path) -> bool {
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-i"])
        .arg(path)
        .args(["-f", "u8", "-ac", "1", "-ar", "8000", "-"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.len() >= 800)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A command of the tunemesh under test on `tm`'s data dir.
fn tunemesh(tm: &Tm) -> Command {
    match std::env::var_os("TUNEMESH_FUZZ_BIN") {
        Some(bin) => {
            let mut c = Command::new(bin);
            c.arg("--data-dir").arg(tm.data.path());
            c
        }
        None => tm.cmd(),
    }
}

#[derive(Default)]
struct Tally {
    transcoded: usize,
    refused: Vec<(PathBuf, String)>,
    panics: Vec<String>,
    hangs: Vec<PathBuf>,
    over_memory: Vec<(PathBuf, u64)>,
    unreadable: Vec<(PathBuf, String)>,
    peak_kib: u64,
    slowest: Duration,
}

#[test]
fn mutated_files_never_crash_hang_or_blow_up_and_what_is_indexed_plays() {
    let cases: usize = std::env::var("TUNEMESH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("TUNEMESH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7475_6e65);
    let probe = have_ffprobe();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let lib = std::env::var_os("TUNEMESH_FUZZ_KEEP")
        .map_or_else(|| dir.path().join("lib"), PathBuf::from);
    std::fs::create_dir_all(&lib).unwrap();
    let seeds = seeds();
    let mut rng = Rng(seed);
    for i in 0..cases {
        let (ext, base) = &seeds[i % seeds.len()];
        let mut b = base.clone();
        let rounds = 1 + below(&mut rng, 3);
        for _ in 0..rounds {
            if b.len() < 8 {
                break;
            }
            mutate(&mut rng, &mut b);
        }
        let sub = lib.join(format!("{:03}", i / 100));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("case{i:05}.{ext}")), b).unwrap();
    }

    // The scanner, over all of them at once.
    let tm = Tm::new();
    let mut scan = tunemesh(&tm);
    scan.args(["scan", lib.to_str().unwrap(), "--json"]);
    let r = run_bounded(scan, Duration::from_secs(300));
    assert!(r.ok && !r.killed, "the scan failed: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let scan_peak = r.peak_kib;
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let errors: std::collections::HashSet<PathBuf> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .collect();
    let mut accepted: Vec<PathBuf> = walk(&lib)
        .into_iter()
        .filter(|p| !errors.contains(p))
        .collect();
    accepted.sort();

    // The transcoder, on every accepted file, two at a time.
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tally = Mutex::new(Tally::default());
    let next = Mutex::new(accepted.iter());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(src) = next.lock().unwrap().next() else {
                    break;
                };
                let out = out_dir.join(format!(
                    "{}.opus",
                    src.file_name().unwrap().to_string_lossy()
                ));
                let mut c = tunemesh(&tm);
                c.arg("transcode").arg(src).arg("-o").arg(&out).args([
                    "--bitrate",
                    "64",
                    "--no-passthrough",
                    "--no-cache",
                ]);
                let r: Run = run_bounded(c, TRANSCODE_LIMIT);
                let readable = if r.ok && probe {
                    ffprobe_seconds(&out).err()
                } else {
                    None
                };
                let mut t = tally.lock().unwrap();
                t.peak_kib = t.peak_kib.max(r.peak_kib);
                t.slowest = t.slowest.max(r.took);
                if r.stderr.contains("panicked") {
                    t.panics.push(r.stderr.clone());
                }
                if r.killed {
                    t.hangs.push(src.clone());
                } else if r.peak_kib >= TRANSCODE_RSS_KIB {
                    t.over_memory.push((src.clone(), r.peak_kib));
                }
                if r.ok {
                    t.transcoded += 1;
                    if let Some(e) = readable {
                        t.unreadable.push((src.clone(), e));
                    }
                } else if !r.killed {
                    let why = r.stderr.lines().last().unwrap_or_default().to_owned();
                    t.refused.push((src.clone(), why));
                }
                let _ = std::fs::remove_file(&out);
            });
        }
    });
    let t = tally.into_inner().unwrap();
    // Where the transcoder refused, would ffmpeg have played it?
    let ffmpeg_plays: Vec<&(PathBuf, String)> = if probe {
        t.refused
            .iter()
            .filter(|(p, _)| ffmpeg_decodes(p))
            .collect()
    } else {
        Vec::new()
    };
    eprintln!(
        "fuzz: seed {seed}, {cases} mutants: scanner accepted {}, transcoded {}, refused {} \
         (of which ffmpeg decodes {}); panics {}, hangs {}, unreadable outputs {}; \
         peak RSS {} KiB per transcode (scan {} KiB), slowest transcode {:?}; {:?} in all",
        accepted.len(),
        t.transcoded,
        t.refused.len(),
        ffmpeg_plays.len(),
        t.panics.len(),
        t.hangs.len(),
        t.unreadable.len(),
        t.peak_kib,
        scan_peak,
        t.slowest,
        started.elapsed()
    );
    // Why the transcoder refused, most common first (numbers folded).
    let mut reasons: std::collections::HashMap<String, usize> = Default::default();
    for (_, why) in &t.refused {
        let folded: String = why
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *reasons.entry(folded).or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (why, n) in reasons.iter().take(12) {
        eprintln!("  refused {n:>4}: {why}");
    }
    assert!(
        t.panics.is_empty(),
        "panics: {:#?}",
        &t.panics[..t.panics.len().min(3)]
    );
    assert!(t.hangs.is_empty(), "hangs: {:#?}", t.hangs);
    assert!(
        t.over_memory.is_empty(),
        "over {TRANSCODE_RSS_KIB} KiB: {:#?}",
        t.over_memory
    );
    assert!(
        t.unreadable.is_empty(),
        "ffprobe cannot read: {:#?}",
        t.unreadable
    );
    // Aim 0. What is left is symphonia's MP4 demuxer, stricter than
    // ffmpeg's about damaged atoms (about 0.3% of mutants): under 1%.
    assert!(
        ffmpeg_plays.len() * 100 <= accepted.len(),
        "the scanner accepted and ffmpeg decodes, but the transcoder refused: {ffmpeg_plays:#?}"
    );
    for (p, why) in &ffmpeg_plays {
        eprintln!("  ffmpeg plays, we refuse {}: {why}", p.display());
    }
    assert!(
        accepted.len() > cases / 10,
        "the scanner accepted only {}",
        accepted.len()
    );
}
