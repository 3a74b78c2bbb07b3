//! Scan / rescan / search benchmark driver (no criterion).
//!
//!     cargo bench --bench scan
//!     cargo bench --bench scan -- --files 10000 --big 100000 --rounds 5
//!     cargo bench --bench scan -- --template some.mp3 --files 10000 --big 10000
//!
//! The default template is the committed 1-second fixture (~9 KB files: the
//! worst case for per-file overhead); `--template` takes any MP3, e.g. a
//! corpus track, for realistic file sizes.
//!
//! Phases:
//! 1. generate (or reuse) synthetic libraries under `target/bench-libs/lib-N`;
//! 2. full scan of the small library (`--files`), alternated with `b3sum`
//!    over the same files, both on a warm page cache;
//! 3. full scan of the big library (`--big`), then no-change rescans;
//! 4. search latency on the big index, in-process and as a one-shot CLI;
//! 5. a plain-text summary.
//!
//! Every process is timed by wall clock from spawn to reap; its peak RSS
//! comes from `wait4`'s rusage (`ru_maxrss`, KiB on Linux).

mod common;
use common::{flush, loadavg, median, mib, section, wait4, Ctx, Res};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tunemesh::library::generate::WORDS;

const SEED: u64 = 0x7E57_5CA9;
const TEMPLATE: &str = "tests/fixtures/lib/Alpha Artist/First Album/01 - Opening.mp3";
const BIN: &str = env!("CARGO_BIN_EXE_tunemesh");
/// Bytes of path arguments per b3sum invocation: far below ARG_MAX (2 MiB
/// here, and args share it with the environment).
const B3_CHUNK_BYTES: usize = 256 << 10;
/// Search queries per in-process latency run.
const N_QUERIES: usize = 200;

fn main() {
    if let Err(e) = run() {
        eprintln!("\nbench failed: {e}");
        std::process::exit(1);
    }
}

/// Scan benchmark: scan vs b3sum, rescans, search latency, RSS.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench scan --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Files in the small library (scan vs b3sum).
    #[arg(long, default_value_t = 10_000, value_parser = common::args::at_least_one())]
    files: usize,
    /// Files in the big library (scan, rescans, search).
    #[arg(long, default_value_t = 100_000, value_parser = common::args::at_least_one())]
    big: usize,
    /// Rounds of each measurement.
    #[arg(long, default_value_t = 5, value_parser = common::args::at_least_one())]
    rounds: usize,
    /// The MP3 every generated file is made from [default: the 1-second fixture].
    #[arg(long, value_name = "MP3")]
    template: Option<PathBuf>,
}

