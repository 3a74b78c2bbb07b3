//! Swarm events, for the event loop: listen and external addresses,
//! connections (gating members, relays and strangers holding an
//! invitation), pings, identify, mDNS, hole punches, AutoNAT and UPnP.
//!
//! Must never: keep a stranger's connection without an open invitation
//! (or our own join under way), or await anything but the node's events.

use super::addr::{ip_of, is_circuit, relay_of, same_ip};
use super::dial::NetworkChange;
use super::event_loop::{Command, EventLoop};
use super::state::redundant;
use super::swarm::BehaviourEvent;
use super::types::{DeviceId, Event, Reachability};
use super::{now_ms, JOIN_GRACE, JOIN_WAIT, RELAYED_OVERLAP};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, identify, mdns, ping, upnp, Multiaddr, PeerId};
use std::num::NonZeroU32;
use std::time::Instant;

impl EventLoop {
    pub(super) async fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                tracing::info!("listening on {address}");
                let new_ip =
                    !is_circuit(&address) && !self.st.listen.iter().any(|a| same_ip(&address, a));
                if let Some((rid, _)) = relay_of(&address) {
                    let r = self.st.relays.entry(rid).or_default();
                    if !r.reserved.contains(&address) {
                        r.reserved.push(address.clone());
                    }
                }
                let circuit = is_circuit(&address);
                self.st.listen.push(address);
                self.st.listeners_up.insert(listener_id);
                if circuit {
                    self.refresh_own_addrs();
                }
                if new_ip {
                    self.network_changed(NetworkChange::Gained);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.st.listen.retain(|a| *a != address);
                if let Some((rid, _)) = relay_of(&address) {
                    if let Some(r) = self.st.relays.get_mut(&rid) {
                        r.reserved.retain(|a| *a != address);
                    }
                }
                let lost = !is_circuit(&address)
                    && !ip_of(&address).is_some_and(|ip| ip.is_loopback())
                    && !self.st.listen.iter().any(|a| same_ip(&address, a));
                if lost {
                    tracing::info!("address {address} is gone");
                    self.network_changed(NetworkChange::Lost);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                for (id, r) in self.st.relays.iter_mut() {
                    if r.listener == Some(listener_id) {
                        tracing::info!(relay = %id, ?reason, "reservation ended");
                        r.listener = None;
                        r.reserved.clear();
                    }
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("reachable at {address}");
                if !self.st.external.contains(&address) {
                    self.st.external.push(address);
                }
                self.refresh_own_addrs();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.st.external.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.on_connected(peer_id, connection_id, endpoint, num_established)
                    .await
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.on_closed(peer_id, connection_id, num_established, cause)
                    .await
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(p),
                error,
                ..
            } if !self.swarm.is_connected(&p) => {
                tracing::debug!(peer = %p, "dial failed: {error}");
                if let Some(r) = self.st.relays.get_mut(&p) {
                    // Next time, every transport (UDP may be blocked).
                    r.quic_failed = !r.quic_failed;
                }
                for r in self.dials.remove(&p).unwrap_or_default() {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    async fn on_closed(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        num_established: u32,
        cause: Option<libp2p::swarm::ConnectionError>,
    ) {
        let s = self.st.peers.entry(peer_id).or_default();
        s.conns.remove(&connection_id);
        let gone = s.conns.is_empty();
        let relay = match self.st.relays.get_mut(&peer_id) {
            Some(r) if num_established == 0 => {
                r.connected = false;
                r.accepted = false;
                r.auth_pending = false;
                true
            }
            Some(_) => true,
            None => false,
        };
        tracing::debug!(peer = %peer_id, ?connection_id, ?cause, "connection closed");
        self.publish();
        let _ = self.client.shared.closed.send(DeviceId(peer_id));
        if relay && num_established == 0 {
            tracing::info!(relay = %peer_id, ?cause, "disconnected from relay");
        } else if gone && num_established == 0 {
            self.client
                .shared
                .emit(Event::Disconnected(DeviceId(peer_id)))
                .await;
        }
    }

    async fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: NonZeroU32,
    ) {
        for r in self.dials.remove(&peer_id).unwrap_or_default() {
            let _ = r.send(Ok(()));
        }
        let addr = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => address.clone(),
            // Relayed to us: the remote address is a bare /p2p/<id>; our
            // address on the relay says which relay and that it is relayed.
            ConnectedPoint::Listener { local_addr, .. } if is_circuit(local_addr) => {
                local_addr.clone()
            }
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
        };
        let member = self.st.members.is_member(&peer_id);
        let relay = self.st.relays.contains_key(&peer_id);
        if relay && !member {
            self.st
                .peers
                .entry(peer_id)
                .or_default()
                .conns
                .insert(connection_id, addr.clone());
            let r = self.st.relays.entry(peer_id).or_default();
            r.connected = true;
            tracing::info!(relay = %peer_id, %addr, "connected to relay");
            r.quic_failed = false;
            if num_established.get() == 1 {
                r.auth_pending = true;
                let c = self.client.clone();
                self.client
                    .shared
                    .spawn(async move { c.auth_relay(peer_id).await });
            }
            return;
        }
        let live_tickets = self.client.invitations().any_live(now_ms());
        // Who dialled, whatever role a hole punch gave each end
        // (`is_dialer` answers the role, not who dialled).
        let we_dialled = matches!(endpoint, ConnectedPoint::Dialer { .. });
        if !member && !live_tickets && !we_dialled {
            tracing::info!(peer = %peer_id, %addr, "refused: not a member, no open invitation");
            self.swarm.close_connection(connection_id);
            return;
        }
        let s = self.st.peers.entry(peer_id).or_default();
        s.conns.insert(connection_id, addr.clone());
        if !member {
            s.joining = we_dialled;
            let grace = if s.joining { JOIN_WAIT } else { JOIN_GRACE };
            s.grace_until = Some(Instant::now() + grace);
        }
        let mixed = !redundant(&s.conns).is_empty();
        tracing::info!(peer = %peer_id, %addr, member, "connected");
        if mixed && member {
            // Streams on the relayed connection resume on the direct one.
            let cmd = self.client.shared.cmd.clone();
            self.client.shared.spawn(async move {
                tokio::time::sleep(RELAYED_OVERLAP).await;
                let _ = cmd.send(Command::Prune(peer_id)).await;
            });
        }
        if member && num_established.get() == 1 {
            self.publish();
            self.client
                .shared
                .emit(Event::Connected(DeviceId(peer_id)))
                .await;
            let c = self.client.clone();
            self.client
                .shared
                .spawn(async move { c.announce_to(peer_id).await });
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(s) = self.st.peers.get_mut(&peer) {
                    s.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // As seen, port included: identify itself rewrites the port
                // to our listen port, wrong behind a port-changing NAT.
                if !is_circuit(&info.observed_addr) {
                    self.swarm
                        .behaviour_mut()
                        .candidates
                        .observed(info.observed_addr.clone());
                }
                let changed = self.st.members.is_member(&peer_id)
                    && self
                        .st
                        .addrs
                        .insert(peer_id, info.listen_addrs.clone())
                        .as_ref()
                        != Some(&info.listen_addrs);
                if changed {
                    self.save_addrs();
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns(found),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, "hole punch failed (staying relayed): {e}")
                }
            },
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let r = match &new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                tracing::info!("reachability: {r} ({new:?})");
                self.st.reachability = r;
            }
            BehaviourEvent::Upnp(ev) => match ev {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    tracing::info!("port mapped on the router (UPnP): {external_addr}")
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    tracing::info!("port mapping lost (UPnP): {external_addr}")
                }
                upnp::Event::GatewayNotFound => tracing::debug!("no UPnP gateway"),
                upnp::Event::NonRoutableGateway => {
                    tracing::info!("the UPnP gateway is itself behind a NAT")
                }
            },
            BehaviourEvent::RelayClient(ev) => tracing::debug!("relay client: {ev:?}"),
            _ => {}
        }
    }

    fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in found {
            let member = self.st.members.is_member(&peer);
            if member {
                for v in [
                    self.st.addrs.entry(peer).or_default(),
                    self.st.lan_seen.entry(peer).or_default(),
                ] {
                    if !v.contains(&addr) {
                        v.push(addr.clone());
                    }
                }
            }
            // Reached only through a relay: the LAN is better.
            let relayed_only = self
                .st
                .peers
                .get(&peer)
                .is_some_and(|s| !s.conns.is_empty() && s.conns.values().all(is_circuit));
            // Strangers on the LAN are seen and left alone.
            if member && peer != self.st.me && (!self.swarm.is_connected(&peer) || relayed_only) {
                tracing::info!(%peer, %addr, "member found on the LAN");
                // Even while a dial to stale addresses is pending: this
                // address is fresh.
                let condition = if relayed_only {
                    PeerCondition::Always
                } else {
                    PeerCondition::Disconnected
                };
                let opts = DialOpts::peer_id(peer)
                    .condition(condition)
                    .addresses(vec![addr])
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "dial: {e}");
                }
            } else if !member {
                tracing::debug!(%peer, "a stranger on the LAN (ignored)");
            }
        }
    }
}
