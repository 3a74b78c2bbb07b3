//! Shared user state benchmark, with in-process nodes on loopback (real
//! libp2p connections, real sled databases):
//!
//! 1. a home holding `--plays` plays and `--playlists` playlists of
//!    `--entries` tracks; a new device joins: bytes on the wire (both ways)
//!    and time until it holds every operation;
//! 2. one new play at the home: bytes until the other device has it (the
//!    floor is 1 KiB), and the time it takes;
//! 3. a star on one device until the other shows it (`--rounds` times);
//! 4. a restart of the new device: its views rebuilt from the log.

mod common;

use common::{median, section, Res};
use std::time::{Duration, Instant};
use tunemesh::model::TrackId;
use tunemesh::node::{Node, NodeConfig, Role};
use tunemesh::userdata::{Item, Play};

/// Shared user state: first sync, one play, star latency.
#[derive(clap::Parser)]
#[command(bin_name = "cargo bench --bench userstate --")]
struct Args {
    #[command(flatten)]
    cargo: common::args::CargoBench,
    /// Plays at the home before the new device joins.
    #[arg(long, default_value_t = 10_000)]
    plays: usize,
    /// Playlists at the home.
    #[arg(long, default_value_t = 200)]
    playlists: usize,
    /// Tracks in each playlist.
    #[arg(long, default_value_t = 50)]
    entries: usize,
    /// Stars timed from one device to the other.
    #[arg(long, default_value_t = 20, value_parser = common::args::at_least_one())]
    rounds: usize,
}

fn config(dir: &std::path::Path, name: &str) -> NodeConfig {
    let mut c = NodeConfig::new(dir.to_path_buf(), Role::Phone);
    c.mdns = false;
    c.upnp = false;
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.name = name.into();
    c
}

fn track(n: usize) -> TrackId {
    TrackId::of(&n.to_le_bytes())
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Res<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            return Err(format!("not within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(t.elapsed())
}

fn held(n: &Node) -> u64 {
    n.user_sync_stats().held
}

async fn run(a: Args) -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let home = Node::start(config(&tmp.path().join("home"), "home")).await?;
    let now = i64::try_from(std::time::UNIX_EPOCH.elapsed()?.as_millis())?;
    let t = Instant::now();
    for chunk in (0..a.plays).collect::<Vec<_>>().chunks(1000) {
        let plays = chunk
            .iter()
            .map(|&i| Play {
                track: track(i % 3000),
                started_ms: now - 3_600_000 * 24 * 30 + i as i64 * 60_000,
                ms_played: 180_000,
            })
            .collect();
        home.record_plays(plays).await?;
    }
    for p in 0..a.playlists {
        let tracks = (0..a.entries).map(|e| track(p * 7 + e)).collect();
        home.create_playlist(&format!("Playlist {p}"), tracks)
            .await?;
    }
    let ops = held(&home);
    section(&format!(
        "1. first sync: {} plays, {} playlists × {} tracks ({ops} operations; made in {:.1?})",
        a.plays,
        a.playlists,
        a.entries,
        t.elapsed()
    ));
    let phone = Node::start(config(&tmp.path().join("phone"), "phone")).await?;
    let (h0, p0) = (home.user_sync_stats().bytes, phone.user_sync_stats().bytes);
    let t = Instant::now();
    phone.join(&home.invite(Duration::from_secs(60))?).await?;
    let took = until(Duration::from_secs(120), || held(&phone) == ops).await?;
    let _ = t;
    // Let the pushes and checks that were in flight settle before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = home.user_sync_stats().bytes - h0 + phone.user_sync_stats().bytes - p0;
    println!(
        "  bytes on the wire (both ways)  {bytes} ({:.1} per operation, {:.2} MiB)",
        bytes as f64 / ops as f64,
        bytes as f64 / 1048576.0
    );
    println!(
        "  time to the new device         {:.0} ms (join to every operation held)",
        took.as_secs_f64() * 1e3
    );
    let same = phone.user_state(|v| v.play_count()) == a.plays
        && phone.playlists().len() == a.playlists
        && phone
            .playlists()
            .iter()
            .all(|p| p.entries.len() == a.entries);
    println!("  the new device shows it all    {same}");

    section("2. one new play at the home");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (h0, p0) = (home.user_sync_stats().bytes, phone.user_sync_stats().bytes);
    let t = Instant::now();
    home.record_plays(vec![Play {
        track: track(1),
        started_ms: now,
        ms_played: 200_000,
    }])
    .await?;
    until(Duration::from_secs(10), || held(&phone) == ops + 1).await?;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes = home.user_sync_stats().bytes - h0 + phone.user_sync_stats().bytes - p0;
    println!("  bytes on the wire (both ways)  {bytes} (floor: under 1024)");
    println!(
        "  time to the other device       {:.1} ms",
        took.as_secs_f64() * 1e3
    );

    section(&format!(
        "3. a star on the phone until the home shows it ({} rounds)",
        a.rounds
    ));
    let mut ms = Vec::new();
    for r in 0..a.rounds {
        let item = Item::Track(track(100_000 + r));
        let t = Instant::now();
        phone.star(vec![item], true).await?;
        let acked = t.elapsed();
        until(Duration::from_secs(10), || {
            home.mine(&item).starred_at.is_some()
        })
        .await?;
        ms.push((t.elapsed().as_secs_f64() * 1e3, acked.as_secs_f64() * 1e3));
    }
    let seen: Vec<f64> = ms.iter().map(|m| m.0).collect();
    let acked: Vec<f64> = ms.iter().map(|m| m.1).collect();
    let max = seen.iter().cloned().fold(0.0, f64::max);
    println!(
        "  star → shown on the other      p50 {:.1} ms, max {max:.1} ms (of which durable on the phone: p50 {:.1} ms)",
        median(seen),
        median(acked)
    );
    section("4. a restart: the views rebuilt from the log");
    let held_before = held(&phone);
    phone.shutdown().await;
    drop(phone);
    let t = Instant::now();
    let phone = Node::start(config(&tmp.path().join("phone"), "phone")).await?;
    let took = t.elapsed();
    println!(
        "  node start with {held_before} operations logged   {:.0} ms (all held again: {})",
        took.as_secs_f64() * 1e3,
        held(&phone) == held_before
    );
    for n in [phone, home] {
        n.shutdown().await;
    }
    Ok(())
}

fn main() -> Res<()> {
    let a: Args = common::args::parse();
    println!("tunemesh shared state bench ({})", common::loadavg());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(a))
}
