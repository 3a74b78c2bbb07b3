//! The mesh: libp2p connections between the devices of one owner.
//!
//! Responsible for identity (the device key in the data dir), transports
//! (TCP and QUIC, noise, yamux), LAN discovery (mDNS), liveness (ping),
//! the signed member list and pairing (tickets, join), and two protocols:
//!
//! - `/tunemesh/ctl/1`: join, announce (snapshot root + member list),
//!   library sync requests. A substream carries requests and answers in
//!   turn; the client pipelines (sends a group at once, reads the answers
//!   in order). Sync requests are answered by the node ([`Event::Request`]).
//! - `/tunemesh/stream/1`: one audio stream per substream; the node writes
//!   a [`StreamHead`] then the bytes ([`Event::Stream`]).
//! - `/tunemesh/relay-auth/1` (client side here, server in `relay.rs`): we
//!   show relays our signed member list and open invitations.
//!
//! Away from home: the relay client transport (reservations on `--relay`
//! relays, circuits through them), DCUtR hole punching with raw observed
//! addresses as candidates (`candidates.rs`), AutoNAT against our relays,
//! UPnP on home nodes; the event loop (`event_loop.rs`) dials direct
//! addresses first and drops relayed connections once a direct one is up.
//!
//! Shaped like rust-libp2p's file-sharing example: a cloneable [`Client`]
//! talks to an event loop task that alone owns the `Swarm`; substreams are
//! opened and accepted through `libp2p-stream`'s `Control`, outside the loop.
//!
//! Must never: let a non-member past a join attempt (its connection is
//! closed, every protocol refuses it), hand a libp2p or prost type to
//! another module, or block the event loop on anything but the swarm.
//!
//! Known trap: `libp2p-stream` hands inbound substreams over a channel of
//! capacity one and drops the ones that do not fit (and rust-libp2p #5410
//! reports stalls over yamux). So: accept loops only move each substream
//! into its own task; many requests share one substream (pipelined) rather
//! than each opening its own; a broken substream is retried for the
//! requests it left unanswered (all idempotent but a join); stream opens
//! are retried; tests run many streams concurrently.

mod candidates;
mod event_loop;
mod members;
mod relay;
mod ticket;
mod wire;

pub use members::{Device, MembersError};
pub use relay::{Relay, RelayConfig};
pub use ticket::TicketError;

use crate::index::snapshot::Entry;
use crate::model::{Hash32, TrackId};
use crate::proto;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, mdns, noise, ping, tcp, upnp, yamux, Multiaddr, PeerId,
    StreamProtocol,
};
use members::Members;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ticket::Ticket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

const CTL: StreamProtocol = StreamProtocol::new("/tunemesh/ctl/1");
const IDENTIFY: &str = "/tunemesh/id/1";
const AUDIO: StreamProtocol = StreamProtocol::new("/tunemesh/stream/1");
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
/// How often an unreachable member, or a relay, is dialled again.
const REDIAL: Duration = Duration::from_secs(10);
/// Direct addresses get this head start before the relay is tried.
const DIRECT_HEAD_START: Duration = Duration::from_millis(250);
/// Once a direct connection is up, the relayed one lives this long more
/// (streams on it resume on the direct one).
const RELAYED_OVERLAP: Duration = Duration::from_millis(500);

/// A device id: the libp2p PeerId of the device's key, in its usual text
/// form (`12D3KooW…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(PeerId);

