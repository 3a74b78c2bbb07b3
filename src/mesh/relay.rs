//! The relay role: a circuit relay v2 node for the owner's own meshes.
//!
//! Responsible for forwarding connections between members that cannot reach
//! each other (circuit relay v2; the bytes it forwards are noise-encrypted
//! end to end, so it sees no music and no library), telling peers the
//! address it sees them at (identify, which hole punching needs), dialling
//! them back on request (AutoNAT server), and its access list: reservations
//! and circuits are granted only to members of the meshes it serves, and for
//! a short while to a joiner that proves it holds an open invitation.
//!
//! The relay learns who the members are from the members themselves, over
//! `/tunemesh/relay-auth/1`: a member sends its signed member list, which
//! the relay merges into its own copy of that mesh's list (saved in its data
//! dir). Every operation must verify and chain to the mesh id (the
//! founder's key), so no one can add themselves.
//!
//! Must never: grant a reservation or a circuit to a peer it cannot tie to a
//! served mesh by signatures; cut a circuit for its length or duration
//! before hours of audio went through (upstream defaults cut at 128 KiB and
//! two minutes); store anything but member lists and its own key.

use super::members::{Members, Persister};
use super::swarm::{load_or_create_key, RelayClient};
use super::{now_ms, wire, DeviceId, MeshError};
use crate::model::Hash32;
use crate::proto;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{autonat, identify, ping, relay, Multiaddr, PeerId, StreamProtocol};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub(super) const AUTH: StreamProtocol = StreamProtocol::new("/tunemesh/relay-auth/1");
/// A member list of a few thousand devices fits with room to spare.
pub(super) const MAX_AUTH: usize = 1 << 20;
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Open invitations a relay keeps per mesh (the oldest go first).
const MAX_INVITES: usize = 64;

/// What a joiner shows the relay for its ticket's secret; the relay is told
/// only its hash by the inviter, and never sees the secret.
pub fn invite_proof(secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("tunemesh relay invite v1", secret)
}

pub(super) fn proof_hash(proof: &[u8]) -> Hash32 {
    Hash32::of(proof)
}

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where its key and the member lists live.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// The addresses members reach it at (its public address). Without
    /// them, the addresses it listens on are used, loopback excepted.
    pub external: Vec<String>,
    /// Mesh ids whose members it serves.
    pub meshes: Vec<DeviceId>,
    /// Longest life of one circuit.
    pub max_circuit: Duration,
}

/// An open invitation a member told the relay about.
struct Invite {
    mesh: PeerId,
    issuer: PeerId,
    expires_unix_ms: i64,
    /// The joiner that showed its proof: one per invitation, as tickets
    /// work once.
    guest: Option<PeerId>,
}

/// Who may use the relay.
struct Acl {
    dir: PathBuf,
    meshes: HashMap<PeerId, Members>,
    /// blake3(proof) → the invitation.
    invites: HashMap<Hash32, Invite>,
    /// Meshes whose lists changed since they were last handed out to save.
    unsaved: Vec<PeerId>,
}

impl Acl {
    /// A member of a served mesh, or the joiner of an invitation still
    /// open (its issuer withdraws it once used or expired).
    fn allowed(&self, p: &PeerId) -> bool {
        let now = now_ms();
        self.meshes.values().any(|m| m.is_member(p))
            || self
                .invites
                .values()
                .any(|i| i.guest == Some(*p) && i.expires_unix_ms > now)
    }

    fn path(&self, mesh: &PeerId) -> PathBuf {
        self.dir.join(format!("mesh-{mesh}.pb"))
    }

