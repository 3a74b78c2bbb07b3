//! [`Client`]: the cloneable handle the node holds. It reads what the event
//! loop knows from the published [`View`] (so status reads are synchronous
//! and never wait on the loop), asks it for changes with [`Command`]s, and
//! runs the exchanges with peers itself (control requests, streams, relay
//! auth) in its own tasks.
//!
//! Must never: touch the swarm or the event loop's state but through a
//! command, or acknowledge a member list change before its save is done.

use super::addr::relay_of;
use super::event_loop::{Absorbed, Command};
use super::members::{Device, Durable, Members, Persister};
use super::state::{Invitations, View};
use super::ticket::Ticket;
use super::types::{
    Announcement, DeviceId, Event, PeerInfo, Reachability, RelayInfo, Request, Response,
    StreamHead, StreamOpen,
};
use super::{audio, ctl, now_ms, relay, userops, MeshError, CTL_TIMEOUT};
use crate::model::Hash32;
use crate::proto;
use crate::userdata::{Op, SignedOp};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every clone of a client (and the event loop) shares.
pub(super) struct Shared {
    pub(super) key: Keypair,
    pub(super) me: PeerId,
    pub(super) members_path: PathBuf,
    pub(super) cmd: mpsc::Sender<Command>,
    pub(super) view: watch::Receiver<View>,
    /// What we announce (the node sets root and tracks).
    pub(super) local: watch::Sender<Announcement>,
    pub(super) invitations: Mutex<Invitations>,
    pub(super) events: mpsc::Sender<Event>,
    /// Each closed connection of a peer (see [`Client::watch_closed`]).
    pub(super) closed: broadcast::Sender<DeviceId>,
    pub(super) persister: Persister,
    pub(super) tasks: TaskTracker,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    /// Spawn an owned task, cancelled at shutdown.
    pub(super) fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
    }

    pub(super) async fn emit(&self, ev: Event) {
        let _ = self.events.send(ev).await;
    }
}

/// A cloneable handle to the mesh.
#[derive(Clone)]
pub struct Client {
    pub(super) shared: Arc<Shared>,
    pub(super) control: libp2p_stream::Control,
}

