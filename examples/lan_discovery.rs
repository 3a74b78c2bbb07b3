//! Two devices of one owner finding each other on the LAN, in one process:
//!
//!     cargo run --example lan_discovery [-- MUSIC_DIR]
//!
//! A home node (serving MUSIC_DIR, by default the committed test fixtures)
//! and a phone node start in two temporary data dirs with mDNS on. The
//! phone joins the home's mesh with an invitation ticket, which carries the
//! home's addresses; both print their peers (path, round trip, announced
//! tracks).
//!
//! Then both stop and start again on fresh random ports, so no address
//! either one stored still works: they meet again through mDNS alone, and
//! print their peers once more. Exits by itself within about 15 s.
//!
//! mDNS needs a multicast-capable interface with an IPv4 address (loopback
//! does not count), as any LAN or VM network has. A peer shows as "lan"
//! when mDNS announced the address it is connected on, or the address is
//! private (RFC 1918, link-local, loopback); "direct" otherwise. `RUST_LOG=tunemesh=info` shows the nodes' logs.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tunemesh::node::{Node, NodeConfig, Role};

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let music = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lib"));
    let home_dir = tempfile::tempdir()?;
    let phone_dir = tempfile::tempdir()?;
    let t0 = Instant::now();

    // ----- pair through a ticket ---------------------------------------------
    let home = start(home_dir.path(), Role::Home, Some(&music)).await?;
    let phone = start(phone_dir.path(), Role::Phone, None).await?;
    let ticket = home.invite(Duration::from_secs(60))?;
    phone.join(&ticket).await.context("the phone cannot join")?;
    let tracks = wait_for_library(&home, &phone, Duration::from_secs(5)).await?;
    println!(
        "paired through a ticket in {:.1?}; the phone sees {tracks} tracks",
        t0.elapsed()
    );
    print_peers("home", &home);
    print_peers("phone", &phone);

    // ----- restart on new ports: only mDNS can bring them together -----------
    home.shutdown().await;
    phone.shutdown().await;
    drop((home, phone));
    println!("\nboth stopped; starting again on new random ports…");
    let restarted = Instant::now();
    let home = start(home_dir.path(), Role::Home, None).await?;
    let phone = start(phone_dir.path(), Role::Phone, None).await?;
    let deadline = Duration::from_secs(12);
    let r = async {
        loop {
            let connected = phone
                .peers()
                .iter()
                .any(|p| p.id == home.device_id().to_string() && p.connected);
            if connected {
                break Ok(restarted.elapsed());
            }
            if restarted.elapsed() > deadline {
                bail!(
                    "the phone did not find the home within {deadline:?}: is there a \
                     multicast-capable interface with an IPv4 address (mDNS)?"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    if let Ok(took) = &r {
        // A moment for the first ping and announcement to land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("found each other again by mDNS in {took:.1?}");
        print_peers("home", &home);
        print_peers("phone", &phone);
    }
    home.shutdown().await;
    phone.shutdown().await;
    println!("\ndone in {:.1?}", t0.elapsed());
    r.map(|_| ())
}

async fn start(dir: &Path, role: Role, music: Option<&Path>) -> Result<Node> {
    let mut cfg = NodeConfig::new(dir.to_path_buf(), role);
    cfg.name = format!("{}-example", role.as_str());
    cfg.mdns = true;
    cfg.dirs = music.map(Path::to_path_buf).into_iter().collect();
    Node::start(cfg)
        .await
        .with_context(|| format!("cannot start the {} node", role.as_str()))
}

/// Wait until the phone's merged library holds everything the home has.
async fn wait_for_library(home: &Node, phone: &Node, limit: Duration) -> Result<usize> {
    let started = Instant::now();
    loop {
        let want = home.library().await?.len();
        let got = phone.library().await?.len();
        if want > 0 && got >= want {
            return Ok(got);
        }
        if started.elapsed() > limit {
            bail!("the phone has {got} of the home's {want} tracks after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_peers(who: &str, node: &Node) {
    println!("peers of the {who} ({}):", node.device_id());
    let peers = node.peers();
    if peers.is_empty() {
        println!("  (none)");
    }
    for p in peers {
        println!(
            "  {}…  {:<14} {:<6} {:<8} {:<7} rtt {:>9}  tracks {:>4}  {}",
            &p.id[..16.min(p.id.len())],
            p.name,
            p.role,
            if p.member { "member" } else { "stranger" },
            if p.connected {
                p.path.map_or("", tunemesh::mesh::PathKind::as_str)
            } else {
                "offline"
            },
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
            p.tracks.map_or("-".into(), |t| t.to_string()),
            p.addr.as_deref().unwrap_or(""),
        );
    }
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
