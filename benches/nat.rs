//! NAT benchmark driver (no criterion): the NAT lab of `tests/nat_lab`
//! (network namespaces, two NAT routers, a relay on the "internet"), with
//! real release `tunemesh` daemons in it.
//!
//!     sudo cargo bench --bench nat                  (needs root; skips loudly otherwise)
//!     cargo bench --bench nat -- --trials 3 --pairs masq-masq,sym-sym
//!
//! For each pair of NATs (home × phone; `masq` = MASQUERADE, port-preserving;
//! `fixed` = SNAT to a port range, port-changing but endpoint-independent;
//! `sym` = MASQUERADE --random-fully, symmetric) one lab: a relay (`tunemesh
//! relay --mesh HOME`) at 198.51.100.1, a home serving a generated music
//! folder with `--relay` at it, and phones joined with `invite`/`join`.
//!
//! Part 1, hole punching. A trial is one start of a phone daemon (same data
//! dir, so the same device, a member already) listening on a port no earlier
//! start of that lab used, so every NAT mapping it gets is new: what an app
//! start or a network change looks like to the routers. Timed from the spawn
//! of the phone process: the first relayed and the first direct connection
//! to the home, from the phone's log ("connected peer=HOME addr=...", µs
//! timestamps), and the first moment `/api/peers` (polled every 20 ms from
//! inside the phone's namespace) shows the home's path as "relayed", then
//! "direct". A trial succeeds when the path turns direct; it fails when the
//! link stays relayed for 15 s after the relayed connection came up (or
//! nothing connects within 30 s). A failing trial waits its 15 s out, so
//! trials overlap: a pair has `--parallel` phones (each joined once), and the
//! next trial starts, on a free phone, as soon as every running trial is 3 s
//! old; a trial that succeeds at once lets the next start at once, so two
//! phones never connect at the same moment. A phone is stopped (SIGTERM)
//! when its trial ends.
//!
//! Part 2, time to first audio at the phone (`GET /stream/ID?bitrate=96`, a
//! fresh TCP connection to the phone's API, timed from before the connect to
//! the first body byte and to the end of the third Ogg page: the first audio
//! page). Cold: a track the home has not transcoded yet (stream copies of
//! one FLAC with their own comment tag: same audio, other bytes, other id);
//! warm: the same request again (the home's transcode cache).
//!
//! Part 3, CPU per MB: `GET /stream/ID?bitrate=original` of a generated WAV
//! (`--mb`, default 48 MB) at the phone, read to its end; utime + stime
//! (`/proc/PID/stat`) of the home, phone and relay processes before and
//! after, per MB (10^6 bytes) of body; and the throughput.
//!
//! Parts 2 and 3 run, after part 1, on one punchable pair (direct after the
//! upgrade: `masq-masq` when selected, else the first punchable pair) and
//! one pair with a symmetric NAT (relayed: `masq-sym` when selected, else the
//! first such pair); `--stream-all` runs them on every pair. The path is
//! checked before and after every request.
//!
//! Daemons log at `RUST_LOG=info,libp2p_dcutr=debug` (`NAT_BENCH_LOG=...`
//! replaces it); all logs are kept under `target/bench-nat/run/<pair>/`.

mod common;

/// The daemons' RUST_LOG (a macro so `--help` can name it in a literal).
macro_rules! default_log {
    () => {
        "info,libp2p_dcutr=debug"
    };
}

use common::{cpu_model, first_line, flush, http, loadavg, median, section, Ctx, Fetch, Res};
use nat_lab::{
    listen_args, relay_args, strings, Lab, Nat, Tools, HOME, HROUTER_WAN, INET, PHONE, RELAY_IP,
    RELAY_PORT,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");
const KBPS: u32 = 96;
/// A trial fails when the link is still relayed this long after the
/// relayed connection came up.
const PUNCH_LIMIT: Duration = Duration::from_secs(15);
/// ... or when nothing connects within this from the spawn.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// A trial starts only when every running one is this old.
const STAGGER: Duration = Duration::from_secs(3);
const HOME_PORT: u16 = 4001;
/// Phone ports: this, +1, +2, ... (one per start within a lab).
const PHONE_PORT_BASE: u16 = 20001;
const LOG_ENV: &str = default_log!();

/// The daemons' RUST_LOG: `NAT_BENCH_LOG` when set (e.g.
/// `info,tunemesh=debug,libp2p_swarm=debug` to see every dial), else LOG_ENV.
fn log_env() -> String {
    std::env::var("NAT_BENCH_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| LOG_ENV.to_string())
}
/// The FLAC the cold/warm tracks are stream copies of (relative to
/// `<package>/../shared/corpus`).
const SHORT_SRC: &str = "formats/caves_16_44.flac";

fn main() {
    if let Err(e) = run() {
        eprintln!("\nbench failed: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- arguments

/// NAT benchmark: hole punching per NAT pair, time to first audio, CPU per
/// MB relayed and direct. Needs root.
#[derive(clap::Parser)]
#[command(
    bin_name = "cargo bench --bench nat --",
    after_help = concat!(
        "NATs: masq (MASQUERADE), fixed (SNAT to a port range), sym (MASQUERADE --random-fully)\n",
        "NAT_BENCH_LOG=... replaces the daemons' RUST_LOG (",
        default_log!(),
        ")"
    )
)]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Hole-punch trials per pair.
    #[arg(long, default_value_t = 20, value_parser = common::args::at_least_one())]
    trials: usize,
    /// HOME-PHONE pairs, comma-separated, e.g. masq-masq,sym-sym [default: all 9].
    #[arg(long = "pairs", value_name = "HOME-PHONE,...", value_parser = parse_pairs)]
    pairs_given: Option<Pairs>,
    /// The pairs to run: `--pairs`, or all of them.
    #[arg(skip)]
    pairs: Vec<(Nat, Nat)>,
    /// Cold time-to-first-audio samples per stream pair.
    #[arg(long, default_value_t = 5, value_parser = common::args::one_to(50))]
    ttfa: usize,
    /// Size of the big WAV, MB.
    #[arg(long, default_value_t = 48, value_parser = common::args::one_to(1000))]
    mb: usize,
    /// Rounds of the CPU-per-MB measurement.
    #[arg(long, default_value_t = 5, value_parser = common::args::at_least_one())]
    cpu_rounds: usize,
    /// Phones per pair (trials overlap while one waits out its 15 s).
    #[arg(long, default_value_t = 6, value_parser = common::args::one_to(10))]
    parallel: usize,
    /// Measure streams on every pair, not only the representative ones.
    #[arg(long)]
    stream_all: bool,
}

/// The (home NAT, phone NAT) pairs `--pairs` names, each once, in order.
#[derive(Clone, Debug)]
struct Pairs(Vec<(Nat, Nat)>);

fn parse_pairs(v: &str) -> Result<Pairs, String> {
    let mut pairs = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let pair = p
            .split_once('-')
            .and_then(|(h, ph)| Some((parse_nat(h)?, parse_nat(ph)?)))
            .ok_or_else(|| format!("{p:?} is not HOME-PHONE with masq, fixed or sym"))?;
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    if pairs.is_empty() {
        return Err("no pair given".into());
    }
    Ok(Pairs(pairs))
}

/// The options, with the pairs resolved.
fn parse_args() -> Args {
    let mut args: Args = common::args::parse();
    args.pairs = args.pairs_given.take().map_or_else(all_pairs, |p| p.0);
    args
}

fn nat_short(n: Nat) -> &'static str {
    match n {
        Nat::Masquerade => "masq",
        Nat::FixedPort => "fixed",
        Nat::Symmetric => "sym",
    }
}

fn parse_nat(s: &str) -> Option<Nat> {
    match s {
        "masq" | "masquerade" | "m" => Some(Nat::Masquerade),
        "fixed" | "fixedport" | "fixed_port" | "f" => Some(Nat::FixedPort),
        "sym" | "symmetric" | "s" => Some(Nat::Symmetric),
        _ => None,
    }
}

fn pair_name(p: (Nat, Nat)) -> String {
    format!("{}-{}", nat_short(p.0), nat_short(p.1))
}

fn all_pairs() -> Vec<(Nat, Nat)> {
    Nat::ALL
        .iter()
        .flat_map(|&h| Nat::ALL.iter().map(move |&p| (h, p)))
        .collect()
}

// ---------------------------------------------------------------- main

fn run() -> Res<()> {
    let args = parse_args();
    let t_start = Instant::now();
    let command = format!(
        "cargo bench --bench nat -- --trials {} --pairs {} --ttfa {} --mb {} --cpu-rounds {} --parallel {}{}",
        args.trials,
        args.pairs
            .iter()
            .map(|p| pair_name(*p))
            .collect::<Vec<_>>()
            .join(","),
        args.ttfa,
        args.mb,
        args.cpu_rounds,
        args.parallel,
        if args.stream_all { " --stream-all" } else { "" }
    );
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED the NAT benchmark: {why} (it builds network namespaces, \
                 NAT routers with iptables and tc: run it as root) ***\n"
            );
            println!("tunemesh NAT benchmark: SKIPPED ({why})");
            return Ok(());
        }
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, work, run_dir) = common::work_dirs("bench-nat")?;
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let argv: Vec<String> = std::env::args().collect();

    println!("tunemesh NAT benchmark");
    println!("  command    {command}");
    println!("  argv       {}", argv.join(" "));
    println!("  binary     {BIN}");
    println!(
        "  machine    nproc={nproc}, CPU {}, load avg {}",
        cpu_model(),
        loadavg()
    );
    println!(
        "  tools      {} / {} / {}",
        tools.ip.display(),
        tools.iptables.display(),
        tools
            .tc
            .as_ref()
            .map_or("no tc".to_string(), |t| t.display().to_string())
    );
    println!("  work dir   {}", work.display());
    println!(
        "  lab        relay {RELAY_IP}:{RELAY_PORT} (ns inet); home 10.1.0.2:{HOME_PORT} behind {HROUTER_WAN}; \
         phone 10.2.0.2:{PHONE_PORT_BASE}+ behind 198.51.100.20"
    );
    println!(
        "  daemons    RUST_LOG={} tunemesh -v serve ... --no-mdns --no-upnp --api 127.0.0.1:0",
        log_env()
    );

    let stream_pairs = stream_pairs(&args);
    let media = prepare_media(&args, manifest, &work)?;

    let mut results: Vec<PairResult> = Vec::new();
    for (i, &pair) in args.pairs.iter().enumerate() {
        section(&format!(
            "pair {}/{}: home {} × phone {}",
            i + 1,
            args.pairs.len(),
            pair.0.name(),
            pair.1.name()
        ));
        let t0 = Instant::now();
        let dir = run_dir.join(pair_name(pair));
        let streams = stream_pairs.contains(&pair);
        // The lab panics on a setup failure (its message carries the
        // daemons' logs); one pair's failure does not end the bench.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_pair(pair, &args, &media, &dir, streams)
        }));
        let r = match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => PairResult::failed(pair, e.to_string()),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                PairResult::failed(pair, first_lines(&msg, 3))
            }
        };
        if let Some(e) = &r.error {
            println!("  FAILED     {e}");
        }
        println!(
            "  pair done in {:.0} s (load avg {}); logs in {}",
            t0.elapsed().as_secs_f64(),
            loadavg(),
            dir.display()
        );
        results.push(r);
    }
    print_summary(
        &args,
        &command,
        &results,
        media.short_secs,
        t_start.elapsed(),
    );
    Ok(())
}