fn run() -> Res<()> {
    let args: Args = common::args::parse();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = args
        .template
        .clone()
        .map(|t| t.canonicalize().ctx(format!("template {}", t.display())))
        .transpose()?
        .unwrap_or_else(|| manifest.join(TEMPLATE));
    let rounds = args.rounds;
    let target = common::target_dir();
    let libs = target.join("bench-libs");
    let scratch = libs.join("tmp");
    std::fs::create_dir_all(&scratch).ctx(format!("creating {}", scratch.display()))?;
    let b3sum = find_b3sum()?;
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("tunemesh scan benchmark");
    println!("  binary     {BIN}");
    println!(
        "  b3sum      {} ({})",
        b3sum.display(),
        b3sum_version(&b3sum)
    );
    println!("  libraries  {}", libs.display());
    println!("  machine    nproc={nproc}, load avg {}", loadavg());
    println!(
        "  sizes      --files {} --big {} --rounds {rounds}",
        args.files, args.big
    );
    println!(
        "  template   {} ({} bytes)",
        template.display(),
        std::fs::metadata(&template).map_or(0, |m| m.len())
    );

    // ---------------------------------------------------------------- 1
    section("1. libraries");
    let small = ensure_library(&libs, &template, args.files)?;
    let big = if args.big == args.files {
        small.clone()
    } else {
        ensure_library(&libs, &template, args.big)?
    };

    // ---------------------------------------------------------------- 2
    section(&format!(
        "2. full scan of {} files vs b3sum (warm cache)",
        args.files
    ));
    let files = list_files(&small.dir)?;
    if files.len() != args.files {
        return Err(format!(
            "{} holds {} files, expected {}; delete it and rerun",
            small.dir.display(),
            files.len(),
            args.files
        )
        .into());
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(small.dir.join(f)).map_or(0, |m| m.len()))
        .sum();
    let chunks = chunk_args(&files);
    println!(
        "  {} files, {:.1} MiB; b3sum runs as {} sequential process(es) of <= {} KiB of args (like xargs), cwd = library",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        chunks.len(),
        B3_CHUNK_BYTES >> 10
    );

    // Warm-ups (untimed): also check both tools see every file.
    let hashed = run_b3sum(&b3sum, &small.dir, &chunks, true)?;
    if hashed.lines != files.len() {
        return Err(format!(
            "b3sum warm-up printed {} hashes for {} files",
            hashed.lines,
            files.len()
        )
        .into());
    }
    let warm = scan_fresh(&scratch, &small.dir)?;
    check_full_scan(&warm.report, files.len())?;
    println!(
        "  warm-up done (b3sum {:.3} s, tunemesh {:.3} s)",
        hashed.run.wall.as_secs_f64(),
        warm.run.wall.as_secs_f64()
    );

    let mut rows = Vec::new();
    println!(
        "  {:<6} {:>11} {:>11} {:>8} {:>13} {:>13} {:>12}",
        "round", "tunemesh s", "b3sum s", "ratio", "tm files/s", "b3 files/s", "tm peak RSS"
    );
    for round in 1..=rounds {
        let b = run_b3sum(&b3sum, &small.dir, &chunks, false)?;
        let t = scan_fresh(&scratch, &small.dir)?;
        check_full_scan(&t.report, files.len())?;
        let row = Round {
            tm: t.run.wall.as_secs_f64(),
            tm_inproc: t.report.elapsed_ms as f64 / 1000.0,
            b3: b.run.wall.as_secs_f64(),
            rss_kib: t.run.maxrss_kib,
        };
        println!(
            "  {:<6} {:>11.3} {:>11.3} {:>8.2} {:>13.0} {:>13.0} {:>12}",
            round,
            row.tm,
            row.b3,
            row.tm / row.b3,
            files.len() as f64 / row.tm,
            files.len() as f64 / row.b3,
            mib(row.rss_kib)
        );
        rows.push(row);
    }
    let s_tm = median(rows.iter().map(|r| r.tm).collect());
    let s_b3 = median(rows.iter().map(|r| r.b3).collect());
    let s_ratio = median(rows.iter().map(|r| r.tm / r.b3).collect());
    let s_inproc = median(rows.iter().map(|r| r.tm_inproc).collect());
    let s_rss = rows.iter().map(|r| r.rss_kib).max().unwrap_or(0);
    println!(
        "  {:<6} {:>11.3} {:>11.3} {:>8.2} {:>13.0} {:>13.0} {:>12}",
        "median",
        s_tm,
        s_b3,
        s_ratio,
        files.len() as f64 / s_tm,
        files.len() as f64 / s_b3,
        mib(s_rss)
    );
    println!(
        "  (tunemesh's own elapsed_ms, median: {:.3} s; the rest of the wall time is process start, index open and close)",
        s_inproc
    );

    // ---------------------------------------------------------------- 3
    section(&format!(
        "3. {} files: full scan, then no-change rescans",
        args.big
    ));
    let big_data = tempfile::Builder::new()
        .prefix("data-big-")
        .tempdir_in(&scratch)
        .ctx("creating a data dir")?;
    let full = tunemesh_scan(big_data.path(), &big.dir)?;
    check_full_scan(&full.report, args.big)?;
    let full_big = Single {
        wall: full.run.wall.as_secs_f64(),
        inproc: full.report.elapsed_ms as f64 / 1000.0,
        rss_kib: full.run.maxrss_kib,
    };
    println!(
        "  full scan      {:>8.3} s  {:>8.0} files/s  peak RSS {}  (in-process {:.3} s)",
        full_big.wall,
        args.big as f64 / full_big.wall,
        mib(full_big.rss_kib),
        full_big.inproc
    );
    let mut rescans = Vec::new();
    for round in 1..=rounds {
        let r = tunemesh_scan(big_data.path(), &big.dir)?;
        let rep = &r.report;
        if rep.files != args.big || rep.added + rep.changed + rep.removed != 0 {
            return Err(format!(
                "no-change rescan {round} was not a no-op: {}",
                r.raw_json.trim()
            )
            .into());
        }
        let one = Single {
            wall: r.run.wall.as_secs_f64(),
            inproc: rep.elapsed_ms as f64 / 1000.0,
            rss_kib: r.run.maxrss_kib,
        };
        println!(
            "  rescan {round}       {:>8.3} s  {:>8.0} files/s  peak RSS {}  (in-process {:.3} s)",
            one.wall,
            args.big as f64 / one.wall,
            mib(one.rss_kib),
            one.inproc
        );
        rescans.push(one);
    }
    let rescan_med = median(rescans.iter().map(|r| r.wall).collect());
    let rescan_inproc = median(rescans.iter().map(|r| r.inproc).collect());
    let rescan_rss = rescans.iter().map(|r| r.rss_kib).max().unwrap_or(0);
    println!(
        "  rescan median  {:>8.3} s  (floor: < 2 s: {})  in-process {:.3} s",
        rescan_med,
        if rescan_med < 2.0 { "PASS" } else { "FAIL" },
        rescan_inproc
    );

    // ---------------------------------------------------------------- 4
    section(&format!("4. search latency on the {}-file index", args.big));
    let queries = build_queries();
    let lat = {
        let index = tunemesh::index::Index::open(big_data.path()).ctx(format!(
            "opening the index in {}",
            big_data.path().display()
        ))?;
        let mut times = Vec::with_capacity(queries.len());
        let mut hits = Vec::with_capacity(queries.len());
        for q in &queries {
            let t0 = Instant::now();
            let h = index.search(q, 50).ctx(format!("searching {q:?}"))?;
            times.push(t0.elapsed());
            hits.push(h.len());
        }
        let mut lat = SearchLat::new(&queries, times, hits);
        // Untimed: how many tracks each sample query matches in all.
        for (q, _, total) in lat.samples.iter_mut() {
            *total = index
                .search(q, usize::MAX)
                .ctx(format!("searching {q:?}"))?
                .len();
        }
        drop(index); // release sled's lock before the CLI runs
        lat
    };
    println!(
        "  in-process, limit 50, {} queries ({} with no hits, {} hitting the limit)",
        queries.len(),
        lat.zero_hits,
        lat.full_hits
    );
    println!(
        "  first (cold, loads search docs): {}  query {:?}",
        ms(lat.cold),
        queries[0]
    );
    println!(
        "  rest ({}): p50 {}  p99 {}  max {}  (slowest {:?})",
        queries.len() - 1,
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max),
        lat.slowest
    );
    for (q, n, total) in lat.samples.iter() {
        println!(
            "    sample {:<16} {:>3} hits (of {} matching tracks)",
            format!("{q:?}"),
            n,
            total
        );
    }

    let mut cli = Vec::new();
    let mut cli_rss = 0;
    let mut cli_hits = 0;
    for _ in 0..5 {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(big_data.path())
            .args(["search", "river glass", "--json"]);
        let out = spawn_measured(cmd)?;
        if !out.status_ok {
            return Err(format!("tunemesh search failed: {}", out.stderr.trim()).into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).ctx("parsing tunemesh search --json output")?;
        cli_hits = v.as_array().map_or(0, |a| a.len());
        cli.push(out.run.wall.as_secs_f64());
        cli_rss = cli_rss.max(out.run.maxrss_kib);
    }
    let cli_med = median(cli.clone());
    println!(
        "  one-shot CLI `tunemesh search \"river glass\" --json` x5: {}  median {:.1} ms  ({} hits, peak RSS {})",
        cli.iter()
            .map(|s| format!("{:.1}", s * 1000.0))
            .collect::<Vec<_>>()
            .join(" / "),
        cli_med * 1000.0,
        cli_hits,
        mib(cli_rss)
    );
    drop(big_data);

    // ---------------------------------------------------------------- 5
    section("SUMMARY");
    let n = args.files as f64;
    println!(
        "machine: nproc={nproc} (shared, noisy); load avg at end {}",
        loadavg()
    );
    println!(
        "full scan, {} files (median of {rounds}, warm cache, fresh data dir):",
        args.files
    );
    println!(
        "  tunemesh scan       {s_tm:.3} s  ({:.0} files/s; in-process {s_inproc:.3} s)",
        n / s_tm
    );
    println!(
        "  b3sum same files    {s_b3:.3} s  ({:.0} files/s)",
        n / s_b3
    );
    println!("  ratio tunemesh/b3   {s_ratio:.2}x");
    println!("  peak RSS tunemesh   {}", mib(s_rss));
    println!("{} files:", args.big);
    println!(
        "  full scan           {:.3} s  ({:.0} files/s), peak RSS {}",
        full_big.wall,
        args.big as f64 / full_big.wall,
        mib(full_big.rss_kib)
    );
    println!(
        "  no-change rescan    median {rescan_med:.3} s of [{}] s, peak RSS {}  [{} the < 2 s floor]",
        rescans
            .iter()
            .map(|r| format!("{:.3}", r.wall))
            .collect::<Vec<_>>()
            .join(", "),
        mib(rescan_rss),
        if rescan_med < 2.0 { "meets" } else { "MISSES" }
    );
    println!("search on the {}-file index (limit 50):", args.big);
    println!("  first query (cold)  {}", ms(lat.cold));
    println!(
        "  warm, {} queries    p50 {}  p99 {}  max {}",
        queries.len() - 1,
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max)
    );
    println!(
        "  CLI one-shot        median {:.1} ms (process start + open + search + print)",
        cli_med * 1000.0
    );
    println!(
        "generation: {} files {}, {} files {}",
        args.files, small.how, args.big, big.how
    );
    Ok(())
}

