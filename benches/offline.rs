//! Offline mirror benchmark (issue 16).
//!
//! 1. Tracks per GiB: a home serving the corpus (`real/` and `formats/`),
//!    a phone pinning the whole library at the default 96 kb/s; the
//!    originals' bytes against the copies' bytes, per GiB and per hour of
//!    music.
//! 2. A 200-track pin on loopback (200 retagged copies of the corpus's
//!    Ogg Vorbis tracks, real music): wall time from the pin to the last
//!    copy, the home's CPU (cores busy), tracks per minute; and a live
//!    stream's first audio on the phone before and during the batch (the
//!    batch encodes at nice 10 and must not starve it).
//! 3. A second phone pins the same 200 tracks (now all encoded at the home)
//!    and is killed (SIGKILL) at `--cuts` pseudo-random moments; bytes the
//!    home sent beyond the bytes stored, against the total.
//!
//! 4. The same pin through a 1 Mbit/s link ("3G": `tc tbf` both ways on a
//!    veth pair to a home in its own network namespace; root only, says
//!    SKIPPED otherwise), while a listener plays a queue of tracks the pin
//!    would fetch last, each for its real duration: minutes to done, and
//!    at every turn of the queue whether the next track's copy was already
//!    here (playback never waited) and its first audio.

mod common;

use common::{cli, daemon, section, Ctx, Proc, Res};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Offline mirror: tracks per GiB, a 200-track pin, cuts.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench offline --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// The corpus [default: ../shared/corpus].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Tracks of the big pin.
    #[arg(long, default_value_t = 200, value_parser = common::args::at_least_one())]
    tracks: usize,
    /// Kills of the second phone during its download.
    #[arg(long, default_value_t = 10)]
    cuts: usize,
    /// Run part 4 (the 1 Mbit/s link) alone.
    #[arg(long)]
    slow_link_only: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("offline bench failed: {e}");
        std::process::exit(1);
    }
}

fn phone(data: &Path) -> Res<Proc> {
    phone_on(data, "/ip4/127.0.0.1/tcp/0")
}