/// Which selected pairs get parts 2 and 3.
fn stream_pairs(args: &Args) -> Vec<(Nat, Nat)> {
    if args.stream_all {
        return args.pairs.clone();
    }
    let mut out = Vec::new();
    let pick = |want: (Nat, Nat), punchable: bool| {
        if args.pairs.contains(&want) {
            Some(want)
        } else {
            args.pairs
                .iter()
                .copied()
                .find(|p| Nat::punchable(p.0, p.1) == punchable)
        }
    };
    if let Some(p) = pick((Nat::Masquerade, Nat::Masquerade), true) {
        out.push(p);
    }
    if let Some(p) = pick((Nat::Masquerade, Nat::Symmetric), false) {
        out.push(p);
    }
    out
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join(" | ")
}

// ---------------------------------------------------------------- media

struct Media {
    music: PathBuf,
    /// Track ids: [0] the warm-up track, then one per cold sample.
    short: Vec<String>,
    short_secs: f64,
    big: String,
    big_bytes: u64,
}

/// `work/music`: `short/variant-NN.flac` (stream copies of one FLAC, each
/// with its own comment tag) and `big/noise-NMB.wav`; made once, reused.
fn prepare_media(args: &Args, manifest: &Path, work: &Path) -> Res<Media> {
    section("media");
    let ffmpeg = first_line(Command::new("ffmpeg").arg("-version"))
        .ctx("ffmpeg is needed (ffmpeg -version failed)")?;
    println!("  ffmpeg     {ffmpeg}");
    let music = work.join("music");
    let tmp = work.join("tmp");
    let short_dir = music.join("short");
    let big_dir = music.join("big");
    for d in [&tmp, &short_dir, &big_dir] {
        std::fs::create_dir_all(d).ctx(format!("creating {}", d.display()))?;
    }
    let src = manifest.join("../shared/corpus").join(SHORT_SRC);
    let src = src
        .canonicalize()
        .ctx(format!("corpus file {}", src.display()))?;
    let short_secs = common::probe(&src)?.secs;
    let n = args.ttfa + 1;
    let mut short = Vec::new();
    let t0 = Instant::now();
    for k in 0..n {
        let dst = short_dir.join(format!("variant-{k:02}.flac"));
        if !dst.is_file() {
            let part = tmp.join("variant.flac");
            let _ = std::fs::remove_file(&part);
            ffmpeg_ok(
                Command::new("ffmpeg")
                    .args(["-nostdin", "-y", "-loglevel", "error", "-i"])
                    .arg(&src)
                    .args(["-map", "0", "-c", "copy", "-map_metadata", "0", "-metadata"])
                    .arg(format!("comment=tunemesh nat bench variant {k}"))
                    .arg(&part),
            )?;
            std::fs::rename(&part, &dst).ctx(format!("renaming to {}", dst.display()))?;
        }
        let id = common::file_id(&dst)?;
        if short.contains(&id) {
            return Err(format!("{} has the bytes of another variant", dst.display()).into());
        }
        short.push(id);
    }
    // Exactly this run's files (a run with more samples left more).
    remove_others(&short_dir, |name| {
        name.strip_prefix("variant-")
            .and_then(|r| r.strip_suffix(".flac"))
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k < n)
    })?;
    let big_name = format!("noise-{}MB.wav", args.mb);
    let big_path = big_dir.join(&big_name);
    // 44.1 kHz stereo 16 bit: 176400 bytes a second.
    let big_secs = (args.mb as f64 * 1e6 / 176_400.0).ceil();
    if !big_path.is_file() {
        let part = tmp.join("big.wav");
        let _ = std::fs::remove_file(&part);
        ffmpeg_ok(
            Command::new("ffmpeg")
                .args(["-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i"])
                .arg(format!(
                    "anoisesrc=d={big_secs}:c=pink:r=44100:a=0.3:seed=7"
                ))
                .args(["-ac", "2", "-c:a", "pcm_s16le", "-metadata"])
                .arg(format!("title=NAT bench noise {} MB", args.mb))
                .arg(&part),
        )?;
        std::fs::rename(&part, &big_path).ctx(format!("renaming to {}", big_path.display()))?;
    }
    remove_others(&big_dir, |name| name == big_name)?;
    let big_bytes = std::fs::metadata(&big_path)
        .ctx(format!("{}", big_path.display()))?
        .len();
    let big = common::file_id(&big_path)?;
    println!(
        "  music      {}: {n} × {} ({short_secs:.1} s FLAC stream copies), {big_name} ({:.1} MB, {big_secs:.0} s); {:.1} s",
        music.display(),
        src.display(),
        big_bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(Media {
        music,
        short,
        short_secs,
        big,
        big_bytes,
    })
}

