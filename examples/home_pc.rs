//! A home node embedded in an app: index a music folder, serve it to the
//! devices of the mesh, and print what is going on.
//!
//!     cargo run --example home_pc -- MUSIC_DIR [DATA_DIR]
//!
//! DATA_DIR (default: `tunemesh-home` in the system temp dir) keeps the
//! device key, the member list and the index, so a second run is the same
//! device with the same members. The node listens on every interface (TCP
//! and QUIC, random ports) and announces itself on the LAN by mDNS.
//!
//! It prints its device id, listen addresses and a one-time invitation
//! ticket (valid 10 minutes), then the size of the merged library every few
//! seconds. On another device, or in another terminal:
//!
//!     cargo run --example phone -- TICKET /tmp/first-track.opus
//!
//! Ctrl-C stops it cleanly. `RUST_LOG=tunemesh=info` shows the node's log.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use tunemesh::node::{Node, NodeConfig, Role};

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let mut args = std::env::args_os().skip(1);
    let music = PathBuf::from(args.next().context("usage: home_pc MUSIC_DIR [DATA_DIR]")?);
    let data = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tunemesh-home"));

    let mut cfg = NodeConfig::new(data.clone(), Role::Home);
    cfg.dirs = vec![music.clone()];
    cfg.name = "home-pc example".into();
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("cannot start a home node in {}", data.display()))?;

    let status = settled_status(&node).await;
    println!("device   {}", status.device);
    println!("mesh     {}", status.mesh);
    println!("data     {}", data.display());
    println!("music    {}", music.display());
    for a in &status.listen {
        println!("listen   {a}");
    }
    // The ticket carries the listen addresses known now (hence the wait).
    let ticket = node.invite(Duration::from_secs(600))?;
    println!("\nInvitation (valid 10 minutes, once):\n{ticket}\n");
    println!("On the phone: cargo run --example phone -- {ticket} OUT_FILE\n");

    // The first scan runs in the background; the library grows as it goes.
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // One listener for the whole loop: no Ctrl-C is lost between ticks.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.context("cannot wait for Ctrl-C")?;
                break;
            }
            _ = tick.tick() => {
                let lib = node.library().await?;
                let here = lib.iter().filter(|t| t.sources.iter().any(|s| s.local)).count();
                let s = node.status();
                println!(
                    "library: {} tracks ({here} here, {} only on other devices); devices {}, connected {}",
                    lib.len(),
                    lib.len() - here,
                    s.members,
                    s.connected,
                );
            }
        }
    }
    eprintln!("stopping…");
    node.shutdown().await;
    eprintln!("stopped");
    Ok(())
}

/// The node's status once its listen addresses stop changing: `start`
/// returns as soon as the first one is known, and each transport and
/// interface reports its own a moment later (at most 2 s).
async fn settled_status(node: &Node) -> tunemesh::node::Status {
    let mut status = node.status();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = node.status();
        if now.listen == status.listen && !now.listen.is_empty() {
            return now;
        }
        status = now;
    }
    status
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
