//! Transcode benchmark driver (no criterion): tunemesh against ffmpeg.
//!
//!     cargo bench --bench transcode
//!     cargo bench --bench transcode -- --rounds 9 --core 1
//!
//! For each corpus file (FLAC, MP3, AAC, Vorbis) this runs, pinned to one
//! core with `taskset -c CORE`, side by side in every round (order swapped
//! each round):
//!
//!     tunemesh transcode IN -o OUT --bitrate 128 --no-cache --no-passthrough
//!     ffmpeg -threads 1 -i IN -c:a libopus -b:a 128k OUT
//!
//! Both encode with libopus at complexity 10 (ffmpeg's default
//! `-compression_level 10`), unconstrained VBR, 20 ms frames, 48 kHz (24 kHz for a 22.05 kHz source).
//! Each child's CPU time (user + sys) and peak RSS come from `wait4`'s
//! rusage; wall time is spawn to reap. Outputs go to
//! `target/bench-transcode/` and must be non-empty.
//!
//! Then time to first output page:
//! - in-process: `transcode::open` to the return of the first
//!   `next_pages()` (the two header pages) and of the second (the first
//!   audio page), then on to the end for the in-process CPU time;
//! - as a process: spawn `tunemesh transcode IN -o -` (and, for reference,
//!   `ffmpeg ... -f opus -`) with stdout piped, time to the first byte and
//!   to the end of the first audio page (the third Ogg page).

mod common;
use common::{
    cpu_model, first_line, flush, loadavg, median, mib, ogg_pages_complete, probe, section, wait4,
    Ctx, Res,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tunemesh::transcode::{self, Output, Request};

const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");
const KBPS: u32 = 128;
/// Corpus files, relative to `<package>/../shared/corpus`, and extra
/// ffmpeg output options. A row with extra options is supplementary (a
/// what-if comparison): it is left out of the total and of the
/// time-to-first-page runs. Both tools feed libopus the smallest Opus rate
/// that holds the source (24 kHz for the 22.05 kHz MP3), so the issue's
/// plain ffmpeg command is already like for like.
const FILES: &[(&str, &[&str])] = &[
    ("formats/caves_16_44.flac", &[]),
    ("formats/caves_vbr_id3v23.mp3", &[]),
    ("real/ASC/frontiers.mp3", &[]),
    ("formats/caves_aac.m4a", &[]),
    ("real/HyperRogue/hr3-desert.ogg", &[]),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("\nbench failed: {e}");
        std::process::exit(1);
    }
}

/// Transcode benchmark: tunemesh against ffmpeg on one core, time to first
/// page, RSS.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench transcode --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Rounds per file.
    #[arg(long, default_value_t = 5, value_parser = common::args::at_least_one())]
    rounds: usize,
    /// The core both encoders are pinned to (`taskset -c CORE`).
    #[arg(long, default_value_t = 0)]
    core: usize,
}

struct Input {
    name: String,
    /// Extra ffmpeg output options; non-empty marks a supplementary row.
    ff_extra: Vec<String>,
    path: PathBuf,
    codec: String,
    rate: u32,
    secs: f64,
}

/// One measured child process.
#[derive(Clone, Copy)]
struct Run {
    cpu: f64,
    wall: f64,
    maxrss_kib: i64,
    out_bytes: u64,
}

#[derive(Default)]
struct PerFile {
    tm: Vec<Run>,
    ff: Vec<Run>,
}

#[derive(Default)]
struct Ttfp {
    /// In-process: open → headers, open → first audio page, whole-run CPU.
    hdr: Vec<f64>,
    audio: Vec<f64>,
    inproc_cpu: Vec<f64>,
    /// Process (tunemesh `-o -`): spawn → first byte, → first audio page.
    p_byte: Vec<f64>,
    p_audio: Vec<f64>,
    /// Process (ffmpeg `-f opus -`), for reference.
    f_byte: Vec<f64>,
    f_audio: Vec<f64>,
}

