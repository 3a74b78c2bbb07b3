//! The `tunemesh` command line: a thin layer over the library crate.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tunemesh::cache::Cache;
use tunemesh::index::Index;
use tunemesh::library::{self, ScanOptions, ScanReport};
use tunemesh::model::Track;
use tunemesh::stream::{Profile, Stream, StreamRequest, Streamer, Via};

/// tunemesh: your music, indexed once, on all your devices.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Where the index and node state live [default: the platform data dir,
    /// e.g. ~/.local/share/tunemesh]
    #[arg(long, global = true, env = "TUNEMESH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add folders to the library and index every audio file below them.
    /// Without folders, rescan every library folder. Unchanged files (same
    /// size and mtime) are not read again.
    Scan {
        /// Folders to add to the library and scan [default: rescan all library folders].
        dirs: Vec<PathBuf>,
        /// Print one JSON object with the summary on stdout.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
        /// Re-read every file, changed or not.
        #[arg(long)]
        force: bool,
        /// Reader threads [default: number of CPUs].
        #[arg(long)]
        threads: Option<usize>,
        /// Longest time one file may take, in seconds.
        #[arg(long, default_value_t = 30)]
        file_timeout: u64,
        /// After the scan, keep watching the library folders for changes.
        #[arg(long)]
        watch: bool,
    },
    /// Keep the index current while the library folders change (Ctrl-C stops).
    Watch {
        /// Folders to add before watching; default: the library folders.
        dirs: Vec<PathBuf>,
        /// Quiet period before a burst of changes is rescanned, in ms.
        #[arg(long, default_value_t = 500)]
        debounce_ms: u64,
        /// Print a JSON summary line after each rescan.
        #[arg(long)]
        json: bool,
    },
    /// List every indexed track.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Search titles, artists and albums (case and accents ignored).
    Search {
        /// Words to find (all must match, in any of title, artist, album).
        #[arg(required = true)]
        query: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Most results to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one track; ID may be any unique prefix of the track id.
    Show {
        /// Track id, or any unique prefix of it.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Show the index snapshot root hash and counts.
    Status {
        #[arg(long)]
        json: bool,
        /// Also check every cross-reference of the index; exit 1 if broken.
        #[arg(long)]
        verify: bool,
    },
    /// List the files and folders that could not be indexed.
    Errors {
        #[arg(long)]
        json: bool,
    },
    /// Transcode a file or an indexed track to Ogg Opus, as the home node
    /// streams it (an Opus or MP3 source at or below the bitrate is copied
    /// as it is). Whole-track transcodes go through the transcode cache.
    Transcode {
        /// A file path, or a track id (any unique prefix) from the index.
        input: String,
        /// Output file (written whole or not at all); `-` for stdout.
        #[arg(short, long)]
        output: PathBuf,
        /// Opus bitrate in kb/s, VBR (64, 96, 128, 192 or any value in
        /// 16..=256), or `original` for the file as it is.
        #[arg(long, default_value = "128")]
        bitrate: String,
        /// Start this many seconds into the track (a fresh stream from there).
        #[arg(long, default_value_t = 0.0)]
        start: f64,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Always transcode, even an Opus or MP3 source that already fits.
        #[arg(long)]
        no_passthrough: bool,
        /// Neither read nor fill the transcode cache.
        #[arg(long)]
        no_cache: bool,
        /// Size limit of the transcode cache, in MiB.
        #[arg(long, default_value_t = tunemesh::cache::DEFAULT_LIMIT >> 20)]
        cache_mib: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    quiet_contained_panics();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,lofty=error,symphonia=error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The scanner contains tag-reader panics and reports them per file; the
/// default hook would still print a backtrace banner for each. Scanner
/// threads log them at debug level instead.
fn quiet_contained_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("tunemesh-scan") {
            tracing::debug!("contained panic in scanner: {info}");
        } else {
            default(info);
        }
    }));
}

fn data_dir(cli: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = cli {
        return Ok(d.clone());
    }
    let dirs = directories::ProjectDirs::from("", "", "tunemesh")
        .context("cannot find a data directory; pass --data-dir")?;
    Ok(dirs.data_dir().to_path_buf())
}

