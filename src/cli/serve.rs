//! `tunemesh serve` (this device's node and its HTTP API) and `tunemesh
//! relay`, each until Ctrl-C or SIGTERM.
//!
//! Owns: the tokio runtime of the binary, the startup banner, the order of
//! startup and shutdown (`api.json` appears once the API answers and goes
//! when it stops).
//!
//! Must never: do blocking file I/O inside the runtime: state files are
//! read and written on the main thread between `block_on` calls, while the
//! runtime's workers run the node.

use super::args::{RelayArgs, ServeArgs};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;
use tunemesh::index::Index;
use tunemesh::mesh::{DeviceId, Relay, RelayConfig};
use tunemesh::node::state::{ApiInfo, RelayInfoFile, StateDir};
use tunemesh::node::{Node, NodeConfig, Role};

/// `tunemesh serve`.
pub fn serve(dir: &Path, a: ServeArgs) -> Result<()> {
    let state = StateDir::new(dir);
    state.create()?;
    let role = choose_role(dir, a.role.as_deref(), &a.dirs);
    let api = a.api;
    let (web, web_hosts) = (a.web, lan_names(&a.web_host));
    let accounts = tunemesh::accounts::Accounts::new(dir);
    if web.is_some() && accounts.is_empty()? {
        anyhow::bail!(
            "--web serves the player to other PCs, who log in with an account, and none exists: \
             make one first with `tunemesh user add NAME`"
        );
    }
    let cfg = node_config(&state, role, a)?;
    let token = state.api_token()?;
    let rt = runtime("tunemesh-rt")?;
    let (listener, lan, node, status) = rt.block_on(async {
        let listener = tunemesh::http::bind(api)
            .await
            .with_context(|| format!("cannot listen on {api} for the HTTP API"))?;
        let lan = match web {
            Some(w) => Some(tunemesh::http::LanListener {
                listener: tunemesh::http::bind_lan(w)
                    .await
                    .with_context(|| format!("cannot listen on {w} for the web player"))?,
                names: web_hosts,
            }),
            None => None,
        };
        let node = Node::start(cfg).await?;
        let status = node.status();
        anyhow::Ok((listener, lan, node, status))
    })?;
    let addr = listener.local_addr()?;
    state.save_device(&status.device)?;
    state.save_api_info(&ApiInfo {
        url: format!("http://{addr}"),
        token: token.as_str().to_string(),
        device: status.device.clone(),
        pid: std::process::id(),
    })?;
    eprintln!("tunemesh {} node {}", role.as_str(), status.device);
    eprintln!("  mesh     {}", status.mesh);
    for a in &status.listen {
        eprintln!("  listen   {a}");
    }
    for r in &status.relays {
        eprintln!("  relay    {}", r.addr.as_deref().unwrap_or(&r.id));
    }
    eprintln!(
        "  api      http://{addr}  (token in {})",
        state.api_info_path().display()
    );
    eprintln!("  player   http://{addr}/  (log in: tunemesh open)");
    if let Some(l) = &lan {
        eprintln!(
            "  web      http://{}/  (accounts: tunemesh user ls)",
            l.listener.local_addr()?
        );
    }
    rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let api_task = tokio::spawn(tunemesh::http::serve(
            node.clone(),
            listener,
            lan,
            token.clone(),
            accounts,
            cancel.clone(),
        ));
        wait_for_signal().await;
        eprintln!("stopping…");
        cancel.cancel();
        let _ = api_task.await;
        node.shutdown().await;
    });
    state.remove_api_info();
    Ok(())
}

/// The names the `--web` listener answers: those given, and this host's
/// own name (bare and `.local`, as mDNS resolves it).
fn lan_names(given: &[String]) -> Vec<String> {
    let mut names: Vec<String> = given
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim().to_ascii_lowercase();
        if !h.is_empty() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
    }
    names
}

/// `--role`, else home when folders are given or were indexed before.
fn choose_role(dir: &Path, given: Option<&str>, dirs: &[std::path::PathBuf]) -> Role {
    match given {
        Some("phone") => Role::Phone,
        Some(_) => Role::Home,
        None if !dirs.is_empty() => Role::Home,
        // A node that indexed folders before stays a home node.
        None if dir.join("index").exists() && has_roots(dir) => Role::Home,
        None => Role::Phone,
    }
}

fn has_roots(dir: &Path) -> bool {
    Index::open(dir)
        .and_then(|i| i.roots())
        .map(|r| !r.is_empty())
        .unwrap_or(false)
}

/// The node's configuration from the arguments and the state kept from
/// earlier runs (a name or relays given now are kept for later ones).
fn node_config(state: &StateDir, role: Role, a: ServeArgs) -> Result<NodeConfig> {
    let mut cfg = NodeConfig::new(state.path().to_path_buf(), role);
    cfg.dirs = a.dirs;
    cfg.listen = a.listen;
    cfg.mdns = !a.no_mdns;
    cfg.upnp = !a.no_upnp && role == Role::Home;
    cfg.cache_bytes = a.cache_mib << 20;
    // Relays given once are kept; `--relay none` forgets them.
    cfg.relays = if a.relay.is_empty() {
        state.relays()?
    } else {
        let keep: Vec<String> = a.relay.into_iter().filter(|r| r != "none").collect();
        state.save_relays(&keep)?;
        keep
    };
    // A name given once is kept (the other devices show it).
    match a.name {
        Some(n) => {
            state.save_name(&n)?;
            cfg.name = n;
        }
        None => {
            if let Some(n) = state.name()? {
                cfg.name = n;
            }
        }
    }
    Ok(cfg)
}

/// `tunemesh relay`.
pub fn relay(dir: &Path, a: RelayArgs) -> Result<()> {
    let meshes = a
        .mesh
        .iter()
        .map(|m| {
            m.parse::<DeviceId>()
                .map_err(|e| anyhow::anyhow!("--mesh: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let listen = if a.listen.is_empty() {
        vec![
            "/ip4/0.0.0.0/udp/4001/quic-v1".to_string(),
            "/ip4/0.0.0.0/tcp/4001".to_string(),
        ]
    } else {
        a.listen
    };
    let cfg = RelayConfig {
        // Its own key: a relay on the same host as a node is another peer.
        data_dir: dir.join("relay"),
        listen,
        external: a.external,
        meshes,
        max_circuit: Duration::from_secs(a.max_circuit_hours.max(1) * 3600),
    };
    let state = StateDir::new(dir);
    let rt = runtime("tunemesh-relay")?;
    let relay = rt.block_on(Relay::start(cfg))?;
    let info = RelayInfoFile {
        id: relay.id().to_string(),
        addrs: relay.addrs(),
    };
    state.save_relay_info(&info)?;
    eprintln!("tunemesh relay {}", info.id);
    for a in &info.addrs {
        eprintln!("  address  {a}   (give it to the home node: serve --relay {a})");
    }
    rt.block_on(async {
        wait_for_signal().await;
        eprintln!("stopping…");
        relay.shutdown().await;
    });
    state.remove_relay_info();
    Ok(())
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()?)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
