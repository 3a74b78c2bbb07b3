//! What the event loop knows of peers and relays, the snapshot of it that
//! clients read ([`View`]), open invitations, and the pure rules the event
//! loop applies: the dial plan and the redundant-connection rule.
//!
//! Must never: be written by anything but the event loop (the one
//! exception, [`Invitations`], is a map behind a lock held for one
//! operation, never across an await or I/O).

use super::addr::{advertised, classify, is_circuit, is_quic, relay_of};
use super::members::Members;
use super::types::{Announcement, DeviceId, PeerInfo, Reachability, RelayInfo};
use crate::model::Hash32;
use crate::proto;
use libp2p::core::transport::ListenerId;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an unreachable member, or a relay, is dialled again.
pub(super) const REDIAL: Duration = Duration::from_secs(10);
/// Direct addresses get this head start before the relay is tried.
pub(super) const DIRECT_HEAD_START: Duration = Duration::from_millis(250);

/// A relay we know: configured, or seen in a member's relayed address.
#[derive(Default)]
pub(super) struct RelayState {
    /// Where to reach it (`/p2p/<id>` included).
    pub(super) addrs: Vec<Multiaddr>,
    /// The last dial over QUIC alone failed: try every transport.
    pub(super) quic_failed: bool,
    /// Given with --relay: we keep a reservation there.
    pub(super) reserve: bool,
    pub(super) connected: bool,
    pub(super) auth_pending: bool,
    pub(super) accepted: bool,
    pub(super) listener: Option<ListenerId>,
    pub(super) last_listen: Option<Instant>,
    pub(super) reserved: Vec<Multiaddr>,
    pub(super) last_dial: Option<Instant>,
    pub(super) error: Option<String>,
}

impl RelayState {
    /// Remember an address of the relay.
    pub(super) fn learn(&mut self, addr: Multiaddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// QUIC addresses alone while QUIC works: hole punching needs the
    /// address the relay sees our UDP socket at, which a TCP connection to
    /// it would not tell us.
    pub(super) fn dial_addrs(&self) -> Vec<Multiaddr> {
        let quic: Vec<Multiaddr> = self.addrs.iter().filter(|a| is_quic(a)).cloned().collect();
        if quic.is_empty() || self.quic_failed {
            self.addrs.clone()
        } else {
            quic
        }
    }

    /// The address we show and reserve on.
    pub(super) fn primary(&self) -> Option<Multiaddr> {
        self.dial_addrs().into_iter().next()
    }
}

/// When we last dialled a member, each way.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub(super) struct DialTimes {
    pub(super) direct: Option<Instant>,
    pub(super) relayed: Option<Instant>,
}

/// What one peer is to us.
#[derive(Default)]
pub(super) struct PeerState {
    pub(super) conns: HashMap<ConnectionId, Multiaddr>,
    pub(super) rtt: Option<Duration>,
    pub(super) announced: Option<Announcement>,
    /// A stranger allowed to stay until then (to present a ticket).
    pub(super) grace_until: Option<Instant>,
    /// We dialled that stranger (to join its mesh): our own open
    /// invitations have nothing to do with it.
    pub(super) joining: bool,
    pub(super) dialled: DialTimes,
}

/// The event loop's knowledge.
pub(super) struct State {
    pub(super) me: PeerId,
    /// Shared with the published [`View`]s; changed through
    /// `Arc::make_mut`.
    pub(super) members: Arc<Members>,
    pub(super) listen: Vec<Multiaddr>,
    /// Listeners that reported at least one address.
    pub(super) listeners_up: HashSet<ListenerId>,
    /// Addresses members announced over mDNS: a connection to one of them
    /// is on the LAN, whatever its address range.
    pub(super) lan_seen: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) peers: HashMap<PeerId, PeerState>,
    /// Addresses seen for members (identify, mDNS, tickets), for redialling.
    pub(super) addrs: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) relays: HashMap<PeerId, RelayState>,
    /// Addresses confirmed reachable from outside (AutoNAT, UPnP, relay).
    pub(super) external: Vec<Multiaddr>,
    pub(super) reachability: Reachability,
}