fn phone_on(data: &Path, listen: &str) -> Res<Proc> {
    std::fs::create_dir_all(data)?;
    let _ = std::fs::remove_file(data.join("api.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_tunemesh"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--role",
            "phone",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ])
        .args(["--listen", listen])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .ctx("starting a phone")?;
    let t = Instant::now();
    while !data.join("api.json").exists() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("the phone did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Proc(child))
}

fn json(data: &Path, args: &[&str]) -> Res<Value> {
    Ok(serde_json::from_str(&cli(data, args)?)?)
}

fn pair(home: &Path, phone: &Path) -> Res<()> {
    let ticket = cli(home, &["invite", "--quiet"])?;
    cli(phone, &["join", ticket.trim()])?;
    Ok(())
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> Res<bool>) -> Res<()> {
    let t = Instant::now();
    while !f()? {
        if t.elapsed() > Duration::from_secs(secs) {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The phone's merged library (every track, with sizes and durations).
fn tracks(data: &Path) -> Res<Vec<Value>> {
    let v = json(data, &["ls", "--all", "--json"])?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// CPU seconds (user + system) of a process so far.
fn cpu_secs(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').ctx("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn api(data: &Path) -> Res<(String, String)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(data.join("api.json"))?)?;
    let url = v["url"].as_str().ctx("api url")?;
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    Ok((
        addr.to_string(),
        v["token"].as_str().ctx("token")?.to_string(),
    ))
}

fn gib(b: f64) -> f64 {
    b / (1u64 << 30) as f64
}

fn run() -> Res<()> {
    let args: Args = common::args::parse();
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let (target, _work, run_dir) = common::work_dirs("offline-bench")?;
    println!("tunemesh offline mirror bench ({})", common::loadavg());
    let libs = target.join("bench-libs");
    if !args.slow_link_only {
        per_gib(&corpus, &run_dir)?;
        let lib = ensure_retagged(&corpus, &libs, args.tracks)?;
        big_pin(&lib, &run_dir, args.tracks, args.cuts)?;
    }
    let lib = ensure_retagged(&corpus, &libs, args.tracks)?;
    slow_link(&lib, &run_dir, args.tracks)
}

/// Part 1: the corpus pinned whole at the default bitrate.
fn per_gib(corpus: &Path, run_dir: &Path) -> Res<()> {
    section("1. tracks per GiB: the corpus (real/ + formats/) at the default 96 kb/s");
    let lib = run_dir.join("corpus");
    std::fs::create_dir_all(&lib)?;
    for sub in ["real", "formats"] {
        let ok = Command::new("cp")
            .arg("-r")
            .arg(corpus.join(sub))
            .arg(lib.join(sub))
            .status()?;
        if !ok.success() {
            return Err(format!("cannot copy {}", corpus.join(sub).display()).into());
        }
    }
    let (h, p) = (run_dir.join("c-home"), run_dir.join("c-phone"));
    let _home = daemon(&h, &lib)?;
    common::wait_tracks(&h, count_audio(&lib))?;
    let _phone = phone(&p)?;
    pair(&h, &p)?;
    let n = count_audio(&lib);
    wait("the phone's library", 60, || {
        Ok(tracks(&p)?.len() as u64 == n)
    })?;
    let t0 = Instant::now();
    cli(&p, &["offline", "budget", "100GiB"])?;
    cli(&p, &["offline", "add", "library"])?;
    wait("the corpus offline", 600, || {
        let s = json(&p, &["offline", "status", "--json"])?;
        Ok(s["done"] == true && s["tracks_done"].as_u64() == Some(n))
    })?;
    let took = t0.elapsed();
    let all = tracks(&p)?;
    let orig: f64 = all.iter().filter_map(|t| t["size"].as_f64()).sum();
    let hours: f64 = all
        .iter()
        .filter_map(|t| t["duration_ms"].as_f64())
        .sum::<f64>()
        / 3.6e6;
    let s = json(&p, &["offline", "status", "--json"])?;
    let copies = s["used_bytes"].as_f64().ctx("used_bytes")?;
    let nf = n as f64;
    println!("  tracks                   {n} ({hours:.2} h of music), pinned in {took:.1?}");
    println!(
        "  originals                {:.1} MiB: {:.0} tracks per GiB, {:.1} h of music per GiB",
        orig / 1048576.0,
        nf / gib(orig),
        hours / gib(orig)
    );
    println!(
        "  copies (96 kb/s)         {:.1} MiB: {:.0} tracks per GiB, {:.1} h of music per GiB",
        copies / 1048576.0,
        nf / gib(copies),
        hours / gib(copies)
    );
    println!("  more music per GiB       {:.2}×", orig / copies);
    Ok(())
}

fn count_audio(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_audio(&p);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ["mp3", "ogg", "opus", "flac", "wav", "aiff", "m4a"].contains(&x))
        {
            n += 1;
        }
    }
    n
}

/// `n` retagged copies of the corpus's Ogg Vorbis tracks (distinct bytes,
/// real music), made once with ffmpeg and kept.
fn ensure_retagged(corpus: &Path, libs: &Path, n: usize) -> Res<PathBuf> {
    let dir = libs.join(format!("offline-{n}"));
    let marker = libs.join(format!("offline-{n}.complete"));
    if marker.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let album = dir.join("Bench/Two Hundred");
    std::fs::create_dir_all(&album)?;
    let mut src: Vec<PathBuf> = std::fs::read_dir(corpus.join("real/HyperRogue"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    src.sort();
    print!(
        "  library    making {n} retagged Vorbis tracks in {} ... ",
        dir.display()
    );
    common::flush();
    for i in 0..n {
        let out = album.join(format!("{i:03} Track.ogg"));
        let ok = Command::new("ffmpeg")
            .args(["-v", "fatal", "-y", "-i"])
            .arg(&src[i % src.len()])
            .args(["-c", "copy", "-metadata"])
            .arg(format!("title=Track {i:03}"))
            .args([
                "-metadata",
                "album=Two Hundred",
                "-metadata",
                "artist=Bench",
            ])
            .arg("-metadata")
            .arg(format!("track={}", i + 1))
            .arg(&out)
            .status()
            .ctx("running ffmpeg")?;
        if !ok.success() {
            return Err("ffmpeg failed".into());
        }
    }
    println!("done");
    std::fs::write(&marker, "ok")?;
    Ok(dir)
}

/// First audio (three Ogg pages) of a track through the phone, seconds.
fn first_audio(phone: &Path, id: &str) -> Res<f64> {
    first_audio_at(phone, id, 160)
}

/// First audio of a track at `kbps` through the phone, seconds.
fn first_audio_at(phone: &Path, id: &str, kbps: u32) -> Res<f64> {
    let (addr, token) = api(phone)?;
    let auth = format!("Bearer {token}");
    let f = common::http(
        &addr,
        &format!("/stream/{id}?bitrate={kbps}"),
        Some(&auth),
        true,
        false,
    )?;
    if f.status != 200 {
        return Err(format!("stream answered {}", f.status).into());
    }
    Ok(f.first_audio.ctx("no audio")?.as_secs_f64())
}

/// Parts 2 and 3.
fn big_pin(lib: &Path, run_dir: &Path, n: usize, cuts: usize) -> Res<()> {
    section(&format!(
        "2. a {n}-track pin on loopback (real music, Vorbis → Opus 96 kb/s)"
    ));
    let (h, p) = (run_dir.join("b-home"), run_dir.join("b-phone"));
    let home = daemon(&h, lib)?;
    common::wait_tracks(&h, n as u64)?;
    let phone1 = phone(&p)?;
    pair(&h, &p)?;
    wait("the phone's library", 60, || Ok(tracks(&p)?.len() == n))?;
    let all = tracks(&p)?;
    let hours: f64 = all
        .iter()
        .filter_map(|t| t["duration_ms"].as_f64())
        .sum::<f64>()
        / 3.6e6;
    let ids: Vec<String> = all
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    // A live stream before the batch (not cached: 160 kb/s is nobody's copy).
    let idle: Vec<f64> = (0..3)
        .map(|i| first_audio(&p, &ids[i]))
        .collect::<Res<_>>()?;
    let pid = home.0.id();
    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    cli(&p, &["offline", "budget", "100GiB"])?;
    // The whole library: the retagged copies keep their sources' other
    // tags, so they are several albums.
    cli(&p, &["offline", "add", "library"])?;
    let mut busy = vec![];
    let mut k = 3;
    wait("the 200 tracks offline", 1800, || {
        let s = json(&p, &["offline", "status", "--json"])?;
        if k < 8 && s["tracks_done"].as_u64().unwrap_or(0) > 5 {
            busy.push(first_audio(&p, &ids[n - 1 - k])?);
            k += 1;
        }
        Ok(s["done"] == true && s["tracks_done"].as_u64() == Some(n as u64))
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu0;
    let s = json(&p, &["offline", "status", "--json"])?;
    println!(
        "  tracks                   {n} ({hours:.2} h of music), {:.1} MiB of copies",
        s["used_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    println!(
        "  wall time                {wall:.1} s ({:.0} tracks per minute)",
        n as f64 / wall * 60.0
    );
    println!(
        "  home CPU                 {cpu:.1} s: {:.2} cores busy of {}",
        cpu / wall,
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!(
        "  live stream first audio  idle {} ms; during the batch {} ms",
        ms(&idle),
        ms(&busy)
    );

    section(&format!(
        "3. the same pin on a second phone, killed {cuts} times mid-download"
    ));
    // The first phone holds every copy too: gone, so the home alone
    // serves (and counts) the bytes.
    drop(phone1);
    let served0 = json(&h, &["offline", "status", "--json"])?["bytes_served"]
        .as_u64()
        .unwrap_or(0);
    let p2 = run_dir.join("b-phone2");
    let mut ph = Some(phone(&p2)?);
    pair(&h, &p2)?;
    wait("the second phone's library", 60, || {
        Ok(tracks(&p2)?.len() == n)
    })?;
    cli(&p2, &["offline", "budget", "100GiB"])?;
    cli(&p2, &["offline", "add", "library"])?;
    let mut seed = 0x2545_f491_u32;
    let t1 = Instant::now();
    for _ in 0..cuts {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        std::thread::sleep(Duration::from_millis(200 + u64::from(seed % 600)));
        drop(ph.take()); // SIGKILL, reaped
        ph = Some(phone(&p2)?);
    }
    wait("the second phone's copies", 900, || {
        let s = json(&p2, &["offline", "status", "--json"])?;
        Ok(s["done"] == true && s["tracks_done"].as_u64() == Some(n as u64))
    })?;
    let took = t1.elapsed().as_secs_f64();
    let served = json(&h, &["offline", "status", "--json"])?["bytes_served"]
        .as_u64()
        .unwrap_or(0)
        - served0;
    let stored = json(&p2, &["offline", "status", "--json"])?["used_bytes"]
        .as_u64()
        .unwrap_or(0);
    let twice = served.saturating_sub(stored);
    println!("  stored                   {stored} bytes in {took:.1} s with {cuts} kills");
    println!("  sent by the home         {served} bytes");
    println!(
        "  fetched twice            {twice} bytes ({:.3}% of the total; floor: under 1%)",
        twice as f64 * 100.0 / stored.max(1) as f64
    );
    Ok(())
}

fn ms(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s: Vec<String> = v.iter().map(|x| format!("{:.0}", x * 1000.0)).collect();
    s.sort();
    s.join("/")
}

// ------------------------------------------------------ part 4: 1 Mbit/s

/// A home in its own network namespace, joined to this one by a veth pair
/// shaped to 1 Mbit/s each way (`tc tbf`, as the NAT lab's "3G"); the phone
/// runs here, so its API stays on this namespace's loopback. The namespace
/// (and with it both veth ends) goes on drop.
struct SlowLink {
    ns: String,
}

/// The home's and the phone's ends of the link.
const HOME_IP: &str = "10.89.7.1";
const PHONE_IP: &str = "10.89.7.2";

impl SlowLink {
    fn new() -> Result<SlowLink, String> {
        // SAFETY: reads the process's effective uid.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let tag = std::process::id();
        let link = SlowLink {
            ns: format!("tmob{tag}"),
        };
        let (ns, veth) = (link.ns.as_str(), format!("tmob{tag}"));
        let shape = |dev: &str| {
            vec![
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                "latency", "400ms",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        };
        let steps: Vec<(&str, Vec<String>)> = vec![
            ("ip", sv(&["netns", "add", ns])),
            ("ip", sv(&["-n", ns, "link", "set", "lo", "up"])),
            (
                "ip",
                sv(&[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ]),
            ),
            (
                "ip",
                sv(&["addr", "add", &format!("{PHONE_IP}/24"), "dev", &veth]),
            ),
            ("ip", sv(&["link", "set", &veth, "up"])),
            (
                "ip",
                sv(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{HOME_IP}/24"),
                    "dev",
                    "eth0",
                ]),
            ),
            ("ip", sv(&["-n", ns, "link", "set", "eth0", "up"])),
            ("tc", shape(&veth)),
            (
                "ip",
                [sv(&["netns", "exec", ns, "tc"]), shape("eth0")].concat(),
            ),
        ];
        for (cmd, args) in steps {
            let o = Command::new(cmd)
                .args(&args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if !o.status.success() {
                return Err(format!(
                    "{cmd} {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        Ok(link)
    }

    /// `tunemesh --data-dir DATA` inside the home's namespace.
    fn tm(&self, data: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_tunemesh")])
            .arg("--data-dir")
            .arg(data);
        c
    }

    fn cli(&self, data: &Path, args: &[&str]) -> Res<String> {
        let o = self.tm(data).args(args).output().ctx("running tunemesh")?;
        if !o.status.success() {
            let e = String::from_utf8_lossy(&o.stderr);
            return Err(format!("[home] tunemesh {args:?}: {e}").into());
        }
        Ok(String::from_utf8(o.stdout)?)
    }

    /// The home daemon, listening on its end of the link.
    fn home(&self, data: &Path, lib: &Path) -> Res<Proc> {
        std::fs::create_dir_all(data)?;
        let log = std::fs::File::create(data.with_extension("log"))?;
        let child = self
            .tm(data)
            .arg("serve")
            .arg(lib)
            .args(["--api", "127.0.0.1:0", "--no-mdns", "--no-upnp"])
            .args(["--listen", &format!("/ip4/{HOME_IP}/tcp/0")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .ctx("starting the home")?;
        let home = Proc(child);
        wait("the home's API", 60, || Ok(data.join("api.json").exists()))?;
        Ok(home)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// One turn of the listener's queue.
struct Turn {
    /// The copy was on the phone when the track's turn came.
    ready: bool,
    /// First audio of the track then, seconds.
    first: f64,
}

/// Part 4.
fn slow_link(lib: &Path, run_dir: &Path, n: usize) -> Res<()> {
    section(&format!(
        "4. the same {n}-track pin through a 1 Mbit/s link (\"3G\"), a queue playing"
    ));
    let link = match SlowLink::new() {
        Ok(l) => l,
        Err(why) => {
            println!("  *** SKIPPED part 4: {why}: it needs root and iproute2 (network namespaces, tc tbf) ***");
            return Ok(());
        }
    };
    let (h, p) = (run_dir.join("s-home"), run_dir.join("s-phone"));
    let home = link.home(&h, lib)?;
    wait("the home's scan", 1800, || {
        let st: Value = serde_json::from_str(&link.cli(&h, &["status", "--json"])?)?;
        Ok(st["tracks"].as_u64() == Some(n as u64))
    })?;
    let phone = phone_on(&p, &format!("/ip4/{PHONE_IP}/tcp/0"))?;
    let ticket = link.cli(&h, &["invite", "--quiet"])?;
    cli(&p, &["join", ticket.trim()])?;
    wait("the phone's library", 300, || Ok(tracks(&p)?.len() == n))?;
    let all = tracks(&p)?;
    // The queue: the 40 tracks the pin would fetch last, last first.
    let queue: Vec<(String, f64)> = all
        .iter()
        .rev()
        .take(40)
        .filter_map(|t| Some((t["id"].as_str()?.to_string(), t["duration_ms"].as_f64()?)))
        .collect();
    let set_queue = |current: usize| -> Res<()> {
        let (addr, token) = api(&p)?;
        let body = serde_json::json!({
            "ids": queue.iter().map(|q| q.0.clone()).collect::<Vec<_>>(),
            "current": current,
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .put(format!("http://{addr}/api/queue"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(body)?;
        match r.status().as_u16() {
            204 => Ok(()),
            s => Err(format!("PUT /api/queue answered {s}").into()),
        }
    };
    let offline_here = |id: &str| -> Res<bool> {
        Ok(tracks(&p)?
            .iter()
            .any(|t| t["id"] == id && t["offline"] == true))
    };
    cli(&p, &["offline", "budget", "100GiB"])?;
    set_queue(0)?;
    let t0 = Instant::now();
    cli(&p, &["offline", "add", "library"])?;
    // The first track has no copy yet: it streams over the link.
    let live = first_audio_at(&p, &queue[0].0, 96)?;
    let mut at = 0;
    let mut next_turn = Instant::now() + Duration::from_secs_f64(queue[0].1 / 1000.0);
    let mut turns: Vec<Turn> = vec![];
    let mut last = Instant::now();
    wait("the pin over 1 Mbit/s", 3600, || {
        if Instant::now() >= next_turn && at + 1 < queue.len() {
            at += 1;
            let ready = offline_here(&queue[at].0)?;
            let first = first_audio_at(&p, &queue[at].0, 96)?;
            set_queue(at)?;
            next_turn = Instant::now() + Duration::from_secs_f64(queue[at].1 / 1000.0);
            turns.push(Turn { ready, first });
        }
        let s = json(&p, &["offline", "status", "--json"])?;
        if last.elapsed() > Duration::from_secs(60) {
            last = Instant::now();
            println!(
                "  ... {:.0} min: {} of {n} here, queue turn {at}",
                t0.elapsed().as_secs_f64() / 60.0,
                s["tracks_done"]
            );
            common::flush();
        }
        Ok(s["done"] == true && s["tracks_done"].as_u64() == Some(n as u64))
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let used = json(&p, &["offline", "status", "--json"])?["used_bytes"]
        .as_f64()
        .unwrap_or(0.0);
    drop((phone, home));
    println!(
        "  wall time                {:.1} min for {:.1} MiB: {:.2} Mbit/s of copies through the 1 Mbit/s link",
        wall / 60.0,
        used / 1048576.0,
        used * 8.0 / wall / 1e6
    );
    let ready = turns.iter().filter(|t| t.ready).count();
    let firsts: Vec<f64> = turns.iter().map(|t| t.first).collect();
    println!(
        "  queue                    first track streamed live: first audio {:.0} ms",
        live * 1000.0
    );
    println!(
        "  queue turns              {} during the pin; the next copy was here at {ready} of them (never waited: {})",
        turns.len(),
        if ready == turns.len() { "yes" } else { "no" }
    );
    println!(
        "  first audio at a turn    median {:.0} ms, worst {:.0} ms",
        common::median(firsts.clone()) * 1000.0,
        firsts.iter().copied().fold(0.0, f64::max) * 1000.0
    );
    Ok(())
}
