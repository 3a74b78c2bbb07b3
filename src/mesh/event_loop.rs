//! The event loop: the one task that owns the `Swarm`.
//!
//! It dials (members, relays), gates connections (members, relays, and
//! strangers holding an invitation for a few seconds), keeps reservations
//! on the configured relays, drops a relayed connection once a direct one
//! is up (hole punching), and notices network changes (an address gone:
//! every connection is made again).
//!
//! Must never: await anything but the swarm and its command channel (work
//! that waits on a peer runs in tasks that answer through [`Command`]s).

use super::*;

type Swarm = libp2p::Swarm<Behaviour>;

/// A relay that refused us is asked again this rarely.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
type DialReplies = HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>;

/// The relayed connections to drop: all of them once a direct one exists.
/// (Several direct ones, say from a punch at both ends, are left alone:
/// both ends cannot always tell alike which is which, and closing a
/// different one each closed both.)
fn redundant(s: &PeerState) -> Vec<ConnectionId> {
    if !s.conns.values().any(|a| !is_circuit(a)) {
        return vec![];
    }
    s.conns
        .iter()
        .filter(|(_, a)| is_circuit(a))
        .map(|(id, _)| *id)
        .collect()
}

fn due(t: Option<Instant>, now: Instant, every: Duration) -> bool {
    t.is_none_or(|t| now.duration_since(t) >= every)
}

/// A member's known addresses, split into direct and relayed ones.
fn member_addrs(
    st: &State,
    known: &HashMap<PeerId, Vec<Multiaddr>>,
    p: &PeerId,
) -> (Vec<Multiaddr>, Vec<Multiaddr>) {
    let mut all: Vec<Multiaddr> = Vec::new();
    for a in st
        .addrs
        .get(p)
        .into_iter()
        .flatten()
        .chain(known.get(p).into_iter().flatten())
    {
        if !all.contains(a) {
            all.push(a.clone());
        }
    }
    all.into_iter().partition(|a| !is_circuit(a))
}

/// Addresses of every member from the signed list.
fn list_addrs(st: &State) -> HashMap<PeerId, Vec<Multiaddr>> {
    st.members
        .devices()
        .into_iter()
        .filter_map(|d| {
            let p = d.id.parse().ok()?;
            let addrs = d.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            Some((p, addrs))
        })
        .collect()
}