/// What clients read without asking the event loop: published after every
/// event and command it handles.
#[derive(Clone)]
pub(super) struct View {
    pub(super) members: Arc<Members>,
    pub(super) peers: Vec<PeerInfo>,
    /// Members other than us that are connected.
    pub(super) connected: Vec<DeviceId>,
    pub(super) relays: Vec<RelayInfo>,
    pub(super) reachability: Reachability,
    /// Addresses to give out (see [`advertised`]).
    pub(super) advertised: Vec<Multiaddr>,
    pub(super) listeners_up: HashSet<ListenerId>,
}

impl State {
    /// The snapshot clients read.
    pub(super) fn view(&self) -> View {
        View {
            members: self.members.clone(),
            peers: self.peers(),
            connected: self
                .peers
                .iter()
                .filter(|(p, s)| !s.conns.is_empty() && **p != self.me && self.members.is_member(p))
                .map(|(p, _)| DeviceId(*p))
                .collect(),
            relays: self.relays(),
            reachability: self.reachability,
            advertised: advertised(&self.listen, &self.external),
            listeners_up: self.listeners_up.clone(),
        }
    }

    fn relays(&self) -> Vec<RelayInfo> {
        let mut v: Vec<RelayInfo> = self
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

    fn peer_info(&self, p: PeerId, name: String, role: String, member: bool) -> PeerInfo {
        let ps = self.peers.get(&p);
        let seen = self.lan_seen.get(&p).map_or(&[][..], |v| v.as_slice());
        // The best of its connections (a relayed one lingers briefly after
        // a direct one is made).
        let best = ps.and_then(|s| {
            s.conns
                .values()
                .map(|a| (classify(a, seen), a))
                .min_by_key(|(k, _)| *k)
        });
        let ann = ps.and_then(|s| s.announced.as_ref());
        PeerInfo {
            id: p.to_string(),
            name: ann.map_or(name, |a| a.name.clone()),
            role: ann.map_or(role, |a| a.role.clone()),
            member,
            connected: best.is_some(),
            path: best.map(|(k, _)| k),
            relay: best
                .and_then(|(_, a)| relay_of(a))
                .map(|(r, _)| r.to_string()),
            addr: best.map(|(_, a)| a.to_string()),
            rtt_ms: ps.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
            root: ann.map(|a| a.root.to_hex()),
            tracks: ann.map(|a| a.tracks),
        }
    }

    /// Every peer we know or see, members first.
    fn peers(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = Vec::new();
        let mut seen: Vec<PeerId> = vec![self.me];
        for d in self.members.devices() {
            let Ok(p) = d.id.parse::<PeerId>() else {
                continue;
            };
            if p == self.me {
                continue;
            }
            seen.push(p);
            out.push(self.peer_info(p, d.name, d.role, true));
        }
        for (p, s) in &self.peers {
            if !seen.contains(p) && !s.conns.is_empty() {
                let role = if self.relays.contains_key(p) {
                    "relay"
                } else {
                    ""
                };
                out.push(self.peer_info(*p, String::new(), role.to_string(), false));
            }
        }
        out
    }

    /// A member's known addresses (seen, and from the signed list), split
    /// into direct and relayed ones.
    pub(super) fn member_addrs(
        &self,
        listed: &HashMap<PeerId, Vec<Multiaddr>>,
        p: &PeerId,
    ) -> (Vec<Multiaddr>, Vec<Multiaddr>) {
        let mut all: Vec<Multiaddr> = Vec::new();
        for a in self
            .addrs
            .get(p)
            .into_iter()
            .flatten()
            .chain(listed.get(p).into_iter().flatten())
        {
            if !all.contains(a) {
                all.push(a.clone());
            }
        }
        all.into_iter().partition(|a| !is_circuit(a))
    }

    /// Addresses of every member from the signed list.
    pub(super) fn listed_addrs(&self) -> HashMap<PeerId, Vec<Multiaddr>> {
        self.members
            .devices()
            .into_iter()
            .filter_map(|d| {
                let p = d.id.parse().ok()?;
                let addrs = d.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                Some((p, addrs))
            })
            .collect()
    }
}

/// One open invitation.
struct Invite {
    /// What its joiner shows relays, hashed (relays know only this).
    proof_hash: Hash32,
    expires_unix_ms: i64,
}

/// Our open invitations, by blake3 of the ticket's secret.
#[derive(Default)]
pub(super) struct Invitations(HashMap<Hash32, Invite>);

impl Invitations {
    /// Open one (expired ones are dropped).
    pub(super) fn open(&mut self, secret: &[u8; 32], expires_unix_ms: i64, now: i64) {
        self.0.retain(|_, i| i.expires_unix_ms > now);
        let proof_hash = super::relay::proof_hash(&super::relay::invite_proof(secret));
        self.0.insert(
            Hash32::of(secret),
            Invite {
                proof_hash,
                expires_unix_ms,
            },
        );
    }

