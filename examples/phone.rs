//! A phone node embedded in an app: join a mesh with a ticket, wait for the
//! home's library to arrive, and stream its first track to a file.
//!
//!     cargo run --example phone -- TICKET OUT_FILE [DATA_DIR]
//!
//! TICKET comes from `cargo run --example home_pc -- MUSIC_DIR` (or
//! `tunemesh invite`). OUT_FILE receives the first track of the merged
//! library as the device that holds it streams it: Ogg Opus at 96 kb/s, or
//! the file itself when it is an Opus or MP3 already at or below that rate
//! (the MIME type is printed).
//! DATA_DIR (default: `tunemesh-phone` in the system temp dir) keeps this
//! device's key and member list: a second run is already a member, and a
//! used ticket is then only a warning.
//!
//! Exits by itself: after the download, or after 60 s without a library.
//! `RUST_LOG=tunemesh=info` shows the node's log.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tunemesh::node::{LibraryTrack, Node, NodeConfig, Role};
use tunemesh::stream::Bitrate;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let usage = "usage: phone TICKET OUT_FILE [DATA_DIR]";
    let mut args = std::env::args().skip(1);
    let ticket = args.next().context(usage)?;
    let out = PathBuf::from(args.next().context(usage)?);
    let data = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tunemesh-phone"));

    let mut cfg = NodeConfig::new(data.clone(), Role::Phone);
    cfg.name = "phone example".into();
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("cannot start a phone node in {}", data.display()))?;
    println!("device   {}", node.device_id());
    // Whatever happens next, stop the node cleanly.
    let r = run(&node, &ticket, &out).await;
    node.shutdown().await;
    r
}

async fn run(node: &Node, ticket: &str, out: &std::path::Path) -> Result<()> {
    match node.join(ticket).await {
        Ok(devices) => {
            println!("joined mesh {}:", node.status().mesh);
            for d in devices {
                println!("  {}  {:<16} {}", d.id, d.name, d.role);
            }
        }
        // A second run with the same data dir: the ticket is spent, but we
        // are a member already.
        Err(e) if node.devices().len() > 1 => {
            eprintln!(
                "not joining again ({e}); already a member of {}",
                node.status().mesh
            )
        }
        Err(e) => return Err(e).context("cannot join"),
    }

    // The home announces its snapshot root and track count on connecting;
    // the library arrives with the sync that follows.
    let started = Instant::now();
    let lib = loop {
        let lib = node.library().await?;
        let announced = node
            .peers()
            .iter()
            .filter(|p| p.member && p.connected)
            .filter_map(|p| p.tracks)
            .max()
            .unwrap_or(0);
        // Tracks known from an earlier run are listed at once, but only
        // playable once their device is connected again.
        let playable = lib.iter().any(|t| t.sources.iter().any(|s| s.online));
        if playable && lib.len() as u64 >= announced {
            break lib;
        }
        if started.elapsed() > WAIT {
            bail!("no library from any device within {WAIT:?}; is the home node running?");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "\nlibrary: {} tracks (after {:.1?})",
        lib.len(),
        started.elapsed()
    );
    for t in &lib {
        println!("  {}", describe(t));
    }

    let first = lib
        .iter()
        .find(|t| t.sources.iter().any(|s| s.online))
        .context("no device holding a track is online")?;
    let id = first.track.id.to_hex();
    let started = Instant::now();
    let mut stream = node
        .open_stream(&id, Bitrate::from_wire(96), 0, 0)
        .await
        .with_context(|| format!("cannot stream {}", describe(first)))?;
    println!(
        "\nstreaming {} from {} ({}, via {})",
        first.track.tags.title, stream.source, stream.mime, stream.via
    );
    // Write next to OUT_FILE, then rename: a cut stream leaves no half file.
    let part = out.with_extension("part");
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let n = tokio::io::copy(&mut stream.reader, &mut file)
        .await
        .context("the stream failed")?;
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&part, out).await?;
    println!(
        "wrote {} bytes to {} in {:.1?}",
        n,
        out.display(),
        started.elapsed()
    );
    Ok(())
}

fn describe(t: &LibraryTrack) -> String {
    let g = &t.track.tags;
    let from: Vec<&str> = t
        .sources
        .iter()
        .map(|s| {
            if s.local {
                "this device"
            } else if s.name.is_empty() {
                "?"
            } else {
                s.name.as_str()
            }
        })
        .collect();
    format!(
        "{}  {} - {} - {}  [{}:{:02}]  ({})",
        &t.track.id.to_hex()[..12],
        g.artist(),
        g.album,
        g.title,
        t.track.audio.duration_ms / 60_000,
        t.track.audio.duration_ms / 1000 % 60,
        from.join(", ")
    )
}

/// Warnings by default; `RUST_LOG` for more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
