//! Mesh benchmark driver (no criterion): a home and a phone daemon, real
//! `tunemesh serve` processes talking over loopback.
//!
//!     cargo bench --bench mesh
//!     cargo bench --bench mesh -- --tracks 100000 --rounds 5
//!     cargo bench --bench mesh -- --only stream     (or --only sync)
//!
//! Part 1, time to first audio byte. A home daemon serves a folder of real
//! music (corpus files, plus stream-copied variants of each with a distinct
//! `comment` tag: same audio, different bytes, so a different track id that
//! no cache has seen), a phone daemon is paired with it (`invite --quiet`,
//! `join TICKET`). Each round and file type, from this process over plain
//! HTTP/1.1 on a fresh TCP connection:
//!
//! - phone cold: `GET {phone}/stream/{id}?bitrate=96&token=…` of a variant
//!   never requested before (the home encodes it live);
//! - phone warm: the same request again (the home serves its cache entry);
//! - home cold / warm: the same against the home's own API (another
//!   variant), for comparison;
//! - ffmpeg: `ffmpeg -i F -vn -c:a libopus -b:a 96k -f ogg -` on the
//!   original, spawn to stdout (process start included), the reference.
//!
//! Timed: from `connect` to the first body byte, and to the end of the third
//! Ogg page (the first audio page: what a player needs to start). Every
//! response is read to its end before the next request.
//!
//! Part 2, library sync. A generated library of `--tracks` files (1 s MP3s,
//! under `target/bench-libs/mesh-N`, made once and reused) is scanned by a
//! fresh home; a fresh phone joins; timed from the `join` command to the
//! phone's `/api/status` showing the full sync, with the phone's own
//! `sync.last_ms` / `sync.last_bytes`. Then one file of the home's folder is
//! replaced by a different file (rename over it; the home's watcher rescans)
//! and the phone's second sync is measured the same way; then the original
//! is put back (a third sync). Idle RSS of both daemons, a stream request
//! against the 100k-track library, and the phone's merged `/api/library`.
//!
//! Daemons run with `-v` (logs under `target/bench-mesh/run/`); their
//! "library synced" lines are quoted in the report.

mod common;
use common::{
    cpu_model, first_line, flush, http, loadavg, median, mib, ogg_pages_complete, probe, section,
    Ctx, Fetch, Res,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");
const KBPS: u32 = 96;
/// The floor for a cold request at the phone.
const COLD_FLOOR_MS: f64 = 100.0;
/// The floor for the bytes of a sync after one changed track.
const DELTA_FLOOR_BYTES: u64 = 64 << 10;
const SEED: u64 = 0x3E5B_0001;
/// Phone restarts to get a failed full sync going again.
const MAX_RESTARTS: usize = 9;
const TEMPLATE: &str = "tests/fixtures/lib/Alpha Artist/First Album/01 - Opening.mp3";
/// Corpus files (relative to `<package>/../shared/corpus`) and a label.
const FILES: &[(&str, &str)] = &[
    ("formats/caves_16_44.flac", "FLAC"),
    ("formats/caves_vbr_id3v23.mp3", "MP3 VBR"),
    ("formats/caves_aac.m4a", "AAC"),
    ("real/HyperRogue/hr3-crossroads.ogg", "Vorbis"),
    ("real/ASC/machine_wars.mp3", "MP3 80k"),
];
const LISTEN: &[&str] = &["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];

fn main() {
    if let Err(e) = run() {
        eprintln!("\nbench failed: {e}");
        std::process::exit(1);
    }
}

/// Mesh benchmark: time to first audio, 100k-track sync, idle RSS.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench mesh --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Tracks in the generated library the phone syncs.
    #[arg(long, default_value_t = 100_000, value_parser = common::args::at_least_one())]
    tracks: usize,
    /// Rounds of each time-to-first-audio measurement.
    #[arg(long, default_value_t = 5, value_parser = common::args::at_least_one())]
    rounds: usize,
    /// Run one part only.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// After measuring idle RSS, keep both daemons idle this many seconds
    /// more (to look inside them: smaps, gdb, perf), printing their pids.
    #[arg(long, default_value_t = 0)]
    linger: u64,
}

/// A part of the mesh bench.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Time to first audio byte, cold and warm.
    Stream,
    /// The 100k-track sync and idle RSS.
    Sync,
}

impl Args {
    fn stream(&self) -> bool {
        self.only != Some(Part::Sync)
    }

    fn sync(&self) -> bool {
        self.only != Some(Part::Stream)
    }
}

fn run() -> Res<()> {
    let args: Args = common::args::parse();
    let t_start = Instant::now();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (target, work, run_dir) = common::work_dirs("bench-mesh")?;
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let argv: Vec<String> = std::env::args().collect();
    let command = format!(
        "cargo bench --bench mesh --{}{}",
        if args.stream() && args.sync() {
            String::new()
        } else if args.stream() {
            " --only stream".into()
        } else {
            " --only sync".into()
        },
        format_args!(" --tracks {} --rounds {}", args.tracks, args.rounds)
    );

    println!("tunemesh mesh benchmark");
    println!("  command    {command}");
    println!("  argv       {}", argv.join(" "));
    println!("  binary     {BIN}");
    println!(
        "  machine    nproc={nproc}, CPU {}, load avg {}",
        cpu_model(),
        loadavg()
    );
    println!("  work dir   {}", work.display());
    println!(
        "  daemons    {BIN} --data-dir D -v serve [DIR] --api 127.0.0.1:0 --listen {} --no-mdns [--role phone]",
        LISTEN.join(" --listen ")
    );

    let mut report = Report::default();
    if args.stream() {
        report.stream = Some(stream_part(&args, manifest, &work, &run_dir)?);
    }
    if args.sync() {
        report.sync = Some(sync_part(&args, manifest, &target, &run_dir)?);
    }
    print_summary(&args, &command, &report, t_start.elapsed());
    Ok(())
}

#[derive(Default)]
struct Report {
    stream: Option<StreamReport>,
    sync: Option<SyncReport>,
}

// ---------------------------------------------------------------- part 1

/// Timings of one kind of request over the rounds, in seconds.
#[derive(Default, Clone)]
struct Samples {
    byte: Vec<f64>,
    audio: Vec<f64>,
    end: Vec<f64>,
    via: Vec<String>,
}