    /// Any still open: strangers may stay a few seconds to present one.
    pub(super) fn any_live(&self, now: i64) -> bool {
        self.0.values().any(|i| i.expires_unix_ms > now)
    }

    /// Use the invitation of `secret` (once: it is gone after this).
    pub(super) fn redeem(&mut self, secret: &[u8], now: i64) -> Result<(), &'static str> {
        match self.0.remove(&Hash32::of(secret)) {
            None => Err("unknown or already used ticket"),
            Some(i) if i.expires_unix_ms < now => Err("expired ticket"),
            Some(_) => Ok(()),
        }
    }

    /// The open ones as relays are told them (expired ones are dropped).
    pub(super) fn for_relays(&mut self, now: i64) -> Vec<proto::RelayInvite> {
        self.0.retain(|_, i| i.expires_unix_ms > now);
        self.0
            .values()
            .map(|i| proto::RelayInvite {
                proof_hash: i.proof_hash.0.to_vec(),
                expires_unix_ms: i.expires_unix_ms,
            })
            .collect()
    }
}

/// The relayed connections to drop: all of them once a direct one exists.
/// (Several direct ones, say from a punch at both ends, are left alone:
/// both ends cannot always tell alike which is which, and closing a
/// different one each closed both.)
pub(super) fn redundant(conns: &HashMap<ConnectionId, Multiaddr>) -> Vec<ConnectionId> {
    if !conns.values().any(|a| !is_circuit(a)) {
        return vec![];
    }
    conns
        .iter()
        .filter(|(_, a)| is_circuit(a))
        .map(|(id, _)| *id)
        .collect()
}

/// `every` has passed since `t` (or it never happened).
pub(super) fn due(t: Option<Instant>, now: Instant, every: Duration) -> bool {
    t.is_none_or(|t| now.duration_since(t) >= every)
}

/// The relay's turn has come: the member has no direct address, or its
/// direct dial had its head start.
pub(super) fn head_start_over(
    has_direct: bool,
    direct_dial: Option<Instant>,
    now: Instant,
) -> bool {
    !has_direct || direct_dial.is_some_and(|t| now.duration_since(t) >= DIRECT_HEAD_START)
}

/// Which ways to dial an unconnected member now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct DialPlan {
    pub(super) direct: bool,
    pub(super) relayed: bool,
}

