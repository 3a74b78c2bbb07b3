//! Subsonic API benchmark.
//!
//! 1. Side by side with supysonic (a Python Subsonic server from PyPI) on the
//!    same corpus and machine, requests alternating between the two: latency
//!    of getAlbumList2, search3, getAlbum and the first byte of a stream
//!    (the original, `format=raw`, as supysonic serves it without a
//!    transcoder set up; and ours transcoded to Opus besides). p50 of
//!    `--rounds` each, and the ratio supysonic / tunemesh.
//! 2. On a phone node that synced the mesh bench's generated library
//!    (`--tracks`, 0 skips): `search3` with an empty query paged 500 songs
//!    at a time through every page (total time, the phone's RSS), and
//!    getAlbumList2 p50/p99.
//!
//! Needs supysonic and waitress (`pip install supysonic waitress`) for part 1.

mod common;

use common::{cli, daemon, median, section, wait_tracks, Ctx, Proc, Res};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 0x3E5B_0001;
const TEMPLATE: &str = "tests/fixtures/lib/Alpha Artist/First Album/01 - Opening.mp3";
const USER: &str = "bench";
const PASSWORD: &str = "benchpw";

/// Subsonic API: side by side with supysonic; 100k paging on a phone.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench subsonic --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// The music both servers index [default: ../shared/corpus/real].
    #[arg(long)]
    corpus: Option<std::path::PathBuf>,
    /// Requests of each kind to each server.
    #[arg(long, default_value_t = 30, value_parser = common::args::at_least_one())]
    rounds: usize,
    /// Tracks of the generated library for part 2 (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    tracks: usize,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("subsonic bench failed: {e}");
        std::process::exit(1);
    }
}

fn q(params: &str) -> String {
    format!("u={USER}&p={PASSWORD}&v=1.16.1&c=bench&f=json&{params}")
}

fn get_json(addr: &str, name: &str, params: &str) -> Res<(Value, Duration)> {
    let f = common::http(
        addr,
        &format!("/rest/{name}?{}", q(params)),
        None,
        false,
        true,
    )?;
    let v: Value = serde_json::from_slice(&f.body).ctx(format!("{name} from {addr}"))?;
    let r = v["subsonic-response"].clone();
    if r["status"] != "ok" {
        return Err(format!("{name} from {addr}: {r}").into());
    }
    Ok((r, f.end))
}