impl DeviceId {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }
    pub fn from_bytes(b: &[u8]) -> Option<DeviceId> {
        PeerId::from_bytes(b).ok().map(DeviceId)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = MeshError;
    fn from_str(s: &str) -> Result<Self, MeshError> {
        s.parse()
            .map(DeviceId)
            .map_err(|e| MeshError::BadInput(format!("{s:?} is not a device id: {e}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("identity key {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("cannot start the network: {0}")]
    Start(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(transparent)]
    Members(#[from] MembersError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot reach {peer}: {reason}")]
    Unreachable { peer: DeviceId, reason: String },
    #[error("{peer}: {reason}")]
    Protocol { peer: DeviceId, reason: String },
    #[error("the mesh is shutting down")]
    Closed,
}

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Announcement {
    pub root: Hash32,
    pub tracks: u64,
    pub name: String,
    pub role: String,
}

/// A library sync request from a member.
#[derive(Debug, Clone)]
pub enum Request {
    /// The snapshot trie under `path` (nibbles), answered against `root`.
    GetNode {
        root: Hash32,
        path: Vec<u8>,
        max_entries: u32,
        with_records: bool,
    },
    /// Encoded track records by id.
    GetRecords(Vec<TrackId>),
}

/// Part of a snapshot trie: the children's hashes, or every entry below.
#[derive(Debug, Clone)]
pub struct NodeReply {
    pub root: Hash32,
    pub children: Option<Box<[Hash32; 16]>>,
    pub entries: Vec<Entry>,
    pub records: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Response {
    Node(NodeReply),
    Records(Vec<Vec<u8>>),
    Error(String),
}

/// A request to stream one track.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOpen {
    pub track: TrackId,
    /// Opus bitrate; 0 for the original file.
    pub kbps: u32,
    pub start_ms: u64,
    pub offset: u64,
}

/// The serving side's answer, before the bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamHead {
    pub error: Option<String>,
    pub mime: String,
    pub total_len: Option<u64>,
    pub complete: bool,
    pub via: String,
}

/// An audio substream, as tokio I/O.
pub struct MeshStream(Compat<libp2p::Stream>);

impl MeshStream {
    /// Send the head of a stream (the serving side, before the bytes).
    pub async fn write_head(&mut self, head: &StreamHead) -> Result<(), MeshError> {
        let msg = proto::StreamHead {
            error: head.error.clone().unwrap_or_default(),
            mime: head.mime.clone(),
            total_len: head.total_len.unwrap_or(0),
            complete: head.complete,
            via: head.via.clone(),
        };
        wire::write(self.0.get_mut(), &msg, wire::MAX_STREAM_HEAD)
            .await
            .map_err(|e| MeshError::Refused(e.to_string()))
    }
}

impl tokio::io::AsyncRead for MeshStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for MeshStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// What the mesh tells the node.
pub enum Event {
    /// A member told us its snapshot root (on connecting and after changes).
    Announced {
        from: DeviceId,
        announcement: Announcement,
    },
    /// A member asks for part of our library.
    Request {
        from: DeviceId,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A member asks for a stream; write the head, then the bytes.
    Stream {
        from: DeviceId,
        open: StreamOpen,
        stream: MeshStream,
    },
    /// The member list changed (a join, a revocation, a merge).
    MembersChanged,
    Connected(DeviceId),
    Disconnected(DeviceId),
}

/// How we reach a peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub member: bool,
    pub connected: bool,
    /// "lan", "direct" or "relayed" (empty when not connected).
    pub path: String,
    pub addr: Option<String>,
    pub rtt_ms: Option<f64>,
    /// The relay's device id when the path is "relayed".
    pub relay: Option<String>,
    /// Snapshot root and track count it last announced.
    pub root: Option<String>,
    pub tracks: Option<u64>,
}

/// How a node takes part in the mesh.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on; empty for every interface on random ports
    /// (TCP and QUIC).
    pub listen: Vec<String>,
    pub mdns: bool,
    pub name: String,
    pub role: String,
    /// Relays to keep a reservation on (`…/p2p/<relay id>`), so members
    /// away from home reach us through them.
    pub relays: Vec<String>,
    /// Ask the router for a port mapping (UPnP IGD).
    pub upnp: bool,
}

/// A relay this node uses, as `tunemesh status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayInfo {
    pub id: String,
    pub addr: Option<String>,
    /// Configured with --relay: a reservation is kept there.
    pub configured: bool,
    pub connected: bool,
    /// The relay accepted us as a member of a mesh it serves.
    pub accepted: bool,
    /// We hold a reservation: members can reach us through it.
    pub reserved: bool,
    /// Our addresses through it.
    pub addrs: Vec<String>,
    pub error: Option<String>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
    relay_client: libp2p::relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    upnp: Toggle<upnp::tokio::Behaviour>,
    candidates: candidates::Candidates,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Disconnect(PeerId),
    /// A relay answered our auth message.
    RelayAuthed {
        relay: PeerId,
        result: Result<u32, String>,
    },
    /// Close the peer's relayed connections if a direct one is up.
    Prune(PeerId),
    /// Run the tick now (a direct dial's head start is over).
    Tick,
}

/// A relay we know: configured, or seen in a member's relayed address.
#[derive(Default)]
struct RelayState {
    /// Where to reach it (`/p2p/<id>` included).
    addrs: Vec<Multiaddr>,
    /// The last dial over QUIC alone failed: try every transport.
    quic_failed: bool,
    /// Given with --relay: we keep a reservation there.
    reserve: bool,
    connected: bool,
    auth_pending: bool,
    accepted: bool,
    listener: Option<ListenerId>,
    last_listen: Option<Instant>,
    reserved: Vec<Multiaddr>,
    last_dial: Option<Instant>,
    error: Option<String>,
}

impl RelayState {
    fn learn(&mut self, addr: Multiaddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// QUIC addresses alone while QUIC works: hole punching needs the
    /// address the relay sees our UDP socket at, which a TCP connection to
    /// it would not tell us.
    fn dial_addrs(&self) -> Vec<Multiaddr> {
        let quic: Vec<Multiaddr> = self.addrs.iter().filter(|a| is_quic(a)).cloned().collect();
        if quic.is_empty() || self.quic_failed {
            self.addrs.clone()
        } else {
            quic
        }
    }

    fn primary(&self) -> Option<Multiaddr> {
        self.dial_addrs().into_iter().next()
    }
}

fn is_quic(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::QuicV1))
}

#[derive(Default)]
struct PeerState {
    conns: HashMap<ConnectionId, Multiaddr>,
    rtt: Option<Duration>,
    announced: Option<Announcement>,
    /// A stranger allowed to stay until then (to present a ticket).
    grace_until: Option<Instant>,
    /// We dialled that stranger (to join its mesh): our own open
    /// invitations have nothing to do with it.
    joining: bool,
    direct_dial: Option<Instant>,
    relay_dial: Option<Instant>,
}

struct State {
    members: Members,
    /// blake3 of each open invitation's secret → expiry (unix ms).
    tickets: HashMap<Hash32, i64>,
    listen: Vec<Multiaddr>,
    /// Listeners that reported at least one address.
    listeners_up: std::collections::HashSet<libp2p::core::transport::ListenerId>,
    /// Addresses members announced over mDNS: a connection to one of them
    /// is on the LAN, whatever its address range.
    lan_seen: HashMap<PeerId, Vec<Multiaddr>>,
    peers: HashMap<PeerId, PeerState>,
    local: Announcement,
    /// Addresses seen for members (identify, mDNS), for redialling.
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    relays: HashMap<PeerId, RelayState>,
    /// Open invitations as relays know them: blake3(proof) → expiry.
    relay_invites: HashMap<Hash32, i64>,
    /// Addresses confirmed reachable from outside (AutoNAT, UPnP, relay).
    external: Vec<Multiaddr>,
    /// What AutoNAT concluded: "public", "private" or "unknown".
    reachability: &'static str,
}

struct Shared {
    key: Keypair,
    me: PeerId,
    members_path: PathBuf,
    state: Mutex<State>,
    events: mpsc::Sender<Event>,
    cmd: mpsc::Sender<Command>,
    /// Each closed connection of a member, by peer (see
    /// [`Client::watch_closed`]).
    closed: tokio::sync::broadcast::Sender<DeviceId>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawn an owned task, cancelled at shutdown.
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
    }

    fn is_member(&self, p: &PeerId) -> bool {
        self.state().members.is_member(p)
    }

    async fn emit(&self, ev: Event) {
        let _ = self.events.send(ev).await;
    }
}

/// A running mesh node: the handle that owns the event loop.
pub struct Mesh {
    client: Client,
}

/// A cloneable handle to the mesh.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    control: libp2p_stream::Control,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Load the device key from `dir/identity.key`, creating it (mode 0600) on
/// first run.
fn load_or_create_key(dir: &Path) -> Result<Keypair, MeshError> {
    let path = dir.join("identity.key");
    let err = |reason: String| MeshError::Identity {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| err(e.to_string()))?;
            }
            std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| err(e.to_string()))?;
            tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
            // No clobbering: a racing first run keeps the key that won.
            tmp.persist_noclobber(&path)
                .map_err(|e| err(e.error.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Where members were last seen: device id → multiaddrs (JSON).
const ADDRS_FILE: &str = "known-addrs.json";

fn load_addrs(path: &Path) -> HashMap<PeerId, Vec<Multiaddr>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let raw: HashMap<String, Vec<String>> = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            return HashMap::new();
        }
    };
    raw.into_iter()
        .filter_map(|(p, a)| {
            Some((
                p.parse().ok()?,
                a.iter().filter_map(|a| a.parse().ok()).collect(),
            ))
        })
        .collect()
}