fn ffmpeg_ok(cmd: &mut Command) -> Res<()> {
    let out = cmd.stdin(Stdio::null()).output().ctx("running ffmpeg")?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

fn remove_others(dir: &Path, keep: impl Fn(&str) -> bool) -> Res<()> {
    for e in std::fs::read_dir(dir).ctx(format!("listing {}", dir.display()))? {
        let e = e.ctx("listing")?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep(&name) {
            std::fs::remove_file(e.path()).ctx(format!("removing {name}"))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- one pair

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Direct,
    /// Still relayed `PUNCH_LIMIT` after the relayed connection.
    Relayed,
    /// Nothing connected within `CONNECT_LIMIT`.
    NoLink,
    /// The phone daemon exited.
    Died,
}

struct Trial {
    slot: usize,
    port: u16,
    /// Seconds from the spawn: api.json readable; the first relayed and
    /// the first direct link as `/api/peers` showed them (polled).
    ready: Option<f64>,
    relayed: Option<f64>,
    direct: Option<f64>,
    /// The same from the phone's log ("connected peer=HOME addr=..."
    /// lines, microsecond timestamps): not limited by the polling.
    relayed_log: Option<f64>,
    direct_log: Option<f64>,
    /// Transport of the phone's link to the relay that carried the first
    /// relayed connection ("quic", "tcp"), and of the direct one.
    relay_via: String,
    direct_via: String,
    outcome: Outcome,
    /// The direct address (the home's as the phone sees it).
    addr: String,
    /// What the home's and the phone's logs said about hole punching
    /// during the trial.
    punch_log: Vec<String>,
    note: Option<String>,
}

struct StreamResult {
    /// "direct", "relayed", or "mixed: ..." when it changed.
    path: String,
    addr: String,
    rtt_ms: Option<f64>,
    cold: Vec<Fetch>,
    warm: Vec<Fetch>,
    cpu: Vec<CpuRound>,
    problems: Vec<String>,
}

struct CpuRound {
    bytes: u64,
    secs: f64,
    /// CPU seconds: home, phone, relay.
    cpu: [f64; 3],
    path: String,
}

struct PairResult {
    pair: (Nat, Nat),
    trials: Vec<Trial>,
    setup_s: f64,
    stream: Option<StreamResult>,
    error: Option<String>,
    problems: Vec<String>,
}

impl PairResult {
    fn failed(pair: (Nat, Nat), e: String) -> PairResult {
        PairResult {
            pair,
            trials: vec![],
            setup_s: 0.0,
            stream: None,
            error: Some(e),
            problems: vec![],
        }
    }
}

/// The phone's HTTP API.
#[derive(Clone)]
struct Api {
    addr: String,
    token: String,
}

/// A phone data dir and, while it runs, its daemon.
struct Slot {
    label: String,
    data: PathBuf,
    /// Its device id (once joined).
    device: String,
    proc: Option<PhoneProc>,
    /// Sent SIGTERM, not reaped yet.
    stopping: bool,
    starts: usize,
}

/// A `tunemesh serve --role phone` in the phone's namespace; SIGTERM (then
/// SIGKILL) when dropped.
struct PhoneProc {
    child: Child,
    log: PathBuf,
}

impl PhoneProc {
    /// SIGTERM and wait (15 s, then SIGKILL); a note unless it exited 0.
    fn stop(mut self) -> Option<String> {
        let r = stop_child(&mut self.child);
        std::mem::forget(self);
        r
    }
}

fn stop_child(child: &mut Child) -> Option<String> {
    // SAFETY: kill(2) on our own child (`ip netns exec` execs tunemesh).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return None,
            Ok(Some(st)) => return Some(format!("the phone exited with {st} after SIGTERM")),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Some(format!("waiting for the phone: {e}")),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some("the phone ignored SIGTERM for 15 s (killed)".into())
}

impl Drop for PhoneProc {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child);
    }
}

/// What a phone start needs (all Send: used from a thread in the phone's
/// namespace).
struct PhoneEnv {
    ip: PathBuf,
    ns: String,
    log_dir: PathBuf,
}

impl Slot {
    fn start(&mut self, env: &PhoneEnv, port: u16) -> Res<()> {
        assert!(self.proc.is_none(), "{} is running", self.label);
        self.starts += 1;
        let log = env
            .log_dir
            .join(format!("{}-{}.log", self.label, self.starts));
        let f = std::fs::File::create(&log).ctx(format!("creating {}", log.display()))?;
        let _ = std::fs::remove_file(self.data.join("api.json"));
        let mut cmd = Command::new(&env.ip);
        cmd.args(["netns", "exec", &env.ns, BIN, "--data-dir"])
            .arg(&self.data)
            .args(["-v", "serve", "--role", "phone", "--listen"])
            .arg(format!("/ip4/0.0.0.0/udp/{port}/quic-v1"))
            .arg("--listen")
            .arg(format!("/ip4/0.0.0.0/tcp/{port}"))
            .args(["--no-mdns", "--no-upnp", "--api", "127.0.0.1:0", "--name"])
            .arg(format!("bench-{}", self.label))
            .env("RUST_LOG", log_env())
            .env("NO_COLOR", "1")
            .env_remove("TUNEMESH_API")
            .stdin(Stdio::null())
            .stdout(f.try_clone().ctx("log file")?)
            .stderr(f);
        let child = cmd.spawn().ctx(format!("starting {cmd:?}"))?;
        self.proc = Some(PhoneProc { child, log });
        Ok(())
    }

    fn stop(&mut self) -> Option<String> {
        self.stopping = false;
        self.proc.take().and_then(PhoneProc::stop)
    }

    /// SIGTERM without waiting (`stop` reaps it).
    fn signal(&mut self) {
        self.stopping = true;
        if let Some(p) = &self.proc {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Its API once api.json is there; Err when the daemon exited.
    fn api(&mut self) -> Res<Option<Api>> {
        if let Some(p) = &mut self.proc {
            if let Ok(Some(st)) = p.child.try_wait() {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                self.proc = None;
                return Err(format!("the phone exited ({st}): {}", nat_lab::tail(&log, 5)).into());
            }
        }
        Ok(read_api(&self.data).map(|(a, _)| a))
    }

    fn log(&self) -> Option<&Path> {
        self.proc.as_ref().map(|p| p.log.as_path())
    }
}

/// (api, device id) from `DATA/api.json`.
fn read_api(data: &Path) -> Option<(Api, String)> {
    let text = std::fs::read_to_string(data.join("api.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let url = v["url"].as_str()?;
    Some((
        Api {
            addr: url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            token: v["token"].as_str()?.to_string(),
        },
        v["device"].as_str()?.to_string(),
    ))
}

/// Everything of one pair. Field order is drop order: the phones before
/// the lab (whose Drop stops the relay and home, then deletes the
/// namespaces).
struct PairRun {
    slots: Vec<Slot>,
    lab: Lab,
    home: usize,
    relay: usize,
    home_id: String,
    env: PhoneEnv,
    /// Ports given so far.
    ports: u16,
}

fn run_pair(
    pair: (Nat, Nat),
    args: &Args,
    media: &Media,
    dir: &Path,
    streams: bool,
) -> Res<PairResult> {
    std::fs::create_dir_all(dir).ctx(format!("creating {}", dir.display()))?;
    let t0 = Instant::now();
    let punchable = Nat::punchable(pair.0, pair.1);
    let parallel = args.parallel;
    let mut run = setup(pair, media, dir, parallel)?;
    let setup_s = t0.elapsed().as_secs_f64();
    println!(
        "  setup      {setup_s:.1} s (lab, relay, home indexed + reserved, {parallel} phone(s) joined and synced)"
    );
    let mut problems = Vec::new();

    // Part 1.
    print!(
        "  trials     {} × a fresh phone start (up to {parallel} at once, {} s apart), as they end: ",
        args.trials,
        STAGGER.as_secs()
    );
    flush();
    let home_log = run.lab.daemons[run.home]
        .logs
        .last()
        .cloned()
        .ctx("no home log")?;
    let phone_ns = run.lab.ns(PHONE);
    let home_id = run.home_id.clone();
    let mut ports = run.ports;
    let trials = {
        let (slots, env) = (&mut run.slots, &run.env);
        let n = args.trials;
        nat_lab::in_ns(&phone_ns, || {
            trials_in_ns(slots, env, &home_id, &home_log, n, &mut ports).map_err(|e| e.to_string())
        })?
    };
    run.ports = ports;
    println!();
    println!(
        "  outcome    {} (in trial order: D direct, R stayed relayed, x no link, ! phone died)",
        trials
            .iter()
            .map(|t| match t.outcome {
                Outcome::Direct => "D",
                Outcome::Relayed => "R",
                Outcome::NoLink => "x",
                Outcome::Died => "!",
            })
            .collect::<Vec<_>>()
            .join("")
    );
    println!(
        "  relay link {} (transport of the phone's link to the relay: q QUIC, t TCP)",
        trials
            .iter()
            .map(|t| match t.relay_via.as_str() {
                "" => "-",
                v => &v[..1],
            })
            .collect::<Vec<_>>()
            .join("")
    );
    let ok = trials
        .iter()
        .filter(|t| t.outcome == Outcome::Direct)
        .count();
    println!(
        "  result     {ok}/{} direct (expected: {})",
        trials.len(),
        if punchable { "direct" } else { "relayed only" }
    );
    for t in &trials {
        if let Some(n) = &t.note {
            problems.push(format!("trial port {}: {n}", t.port));
        }
    }

    // Parts 2 and 3.
    let stream = if streams {
        Some(stream_part(&mut run, args, media, punchable)?)
    } else {
        None
    };
    let stopped: Vec<String> = run.slots.iter_mut().filter_map(Slot::stop).collect();
    problems.extend(stopped);
    save_logs(&run.lab, dir);
    Ok(PairResult {
        pair,
        trials,
        setup_s,
        stream,
        error: None,
        problems,
    })
}

/// Copy the lab's daemon logs (relay, home) next to the phones' logs.
fn save_logs(lab: &Lab, dir: &Path) {
    for d in &lab.daemons {
        for (i, l) in d.logs.iter().enumerate() {
            let _ = std::fs::copy(l, dir.join(format!("{}-{}.log", d.label, i + 1)));
        }
    }
}

fn setup(pair: (Nat, Nat), media: &Media, dir: &Path, phones: usize) -> Res<PairRun> {
    let mut lab = Lab::build(BIN, pair.0, pair.1).ctx("the NAT lab cannot be built here")?;
    let root = lab.dir.path().to_path_buf();
    let (d_relay, d_home) = (root.join("relay"), root.join("home"));
    std::fs::create_dir_all(&d_home).ctx("creating the home's data dir")?;
    let log = log_env();
    let env = [("RUST_LOG", log.as_str())];

    // The relay serves the home's mesh: a lone home's mesh id is its device
    // id. `status --json` does not show it before the first start (no
    // `mesh` field offline), so the home runs once without the relay (its
    // first scan of the music starts then too).
    let music = media.music.to_str().ctx("music path is not UTF-8")?;
    let first_args = strings(&[
        "-v",
        "serve",
        music,
        "--role",
        "home",
        "--no-mdns",
        "--no-upnp",
        "--api",
        "127.0.0.1:0",
    ]);
    let first = lab.spawn("home-first", HOME, &d_home, &first_args, &env, "api.json");
    let (_, mesh_id) = read_api(&d_home).ctx("the first home's api.json")?;
    lab.stop(first);
    let relay_args = relay_args(&mesh_id);
    let relay = lab.spawn("relay", INET, &d_relay, &relay_args, &env, "relay.json");
    let info: Value = serde_json::from_str(&nat_lab::read(&d_relay.join("relay.json")))
        .ctx("relay.json is not JSON")?;
    let relay_id = info["id"].as_str().unwrap_or_default().to_string();
    let relay_quic = info["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| {
            a.starts_with(&format!("/ip4/{RELAY_IP}/udp/{RELAY_PORT}/quic-v1/p2p/"))
                && a.ends_with(&relay_id)
        })
        .ctx(format!("no public QUIC address in relay.json: {info}"))?
        .to_string();

    let mut home_args = strings(&["-v", "serve", music, "--role", "home"]);
    home_args.extend(listen_args(HOME_PORT));
    home_args.extend(strings(&[
        "--relay",
        &relay_quic,
        "--no-mdns",
        "--no-upnp",
        "--api",
        "127.0.0.1:0",
        "--name",
        "bench-home",
    ]));
    let home = lab.spawn("home", HOME, &d_home, &home_args, &env, "api.json");
    let (home_api, home_id) = read_api(&d_home).ctx("the home's api.json")?;
    if home_id != mesh_id {
        return Err(format!("the mesh id {mesh_id} is not the home's id {home_id}").into());
    }
    let expect = media.short.len() as u64 + 1;
    let home_ns = lab.ns(HOME);
    let ha = home_api.clone();
    nat_lab::in_ns(&home_ns, || {
        wait_home(&ha, expect).map_err(|e| e.to_string())
    })?;

    let penv = PhoneEnv {
        ip: lab.tools.ip.clone(),
        ns: lab.ns(PHONE),
        log_dir: dir.to_path_buf(),
    };
    let mut run = PairRun {
        slots: vec![],
        lab,
        home,
        relay,
        home_id,
        env: penv,
        ports: 0,
    };
    // The phones: start, join with a ticket each, sync; then stopped (each
    // trial starts one again).
    for s in 0..phones {
        let ticket = run.lab.cli_ok(run.home, &["invite", "--quiet"]);
        let ticket = ticket.trim().to_string();
        let mut slot = Slot {
            label: format!("phone{s}"),
            data: run.lab.dir.path().join(format!("phone{s}")),
            device: String::new(),
            proc: None,
            stopping: false,
            starts: 0,
        };
        std::fs::create_dir_all(&slot.data).ctx("creating a phone's data dir")?;
        let port = PHONE_PORT_BASE + run.ports;
        run.ports += 1;
        let home_id = run.home_id.clone();
        let ip = run.lab.tools.ip.clone();
        let env = &run.env;
        let joined = nat_lab::in_ns(&env.ns, || {
            join_phone(&mut slot, env, &ip, port, &ticket, &home_id, expect)
                .map_err(|e| e.to_string())
        });
        run.slots.push(slot);
        joined?;
    }
    for s in &mut run.slots {
        if let Some(p) = s.stop() {
            return Err(format!("{}: {p}", s.label).into());
        }
    }
    Ok(run)
}

/// Until the home indexed `expect` tracks and holds a reservation.
fn wait_home(ha: &Api, expect: u64) -> Res<()> {
    let agent = agent(10);
    wait(
        "the home to index the music",
        Duration::from_secs(120),
        || {
            let st = get_json(&agent, ha, "/api/status")?;
            Ok((st["tracks"].as_u64() == Some(expect))
                .then_some(())
                .ok_or(format!("{} of {expect} tracks", st["tracks"]))?)
        },
    )?;
    wait(
        "the home to hold a reservation at the relay",
        Duration::from_secs(60),
        || {
            let st = get_json(&agent, ha, "/api/status")?;
            let ok = st["relays"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["reserved"] == true));
            Ok(ok.then_some(()).ok_or(format!(
                "relays {}, reachability {}",
                st["relays"], st["reachability"]
            ))?)
        },
    )
}

fn join_phone(
    slot: &mut Slot,
    env: &PhoneEnv,
    ip: &Path,
    port: u16,
    ticket: &str,
    home_id: &str,
    expect: u64,
) -> Res<()> {
    slot.start(env, port)?;
    let api = wait("the phone's api.json", Duration::from_secs(30), || {
        slot.api()?.ok_or_else(|| "no api.json yet".into())
    })?;
    slot.device = read_api(&slot.data).map(|(_, d)| d).unwrap_or_default();
    let out = Command::new(ip)
        .args(["netns", "exec", &env.ns, BIN, "--data-dir"])
        .arg(&slot.data)
        .args(["join", ticket])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .ctx("running tunemesh join")?;
    if !out.status.success() {
        return Err(format!(
            "{}: join failed ({}): {}",
            slot.label,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let agent = agent(10);
    wait(
        "the phone to list the home's tracks",
        Duration::from_secs(60),
        || {
            let lib = get_json(&agent, &api, "/api/library")?;
            let n = lib
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| {
                    t["sources"].as_array().into_iter().flatten().any(|s| {
                        s["device"] == home_id && s["local"] == false && s["online"] == true
                    })
                })
                .count() as u64;
            Ok((n == expect)
                .then_some(())
                .ok_or(format!("{n} of {expect} tracks"))?)
        },
    )?;
    Ok(())
}

/// Part 1, run on a thread inside the phone's namespace (the phones' APIs
/// are on its loopback).
fn trials_in_ns(
    slots: &mut [Slot],
    env: &PhoneEnv,
    home_id: &str,
    home_log: &Path,
    n: usize,
    ports: &mut u16,
) -> Res<Vec<Trial>> {
    struct Active {
        trial: usize,
        t0: Instant,
        /// The same moment by the wall clock (the logs' timestamps).
        wall0: f64,
        api: Option<Api>,
        home_off: u64,
        phone_log: PathBuf,
    }
    let agent = agent(5);
    let mut trials: Vec<Trial> = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    let mut done = 0;
    while done < n {
        // Start the next trial on a free phone, once every running trial
        // is past its first STAGGER (so two phones never connect at once).
        let busy: Vec<usize> = active.iter().map(|a| trials[a.trial].slot).collect();
        let free = (0..slots.len()).find(|s| !busy.contains(s));
        let due = active.iter().all(|a| a.t0.elapsed() >= STAGGER);
        if trials.len() < n && due {
            if let Some(s) = free {
                let note = slots[s]
                    .stop()
                    .map(|n| format!("(the phone before it) {n}"));
                let port = PHONE_PORT_BASE + *ports;
                *ports += 1;
                let home_off = std::fs::metadata(home_log).map_or(0, |m| m.len());
                let t0 = Instant::now();
                let wall0 = unix_now();
                slots[s].start(env, port)?;
                trials.push(Trial {
                    slot: s,
                    port,
                    ready: None,
                    relayed: None,
                    direct: None,
                    relayed_log: None,
                    direct_log: None,
                    relay_via: String::new(),
                    direct_via: String::new(),
                    outcome: Outcome::NoLink,
                    addr: String::new(),
                    punch_log: vec![],
                    note,
                });
                active.push(Active {
                    trial: trials.len() - 1,
                    t0,
                    wall0,
                    api: None,
                    home_off,
                    phone_log: slots[s].log().map(Path::to_path_buf).unwrap_or_default(),
                });
            }
        }
        // Poll the running ones.
        let mut finished = Vec::new();
        let more = trials.len() < n;
        for (k, a) in active.iter_mut().enumerate() {
            let t = &mut trials[a.trial];
            let now = a.t0.elapsed();
            let secs = now.as_secs_f64();
            let mut end = None;
            if a.api.is_none() {
                match slots[t.slot].api() {
                    Ok(Some(api)) => {
                        t.ready = Some(secs);
                        a.api = Some(api);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        t.note = Some(e.to_string());
                        end = Some(Outcome::Died);
                    }
                }
            }
            if let Some(api) = &a.api {
                if let Ok(peers) = get_json(&agent, api, "/api/peers") {
                    let me = peers
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| p["id"] == home_id && p["connected"] == true);
                    if let Some(p) = me {
                        match p["path"].as_str().unwrap_or_default() {
                            "relayed" => {
                                t.relayed.get_or_insert(secs);
                            }
                            "direct" | "lan" => {
                                t.direct = Some(secs);
                                t.addr = p["addr"].as_str().unwrap_or_default().to_string();
                                end = Some(Outcome::Direct);
                            }
                            _ => {}
                        }
                    }
                }
            }
            if end.is_none() {
                match t.relayed {
                    Some(r) if secs - r >= PUNCH_LIMIT.as_secs_f64() => {
                        end = Some(Outcome::Relayed)
                    }
                    None if now >= CONNECT_LIMIT => end = Some(Outcome::NoLink),
                    _ => {}
                }
            }
            if let Some(o) = end {
                t.outcome = o;
                let (r, d) = links_from_log(&a.phone_log, home_id);
                if let Some((at, via)) = r {
                    t.relayed_log = Some(at - a.wall0);
                    t.relay_via = via;
                }
                if let Some((at, via)) = d {
                    t.direct_log = Some(at - a.wall0);
                    t.direct_via = via;
                }
                let dev = slots[t.slot].device.as_str();
                t.punch_log = punch_lines(home_log, a.home_off, "home", Some(dev))
                    .into_iter()
                    .chain(punch_lines(&a.phone_log, 0, "phone", None))
                    .collect();
                // More trials to start: let this phone go now (reaped
                // when its slot is used again), not while others are
                // being timed.
                if more {
                    slots[t.slot].signal();
                }
                if o == Outcome::Direct && !t.addr.contains(&format!("/ip4/{HROUTER_WAN}/")) {
                    t.note = Some(format!("direct, but not to the home's router: {}", t.addr));
                }
                print!(
                    "{}",
                    match o {
                        Outcome::Direct => "D",
                        Outcome::Relayed => "R",
                        Outcome::NoLink => "x",
                        Outcome::Died => "!",
                    }
                );
                flush();
                finished.push(k);
            }
        }
        for k in finished.into_iter().rev() {
            active.remove(k);
            done += 1;
        }
        std::thread::sleep(POLL);
    }
    for (k, s) in slots.iter_mut().enumerate().filter(|(_, s)| s.stopping) {
        if let Some(n) = s.stop() {
            if let Some(t) = trials.iter_mut().rev().find(|t| t.slot == k) {
                t.note.get_or_insert(n);
            }
        }
    }
    Ok(trials)
}

/// Hole-punching lines of a log from byte `from` (timestamps cut).
/// Lines naming `peer` only, when given (the home's log covers all phones).
fn punch_lines(log: &Path, from: u64, who: &str, peer: Option<&str>) -> Vec<String> {
    let b = std::fs::read(log).unwrap_or_default();
    let b = b.get(from as usize..).unwrap_or_default();
    String::from_utf8_lossy(b)
        .lines()
        .filter(|l| peer.is_none_or(|p| l.contains(p)))
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("hole") || l.contains("dcutr")
        })
        .map(|l| format!("{who}: {}", l.split_once("Z ").map_or(l, |(_, r)| r).trim()))
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The first relayed and the first direct connection to `home` in a
/// phone's log: (unix time, transport). For the relayed one, the transport
/// of the phone's own link to the relay ("connected to relay ... addr="),
/// which carries the circuit whatever relay address the circuit's
/// multiaddr names.
type LogLink = Option<(f64, String)>;
fn links_from_log(log: &Path, home: &str) -> (LogLink, LogLink) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut relayed, mut direct) = (None, None);
    let mut relay_via = None;
    let via = |addr: &str| {
        if addr.contains("/quic") {
            "quic"
        } else if addr.contains("/tcp/") {
            "tcp"
        } else {
            "?"
        }
    };
    for l in text.lines() {
        let Some(addr) = l.split_whitespace().find_map(|w| w.strip_prefix("addr=")) else {
            continue;
        };
        if l.contains(": connected to relay ") {
            relay_via.get_or_insert(via(addr));
            continue;
        }
        if !(l.contains(": connected peer=") && l.contains(home)) {
            continue;
        }
        let Some(at) = log_time(l) else { continue };
        if addr.contains("/p2p-circuit") {
            if relayed.is_none() {
                relayed = Some((at, relay_via.unwrap_or("?").to_string()));
            }
        } else if direct.is_none() {
            direct = Some((at, via(addr).to_string()));
        }
    }
    (relayed, direct)
}

/// The unix time of a log line's leading `2026-11-24T13:18:19.548560Z`.
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

// ---------------------------------------------------------------- parts 2, 3

/// Most phone starts to get the link parts 2 and 3 want.
const MAX_STREAM_STARTS: usize = 6;

fn stream_part(
    run: &mut PairRun,
    args: &Args,
    media: &Media,
    punchable: bool,
) -> Res<StreamResult> {
    let want = if punchable { "direct" } else { "relayed" };
    let phone_ns = run.lab.ns(PHONE);
    let home_id = run.home_id.clone();
    let mut ports = run.ports;
    let (s, api, notes) = {
        let (slots, env) = (&mut run.slots, &run.env);
        nat_lab::in_ns(&phone_ns, || {
            settle_phone(slots, env, &home_id, want, &mut ports).map_err(|e| e.to_string())
        })?
    };
    run.ports = ports;
    let pids = [
        run.lab.daemons[run.home]
            .pid()
            .ctx("the home is not running")?,
        run.slots[s]
            .proc
            .as_ref()
            .map(|p| p.child.id())
            .ctx("no phone")?,
        run.lab.daemons[run.relay]
            .pid()
            .ctx("the relay is not running")?,
    ];
    let mut r = nat_lab::in_ns(&phone_ns, || {
        stream_in_ns(&api, &home_id, args, media, pids).map_err(|e| e.to_string())
    })?;
    r.problems.splice(0..0, notes);
    Ok(r)
}

/// A running phone whose link to the home is `want`: the phone the last
/// trial left running if its link is that, else fresh starts (at most
/// MAX_STREAM_STARTS) until one gets it. (slot, its API, notes).
fn settle_phone(
    slots: &mut [Slot],
    env: &PhoneEnv,
    home_id: &str,
    want: &str,
    ports: &mut u16,
) -> Res<(usize, Api, Vec<String>)> {
    let agent = agent(10);
    let mut notes = Vec::new();
    for attempt in 0..=MAX_STREAM_STARTS {
        let s = match slots.iter().position(|s| s.proc.is_some() && !s.stopping) {
            Some(s) if attempt == 0 => s,
            other => {
                let s = other.unwrap_or(0);
                if let Some(n) = slots[s].stop() {
                    notes.push(n);
                }
                let port = PHONE_PORT_BASE + *ports;
                *ports += 1;
                slots[s].start(env, port)?;
                s
            }
        };
        let slot = &mut slots[s];
        let api = wait("the phone's api.json", Duration::from_secs(30), || {
            slot.api()?.ok_or_else(|| "no api.json yet".into())
        })?;
        let got = wait(
            &format!("the phone's link to the home to be {want}"),
            PUNCH_LIMIT + Duration::from_secs(5),
            || {
                let l = link(&agent, &api, home_id)?;
                if l.0 == want {
                    Ok(())
                } else {
                    Err(format!("{} {}", l.0, l.1).into())
                }
            },
        );
        match got {
            Ok(()) => {
                if attempt > 0 {
                    notes.push(format!(
                        "streams: the link was {want} only at the {} phone start after part 1",
                        attempt + 1
                    ));
                }
                // The relayed connection lingers 0.5 s after a direct one.
                std::thread::sleep(Duration::from_millis(1500));
                return Ok((s, api, notes));
            }
            Err(e) => notes.push(format!("streams, phone start {}: {e}", attempt + 1)),
        }
    }
    Err(format!(
        "no {want} link in {} phone starts: {}",
        MAX_STREAM_STARTS + 1,
        notes.join("; ")
    )
    .into())
}

/// The phone's link to the home: (path, addr, rtt ms).
fn link(agent: &ureq::Agent, api: &Api, home_id: &str) -> Res<(String, String, Option<f64>)> {
    let peers = get_json(agent, api, "/api/peers")?;
    let p = peers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == home_id)
        .ctx(format!("the home is not among the phone's peers: {peers}"))?;
    if p["connected"] != true {
        return Ok(("not connected".into(), String::new(), None));
    }
    Ok((
        p["path"].as_str().unwrap_or_default().to_string(),
        p["addr"].as_str().unwrap_or_default().to_string(),
        p["rtt_ms"].as_f64(),
    ))
}