impl Client {
    pub(super) async fn run(self, mut swarm: Swarm, mut cmd_rx: mpsc::Receiver<Command>) {
        let mut dials: DialReplies = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                Some(cmd) = cmd_rx.recv() => self.on_command(&mut swarm, cmd, &mut dials),
                ev = swarm.select_next_some() => self.on_swarm_event(&mut swarm, ev, &mut dials).await,
                _ = tick.tick() => self.on_tick(&mut swarm),
            }
        }
    }

    fn on_command(&self, swarm: &mut Swarm, cmd: Command, dials: &mut DialReplies) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                if swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                for a in &addrs {
                    swarm.add_peer_address(peer, a.clone());
                }
                match swarm.dial(DialOpts::peer_id(peer).addresses(addrs).build()) {
                    Ok(()) => dials.entry(peer).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Disconnect(peer) => {
                let _ = swarm.disconnect_peer_id(peer);
            }
            Command::RelayAuthed { relay, result } => self.on_relay_authed(swarm, relay, result),
            Command::Tick => self.on_tick(swarm),
            Command::Prune(peer) => {
                let close = {
                    let st = self.shared.state();
                    st.peers.get(&peer).map(redundant).unwrap_or_default()
                };
                for id in close {
                    tracing::info!(%peer, "direct connection up: closing the relayed one");
                    swarm.close_connection(id);
                }
            }
        }
    }

    fn on_relay_authed(&self, swarm: &mut Swarm, relay: PeerId, result: Result<u32, String>) {
        let (listen, waiting) = {
            let mut st = self.shared.state();
            let known = list_addrs(&st);
            let members = st.members.member_ids();
            let r = st.relays.entry(relay).or_default();
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
            // Members we could not reach but through this relay (those
            // whose direct addresses still have their head start wait for
            // the tick).
            let now = Instant::now();
            let waiting: Vec<(PeerId, Vec<Multiaddr>)> = members
                .into_iter()
                .filter(|p| *p != self.shared.me && !swarm.is_connected(p))
                .filter_map(|p| {
                    let (direct, circuit) = member_addrs(&st, &known, &p);
                    let head_start_over = direct.is_empty()
                        || st
                            .peers
                            .get(&p)
                            .and_then(|s| s.direct_dial)
                            .is_some_and(|t| now.duration_since(t) >= DIRECT_HEAD_START);
                    if !head_start_over {
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
                st.peers.entry(*p).or_default().relay_dial = Some(Instant::now());
            }
            (listen, waiting)
        };
        if let Some(a) = listen {
            self.listen_relay(swarm, relay, a);
        }
        for (p, addrs) in waiting {
            self.dial_relayed(swarm, p, addrs);
        }
    }

    /// Ask `relay` for a reservation: members reach us through it.
    fn listen_relay(&self, swarm: &mut Swarm, relay: PeerId, addr: Multiaddr) {
        let result = swarm.listen_on(addr.with(Protocol::P2pCircuit));
        let mut st = self.shared.state();
        let r = st.relays.entry(relay).or_default();
        match result {
            Ok(id) => r.listener = Some(id),
            Err(e) => {
                tracing::warn!(%relay, "cannot listen through the relay: {e}");
                r.error = Some(e.to_string());
            }
        }
    }

    fn dial_relayed(&self, swarm: &mut Swarm, peer: PeerId, mut addrs: Vec<Multiaddr>) {
        // Through the relay over QUIC first (the connection we hold to it).
        addrs.sort_by_key(|a| !is_quic(a));
        tracing::debug!(%peer, "dialling through a relay");
        // Even while a direct dial is pending (it may hang until its
        // timeout behind a NAT).
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(addrs)
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%peer, "relayed dial: {e}");
        }
    }

    fn on_tick(&self, swarm: &mut Swarm) {
        let now = Instant::now();
        let mut cut = vec![];
        let mut direct = vec![];
        let mut relayed = vec![];
        let mut relay_dials = vec![];
        let mut listens = vec![];
        {
            let mut st = self.shared.state();
            let live_tickets = st.tickets.values().any(|e| *e > now_ms());
            let members = st.members.member_ids();
            let known = list_addrs(&st);
            for (p, s) in st.peers.iter_mut() {
                if let Some(g) = s.grace_until {
                    if now > g || (!live_tickets && !s.joining) {
                        s.grace_until = None;
                        cut.push(*p);
                    }
                }
            }
            for p in members {
                if p == self.shared.me || swarm.is_connected(&p) {
                    continue;
                }
                let (d, c) = member_addrs(&st, &known, &p);
                // Every address of each relay first: dialling it on the
                // first one seen would pick TCP half the time, and a TCP
                // link to the relay tells us no UDP address to punch with.
                for a in &c {
                    if let Some((rid, raddr)) = relay_of(a) {
                        st.relays.entry(rid).or_default().learn(raddr);
                    }
                }
                let mut via_ready = Vec::new();
                for a in &c {
                    if let Some((rid, _)) = relay_of(a) {
                        let r = st.relays.entry(rid).or_default();
                        if r.connected && !r.auth_pending {
                            via_ready.push(a.clone());
                        } else if !r.connected && due(r.last_dial, now, REDIAL) {
                            r.last_dial = Some(now);
                            relay_dials.push((rid, r.dial_addrs()));
                        }
                    }
                }
                let s = st.peers.entry(p).or_default();
                if !d.is_empty() && due(s.direct_dial, now, REDIAL) {
                    s.direct_dial = Some(now);
                    direct.push((p, d.clone()));
                }
                let head_start_over = d.is_empty()
                    || s.direct_dial
                        .is_some_and(|t| now.duration_since(t) >= DIRECT_HEAD_START);
                if !via_ready.is_empty() && head_start_over && due(s.relay_dial, now, REDIAL) {
                    s.relay_dial = Some(now);
                    relayed.push((p, via_ready));
                }
            }
            for (id, r) in st.relays.iter_mut() {
                if !r.reserve {
                    continue;
                }
                let Some(addr) = r.primary() else { continue };
                if !r.connected {
                    if due(r.last_dial, now, Duration::from_secs(5)) {
                        r.last_dial = Some(now);
                        relay_dials.push((*id, r.dial_addrs()));
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
                    listens.push((*id, addr));
                }
            }
        }
        for p in cut {
            if !self.shared.is_member(&p) {
                tracing::info!(peer = %p, "stranger did not join in time: disconnected");
                let _ = swarm.disconnect_peer_id(p);
            }
        }
        for (id, addrs) in relay_dials {
            tracing::debug!(relay = %id, "dialling relay");
            let opts = DialOpts::peer_id(id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(relay = %id, "dial: {e}");
            }
        }
        for (id, addr) in listens {
            self.listen_relay(swarm, id, addr);
        }
        if !direct.is_empty() {
            // The relay gets its turn when the head start is over, not at
            // the next tick after it.
            let cmd = self.shared.cmd.clone();
            self.shared.spawn(async move {
                tokio::time::sleep(DIRECT_HEAD_START + Duration::from_millis(5)).await;
                let _ = cmd.send(Command::Tick).await;
            });
        }
        for (p, addrs) in direct {
            tracing::debug!(peer = %p, "redialling member");
            let _ = swarm.dial(DialOpts::peer_id(p).addresses(addrs).build());
        }
        for (p, addrs) in relayed {
            self.dial_relayed(swarm, p, addrs);
        }
    }

    /// An address of ours appeared (`lost == false`) or went away: dial at
    /// once whoever is missing; when one went away, connections made from
    /// it are dead (a TCP one would hang for minutes), so all are made
    /// again (streams resume on the new ones).
    fn network_changed(&self, swarm: &mut Swarm, lost: bool) {
        let close: Vec<ConnectionId> = {
            let mut st = self.shared.state();
            for s in st.peers.values_mut() {
                s.direct_dial = None;
                s.relay_dial = None;
            }
            for r in st.relays.values_mut() {
                r.last_dial = None;
                r.last_listen = None;
            }
            if lost {
                st.peers
                    .values()
                    .flat_map(|s| s.conns.iter())
                    .filter(|(_, a)| !ip_of(a).is_some_and(|ip| ip.is_loopback()))
                    .map(|(id, _)| *id)
                    .collect()
            } else {
                vec![]
            }
        };
        if !close.is_empty() {
            tracing::info!("network changed: making {} connections again", close.len());
        }
        for id in close {
            swarm.close_connection(id);
        }
    }

    pub(super) async fn on_swarm_event(
        &self,
        swarm: &mut Swarm,
        ev: SwarmEvent<BehaviourEvent>,
        dials: &mut DialReplies,
    ) {
        match ev {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                tracing::info!("listening on {address}");
                if is_circuit(&address) {
                    let c = self.clone();
                    self.shared
                        .spawn(async move { c.refresh_own_addrs().await });
                }
                let new_ip = {
                    let mut st = self.shared.state();
                    let new_ip =
                        !is_circuit(&address) && !st.listen.iter().any(|a| same_ip(&address, a));
                    if let Some((rid, _)) = relay_of(&address) {
                        let r = st.relays.entry(rid).or_default();
                        if !r.reserved.contains(&address) {
                            r.reserved.push(address.clone());
                        }
                    }
                    st.listen.push(address);
                    st.listeners_up.insert(listener_id);
                    new_ip
                };
                if new_ip {
                    self.network_changed(swarm, false);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let lost = {
                    let mut st = self.shared.state();
                    st.listen.retain(|a| *a != address);
                    if let Some((rid, _)) = relay_of(&address) {
                        if let Some(r) = st.relays.get_mut(&rid) {
                            r.reserved.retain(|a| *a != address);
                        }
                    }
                    !is_circuit(&address)
                        && !ip_of(&address).is_some_and(|ip| ip.is_loopback())
                        && !st.listen.iter().any(|a| same_ip(&address, a))
                };
                if lost {
                    tracing::info!("address {address} is gone");
                    self.network_changed(swarm, true);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let mut st = self.shared.state();
                for (id, r) in st.relays.iter_mut() {
                    if r.listener == Some(listener_id) {
                        tracing::info!(relay = %id, ?reason, "reservation ended");
                        r.listener = None;
                        r.reserved.clear();
                    }
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("reachable at {address}");
                {
                    let mut st = self.shared.state();
                    if !st.external.contains(&address) {
                        st.external.push(address);
                    }
                }
                let c = self.clone();
                self.shared
                    .spawn(async move { c.refresh_own_addrs().await });
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.shared.state().external.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                for r in dials.remove(&peer_id).unwrap_or_default() {
                    let _ = r.send(Ok(()));
                }
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    // Relayed to us: the remote address is a bare /p2p/<id>;
                    // our address on the relay says which relay and that it
                    // is relayed.
                    ConnectedPoint::Listener { local_addr, .. } if is_circuit(local_addr) => {
                        local_addr.clone()
                    }
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let (member, relay, live_tickets) = {
                    let st = self.shared.state();
                    (
                        st.members.is_member(&peer_id),
                        st.relays.contains_key(&peer_id),
                        st.tickets.values().any(|e| *e > now_ms()),
                    )
                };
                if relay && !member {
                    {
                        let mut st = self.shared.state();
                        st.peers
                            .entry(peer_id)
                            .or_default()
                            .conns
                            .insert(connection_id, addr.clone());
                        st.relays.entry(peer_id).or_default().connected = true;
                    }
                    tracing::info!(relay = %peer_id, %addr, "connected to relay");
                    if let Some(r) = self.shared.state().relays.get_mut(&peer_id) {
                        r.quic_failed = false;
                    }
                    if num_established.get() == 1 {
                        let c = self.clone();
                        self.shared
                            .spawn(async move { c.auth_relay(peer_id).await });
                    }
                    return;
                }
                // Who dialled, whatever role a hole punch gave each end
                // (`is_dialer` answers the role, not who dialled).
                let we_dialled = matches!(endpoint, ConnectedPoint::Dialer { .. });
                if !member && !live_tickets && !we_dialled {
                    tracing::info!(peer = %peer_id, %addr, "refused: not a member, no open invitation");
                    swarm.close_connection(connection_id);
                    return;
                }
                let mixed = {
                    let mut st = self.shared.state();
                    let s = st.peers.entry(peer_id).or_default();
                    s.conns.insert(connection_id, addr.clone());
                    if !member {
                        s.joining = we_dialled;
                        let grace = if s.joining { JOIN_WAIT } else { JOIN_GRACE };
                        s.grace_until = Some(Instant::now() + grace);
                    }
                    s.conns.values().any(is_circuit) && s.conns.values().any(|a| !is_circuit(a))
                };
                tracing::info!(peer = %peer_id, %addr, member, "connected");
                if mixed && member {
                    // Streams on the relayed connection resume on the direct one.
                    let cmd = self.shared.cmd.clone();
                    self.shared.spawn(async move {
                        tokio::time::sleep(RELAYED_OVERLAP).await;
                        let _ = cmd.send(Command::Prune(peer_id)).await;
                    });
                }
                if member && num_established.get() == 1 {
                    self.shared.emit(Event::Connected(DeviceId(peer_id))).await;
                    let c = self.clone();
                    self.shared
                        .spawn(async move { c.announce_to(peer_id).await });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let (gone, relay) = {
                    let mut st = self.shared.state();
                    let s = st.peers.entry(peer_id).or_default();
                    s.conns.remove(&connection_id);
                    let gone = s.conns.is_empty();
                    let relay = match st.relays.get_mut(&peer_id) {
                        Some(r) if num_established == 0 => {
                            r.connected = false;
                            r.accepted = false;
                            r.auth_pending = false;
                            true
                        }
                        Some(_) => true,
                        None => false,
                    };
                    (gone, relay)
                };
                tracing::debug!(peer = %peer_id, ?connection_id, ?cause, "connection closed");
                let _ = self.shared.closed.send(DeviceId(peer_id));
                if relay && num_established == 0 {
                    tracing::info!(relay = %peer_id, ?cause, "disconnected from relay");
                } else if gone && num_established == 0 {
                    self.shared
                        .emit(Event::Disconnected(DeviceId(peer_id)))
                        .await;
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(p),
                error,
                ..
            } if !swarm.is_connected(&p) => {
                tracing::debug!(peer = %p, "dial failed: {error}");
                if let Some(r) = self.shared.state().relays.get_mut(&p) {
                    // Next time, every transport (UDP may be blocked).
                    r.quic_failed = !r.quic_failed;
                }
                for r in dials.remove(&p).unwrap_or_default() {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(swarm, ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&self, swarm: &mut Swarm, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(s) = self.shared.state().peers.get_mut(&peer) {
                    s.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // As seen, port included: identify itself rewrites the port
                // to our listen port, wrong behind a port-changing NAT.
                if !is_circuit(&info.observed_addr) {
                    swarm
                        .behaviour_mut()
                        .candidates
                        .observed(info.observed_addr.clone());
                }
                let changed = {
                    let mut st = self.shared.state();
                    st.members.is_member(&peer_id)
                        && st.addrs.insert(peer_id, info.listen_addrs.clone()).as_ref()
                            != Some(&info.listen_addrs)
                };
                if changed {
                    self.save_addrs();
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns(swarm, found),
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
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                };
                tracing::info!("reachability: {r} ({new:?})");
                self.shared.state().reachability = r;
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

    fn on_mdns(&self, swarm: &mut Swarm, found: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in found {
            let member = {
                let mut st = self.shared.state();
                let m = st.members.is_member(&peer);
                if m {
                    let v = st.addrs.entry(peer).or_default();
                    if !v.contains(&addr) {
                        v.push(addr.clone());
                    }
                    let v = st.lan_seen.entry(peer).or_default();
                    if !v.contains(&addr) {
                        v.push(addr.clone());
                    }
                }
                m
            };
            // Reached only through a relay: the LAN is better.
            let relayed_only = {
                let st = self.shared.state();
                st.peers
                    .get(&peer)
                    .is_some_and(|s| !s.conns.is_empty() && s.conns.values().all(is_circuit))
            };
            // Strangers on the LAN are seen and left alone.
            if member && peer != self.shared.me && (!swarm.is_connected(&peer) || relayed_only) {
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
                if let Err(e) = swarm.dial(opts) {
                    tracing::debug!(%peer, "dial: {e}");
                }
            } else if !member {
                tracing::debug!(%peer, "a stranger on the LAN (ignored)");
            }
        }
    }
}
