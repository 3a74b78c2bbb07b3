//! Dialling, for the event loop: members (direct first, then through a
//! relay after the head start, per [`dial_plan`]), relays and their
//! reservations, strangers' grace running out, and network changes.
//!
//! Must never: dial a stranger (only members and relays), or await.

use super::addr::{ip_of, is_quic, relay_of};
use super::event_loop::{Command, EventLoop};
use super::now_ms;
use super::state::{dial_plan, due, head_start_over, REDIAL};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::time::{Duration, Instant};

/// A relay that refused us is asked again this rarely.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// What one tick decided to do.
#[derive(Default)]
struct TickPlan {
    /// Strangers whose grace ran out.
    cut: Vec<PeerId>,
    direct: Vec<(PeerId, Vec<Multiaddr>)>,
    relayed: Vec<(PeerId, Vec<Multiaddr>)>,
    relay_dials: Vec<(PeerId, Vec<Multiaddr>)>,
    listens: Vec<(PeerId, Multiaddr)>,
}

impl EventLoop {
    pub(super) fn on_relay_authed(&mut self, relay: PeerId, result: Result<u32, String>) {
        let me = self.st.me;
        let listed = self.st.listed_addrs();
        let members = self.st.members.member_ids();
        let r = self.st.relays.entry(relay).or_default();
        r.auth_pending = false;
        match &result {
            Ok(n) => {
                tracing::info!(%relay, members = n, "the relay accepted us");
                r.accepted = true;
                r.error = None;
            }
            Err(e) => {
                tracing::warn!(%relay, "the relay refused us: {e}");
                r.accepted = false;
                r.error = Some(e.clone());
            }
        }
        // Asked even when refused: the reservation is the relay's real
        // gate (and says so in its log).
        let listen = match (r.primary(), r.reserve && r.connected) {
            (Some(a), true) if r.listener.is_none() => {
                r.last_listen = Some(Instant::now());
                Some(a)
            }
            _ => None,
        };
        // Members we could not reach but through this relay (those whose
        // direct addresses still have their head start wait for the tick).
        let now = Instant::now();
        let waiting: Vec<(PeerId, Vec<Multiaddr>)> = members
            .into_iter()
            .filter(|p| *p != me && !self.swarm.is_connected(p))
            .filter_map(|p| {
                let (direct, circuit) = self.st.member_addrs(&listed, &p);
                let last = self.st.peers.get(&p).and_then(|s| s.dialled.direct);
                if !head_start_over(!direct.is_empty(), last, now) {
                    return None;
                }
                let via: Vec<Multiaddr> = circuit
                    .into_iter()
                    .filter(|a| relay_of(a).is_some_and(|(r, _)| r == relay))
                    .collect();
                (!via.is_empty()).then_some((p, via))
            })
            .collect();
        for (p, _) in &waiting {
            self.st.peers.entry(*p).or_default().dialled.relayed = Some(now);
        }
        if let Some(a) = listen {
            self.listen_relay(relay, a);
        }
        for (p, addrs) in waiting {
            self.dial_relayed(p, addrs);
        }
    }

    /// Ask `relay` for a reservation: members reach us through it.
    pub(super) fn listen_relay(&mut self, relay: PeerId, addr: Multiaddr) {
        let result = self.swarm.listen_on(addr.with(Protocol::P2pCircuit));
        let r = self.st.relays.entry(relay).or_default();
        match result {
            Ok(id) => r.listener = Some(id),
            Err(e) => {
                tracing::warn!(%relay, "cannot listen through the relay: {e}");
                r.error = Some(e.to_string());
            }
        }
    }

