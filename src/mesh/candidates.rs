//! Raw observed addresses as external address candidates.
//!
//! identify reports the address a peer sees us at, but when that port is
//! not one we listen on it "translates" it to our listen port. Behind a NAT
//! that changes ports (SNAT to another port, stable for one socket) that
//! translated address is wrong and a hole punch aimed at it misses. DCUtR
//! takes its candidates from the swarm's `NewExternalAddrCandidate` events,
//! so this behaviour emits the address exactly as observed, beside
//! identify's translated one: the punch tries both.
//!
//! Must never: confirm an address (only AutoNAT, UPnP and the relay client
//! do), or hold more than a few addresses.

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};

const MAX_QUEUED: usize = 16;

#[derive(Default)]
pub(super) struct Candidates {
    queue: VecDeque<Multiaddr>,
}

impl Candidates {
    /// Offer `addr` as seen by a peer; emitted on the swarm's next poll.
    pub(super) fn observed(&mut self, addr: Multiaddr) {
        if self.queue.contains(&addr) {
            return;
        }
        if self.queue.len() == MAX_QUEUED {
            self.queue.pop_front();
        }
        self.queue.push_back(addr);
    }
}

impl NetworkBehaviour for Candidates {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        // The event loop pushes, then polls the swarm again at once: no
        // waker needed.
        match self.queue.pop_front() {
            Some(a) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(a)),
            None => Poll::Pending,
        }
    }
}