/// A track from a file path (read as a scan would), or from the index by id
/// prefix.
fn find_track(dir: &Path, input: &str) -> Result<Track> {
    let path = Path::new(input);
    if path.exists() {
        return tunemesh::library::read_track(path).map_err(|e| anyhow::anyhow!(e));
    }
    let index = open_index(dir)?;
    let ids = index.resolve(input)?;
    match ids.as_slice() {
        [id] => index
            .track(id)?
            .with_context(|| format!("track {id} vanished from the index")),
        [] => bail!("{input}: no such file, and no indexed track id starts with it"),
        _ => bail!(
            "{input}: {} track ids start with it; give more digits",
            ids.len()
        ),
    }
}

/// Copy a stream to `-` (stdout) or to a file that appears only when whole.
fn write_output(stream: &mut Stream, output: &Path) -> Result<()> {
    if output == Path::new("-") {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        std::io::copy(stream, &mut out).context("transcode failed")?;
        out.flush()?;
        return Ok(());
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tunemesh-")
        .suffix(".part")
        .tempfile_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    std::io::copy(stream, tmp.as_file_mut()).context("transcode failed")?;
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

fn open_index(dir: &Path) -> Result<Index> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Index::open(dir)?)
}

fn run(cli: Cli) -> Result<()> {
    let dir = data_dir(&cli.data_dir)?;
    match cli.command {
        Command::Transcode {
            input,
            output,
            bitrate,
            start,
            duration,
            no_passthrough,
            no_cache,
            cache_mib,
        } => {
            let profile = match bitrate.as_str() {
                "original" => Profile::Original,
                b => Profile::Opus(
                    b.trim_end_matches('k')
                        .parse()
                        .with_context(|| format!("--bitrate {b}: expected kb/s or `original`"))?,
                ),
            };
            let track = find_track(&dir, &input)?;
            let cache = if no_cache {
                None
            } else {
                Some(Cache::open(&dir.join("cache"), cache_mib << 20)?)
            };
            let streamer = Streamer::new(cache);
            let mut req = StreamRequest::new(profile);
            req.start = start;
            req.duration = duration;
            req.passthrough = !no_passthrough;
            let mut stream = streamer.open(&track, &req)?;
            tracing::info!(via = ?stream.via, mime = stream.mime, "transcode");
            write_output(&mut stream, &output)?;
            if let Some(c) = streamer.cache() {
                c.wait_idle();
            }
            if output != Path::new("-") {
                eprintln!(
                    "{}: {} ({})",
                    output.display(),
                    match stream.via {
                        Via::Original => "original file",
                        Via::Passthrough => "source copied as it is (already fits the bitrate)",
                        Via::CacheHit => "from the transcode cache",
                        Via::Encode => "transcoded, now cached",
                        Via::Live => "transcoded",
                    },
                    stream.mime
                );
            }
        }
        Command::Scan {
            dirs,
            json,
            quiet,
            force,
            threads,
            file_timeout,
            watch,
        } => {
            let index = open_index(&dir)?;
            let scopes = add_roots(&index, &dirs)?;
            let mut opts = ScanOptions {
                force,
                file_timeout: Duration::from_secs(file_timeout.max(1)),
                ..ScanOptions::default()
            };
            if let Some(t) = threads {
                opts.threads = t.max(1);
            }
            let show_bar = !quiet && !json && std::io::stderr().is_terminal();
            let report = scan_with_progress(&index, &scopes, &opts, show_bar)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report);
            }
            if watch {
                watch_loop(&index, &opts, 500, json)?;
            }
        }
        Command::Watch {
            dirs,
            debounce_ms,
            json,
        } => {
            let index = open_index(&dir)?;
            add_roots(&index, &dirs)?;
            watch_loop(&index, &ScanOptions::default(), debounce_ms, json)?;
        }
        Command::Ls { json } => {
            let index = open_index(&dir)?;
            let mut tracks = index.tracks().collect::<Result<Vec<_>, _>>()?;
            tracks.sort_by_cached_key(|t| {
                (
                    t.tags.album_owner().to_lowercase(),
                    t.tags.album.to_lowercase(),
                    t.tags.disc.unwrap_or(0),
                    t.tags.track.unwrap_or(0),
                    t.tags.title.to_lowercase(),
                )
            });
            print_tracks(tracks.iter(), json)?;
        }
        Command::Search { query, json, limit } => {
            let index = open_index(&dir)?;
            let hits = index.search(&query.join(" "), limit)?;
            print_tracks(hits.iter().map(|(t, _)| t), json)?;
        }
        Command::Show { id, json } => {
            let index = open_index(&dir)?;
            let t = resolve_one(&index, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&track_json(&t))?);
            } else {
                print_track_details(&t);
            }
        }
        Command::Status { json, verify } => {
            let index = open_index(&dir)?;
            let snap = index.snapshot()?;
            let counts = index.counts()?;
            let roots = index.roots()?;
            let problems = if verify { Some(index.verify()?) } else { None };
            if json {
                let v = serde_json::json!({
                    "root": snap.root.to_hex(),
                    "counts": counts,
                    "roots": roots.iter().map(|r| r.to_string_lossy()).collect::<Vec<_>>(),
                    "data_dir": dir.to_string_lossy(),
                    "problems": problems,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("index root  {}", snap.root);
                println!("tracks      {}", counts.tracks);
                println!("files       {}", counts.files);
                println!("albums      {}", counts.albums);
                println!("artists     {}", counts.artists);
                println!("covers      {}", counts.covers);
                println!("errors      {}", counts.errors);
                println!("data dir    {}", dir.display());
                for r in &roots {
                    println!("library     {}", r.display());
                }
                if let Some(p) = &problems {
                    if p.is_empty() {
                        println!("verify      ok");
                    }
                    for line in p {
                        println!("PROBLEM     {line}");
                    }
                }
            }
            if problems.is_some_and(|p| !p.is_empty()) {
                std::process::exit(1);
            }
        }
        Command::Errors { json } => {
            let index = open_index(&dir)?;
            let errors = index.errors(None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&errors)?);
            } else {
                for e in &errors {
                    println!("{}: {}", e.path.display(), e.error);
                }
            }
        }
    }
    Ok(())
}