impl Samples {
    fn push(&mut self, f: &Fetch) {
        self.byte
            .push(f.first_byte.map_or(f64::NAN, |d| d.as_secs_f64()));
        if let Some(a) = f.first_audio {
            self.audio.push(a.as_secs_f64());
        }
        self.end.push(f.end.as_secs_f64());
        let v = f.header("x-tunemesh-via").unwrap_or("?").to_string();
        if !self.via.contains(&v) {
            self.via.push(v);
        }
    }
}

struct TypeResult {
    label: String,
    name: String,
    codec: String,
    secs: f64,
    phone_cold: Samples,
    phone_warm: Samples,
    home_cold: Samples,
    home_warm: Samples,
    ffmpeg: Samples,
}

struct StreamReport {
    rows: Vec<TypeResult>,
    peer_path: String,
    rtt: String,
    rounds: usize,
    warm_misses: usize,
    problems: Vec<String>,
}

fn stream_part(args: &Args, manifest: &Path, work: &Path, run_dir: &Path) -> Res<StreamReport> {
    section("part 1: time to first audio byte (96 kb/s Opus), phone and home on loopback");
    let rounds = args.rounds;
    let corpus = manifest.join("../shared/corpus");
    let corpus = corpus
        .canonicalize()
        .ctx(format!("corpus {}", corpus.display()))?;
    let ffmpeg_ver = first_line(Command::new("ffmpeg").arg("-version"))
        .ctx("ffmpeg is needed (ffmpeg -version failed)")?;
    println!("  ffmpeg     {ffmpeg_ver}");
    println!(
        "  reference  ffmpeg -nostdin -loglevel error -i F -vn -c:a libopus -b:a {KBPS}k -f ogg -"
    );

    // The music folder: each original plus 2R stream-copied variants.
    let music = work.join("music");
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).ctx(format!("creating {}", tmp.display()))?;
    struct Kind {
        label: String,
        orig: PathBuf,
        codec: String,
        secs: f64,
        /// Track ids: [0] the original copy, then 2R variants.
        ids: Vec<String>,
    }
    let mut kinds = Vec::new();
    print!("  preparing variants in {} ", music.display());
    flush();
    let t0 = Instant::now();
    for (i, &(rel, label)) in FILES.iter().enumerate() {
        let src = corpus.join(rel);
        if !src.is_file() {
            return Err(format!("missing corpus file {}", src.display()).into());
        }
        let p = probe(&src)?;
        let (codec, secs) = (p.codec, p.secs);
        let dir = music.join(format!("{i}-{}", label.replace(' ', "_")));
        std::fs::create_dir_all(&dir).ctx(format!("creating {}", dir.display()))?;
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("bin");
        let mut ids = Vec::new();
        let orig = dir.join(format!("original.{ext}"));
        if !orig.is_file() {
            let part = tmp.join(format!("original.{ext}"));
            std::fs::copy(&src, &part).ctx(format!("copying {}", src.display()))?;
            std::fs::rename(&part, &orig).ctx(format!("renaming to {}", orig.display()))?;
        }
        ids.push(common::file_id(&orig)?);
        for k in 0..2 * rounds {
            let dst = dir.join(format!("variant-{k:03}.{ext}"));
            if !dst.is_file() {
                let part = tmp.join(format!("variant.{ext}"));
                let _ = std::fs::remove_file(&part);
                let out = Command::new("ffmpeg")
                    .args(["-nostdin", "-y", "-loglevel", "error", "-i"])
                    .arg(&src)
                    .args(["-map", "0", "-c", "copy", "-map_metadata", "0", "-metadata"])
                    .arg(format!("comment=tunemesh mesh bench variant {k}"))
                    .arg(&part)
                    .stdin(Stdio::null())
                    .output()
                    .ctx("running ffmpeg")?;
                if !out.status.success() {
                    return Err(format!(
                        "ffmpeg could not stream-copy {}: {}",
                        src.display(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                    .into());
                }
                std::fs::rename(&part, &dst).ctx(format!("renaming to {}", dst.display()))?;
            }
            let id = common::file_id(&dst)?;
            if ids.contains(&id) {
                return Err(format!("{} has the bytes of another variant", dst.display()).into());
            }
            ids.push(id);
        }
        // Variants left by an earlier run with more rounds would be
        // indexed too: the folder holds exactly this run's files.
        for e in std::fs::read_dir(&dir).ctx(format!("listing {}", dir.display()))? {
            let e = e.ctx("listing")?;
            let name = e.file_name().to_string_lossy().into_owned();
            let k = name
                .strip_prefix("variant-")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<usize>().ok());
            if k.is_some_and(|k| k >= 2 * rounds) {
                std::fs::remove_file(e.path()).ctx(format!("removing {name}"))?;
            }
        }
        print!(".");
        flush();
        kinds.push(Kind {
            label: label.to_string(),
            orig: src,
            codec,
            secs,
            ids,
        });
    }
    let n_tracks: usize = kinds.iter().map(|k| k.ids.len()).sum();
    println!(" {n_tracks} files in {:.1} s", t0.elapsed().as_secs_f64());
    for k in &kinds {
        println!(
            "    {:<8} {:<7} {:>7.2} s  {}",
            k.label,
            k.codec,
            k.secs,
            k.orig.display()
        );
    }

    // Daemons.
    let t0 = Instant::now();
    let home = Daemon::start("home", &run_dir.join("stream-home"), Some(&music))?;
    wait_until(
        Duration::from_secs(120),
        &home,
        "the home to index the music",
        || Ok(home.status()?["tracks"].as_u64() == Some(n_tracks as u64)),
    )?;
    println!(
        "  home       pid {} api {}  indexed {n_tracks} tracks {:.2} s after start",
        home.pid,
        home.addr,
        t0.elapsed().as_secs_f64()
    );
    let phone = Daemon::start("phone", &run_dir.join("stream-phone"), None)?;
    println!("  phone      pid {} api {}", phone.pid, phone.addr);
    let t0 = Instant::now();
    pair(&home, &phone)?;
    let all: Vec<&String> = kinds.iter().flat_map(|k| &k.ids).collect();
    let lists_all = |phone: &Daemon| -> Res<bool> {
        let lib = phone.get_json("/api/library")?;
        let have: Vec<&str> = lib
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["local"] == false && s["online"] == true)
            })
            .filter_map(|t| t["id"].as_str())
            .collect();
        Ok(all.iter().all(|id| have.contains(&id.as_str())))
    };
    let mut problems = Vec::new();
    let mut phone = phone;
    let mut restarts = 0;
    let mut t_attempt = t0;
    loop {
        let r = wait_until(
            Duration::from_secs(20),
            &phone,
            "the phone to list the home's tracks",
            || lists_all(&phone),
        );
        match r {
            Ok(()) => {
                println!(
                    "  paired     the phone lists all {n_tracks} tracks {:.2} s after `{}`",
                    t_attempt.elapsed().as_secs_f64(),
                    if restarts == 0 { "join" } else { "its restart" }
                );
                break;
            }
            Err(e) => {
                let fails = phone.log_lines("library sync failed");
                println!(
                    "  PROBLEM    the phone does not list all of the home's tracks 20 s after `{}`",
                    if restarts == 0 { "join" } else { "its restart" }
                );
                for l in &fails {
                    println!("    phone: {l}");
                }
                problems.push(format!(
                    "pairing: the phone did not list the home's {n_tracks} tracks within 20 s ({})",
                    if fails.is_empty() {
                        e.to_string()
                    } else {
                        fails.join(" | ")
                    }
                ));
                if restarts == MAX_RESTARTS {
                    return Err(format!("the phone never listed the home's tracks: {e}").into());
                }
                restarts += 1;
                println!("             restarting the phone ({restarts}/{MAX_RESTARTS})");
                phone = phone.restart()?;
                t_attempt = Instant::now();
            }
        }
    }
    let peers = phone.get_json("/api/peers")?;
    let p0 = peers.get(0).cloned().unwrap_or_default();
    let addr = p0["addr"].as_str().unwrap_or("?");
    let peer_path = format!(
        "{} {}",
        p0["path"].as_str().unwrap_or("?"),
        addr.split("/p2p/").next().unwrap_or(addr)
    );
    let rtt = p0["rtt_ms"]
        .as_f64()
        .map_or("?".to_string(), |r| format!("{r:.2} ms"));
    println!("  phone→home {peer_path}, rtt {rtt}");

    // Rounds.
    let mut rows: Vec<TypeResult> = kinds
        .iter()
        .map(|k| TypeResult {
            label: k.label.clone(),
            name: k
                .orig
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            codec: k.codec.clone(),
            secs: k.secs,
            phone_cold: Samples::default(),
            phone_warm: Samples::default(),
            home_cold: Samples::default(),
            home_warm: Samples::default(),
            ffmpeg: Samples::default(),
        })
        .collect();
    let mut warm_misses = 0;
    for round in 0..=rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{rounds}")
        };
        print!("  {label:<12}");
        flush();
        for (i, k) in kinds.iter().enumerate() {
            // Round 0 plays the original copy (untimed); round r the
            // variants r (phone) and R + r (home).
            let (pid, hid) = if round == 0 {
                (&k.ids[0], &k.ids[0])
            } else {
                (&k.ids[round], &k.ids[rounds + round])
            };
            let phone_first = round % 2 == 1;
            let mut got = Vec::new();
            for side in 0..2 {
                let on_phone = (side == 0) == phone_first;
                let (d, id) = if on_phone {
                    (&phone, pid)
                } else {
                    (&home, hid)
                };
                if round == 0 && !on_phone {
                    // The original is already warm at the home now.
                    continue;
                }
                let cold = d.stream(id)?;
                let warm = d.stream(id)?;
                let v = |f: &Fetch| f.header("x-tunemesh-via").unwrap_or("?").to_string();
                if v(&cold) == "encode" && v(&warm) != "cachehit" {
                    warm_misses += 1;
                }
                got.push((on_phone, cold, warm));
            }
            let ff = ffmpeg_first(&k.orig)?;
            if round > 0 {
                let r = &mut rows[i];
                for (on_phone, cold, warm) in &got {
                    if *on_phone {
                        r.phone_cold.push(cold);
                        r.phone_warm.push(warm);
                    } else {
                        r.home_cold.push(cold);
                        r.home_warm.push(warm);
                    }
                }
                r.ffmpeg.push(&ff);
            }
            print!(".");
            flush();
        }
        println!();
    }
    print_stream_table(&rows, rounds);
    println!(
        "  logs       {} and {}",
        home.log.display(),
        phone.log.display()
    );
    drop(phone);
    drop(home);
    Ok(StreamReport {
        rows,
        peer_path,
        rtt,
        rounds,
        warm_misses,
        problems,
    })
}