    /// Take in one auth message from `peer`; the number of members the
    /// relay knows for that mesh, or why it is refused.
    fn auth(&mut self, peer: PeerId, msg: &proto::RelayAuth) -> Result<u32, String> {
        let mesh = PeerId::from_bytes(&msg.mesh).map_err(|_| "bad mesh id".to_string())?;
        let Some(list) = self.meshes.get_mut(&mesh) else {
            return Err(format!("this relay does not serve mesh {mesh}"));
        };
        if let Some(ops) = &msg.members {
            if list.merge(ops) > 0 && !self.unsaved.contains(&mesh) {
                self.unsaved.push(mesh);
            }
        }
        let members = u32::try_from(list.member_ids().len()).unwrap_or(u32::MAX);
        let now = now_ms();
        self.invites.retain(|_, i| i.expires_unix_ms > now);
        if !msg.invite_proof.is_empty() {
            return match self.invites.get_mut(&proof_hash(&msg.invite_proof)) {
                Some(i) if i.mesh == mesh && i.guest.is_none_or(|g| g == peer) => {
                    i.guest = Some(peer);
                    Ok(members)
                }
                Some(i) if i.mesh == mesh => Err("this invitation was already used".into()),
                _ => Err("no open invitation matches this proof".into()),
            };
        }
        if !list.is_member(&peer) {
            return Err(format!("not a member of mesh {mesh}"));
        }
        // The member's open invitations, as it sees them now: the ones it
        // no longer lists were used or withdrawn.
        let open: Vec<(Hash32, i64)> = msg
            .invites
            .iter()
            .filter_map(|i| Some((Hash32::from_slice(&i.proof_hash)?, i.expires_unix_ms)))
            .filter(|(_, e)| *e > now)
            .collect();
        self.invites
            .retain(|h, i| i.issuer != peer || open.iter().any(|(o, _)| o == h));
        for (h, e) in open {
            self.invites.entry(h).or_insert(Invite {
                mesh,
                issuer: peer,
                expires_unix_ms: e,
                guest: None,
            });
        }
        let mut of_mesh: Vec<(Hash32, i64)> = self
            .invites
            .iter()
            .filter(|(_, i)| i.mesh == mesh)
            .map(|(h, i)| (*h, i.expires_unix_ms))
            .collect();
        if of_mesh.len() > MAX_INVITES {
            of_mesh.sort_by_key(|(_, e)| *e);
            for (h, _) in &of_mesh[..of_mesh.len() - MAX_INVITES] {
                self.invites.remove(h);
            }
        }
        Ok(members)
    }

