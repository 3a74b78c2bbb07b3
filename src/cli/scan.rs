//! Commands on this device's index: scan, watch, ls, search, show, status
//! and errors. ls, search and status ask the running node instead when
//! there is one (it holds the index open).
//!
//! Owns: the progress bar (indicatif) and the offline track listing, in the
//! API's own track view with this device as the only source.
//!
//! Must never: write to the index while a node runs (the index is locked;
//! the error says so).

use super::args::{ErrorsArgs, LsArgs, ScanArgs, SearchArgs, ShowArgs, StatusArgs, WatchArgs};
use super::output::{self, Format, Layout};
use super::remote::{self, ApiClient, Scope};
use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tunemesh::http::dto::{SourceView, TrackView};
use tunemesh::index::Index;
use tunemesh::library::{self, ScanOptions, ScanReport};
use tunemesh::model::Track;
use tunemesh::node::state::StateDir;
use tunemesh::node::{NodeConfig, Role};

/// Whether to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Bar,
    Hidden,
}

/// `tunemesh scan`.
pub fn scan(dir: &Path, a: ScanArgs) -> Result<()> {
    let index = super::open_index(dir)?;
    let scopes = add_roots(&index, &a.dirs)?;
    let mut opts = ScanOptions {
        force: a.force,
        file_timeout: Duration::from_secs(a.file_timeout.max(1)),
        ..ScanOptions::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    let format = Format::json_if(a.json);
    let progress = if !a.quiet && format == Format::Text && std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Hidden
    };
    let report = scan_with_progress(&index, &scopes, &opts, progress)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => output::print_report(&report),
    }
    if a.watch {
        watch_loop(&index, &opts, 500, format)?;
    }
    Ok(())
}

/// `tunemesh watch`.
pub fn watch(dir: &Path, a: WatchArgs) -> Result<()> {
    let index = super::open_index(dir)?;
    add_roots(&index, &a.dirs)?;
    watch_loop(
        &index,
        &ScanOptions::default(),
        a.debounce_ms,
        Format::json_if(a.json),
    )
}

/// `tunemesh ls`: the node's library when one runs, else the index's.
pub fn ls(dir: &Path, a: LsArgs) -> Result<()> {
    let format = Format::json_if(a.json);
    if a.all {
        return remote::ls(dir, Scope::All, format);
    }
    if ApiClient::running(dir) {
        return remote::ls(dir, Scope::Local, format);
    }
    let index = super::open_index(dir)?;
    let mut tracks = index.tracks().collect::<Result<Vec<_>, _>>()?;
    // The catalog's order: the same list a running node gives.
    tracks.sort_by_cached_key(|t| (tunemesh::catalog::track_order(t), t.id));
    let me = this_device(dir)?;
    output::print_tracks(&local_views(&tracks, &me), format, Layout::Index)
}

/// `tunemesh search`: the merged library when a node runs, else the index.
pub fn search(dir: &Path, a: SearchArgs) -> Result<()> {
    let format = Format::json_if(a.json);
    let query = a.query.join(" ");
    if ApiClient::running(dir) {
        // The node holds the index; it also searches the merged library.
        return remote::search(dir, &query, a.limit, format);
    }
    let index = super::open_index(dir)?;
    let hits: Vec<Track> = index
        .search(&query, a.limit)?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let me = this_device(dir)?;
    output::print_tracks(&local_views(&hits, &me), format, Layout::Index)
}

/// `tunemesh show`.
pub fn show(dir: &Path, a: ShowArgs) -> Result<()> {
    let index = super::open_index(dir)?;
    let t = resolve_one(&index, &a.id)?;
    match Format::json_if(a.json) {
        Format::Json => {
            let me = this_device(dir)?;
            output::print_json(&TrackView::new(&t, vec![me.view()]))
        }
        Format::Text => {
            output::print_track_details(&t);
            Ok(())
        }
    }
}

/// `tunemesh status`: the node's when one runs (unless `--verify`), else
/// the index's.
pub fn status(dir: &Path, a: StatusArgs) -> Result<()> {
    let format = Format::json_if(a.json);
    if !a.verify && ApiClient::running(dir) {
        return remote::status(dir, format);
    }
    let index = super::open_index(dir)?;
    let snap = index.snapshot()?;
    let counts = index.counts()?;
    let roots = index.roots()?;
    let problems = if a.verify {
        Some(index.verify()?)
    } else {
        None
    };
    if format == Format::Json {
        let v = serde_json::json!({
            "root": snap.root.to_hex(),
            "counts": counts,
            "roots": roots.iter().map(|r| r.to_string_lossy()).collect::<Vec<_>>(),
            "data_dir": dir.to_string_lossy(),
            "problems": problems,
        });
        output::print_json(&v)?;
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
    Ok(())
}

/// `tunemesh errors`.
pub fn errors(dir: &Path, a: ErrorsArgs) -> Result<()> {
    let index = super::open_index(dir)?;
    let errors = index.errors(None)?;
    match Format::json_if(a.json) {
        Format::Json => output::print_json(&errors),
        Format::Text => {
            for e in &errors {
                println!("{}: {}", e.path.display(), e.error);
            }
            Ok(())
        }
    }
}

/// This device as the source of its own index's tracks (offline, so always
/// "online"): its id from its last run, its name as the node would give it.
struct ThisDevice {
    device: String,
    name: String,
}

impl ThisDevice {
    fn view(&self) -> SourceView<'_> {
        SourceView {
            device: Cow::Borrowed(&self.device),
            name: Cow::Borrowed(&self.name),
            local: true,
            online: true,
        }
    }
}

fn this_device(dir: &Path) -> Result<ThisDevice> {
    let state = StateDir::new(dir);
    let name = match state.name()? {
        Some(n) => n,
        None => NodeConfig::new(dir.to_path_buf(), Role::Home).name,
    };
    Ok(ThisDevice {
        device: state.device()?.unwrap_or_default(),
        name,
    })
}

fn local_views<'a>(tracks: &'a [Track], me: &'a ThisDevice) -> Vec<TrackView<'a>> {
    tracks
        .iter()
        .map(|t| TrackView::new(t, vec![me.view()]))
        .collect()
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
    progress: Progress,
) -> Result<ScanReport> {
    let bar = match progress {
        Progress::Bar => {
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
        }
        Progress::Hidden => indicatif::ProgressBar::hidden(),
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

fn watch_loop(index: &Index, opts: &ScanOptions, debounce_ms: u64, format: Format) -> Result<()> {
    let roots = library::watch::minimal_scopes(index.roots()?);
    if roots.is_empty() {
        bail!("no library folders to watch: add one with `tunemesh watch DIR`");
    }
    if format == Format::Text {
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
        |scopes, report| match format {
            Format::Json => {
                if let Ok(s) = serde_json::to_string(report) {
                    println!("{s}");
                }
            }
            Format::Text => {
                let what: Vec<_> = scopes.iter().map(|s| s.display().to_string()).collect();
                println!("rescanned {}", what.join(", "));
                output::print_report(report);
            }
        },
    )?;
    Ok(())
}

/// The one indexed track `id` (any unique prefix) names.
pub fn resolve_one(index: &Index, id: &str) -> Result<Track> {
    let prefix: tunemesh::catalog::Prefix = id.parse()?;
    let one = prefix.pick(index.ids_with(&prefix)?.into_iter())?;
    index.track(&one)?.context("track vanished")
}
