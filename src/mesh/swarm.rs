//! The swarm, as both roles build it: the device key, the transports (TCP
//! with noise and yamux, QUIC, optionally the relay client), identify, and
//! the node's own behaviour set.
//!
//! Must never: decide who may connect (the event loop gates, the relay has
//! its access list), or differ between node and relay in the transports.

use super::candidates::Candidates;
use super::MeshError;
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{autonat, dcutr, identify, mdns, noise, ping, tcp, upnp, yamux, Swarm};
use std::path::Path;
use std::time::Duration;

/// The identify protocol name both roles speak.
const IDENTIFY: &str = "/tunemesh/id/1";

/// Whether the swarm can dial and listen through relays.
pub(super) enum RelayClient {
    /// A node: reservations and circuits through relays.
    With,
    /// A relay itself.
    Without,
}

/// The behaviour-building error libp2p's builder takes.
pub(super) type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// Build a swarm on `key` with the transports every tunemesh peer speaks;
/// `make` builds the behaviour (given the relay client when asked for).
/// Connections idle for `idle` are closed.
pub(super) fn build<B, F>(
    key: Keypair,
    relay: RelayClient,
    idle: Duration,
    make: F,
) -> Result<Swarm<B>, MeshError>
where
    B: NetworkBehaviour,
    F: FnOnce(&Keypair, Option<libp2p::relay::client::Behaviour>) -> Result<B, BuildError>,
{
    let start = |e: &dyn std::fmt::Display| MeshError::Start(e.to_string());
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start(&e))?
        .with_quic();
    let config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(idle);
    Ok(match relay {
        RelayClient::With => builder
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| start(&e))?
            .with_behaviour(|k, r| make(k, Some(r)))
            .map_err(|e| start(&e))?
            .with_swarm_config(config)
            .build(),
        RelayClient::Without => builder
            .with_behaviour(|k| make(k, None))
            .map_err(|e| start(&e))?
            .with_swarm_config(config)
            .build(),
    })
}

/// identify as both roles run it, with `agent` (`tunemesh/…`).
pub(super) fn identify(key: &Keypair, agent: &str) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new(IDENTIFY.into(), key.public())
            .with_agent_version(format!("{agent}/{}", env!("CARGO_PKG_VERSION"))),
    )
}

/// What a node's swarm runs.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) stream: libp2p_stream::Behaviour,
    pub(super) relay_client: libp2p::relay::client::Behaviour,
    pub(super) dcutr: dcutr::Behaviour,
    pub(super) autonat: autonat::Behaviour,
    pub(super) upnp: Toggle<upnp::tokio::Behaviour>,
    pub(super) candidates: Candidates,
}

/// Which of a node's optional behaviours run.
pub(super) struct NodeOptions {
    /// LAN discovery.
    pub(super) mdns: bool,
    /// Router port mapping.
    pub(super) upnp: bool,
}

/// A node's swarm.
pub(super) fn node(key: Keypair, opts: NodeOptions) -> Result<Swarm<Behaviour>, MeshError> {
    // Members stay connected while both run: announcements and streams
    // must not wait for a dial.
    build(
        key,
        RelayClient::With,
        Duration::from_secs(24 * 3600),
        |key, relay_client| {
            let me = key.public().to_peer_id();
            let mdns = if opts.mdns {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?)
            } else {
                None
            };
            Ok(Behaviour {
                identify: identify(key, "tunemesh"),
                ping: ping::Behaviour::new(ping::Config::new()),
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
                relay_client: relay_client.ok_or("no relay client")?,
                dcutr: dcutr::Behaviour::new(me),
                autonat: autonat::Behaviour::new(
                    me,
                    autonat::Config {
                        boot_delay: Duration::from_secs(3),
                        retry_interval: Duration::from_secs(60),
                        refresh_interval: Duration::from_secs(600),
                        throttle_server_period: Duration::from_secs(10),
                        // Only our relays are asked (added by the mesh):
                        // members on a LAN would say "public".
                        use_connected: false,
                        only_global_ips: false,
                        ..Default::default()
                    },
                ),
                upnp: Toggle::from(opts.upnp.then(upnp::tokio::Behaviour::default)),
                candidates: Candidates::default(),
            })
        },
    )
}

/// Load the device key from `dir/identity.key`, creating it (mode 0600) on
/// first run.
pub(super) fn load_or_create_key(dir: &Path) -> Result<Keypair, MeshError> {
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
            // No clobbering: a racing first run keeps the key that won.
            crate::fsutil::create_atomic(&path, &bytes, crate::fsutil::FileMode::OwnerOnly)
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}
