//! The event loop: the one task that owns the `Swarm` and the peer, relay
//! and member state ([`State`]). Clients ask it through [`Command`]s (each
//! answered on a oneshot) and read what it knows from the [`View`] it
//! publishes on a `watch` after every command and event.
//!
//! Here: commands, member list changes (saved in order off the runtime by
//! the [`Persister`]; the asker waits for the save before acknowledging),
//! and publishing. Dialling is in `dial.rs`, swarm events in `events.rs`.
//!
//! Must never: await anything but the swarm, its command channel and the
//! node's event channel (work that waits on a peer or a disk runs in tasks
//! that answer through [`Command`]s), or reply to a member list change
//! before publishing it.

use super::client::Client;
use super::members::{Change, Durable, Members};
use super::state::{redundant, State, View};
use super::swarm::Behaviour;
use super::types::Announcement;
use super::MeshError;
use crate::proto;
use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub(super) type Swarm = libp2p::Swarm<Behaviour>;
/// Answers to dials, by peer, sent when a connection is up or fails.
pub(super) type DialReplies = HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>;

/// Where members were last seen: device id → multiaddrs (JSON).
pub(super) const ADDRS_FILE: &str = "known-addrs.json";

/// What clients ask of the event loop.
pub(super) enum Command {
    /// Connect to `peer` (done at once when connected).
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Learn a relay's addresses and connect to it.
    DialRelay {
        relay: PeerId,
        learn: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Disconnect(PeerId),
    /// A relay answered our auth message.
    RelayAuthed {
        relay: PeerId,
        result: Result<u32, String>,
    },
    /// Tell every connected relay our member list and invitations again.
    PushRelays,
    /// Close the peer's relayed connections if a direct one is up.
    Prune(PeerId),
    /// Run the tick now (a direct dial's head start is over).
    Tick,
    /// We joined a mesh: take its list; `inviter` is at `addrs`.
    Adopt {
        members: Members,
        inviter: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Durable>,
    },
    /// Revoke a member.
    Revoke {
        peer: PeerId,
        /// Its user operations we hold (kept everywhere).
        user_ops_kept: u64,
        reply: oneshot::Sender<Result<Durable, MeshError>>,
    },
    /// A joiner redeemed an invitation: add it to the list.
    Admit {
        peer: PeerId,
        name: String,
        role: String,
        addrs: Vec<String>,
        reply: oneshot::Sender<Result<(proto::MemberList, Durable), &'static str>>,
    },
    /// A member's announcement: merge its list, remember what it says.
    Absorb {
        from: PeerId,
        list: Option<proto::MemberList>,
        announcement: Option<Announcement>,
        reply: oneshot::Sender<Absorbed>,
    },
}

/// What an announcement changed.
pub(super) struct Absorbed {
    /// New member list operations.
    pub(super) merged: usize,
    /// Their save, when there were any.
    pub(super) durable: Option<Durable>,
    /// The sender is a member (after the merge).
    pub(super) member: bool,
}

/// The task owning the swarm.
pub(super) struct EventLoop {
    pub(super) swarm: Swarm,
    pub(super) st: State,
    cmd_rx: mpsc::Receiver<Command>,
    pub(super) dials: DialReplies,
    view: watch::Sender<View>,
    /// For the tasks it starts (announcements, relay auth) and the
    /// handles it shares with clients.
    pub(super) client: Client,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm,
        st: State,
        cmd_rx: mpsc::Receiver<Command>,
        view: watch::Sender<View>,
        client: Client,
    ) -> EventLoop {
        EventLoop {
            swarm,
            st,
            cmd_rx,
            dials: HashMap::new(),
            view,
            client,
        }
    }