fn ip_of(a: &Multiaddr) -> Option<std::net::IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Both addresses are on one IP, and `b` is not through a relay.
fn same_ip(a: &Multiaddr, b: &Multiaddr) -> bool {
    !b.iter().any(|p| p == Protocol::P2pCircuit) && ip_of(a).is_some() && ip_of(a) == ip_of(b)
}

/// Addresses to give out (tickets, join): what we listen on (relayed
/// addresses included, wildcards excluded) and confirmed external ones.
fn advertised(st: &State) -> Vec<Multiaddr> {
    let mut v: Vec<Multiaddr> = Vec::new();
    for a in st.listen.iter().chain(st.external.iter()) {
        let a = bare(a);
        let wildcard = ip_of(&a).is_some_and(|ip| ip.is_unspecified());
        if !wildcard && !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

/// Without a trailing `/p2p/<id>` (AutoNAT confirms addresses with ours),
/// relayed addresses excepted.
fn bare(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) && !is_circuit(&a) {
        a.pop();
    }
    a
}

fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The relay of a `…/p2p/RELAY/p2p-circuit/…` address, with the address
/// that reaches the relay (`/p2p/RELAY` included).
fn relay_of(a: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut prefix = Multiaddr::empty();
    let mut last = None;
    for p in a.iter() {
        match p {
            Protocol::P2pCircuit => return last.map(|id| (id, prefix)),
            Protocol::P2p(id) => last = Some(id),
            _ => {}
        }
        prefix.push(p);
    }
    None
}

/// Lower is better.
fn path_rank(kind: &str) -> u8 {
    match kind {
        "lan" => 0,
        "direct" => 1,
        _ => 2,
    }
}

/// "lan", "direct" or "relayed", from the remote address of a connection.
fn path_kind(addr: &Multiaddr) -> &'static str {
    let mut lan = false;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return "relayed",
            Protocol::Ip4(ip) => lan = ip.is_private() || ip.is_loopback() || ip.is_link_local(),
            Protocol::Ip6(ip) => {
                lan = ip.is_loopback()
                    || (ip.segments()[0] & 0xfe00) == 0xfc00
                    || (ip.segments()[0] & 0xffc0) == 0xfe80
            }
            _ => {}
        }
    }
    if lan {
        "lan"
    } else {
        "direct"
    }
}

fn request_to_proto(req: Request) -> proto::CtlRequest {
    proto::CtlRequest {
        kind: Some(match req {
            Request::GetNode {
                root,
                path,
                max_entries,
                with_records,
            } => proto::ctl_request::Kind::GetNode(proto::GetNode {
                root: root.0.to_vec(),
                path,
                max_entries,
                with_records,
            }),
            Request::GetRecords(ids) => proto::ctl_request::Kind::GetRecords(proto::GetRecords {
                ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            }),
        }),
    }
}

fn response_from_proto(peer: &DeviceId, resp: proto::CtlResponse) -> Result<Response, MeshError> {
    let bad = |reason: &str| MeshError::Protocol {
        peer: *peer,
        reason: reason.into(),
    };
    Ok(match resp.kind {
        Some(proto::ctl_response::Kind::Node(n)) => {
            let root = Hash32::from_slice(&n.root).ok_or_else(|| bad("bad root"))?;
            let children = if n.children.is_empty() {
                None
            } else if n.children.len() == 16 {
                let mut c = [Hash32([0; 32]); 16];
                for (dst, src) in c.iter_mut().zip(&n.children) {
                    *dst = Hash32::from_slice(src).ok_or_else(|| bad("bad child hash"))?;
                }
                Some(Box::new(c))
            } else {
                return Err(bad("a branch must have 16 children"));
            };
            let mut entries = Vec::with_capacity(n.entries.len());
            for e in n.entries {
                entries.push((
                    Hash32::from_slice(&e.id).ok_or_else(|| bad("bad entry id"))?,
                    Hash32::from_slice(&e.hash).ok_or_else(|| bad("bad entry hash"))?,
                ));
            }
            Response::Node(NodeReply {
                root,
                children,
                entries,
                records: n.records,
            })
        }
        Some(proto::ctl_response::Kind::Records(r)) => Response::Records(r.records),
        Some(proto::ctl_response::Kind::Error(e)) => Response::Error(e),
        _ => return Err(bad("unexpected answer")),
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
        let key = load_or_create_key(&cfg.data_dir)?;
        let me = key.public().to_peer_id();
        let members_path = cfg.data_dir.join("members.pb");
        let members = match Members::load(&members_path)? {
            Some(m) => m,
            None => {
                let m = Members::found(&key, &cfg.name, &cfg.role, vec![]);
                m.save(&members_path)?;
                m
            }
        };
        let mut relays = HashMap::new();
        for a in &cfg.relays {
            let bad = |why: &str| MeshError::BadInput(format!("--relay {a}: {why}"));
            let addr: Multiaddr = a.parse().map_err(|e| bad(&format!("{e}")))?;
            let Some(Protocol::P2p(id)) = addr.iter().last() else {
                return Err(bad(
                    "the address must end with /p2p/<relay id> (`tunemesh relay` prints it)",
                ));
            };
            if is_circuit(&addr) {
                return Err(bad("give the relay's own address, not a relayed one"));
            }
            let r: &mut RelayState = relays.entry(id).or_default();
            r.reserve = true;
            r.learn(addr);
        }
        let mdns_on = cfg.mdns;
        let upnp_on = cfg.upnp;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| MeshError::Start(e.to_string()))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| MeshError::Start(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY.into(), key.public())
                            .with_agent_version(format!("tunemesh/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    stream: libp2p_stream::Behaviour::new(),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
                    autonat: autonat::Behaviour::new(
                        key.public().to_peer_id(),
                        autonat::Config {
                            boot_delay: Duration::from_secs(3),
                            retry_interval: Duration::from_secs(60),
                            refresh_interval: Duration::from_secs(600),
                            throttle_server_period: Duration::from_secs(10),
                            // Only our relays are asked (added below):
                            // members on a LAN would say "public".
                            use_connected: false,
                            only_global_ips: false,
                            ..Default::default()
                        },
                    ),
                    upnp: Toggle::from(upnp_on.then(upnp::tokio::Behaviour::default)),
                    candidates: candidates::Candidates::default(),
                })
            })
            .map_err(|e| MeshError::Start(e.to_string()))?
            // Members stay connected while both run: announcements and
            // streams must not wait for a dial.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
            .build();
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
            .accept(CTL)
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let audio_in = control
            .accept(AUDIO)
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            key,
            me,
            members_path,
            state: Mutex::new(State {
                members,
                tickets: HashMap::new(),
                listen: vec![],
                listeners_up: Default::default(),
                lan_seen: HashMap::new(),
                peers: HashMap::new(),
                local,
                addrs: load_addrs(&cfg.data_dir.join(ADDRS_FILE)),
                relays,
                relay_invites: HashMap::new(),
                external: Vec::new(),
                reachability: "unknown",
            }),
            events,
            cmd: cmd_tx,
            closed: tokio::sync::broadcast::channel(64).0,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        let client = Client { shared, control };
        let c = client.clone();
        client.shared.spawn(
            async move { c.run(swarm, cmd_rx).await }
                .instrument(tracing::info_span!("mesh", me = %me)),
        );
        let c = client.clone();
        client.shared.spawn(c.accept_loop(ctl_in, false));
        let c = client.clone();
        client.shared.spawn(c.accept_loop(audio_in, true));
        // Wait (briefly) until every listener has its addresses, so the
        // first ticket and status carry them all.
        for _ in 0..200 {
            let ready = {
                let st = client.shared.state();
                listeners.iter().all(|l| st.listeners_up.contains(l))
            };
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Mesh { client })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stop every task of the mesh (connections close with the swarm).
    pub async fn shutdown(self) {
        let s = &self.client.shared;
        s.cancel.cancel();
        s.tasks.close();
        s.tasks.wait().await;
    }
}

