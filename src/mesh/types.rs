//! The mesh's vocabulary: ids, what peers announce and ask, what the node is
//! told, and how a peer or relay is reached, as the node, the HTTP API and
//! the CLI see them.
//!
//! Must never: hold a libp2p or prost type in a public field (the id wraps
//! a `PeerId` privately), or change how a value serializes (the API's JSON
//! and the CLI read these strings).

use super::audio::MeshStream;
use super::MeshError;
use crate::index::snapshot::Entry;
use crate::model::{CoverId, Hash32, TrackId};
use crate::userdata::VersionVector;
use libp2p::PeerId;
use std::fmt;
use tokio::sync::oneshot;

/// A device id: the libp2p PeerId of the device's key, in its usual text
/// form (`12D3KooW…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub(super) PeerId);

impl DeviceId {
    /// The id's binary form (as stored in the index and sent on the wire).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }
    /// Parse the binary form; `None` when it is not a device id.
    pub fn from_bytes(b: &[u8]) -> Option<DeviceId> {
        PeerId::from_bytes(b).ok().map(DeviceId)
    }
    /// A random id of no device (tests and benchmarks).
    pub fn random() -> DeviceId {
        DeviceId(PeerId::random())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = MeshError;
    fn from_str(s: &str) -> Result<Self, MeshError> {
        s.parse()
            .map(DeviceId)
            .map_err(|e| MeshError::BadInput(format!("{s:?} is not a device id: {e}")))
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a connection reaches a peer, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// A private, link-local or loopback address, or one mDNS showed us.
    Lan,
    /// A public address, no relay between.
    Direct,
    /// Through a relay (a circuit).
    Relayed,
}

impl PathKind {
    /// "lan", "direct" or "relayed", as the API and the CLI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Lan => "lan",
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What AutoNAT (asking our relays) concluded about this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Dialled back from outside.
    Public,
    /// Behind a NAT or firewall.
    Private,
    /// Not known (yet, or no relay to ask).
    #[default]
    Unknown,
}

impl Reachability {
    /// "public", "private" or "unknown", as `tunemesh status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Announcement {
    /// Its snapshot root.
    pub root: Hash32,
    /// Tracks under that root.
    pub tracks: u64,
    /// Its device name.
    pub name: String,
    /// "home" or "phone".
    pub role: String,
}

/// A library sync request from a member.
#[derive(Debug, Clone)]
pub enum Request {
    /// The snapshot trie under `path` (nibbles), answered against `root`.
    GetNode {
        /// The root the asker syncs to.
        root: Hash32,
        /// Nibbles from the root.
        path: Vec<u8>,
        /// Most entries wanted instead of children.
        max_entries: u32,
        /// Send the records along with the entries.
        with_records: bool,
    },
    /// Encoded track records by id.
    GetRecords(Vec<TrackId>),
    /// A cover image of one of its tracks.
    GetCover(CoverId),
    /// The user operations we hold beyond the asker's version vector.
    GetUserOps(VersionVector),
    /// New user operations (signed envelopes, unchecked: the node opens
    /// them with [`Client::open_op`](super::Client::open_op)).
    PushUserOps(Vec<Vec<u8>>),
    /// The offline mirror asks what the bytes of these recipes are.
    GetBlobRecords(Vec<Recipe>),
}

/// What an offline copy is made of: a track at a bitrate (kb/s, 0 for the
/// original file, as in [`StreamOpen::kbps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Recipe {
    /// The source track.
    pub track: TrackId,
    /// Opus kb/s; 0 for the original.
    pub kbps: u32,
}

/// A member's answer for one [`Recipe`].
#[derive(Debug, Clone, PartialEq)]
pub enum BlobAnswer {
    /// It holds the bytes whole.
    Ready {
        /// blake3 of the bytes.
        hash: Hash32,
        /// Their length.
        len: u64,
        /// The chaining values of the 16 KiB groups (unchecked: the asker
        /// checks them against `hash`).
        outboard: Vec<u8>,
    },
    /// It is making them: ask again.
    Pending,
    /// It neither holds nor can make them (why).
    Absent(String),
}

/// A blob asked for instead of a stream: which groups of which bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobWant {
    /// blake3 of the whole blob.
    pub hash: Hash32,
    /// Group ranges (16 KiB groups, half-open), in order.
    pub groups: Vec<std::ops::Range<u64>>,
    /// Groups the server may send beyond the last acknowledged (flow
    /// control: what a cut asker loses at most).
    pub window: u32,
}

/// Part of a snapshot trie: the children's hashes, or every entry below.
#[derive(Debug, Clone)]
pub struct NodeReply {
    /// The root it was answered against.
    pub root: Hash32,
    /// The 16 children's hashes (a branch), or none (entries follow).
    pub children: Option<Box<[Hash32; 16]>>,
    /// Every entry below, when there were few enough.
    pub entries: Vec<Entry>,
    /// Their encoded records, when asked for.
    pub records: Vec<Vec<u8>>,
}