/// Register `dirs` as library folders; returns the folders to scan (all
/// library folders when `dirs` is empty).
fn add_roots(index: &Index, dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if dirs.is_empty() {
        let roots = index.roots()?;
        if roots.is_empty() {
            bail!("no library folders yet: add one with `tunemesh scan DIR`");
        }
        return Ok(library::watch::minimal_scopes(roots));
    }
    let mut canon = Vec::new();
    for d in dirs {
        let c = std::fs::canonicalize(d).with_context(|| format!("cannot scan {}", d.display()))?;
        if !c.is_dir() {
            bail!("cannot scan {}: not a folder", d.display());
        }
        canon.push(c);
    }
    let mut w = index.writer();
    for c in &canon {
        w.add_root(c);
    }
    w.commit()?;
    Ok(library::watch::minimal_scopes(canon))
}

fn scan_with_progress(
    index: &Index,
    scopes: &[PathBuf],
    opts: &ScanOptions,
    show_bar: bool,
) -> Result<ScanReport> {
    let bar = if show_bar {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} files read, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = library::scan(index, scopes, opts, &|p| {
        // While walking, more files to read keep turning up: the total is
        // at least what has been read.
        bar.set_length(p.to_read.max(p.read));
        bar.set_position(p.read);
        let found = p.found.max(p.read);
        bar.set_message(if p.walk_done {
            format!("reading ({found} files found)")
        } else {
            format!("walking ({found} files found)")
        });
    });
    bar.finish_and_clear();
    Ok(report?)
}

fn print_report(r: &ScanReport) {
    println!(
        "{} audio files, {} tracks: {} added, {} changed, {} removed, {} errors ({:.2} s)",
        r.files,
        r.tracks,
        r.added,
        r.changed,
        r.removed,
        r.errors.len(),
        r.elapsed_ms as f64 / 1000.0
    );
    for e in r.errors.iter().take(20) {
        println!("  {}: {}", e.path.display(), e.error);
    }
    if r.errors.len() > 20 {
        println!("  ... and {} more (tunemesh errors)", r.errors.len() - 20);
    }
}