    /// Run until cancelled (the mesh's tracker owns the task).
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd),
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev).await,
                _ = tick.tick() => self.on_tick(),
            }
            self.publish();
        }
    }

    /// Publish what clients read.
    pub(super) fn publish(&self) {
        self.view.send_replace(self.st.view());
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => self.dial(peer, addrs, reply),
            Command::DialRelay {
                relay,
                learn,
                reply,
            } => {
                let r = self.st.relays.entry(relay).or_default();
                for a in learn {
                    r.learn(a);
                }
                let addrs = r.dial_addrs();
                self.dial(relay, addrs, reply);
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::RelayAuthed { relay, result } => self.on_relay_authed(relay, result),
            Command::PushRelays => self.push_relays(),
            Command::Tick => self.on_tick(),
            Command::Prune(peer) => {
                let close = self
                    .st
                    .peers
                    .get(&peer)
                    .map(|s| redundant(&s.conns))
                    .unwrap_or_default();
                for id in close {
                    tracing::info!(%peer, "direct connection up: closing the relayed one");
                    self.swarm.close_connection(id);
                }
            }
            Command::Adopt {
                members,
                inviter,
                addrs,
                reply,
            } => {
                self.st.members = Arc::new(members);
                self.st.addrs.insert(inviter, addrs);
                self.save_addrs();
                let durable = self.save_members();
                self.publish();
                let _ = reply.send(durable);
            }
            Command::Revoke {
                peer,
                user_ops_kept,
                reply,
            } => {
                let r = self.revoke(peer, user_ops_kept);
                self.publish();
                let _ = reply.send(r);
            }
            Command::Admit {
                peer,
                name,
                role,
                addrs,
                reply,
            } => {
                let r = self.admit(peer, &name, &role, addrs);
                self.publish();
                let _ = reply.send(r);
            }
            Command::Absorb {
                from,
                list,
                announcement,
                reply,
            } => {
                let r = self.absorb(from, list, announcement);
                self.publish();
                let _ = reply.send(r);
            }
        }
    }

    fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        for a in &addrs {
            self.swarm.add_peer_address(peer, a.clone());
        }
        match self
            .swarm
            .dial(DialOpts::peer_id(peer).addresses(addrs).build())
        {
            Ok(()) => self.dials.entry(peer).or_default().push(reply),
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    /// Mark every connected relay as being told, and tell it.
    pub(super) fn push_relays(&mut self) {
        let mut relays = Vec::new();
        for (p, r) in self.st.relays.iter_mut().filter(|(_, r)| r.connected) {
            r.auth_pending = true;
            relays.push(*p);
        }
        for r in relays {
            let c = self.client.clone();
            self.client
                .shared
                .spawn(async move { c.auth_relay(r).await });
        }
    }

    /// Queue the member list's save.
    fn save_members(&self) -> Durable {
        let s = &self.client.shared;
        s.persister
            .save((*self.st.members).clone(), s.members_path.clone())
    }

    fn revoke(&mut self, peer: PeerId, user_ops_kept: u64) -> Result<Durable, MeshError> {
        if !self.st.members.is_member(&peer) {
            return Err(MeshError::BadInput(format!("{peer} is not a member")));
        }
        let key = &self.client.shared.key;
        Arc::make_mut(&mut self.st.members).issue(
            key,
            peer,
            Change::Revoke { user_ops_kept },
            "",
            "",
            vec![],
        )?;
        Ok(self.save_members())
    }

    fn admit(
        &mut self,
        peer: PeerId,
        name: &str,
        role: &str,
        addrs: Vec<String>,
    ) -> Result<(proto::MemberList, Durable), &'static str> {
        let key = &self.client.shared.key;
        Arc::make_mut(&mut self.st.members)
            .issue(key, peer, Change::Add, name, role, addrs)
            .map_err(|_| "this device can no longer invite")?;
        if let Some(p) = self.st.peers.get_mut(&peer) {
            p.grace_until = None;
        }
        Ok((self.st.members.to_proto(), self.save_members()))
    }

    fn absorb(
        &mut self,
        from: PeerId,
        list: Option<proto::MemberList>,
        announcement: Option<Announcement>,
    ) -> Absorbed {
        let merged = list.map_or(0, |l| Arc::make_mut(&mut self.st.members).merge(&l));
        let durable = (merged > 0).then(|| self.save_members());
        if merged > 0 {
            // Drop devices that are no longer members.
            let gone: Vec<PeerId> = self
                .st
                .peers
                .iter()
                .filter(|(p, s)| !s.conns.is_empty() && !self.st.members.is_member(p))
                .map(|(p, _)| *p)
                .collect();
            for p in gone {
                let _ = self.swarm.disconnect_peer_id(p);
            }
        }
        let member = self.st.members.is_member(&from);
        if let (true, Some(a)) = (member, announcement) {
            self.st.peers.entry(from).or_default().announced = Some(a);
        }
        Absorbed {
            merged,
            durable,
            member,
        }
    }

    /// Put our reachable addresses (relayed, confirmed external) into the
    /// signed member list when one is new, so every member learns where to
    /// find us away from home, even from another member.
    pub(super) fn refresh_own_addrs(&mut self) {
        let me = self.st.me;
        let advertised = super::addr::advertised(&self.st.listen, &self.st.external);
        let stable: Vec<Multiaddr> = advertised
            .iter()
            .filter(|a| {
                super::addr::is_circuit(a)
                    || self.st.external.iter().any(|e| super::addr::bare(e) == **a)
            })
            .cloned()
            .collect();
        let listed: Vec<String> = self
            .st
            .members
            .devices()
            .into_iter()
            .find(|d| d.id == me.to_string())
            .map(|d| d.addrs)
            .unwrap_or_default();
        if stable.is_empty() || stable.iter().all(|a| listed.contains(&a.to_string())) {
            return;
        }
        let addrs = advertised.iter().map(|a| a.to_string()).collect();
        let local = self.client.local();
        let key = &self.client.shared.key;
        let issued = Arc::make_mut(&mut self.st.members).issue(
            key,
            me,
            Change::Add,
            &local.name,
            &local.role,
            addrs,
        );
        match issued {
            Ok(()) => {
                let durable = self.save_members();
                let c = self.client.clone();
                self.client
                    .shared
                    .spawn(async move { c.own_addrs_listed(durable).await });
            }
            Err(e) => tracing::warn!("cannot update our addresses in the member list: {e}"),
        }
    }

    /// Remember where members were last seen (so a restarted phone finds
    /// its home without mDNS), written off the event loop.
    pub(super) fn save_addrs(&self) {
        let book: HashMap<String, Vec<String>> = self
            .st
            .addrs
            .iter()
            .filter(|(p, _)| self.st.members.is_member(p))
            .map(|(p, a)| (p.to_string(), a.iter().map(|a| a.to_string()).collect()))
            .collect();
        let path = self.client.shared.members_path.with_file_name(ADDRS_FILE);
        self.client.shared.tasks.spawn_blocking(move || {
            let write = || -> std::io::Result<()> {
                crate::fsutil::write_atomic_with(&path, crate::fsutil::FileMode::OwnerOnly, |f| {
                    serde_json::to_writer_pretty(f, &book).map_err(std::io::Error::from)
                })
            };
            if let Err(e) = write() {
                tracing::warn!("cannot save {}: {e}", path.display());
            }
        });
    }
}

/// Where members were last seen, as saved by [`EventLoop::save_addrs`].
pub(super) fn load_addrs(path: &Path) -> HashMap<PeerId, Vec<Multiaddr>> {
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