// ------------------------------------------------------------ libraries

#[derive(Clone)]
struct Lib {
    dir: PathBuf,
    how: String,
}

/// Generate `count` files under `libs/lib-count`, or reuse them if a marker
/// says a complete library with this count and seed is already there.
fn ensure_library(libs: &Path, template: &Path, count: usize) -> Res<Lib> {
    let stem = template
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        })
        .unwrap_or_default();
    let name = if template.ends_with(TEMPLATE) {
        format!("lib-{count}")
    } else {
        format!("lib-{stem}-{count}")
    };
    let dir = libs.join(&name);
    // The marker sits next to the library, not in it, so scans never see it.
    let marker = libs.join(format!("{name}.complete"));
    let want = format!(
        "count={count} seed={SEED} template={}\n",
        template.display()
    );
    if dir.is_dir() && std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        println!("  reusing  {} ({count} files)", dir.display());
        return Ok(Lib {
            dir,
            how: "reused".into(),
        });
    }
    if !template.is_file() {
        return Err(format!("template {} is missing", template.display()).into());
    }
    let _ = std::fs::remove_file(&marker);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).ctx(format!("removing stale {}", dir.display()))?;
    }
    print!("  generating {count} files in {} ... ", dir.display());
    flush();
    let t0 = Instant::now();
    let paths = tunemesh::library::generate::generate(template, &dir, count, SEED)
        .ctx(format!("generating {}", dir.display()))?;
    let took = t0.elapsed().as_secs_f64();
    if paths.len() != count {
        return Err(format!("generator wrote {} files, wanted {count}", paths.len()).into());
    }
    println!("{took:.2} s");
    std::fs::write(&marker, want).ctx(format!("writing {}", marker.display()))?;
    Ok(Lib {
        dir,
        how: format!("generated in {took:.2} s"),
    })
}