    fn dial_relayed(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>) {
        // Through the relay over QUIC first (the connection we hold to it).
        addrs.sort_by_key(|a| !is_quic(a));
        tracing::debug!(%peer, "dialling through a relay");
        // Even while a direct dial is pending (it may hang until its
        // timeout behind a NAT).
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(addrs)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, "relayed dial: {e}");
        }
    }

    /// Decide what to dial for each unconnected member.
    fn plan_members(&mut self, now: Instant, plan: &mut TickPlan) {
        let listed = self.st.listed_addrs();
        for p in self.st.members.member_ids() {
            if p == self.st.me || self.swarm.is_connected(&p) {
                continue;
            }
            let (d, c) = self.st.member_addrs(&listed, &p);
            // Every address of each relay first: dialling it on the first
            // one seen would pick TCP half the time, and a TCP link to the
            // relay tells us no UDP address to punch with.
            for a in &c {
                if let Some((rid, raddr)) = relay_of(a) {
                    self.st.relays.entry(rid).or_default().learn(raddr);
                }
            }
            let mut via_ready = Vec::new();
            for a in &c {
                if let Some((rid, _)) = relay_of(a) {
                    let r = self.st.relays.entry(rid).or_default();
                    if r.connected && !r.auth_pending {
                        via_ready.push(a.clone());
                    } else if !r.connected && due(r.last_dial, now, REDIAL) {
                        r.last_dial = Some(now);
                        plan.relay_dials.push((rid, r.dial_addrs()));
                    }
                }
            }
            let s = self.st.peers.entry(p).or_default();
            let (ways, dialled) = dial_plan(now, !d.is_empty(), !via_ready.is_empty(), s.dialled);
            s.dialled = dialled;
            if ways.direct {
                plan.direct.push((p, d));
            }
            if ways.relayed {
                plan.relayed.push((p, via_ready));
            }
        }
    }

    /// Decide what to do for each relay we keep a reservation on.
    fn plan_relays(&mut self, now: Instant, plan: &mut TickPlan) {
        for (id, r) in self.st.relays.iter_mut() {
            if !r.reserve {
                continue;
            }
            let Some(addr) = r.primary() else { continue };
            if !r.connected {
                if due(r.last_dial, now, Duration::from_secs(5)) {
                    r.last_dial = Some(now);
                    plan.relay_dials.push((*id, r.dial_addrs()));
                }
            } else if r.listener.is_none()
                && !r.auth_pending
                && due(
                    r.last_listen,
                    now,
                    if r.accepted { REDIAL } else { REFUSED_RETRY },
                )
            {
                r.last_listen = Some(now);
                plan.listens.push((*id, addr));
            }
        }
    }

    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let mut plan = TickPlan::default();
        let live_tickets = self.client.invitations().any_live(now_ms());
        for (p, s) in self.st.peers.iter_mut() {
            if let Some(g) = s.grace_until {
                if now > g || (!live_tickets && !s.joining) {
                    s.grace_until = None;
                    plan.cut.push(*p);
                }
            }
        }
        self.plan_members(now, &mut plan);
        self.plan_relays(now, &mut plan);
        for p in plan.cut {
            if !self.st.members.is_member(&p) {
                tracing::info!(peer = %p, "stranger did not join in time: disconnected");
                let _ = self.swarm.disconnect_peer_id(p);
            }
        }
        for (id, addrs) in plan.relay_dials {
            tracing::debug!(relay = %id, "dialling relay");
            let opts = DialOpts::peer_id(id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(relay = %id, "dial: {e}");
            }
        }
        for (id, addr) in plan.listens {
            self.listen_relay(id, addr);
        }
        if !plan.direct.is_empty() {
            // The relay gets its turn when the head start is over, not at
            // the next tick after it.
            let cmd = self.client.shared.cmd.clone();
            self.client.shared.spawn(async move {
                tokio::time::sleep(super::state::DIRECT_HEAD_START + Duration::from_millis(5))
                    .await;
                let _ = cmd.send(Command::Tick).await;
            });
        }
        for (p, addrs) in plan.direct {
            tracing::debug!(peer = %p, "redialling member");
            let _ = self
                .swarm
                .dial(DialOpts::peer_id(p).addresses(addrs).build());
        }
        for (p, addrs) in plan.relayed {
            self.dial_relayed(p, addrs);
        }
    }

    /// An address of ours appeared (`NetworkChange::Gained`) or went away: dial at
    /// once whoever is missing; when one went away, connections made from
    /// it are dead (a TCP one would hang for minutes), so all are made
    /// again (streams resume on the new ones).
    pub(super) fn network_changed(&mut self, change: NetworkChange) {
        for s in self.st.peers.values_mut() {
            s.dialled = Default::default();
        }
        for r in self.st.relays.values_mut() {
            r.last_dial = None;
            r.last_listen = None;
        }
        let close: Vec<ConnectionId> = match change {
            NetworkChange::Lost => self
                .st
                .peers
                .values()
                .flat_map(|s| s.conns.iter())
                .filter(|(_, a)| !ip_of(a).is_some_and(|ip| ip.is_loopback()))
                .map(|(id, _)| *id)
                .collect(),
            NetworkChange::Gained => vec![],
        };
        if !close.is_empty() {
            tracing::info!("network changed: making {} connections again", close.len());
        }
        for id in close {
            self.swarm.close_connection(id);
        }
    }
}

/// How our addresses changed.
pub(super) enum NetworkChange {
    /// A new IP.
    Gained,
    /// An IP went away.
    Lost,
}