    /// The lists that changed, with where each is saved (to save off the
    /// runtime, before the member that changed them is answered).
    fn take_unsaved(&mut self) -> Vec<(PathBuf, Members)> {
        std::mem::take(&mut self.unsaved)
            .into_iter()
            .filter_map(|m| Some((self.path(&m), self.meshes.get(&m)?.clone())))
            .collect()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: autonat::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A running relay.
pub struct Relay {
    id: PeerId,
    addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

fn lock(acl: &Mutex<Acl>) -> MutexGuard<'_, Acl> {
    acl.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse(a: &str) -> Result<Multiaddr, MeshError> {
    a.parse().map_err(|e| MeshError::Listen {
        addr: a.to_string(),
        reason: format!("{e}"),
    })
}

impl Acl {
    /// The lists of the served meshes, as saved in the data dir.
    fn load(cfg: &RelayConfig) -> Result<Acl, MeshError> {
        let mut acl = Acl {
            dir: cfg.data_dir.clone(),
            meshes: HashMap::new(),
            invites: HashMap::new(),
            unsaved: Vec::new(),
        };
        for m in &cfg.meshes {
            let mesh = m.0;
            let list = Members::load(&acl.path(&mesh))?
                .filter(|l| l.mesh() == mesh)
                .unwrap_or_else(|| Members::adopt(mesh, &proto::MemberList::default()));
            acl.meshes.insert(mesh, list);
        }
        Ok(acl)
    }
}

/// Circuit relay limits, with `acl` deciding who gets reservations and
/// circuits.
fn circuit_config(acl: &Arc<Mutex<Acl>>, max_circuit: Duration) -> relay::Config {
    let (a1, a2) = (acl.clone(), acl.clone());
    relay::Config {
        max_reservations: 1024,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        reservation_rate_limiters: vec![Box::new(move |p: PeerId, _: &Multiaddr, _| {
            lock(&a1).allowed(&p)
        })],
        max_circuits: 256,
        max_circuits_per_peer: 32,
        max_circuit_duration: max_circuit,
        // 0: no byte limit (hours of audio).
        max_circuit_bytes: 0,
        circuit_src_rate_limiters: vec![Box::new(move |p: PeerId, _: &Multiaddr, _| {
            lock(&a2).allowed(&p)
        })],
    }
}

impl Relay {
    /// Start a relay: load its key and the served meshes' lists, listen,
    /// and run until [`Relay::shutdown`].
    pub async fn start(cfg: RelayConfig) -> Result<Relay, MeshError> {
        if cfg.meshes.is_empty() {
            return Err(MeshError::BadInput(
                "a relay serves at least one mesh (--mesh MESH_ID, see `tunemesh status`)".into(),
            ));
        }
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| MeshError::Start(format!("{}: {e}", cfg.data_dir.display())))?;
        let key = load_or_create_key(&cfg.data_dir)?;
        let me = key.public().to_peer_id();
        let acl = Arc::new(Mutex::new(Acl::load(&cfg)?));
        let relay_cfg = circuit_config(&acl, cfg.max_circuit);
        let mut swarm = super::swarm::build(
            key,
            RelayClient::Without,
            Duration::from_secs(300),
            |key, _| {
                Ok(Behaviour {
                    relay: relay::Behaviour::new(me, relay_cfg),
                    identify: super::swarm::identify(key, "tunemesh-relay"),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    autonat: autonat::Behaviour::new(
                        me,
                        autonat::Config {
                            // Our own relay: members' addresses in private
                            // ranges are fine to dial back.
                            only_global_ips: false,
                            use_connected: false,
                            ..Default::default()
                        },
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                })
            },
        )?;
        let mut listeners = Vec::new();
        for a in &cfg.listen {
            let id = swarm.listen_on(parse(a)?).map_err(|e| MeshError::Listen {
                addr: a.clone(),
                reason: e.to_string(),
            })?;
            listeners.push(id);
        }
        let mut external = Vec::new();
        for a in &cfg.external {
            let a = parse(a)?;
            // Reservations carry these: without one the relay grants none.
            swarm.add_external_address(a.clone());
            external.push(a);
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(AUTH)
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let local = listen_addrs(&mut swarm, listeners.len()).await?;
        if external.is_empty() {
            tracing::warn!(
                "no --external address: announcing the listen addresses; members outside \
                 this network need the relay's public address"
            );
            for a in &local {
                if !super::addr::ip_of(a).is_some_and(|ip| ip.is_loopback()) || local.len() == 1 {
                    swarm.add_external_address(a.clone());
                    external.push(a.clone());
                }
            }
        }
        let addrs: Vec<Multiaddr> = external
            .iter()
            .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(me)))
            .collect();
        let c = cancel.clone();
        tasks.spawn(
            async move {
                tokio::select! {
                    _ = c.cancelled() => {}
                    _ = run(swarm) => {}
                }
            }
            .instrument(tracing::info_span!("relay", me = %me)),
        );
        let (c, t) = (cancel.clone(), tasks.clone());
        let persister = Persister::start(&tasks, cancel.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = c.cancelled() => {}
                _ = accept_auth(incoming, acl, persister, t) => {}
            }
        });
        Ok(Relay {
            id: me,
            addrs,
            cancel,
            tasks,
        })
    }

    /// The relay's device id.
    pub fn id(&self) -> DeviceId {
        DeviceId(self.id)
    }

    /// The addresses members should use for it, `/p2p/<id>` included.
    pub fn addrs(&self) -> Vec<String> {
        self.addrs.iter().map(|a| a.to_string()).collect()
    }