fn watch_loop(index: &Index, opts: &ScanOptions, debounce_ms: u64, json: bool) -> Result<()> {
    let roots = library::watch::minimal_scopes(index.roots()?);
    if roots.is_empty() {
        bail!("no library folders to watch: add one with `tunemesh watch DIR`");
    }
    if !json {
        for r in &roots {
            eprintln!("watching {}", r.display());
        }
    }
    let stop = AtomicBool::new(false);
    library::watch::watch(
        index,
        &roots,
        opts,
        Duration::from_millis(debounce_ms),
        &stop,
        |scopes, report| {
            if json {
                if let Ok(s) = serde_json::to_string(report) {
                    println!("{s}");
                }
            } else {
                let what: Vec<_> = scopes.iter().map(|s| s.display().to_string()).collect();
                println!("rescanned {}", what.join(", "));
                print_report(report);
            }
        },
    )?;
    Ok(())
}

fn resolve_one(index: &Index, id: &str) -> Result<Track> {
    let ids = index.resolve(id)?;
    match ids.as_slice() {
        [] => bail!("no track with id {id:?}"),
        [one] => Ok(index.track(one)?.context("track vanished")?),
        many => bail!("{id:?} is ambiguous: {} tracks start with it", many.len()),
    }
}

fn track_json(t: &Track) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "title": t.tags.title,
        "artist": t.tags.artist(),
        "artists": t.tags.artists,
        "album": t.tags.album,
        "album_artist": t.tags.album_artist,
        "track": t.tags.track,
        "track_total": t.tags.track_total,
        "disc": t.tags.disc,
        "disc_total": t.tags.disc_total,
        "year": t.tags.year,
        "date": t.tags.date,
        "genres": t.tags.genres,
        "compilation": t.tags.compilation,
        "duration_ms": t.audio.duration_ms,
        "codec": t.audio.codec,
        "container": t.audio.container,
        "sample_rate": t.audio.sample_rate,
        "channels": t.audio.channels,
        "bit_depth": t.audio.bit_depth,
        "bitrate_kbps": t.audio.bitrate_kbps,
        "size": t.size,
        "cover": t.cover,
        "paths": t.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
    })
}

fn print_tracks<'a>(tracks: impl Iterator<Item = &'a Track>, json: bool) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        let v: Vec<_> = tracks.map(track_json).collect();
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        for t in tracks {
            let artist = t.tags.artist();
            let r = writeln!(
                out,
                "{}  {} — {} — {}{}  ({} {})",
                &t.id.to_hex()[..12],
                if artist.is_empty() {
                    "Unknown Artist"
                } else {
                    &artist
                },
                t.tags.album,
                t.tags.track.map(|n| format!("{n:02} ")).unwrap_or_default(),
                t.tags.title,
                fmt_duration(t.audio.duration_ms),
                t.audio.codec,
            );
            if r.is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

fn print_track_details(t: &Track) {
    let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    println!("id           {}", t.id);
    println!("title        {}", t.tags.title);
    println!("artist       {}", t.tags.artist());
    println!("album        {}", t.tags.album);
    println!("album artist {}", t.tags.album_artist);
    println!(
        "track        {}/{}",
        opt(t.tags.track),
        opt(t.tags.track_total)
    );
    println!(
        "disc         {}/{}",
        opt(t.tags.disc),
        opt(t.tags.disc_total)
    );
    println!("date         {}", t.tags.date.as_deref().unwrap_or("-"));
    println!("genre        {}", t.tags.genres.join("; "));
    println!("compilation  {}", t.tags.compilation);
    println!(
        "audio        {} in {}, {} Hz, {} ch, {} bit, {} kb/s, {}",
        t.audio.codec,
        t.audio.container,
        t.audio.sample_rate,
        t.audio.channels,
        opt(t.audio.bit_depth),
        opt(t.audio.bitrate_kbps),
        fmt_duration(t.audio.duration_ms)
    );
    println!("size         {} bytes", t.size);
    println!(
        "cover        {}",
        t.cover.map(|c| c.to_hex()).unwrap_or_else(|| "-".into())
    );
    for p in &t.paths {
        println!("path         {}", p.display());
    }
}

/// sled and the scanner allocate many small short-lived buffers; mimalloc
/// handles that pattern markedly better than glibc's allocator (a 10k-file
/// scan: 0.31 s against 0.38 s, measured).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