fn run() -> Res<()> {
    let args: Args = common::args::parse();
    let rounds = args.rounds;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = manifest.join("../shared/corpus");
    let corpus = corpus
        .canonicalize()
        .ctx(format!("corpus {}", corpus.display()))?;
    let target = common::target_dir();
    let out_dir = target.join("bench-transcode");
    std::fs::create_dir_all(&out_dir).ctx(format!("creating {}", out_dir.display()))?;
    // Keep the CLI away from the user's data dir (it opens none with
    // --no-cache and a file path, but be sure).
    let data_dir = out_dir.join("data");

    let ffmpeg_ver = first_line(Command::new("ffmpeg").arg("-version"))
        .ctx("ffmpeg is needed (ffmpeg -version failed)")?;
    first_line(Command::new("ffprobe").arg("-version"))
        .ctx("ffprobe is needed (ffprobe -version failed)")?;
    let pinned = Command::new("taskset")
        .args(["-c", &args.core.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let argv: Vec<String> = std::env::args().collect();

    println!("tunemesh transcode benchmark");
    println!("  command    {}", argv.join(" "));
    println!("  binary     {BIN}");
    println!(
        "  machine    nproc={nproc}, CPU {}, load avg {}",
        cpu_model(),
        loadavg()
    );
    println!("  ffmpeg     {ffmpeg_ver}");
    println!(
        "  libopus    tunemesh: {}; ffmpeg's: {}",
        transcode::encoder_id(),
        ffmpeg_libopus()
    );
    if pinned {
        println!(
            "  pinning    taskset -c {} (every child process)",
            args.core
        );
    } else {
        println!(
            "  pinning    NONE: `taskset -c {}` does not work here; children run unpinned",
            args.core
        );
    }
    println!("  outputs    {}", out_dir.display());
    println!("  rounds     {rounds} (+1 untimed warm-up of each per file)");
    println!("  tunemesh   {BIN} transcode IN -o OUT --bitrate {KBPS} --no-cache --no-passthrough");
    println!("  ffmpeg     ffmpeg -nostdin -y -loglevel error -threads 1 -i IN -c:a libopus -b:a {KBPS}k OUT");

    let mut inputs = Vec::new();
    for &(rel, extra) in FILES {
        let path = corpus.join(rel);
        if !path.is_file() {
            return Err(format!("missing corpus file {}", path.display()).into());
        }
        let p = probe(&path)?;
        let (rate, secs) = (p.sample_rate, p.secs);
        let codec = match p.codec.as_str() {
            "flac" => "FLAC",
            "mp3" => "MP3",
            "aac" => "AAC",
            "vorbis" => "Vorbis",
            other => other,
        }
        .to_string();
        inputs.push(Input {
            name: {
                let base = rel.rsplit('/').next().unwrap_or(rel);
                match extra {
                    [] => base.to_string(),
                    _ => format!("{base} [ff {}]", extra.join(" ")),
                }
            },
            ff_extra: extra.iter().map(|s| s.to_string()).collect(),
            path,
            codec,
            rate,
            secs,
        });
    }
    println!("\n  files:");
    for i in inputs.iter().filter(|i| i.ff_extra.is_empty()) {
        println!(
            "    {:<22} {:<7} {:>6} Hz {:>8.2} s  {}",
            i.name,
            i.codec,
            i.rate,
            i.secs,
            i.path.display()
        );
    }

    let pin = |cmd: &[String]| -> Command {
        if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", &args.core.to_string()]).args(cmd);
            c
        } else {
            let mut c = Command::new(&cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    let tm_cmd = |input: &Path, out: &str| -> Vec<String> {
        vec![
            BIN.into(),
            "--data-dir".into(),
            data_dir.to_string_lossy().into(),
            "transcode".into(),
            input.to_string_lossy().into(),
            "-o".into(),
            out.into(),
            "--bitrate".into(),
            KBPS.to_string(),
            "--no-cache".into(),
            "--no-passthrough".into(),
        ]
    };
    let ff_cmd = |input: &Path, extra: &[String], out: &str, pipe: bool| -> Vec<String> {
        let mut v: Vec<String> = [
            "ffmpeg",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(input.to_string_lossy().into());
        v.extend(
            ["-c:a", "libopus", "-b:a", &format!("{KBPS}k")]
                .iter()
                .map(|s| s.to_string()),
        );
        v.extend(extra.iter().cloned());
        if pipe {
            v.extend(["-f".to_string(), "opus".to_string()]);
        }
        v.push(out.into());
        v
    };

    // ---- 1. whole transcodes, one core, side by side -------------------
    section("whole transcodes, one core (CPU = user + sys of the child)");
    let mut res: Vec<PerFile> = inputs.iter().map(|_| PerFile::default()).collect();
    for round in 0..=rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{rounds}")
        };
        print!("  {label:<12}");
        flush();
        for (i, inp) in inputs.iter().enumerate() {
            let tm_out = out_dir.join(format!("{i}-tunemesh.opus"));
            let ff_out = out_dir.join(format!("{i}-ffmpeg.opus"));
            let tm_first = round % 2 == 1;
            for k in 0..2 {
                let is_tm = (k == 0) == tm_first;
                let (argv, out) = if is_tm {
                    (tm_cmd(&inp.path, &tm_out.to_string_lossy()), &tm_out)
                } else {
                    (
                        ff_cmd(&inp.path, &inp.ff_extra, &ff_out.to_string_lossy(), false),
                        &ff_out,
                    )
                };
                let _ = std::fs::remove_file(out);
                let r = measure(pin(&argv), out)?;
                if round > 0 {
                    if is_tm {
                        res[i].tm.push(r);
                    } else {
                        res[i].ff.push(r);
                    }
                }
            }
            print!(".");
            flush();
        }
        println!();
    }

    let main_rows: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].ff_extra.is_empty())
        .collect();
    let extra_rows: Vec<usize> = (0..inputs.len())
        .filter(|&i| !inputs[i].ff_extra.is_empty())
        .collect();
    let cpu_row = |name: &str, codec: &str, secs: f64, tm: f64, ff: f64, range: &str| {
        println!(
            "  {:<30} {:<6} {:>7.2} | {:>8.3} {:>8.3} | {:>6.1} {:>6.1} | {:>6.3} {:>11} | {}",
            name,
            codec,
            secs,
            tm,
            ff,
            secs / tm,
            secs / ff,
            ff / tm,
            range,
            verdict(ff / tm)
        );
    };
    let cpu_of = |r: &PerFile| {
        let tm = median(r.tm.iter().map(|x| x.cpu).collect());
        let ff = median(r.ff.iter().map(|x| x.cpu).collect());
        let per_round: Vec<f64> = r.tm.iter().zip(&r.ff).map(|(t, f)| f.cpu / t.cpu).collect();
        let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (tm, ff, format!("{lo:.2}..{hi:.2}"))
    };
    println!();
    println!(
        "  {:<30} {:<6} {:>7} | {:>8} {:>8} | {:>6} {:>6} | {:>6} {:>11} | floor",
        "file",
        "codec",
        "audio s",
        "tm CPU s",
        "ff CPU s",
        "tm xRT",
        "ff xRT",
        "ff/tm",
        "per round"
    );
    let (mut tot_audio, mut tot_tm, mut tot_ff) = (0.0, 0.0, 0.0);
    for &i in &main_rows {
        let (tm, ff, range) = cpu_of(&res[i]);
        tot_audio += inputs[i].secs;
        tot_tm += tm;
        tot_ff += ff;
        cpu_row(
            &inputs[i].name,
            &inputs[i].codec,
            inputs[i].secs,
            tm,
            ff,
            &range,
        );
    }
    cpu_row(
        "TOTAL (sums of the medians)",
        "",
        tot_audio,
        tot_tm,
        tot_ff,
        "",
    );
    if !extra_rows.is_empty() {
        println!("  supplementary (not in the total):");
        for &i in &extra_rows {
            let (tm, ff, range) = cpu_of(&res[i]);
            cpu_row(
                &inputs[i].name,
                &inputs[i].codec,
                inputs[i].secs,
                tm,
                ff,
                &range,
            );
        }
    }
    println!(
        "  CPU s = median; xRT = audio seconds per CPU second; ff/tm = ffmpeg CPU / tunemesh CPU,"
    );
    println!("  > 1 means tunemesh is faster; per round = min..max of the paired ratio; floor: ff/tm >= 1");

    println!();
    println!(
        "  {:<30} | {:>9} {:>9} | {:>11} {:>11} | {:>7} {:>7} | {:>6} {:>6}",
        "file",
        "tm wall s",
        "ff wall s",
        "tm peak RSS",
        "ff peak RSS",
        "tm kb/s",
        "ff kb/s",
        "tm Hz",
        "ff Hz"
    );
    let (mut max_tm_rss, mut max_ff_rss) = (0i64, 0i64);
    for &i in main_rows.iter().chain(&extra_rows) {
        let (inp, r) = (&inputs[i], &res[i]);
        let rss_tm = r.tm.iter().map(|x| x.maxrss_kib).max().unwrap_or(0);
        let rss_ff = r.ff.iter().map(|x| x.maxrss_kib).max().unwrap_or(0);
        max_tm_rss = max_tm_rss.max(rss_tm);
        max_ff_rss = max_ff_rss.max(rss_ff);
        let kbps = |v: &[Run]| {
            v.last()
                .map_or(0.0, |x| x.out_bytes as f64 * 8.0 / inp.secs / 1000.0)
        };
        println!(
            "  {:<30} | {:>9.3} {:>9.3} | {:>11} {:>11} | {:>7.1} {:>7.1} | {:>6} {:>6}",
            inp.name,
            median(r.tm.iter().map(|x| x.wall).collect()),
            median(r.ff.iter().map(|x| x.wall).collect()),
            mib(rss_tm),
            mib(rss_ff),
            kbps(&r.tm),
            kbps(&r.ff),
            opus_head_rate(&out_dir.join(format!("{i}-tunemesh.opus"))),
            opus_head_rate(&out_dir.join(format!("{i}-ffmpeg.opus"))),
        );
    }
    println!(
        "  {:<30} | {:>9} {:>9} | {:>11} {:>11} |",
        "max",
        "",
        "",
        mib(max_tm_rss),
        mib(max_ff_rss)
    );
    println!("  wall = median, spawn to reap (tunemesh also fsyncs its output; ffmpeg does not);");
    println!(
        "  peak RSS = max ru_maxrss over the rounds; kb/s = output file size / audio duration"
    );
    println!("  (Ogg overhead included); Hz = input rate in the output's OpusHead (what the encoder was fed,");
    println!(
        "  for ffmpeg; tunemesh records the source rate there and encodes at the smallest Opus"
    );
    println!("  rate that holds it, as ffmpeg does)");
    println!("  load avg now {}", loadavg());

    // ---- 2. time to first page ----------------------------------------
    section("time to first output page");
    let mut tt: Vec<Ttfp> = inputs.iter().map(|_| Ttfp::default()).collect();
    for round in 0..=rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{rounds}")
        };
        print!("  {label:<12}");
        flush();
        for &i in &main_rows {
            let inp = &inputs[i];
            let (a, b) = first_pages(pin(&tm_cmd(&inp.path, "-")))?;
            let (c, d) = first_pages(pin(&ff_cmd(&inp.path, &[], "-", true)))?;
            if round > 0 {
                tt[i].p_byte.push(a);
                tt[i].p_audio.push(b);
                tt[i].f_byte.push(c);
                tt[i].f_audio.push(d);
            }
            print!(".");
            flush();
        }
        println!();
    }
    // In-process runs go last: pinning the bench's own thread is permanent.
    let self_pinned = pinned && pin_self(args.core);
    for round in 0..=rounds {
        for &i in &main_rows {
            let (h, a, cpu) = in_process(&inputs[i].path)?;
            if round > 0 {
                tt[i].hdr.push(h);
                tt[i].audio.push(a);
                tt[i].inproc_cpu.push(cpu);
            }
        }
    }
    println!();
    println!(
        "  {:<22} | {:<30} | {:<21} | {:<21}",
        "", "in-process", "tunemesh -o -", "ffmpeg -f opus -"
    );
    println!(
        "  {:<22} | {:>9} {:>9} {:>10} | {:>10} {:>10} | {:>10} {:>10}",
        "file", "headers", "1st audio", "CPU s", "1st byte", "1st audio", "1st byte", "1st audio"
    );
    for &i in &main_rows {
        let t = &tt[i];
        println!(
            "  {:<22} | {:>9} {:>9} {:>10.3} | {:>10} {:>10} | {:>10} {:>10}",
            inputs[i].name,
            msf(median(t.hdr.clone())),
            msf(median(t.audio.clone())),
            median(t.inproc_cpu.clone()),
            msf(median(t.p_byte.clone())),
            msf(median(t.p_audio.clone())),
            msf(median(t.f_byte.clone())),
            msf(median(t.f_audio.clone())),
        );
    }
    println!("  medians of {rounds}; in-process: from the `transcode::open` call to the return of the first");
    println!("  next_pages() (headers) and the second (first audio page); CPU s = process CPU time for the");
    println!(
        "  whole transcode in-process ({}); process: spawn to the first stdout byte and to the",
        if self_pinned {
            format!("bench thread pinned to core {}", args.core)
        } else {
            "unpinned".to_string()
        }
    );
    println!("  end of the third Ogg page (first audio page), process start included");
    Ok(())
}