impl Client {
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.shared.me)
    }

    pub fn mesh_id(&self) -> DeviceId {
        DeviceId(self.shared.state().members.mesh())
    }

    /// Where this node can be reached: listen addresses (relayed ones
    /// included) and confirmed external ones, `/p2p/<id>` appended.
    pub fn listen_addrs(&self) -> Vec<String> {
        let me = self.shared.me;
        advertised(&self.shared.state())
            .into_iter()
            .map(|a| {
                if a.iter().last() == Some(Protocol::P2p(me)) {
                    a.to_string()
                } else {
                    a.with(Protocol::P2p(me)).to_string()
                }
            })
            .collect()
    }

    /// The relays this node knows, and where it stands with each.
    pub fn relays(&self) -> Vec<RelayInfo> {
        let st = self.shared.state();
        let mut v: Vec<RelayInfo> = st
            .relays
            .iter()
            .map(|(id, r)| RelayInfo {
                id: id.to_string(),
                addr: r.primary().map(|a| a.to_string()),
                configured: r.reserve,
                connected: r.connected,
                accepted: r.accepted,
                reserved: !r.reserved.is_empty(),
                addrs: r.reserved.iter().map(|a| a.to_string()).collect(),
                error: r.error.clone(),
            })
            .collect();
        v.sort_by(|a, b| b.configured.cmp(&a.configured).then(a.id.cmp(&b.id)));
        v
    }

    /// "public", "private" or "unknown" (AutoNAT, through our relays).
    pub fn reachability(&self) -> &'static str {
        self.shared.state().reachability
    }

    /// Told the peer of every connection that closes. A substream on a
    /// connection this node closes itself (a relayed one once a direct one
    /// is up, a duplicate) is not always woken by the muxer, so readers of
    /// long streams reopen theirs when their peer loses a connection.
    pub fn watch_closed(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.shared.closed.subscribe()
    }

    pub fn is_member(&self, d: &DeviceId) -> bool {
        self.shared.is_member(&d.0)
    }

    pub fn devices(&self) -> Vec<Device> {
        self.shared.state().members.devices()
    }

    /// Members other than this device that are connected now.
    pub fn connected_members(&self) -> Vec<DeviceId> {
        let st = self.shared.state();
        st.peers
            .iter()
            .filter(|(p, s)| {
                !s.conns.is_empty() && **p != self.shared.me && st.members.is_member(p)
            })
            .map(|(p, _)| DeviceId(*p))
            .collect()
    }

    /// Every peer we know or see, members first.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let st = self.shared.state();
        let devices = st.members.devices();
        let mut out: Vec<PeerInfo> = Vec::new();
        let mut seen: Vec<PeerId> = vec![self.shared.me];
        let kind = |p: &PeerId, a: &Multiaddr| {
            let lan = st
                .lan_seen
                .get(p)
                .is_some_and(|seen| seen.iter().any(|s| same_ip(s, a)));
            if lan {
                "lan"
            } else {
                path_kind(a)
            }
        };
        let info = |p: PeerId, name: String, role: String, member: bool| {
            let ps = st.peers.get(&p);
            // The best of its connections (a relayed one lingers briefly
            // after a direct one is made).
            let addr = ps.and_then(|s| {
                s.conns
                    .values()
                    .min_by_key(|a| path_rank(kind(&p, a)))
                    .cloned()
            });
            let ann = ps.and_then(|s| s.announced.clone());
            PeerInfo {
                id: p.to_string(),
                name: ann.as_ref().map_or(name, |a| a.name.clone()),
                role: ann.as_ref().map_or(role, |a| a.role.clone()),
                member,
                connected: addr.is_some(),
                path: addr.as_ref().map_or("", |a| kind(&p, a)).to_string(),
                relay: addr.as_ref().and_then(relay_of).map(|(r, _)| r.to_string()),
                addr: addr.map(|a| a.to_string()),
                rtt_ms: ps.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
                root: ann.as_ref().map(|a| a.root.to_hex()),
                tracks: ann.as_ref().map(|a| a.tracks),
            }
        };
        for d in devices {
            let Ok(p) = d.id.parse::<PeerId>() else {
                continue;
            };
            if p == self.shared.me {
                continue;
            }
            seen.push(p);
            out.push(info(p, d.name, d.role, true));
        }
        for (p, s) in &st.peers {
            if !seen.contains(p) && !s.conns.is_empty() {
                let role = if st.relays.contains_key(p) {
                    "relay"
                } else {
                    ""
                };
                out.push(info(*p, String::new(), role.to_string(), false));
            }
        }
        out
    }

    /// What this node announces; pushed to every connected member when the
    /// root changes.
    pub fn set_local(&self, root: Hash32, tracks: u64) {
        let changed = {
            let mut st = self.shared.state();
            let changed = st.local.root != root || st.local.tracks != tracks;
            st.local.root = root;
            st.local.tracks = tracks;
            changed
        };
        if changed {
            self.announce_all();
        }
    }

    /// Open a one-time invitation valid for `ttl`.
    pub fn invite(&self, ttl: Duration) -> Result<String, MeshError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| MeshError::Start(e.to_string()))?;
        let expires = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let ticket = {
            let mut st = self.shared.state();
            st.tickets.retain(|_, exp| *exp > now_ms());
            st.tickets.insert(Hash32::of(&secret), expires);
            st.relay_invites.retain(|_, exp| *exp > now_ms());
            st.relay_invites
                .insert(relay::proof_hash(&relay::invite_proof(&secret)), expires);
            Ticket {
                inviter: self.shared.me,
                addrs: advertised(&st),
                secret,
                expires_unix_ms: expires,
                mesh: st.members.mesh(),
            }
        };
        // Our relays let the joiner through on the invitation's proof.
        self.push_relays();
        Ok(ticket.encode())
    }

    /// Join the mesh of `ticket`'s inviter; this device's own mesh (if it
    /// had other members) is left. Returns the new member list.
    pub async fn join(&self, ticket: &str) -> Result<Vec<Device>, MeshError> {
        let t = Ticket::decode(ticket)?;
        if t.expires_unix_ms < now_ms() {
            return Err(MeshError::Refused("this ticket has expired".into()));
        }
        if t.inviter == self.shared.me {
            return Err(MeshError::Refused(
                "this ticket was made by this device".into(),
            ));
        }
        {
            let st = self.shared.state();
            if st.members.mesh() == t.mesh && st.members.is_member(&self.shared.me) {
                // Already in that mesh: nothing to join.
                return Ok(st.members.devices());
            }
        }
        // Through the inviter's relays (when it is away): show each the
        // invitation's proof first, or it refuses us the circuit.
        let proof = relay::invite_proof(&t.secret);
        let mut ticket_relays: Vec<PeerId> = Vec::new();
        for (rid, raddr) in t.addrs.iter().filter_map(relay_of) {
            self.shared
                .state()
                .relays
                .entry(rid)
                .or_default()
                .learn(raddr);
            if !ticket_relays.contains(&rid) {
                ticket_relays.push(rid);
            }
        }
        for rid in ticket_relays {
            let addrs = self.shared.state().relays[&rid].dial_addrs();
            if let Err(e) = self.dial(rid, addrs).await {
                tracing::info!(relay = %rid, "relay unreachable: {e}");
                continue;
            }
            let msg = proto::RelayAuth {
                mesh: t.mesh.to_bytes(),
                members: None,
                invites: vec![],
                invite_proof: proof.to_vec(),
            };
            if let Err(e) = relay::authenticate(&mut self.control.clone(), rid, &msg).await {
                tracing::warn!(relay = %rid, "the relay refused the invitation: {e}");
            }
        }
        self.dial(t.inviter, t.addrs.clone()).await?;
        self.shared.state().addrs.insert(t.inviter, t.addrs.clone());
        let (name, role, addrs) = {
            let st = self.shared.state();
            (
                st.local.name.clone(),
                st.local.role.clone(),
                advertised(&st).iter().map(|a| a.to_vec()).collect(),
            )
        };
        let req = proto::CtlRequest {
            kind: Some(proto::ctl_request::Kind::Join(proto::Join {
                secret: t.secret.to_vec(),
                name,
                role,
                addrs,
            })),
        };
        let resp = match self.exchange(t.inviter, &req).await {
            Ok((r, _)) => r,
            // Connected, then cut off: a node with no open invitation
            // closes connections from strangers at once.
            Err(MeshError::Unreachable { .. }) | Err(MeshError::Protocol { .. }) => {
                return Err(MeshError::Refused(
                    "join refused: the inviting device closed the connection (the ticket was \
                     already used, has expired, or was made by a device no longer in its mesh)"
                        .into(),
                ))
            }
            Err(e) => return Err(e),
        };
        let list = match resp.kind {
            Some(proto::ctl_response::Kind::Joined(list)) => list,
            Some(proto::ctl_response::Kind::Error(e)) => return Err(MeshError::Refused(e)),
            _ => {
                return Err(MeshError::Protocol {
                    peer: DeviceId(t.inviter),
                    reason: "unexpected answer to a join".into(),
                })
            }
        };
        let members = Members::adopt(t.mesh, &list);
        if !members.is_member(&self.shared.me) || !members.is_member(&t.inviter) {
            return Err(MeshError::Protocol {
                peer: DeviceId(t.inviter),
                reason: "the member list it sent does not include us".into(),
            });
        }
        members.save(&self.shared.members_path)?;
        let devices = members.devices();
        self.shared.state().members = members;
        self.save_addrs();
        self.shared.emit(Event::MembersChanged).await;
        self.push_relays();
        self.announce_all();
        Ok(devices)
    }

    /// Revoke a member; the revocation spreads to every member and the
    /// device is disconnected everywhere.
    pub async fn remove_device(&self, id: &DeviceId) -> Result<(), MeshError> {
        {
            let mut st = self.shared.state();
            if !st.members.is_member(&id.0) {
                return Err(MeshError::BadInput(format!("{id} is not a member")));
            }
            st.members
                .issue(&self.shared.key, id.0, true, "", "", vec![])?;
            st.members.save(&self.shared.members_path)?;
        }
        self.shared.emit(Event::MembersChanged).await;
        self.push_relays();
        // Tell the revoked device too, so it knows; then cut it off.
        let c = self.clone();
        let victim = id.0;
        self.shared.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.announce_to(victim)).await;
            let _ = c.shared.cmd.send(Command::Disconnect(victim)).await;
        });
        self.announce_all();
        Ok(())
    }

    /// Ask a member for part of its library. Also returns the bytes the
    /// exchange took on the wire, both ways, frames included (before noise
    /// and muxer overhead).
    pub async fn request(
        &self,
        peer: &DeviceId,
        req: Request,
    ) -> Result<(Response, u64), MeshError> {
        let mut r = self.request_many(peer, vec![req]).await?;
        r.pop().ok_or(MeshError::Closed)
    }

    /// Several requests, pipelined on one substream: all are sent at once
    /// and the answers read in order (one round trip for the lot). Answers
    /// come back in the order of the requests.
    pub async fn request_many(
        &self,
        peer: &DeviceId,
        reqs: Vec<Request>,
    ) -> Result<Vec<(Response, u64)>, MeshError> {
        let msgs: Vec<proto::CtlRequest> = reqs.into_iter().map(request_to_proto).collect();
        let answers = self.exchange_many(peer.0, &msgs).await?;
        answers
            .into_iter()
            .map(|(r, n)| Ok((response_from_proto(peer, r)?, n)))
            .collect()
    }

    /// Open an audio stream from a member: the head, then the bytes.
    pub async fn open_stream(
        &self,
        peer: &DeviceId,
        open: &StreamOpen,
    ) -> Result<(StreamHead, MeshStream), MeshError> {
        let msg = proto::StreamOpen {
            track: open.track.0.to_vec(),
            kbps: open.kbps,
            start_ms: open.start_ms,
            offset: open.offset,
        };
        let perr = |reason: String| MeshError::Protocol {
            peer: *peer,
            reason,
        };
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let mut s = match self.control.clone().open_stream(peer.0, AUDIO).await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(MeshError::Unreachable {
                        peer: *peer,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if let Err(e) = wire::write(&mut s, &msg, wire::MAX_STREAM_HEAD).await {
                last = Some(perr(e.to_string()));
                continue;
            }
            let head: proto::StreamHead =
                match tokio::time::timeout(CTL_TIMEOUT, wire::read(&mut s, wire::MAX_STREAM_HEAD))
                    .await
                {
                    Ok(Ok(h)) => h,
                    // Dropped by the remote's accept queue: try again.
                    Ok(Err(wire::WireError::Closed)) => {
                        last = Some(perr("the stream was closed before its head".into()));
                        continue;
                    }
                    Ok(Err(e)) => return Err(perr(e.to_string())),
                    Err(_) => return Err(perr("no answer to a stream request".into())),
                };
            let head = StreamHead {
                error: (!head.error.is_empty()).then_some(head.error),
                mime: head.mime,
                total_len: (head.total_len > 0).then_some(head.total_len),
                complete: head.complete,
                via: head.via,
            };
            return Ok((head, MeshStream(s.compat())));
        }
        Err(last.unwrap_or(MeshError::Closed))
    }

    // ----- internals -------------------------------------------------------

    async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), MeshError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::Dial {
                peer,
                addrs,
                reply: tx,
            })
            .await
            .map_err(|_| MeshError::Closed)?;
        match tokio::time::timeout(CTL_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(MeshError::Unreachable {
                peer: DeviceId(peer),
                reason,
            }),
            Ok(Err(_)) => Err(MeshError::Closed),
            Err(_) => Err(MeshError::Unreachable {
                peer: DeviceId(peer),
                reason: "timed out".into(),
            }),
        }
    }

    /// One control exchange (see [`Client::exchange_many`]).
    async fn exchange(
        &self,
        peer: PeerId,
        req: &proto::CtlRequest,
    ) -> Result<(proto::CtlResponse, u64), MeshError> {
        let mut r = self.exchange_many(peer, std::slice::from_ref(req)).await?;
        r.pop().ok_or(MeshError::Closed)
    }

    /// Control requests pipelined on one substream. When the substream
    /// breaks (the remote dropped it unaccepted, a reset), the requests not
    /// yet answered are sent again on a new one: every request is
    /// idempotent but a join, and a repeated join is refused as used.
    async fn exchange_many(
        &self,
        peer: PeerId,
        reqs: &[proto::CtlRequest],
    ) -> Result<Vec<(proto::CtlResponse, u64)>, MeshError> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut failures = 0u32;
        while out.len() < reqs.len() {
            let before = out.len();
            match self.pipeline(peer, &reqs[before..], &mut out).await {
                Ok(()) => {}
                Err((e, retry)) => {
                    if out.len() > before {
                        failures = 0;
                    }
                    failures += 1;
                    if !retry || failures > 3 {
                        return Err(e);
                    }
                    tracing::debug!(%peer, "control substream failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(50 << failures)).await;
                }
            }
        }
        Ok(out)
    }

    /// Send `reqs` on a fresh substream and read their answers into `out`.
    /// On failure, says whether trying again may help.
    async fn pipeline(
        &self,
        peer: PeerId,
        reqs: &[proto::CtlRequest],
        out: &mut Vec<(proto::CtlResponse, u64)>,
    ) -> Result<(), (MeshError, bool)> {
        let perr = |reason: String| MeshError::Protocol {
            peer: DeviceId(peer),
            reason,
        };
        let s = self
            .control
            .clone()
            .open_stream(peer, CTL)
            .await
            .map_err(|e| {
                (
                    MeshError::Unreachable {
                        peer: DeviceId(peer),
                        reason: e.to_string(),
                    },
                    true,
                )
            })?;
        let (mut r, mut w) = futures::AsyncReadExt::split(s);
        let writer = async {
            for q in reqs {
                wire::write(&mut w, q, wire::MAX_CTL_REQUEST).await?;
            }
            w.close().await.map_err(wire::WireError::Io)
        };
        let reader = async {
            for q in reqs {
                let read = wire::read::<proto::CtlResponse, _>(&mut r, wire::MAX_CTL_RESPONSE);
                let resp = match tokio::time::timeout(CTL_TIMEOUT, read).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => {
                        let retry = matches!(e, wire::WireError::Closed | wire::WireError::Io(_));
                        let e = match e {
                            wire::WireError::Closed => {
                                perr("the peer closed the request unanswered".into())
                            }
                            e => perr(e.to_string()),
                        };
                        return Err((e, retry));
                    }
                    Err(_) => return Err((perr("no answer in time".into()), false)),
                };
                let n = wire::framed_len(prost::Message::encoded_len(q))
                    + wire::framed_len(prost::Message::encoded_len(&resp));
                out.push((resp, n as u64));
            }
            Ok(())
        };
        // The reader knows what was answered; a writer error shows there too.
        let (_, answered) = futures::join!(writer, reader);
        answered
    }

    /// Remember where members were last seen (so a restarted phone finds
    /// its home without mDNS), written off the event loop.
    fn save_addrs(&self) {
        let book: HashMap<String, Vec<String>> = {
            let st = self.shared.state();
            st.addrs
                .iter()
                .filter(|(p, _)| st.members.is_member(p))
                .map(|(p, a)| (p.to_string(), a.iter().map(|a| a.to_string()).collect()))
                .collect()
        };
        let path = self.shared.members_path.with_file_name(ADDRS_FILE);
        self.shared.tasks.spawn_blocking(move || {
            let write = || -> std::io::Result<()> {
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                serde_json::to_writer_pretty(&mut tmp, &book)?;
                tmp.as_file().sync_all()?;
                tmp.persist(&path).map_err(|e| e.error)?;
                Ok(())
            };
            if let Err(e) = write() {
                tracing::warn!("cannot save {}: {e}", path.display());
            }
        });
    }

    fn announcement_msg(&self) -> proto::CtlRequest {
        let st = self.shared.state();
        proto::CtlRequest {
            kind: Some(proto::ctl_request::Kind::Announce(proto::Announce {
                root: st.local.root.0.to_vec(),
                tracks: st.local.tracks,
                members: Some(st.members.to_proto()),
                name: st.local.name.clone(),
                role: st.local.role.clone(),
            })),
        }
    }

    /// Take in a member's announcement: merge its member list, remember its
    /// root, tell the node.
    async fn absorb(&self, from: PeerId, a: proto::Announce) {
        let merged = {
            let mut st = self.shared.state();
            let n = a.members.as_ref().map_or(0, |l| st.members.merge(l));
            if n > 0 {
                if let Err(e) = st.members.save(&self.shared.members_path) {
                    tracing::error!("{e}");
                }
            }
            n
        };
        if merged > 0 {
            tracing::info!(%from, "{merged} new member list operations");
            self.shared.emit(Event::MembersChanged).await;
            self.push_relays();
            // Spread the news, and drop devices that are no longer members.
            self.announce_all();
            let gone: Vec<PeerId> = {
                let st = self.shared.state();
                st.peers
                    .iter()
                    .filter(|(p, s)| !s.conns.is_empty() && !st.members.is_member(p))
                    .map(|(p, _)| *p)
                    .collect()
            };
            for p in gone {
                let _ = self.shared.cmd.send(Command::Disconnect(p)).await;
            }
        }
        if !self.shared.is_member(&from) {
            return;
        }
        let Some(root) = Hash32::from_slice(&a.root) else {
            tracing::warn!(%from, "announcement without a valid root ignored");
            return;
        };
        let ann = Announcement {
            root,
            tracks: a.tracks,
            name: a.name,
            role: a.role,
        };
        self.shared.state().peers.entry(from).or_default().announced = Some(ann.clone());
        self.shared
            .emit(Event::Announced {
                from: DeviceId(from),
                announcement: ann,
            })
            .await;
    }

    async fn announce_to(&self, peer: PeerId) {
        let msg = self.announcement_msg();
        match self.exchange(peer, &msg).await.map(|(r, _)| r) {
            Ok(proto::CtlResponse {
                kind: Some(proto::ctl_response::Kind::Announce(a)),
            }) => self.absorb(peer, a).await,
            Ok(proto::CtlResponse {
                kind: Some(proto::ctl_response::Kind::Error(e)),
            }) => tracing::info!(%peer, "announcement refused: {e}"),
            Ok(_) => tracing::warn!(%peer, "unexpected answer to an announcement"),
            Err(e) => tracing::debug!(%peer, "announcement failed: {e}"),
        }
    }

    fn announce_all(&self) {
        self.announce_all_except(None);
    }

    fn announce_all_except(&self, skip: Option<PeerId>) {
        for d in self.connected_members() {
            if Some(d.0) == skip {
                continue;
            }
            let c = self.clone();
            self.shared.spawn(async move { c.announce_to(d.0).await });
        }
    }

    /// Put our reachable addresses (relayed, confirmed external) into the
    /// signed member list when one is new, so every member learns where
    /// to find us away from home, even from another member.
    async fn refresh_own_addrs(&self) {
        let issued = {
            let mut st = self.shared.state();
            let me = self.shared.me;
            let stable: Vec<Multiaddr> = advertised(&st)
                .into_iter()
                .filter(|a| is_circuit(a) || st.external.iter().any(|e| bare(e) == *a))
                .collect();
            let listed: Vec<String> = st
                .members
                .devices()
                .into_iter()
                .find(|d| d.id == me.to_string())
                .map(|d| d.addrs)
                .unwrap_or_default();
            if stable.is_empty() || stable.iter().all(|a| listed.contains(&a.to_string())) {
                return;
            }
            let addrs = advertised(&st).iter().map(|a| a.to_string()).collect();
            let (name, role) = (st.local.name.clone(), st.local.role.clone());
            let st = &mut *st;
            st.members
                .issue(&self.shared.key, me, false, &name, &role, addrs)
                .and_then(|()| st.members.save(&self.shared.members_path))
        };
        match issued {
            Ok(()) => {
                tracing::info!("our reachable addresses are in the member list now");
                self.shared.emit(Event::MembersChanged).await;
                self.push_relays();
                self.announce_all();
            }
            Err(e) => tracing::warn!("cannot update our addresses in the member list: {e}"),
        }
    }

    /// Tell every connected relay our member list and open invitations
    /// (after a change: a new member must be let through at once).
    fn push_relays(&self) {
        let relays: Vec<PeerId> = self
            .shared
            .state()
            .relays
            .iter()
            .filter(|(_, r)| r.connected)
            .map(|(p, _)| *p)
            .collect();
        for r in relays {
            let c = self.clone();
            self.shared.spawn(async move { c.auth_relay(r).await });
        }
    }

    async fn auth_relay(&self, relay: PeerId) {
        let msg = {
            let mut st = self.shared.state();
            let now = now_ms();
            st.relay_invites.retain(|_, e| *e > now);
            if let Some(r) = st.relays.get_mut(&relay) {
                r.auth_pending = true;
            }
            proto::RelayAuth {
                mesh: st.members.mesh().to_bytes(),
                members: Some(st.members.to_proto()),
                invites: st
                    .relay_invites
                    .iter()
                    .map(|(h, e)| proto::RelayInvite {
                        proof_hash: h.0.to_vec(),
                        expires_unix_ms: *e,
                    })
                    .collect(),
                invite_proof: vec![],
            }
        };
        let result = relay::authenticate(&mut self.control.clone(), relay, &msg).await;
        let _ = self
            .shared
            .cmd
            .send(Command::RelayAuthed { relay, result })
            .await;
    }

    // ----- inbound ---------------------------------------------------------

    async fn accept_loop(self, mut incoming: libp2p_stream::IncomingStreams, audio: bool) {
        while let Some((peer, stream)) = incoming.next().await {
            let c = self.clone();
            let span = tracing::info_span!("inbound", %peer, audio);
            if audio {
                self.shared
                    .spawn(async move { c.serve_audio(peer, stream).await }.instrument(span));
            } else {
                self.shared
                    .spawn(async move { c.serve_ctl(peer, stream).await }.instrument(span));
            }
        }
    }

    async fn refuse(&self, peer: PeerId, why: &str) {
        tracing::info!(%peer, "refused: {why}");
        let _ = self.shared.cmd.send(Command::Disconnect(peer)).await;
    }

    async fn serve_audio(&self, peer: PeerId, mut s: libp2p::Stream) {
        if !self.shared.is_member(&peer) {
            return self.refuse(peer, "stream request from a non-member").await;
        }
        let read = tokio::time::timeout(REQUEST_TIMEOUT, wire::read(&mut s, wire::MAX_STREAM_HEAD));
        let open: proto::StreamOpen = match read.await.unwrap_or(Err(wire::WireError::Timeout)) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(%peer, "bad stream request: {e}");
                return;
            }
        };
        let Some(track) = Hash32::from_slice(&open.track) else {
            tracing::warn!(%peer, "stream request without a valid track id");
            let head = proto::StreamHead {
                error: "bad track id".into(),
                ..Default::default()
            };
            let _ = wire::write(&mut s, &head, wire::MAX_STREAM_HEAD).await;
            let _ = s.close().await;
            return;
        };
        self.shared
            .emit(Event::Stream {
                from: DeviceId(peer),
                open: StreamOpen {
                    track,
                    kbps: open.kbps,
                    start_ms: open.start_ms,
                    offset: open.offset,
                },
                stream: MeshStream(s.compat()),
            })
            .await;
    }

    /// Answer the requests on one control substream, in order, until the
    /// peer closes its side.
    async fn serve_ctl(&self, peer: PeerId, mut s: libp2p::Stream) {
        let mut first = true;
        loop {
            let read =
                tokio::time::timeout(REQUEST_TIMEOUT, wire::read(&mut s, wire::MAX_CTL_REQUEST));
            let req: proto::CtlRequest = match read.await.unwrap_or(Err(wire::WireError::Timeout)) {
                Ok(r) => r,
                Err(wire::WireError::Closed) if !first => break,
                Err(e) => {
                    tracing::warn!(%peer, "bad control request: {e}");
                    let resp = proto::CtlResponse {
                        kind: Some(proto::ctl_response::Kind::Error(format!(
                            "bad request: {e}"
                        ))),
                    };
                    let _ = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await;
                    break;
                }
            };
            first = false;
            let Some(kind) = self.answer_ctl(peer, req).await else {
                let resp = proto::CtlResponse {
                    kind: Some(proto::ctl_response::Kind::Error(
                        "not a member of this mesh".into(),
                    )),
                };
                let _ = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await;
                let _ = s.close().await;
                return self.refuse(peer, "control request from a non-member").await;
            };
            let resp = proto::CtlResponse { kind: Some(kind) };
            if let Err(e) = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await {
                tracing::info!(%peer, "cannot answer: {e}");
                return;
            }
        }
        let _ = s.close().await;
    }

    /// The answer to one control request; `None` when a non-member asks for
    /// anything but a join.
    async fn answer_ctl(
        &self,
        peer: PeerId,
        req: proto::CtlRequest,
    ) -> Option<proto::ctl_response::Kind> {
        use proto::ctl_response::Kind as R;
        if !matches!(req.kind, Some(proto::ctl_request::Kind::Join(_)))
            && !self.shared.is_member(&peer)
        {
            return None;
        }
        Some(match req.kind {
            Some(proto::ctl_request::Kind::Join(j)) => self.on_join(peer, j).await,
            Some(proto::ctl_request::Kind::Announce(a)) => {
                self.absorb(peer, a).await;
                match self.announcement_msg().kind {
                    Some(proto::ctl_request::Kind::Announce(mine)) => R::Announce(mine),
                    _ => R::Error("no announcement".into()),
                }
            }
            Some(proto::ctl_request::Kind::GetNode(g)) => {
                let path_ok = g.path.iter().all(|&n| n < 16) && g.path.len() <= 64;
                match (Hash32::from_slice(&g.root), path_ok) {
                    (Some(root), true) => {
                        self.ask_node(
                            peer,
                            Request::GetNode {
                                root,
                                path: g.path,
                                max_entries: g.max_entries,
                                with_records: g.with_records,
                            },
                        )
                        .await
                    }
                    _ => R::Error("bad trie path or root".into()),
                }
            }
            Some(proto::ctl_request::Kind::GetRecords(g)) => {
                let ids: Option<Vec<TrackId>> =
                    g.ids.iter().map(|i| Hash32::from_slice(i)).collect();
                match ids {
                    Some(ids) if ids.len() <= 4096 => {
                        self.ask_node(peer, Request::GetRecords(ids)).await
                    }
                    _ => R::Error("bad or too many track ids".into()),
                }
            }
            None => R::Error("unknown request (a newer tunemesh?)".into()),
        })
    }

    async fn ask_node(&self, peer: PeerId, request: Request) -> proto::ctl_response::Kind {
        let (tx, rx) = oneshot::channel();
        self.shared
            .emit(Event::Request {
                from: DeviceId(peer),
                request,
                reply: tx,
            })
            .await;
        let Ok(resp) = rx.await else {
            return proto::ctl_response::Kind::Error("the node is shutting down".into());
        };
        match resp {
            Response::Error(e) => proto::ctl_response::Kind::Error(e),
            Response::Records(r) => {
                proto::ctl_response::Kind::Records(proto::RecordsReply { records: r })
            }
            Response::Node(n) => proto::ctl_response::Kind::Node(proto::NodeReply {
                root: n.root.0.to_vec(),
                children: n
                    .children
                    .map(|c| c.iter().map(|h| h.0.to_vec()).collect())
                    .unwrap_or_default(),
                entries: n
                    .entries
                    .iter()
                    .map(|(id, h)| proto::Entry {
                        id: id.0.to_vec(),
                        hash: h.0.to_vec(),
                    })
                    .collect(),
                records: n.records,
            }),
        }
    }

    async fn on_join(&self, peer: PeerId, j: proto::Join) -> proto::ctl_response::Kind {
        let outcome = {
            let mut st = self.shared.state();
            let h = Hash32::of(&j.secret);
            if let Ok(secret) = <[u8; 32]>::try_from(j.secret.as_slice()) {
                st.relay_invites
                    .remove(&relay::proof_hash(&relay::invite_proof(&secret)));
            }
            match st.tickets.remove(&h) {
                None => Err("unknown or already used ticket"),
                Some(exp) if exp < now_ms() => Err("expired ticket"),
                Some(_) => {
                    let addrs = j
                        .addrs
                        .iter()
                        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                        .map(|a| a.to_string())
                        .collect();
                    let role = if j.role == "home" { "home" } else { "phone" };
                    let name: String = j.name.chars().take(64).collect();
                    st.members
                        .issue(&self.shared.key, peer, false, &name, role, addrs)
                        .map_err(|_| "this device can no longer invite")
                        .and_then(|()| {
                            st.members
                                .save(&self.shared.members_path)
                                .map_err(|_| "cannot save the member list")
                        })
                        .map(|()| st.members.to_proto())
                }
            }
        };
        match outcome {
            Ok(list) => {
                tracing::info!(%peer, "joined the mesh");
                if let Some(p) = self.shared.state().peers.get_mut(&peer) {
                    p.grace_until = None;
                }
                self.shared.emit(Event::MembersChanged).await;
                self.push_relays();
                self.shared.emit(Event::Connected(DeviceId(peer))).await;
                // The joiner announces itself once it has adopted the
                // list (before that, it would refuse us as a stranger);
                // tell the other members now.
                self.announce_all_except(Some(peer));
                proto::ctl_response::Kind::Joined(list)
            }
            Err(why) => {
                tracing::warn!(%peer, "join refused: {why}");
                proto::ctl_response::Kind::Error(format!("join refused: {why}"))
            }
        }
    }
}
