//! Web player benchmark, in a real Chromium (chromedriver) against a real
//! daemon on loopback:
//!
//! 1. a small library (albums of FLAC, MP3, AAC and Vorbis tracks made by
//!    ffmpeg, and a 30 s track to seek in), cold transcode cache: page
//!    weight before the first track plays (compressed bytes on the wire),
//!    page load to first paint, click to first audio, seek latency on a
//!    cold track (a live encode) and a warm one, and the gap between
//!    consecutive album tracks per format as the page measures it (from
//!    one track's `ended` to the next one's `playing`);
//! 2. the generated big library of the mesh bench (`--tracks`, 0 skips):
//!    first paint of the albums grid, and search keystroke to results.
//!
//! Needs chromium, chromedriver and ffmpeg.

mod common;

use common::{cli, daemon, median, section, wait_tracks, Ctx, Proc, Res};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 0x3E5B_0001;
const TEMPLATE: &str = "tests/fixtures/lib/Alpha Artist/First Album/01 - Opening.mp3";

/// Web player benchmark: page weight, first audio, seeks, gaps, 100k library.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench web --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Tracks in the big generated library (0: skip that part).
    #[arg(long, default_value_t = 100_000)]
    tracks: usize,
    /// Rounds of each small-library measurement.
    #[arg(long, default_value_t = 3, value_parser = common::args::at_least_one())]
    rounds: usize,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("web bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args: Args = common::args::parse();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (target, work, _run) = common::work_dirs("bench-web")?;
    println!("tunemesh web player benchmark");
    println!(
        "  command    cargo bench --bench web -- --tracks {} --rounds {}",
        args.tracks, args.rounds
    );
    println!(
        "  machine    nproc={}, CPU {}, load avg {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        common::cpu_model(),
        common::loadavg()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    section("part 1: small library, cold cache");
    let lib = work.join("lib");
    make_library(&lib)?;
    for round in 0..args.rounds {
        let data = work.join(format!("small-{round}"));
        let _ = std::fs::remove_dir_all(&data);
        let home = daemon(&data, &lib)?;
        wait_tracks(&data, 13)?;
        rt.block_on(small(&data, round))?;
        drop(home);
    }
    if args.tracks > 0 {
        section(&format!("part 2: a {}-track library", args.tracks));
        let libs = target.join("bench-libs");
        let (big, _) =
            common::ensure_mesh_library(&libs, &manifest.join(TEMPLATE), args.tracks, SEED)?;
        let data = work.join("big");
        let _ = std::fs::remove_dir_all(&data);
        let t0 = Instant::now();
        let home = daemon(&data, &big)?;
        wait_tracks(&data, args.tracks as u64)?;
        println!("  scanned    in {:.1} s", t0.elapsed().as_secs_f64());
        for round in 0..args.rounds {
            rt.block_on(big_library(&data, round))?;
        }
        drop(home);
    }
    Ok(())
}

/// Albums of three 2 s tracks in FLAC, MP3, AAC and Vorbis, and one 30 s
/// Opus-bound WAV to seek in; made once with ffmpeg.
fn make_library(lib: &Path) -> Res<()> {
    let marker = lib.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(lib);
    let formats = [
        ("FLAC", "flac", &["-c:a", "flac"][..]),
        ("MP3", "mp3", &["-c:a", "libmp3lame", "-q:a", "2"][..]),
        ("AAC", "m4a", &["-c:a", "aac", "-b:a", "192k"][..]),
        ("Vorbis", "ogg", &["-c:a", "libvorbis", "-q:a", "5"][..]),
    ];
    for (name, ext, codec) in formats {
        let dir = lib.join(format!("Bench/{name} Album"));
        std::fs::create_dir_all(&dir)?;
        for n in 1..=3 {
            let out = dir.join(format!("0{n} - {name} {n}.{ext}"));
            let tone = format!("sine=frequency={}:sample_rate=44100:duration=2", 220 * n);
            ffmpeg(
                &["-f", "lavfi", "-i", &tone, "-ac", "2"],
                codec,
                &out,
                &[
                    ("title", &format!("{name} {n}")),
                    ("album", &format!("{name} Album")),
                    ("artist", "Bench"),
                    ("track", &n.to_string()),
                ],
            )?;
        }
    }
    let dir = lib.join("Bench/Long");
    std::fs::create_dir_all(&dir)?;
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=44100:duration=30",
            "-ac",
            "2",
        ],
        &["-c:a", "flac"],
        &dir.join("01 - Thirty Seconds.flac"),
        &[
            ("title", "Thirty Seconds"),
            ("album", "Long"),
            ("artist", "Bench"),
        ],
    )?;
    std::fs::write(marker, "")?;
    Ok(())
}