/// The input sample rate field of the OpusHead in the first page of `path`.
fn opus_head_rate(path: &Path) -> String {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let page = &head[..n];
    let Some(at) = page.windows(8).position(|w| w == b"OpusHead") else {
        return "?".into();
    };
    match page.get(at + 12..at + 16) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string(),
        None => "?".into(),
    }
}

fn verdict(ratio: f64) -> &'static str {
    if ratio >= 1.0 {
        "meets"
    } else {
        "MISSES"
    }
}

/// Spawn `cmd` (stdout discarded, stderr captured), reap it with wait4 and
/// check it wrote a non-empty `out`.
fn measure(mut cmd: Command, out: &Path) -> Res<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child = cmd.spawn().ctx(format!("starting {what}"))?;
    let mut se = child.stderr.take().ctx("no stderr pipe")?;
    let mut stderr = String::new();
    let _ = se.read_to_string(&mut stderr);
    let (ok, ru) = wait4(child.id())?;
    let wall = t0.elapsed().as_secs_f64();
    // `child` is already reaped by wait4; dropping it does not wait again.
    drop(child);
    if !ok {
        return Err(format!("{what} failed:\n{stderr}").into());
    }
    let out_bytes = std::fs::metadata(out)
        .ctx(format!("{what}: no output {}", out.display()))?
        .len();
    if out_bytes == 0 {
        return Err(format!("{what}: empty output {}", out.display()).into());
    }
    // c_long: i64 here, not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let maxrss_kib = ru.ru_maxrss as i64;
    Ok(Run {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        wall,
        maxrss_kib,
        out_bytes,
    })
}