/// Every regular file under `root`, relative to it, sorted.
fn list_files(root: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        for e in std::fs::read_dir(&abs).ctx(format!("listing {}", abs.display()))? {
            let e = e.ctx(format!("listing {}", abs.display()))?;
            let ty = e.file_type().ctx(format!("stat {}", e.path().display()))?;
            let r = rel.join(e.file_name());
            if ty.is_dir() {
                stack.push(r);
            } else if ty.is_file() {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

// ------------------------------------------------------------ processes

struct Run {
    wall: Duration,
    maxrss_kib: i64,
}

struct Output {
    run: Run,
    status_ok: bool,
    stdout: String,
    stderr: String,
}

/// Spawn `cmd`, drain its stdout/stderr, reap it with wait4: wall time from
/// spawn to reap, and the child's own peak RSS.
fn spawn_measured(mut cmd: Command) -> Res<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child = cmd.spawn().ctx(format!("starting {what}"))?;
    let mut so = child.stdout.take().ctx("no stdout pipe")?;
    let mut se = child.stderr.take().ctx("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    so.read_to_string(&mut stdout)
        .ctx(format!("reading the output of {what}"))?;
    let (status, ru) = wait4(child.id())?;
    let rss = ru.ru_maxrss;
    let wall = t0.elapsed();
    let stderr = err_reader.join().unwrap_or_default();
    // `child` is already reaped by wait4; dropping it does not wait again.
    drop(child);
    Ok(Output {
        run: Run {
            wall,
            maxrss_kib: rss,
        },
        status_ok: status,
        stdout,
        stderr,
    })
}

struct ScanRun {
    run: Run,
    report: ScanJson,
    raw_json: String,
}

#[derive(serde::Deserialize)]
struct ScanJson {
    files: usize,
    #[serde(default)]
    tracks: usize,
    #[serde(default)]
    added: usize,
    #[serde(default)]
    changed: usize,
    #[serde(default)]
    removed: usize,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    elapsed_ms: u64,
}

fn tunemesh_scan(data: &Path, lib: &Path) -> Res<ScanRun> {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data)
        .arg("scan")
        .arg(lib)
        .args(["--json", "--quiet"]);
    let out = spawn_measured(cmd)?;
    if !out.status_ok {
        return Err(format!(
            "tunemesh scan {} failed: {}",
            lib.display(),
            out.stderr.trim()
        )
        .into());
    }
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ctx(format!("tunemesh scan printed no JSON: {:?}", out.stdout))?;
    let report: ScanJson =
        serde_json::from_str(line).ctx(format!("parsing tunemesh scan --json {line:?}"))?;
    Ok(ScanRun {
        run: out.run,
        report,
        raw_json: line.to_string(),
    })
}

/// A scan into a fresh data dir (removed afterwards).
fn scan_fresh(scratch: &Path, lib: &Path) -> Res<ScanRun> {
    let data = tempfile::Builder::new()
        .prefix("data-")
        .tempdir_in(scratch)
        .ctx("creating a data dir")?;
    tunemesh_scan(data.path(), lib)
}

fn check_full_scan(r: &ScanJson, expected: usize) -> Res<()> {
    if r.files != expected || r.added != expected || !r.errors.is_empty() {
        return Err(format!(
            "full scan indexed {} files ({} added, {} tracks, {} errors), expected {expected}",
            r.files,
            r.added,
            r.tracks,
            r.errors.len()
        )
        .into());
    }
    Ok(())
}

fn find_b3sum() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("B3SUM") {
        return Ok(PathBuf::from(p));
    }
    let default = PathBuf::from("/usr/bin/b3sum");
    if default.is_file() {
        return Ok(default);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("b3sum");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(
        "b3sum not found (looked at /usr/bin/b3sum and $PATH): install it with \
         `apt install b3sum` (or `cargo install b3sum`), or set B3SUM=/path/to/b3sum"
            .into(),
    )
}

fn b3sum_version(b3: &Path) -> String {
    Command::new(b3)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "version unknown".into())
}

/// Split relative paths into argument lists of at most B3_CHUNK_BYTES.
fn chunk_args(files: &[PathBuf]) -> Vec<Vec<PathBuf>> {
    let mut chunks = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for f in files {
        let len = f.as_os_str().len() + 1 + std::mem::size_of::<usize>();
        if !cur.is_empty() && size + len > B3_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push(f.clone());
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

struct B3Run {
    run: Run,
    lines: usize,
}

/// Hash every file with `b3sum --no-names`, chunk after chunk (like xargs
/// without -P). Output is counted when `count` is set, else discarded.
fn run_b3sum(b3: &Path, cwd: &Path, chunks: &[Vec<PathBuf>], count: bool) -> Res<B3Run> {
    let t0 = Instant::now();
    let mut lines = 0;
    let mut rss = 0;
    for chunk in chunks {
        let mut cmd = Command::new(b3);
        cmd.current_dir(cwd).arg("--no-names").arg("--").args(chunk);
        if count {
            let out = spawn_measured(cmd)?;
            if !out.status_ok {
                return Err(format!("b3sum failed: {}", out.stderr.trim()).into());
            }
            lines += out.stdout.lines().count();
            rss = rss.max(out.run.maxrss_kib);
        } else {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let child = cmd.spawn().ctx(format!("starting {}", b3.display()))?;
            let (ok, ru) = wait4(child.id())?;
            let r = ru.ru_maxrss;
            if !ok {
                return Err("b3sum exited with an error".into());
            }
            rss = rss.max(r);
        }
    }
    Ok(B3Run {
        run: Run {
            wall: t0.elapsed(),
            maxrss_kib: rss,
        },
        lines,
    })
}

// ------------------------------------------------------------ search

/// ~200 queries from the generator's vocabulary: single words (as tagged
/// and folded to ASCII), two-word combos, prefixes, and misses.
fn build_queries() -> Vec<String> {
    let fold = |w: &str| -> String {
        w.chars()
            .map(|c| match c {
                'á' | 'à' | 'â' | 'ä' | 'å' => 'a',
                'Á' | 'À' | 'Â' | 'Ä' | 'Å' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ï' => 'i',
                'ó' | 'ö' | 'ô' => 'o',
                'Ö' | 'Ó' => 'o',
                'ú' | 'ü' => 'u',
                'Ü' | 'Ú' => 'u',
                'ñ' => 'n',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    // First query: the cold one. A common two-word query.
    let mut q: Vec<String> = vec!["river glass".into()];
    // Single words, as tagged.
    q.extend(WORDS.iter().map(|w| w.to_string()));
    // Diacritic-free spellings of the words that have diacritics.
    q.extend(WORDS.iter().filter(|w| !w.is_ascii()).map(|w| fold(w)));
    // Prefixes and misses.
    for p in ["mid", "sat", "cry", "ele", "gol", "mor", "ang", "caf"] {
        q.push(p.into());
    }
    for m in ["zzzqqq", "xylophone", "nonexistent words here", "qwerty"] {
        q.push(m.into());
    }
    // Two-word combos, deterministic spread over the vocabulary.
    let n = WORDS.len();
    let mut i = 0usize;
    while q.len() < N_QUERIES - 10 {
        let a = WORDS[(i * 7) % n];
        let b = WORDS[(i * 13 + 5) % n];
        if a != b {
            q.push(format!("{} {}", fold(a), fold(b)));
        }
        i += 1;
    }
    // A few three-word and mixed-case/diacritic queries.
    for s in [
        "Midnight Café Echo",
        "ANGSTROM",
        "cafe river",
        "naive ghost",
        "zoe summer",
        "Über storm",
        "señor blue",
        "fjord garden",
        "ros mirror",
        "electric satellite machine",
    ] {
        q.push(s.into());
    }
    q.truncate(N_QUERIES);
    q
}

struct SearchLat {
    cold: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    slowest: String,
    zero_hits: usize,
    full_hits: usize,
    /// (query, hits at limit 50, all matching tracks)
    samples: Vec<(String, usize, usize)>,
}

impl SearchLat {
    fn new(queries: &[String], times: Vec<Duration>, hits: Vec<usize>) -> SearchLat {
        let cold = times[0];
        let mut rest: Vec<(Duration, usize)> = times[1..].iter().copied().zip(1..).collect();
        rest.sort();
        let pct = |p: f64| {
            let k = ((p * rest.len() as f64).ceil() as usize).clamp(1, rest.len()) - 1;
            rest[k].0
        };
        let (max, slowest_i) = *rest.last().unwrap_or(&(Duration::ZERO, 0));
        let pick = [
            "river glass",
            "angstrom",
            "Ångström",
            "cafe",
            "mid",
            "zzzqqq",
        ];
        let samples = pick
            .iter()
            .filter_map(|p| {
                queries
                    .iter()
                    .position(|q| q == p)
                    .map(|i| (queries[i].clone(), hits[i], 0))
            })
            .collect();
        SearchLat {
            cold,
            p50: pct(0.50),
            p99: pct(0.99),
            max,
            slowest: queries[slowest_i].clone(),
            zero_hits: hits.iter().filter(|&&h| h == 0).count(),
            full_hits: hits.iter().filter(|&&h| h >= 50).count(),
            samples,
        }
    }
}

// ------------------------------------------------------------ helpers

struct Round {
    tm: f64,
    tm_inproc: f64,
    b3: f64,
    rss_kib: i64,
}

struct Single {
    wall: f64,
    inproc: f64,
    rss_kib: i64,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