fn ffmpeg(input: &[&str], codec: &[&str], out: &Path, tags: &[(&str, &str)]) -> Res<()> {
    let mut c = Command::new("ffmpeg");
    c.args(["-v", "error", "-y"]).args(input).args(codec);
    for (k, v) in tags {
        c.arg("-metadata").arg(format!("{k}={v}"));
    }
    let st = c.arg(out).status().ctx("running ffmpeg")?;
    if !st.success() {
        return Err(format!("ffmpeg failed making {}", out.display()).into());
    }
    Ok(())
}

/// A browser session through a fresh chromedriver (a new profile: cold
/// browser cache).
async fn browser() -> Res<(Proc, fantoccini::Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let driver = Proc(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx("starting chromedriver (apt install chromium chromium-driver)")?,
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                        "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--disable-dev-shm-usage"]}),
    );
    let t = Instant::now();
    loop {
        let conn = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(conn)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return Ok((driver, c)),
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(format!("chromedriver: {e}").into()),
        }
    }
}

async fn js(c: &fantoccini::Client, body: &str) -> Res<Value> {
    Ok(c.execute(body, vec![]).await?)
}

async fn until(c: &fantoccini::Client, what: &str, secs: u64, body: &str) -> Res<()> {
    let t = Instant::now();
    while js(c, body).await? != Value::Bool(true) {
        if t.elapsed() > Duration::from_secs(secs) {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Go to the album "`name` Album" of the small library, by the grid.
async fn open_album(c: &fantoccini::Client, base: &str, name: &str) -> Res<()> {
    c.goto(&format!("{base}/#/albums?sort=name")).await?;
    until(
        c,
        "the grid",
        10,
        "return document.querySelectorAll('.grid .card').length >= 5",
    )
    .await?;
    js(c, &format!("[...document.querySelectorAll('.card')].find(a => a.textContent.includes('{name} Album')).click(); return true")).await?;
    until(
        c,
        "the album page",
        10,
        "return document.querySelectorAll('.tracks .track').length === 3",
    )
    .await
}

/// Install a `playing` watcher on the active element: `window.tm_playing`
/// gets the time it fires.
const WATCH_PLAYING: &str = "window.tm_playing = undefined; \
    const els = tunemesh.player.els; \
    for (const a of els) a.addEventListener('playing', () => { if (window.tm_playing === undefined) window.tm_playing = performance.now(); }, {once: true}); \
    return true";

async fn small(data: &Path, round: usize) -> Res<()> {
    let url = cli(data, &["open", "--print"])?.trim().to_string();
    let base = url.split("/#").next().unwrap_or("").to_string();
    let (_driver, c) = browser().await?;
    c.goto(&url).await?;
    until(
        &c,
        "the albums grid",
        20,
        "return document.querySelectorAll('.grid .card').length >= 5",
    )
    .await?;
    let paint = js(&c, "return performance.now()")
        .await?
        .as_f64()
        .unwrap_or(f64::NAN);
    // Click to first audio, on an album of the cold cache.
    open_album(&c, &base, "FLAC").await?;
    js(&c, WATCH_PLAYING).await?;
    let t_click = js(&c, "const b = [...document.querySelectorAll('button')].find(b => b.textContent.includes('Play')); const t = performance.now(); b.click(); return t").await?;
    until(
        &c,
        "first audio",
        15,
        "return window.tm_playing !== undefined",
    )
    .await?;
    let first_audio = js(&c, "return window.tm_playing")
        .await?
        .as_f64()
        .unwrap_or(f64::NAN)
        - t_click.as_f64().unwrap_or(f64::NAN);
    // What the page loaded before that audio: compressed bytes on the wire.
    let weight = js(&c, "const end = window.tm_playing; \
        const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]; \
        return all.filter(e => e.responseEnd <= end && !e.name.includes('/stream/')).reduce((s, e) => s + (e.transferSize || 0), 0)").await?;
    // Gaps per format: each album from its first track through its third.
    let mut gaps = vec![];
    for name in ["FLAC", "MP3", "AAC", "Vorbis"] {
        open_album(&c, &base, name).await?;
        js(&c, "tunemesh.player.gaps.length = 0; return true").await?;
        js(&c, "[...document.querySelectorAll('button')].find(b => b.textContent.includes('Play')).click(); return true").await?;
        until(
            &c,
            &format!("{name}: the third track"),
            30,
            "return tunemesh.player.gaps.length >= 2",
        )
        .await?;
        let g: Vec<f64> = serde_json::from_value(js(&c, "return tunemesh.player.gaps").await?)?;
        gaps.push((name, g));
    }
    // Seeks: cold (the first play of the long track, a live encode), then
    // warm (the same track again once its transcode is cached).
    let mut seeks = vec![];
    for (kind, at) in [("cold", 15.0), ("warm", 20.0)] {
        c.goto(&format!("{base}/#/search?q=thirty")).await?;
        until(
            &c,
            "the long track",
            10,
            "return !!document.querySelector('.results .t-title')",
        )
        .await?;
        js(
            &c,
            "document.querySelector('.results .t-title').click(); return true",
        )
        .await?;
        until(
            &c,
            "the long track playing",
            15,
            "return tunemesh.player.playing && tunemesh.player.position > 0.2",
        )
        .await?;
        js(&c, WATCH_PLAYING).await?;
        let t0 = js(&c, &format!("const s = document.getElementById('seek'); s.value = '{at}'; const t = performance.now(); s.dispatchEvent(new Event('change')); return t")).await?;
        until(
            &c,
            "the seek",
            15,
            &format!("return window.tm_playing !== undefined && tunemesh.player.position >= {at}"),
        )
        .await?;
        let ms = js(&c, "return window.tm_playing")
            .await?
            .as_f64()
            .unwrap_or(f64::NAN)
            - t0.as_f64().unwrap_or(f64::NAN);
        seeks.push((kind, ms));
        // Let the whole-track transcode finish into the cache.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let _ = c.close().await;
    println!(
        "  round {round}: first paint {paint:.0} ms after navigation; click to first audio {first_audio:.0} ms; \
         page weight before first audio {:.1} KB (compressed, on the wire)",
        weight.as_f64().unwrap_or(f64::NAN) / 1000.0
    );
    let show: Vec<String> = seeks
        .iter()
        .map(|(k, ms)| format!("{k} {ms:.0} ms"))
        .collect();
    println!("           seek to first audio: {}", show.join(", "));
    let show: Vec<String> = gaps
        .iter()
        .map(|(n, g)| {
            let g: Vec<String> = g.iter().map(|x| format!("{x:.1}")).collect();
            format!("{n} [{}]", g.join(", "))
        })
        .collect();
    println!(
        "           album gaps ms (ended → next playing): {}",
        show.join("; ")
    );
    Ok(())
}

async fn big_library(data: &Path, round: usize) -> Res<()> {
    let url = cli(data, &["open", "--print"])?.trim().to_string();
    let (_driver, c) = browser().await?;
    c.goto(&url).await?;
    until(
        &c,
        "the albums grid",
        60,
        "return document.querySelectorAll('.grid .card').length >= 100",
    )
    .await?;
    let paint = js(&c, "return performance.now()")
        .await?
        .as_f64()
        .unwrap_or(f64::NAN);
    let mut keystroke = vec![];
    let mut server = vec![];
    for q in ["garden", "electric", "blue river", "caf"] {
        let t0 = js(&c, &format!("document.getElementById('view').dataset.ready = ''; const s = document.getElementById('search'); s.value = '{q}'; const t = performance.now(); s.dispatchEvent(new Event('input')); return t")).await?;
        until(&c, "results", 20, &format!("const v = document.getElementById('view'); return v.dataset.ready === '1' && v.dataset.view === 'search' && decodeURIComponent(location.hash).includes('{q}')")).await?;
        let t1 = js(&c, "return performance.now()").await?;
        keystroke.push(t1.as_f64().unwrap_or(f64::NAN) - t0.as_f64().unwrap_or(f64::NAN));
        server.push(
            js(
                &c,
                "return Number(document.getElementById('view').dataset.searchMs)",
            )
            .await?
            .as_f64()
            .unwrap_or(f64::NAN),
        );
    }
    let _ = c.close().await;
    println!(
        "  round {round}: first paint of 100 album covers {paint:.0} ms after navigation; search keystroke to results shown: median {:.0} ms \
         (of which the 120 ms typing debounce; request to answer median {:.0} ms)",
        median(keystroke),
        median(server)
    );
    Ok(())
}