fn stream_in_ns(
    api: &Api,
    home_id: &str,
    args: &Args,
    media: &Media,
    pids: [u32; 3],
) -> Res<StreamResult> {
    let agent = agent(10);
    let mut problems = Vec::new();
    let (path0, addr, rtt) = link(&agent, api, home_id)?;
    print!("  streams    phone→home {path0} {addr} (rtt {rtt:.1?} ms): ttfa ");
    flush();
    let mut paths: Vec<String> = vec![path0.clone()];
    let mut note_path = |agent: &ureq::Agent| -> Res<()> {
        let p = link(agent, api, home_id)?.0;
        if !paths.contains(&p) {
            paths.push(p);
        }
        Ok(())
    };
    // Warm-up (untimed): the first transcode of the home's process.
    let stream = |id: &str, bitrate: &str, ogg: bool| -> Res<Fetch> {
        let path = format!("/stream/{id}?bitrate={bitrate}&token={}", api.token);
        let f = http(&api.addr, &path, None, ogg, false)?;
        if f.status != 200 || f.body_len == 0 {
            return Err(format!(
                "GET /stream/{id}?bitrate={bitrate} at the phone: HTTP {}, {} bytes {}",
                f.status,
                f.body_len,
                String::from_utf8_lossy(&f.body[..f.body.len().min(300)])
            )
            .into());
        }
        Ok(f)
    };
    stream(&media.short[0], &KBPS.to_string(), true)?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for id in &media.short[1..] {
        cold.push(stream(id, &KBPS.to_string(), true)?);
        warm.push(stream(id, &KBPS.to_string(), true)?);
        note_path(&agent)?;
        print!(".");
        flush();
    }
    print!(" cpu ");
    flush();
    let tck = clk_tck();
    let mut cpu = Vec::new();
    for _ in 0..args.cpu_rounds {
        let before = pids.map(cpu_ticks);
        let p_before = link(&agent, api, home_id)?.0;
        let f = stream(&media.big, "original", false)?;
        let after = pids.map(cpu_ticks);
        let p_after = link(&agent, api, home_id)?.0;
        if f.body_len as u64 != media.big_bytes {
            problems.push(format!(
                "the original came with {} bytes, not {}",
                f.body_len, media.big_bytes
            ));
        }
        let mut c = [f64::NAN; 3];
        for i in 0..3 {
            if let (Some(a), Some(b)) = (before[i], after[i]) {
                c[i] = (b - a) as f64 / tck;
            }
        }
        cpu.push(CpuRound {
            bytes: f.body_len as u64,
            secs: f.end.as_secs_f64(),
            cpu: c,
            path: if p_before == p_after {
                p_before
            } else {
                format!("{p_before}→{p_after}")
            },
        });
        note_path(&agent)?;
        print!(".");
        flush();
    }
    println!();
    let path = if paths.len() == 1 {
        path0.clone()
    } else {
        format!("mixed: {}", paths.join("→"))
    };
    if cpu.iter().any(|c| c.path != path0) {
        problems.push(format!(
            "the path changed during a transfer: {}",
            cpu.iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(StreamResult {
        path,
        addr,
        rtt_ms: rtt,
        cold,
        warm,
        cpu,
        problems,
    })
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads, exited ones included), in
/// clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": field 3 (state) onwards; utime is field 14.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

// ---------------------------------------------------------------- HTTP

fn agent(timeout_s: u64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(timeout_s)))
        .build()
        .into()
}

fn get_json(agent: &ureq::Agent, api: &Api, path: &str) -> Res<Value> {
    let mut resp = agent
        .get(format!("http://{}{path}", api.addr))
        .header("authorization", format!("Bearer {}", api.token))
        .call()
        .ctx(format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .ctx(format!("GET {path}: reading"))?;
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status} {body}").into());
    }
    serde_json::from_str(&body).ctx(format!("GET {path}: bad JSON"))
}

