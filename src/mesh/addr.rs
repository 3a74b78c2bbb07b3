//! Multiaddr reading: which path an address is (LAN, direct, relayed),
//! which relay a circuit goes through, what we give out as ours. Pure.
//!
//! Must never: dial, resolve or otherwise touch the network.

use super::types::PathKind;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The IP of an address, if it has one.
pub(super) fn ip_of(a: &Multiaddr) -> Option<std::net::IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Both addresses are on one IP, and `b` is not through a relay.
pub(super) fn same_ip(a: &Multiaddr, b: &Multiaddr) -> bool {
    !is_circuit(b) && ip_of(a).is_some() && ip_of(a) == ip_of(b)
}

/// Through a relay.
pub(super) fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Over QUIC.
pub(super) fn is_quic(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// Without a trailing `/p2p/<id>` (AutoNAT confirms addresses with ours),
/// relayed addresses excepted.
pub(super) fn bare(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) && !is_circuit(&a) {
        a.pop();
    }
    a
}

/// The relay of a `…/p2p/RELAY/p2p-circuit/…` address, with the address
/// that reaches the relay (`/p2p/RELAY` included).
pub(super) fn relay_of(a: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
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

/// The path of a connection from its remote address alone: relayed
/// through a circuit; LAN for private, link-local and loopback IPs (v4),
/// loopback, ULA and link-local (v6); direct otherwise.
pub(super) fn path_kind(addr: &Multiaddr) -> PathKind {
    let mut lan = false;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return PathKind::Relayed,
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
        PathKind::Lan
    } else {
        PathKind::Direct
    }
}

/// The path of a connection to a peer that mDNS showed at `lan_seen`: on
/// the LAN when its address is on one of those IPs, whatever its range.
pub(super) fn classify(addr: &Multiaddr, lan_seen: &[Multiaddr]) -> PathKind {
    if lan_seen.iter().any(|s| same_ip(s, addr)) {
        PathKind::Lan
    } else {
        path_kind(addr)
    }
}

/// Addresses to give out (tickets, join): what we listen on (relayed
/// addresses included, wildcards excluded) and confirmed external ones.
pub(super) fn advertised(listen: &[Multiaddr], external: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut v: Vec<Multiaddr> = Vec::new();
    for a in listen.iter().chain(external.iter()) {
        let a = bare(a);
        let wildcard = ip_of(&a).is_some_and(|ip| ip.is_unspecified());
        if !wildcard && !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    const PEER: &str = "12D3KooWHDMRknuBR2Nz3RxqsS4E4eVFF5LWyC2k4pt2VMWmb6C8";

    #[test]
    fn path_classification() {
        for (a, k) in [
            ("/ip4/192.168.1.5/tcp/4001", PathKind::Lan),
            ("/ip4/10.0.0.2/udp/4001/quic-v1", PathKind::Lan),
            ("/ip4/127.0.0.1/tcp/1", PathKind::Lan),
            ("/ip4/169.254.3.3/tcp/1", PathKind::Lan),
            ("/ip6/::1/tcp/1", PathKind::Lan),
            ("/ip6/fd00::1/tcp/1", PathKind::Lan),
            ("/ip6/fe80::1/tcp/1", PathKind::Lan),
            ("/ip4/203.0.113.7/tcp/4001", PathKind::Direct),
            ("/ip6/2001:db8::1/udp/1/quic-v1", PathKind::Direct),
        ] {
            assert_eq!(path_kind(&ma(a)), k, "{a}");
        }
        let circuit = ma(&format!(
            "/ip4/192.168.1.1/udp/1/quic-v1/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
        ));
        assert_eq!(path_kind(&circuit), PathKind::Relayed);
        // mDNS saw the peer at a public-looking IP: that IP is the LAN.
        let public = ma("/ip4/203.0.113.7/tcp/4001");
        assert_eq!(
            classify(&public, &[ma("/ip4/203.0.113.7/udp/9/quic-v1")]),
            PathKind::Lan
        );
        assert_eq!(
            classify(&public, &[ma("/ip4/203.0.113.8/tcp/1")]),
            PathKind::Direct
        );
        // A circuit stays relayed whatever mDNS saw.
        assert_eq!(
            classify(&circuit, &[ma("/ip4/192.168.1.1/tcp/1")]),
            PathKind::Relayed
        );
    }

    #[test]
    fn relays_of_circuits() {
        let circuit = ma(&format!(
            "/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
        ));
        let (id, to_relay) = relay_of(&circuit).unwrap();
        assert_eq!(id.to_string(), RELAY);
        assert_eq!(
            to_relay,
            ma(&format!("/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}"))
        );
        assert!(relay_of(&ma("/ip4/198.51.100.1/tcp/4001")).is_none());
        assert_eq!(bare(&circuit), circuit);
        assert_eq!(
            bare(&ma(&format!("/ip4/1.2.3.4/tcp/1/p2p/{PEER}"))),
            ma("/ip4/1.2.3.4/tcp/1")
        );
        let listen = [ma("/ip4/0.0.0.0/tcp/1"), ma("/ip4/10.0.0.1/tcp/1")];
        let external = [ma(&format!("/ip4/10.0.0.1/tcp/1/p2p/{PEER}"))];
        assert_eq!(
            advertised(&listen, &external),
            vec![ma("/ip4/10.0.0.1/tcp/1")]
        );
    }
}