/// The node's answer to a [`Request`].
#[derive(Debug, Clone)]
pub enum Response {
    /// Part of the trie.
    Node(NodeReply),
    /// Encoded records, in the order asked.
    Records(Vec<Vec<u8>>),
    /// A cover image (unchecked: the asker hashes it against the id).
    Cover {
        /// Its MIME type.
        mime: String,
        /// The image bytes.
        data: Vec<u8>,
    },
    /// User operations (signed envelopes), and what the answering node
    /// holds now.
    UserOps {
        /// Operations the asker lacks, each device's in order.
        ops: Vec<Vec<u8>>,
        /// More remain: ask again.
        more: bool,
        /// The answering node's version vector.
        have: VersionVector,
    },
    /// One answer per recipe asked, in order.
    BlobRecords(Vec<BlobAnswer>),
    /// Why it cannot answer.
    Error(String),
}

/// A request to stream one track.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOpen {
    /// The track.
    pub track: TrackId,
    /// Opus bitrate; 0 for the original file.
    pub kbps: u32,
    /// Where to start, in the track's time.
    pub start_ms: u64,
    /// Bytes of the stream to skip (a resume, a range).
    pub offset: u64,
    /// Groups of a blob made from `track` at `kbps` instead of a stream
    /// (the offline mirror).
    pub blob: Option<BlobWant>,
}

/// The serving side's answer, before the bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamHead {
    /// Why it cannot serve (no bytes follow).
    pub error: Option<String>,
    /// The content type of the bytes.
    pub mime: String,
    /// Length of the whole stream, when known.
    pub total_len: Option<u64>,
    /// `total_len` is final.
    pub complete: bool,
    /// How it is served (original, cache, live encode…).
    pub via: String,
}

/// What the mesh tells the node.
pub enum Event {
    /// A member told us its snapshot root (on connecting and after changes).
    Announced {
        /// The member.
        from: DeviceId,
        /// What it said.
        announcement: Announcement,
    },
    /// A member asks for part of our library.
    Request {
        /// The member.
        from: DeviceId,
        /// What it asks.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// A member asks for a stream; write the head, then the chunks.
    Stream {
        /// The member.
        from: DeviceId,
        /// What it asks.
        open: StreamOpen,
        /// The substream to answer on.
        stream: MeshStream,
    },
    /// The member list changed (a join, a revocation, a merge).
    MembersChanged,
    /// A member connected (its first connection).
    Connected(DeviceId),
    /// A member's last connection closed.
    Disconnected(DeviceId),
}

/// How we reach a peer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerInfo {
    /// Its device id.
    pub id: String,
    /// Its name (as announced, else as in the member list).
    pub name: String,
    /// "home", "phone", "relay", or empty for a stranger.
    pub role: String,
    /// In our member list.
    pub member: bool,
    /// At least one connection is up.
    pub connected: bool,
    /// The best connection's path; shown as "" when not connected.
    #[serde(serialize_with = "path_or_empty")]
    pub path: Option<PathKind>,
    /// The best connection's remote address.
    pub addr: Option<String>,
    /// Last ping round trip.
    pub rtt_ms: Option<f64>,
    /// The relay's device id when the path is relayed.
    pub relay: Option<String>,
    /// Snapshot root it last announced.
    pub root: Option<String>,
    /// Track count it last announced.
    pub tracks: Option<u64>,
}

fn path_or_empty<S: serde::Serializer>(p: &Option<PathKind>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.map_or("", PathKind::as_str))
}

/// A relay this node uses, as `tunemesh status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RelayInfo {
    /// Its device id.
    pub id: String,
    /// The address we dial it at.
    pub addr: Option<String>,
    /// Configured with --relay: a reservation is kept there.
    pub configured: bool,
    /// A connection is up.
    pub connected: bool,
    /// The relay accepted us as a member of a mesh it serves.
    pub accepted: bool,
    /// We hold a reservation: members can reach us through it.
    pub reserved: bool,
    /// Our addresses through it.
    pub addrs: Vec<String>,
    /// Its last refusal or failure.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_serialize_as_the_strings_the_api_shows() {
        let mut p = PeerInfo {
            id: "x".into(),
            name: String::new(),
            role: String::new(),
            member: true,
            connected: false,
            path: None,
            addr: None,
            rtt_ms: None,
            relay: None,
            root: None,
            tracks: None,
        };
        assert_eq!(serde_json::to_value(&p).unwrap()["path"], "");
        for (k, s) in [
            (PathKind::Lan, "lan"),
            (PathKind::Direct, "direct"),
            (PathKind::Relayed, "relayed"),
        ] {
            p.path = Some(k);
            assert_eq!(serde_json::to_value(&p).unwrap()["path"], s);
            assert_eq!(k.to_string(), s);
        }
        for r in [
            Reachability::Public,
            Reachability::Private,
            Reachability::Unknown,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