    /// Stop the relay (its connections close with the swarm).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Wait (5 s at most) for the addresses of `listeners` listeners,
/// handling the swarm's events meanwhile.
async fn listen_addrs(
    swarm: &mut libp2p::Swarm<Behaviour>,
    listeners: usize,
) -> Result<Vec<Multiaddr>, MeshError> {
    let mut up = std::collections::HashSet::new();
    let mut local = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.len() < listeners {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr {
                listener_id,
                address,
            }) => {
                up.insert(listener_id);
                local.push(address);
            }
            Ok(SwarmEvent::ListenerClosed {
                addresses, reason, ..
            }) => {
                return Err(MeshError::Listen {
                    addr: format!("{addresses:?}"),
                    reason: format!("{reason:?}"),
                })
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(local)
}

async fn run(mut swarm: libp2p::Swarm<Behaviour>) {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => match ev {
                relay::Event::ReservationReqAccepted {
                    src_peer_id,
                    renewed,
                } => tracing::info!(peer = %src_peer_id, renewed, "reservation accepted"),
                relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                    tracing::info!(peer = %src_peer_id, "reservation refused: not a member")
                }
                relay::Event::CircuitReqAccepted {
                    src_peer_id,
                    dst_peer_id,
                } => tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened"),
                relay::Event::CircuitReqDenied {
                    src_peer_id,
                    dst_peer_id,
                    status,
                } => tracing::info!(
                    src = %src_peer_id, dst = %dst_peer_id, ?status,
                    "circuit refused (a stranger, or no reservation)"
                ),
                relay::Event::CircuitClosed {
                    src_peer_id,
                    dst_peer_id,
                    error,
                } => {
                    tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?error, "circuit closed")
                }
                other => tracing::debug!("{other:?}"),
            },
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected")
            }
            _ => {}
        }
    }
}

async fn accept_auth(
    mut incoming: libp2p_stream::IncomingStreams,
    acl: Arc<Mutex<Acl>>,
    persister: Persister,
    tasks: TaskTracker,
) {
    while let Some((peer, mut s)) = incoming.next().await {
        let acl = acl.clone();
        let persister = persister.clone();
        tasks.spawn(async move {
            let work = async {
                let msg: proto::RelayAuth = match wire::read(&mut s, MAX_AUTH).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::info!(%peer, "bad relay auth: {e}");
                        return;
                    }
                };
                let (verdict, unsaved) = {
                    let mut acl = lock(&acl);
                    (acl.auth(peer, &msg), acl.take_unsaved())
                };
                for (path, list) in unsaved {
                    if let Err(e) = persister.save(list, path).wait().await {
                        tracing::error!("{e}");
                    }
                }
                let reply = match verdict {
                    Ok(members) => {
                        tracing::info!(%peer, members, "member accepted");
                        proto::RelayAuthReply {
                            error: String::new(),
                            members,
                        }
                    }
                    Err(error) => {
                        tracing::info!(%peer, "refused: {error}");
                        proto::RelayAuthReply { error, members: 0 }
                    }
                };
                let _ = wire::write(&mut s, &reply, MAX_AUTH).await;
                let _ = s.close().await;
            };
            let _ = tokio::time::timeout(AUTH_TIMEOUT, work).await;
        });
    }
}