/// Spawn `cmd` with stdout piped; seconds from spawn to its first byte and
/// to the end of its third Ogg page (the first audio page). The child is
/// killed once that page is in.
fn first_pages(mut cmd: Command) -> Res<(f64, f64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let what = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child = cmd.spawn().ctx(format!("starting {what}"))?;
    let mut so = child.stdout.take().ctx("no stdout pipe")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let mut first_byte = None;
    let mut third_page = None;
    while third_page.is_none() {
        let n = so.read(&mut chunk).ctx(format!("reading {what}"))?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| t0.elapsed());
        buf.extend_from_slice(&chunk[..n]);
        if ogg_pages_complete(&buf)? >= 3 {
            third_page = Some(t0.elapsed());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    match (first_byte, third_page) {
        (Some(a), Some(b)) => Ok((a.as_secs_f64(), b.as_secs_f64())),
        _ => Err(format!("{what}: fewer than 3 Ogg pages on stdout").into()),
    }
}

/// In-process: seconds from `open` to the header pages and to the first
/// audio page, and process CPU seconds for the whole transcode.
fn in_process(path: &Path) -> Res<(f64, f64, f64)> {
    let mut req = Request::new(KBPS);
    req.passthrough = false;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let out = transcode::open(path, &req).ctx(format!("open {}", path.display()))?;
    let Output::Opus(mut tc) = out else {
        return Err(format!(
            "{}: passthrough despite passthrough = false",
            path.display()
        )
        .into());
    };
    let what = format!("transcoding {}", path.display());
    let hdr = tc.next_pages().ctx(&what)?.ctx("no header pages")?;
    let t_hdr = t0.elapsed();
    let audio = tc.next_pages().ctx(&what)?.ctx("no audio page")?;
    let t_audio = t0.elapsed();
    let mut bytes = hdr.len() + audio.len();
    while let Some(p) = tc.next_pages().ctx(&what)? {
        bytes += p.len();
    }
    let cpu = process_cpu() - cpu0;
    std::hint::black_box(bytes);
    Ok((t_hdr.as_secs_f64(), t_audio.as_secs_f64(), cpu))
}

/// Pin the calling thread to `core`.
fn pin_self(core: usize) -> bool {
    // SAFETY: plain syscall with a zeroed, then filled, cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
}

/// The libopus package version, where dpkg can tell (ffmpeg itself does
/// not print it).
fn ffmpeg_libopus() -> String {
    first_line(Command::new("dpkg-query").args(["-W", "-f", "${Version}\n", "libopus0"]))
        .map(|v| format!("libopus0 {v} (dpkg)"))
        .unwrap_or_else(|| "? (no dpkg)".into())
}

fn msf(secs: f64) -> String {
    format!("{:.2} ms", secs * 1000.0)
}