/// supysonic on `port`, indexing `music` (a config, a user, a scan).
fn supysonic(dir: &Path, music: &Path, port: u16) -> Res<Proc> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("supysonic.conf");
    std::fs::write(
        &conf,
        format!(
            "[base]\ndatabase_uri = sqlite:///{}/supysonic.db\n[webapp]\ncache_dir = {0}/cache\nmount_webui = no\n[daemon]\nrun_watcher = no\nsocket = {0}/supysonic.sock\n",
            dir.display()
        ),
    )?;
    let run = |args: &[&str]| -> Res<()> {
        let o = Command::new("supysonic-cli")
            .args(args)
            .current_dir(dir)
            .output()
            .ctx("running supysonic-cli (pip install supysonic waitress)")?;
        if !o.status.success() {
            return Err(format!(
                "supysonic-cli {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        Ok(())
    };
    run(&["user", "add", USER, "-p", PASSWORD])?;
    run(&["folder", "add", "music", music.to_str().ctx("music path")?])?;
    run(&["folder", "scan", "music"])?;
    let child = Command::new("supysonic-server")
        .args(["-S", "waitress", "-h", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()
        .ctx("starting supysonic-server")?;
    let p = Proc(child);
    let t = Instant::now();
    while get_json(&format!("127.0.0.1:{port}"), "ping.view", "").is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err("supysonic did not start".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(p)
}

fn account(data: &Path) -> Res<()> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunemesh"))
        .arg("--data-dir")
        .arg(data)
        .args(["user", "add", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()?;
    c.stdin
        .take()
        .ctx("stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    if !c.wait()?.success() {
        return Err("tunemesh user add failed".into());
    }
    Ok(())
}

fn api_addr(data: &Path) -> Res<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(data.join("api.json"))?)?;
    Ok(v["url"]
        .as_str()
        .ctx("api url")?
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string())
}

/// One row: (label, per-server request) timed alternately.
fn side_by_side(
    rounds: usize,
    label: &str,
    mut ours: impl FnMut() -> Res<Duration>,
    mut theirs: impl FnMut() -> Res<Duration>,
) -> Res<()> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(ours()?.as_secs_f64() * 1e3);
        b.push(theirs()?.as_secs_f64() * 1e3);
    }
    let (ma, mb) = (median(a), median(b));
    println!(
        "  {label:<28} tunemesh {ma:>7.2} ms   supysonic {mb:>7.2} ms   ratio {:>5.1}×",
        mb / ma
    );
    Ok(())
}

fn first_byte(addr: &str, id: &str, params: &str) -> Res<Duration> {
    let f = common::http(
        addr,
        &format!("/rest/stream?{}&id={id}", q(params)),
        None,
        false,
        false,
    )?;
    if f.status != 200
        || f.header("content-type")
            .is_some_and(|c| c.contains("json") || c.contains("xml"))
    {
        return Err(format!(
            "stream from {addr}: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body[..f.body.len().min(200)])
        )
        .into());
    }
    f.first_byte.ctx("no body")
}

fn part1(a: &Args, manifest: &Path, run_dir: &Path) -> Res<()> {
    let corpus = a
        .corpus
        .clone()
        .unwrap_or_else(|| manifest.join("../shared/corpus/real"));
    section(&format!(
        "part 1: side by side with supysonic on {}",
        corpus.display()
    ));
    let sup = match supysonic(&run_dir.join("supysonic"), &corpus, 5722) {
        Ok(p) => p,
        Err(e) => {
            println!("  SKIPPED: {e}");
            return Ok(());
        }
    };
    let data = run_dir.join("home");
    std::fs::create_dir_all(&data)?;
    account(&data)?;
    let _home = daemon(&data, &corpus)?;
    let n = walk_count(&corpus);
    wait_tracks(&data, n)?;
    let (ours, theirs) = (api_addr(&data)?, "127.0.0.1:5722".to_string());
    // Equivalent objects on both: the first album by name, a word of a
    // title, a track of that album.
    let pick = |addr: &str| -> Res<(String, String)> {
        let (l, _) = get_json(addr, "getAlbumList2", "type=alphabeticalByName&size=50")?;
        let album = l["albumList2"]["album"]
            .as_array()
            .ctx("albums")?
            .iter()
            .find(|x| x["name"] != "[non-album tracks]")
            .ctx("an album")?
            .clone();
        let id = album["id"].as_str().ctx("id")?.to_string();
        let (al, _) = get_json(addr, "getAlbum", &format!("id={id}"))?;
        let song = al["album"]["song"][0]["id"]
            .as_str()
            .ctx("song id")?
            .to_string();
        Ok((id, song))
    };
    let ((oa, os), (ta, ts)) = (pick(&ours)?, pick(&theirs)?);
    let r = a.rounds;
    let t = |addr: &str, name: &str, p: &str| -> Res<Duration> { Ok(get_json(addr, name, p)?.1) };
    side_by_side(
        r,
        "getAlbumList2 (50, by name)",
        || t(&ours, "getAlbumList2", "type=alphabeticalByName&size=50"),
        || {
            t(
                &theirs,
                "getAlbumList2.view",
                "type=alphabeticalByName&size=50",
            )
        },
    )?;
    side_by_side(
        r,
        "search3 \"the\"",
        || t(&ours, "search3", "query=the"),
        || t(&theirs, "search3.view", "query=the"),
    )?;
    side_by_side(
        r,
        "getAlbum",
        || t(&ours, "getAlbum", &format!("id={oa}")),
        || t(&theirs, "getAlbum.view", &format!("id={ta}")),
    )?;
    side_by_side(
        r,
        "stream first byte (raw)",
        || first_byte(&ours, &os, "format=raw"),
        || first_byte(&theirs, &ts, "format=raw"),
    )?;
    let mut opus = Vec::new();
    for _ in 0..r {
        opus.push(first_byte(&ours, &os, "maxBitRate=128")?.as_secs_f64() * 1e3);
    }
    println!(
        "  stream first byte (Opus 128, ours; cache warm after the first) p50 {:.2} ms",
        median(opus)
    );
    drop(sup);
    Ok(())
}

fn walk_count(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_count(&p);
        } else if p
            .extension()
            .is_some_and(|x| x == "mp3" || x == "ogg" || x == "flac" || x == "opus" || x == "m4a")
        {
            n += 1;
        }
    }
    n
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn part2(a: &Args, manifest: &Path, target: &Path, run_dir: &Path) -> Res<()> {
    section(&format!("part 2: a phone that synced {} tracks", a.tracks));
    let libs = target.join("bench-libs");
    let (lib, _) = common::ensure_mesh_library(&libs, &manifest.join(TEMPLATE), a.tracks, SEED)?;
    let home_data = run_dir.join("big-home");
    let _home = daemon(&home_data, &lib)?;
    wait_tracks(&home_data, a.tracks as u64)?;
    let phone_data = run_dir.join("big-phone");
    std::fs::create_dir_all(&phone_data)?;
    account(&phone_data)?;
    let phone = Proc(
        Command::new(env!("CARGO_BIN_EXE_tunemesh"))
            .arg("--data-dir")
            .arg(&phone_data)
            .args([
                "serve",
                "--role",
                "phone",
                "--api",
                "127.0.0.1:0",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(phone_data.with_extension("log"))?)
            .spawn()?,
    );
    let t = Instant::now();
    while !phone_data.join("api.json").exists() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("the phone did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ticket = cli(&home_data, &["invite", "--quiet"])?;
    cli(&phone_data, &["join", ticket.trim()])?;
    let addr = api_addr(&phone_data)?;
    let t = Instant::now();
    loop {
        let (v, _) = get_json(&addr, "getScanStatus", "")?;
        if v["scanStatus"]["count"].as_u64() == Some(a.tracks as u64) {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            return Err(format!("the phone did not sync: {v}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("  synced     {:.1} s", t.elapsed().as_secs_f64());
    let pid = phone.0.id();
    let before = rss_kib(pid, "VmRSS:");
    let t = Instant::now();
    let (mut offset, mut songs, mut pages) = (0usize, 0usize, 0usize);
    loop {
        let (v, _) = get_json(
            &addr,
            "search3",
            &format!("query=&artistCount=0&albumCount=0&songCount=500&songOffset={offset}"),
        )?;
        let n = v["searchResult3"]["song"].as_array().map_or(0, Vec::len);
        songs += n;
        pages += 1;
        if n < 500 {
            break;
        }
        offset += 500;
    }
    let took = t.elapsed();
    println!(
        "  search3 \"\" ×500   {songs} songs in {pages} pages: {:.2} s ({:.1} ms a page); phone RSS {} → {} MiB (peak {} MiB)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / pages as f64,
        before / 1024,
        rss_kib(pid, "VmRSS:") / 1024,
        rss_kib(pid, "VmHWM:") / 1024
    );
    let mut ms = Vec::new();
    for i in 0..200 {
        let off = (i * 37) % (a.tracks / 10).max(1);
        ms.push(
            get_json(
                &addr,
                "getAlbumList2",
                &format!("type=alphabeticalByArtist&size=50&offset={off}"),
            )?
            .1
            .as_secs_f64()
                * 1e3,
        );
    }
    ms.sort_by(|x, y| x.total_cmp(y));
    println!(
        "  getAlbumList2 (50)  p50 {:.2} ms, p99 {:.2} ms (200 requests)",
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100]
    );
    Ok(())
}

fn run() -> Res<()> {
    let a: Args = common::args::parse();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (target, _work, run_dir) = common::work_dirs("bench-subsonic")?;
    println!("tunemesh Subsonic API benchmark ({})", common::loadavg());
    println!(
        "  command    cargo bench --bench subsonic -- --rounds {} --tracks {}",
        a.rounds, a.tracks
    );
    part1(&a, manifest, &run_dir)?;
    if a.tracks > 0 {
        part2(&a, manifest, &target, &run_dir)?;
    }
    Ok(())
}