/// Client side: present `msg` to `relay`; the member count it knows, or
/// why it refused.
pub(super) async fn authenticate(
    control: &mut libp2p_stream::Control,
    relay: PeerId,
    msg: &proto::RelayAuth,
) -> Result<u32, String> {
    let work = async {
        let mut s = control
            .open_stream(relay, AUTH)
            .await
            .map_err(|e| e.to_string())?;
        wire::write(&mut s, msg, MAX_AUTH)
            .await
            .map_err(|e| e.to_string())?;
        let reply: proto::RelayAuthReply = wire::read(&mut s, MAX_AUTH)
            .await
            .map_err(|e| e.to_string())?;
        let _ = s.close().await;
        if reply.error.is_empty() {
            Ok(reply.members)
        } else {
            Err(reply.error)
        }
    };
    tokio::time::timeout(AUTH_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

#[cfg(test)]
mod tests {
    use super::super::members::Change;
    use super::*;
    use libp2p::identity::Keypair;

    fn acl(dir: &std::path::Path, mesh: PeerId) -> Acl {
        let mut meshes = HashMap::new();
        meshes.insert(mesh, Members::adopt(mesh, &proto::MemberList::default()));
        Acl {
            dir: dir.to_path_buf(),
            meshes,
            invites: HashMap::new(),
            unsaved: Vec::new(),
        }
    }

    #[test]
    fn members_in_strangers_out() {
        let dir = tempfile::tempdir().unwrap();
        let home = Keypair::generate_ed25519();
        let phone = Keypair::generate_ed25519();
        let stranger = Keypair::generate_ed25519();
        let (hp, pp, sp) = (
            home.public().to_peer_id(),
            phone.public().to_peer_id(),
            stranger.public().to_peer_id(),
        );
        let mut a = acl(dir.path(), hp);
        // The founder is a member of its own mesh from the start.
        assert!(a.allowed(&hp));
        assert!(!a.allowed(&pp) && !a.allowed(&sp));

        // The home adds the phone and tells the relay: the phone is in,
        // and the list is saved.
        let mut list = Members::found(&home, "home", "home", vec![]);
        list.issue(&home, pp, Change::Add, "phone", "phone", vec![])
            .unwrap();
        let msg = |mesh: PeerId, l: &Members| proto::RelayAuth {
            mesh: mesh.to_bytes(),
            members: Some(l.to_proto()),
            ..Default::default()
        };
        assert_eq!(a.auth(hp, &msg(hp, &list)), Ok(2));
        assert!(a.allowed(&pp));
        for (path, l) in a.take_unsaved() {
            l.save(&path).unwrap();
        }
        assert!(dir.path().join(format!("mesh-{hp}.pb")).exists());
        assert!(a.take_unsaved().is_empty());

        // A stranger's own mesh is not served; a list it signs for ours
        // does not verify into it.
        let own = Members::found(&stranger, "s", "phone", vec![]);
        assert!(a
            .auth(sp, &msg(sp, &own))
            .unwrap_err()
            .contains("does not serve"));
        let mut forged = list.clone();
        assert!(forged
            .issue(&stranger, sp, Change::Add, "s", "phone", vec![])
            .is_err());
        let mut fake = Members::adopt(hp, &proto::MemberList::default());
        let _ = fake.issue(&stranger, sp, Change::Add, "s", "phone", vec![]);
        assert!(a
            .auth(sp, &msg(hp, &fake))
            .unwrap_err()
            .contains("not a member"));
        assert!(!a.allowed(&sp));

        // Revocation reaches the relay.
        list.issue(
            &home,
            pp,
            Change::Revoke { user_ops_kept: 0 },
            "",
            "",
            vec![],
        )
        .unwrap();
        a.auth(hp, &msg(hp, &list)).unwrap();
        assert!(!a.allowed(&pp));
    }

    #[test]
    fn a_joiner_gets_in_with_the_proof_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = Keypair::generate_ed25519();
        let hp = home.public().to_peer_id();
        let joiner = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let mut a = acl(dir.path(), hp);
        let secret = [7u8; 32];
        let proof = invite_proof(&secret);
        let list = Members::found(&home, "home", "home", vec![]);
        let tell = proto::RelayAuth {
            mesh: hp.to_bytes(),
            members: Some(list.to_proto()),
            invites: vec![proto::RelayInvite {
                proof_hash: proof_hash(&proof).0.to_vec(),
                expires_unix_ms: now_ms() + 60_000,
            }],
            invite_proof: vec![],
        };
        a.auth(hp, &tell).unwrap();
        let show = |p: &[u8]| proto::RelayAuth {
            mesh: hp.to_bytes(),
            invite_proof: p.to_vec(),
            ..Default::default()
        };
        // The secret itself, or a wrong proof, gets nothing.
        assert!(a.auth(other, &show(&secret)).is_err());
        assert!(a.auth(other, &show(&[1u8; 32])).is_err());
        assert!(!a.allowed(&other));
        a.auth(joiner, &show(&proof)).unwrap();
        assert!(a.allowed(&joiner));
        // A ticket works once: the same proof from someone else is refused.
        assert!(a
            .auth(other, &show(&proof))
            .unwrap_err()
            .contains("already used"));
        assert!(!a.allowed(&other));
        // Once used, the home no longer lists it: the guest is out (it is a
        // member by then, through the list).
        let mut done = tell.clone();
        done.invites.clear();
        a.auth(hp, &done).unwrap();
        assert!(!a.allowed(&joiner));
        assert!(a.auth(other, &show(&proof)).is_err());
        // An expired invitation lets no one in.
        let mut b = acl(dir.path(), hp);
        let mut old = tell.clone();
        old.invites[0].expires_unix_ms = now_ms() - 1;
        b.auth(hp, &old).unwrap();
        assert!(b.auth(joiner, &show(&proof)).is_err());
    }
}
