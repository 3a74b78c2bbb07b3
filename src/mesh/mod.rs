//! The mesh: libp2p connections between the devices of one owner.
//!
//! Responsible for identity (the device key in the data dir), transports
//! (TCP and QUIC, noise, yamux), LAN discovery (mDNS), liveness (ping),
//! the signed member list and pairing (tickets, join), and two protocols:
//!
//! - `/tunemesh/ctl/1` (`ctl.rs`): join, announce (snapshot root + member
//!   list), library sync requests. A substream carries requests and
//!   answers in turn; the client pipelines (sends a group at once, reads
//!   the answers in order). Sync requests are answered by the node
//!   ([`Event::Request`]).
//! - `/tunemesh/stream/1` (`audio.rs`): one audio stream per substream;
//!   the node writes a [`StreamHead`], then chunks and the end marker
//!   ([`Event::Stream`], [`ChunkWriter`]); the asker reads them with a
//!   [`ChunkReader`].
//! - `/tunemesh/relay-auth/1` (client side here, server in `relay.rs`): we
//!   show relays our signed member list and open invitations.
//!
//! Away from home: the relay client transport (reservations on `--relay`
//! relays, circuits through them), DCUtR hole punching with raw observed
//! addresses as candidates (`candidates.rs`), AutoNAT against our relays,
//! UPnP on home nodes; the event loop dials direct addresses first and
//! drops relayed connections once a direct one is up (`dial.rs`,
//! `state.rs`).
//!
//! Shaped like rust-libp2p's file-sharing example: a cloneable [`Client`]
//! sends [`event_loop::Command`]s to an event loop task that alone owns the
//! `Swarm` and the peer state, and reads that state from a `watch` the loop
//! publishes; substreams are opened and accepted through `libp2p-stream`'s
//! `Control`, outside the loop.
//!
//! Files: `types.rs` (the vocabulary), `swarm.rs` (the swarm both roles
//! build), `client.rs`, `event_loop.rs` + `dial.rs` + `events.rs` (the
//! loop), `state.rs` (its state and pure rules), `addr.rs` (multiaddr
//! reading), `ctl.rs`, `audio.rs`, `members.rs`, `ticket.rs`, `relay.rs`,
//! `candidates.rs`, `wire.rs`.
//!
//! Must never: let a non-member past a join attempt (its connection is
//! closed, every protocol refuses it), hand a libp2p or prost type to
//! another module, block the event loop on anything but the swarm, or
//! fsync on a runtime thread.
//!
//! Known trap: `libp2p-stream` hands inbound substreams over a channel of
//! capacity one and drops the ones that do not fit (and rust-libp2p #5410
//! reports stalls over yamux). So: accept loops only move each substream
//! into its own task; many requests share one substream (pipelined) rather
//! than each opening its own; a broken substream is retried for the
//! requests it left unanswered (all idempotent but a join); stream opens
//! are retried; tests run many streams concurrently.

mod addr;
pub mod audio;
mod candidates;
mod client;
mod ctl;
mod dial;
mod event_loop;
mod events;
mod members;
mod relay;
mod state;
mod swarm;
mod ticket;
mod types;
mod userops;
mod wire;

pub use audio::MAX_GROUP_RANGES;
pub use audio::{Acker, Acks, ChunkReader, ChunkWriter, MeshStream};
pub use client::Client;
pub use ctl::{MAX_OUTBOARD_REPLY, MAX_RECIPES};
pub use members::{Device, MembersError};
pub use relay::{Relay, RelayConfig};
pub use ticket::TicketError;
pub use types::{
    Announcement, BlobAnswer, BlobWant, DeviceId, Event, NodeReply, PathKind, PeerInfo,
    Reachability, Recipe, RelayInfo, Request, Response, StreamHead, StreamOpen,
};
pub use userops::decode_stored as decode_stored_op;

use client::Shared;
use event_loop::EventLoop;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use members::{Members, Persister};
use state::{RelayState, State};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long a stranger may stay connected while invitations are open, to
/// present its ticket.
const JOIN_GRACE: Duration = Duration::from_secs(10);
/// How long a joiner keeps the connection to its inviter waiting for the
/// answer (slow links).
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Longest a control exchange may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a peer may take to send its request on a new substream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Default life of an invitation.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(600);
/// Once a direct connection is up, the relayed one lives this long more
/// (streams on it resume on the direct one).
const RELAYED_OVERLAP: Duration = Duration::from_millis(500);
/// Commands queued to the event loop at most (senders wait beyond).
const COMMANDS: usize = 256;

/// What the mesh's operations fail with.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The device key cannot be read or made.
    #[error("identity key {path}: {reason}")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The swarm cannot be built.
    #[error("cannot start the network: {0}")]
    Start(String),
    /// A listen address is bad or taken.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The member list.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// A ticket does not decode.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The caller's input.
    #[error("{0}")]
    BadInput(String),
    /// A peer (or this device) refused.
    #[error("{0}")]
    Refused(String),
    /// A peer cannot be reached.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: DeviceId,
        /// Why.
        reason: String,
    },
    /// A peer broke the protocol.
    #[error("{peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: DeviceId,
        /// What it did.
        reason: String,
    },
    /// The mesh stopped.
    #[error("the mesh is shutting down")]
    Closed,
}

/// How a node takes part in the mesh.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the key, the member list and known addresses live.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on; empty for every interface on random ports
    /// (TCP and QUIC).
    pub listen: Vec<String>,
    /// LAN discovery.
    pub mdns: bool,
    /// The device name members see.
    pub name: String,
    /// "home" or "phone".
    pub role: String,
    /// Relays to keep a reservation on (`…/p2p/<relay id>`), so members
    /// away from home reach us through them.
    pub relays: Vec<String>,
    /// Ask the router for a port mapping (UPnP IGD).
    pub upnp: bool,
}