/// The dial plan: direct addresses first (every [`REDIAL`]); through a
/// ready relay once the direct dial had its [`DIRECT_HEAD_START`] (at once
/// with no direct address), every [`REDIAL`] too. Returns the plan and
/// the dial times after it.
pub(super) fn dial_plan(
    now: Instant,
    has_direct: bool,
    relay_ready: bool,
    mut t: DialTimes,
) -> (DialPlan, DialTimes) {
    let mut plan = DialPlan::default();
    if has_direct && due(t.direct, now, REDIAL) {
        t.direct = Some(now);
        plan.direct = true;
    }
    if relay_ready && head_start_over(has_direct, t.direct, now) && due(t.relayed, now, REDIAL) {
        t.relayed = Some(now);
        plan.relayed = true;
    }
    (plan, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    const PEER: &str = "12D3KooWHDMRknuBR2Nz3RxqsS4E4eVFF5LWyC2k4pt2VMWmb6C8";

    #[test]
    fn direct_first_relayed_after_the_head_start() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Both ways known: direct at once, the relay waits its turn.
        let (p, t) = dial_plan(t0, true, true, DialTimes::default());
        assert_eq!(
            p,
            DialPlan {
                direct: true,
                relayed: false
            }
        );
        let (p, t) = dial_plan(ms(100), true, true, t);
        assert_eq!(p, DialPlan::default());
        let (p, t) = dial_plan(ms(250), true, true, t);
        assert_eq!(
            p,
            DialPlan {
                direct: false,
                relayed: true
            }
        );
        // Neither again before REDIAL; both after it, direct first again.
        let (p, t) = dial_plan(ms(5000), true, true, t);
        assert_eq!(p, DialPlan::default());
        let (p, t) = dial_plan(t0 + REDIAL, true, true, t);
        assert!(p.direct && !p.relayed);
        let (p, _) = dial_plan(t0 + REDIAL + DIRECT_HEAD_START, true, true, t);
        assert!(!p.direct && p.relayed);
        // No direct address: the relay at once; no ready relay: direct only.
        let (p, _) = dial_plan(t0, false, true, DialTimes::default());
        assert!(!p.direct && p.relayed);
        let (p, t) = dial_plan(t0, true, false, DialTimes::default());
        assert!(p.direct && !p.relayed);
        let (p, _) = dial_plan(ms(300), true, false, t);
        assert_eq!(p, DialPlan::default());
        assert!(head_start_over(false, None, t0));
        assert!(!head_start_over(true, None, t0));
    }

    #[test]
    fn relayed_closed_once_direct_several_direct_left_alone() {
        let direct: Multiaddr = "/ip4/203.0.113.7/udp/4001/quic-v1".parse().unwrap();
        let direct2: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        let relayed: Multiaddr =
            format!("/ip4/198.51.100.1/tcp/1/p2p/{RELAY}/p2p-circuit/p2p/{PEER}")
                .parse()
                .unwrap();
        let c = ConnectionId::new_unchecked;
        let conns = |v: &[(usize, &Multiaddr)]| -> HashMap<ConnectionId, Multiaddr> {
            v.iter().map(|(i, a)| (c(*i), (*a).clone())).collect()
        };
        // Relayed alone: kept (it is all we have).
        assert!(redundant(&conns(&[(1, &relayed)])).is_empty());
        // Direct up: every relayed one goes.
        let mut r = redundant(&conns(&[(1, &relayed), (2, &direct), (3, &relayed)]));
        r.sort_by_key(|id| format!("{id:?}"));
        assert_eq!(r, vec![c(1), c(3)]);
        // Several direct ones: none is closed.
        assert!(redundant(&conns(&[(1, &direct), (2, &direct2)])).is_empty());
        assert!(redundant(&HashMap::new()).is_empty());
    }

    #[test]
    fn invitations_work_once_and_expire() {
        let mut inv = Invitations::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        inv.open(&a, 1000, 0);
        inv.open(&b, 10, 0);
        assert!(inv.any_live(500));
        assert_eq!(inv.for_relays(5).len(), 2);
        assert_eq!(inv.redeem(&b, 20), Err("expired ticket"));
        assert_eq!(inv.redeem(&a, 20), Ok(()));
        assert_eq!(inv.redeem(&a, 20), Err("unknown or already used ticket"));
        assert!(!inv.any_live(20));
    }
}