/// Poll `probe` every 50 ms until it gives a value; Err with its last word
/// after `limit`.
fn wait<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Res<T>) -> Res<T> {
    let t0 = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() > limit => {
                return Err(format!(
                    "timed out after {} s waiting for {what}; last: {e}",
                    limit.as_secs()
                )
                .into())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ---------------------------------------------------------------- summary

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    // Nearest rank.
    let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[k - 1]
}

fn med_p90(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!(
        "{:.0} / {:.0}",
        median(v.to_vec()) * 1e3,
        quantile(v, 0.9) * 1e3
    )
}

/// Milliseconds of seconds `v`: median [min-max].
fn cell(v: &[f64]) -> String {
    common::spread(v, 1e3, 0)
}

fn mbs_cell(v: &[f64]) -> String {
    common::spread(v, 1.0, 0)
}

fn secs(v: impl Iterator<Item = Option<Duration>>) -> Vec<f64> {
    v.flatten().map(|d| d.as_secs_f64()).collect()
}

/// Collapse alike log lines (ids and numbers cut): "line (×n)".
fn tally(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for l in lines {
        let key: String = l
            .split_whitespace()
            .map(|w| match w.find("12D3KooW") {
                Some(p) => format!("{}…", &w[..p]),
                None => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let key = if key.chars().count() > 220 {
            format!("{}…", key.chars().take(220).collect::<String>())
        } else {
            key
        };
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => seen.push((key, 1)),
        }
    }
    seen.into_iter()
        .map(|(k, n)| format!("{k} (×{n})"))
        .collect()
}

fn print_summary(
    args: &Args,
    command: &str,
    results: &[PairResult],
    media_secs: f64,
    took: Duration,
) {
    section("summary");
    println!("  command    {command}");
    println!(
        "  machine    nproc={}, CPU {}, load avg now {}; total {:.0} s",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model(),
        loadavg(),
        took.as_secs_f64()
    );
    println!();
    println!(
        "  1. hole punching: {} fresh phone starts per pair; ms from the spawn of the phone daemon,",
        args.trials
    );
    println!(
        "     median / p90 (nearest rank); failure = still relayed 15 s after the relayed link"
    );
    println!(
        "  {:<11} | {:<7} | {:>6} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:<21} | setup",
        "home-phone",
        "expect",
        "direct",
        "API up",
        "relayed",
        "direct",
        "punch",
        "relayed*",
        "direct*",
        "direct by relay link"
    );
    for r in results {
        let expected = if Nat::punchable(r.pair.0, r.pair.1) {
            "direct"
        } else {
            "relayed"
        };
        if let Some(e) = &r.error {
            println!(
                "  {:<11} | {:<7} | FAILED: {}",
                pair_name(r.pair),
                expected,
                first_lines(e, 1)
            );
            continue;
        }
        let t = &r.trials;
        let ok: Vec<&Trial> = t.iter().filter(|t| t.outcome == Outcome::Direct).collect();
        let ready: Vec<f64> = t.iter().filter_map(|t| t.ready).collect();
        let relayed: Vec<f64> = t.iter().filter_map(|t| t.relayed_log).collect();
        let direct: Vec<f64> = ok.iter().filter_map(|t| t.direct_log).collect();
        let punch: Vec<f64> = ok
            .iter()
            .filter_map(|t| Some(t.direct_log? - t.relayed_log?))
            .collect();
        let relayed_api: Vec<f64> = t.iter().filter_map(|t| t.relayed).collect();
        let direct_api: Vec<f64> = ok.iter().filter_map(|t| t.direct).collect();
        let by_via = |v: &str| {
            let all = t.iter().filter(|t| t.relay_via == v).count();
            let ok = ok.iter().filter(|t| t.relay_via == v).count();
            format!("{v} {ok}/{all}")
        };
        println!(
            "  {:<11} | {:<7} | {:>6} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:<21} | {:.0} s",
            pair_name(r.pair),
            expected,
            format!("{}/{}", ok.len(), t.len()),
            med_p90(&ready),
            med_p90(&relayed),
            med_p90(&direct),
            med_p90(&punch),
            med_p90(&relayed_api),
            med_p90(&direct_api),
            format!("{}, {}", by_via("quic"), by_via("tcp")),
            r.setup_s
        );
    }
    println!(
        "     API up = the phone's api.json written; relayed / direct = the phone logs its first connection"
    );
    println!(
        "     to the home through the relay / not (µs timestamps); punch = direct − relayed, same trial;"
    );
    println!(
        "     relayed* / direct* = the first /api/peers poll (20 ms) showing that path; direct by relay"
    );
    println!(
        "     link = direct trials / trials, by the transport of the phone's link to the relay (QUIC, TCP)."
    );
    let odd: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.trials.iter().filter_map(move |t| {
                let first_direct = t.outcome == Outcome::Direct && t.relayed_log.is_none();
                let bad = match t.outcome {
                    Outcome::Direct => !Nat::punchable(r.pair.0, r.pair.1) || first_direct,
                    Outcome::Relayed => Nat::punchable(r.pair.0, r.pair.1),
                    _ => true,
                };
                bad.then(|| {
                    format!(
                        "{} port {}: {:?}{} (relayed at {}, direct at {}){}",
                        pair_name(r.pair),
                        t.port,
                        t.outcome,
                        if first_direct {
                            ", direct before any relayed link"
                        } else {
                            ""
                        },
                        t.relayed_log
                            .map_or("-".into(), |s| format!("{:.3} s via {}", s, t.relay_via)),
                        t.direct_log
                            .map_or("-".into(), |s| format!("{:.3} s via {}", s, t.direct_via)),
                        t.note.as_ref().map_or(String::new(), |n| format!("; {n}"))
                    )
                })
            })
        })
        .collect();
    if !odd.is_empty() {
        println!();
        println!("  unexpected trials ({}):", odd.len());
        // At most 4 per pair.
        let mut shown: Vec<(&str, usize)> = Vec::new();
        let mut hidden = 0;
        for o in &odd {
            let pair = o.split(' ').next().unwrap_or_default();
            let n = match shown.iter_mut().find(|(p, _)| *p == pair) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    shown.push((pair, 1));
                    1
                }
            };
            if n <= 4 {
                println!("    {o}");
            } else {
                hidden += 1;
            }
        }
        if hidden > 0 {
            println!("    ... and {hidden} more like these (4 shown per pair)");
        }
    }
    // What the daemons logged about hole punching, per pair.
    println!();
    println!("  hole-punch log lines per pair (home and phones, ids cut):");
    for r in results {
        let lines = tally(
            r.trials
                .iter()
                .flat_map(|t| t.punch_log.iter().cloned())
                .filter(|l| !l.contains("Attempting to hole-punch")),
        );
        let attempts = r
            .trials
            .iter()
            .flat_map(|t| &t.punch_log)
            .filter(|l| l.contains("Attempting to hole-punch"))
            .count();
        println!(
            "    {:<13} {} \"Attempting to hole-punch\" lines",
            pair_name(r.pair),
            attempts
        );
        for l in lines.iter().take(6) {
            println!("      {l}");
        }
    }

    let streams: Vec<(&PairResult, &StreamResult)> = results
        .iter()
        .filter_map(|r| r.stream.as_ref().map(|s| (r, s)))
        .collect();
    if !streams.is_empty() {
        println!();
        println!(
            "  2. time to first audio at the phone, {KBPS} kb/s Opus of a {:.0} s FLAC, ms from the connect to",
            media_secs
        );
        println!(
            "     the phone's API: median [min-max] of {} (first body byte / end of the 3rd Ogg page)",
            args.ttfa
        );
        println!(
            "  {:<13} | {:<8} | {:>16} | {:>16} | {:>16} | {:>16} | {:>8} | via (cold/warm)",
            "home-phone", "path", "cold byte", "cold audio", "warm byte", "warm audio", "rtt ms"
        );
        for (r, s) in &streams {
            let via = |v: &[Fetch]| {
                let mut out: Vec<String> = Vec::new();
                for f in v {
                    let x = f.header("x-tunemesh-via").unwrap_or("?").to_string();
                    if !out.contains(&x) {
                        out.push(x);
                    }
                }
                out.join("+")
            };
            println!(
                "  {:<13} | {:<8} | {:>16} | {:>16} | {:>16} | {:>16} | {:>8} | {}/{}",
                pair_name(r.pair),
                s.path,
                cell(&secs(s.cold.iter().map(|f| f.first_byte))),
                cell(&secs(s.cold.iter().map(|f| f.first_audio))),
                cell(&secs(s.warm.iter().map(|f| f.first_byte))),
                cell(&secs(s.warm.iter().map(|f| f.first_audio))),
                s.rtt_ms.map_or("-".into(), |r| format!("{r:.1}")),
                via(&s.cold),
                via(&s.warm)
            );
        }
        println!();
        println!(
            "  3. CPU per MB streamed, bitrate=original of a {} MB WAV, {} round(s): utime+stime ms per MB",
            args.mb, args.cpu_rounds
        );
        println!(
            "     (10^6 bytes of body; CPU and bytes summed over the rounds), throughput at the phone's API"
        );
        println!("     median [min-max] over the rounds");
        println!(
            "  {:<11} | {:<8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>19} | paths",
            "home-phone", "path", "home", "phone", "relay", "total", "MB/s"
        );
        // path → (CPU s [home, phone, relay], MB, per-round MB/s)
        let mut by_path: Vec<(String, [f64; 3], f64, Vec<f64>)> = Vec::new();
        for (r, s) in &streams {
            let mb: f64 = s.cpu.iter().map(|c| c.bytes as f64 / 1e6).sum();
            let mut cpu = [0.0; 3];
            for c in &s.cpu {
                for (sum, x) in cpu.iter_mut().zip(c.cpu) {
                    *sum += x;
                }
            }
            let mbs: Vec<f64> = s
                .cpu
                .iter()
                .map(|c| c.bytes as f64 / 1e6 / c.secs)
                .collect();
            let per = |x: f64| x * 1e3 / mb;
            println!(
                "  {:<11} | {:<8} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>19} | {}",
                pair_name(r.pair),
                s.path,
                per(cpu[0]),
                per(cpu[1]),
                per(cpu[2]),
                per(cpu.iter().sum()),
                mbs_cell(&mbs),
                s.cpu
                    .iter()
                    .map(|c| format!("{} {:.2} s", c.path, c.secs))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            match by_path.iter_mut().find(|(p, ..)| *p == s.path) {
                Some((_, c, m, v)) => {
                    for (sum, x) in c.iter_mut().zip(cpu) {
                        *sum += x;
                    }
                    *m += mb;
                    v.extend(mbs);
                }
                None => by_path.push((s.path.clone(), cpu, mb, mbs)),
            }
        }
        let get = |p: &str| by_path.iter().find(|(x, ..)| x == p);
        if let (Some(rel), Some(dir)) = (get("relayed"), get("direct")) {
            let total = |x: &(String, [f64; 3], f64, Vec<f64>)| x.1.iter().sum::<f64>() * 1e3 / x.2;
            let (rc, dc) = (total(rel), total(dir));
            let (rm, dm) = (median(rel.3.clone()), median(dir.3.clone()));
            println!(
                "  relayed vs direct: CPU {rc:.2} vs {dc:.2} ms/MB (relayed ×{:.2}; home+phone only: {:.2} vs {:.2} ms/MB, ×{:.2});",
                rc / dc,
                (rel.1[0] + rel.1[1]) * 1e3 / rel.2,
                (dir.1[0] + dir.1[1]) * 1e3 / dir.2,
                ((rel.1[0] + rel.1[1]) / rel.2) / ((dir.1[0] + dir.1[1]) / dir.2)
            );
            println!(
                "  throughput {rm:.1} vs {dm:.1} MB/s (relayed ×{:.2})",
                rm / dm
            );
        }
        println!(
            "     home, phone, relay = the three tunemesh processes (kernel time of veth/NAT forwarding that"
        );
        println!(
            "     no process is charged for is not counted); the phone also serves the bytes to this bench over"
        );
        println!("     loopback HTTP and checks the original's blake3.");
        for (r, s) in &streams {
            println!("  {} link: {} {}", pair_name(r.pair), s.path, s.addr);
            for p in &s.problems {
                println!("  PROBLEM {}: {p}", pair_name(r.pair));
            }
        }
    }
    for r in results {
        for p in &r.problems {
            println!("  PROBLEM {}: {p}", pair_name(r.pair));
        }
        if let Some(e) = &r.error {
            println!("  FAILED {}: {}", pair_name(r.pair), first_lines(e, 3));
        }
    }
}