/// A running mesh node: the handle that owns the event loop.
pub struct Mesh {
    client: Client,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `--relay` addresses, checked: each ends with the relay's id and is
/// not itself relayed.
fn configured_relays(relays: &[String]) -> Result<HashMap<libp2p::PeerId, RelayState>, MeshError> {
    let mut out = HashMap::new();
    for a in relays {
        let bad = |why: &str| MeshError::BadInput(format!("--relay {a}: {why}"));
        let addr: Multiaddr = a.parse().map_err(|e| bad(&format!("{e}")))?;
        let Some(Protocol::P2p(id)) = addr.iter().last() else {
            return Err(bad(
                "the address must end with /p2p/<relay id> (`tunemesh relay` prints it)",
            ));
        };
        if addr::is_circuit(&addr) {
            return Err(bad("give the relay's own address, not a relayed one"));
        }
        let r: &mut RelayState = out.entry(id).or_default();
        r.reserve = true;
        r.learn(addr);
    }
    Ok(out)
}

/// What `Mesh::start` reads from the data dir, on a blocking thread.
struct OnDisk {
    key: libp2p::identity::Keypair,
    members: Members,
    addrs: HashMap<libp2p::PeerId, Vec<Multiaddr>>,
}

fn load(cfg: &Config) -> Result<OnDisk, MeshError> {
    let key = swarm::load_or_create_key(&cfg.data_dir)?;
    let path = cfg.data_dir.join("members.pb");
    let members = match Members::load(&path)? {
        Some(m) => m,
        None => {
            let m = Members::found(&key, &cfg.name, &cfg.role, vec![]);
            m.save(&path)?;
            m
        }
    };
    let addrs = event_loop::load_addrs(&cfg.data_dir.join(event_loop::ADDRS_FILE));
    Ok(OnDisk {
        key,
        members,
        addrs,
    })
}

impl Mesh {
    /// Start the mesh: load (or create) the device key and member list,
    /// listen, and run the event loop until [`Mesh::shutdown`].
    pub async fn start(
        cfg: Config,
        local: Announcement,
        events: mpsc::Sender<Event>,
    ) -> Result<Mesh, MeshError> {
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let relays = configured_relays(&cfg.relays)?;
        let c = cfg.clone();
        let disk = tasks
            .spawn_blocking(move || load(&c))
            .await
            .map_err(|e| MeshError::Start(e.to_string()))??;
        let me = disk.key.public().to_peer_id();
        let opts = swarm::NodeOptions {
            mdns: cfg.mdns,
            upnp: cfg.upnp,
        };
        let mut swarm = swarm::node(disk.key.clone(), opts)?;
        for (id, r) in &relays {
            swarm.behaviour_mut().autonat.add_server(*id, r.primary());
        }
        let listen = if cfg.listen.is_empty() {
            vec![
                "/ip4/0.0.0.0/udp/0/quic-v1".to_string(),
                "/ip4/0.0.0.0/tcp/0".to_string(),
            ]
        } else {
            cfg.listen.clone()
        };
        let mut listeners = Vec::new();
        for a in &listen {
            let addr: Multiaddr = a.parse().map_err(|e| MeshError::Listen {
                addr: a.clone(),
                reason: format!("{e}"),
            })?;
            let id = swarm.listen_on(addr).map_err(|e| MeshError::Listen {
                addr: a.clone(),
                reason: e.to_string(),
            })?;
            listeners.push(id);
        }
        let mut control = swarm.behaviour().stream.new_control();
        let ctl_in = control
            .accept(ctl::CTL)
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let audio_in = control
            .accept(audio::AUDIO)
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let st = State {
            me,
            members: Arc::new(disk.members),
            listen: vec![],
            listeners_up: Default::default(),
            lan_seen: HashMap::new(),
            peers: HashMap::new(),
            addrs: disk.addrs,
            relays,
            external: Vec::new(),
            reachability: Reachability::Unknown,
        };
        let (view_tx, view_rx) = watch::channel(st.view());
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS);
        let client = Client {
            shared: Arc::new(Shared {
                key: disk.key,
                me,
                members_path: cfg.data_dir.join("members.pb"),
                cmd: cmd_tx,
                view: view_rx,
                local: watch::channel(local).0,
                invitations: Mutex::new(Default::default()),
                events,
                closed: tokio::sync::broadcast::channel(64).0,
                persister: Persister::start(&tasks, cancel.clone()),
                tasks,
                cancel,
            }),
            control,
        };
        let el = EventLoop::new(swarm, st, cmd_rx, view_tx, client.clone());
        client
            .shared
            .spawn(el.run().instrument(tracing::info_span!("mesh", me = %me)));
        let c = client.clone();
        client
            .shared
            .spawn(ctl::accept_loop(c, ctl_in, ctl::Inbound::Ctl));
        let c = client.clone();
        client
            .shared
            .spawn(ctl::accept_loop(c, audio_in, ctl::Inbound::Audio));
        // Wait (briefly) until every listener has its addresses, so the
        // first ticket and status carry them all.
        let mut view = client.shared.view.clone();
        let ready = view.wait_for(|v| listeners.iter().all(|l| v.listeners_up.contains(l)));
        let _ = tokio::time::timeout(Duration::from_secs(2), ready).await;
        Ok(Mesh { client })
    }

    /// A handle to the mesh.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stop every task of the mesh (connections close with the swarm;
    /// member lists queued for saving are saved first).
    pub async fn shutdown(self) {
        let s = &self.client.shared;
        s.cancel.cancel();
        s.tasks.close();
        s.tasks.wait().await;
    }
}