/// Milliseconds of seconds `v`: median [min-max].
fn cell(v: &[f64]) -> String {
    common::spread(v, 1e3, 1)
}

fn print_stream_table(rows: &[TypeResult], rounds: usize) {
    for (what, pick) in [
        ("first body byte", 0usize),
        ("first audio page (end of the 3rd Ogg page)", 1),
        ("whole response (cold: the whole encode)", 2),
    ] {
        println!();
        println!("  {what}, ms: median [min-max] of {rounds}");
        println!(
            "  {:<9} {:<7} | {:>21} {:>21} | {:>21} {:>21} | {:>21}",
            "file", "codec", "phone cold", "phone warm", "home cold", "home warm", "ffmpeg"
        );
        for r in rows {
            let c = |s: &Samples| match pick {
                0 => cell(&s.byte),
                1 => cell(&s.audio),
                _ => cell(&s.end),
            };
            println!(
                "  {:<9} {:<7} | {:>21} {:>21} | {:>21} {:>21} | {:>21}",
                r.label,
                r.codec,
                c(&r.phone_cold),
                c(&r.phone_warm),
                c(&r.home_cold),
                c(&r.home_warm),
                if pick == 2 { "-".into() } else { c(&r.ffmpeg) }
            );
        }
    }
    println!();
    println!(
        "  served via (x-tunemesh-via): {}",
        rows.iter()
            .map(|r| format!(
                "{} cold {} / warm {}",
                r.label,
                r.phone_cold.via.join("+"),
                r.phone_warm.via.join("+")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

// ---------------------------------------------------------------- part 2

struct SyncStep {
    what: String,
    wall: f64,
    last_ms: u64,
    last_bytes: u64,
    bytes: u64,
    requests: u64,
    records: u64,
    syncs: u64,
    log: Vec<String>,
}

struct SyncReport {
    tracks: usize,
    lib_how: String,
    scan_s: f64,
    join_s: f64,
    steps: Vec<SyncStep>,
    rss_idle: [(i64, i64); 2],
    rss_end: [(i64, i64); 2],
    ttfb_phone: Vec<f64>,
    ttfb_home: Vec<f64>,
    ttfb_via: String,
    library_s: f64,
    library_n: usize,
    home_scan_log: Vec<String>,
    problems: Vec<String>,
    notes: Vec<String>,
    /// Full-sync attempts (1 + phone restarts), and whether one completed.
    attempts: usize,
    complete: bool,
}

fn sync_part(args: &Args, manifest: &Path, target: &Path, run_dir: &Path) -> Res<SyncReport> {
    section(&format!(
        "part 2: index sync of a {}-track library",
        args.tracks
    ));
    let n = args.tracks;
    let template = manifest.join(TEMPLATE);
    let libs = target.join("bench-libs");
    let scratch = libs.join("tmp");
    std::fs::create_dir_all(&scratch).ctx(format!("creating {}", scratch.display()))?;
    let (lib, lib_how) = common::ensure_mesh_library(&libs, &template, n, SEED)?;
    let mut problems = Vec::new();

    // Home: scan.
    let t0 = Instant::now();
    let home = Daemon::start("home", &run_dir.join("sync-home"), Some(&lib))?;
    print!("  home scan  ");
    flush();
    let mut last_print = Instant::now();
    wait_until(
        Duration::from_secs(1800),
        &home,
        "the home to scan the library",
        || {
            let st = home.status()?;
            if last_print.elapsed() > Duration::from_secs(10) {
                print!("{:.0} s.. ", t0.elapsed().as_secs_f64());
                flush();
                last_print = Instant::now();
            }
            Ok(st["tracks"].as_u64() == Some(n as u64))
        },
    )?;
    let scan_s = t0.elapsed().as_secs_f64();
    println!("{n} tracks {scan_s:.1} s after start (pid {})", home.pid);
    let home_scan_log = home.log_lines("library scanned");

    // Phone: join, full sync.
    let phone = Daemon::start("phone", &run_dir.join("sync-phone"), None)?;
    let before = phone.sync_stats()?;
    let t0 = Instant::now();
    pair(&home, &phone)?;
    let join_s = t0.elapsed().as_secs_f64();
    let mut steps = Vec::new();
    // A failed sync is not retried by the phone until the home announces
    // again; a restart of the phone (same data dir: the records it already
    // has are kept) makes the home announce. At most MAX_RESTARTS.
    let mut phone = phone;
    let mut restarts = 0;
    let mut t_attempt = t0;
    let mut before = before;
    let mut complete = false;
    loop {
        match wait_sync(&phone, &before, t_attempt, "full sync after join", n) {
            Ok(mut first) => {
                if restarts > 0 {
                    first.what = format!("full sync, {restarts} restart(s)");
                    first.wall += (t_attempt - t0).as_secs_f64();
                }
                steps.push(first);
                complete = true;
                break;
            }
            Err(e) => {
                println!("  PROBLEM    {e}");
                problems.push(e.to_string());
                if restarts == MAX_RESTARTS {
                    println!("             giving up after {restarts} restarts of the phone");
                    break;
                }
                restarts += 1;
                println!("             restarting the phone ({restarts}/{MAX_RESTARTS})");
                phone = phone.restart()?;
                before = phone.sync_stats()?;
                t_attempt = Instant::now();
            }
        }
    }
    if let Some(first) = steps.first() {
        println!(
            "  full sync  wall {:.2} s from `join` (join returned after {:.2} s), last_ms {}, last_bytes {}, {} requests, {} records{}",
            first.wall,
            join_s,
            first.last_ms,
            human_bytes(first.last_bytes),
            first.requests,
            first.records,
            if restarts > 0 {
                " (the last attempt's figures only: earlier ones failed part-way, and a failed sync counts nothing)"
            } else {
                ""
            }
        );
        for l in &first.log {
            println!("    phone: {l}");
        }
    }

    // Idle RSS.
    std::thread::sleep(Duration::from_secs(5));
    let rss_idle = [rss(home.pid), rss(phone.pid)];
    println!(
        "  idle RSS   home {} (peak {}), phone {} (peak {}), 5 s after the sync",
        mib(rss_idle[0].0),
        mib(rss_idle[0].1),
        mib(rss_idle[1].0),
        mib(rss_idle[1].1)
    );
    if args.linger > 0 {
        println!(
            "  lingering {} s: home pid {}, phone pid {}",
            args.linger, home.pid, phone.pid
        );
        std::thread::sleep(Duration::from_secs(args.linger));
    }

    // Streams against the big library (resolve walks the merged library).
    let files = first_files(&lib, args.rounds)?;
    let files = if complete { files } else { vec![] };
    let mut ttfb_phone = Vec::new();
    let mut ttfb_home = Vec::new();
    let mut via = Vec::new();
    for f in &files {
        let id = common::file_id(f)?;
        for (d, out) in [(&phone, &mut ttfb_phone), (&home, &mut ttfb_home)] {
            let r = d.stream(&id)?;
            out.push(r.first_byte.map_or(f64::NAN, |x| x.as_secs_f64()));
            let v = r.header("x-tunemesh-via").unwrap_or("?").to_string();
            if !via.contains(&v) {
                via.push(v);
            }
        }
    }
    println!(
        "  {n}-track library, stream first byte ms: phone {}, home {} (via {})",
        cell(&ttfb_phone),
        cell(&ttfb_home),
        via.join("+")
    );

    // One track changed, then changed back (only after a complete sync:
    // otherwise the next sync would fetch whatever is still missing).
    let victim = first_files(&lib, 1)?
        .first()
        .ctx("no files in the library")?
        .clone();
    let original = std::fs::read(&victim).ctx(format!("reading {}", victim.display()))?;
    let replacement = different_file(&template, &scratch, &original)?;
    let changes: &[(&str, &Vec<u8>)] = if complete {
        &[
            ("one track replaced", &replacement),
            ("the original put back", &original),
        ]
    } else {
        println!("  (no full sync: the one-track change is not measured)");
        &[]
    };
    for &(what, bytes) in changes {
        let before = phone.sync_stats()?;
        let part = scratch.join("swap.part");
        std::fs::write(&part, bytes).ctx(format!("writing {}", part.display()))?;
        let t0 = Instant::now();
        std::fs::rename(&part, &victim).ctx(format!("renaming over {}", victim.display()))?;
        match wait_sync(&phone, &before, t0, what, n) {
            Ok(s) => {
                println!(
                    "  {what:<22} wall {:.2} s from the rename, last_ms {}, last_bytes {}, {} sync(s), {} requests, {} records",
                    s.wall,
                    s.last_ms,
                    human_bytes(s.last_bytes),
                    s.syncs,
                    s.requests,
                    s.records
                );
                for l in &s.log {
                    println!("    phone: {l}");
                }
                steps.push(s);
            }
            Err(e) => {
                println!("  {what}: {e}");
                problems.push(format!("{what}: {e}"));
            }
        }
        for l in home.log_lines("rescanned").iter().rev().take(1) {
            println!("    home:  {l}");
        }
    }
    // Leave the library as generated even if a step failed.
    if std::fs::read(&victim).ok().as_deref() != Some(&original[..]) {
        std::fs::write(&victim, &original).ctx(format!("restoring {}", victim.display()))?;
    }

    // The phone's merged library, its RSS sampled while it streams out.
    let sampler = RssSampler::start(phone.pid);
    let t0 = Instant::now();
    let lib_json = phone.get_json("/api/library")?;
    let library_s = t0.elapsed().as_secs_f64();
    let library_peak_kib = sampler.stop();
    let library_n = lib_json.as_array().map_or(0, Vec::len);
    println!(
        "  phone /api/library: {library_n} tracks in {library_s:.2} s, phone RSS at most {} meanwhile",
        mib(library_peak_kib)
    );
    // The catalog's pages and search, as the web player will use them.
    let queries = search_queries(&lib_json, 200);
    drop(lib_json);
    match catalog_latency(&phone, &queries) {
        Ok(lines) => lines.iter().for_each(|l| println!("  {l}")),
        Err(e) => problems.push(format!("catalog queries: {e}")),
    }
    for (d, pid) in [("home", home.pid), ("phone", phone.pid)] {
        println!("  {d} memory: {}", smaps_rollup(pid));
    }
    if library_n != n {
        problems.push(format!(
            "the phone's merged library has {library_n} tracks, not {n}"
        ));
    }
    let rss_end = [rss(home.pid), rss(phone.pid)];
    println!(
        "  RSS at the end: home {} (peak {}), phone {} (peak {})",
        mib(rss_end[0].0),
        mib(rss_end[0].1),
        mib(rss_end[1].0),
        mib(rss_end[1].1)
    );
    // Warnings, errors and refusals in the daemons' logs, counted by text
    // (span fields, peer ids and numbers cut). symphonia's probe warns about
    // every ID3 tag it skips (seen with -v only): a note, not a problem.
    let mut notes = Vec::new();
    for d in [&home, &phone] {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for pat in [" WARN ", " ERROR ", "refused"] {
            for l in d.log_lines(pat) {
                let key = strip_ids(&l);
                match seen.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => seen.push((key, 1)),
                }
            }
        }
        for (l, k) in seen {
            let line = format!("{} log, {k}x: {l}", d.name);
            if l.contains("symphonia") {
                notes.push(line);
            } else {
                problems.push(line);
            }
        }
    }
    println!(
        "  logs       {} and {}",
        home.log.display(),
        phone.log.display()
    );
    Ok(SyncReport {
        tracks: n,
        lib_how,
        scan_s,
        join_s,
        steps,
        rss_idle,
        rss_end,
        ttfb_phone,
        ttfb_home,
        ttfb_via: via.join("+"),
        library_s,
        library_n,
        home_scan_log,
        problems,
        notes,
        attempts: restarts + 1,
        complete,
    })
}

/// Wait until the phone finished a sync after `before` (its `syncs` count
/// went up, and nothing more came in for a moment), and the last "library
/// synced" line reports all `n` tracks.
fn wait_sync(
    phone: &Daemon,
    before: &serde_json::Value,
    t0: Instant,
    what: &str,
    n: usize,
) -> Res<SyncStep> {
    let count = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let syncs0 = count(before, "syncs");
    let lines0_all = phone.log_lines("library sync").len();
    let lines0 = phone.log_lines("library sync failed").len();
    // The full sync of 100k records takes seconds here; a change, under one.
    let deadline = Duration::from_secs(if what.starts_with("full") { 300 } else { 90 });
    // A failed sync is retried only on the peer's next announcement: give
    // up when one failed and nothing happened for this long.
    let idle_after_failure = Duration::from_secs(10);
    let mut wall = None;
    let mut last = before.clone();
    let mut failures = 0;
    let mut failed_at = t0;
    loop {
        let st = phone.sync_stats()?;
        if count(&st, "syncs") > count(&last, "syncs") {
            wall = Some(t0.elapsed());
            last = st.clone();
        }
        let f = phone
            .log_lines("library sync failed")
            .len()
            .saturating_sub(lines0);
        if f > failures {
            failures = f;
            failed_at = Instant::now();
        }
        if wall.is_none() && failures > 0 && failed_at.elapsed() > idle_after_failure {
            let log: Vec<String> = phone
                .log_lines("library sync")
                .into_iter()
                .skip(lines0_all)
                .collect();
            let log: Vec<String> = log.iter().map(|l| strip_ids(l)).collect();
            return Err(format!(
                "{what}: the phone's sync failed and was not retried ({} s without a sync since): {}",
                idle_after_failure.as_secs(),
                log.join(" | ")
            )
            .into());
        }
        // Settled: a sync was seen and no further one for 1.5 s.
        if let Some(w) = wall {
            if t0.elapsed() > w + Duration::from_millis(1500) {
                break;
            }
        }
        if t0.elapsed() > deadline {
            let tail = phone.log_lines("sync");
            return Err(format!(
                "{what}: no sync within {} s; phone sync stats {st}; its log: {}",
                deadline.as_secs(),
                tail.join(" | ")
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let log: Vec<String> = phone
        .log_lines("library sync")
        .into_iter()
        .skip(lines0_all)
        .collect();
    let ok = log
        .last()
        .is_some_and(|l| l.contains("library synced") && l.contains(&format!("tracks={n} ")));
    if !ok {
        return Err(format!(
            "{what}: the phone's last sync did not end with all {n} tracks: {}",
            log.join(" | ")
        )
        .into());
    }
    Ok(SyncStep {
        what: what.to_string(),
        wall: wall.map_or(f64::NAN, |w| w.as_secs_f64()),
        last_ms: count(&last, "last_ms"),
        last_bytes: count(&last, "last_bytes"),
        bytes: count(&last, "bytes_in") - count(before, "bytes_in"),
        requests: count(&last, "requests") - count(before, "requests"),
        records: count(&last, "records") - count(before, "records"),
        syncs: count(&last, "syncs") - syncs0,
        log,
    })
}

/// Up to `n` files of the library, the first ones in sorted order.
fn first_files(root: &Path, n: usize) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .ctx(format!("listing {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut dirs = Vec::new();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else if p.is_file() {
                out.push(p);
                if out.len() == n {
                    return Ok(out);
                }
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    Ok(out)
}

/// A generated file whose bytes differ from `not`.
fn different_file(template: &Path, scratch: &Path, not: &[u8]) -> Res<Vec<u8>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    for k in 0..10u64 {
        let dir = scratch.join(format!("replacement-{k}"));
        let _ = std::fs::remove_dir_all(&dir);
        let paths = tunemesh::library::generate::generate(template, &dir, 1, nanos ^ k)
            .ctx("generating a replacement file")?;
        let p = paths.first().ctx("the generator wrote nothing")?;
        let b = std::fs::read(p).ctx(format!("reading {}", p.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        if b != not {
            return Ok(b);
        }
    }
    Err("could not generate a file different from the original".into())
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> (i64, i64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(-1)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

// ---------------------------------------------------------------- summary

fn print_summary(args: &Args, command: &str, r: &Report, took: Duration) {
    section("summary");
    println!("  command    {command}");
    println!(
        "  machine    nproc={}, load avg now {}; total {:.0} s",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg(),
        took.as_secs_f64()
    );
    if let Some(s) = &r.stream {
        println!();
        println!(
            "  time to first audio, {KBPS} kb/s, loopback ({}; rtt {}), ms, median [min-max] of {}:",
            s.peer_path, s.rtt, s.rounds
        );
        println!("  first body byte / first audio page (end of the 3rd Ogg page)");
        println!(
            "  {:<8} {:<30} | {:>13} | {:>13} | {:>13} | {:>13} | {:>13} | floor",
            "type", "file", "phone cold", "phone warm", "home cold", "home warm", "ffmpeg"
        );
        let mut all_meet = true;
        for t in &s.rows {
            let m = |v: &[f64]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1}", median(v.to_vec()) * 1e3)
                }
            };
            let pair = |x: &Samples| format!("{} / {}", m(&x.byte), m(&x.audio));
            // Judged on the first audio page (the stricter figure); a
            // non-Ogg passthrough has only its first byte.
            let cold = if t.phone_cold.audio.is_empty() {
                median(t.phone_cold.byte.clone())
            } else {
                median(t.phone_cold.audio.clone())
            };
            let meets = cold * 1e3 < COLD_FLOOR_MS;
            all_meet &= meets;
            println!(
                "  {:<8} {:<30} | {:>13} | {:>13} | {:>13} | {:>13} | {:>13} | {}",
                t.label,
                format!("{} {:.0} s", t.name, t.secs),
                pair(&t.phone_cold),
                pair(&t.phone_warm),
                pair(&t.home_cold),
                pair(&t.home_warm),
                pair(&t.ffmpeg),
                if meets { "meets" } else { "MISSES" }
            );
        }
        println!(
            "  floor: phone cold < {COLD_FLOOR_MS:.0} ms to the first audio page: {}",
            if all_meet { "meets" } else { "MISSES" }
        );
        println!(
            "  cold = a track id never requested before (an ffmpeg stream copy of the file with its own"
        );
        println!(
            "  comment tag); warm = the same request again (home transcode cache); ffmpeg = spawn to stdout,"
        );
        println!(
            "  process start included; bench = plain HTTP/1.1 GET on a fresh TCP connection, connect to byte."
        );
        println!(
            "  via: {}",
            s.rows
                .iter()
                .map(|t| format!(
                    "{} {}/{}",
                    t.label,
                    t.phone_cold.via.join("+"),
                    t.phone_warm.via.join("+")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in &s.problems {
            println!("  PROBLEM: {p}");
        }
        if s.warm_misses > 0 {
            println!(
                "  NOTE: {} warm request(s) after a completed cold encode were not cache hits",
                s.warm_misses
            );
        }
    }
    if let Some(y) = &r.sync {
        println!();
        println!(
            "  index sync, {} tracks (library {}; home scan {:.1} s; join command {:.2} s)",
            y.tracks, y.lib_how, y.scan_s, y.join_s
        );
        println!(
            "  {:<24} | {:>9} | {:>9} | {:>9} | {:>12} | {:>12} | {:>6} | {:>8} | {:>5} | floor",
            "step",
            "wall s",
            "before s",
            "last_ms",
            "last_bytes",
            "bytes (all)",
            "reqs",
            "records",
            "syncs"
        );
        if !y.complete {
            println!(
                "  {:<24} | FAILED: {} attempt(s) (`join`, then {} phone restart(s)), none completed",
                "full sync after join",
                y.attempts,
                y.attempts - 1
            );
        }
        for (i, s) in y.steps.iter().enumerate() {
            let floor = if i == 0 {
                String::new()
            } else if s.last_bytes < DELTA_FLOOR_BYTES && s.bytes < DELTA_FLOOR_BYTES {
                "meets (< 64 KiB)".into()
            } else {
                "MISSES (< 64 KiB)".into()
            };
            println!(
                "  {:<24} | {:>9.2} | {:>9.2} | {:>9} | {:>12} | {:>12} | {:>6} | {:>8} | {:>5} | {}",
                s.what,
                s.wall,
                s.wall - s.last_ms as f64 / 1e3,
                s.last_ms,
                human_bytes(s.last_bytes),
                human_bytes(s.bytes),
                s.requests,
                s.records,
                s.syncs,
                floor
            );
        }
        println!(
            "  wall = from `join` (full sync) or from the rename in the home's folder (watcher debounce"
        );
        println!(
            "  300 ms + rescan + announce + sync) to the phone's /api/status showing the sync; before s ="
        );
        println!("  wall - last_ms, the time until the phone's (last) sync began; last_ms and");
        println!(
            "  last_bytes = the phone's own figures for its last sync; bytes (all) = bytes_in over the step"
        );
        println!(
            "  idle RSS   home {} (peak {}), phone {} (peak {}); at the end home {}, phone {}",
            mib(y.rss_idle[0].0),
            mib(y.rss_idle[0].1),
            mib(y.rss_idle[1].0),
            mib(y.rss_idle[1].1),
            mib(y.rss_end[0].0),
            mib(y.rss_end[1].0)
        );
        println!(
            "  with {} tracks: stream first byte ms phone {}, home {} (via {}); phone /api/library {} tracks in {:.2} s",
            y.tracks,
            cell(&y.ttfb_phone),
            cell(&y.ttfb_home),
            y.ttfb_via,
            y.library_n,
            y.library_s
        );
        for l in &y.home_scan_log {
            println!("  home: {l}");
        }
        for p in &y.problems {
            println!("  PROBLEM: {p}");
        }
        for p in &y.notes {
            println!("  note: {p}");
        }
    }
    let _ = args;
}

fn human_bytes(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else if b >= 10 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

// ---------------------------------------------------------------- daemons

/// A `tunemesh serve` child, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    name: String,
    dir: PathBuf,
    music: Option<PathBuf>,
    child: Child,
    pid: u32,
    /// host:port of its HTTP API.
    addr: String,
    token: String,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &str, dir: &Path, music: Option<&Path>) -> Res<Daemon> {
        std::fs::create_dir_all(dir).ctx(format!("creating {}", dir.display()))?;
        let log = dir.with_extension("log");
        // Appended to: a restarted daemon keeps one log.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ctx(format!("creating {}", log.display()))?;
        let info = dir.join("api.json");
        let _ = std::fs::remove_file(&info);
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(dir).args(["-v", "serve"]);
        match music {
            Some(m) => {
                cmd.arg(m);
            }
            None => {
                cmd.args(["--role", "phone"]);
            }
        }
        cmd.args(["--api", "127.0.0.1:0", "--no-mdns", "--name"])
            .arg(format!("bench-{name}"));
        for l in LISTEN {
            cmd.args(["--listen", l]);
        }
        cmd.env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("TUNEMESH_API")
            .stdin(Stdio::null())
            .stdout(f.try_clone().ctx("log file")?)
            .stderr(f);
        let child = cmd.spawn().ctx(format!("starting {cmd:?}"))?;
        let pid = child.id();
        let mut d = Daemon {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            music: music.map(Path::to_path_buf),
            child,
            pid,
            addr: String::new(),
            token: String::new(),
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&info) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let url = v["url"].as_str().unwrap_or_default();
                    d.addr = url.trim_start_matches("http://").to_string();
                    d.token = v["token"].as_str().unwrap_or_default().to_string();
                    break;
                }
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(format!("the {name} daemon exited ({st}): {}", d.log_tail()).into());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the {name} daemon wrote no api.json in 60 s: {}",
                    d.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(d)
    }

    /// Stop it (SIGTERM) and start it again on the same data dir.
    fn restart(self) -> Res<Daemon> {
        let (name, dir, music) = (self.name.clone(), self.dir.clone(), self.music.clone());
        drop(self);
        Daemon::start(&name, &dir, music.as_deref())
    }

    fn log_text(&self) -> String {
        let b = std::fs::read(&self.log).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&b))
    }

    fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Log lines containing `pat`, with the timestamp cut.
    fn log_lines(&self, pat: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(pat))
            .map(|l| {
                l.split_once("Z ")
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_string()
            })
            .collect()
    }

    fn get_json(&self, path: &str) -> Res<serde_json::Value> {
        let auth = format!("Bearer {}", self.token);
        let f = http(&self.addr, path, Some(&auth), false, true)?;
        if f.status != 200 {
            return Err(format!(
                "{} GET {path}: HTTP {} {}",
                self.name,
                f.status,
                String::from_utf8_lossy(&f.body)
            )
            .into());
        }
        serde_json::from_slice(&f.body).ctx(format!("{} GET {path}: bad JSON", self.name))
    }

    fn status(&self) -> Res<serde_json::Value> {
        self.get_json("/api/status")
    }

    fn sync_stats(&self) -> Res<serde_json::Value> {
        Ok(self.status()?["sync"].clone())
    }

    /// GET the track as a player would, read to its end.
    fn stream(&self, id: &str) -> Res<Fetch> {
        let path = format!("/stream/{id}?bitrate={KBPS}&token={}", self.token);
        let f = http(&self.addr, &path, None, true, true)?;
        if f.status != 200 || f.body_len == 0 {
            return Err(format!(
                "{} GET /stream/{id}: HTTP {}, {} bytes {}",
                self.name,
                f.status,
                f.body_len,
                String::from_utf8_lossy(&f.body[..f.body.len().min(300)])
            )
            .into());
        }
        Ok(f)
    }

    /// Run a CLI command against this daemon's data dir; its stdout.
    fn cli(&self, args: &[&str]) -> Res<String> {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .ctx(format!("running tunemesh {}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "tunemesh {} ({}) failed: {}",
                args.first().unwrap_or(&""),
                self.name,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "  the {} daemon ignored SIGTERM for 10 s; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `invite --quiet` at the home, `join TICKET` at the phone.
fn pair(home: &Daemon, phone: &Daemon) -> Res<()> {
    let ticket = home.cli(&["invite", "--quiet"])?;
    let ticket = ticket.trim();
    if ticket.is_empty() {
        return Err("invite printed no ticket".into());
    }
    phone.cli(&["join", ticket])?;
    Ok(())
}

fn wait_until(
    limit: Duration,
    d: &Daemon,
    what: &str,
    mut cond: impl FnMut() -> Res<bool>,
) -> Res<()> {
    let t0 = Instant::now();
    loop {
        if cond()? {
            return Ok(());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "timed out after {} s waiting for {what}; {} log: {}",
                limit.as_secs(),
                d.name,
                d.log_tail()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A log line without span fields and device ids, for counting alike lines.
fn strip_ids(l: &str) -> String {
    let l = match l.find("}: ") {
        Some(p) if l[..p].contains('{') => &l[p + 3..],
        _ => l,
    };
    l.split_whitespace()
        .map(|w| match w.find("12D3KooW") {
            Some(p) => format!("{}…", &w[..p]),
            None if w.bytes().any(|b| b.is_ascii_digit()) && !w.contains('=') => w
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect(),
            None => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------- HTTP

// ---------------------------------------------------------------- ffmpeg

/// ffmpeg's time from spawn to its first stdout byte and to the end of its
/// third Ogg page; killed then.
fn ffmpeg_first(input: &Path) -> Res<Fetch> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(input)
        .args([
            "-vn",
            "-c:a",
            "libopus",
            "-b:a",
            &format!("{KBPS}k"),
            "-f",
            "ogg",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let what = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child = cmd.spawn().ctx(format!("starting {what}"))?;
    let mut so = child.stdout.take().ctx("no stdout pipe")?;
    let mut f = Fetch {
        status: 200,
        headers: vec![("x-tunemesh-via".into(), "ffmpeg".into())],
        body: Vec::new(),
        body_len: 0,
        first_byte: None,
        first_audio: None,
        end: Duration::ZERO,
    };
    let mut chunk = [0u8; 64 << 10];
    while f.first_audio.is_none() {
        let n = so.read(&mut chunk).ctx(format!("reading {what}"))?;
        if n == 0 {
            break;
        }
        f.first_byte.get_or_insert_with(|| t0.elapsed());
        f.body.extend_from_slice(&chunk[..n]);
        if ogg_pages_complete(&f.body)? >= 3 {
            f.first_audio = Some(t0.elapsed());
        }
    }
    f.end = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    if f.first_audio.is_none() {
        return Err(format!("{what}: fewer than 3 Ogg pages on stdout").into());
    }
    Ok(f)
}

// ---------------------------------------------------------------- catalog

/// Peak RSS of a process, sampled every 5 ms on a thread of its own.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<i64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Rss, anonymous and file-backed parts of a process (`smaps_rollup`).
fn smaps_rollup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    format!(
        "Rss {} = anonymous (heap: catalog, sled cache, buffers) {} + file-backed (binary, sled files) {}",
        mib(field("Rss:")),
        mib(field("Anonymous:")),
        mib(field("Rss:") - field("Anonymous:"))
    )
}

/// Queries a person would type: the first word of a title, a word of the
/// artist, the start of an album name, taken from the library itself.
fn search_queries(lib: &serde_json::Value, n: usize) -> Vec<String> {
    let tracks = lib.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut rng = SEED;
    let mut out = Vec::new();
    for i in 0..n {
        if tracks.is_empty() {
            break;
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let t = &tracks[(rng >> 33) as usize % tracks.len()];
        let field = ["title", "artist", "album"][i % 3];
        let text = t[field].as_str().unwrap_or("");
        let word: String = text
            .split_whitespace()
            .next()
            .unwrap_or("a")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        out.push(if word.is_empty() { "a".into() } else { word });
    }
    out
}

/// p50 and p99 in ms of `n` timed GETs of paths made by `path`.
fn time_gets(d: &Daemon, n: usize, mut path: impl FnMut(usize) -> String) -> Res<(f64, f64)> {
    let auth = format!("Bearer {}", d.token);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let p = path(i);
        let t0 = Instant::now();
        let f = http(&d.addr, &p, Some(&auth), false, true)?;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if f.status != 200 {
            return Err(format!("GET {p}: HTTP {}", f.status).into());
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// Makes the path of the i-th request.
type PathFn<'a> = Box<dyn FnMut(usize) -> String + 'a>;

/// Latency of the catalog's queries on `d`, from request to last byte
/// (each on a fresh connection, as `http` makes them).
fn catalog_latency(d: &Daemon, queries: &[String]) -> Res<Vec<String>> {
    const N: usize = 200;
    let albums = d.get_json("/api/albums?limit=1000")?;
    let total_albums = albums["total"].as_u64().unwrap_or(0) as usize;
    let ids: Vec<String> = albums["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let tracks = d.get_json("/api/tracks?limit=1")?["total"]
        .as_u64()
        .unwrap_or(0) as usize;
    if ids.is_empty() || tracks == 0 || queries.is_empty() {
        return Err("no albums or tracks to query".into());
    }
    let spread = |i: usize, total: usize| (i * 7919) % total.saturating_sub(100).max(1);
    let mut out = vec![format!(
        "catalog    {total_albums} albums, {tracks} tracks; {N} requests each, p50 / p99 ms (floors: 10 ms p50; search p99 30 ms)"
    )];
    let rows: [(&str, PathFn); 4] = [
        (
            "100 albums by artist",
            Box::new(|i| {
                format!(
                    "/api/albums?sort=artist&limit=100&offset={}",
                    spread(i, total_albums)
                )
            }),
        ),
        (
            "100 tracks",
            Box::new(|i| format!("/api/tracks?limit=100&offset={}", spread(i, tracks))),
        ),
        (
            "an album's tracks",
            Box::new(|i| format!("/api/albums/{}", ids[i % ids.len()])),
        ),
        (
            "search",
            Box::new(|i| format!("/api/search?q={}&limit=50", queries[i % queries.len()])),
        ),
    ];
    for (what, f) in rows {
        let (p50, p99) = time_gets(d, N, f)?;
        out.push(format!("  {what:<22} {p50:>7.2} / {p99:>7.2}"));
    }
    Ok(out)
}