impl Client {
    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.shared.me)
    }

    /// The id of the mesh this device is in (its founder's device id).
    pub fn mesh_id(&self) -> DeviceId {
        DeviceId(self.view().members.mesh())
    }

    /// Where this node can be reached: listen addresses (relayed ones
    /// included) and confirmed external ones, `/p2p/<id>` appended.
    pub fn listen_addrs(&self) -> Vec<String> {
        let me = self.shared.me;
        self.view()
            .advertised
            .iter()
            .map(|a| {
                if a.iter().last() == Some(Protocol::P2p(me)) {
                    a.to_string()
                } else {
                    a.clone().with(Protocol::P2p(me)).to_string()
                }
            })
            .collect()
    }

    /// The relays this node knows, and where it stands with each.
    pub fn relays(&self) -> Vec<RelayInfo> {
        self.view().relays.clone()
    }

    /// What AutoNAT concluded, asking our relays.
    pub fn reachability(&self) -> Reachability {
        self.view().reachability
    }

    /// Told the peer of every connection that closes. A substream on a
    /// connection this node closes itself (a relayed one once a direct one
    /// is up, a duplicate) is not always woken by the muxer, so readers of
    /// long streams reopen theirs when their peer loses a connection.
    pub fn watch_closed(&self) -> broadcast::Receiver<DeviceId> {
        self.shared.closed.subscribe()
    }

    /// In the member list now.
    pub fn is_member(&self, d: &DeviceId) -> bool {
        self.view().members.is_member(&d.0)
    }

    /// The member list.
    pub fn devices(&self) -> Vec<Device> {
        self.view().members.devices()
    }

    /// Members other than this device that are connected now.
    pub fn connected_members(&self) -> Vec<DeviceId> {
        self.view().connected.clone()
    }

    /// Every peer we know or see, members first.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.view().peers.clone()
    }

    /// What this node announces; pushed to every connected member when the
    /// root changes.
    pub fn set_local(&self, root: Hash32, tracks: u64) {
        let changed = self.shared.local.send_if_modified(|l| {
            let changed = l.root != root || l.tracks != tracks;
            l.root = root;
            l.tracks = tracks;
            changed
        });
        if changed {
            self.announce_all();
        }
    }

    /// Open a one-time invitation valid for `ttl`.
    pub fn invite(&self, ttl: Duration) -> Result<String, MeshError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| MeshError::Start(e.to_string()))?;
        let now = now_ms();
        let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.invitations().open(&secret, expires, now);
        let view = self.view();
        let ticket = Ticket {
            inviter: self.shared.me,
            addrs: view.advertised.clone(),
            secret,
            expires_unix_ms: expires,
            mesh: view.members.mesh(),
        };
        drop(view);
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
            let view = self.view();
            if view.members.mesh() == t.mesh && view.members.is_member(&self.shared.me) {
                // Already in that mesh: nothing to join.
                return Ok(view.members.devices());
            }
        }
        self.through_ticket_relays(&t).await;
        self.dial(t.inviter, t.addrs.clone()).await?;
        let list = ctl::join(self, &t).await?;
        let members = Members::adopt(t.mesh, &list);
        if !members.is_member(&self.shared.me) || !members.is_member(&t.inviter) {
            return Err(MeshError::Protocol {
                peer: DeviceId(t.inviter),
                reason: "the member list it sent does not include us".into(),
            });
        }
        let devices = members.devices();
        let durable = self
            .ask(|reply| Command::Adopt {
                members,
                inviter: t.inviter,
                addrs: t.addrs.clone(),
                reply,
            })
            .await?;
        durable.wait().await?;
        self.shared.emit(Event::MembersChanged).await;
        self.push_relays();
        self.announce_all();
        Ok(devices)
    }

    /// Through the inviter's relays (when it is away): show each the
    /// invitation's proof first, or it refuses us the circuit.
    async fn through_ticket_relays(&self, t: &Ticket) {
        let proof = relay::invite_proof(&t.secret);
        let mut relays: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for (rid, raddr) in t.addrs.iter().filter_map(relay_of) {
            match relays.iter_mut().find(|(r, _)| *r == rid) {
                Some((_, v)) => v.push(raddr),
                None => relays.push((rid, vec![raddr])),
            }
        }
        for (rid, learn) in relays {
            let dialled = self
                .ask(|reply| Command::DialRelay {
                    relay: rid,
                    learn,
                    reply,
                })
                .await
                .and_then(|r| r.map_err(|reason| self.unreachable(rid, reason)));
            if let Err(e) = dialled {
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
    }

    /// Revoke a member; the revocation spreads to every member and the
    /// device is disconnected everywhere. Its first `user_ops_kept` user
    /// operations (those we hold) stay valid; later ones are refused.
    pub async fn remove_device(&self, id: &DeviceId, user_ops_kept: u64) -> Result<(), MeshError> {
        let durable = self
            .ask(|reply| Command::Revoke {
                peer: id.0,
                user_ops_kept,
                reply,
            })
            .await??;
        durable.wait().await?;
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

    /// Sign an operation this device made: the bytes to store and send.
    pub fn seal_op(&self, op: Op) -> SignedOp {
        let wire = userops::seal(&self.shared.key, &op);
        SignedOp { op, wire }
    }

    /// Check a user operation received from a member: it decodes, is
    /// within limits, is signed by its device, and that device is a member
    /// (or was, when the operation was made: see
    /// [`Members::accepts_user_op`](super::members::Members::accepts_user_op)).
    /// The error says why it is refused.
    pub fn open_op(&self, wire: Vec<u8>) -> Result<SignedOp, String> {
        let op = userops::open(&wire)?;
        if !self.accepts_user_op(&op.id.device, op.id.seq) {
            return Err(format!(
                "operation {} of {} refused: that device is not a member",
                op.id.seq, op.id.device
            ));
        }
        Ok(SignedOp { op, wire })
    }

    /// May user operation `seq` of `device` be kept? (A member's: yes; a
    /// revoked device's: only those its revokers held; anyone else's: no.)
    pub fn accepts_user_op(&self, device: &DeviceId, seq: u64) -> bool {
        self.view().members.accepts_user_op(&device.0, seq)
    }

    /// How many user operations of `device` are kept: `None` (all) for a
    /// member, else what its revocations keep (0 for a stranger).
    pub fn user_ops_kept(&self, device: &DeviceId) -> Option<u64> {
        self.view().members.user_ops_kept(&device.0)
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
        ctl::request_many(self, *peer, reqs).await
    }

    /// Open an audio stream from a member: the head, then its chunks up to
    /// the end marker (see [`audio`]).
    pub async fn open_stream(
        &self,
        peer: &DeviceId,
        open: &StreamOpen,
    ) -> Result<(StreamHead, audio::ChunkReader), MeshError> {
        audio::open(&mut self.control.clone(), peer.0, open).await
    }

    /// Open a blob's groups from a member: the head, the chunks (a group
    /// each) and the acknowledgement writer the server waits for.
    pub async fn open_blob(
        &self,
        peer: &DeviceId,
        open: &StreamOpen,
    ) -> Result<(StreamHead, audio::ChunkReader, audio::Acker), MeshError> {
        audio::open_blob(&mut self.control.clone(), peer.0, open).await
    }

    // ----- internals -------------------------------------------------------

    /// The event loop's last published view.
    pub(super) fn view(&self) -> watch::Ref<'_, View> {
        self.shared.view.borrow()
    }

    /// What we announce now.
    pub(super) fn local(&self) -> Announcement {
        self.shared.local.borrow().clone()
    }

    pub(super) fn invitations(&self) -> MutexGuard<'_, Invitations> {
        self.shared
            .invitations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn unreachable(&self, peer: PeerId, reason: String) -> MeshError {
        MeshError::Unreachable {
            peer: DeviceId(peer),
            reason,
        }
    }

    /// Send a command and wait for its answer.
    pub(super) async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(cmd(tx))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.await.map_err(|_| MeshError::Closed)
    }

    /// Send a command from synchronous code: at once when the channel has
    /// room, else from a task.
    fn send_soon(&self, cmd: Command) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.shared.cmd.try_send(cmd) {
            let tx = self.shared.cmd.clone();
            self.shared.spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }

    pub(super) async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), MeshError> {
        let answer = self.ask(|reply| Command::Dial { peer, addrs, reply });
        match tokio::time::timeout(CTL_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(self.unreachable(peer, reason)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.unreachable(peer, "timed out".into())),
        }
    }

    /// Our announcement as a control request.
    pub(super) fn announcement_msg(&self) -> proto::CtlRequest {
        let local = self.local();
        proto::CtlRequest {
            kind: Some(proto::ctl_request::Kind::Announce(proto::Announce {
                root: local.root.0.to_vec(),
                tracks: local.tracks,
                members: Some(self.view().members.to_proto()),
                name: local.name,
                role: local.role,
            })),
        }
    }

    /// Take in a member's announcement: merge its member list, remember its
    /// root, tell the node.
    pub(super) async fn absorb(&self, from: PeerId, a: proto::Announce) {
        let announcement = match Hash32::from_slice(&a.root) {
            Some(root) => Some(Announcement {
                root,
                tracks: a.tracks,
                name: a.name,
                role: a.role,
            }),
            None => None,
        };
        let asked = self
            .ask(|reply| Command::Absorb {
                from,
                list: a.members,
                announcement: announcement.clone(),
                reply,
            })
            .await;
        let Ok(Absorbed {
            merged,
            durable,
            member,
        }) = asked
        else {
            return;
        };
        if let Some(d) = durable {
            if let Err(e) = d.wait().await {
                tracing::error!("{e}");
            }
        }
        if merged > 0 {
            tracing::info!(%from, "{merged} new member list operations");
            self.shared.emit(Event::MembersChanged).await;
            self.push_relays();
            // Spread the news (devices no longer members were dropped).
            self.announce_all();
        }
        if !member {
            return;
        }
        let Some(announcement) = announcement else {
            tracing::warn!(%from, "announcement without a valid root ignored");
            return;
        };
        self.shared
            .emit(Event::Announced {
                from: DeviceId(from),
                announcement,
            })
            .await;
    }

    pub(super) async fn announce_to(&self, peer: PeerId) {
        let msg = self.announcement_msg();
        match ctl::exchange(self, peer, &msg).await.map(|(r, _)| r) {
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

    pub(super) fn announce_all(&self) {
        self.announce_all_except(None);
    }

    pub(super) fn announce_all_except(&self, skip: Option<PeerId>) {
        for d in self.connected_members() {
            if Some(d.0) == skip {
                continue;
            }
            let c = self.clone();
            self.shared.spawn(async move { c.announce_to(d.0).await });
        }
    }

    /// Our addresses went into the member list (see
    /// `EventLoop::refresh_own_addrs`): once saved, tell everyone.
    pub(super) async fn own_addrs_listed(&self, durable: Durable) {
        match durable.wait().await {
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
    pub(super) fn push_relays(&self) {
        self.send_soon(Command::PushRelays);
    }

    /// Show `relay` our member list and open invitations; the event loop
    /// hears its answer.
    pub(super) async fn auth_relay(&self, relay: PeerId) {
        let msg = proto::RelayAuth {
            mesh: self.view().members.mesh().to_bytes(),
            members: Some(self.view().members.to_proto()),
            invites: self.invitations().for_relays(now_ms()),
            invite_proof: vec![],
        };
        let result = relay::authenticate(&mut self.control.clone(), relay, &msg).await;
        let _ = self
            .shared
            .cmd
            .send(Command::RelayAuthed { relay, result })
            .await;
    }
}
