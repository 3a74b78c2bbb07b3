//! How the commands print: track lists, track details, scan reports, the
//! node's status, peers and devices, as text or as JSON.
//!
//! Owns: the text layouts; JSON is always a `tunemesh::http::dto` type (or
//! a library type that is its own report, like `ScanReport`), so a listing
//! has one schema wherever it comes from.
//!
//! Must never: read the index or call the node (callers hand over what to
//! print).

use anyhow::Result;
use std::io::Write;
use std::path::Path;
use tunemesh::http::dto::{DeviceView, PeerView, StatusView, TrackView};
use tunemesh::library::ScanReport;
use tunemesh::model::Track;

/// Text for people, or JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines of text.
    Text,
    /// One JSON document.
    Json,
}

impl Format {
    /// JSON when `--json` was given.
    pub fn json_if(flag: bool) -> Format {
        if flag {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// How a track list's text lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// This device's index: track number and codec.
    Index,
    /// The merged library: which devices hold each track.
    Library,
}

/// Print `v` as pretty JSON.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Print a list of tracks; a closed stdout (piped into `head`) ends it quietly.
pub fn print_tracks(tracks: &[TrackView], format: Format, layout: Layout) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if format == Format::Json {
        serde_json::to_writer(&mut out, tracks)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    for t in tracks {
        let line = match layout {
            Layout::Index => index_line(t),
            Layout::Library => library_line(t),
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
    }
    let _ = out.flush();
    Ok(())
}

fn index_line(t: &TrackView) -> String {
    format!(
        "{}  {} — {} — {}{}  ({} {})",
        &t.id.to_hex()[..12],
        if t.artist.is_empty() {
            "Unknown Artist"
        } else {
            &t.artist
        },
        t.album,
        t.track.map(|n| format!("{n:02} ")).unwrap_or_default(),
        t.title,
        fmt_duration(t.duration_ms),
        t.codec,
    )
}

fn library_line(t: &TrackView) -> String {
    let sources: Vec<&str> = t
        .sources
        .iter()
        .map(|s| {
            if s.local {
                "this device"
            } else if s.name.is_empty() {
                "?"
            } else {
                &s.name
            }
        })
        .collect();
    let secs = t.duration_ms / 1000;
    format!(
        "{}  {} - {} - {}  [{}:{:02}]  ({})",
        &t.id.to_hex()[..12],
        t.artist,
        t.album,
        t.title,
        secs / 60,
        secs % 60,
        sources.join(", ")
    )
}

/// `m:ss`.
pub fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Every field of one track, a line each.
pub fn print_track_details(t: &Track) {
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

/// A scan's summary and its first 20 errors.
pub fn print_report(r: &ScanReport) {
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

/// The running node's status.
pub fn print_status(v: &StatusView, dir: &Path) {
    println!("device      {}", v.device);
    println!("name        {}", v.name);
    println!("role        {}", v.role);
    println!("mesh        {}", v.mesh);
    println!("index root  {}", v.root);
    println!("tracks      {}", v.tracks);
    println!("members     {} ({} connected)", v.members, v.connected);
    for a in &v.listen {
        println!("listen      {a}");
    }
    println!("reachable   {}", v.reachability);
    for r in &v.relays {
        let state = if r.reserved {
            "reservation held"
        } else if r.accepted {
            "accepted"
        } else if r.connected {
            "connected"
        } else {
            "not connected"
        };
        println!(
            "relay       {}  {state}{}",
            r.addr.as_deref().unwrap_or(&r.id),
            r.error
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
    }
    println!("data dir    {}", dir.display());
}

/// The mesh's devices.
pub fn print_devices(devices: &[DeviceView], format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(devices);
    }
    for d in devices {
        println!(
            "{}  {:<12} {:<6}{}",
            d.id,
            d.name,
            d.role,
            if d.this_device { "  (this device)" } else { "" }
        );
    }
    Ok(())
}

/// The peers the node sees.
pub fn print_peers(peers: &[PeerView], format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(peers);
    }
    for p in peers {
        let rtt = p.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1} ms"));
        println!(
            "{}  {:<12} {:<6} {:<10} {:>9}  {}{}",
            p.id,
            p.name,
            p.role,
            if p.connected { &p.path } else { "offline" },
            rtt,
            match &p.relay {
                Some(r) => format!("through relay {r}"),
                None => p.addr.clone().unwrap_or_default(),
            },
            if p.member || p.role == "relay" {
                ""
            } else {
                "  (stranger)"
            },
        );
    }
    Ok(())
}
