//! User operations at the wire edge: [`userdata::Op`](crate::userdata::Op)
//! to and from the signed `UserOp` envelope. A device signs its own
//! operations with its device key. The mesh is not part of what is signed:
//! a device's operations stay its own when it joins another mesh (a phone
//! used alone, then paired), and a mesh accepts them only from its members.
//!
//! Must never: hand out an operation whose signature, device or body it has
//! not checked (except [`decode_stored`], for bytes this node checked before
//! storing them).

use super::types::DeviceId;
use crate::catalog::{AlbumId, ArtistId};
use crate::model::TrackId;
use crate::proto;
use crate::userdata::{Body, EntryId, Hlc, Item, Op, OpId, Play, Position, Queue, VersionVector};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;

const SIGNING_CONTEXT: &[u8] = b"tunemesh.user-op.v1";

/// The multihash code of an identity hash (the key itself is the id).
const IDENTITY: u64 = 0;

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// The public key a device id holds (Ed25519 ids inline it).
fn key_of(device: &PeerId) -> Option<PublicKey> {
    let mh = device.as_ref();
    (mh.code() == IDENTITY)
        .then(|| PublicKey::try_decode_protobuf(mh.digest()).ok())
        .flatten()
}

fn op_ref(id: &OpId) -> proto::OpRef {
    proto::OpRef {
        device: id.device.to_bytes(),
        seq: id.seq,
    }
}

fn entry_ref(e: &EntryId) -> proto::EntryRef {
    proto::EntryRef {
        op: Some(op_ref(&e.op)),
        index: e.index,
    }
}

fn item_ref(i: &Item) -> proto::ItemRef {
    let (kind, id) = match i {
        Item::Track(t) => (1, t.as_bytes().to_vec()),
        Item::Album(a) => (2, a.0.to_vec()),
        Item::Artist(a) => (3, a.0.to_vec()),
    };
    proto::ItemRef { kind, id }
}

fn body_to_proto(b: &Body) -> proto::user_op_body::Kind {
    use proto::user_op_body::Kind as K;
    match b {
        Body::Star { item, starred } => K::Star(proto::StarOp {
            item: Some(item_ref(item)),
            starred: *starred,
        }),
        Body::Rate { item, rating } => K::Rate(proto::RateOp {
            item: Some(item_ref(item)),
            rating: u32::from(*rating),
        }),
        Body::Play(p) => K::Play(proto::PlayOp {
            track: p.track.as_bytes().to_vec(),
            started_ms: p.started_ms,
            ms_played: p.ms_played,
        }),
        Body::CreatePlaylist { name } => {
            K::CreatePlaylist(proto::CreatePlaylistOp { name: name.clone() })
        }
        Body::EditPlaylist {
            playlist,
            name,
            comment,
        } => K::EditPlaylist(proto::EditPlaylistOp {
            playlist: Some(op_ref(playlist)),
            name: name.clone(),
            comment: comment.clone(),
        }),
        Body::DeletePlaylist { playlist } => K::DeletePlaylist(op_ref(playlist)),
        Body::AddEntries { playlist, entries } => K::AddEntries(proto::AddEntriesOp {
            playlist: Some(op_ref(playlist)),
            tracks: entries.iter().map(|(t, _)| t.as_bytes().to_vec()).collect(),
            positions: entries.iter().map(|(_, p)| p.as_bytes().to_vec()).collect(),
        }),
        Body::MoveEntry {
            playlist,
            entry,
            position,
        } => K::MoveEntry(proto::MoveEntryOp {
            playlist: Some(op_ref(playlist)),
            entry: Some(entry_ref(entry)),
            position: position.as_bytes().to_vec(),
        }),
        Body::RemoveEntries { playlist, entries } => K::RemoveEntries(proto::RemoveEntriesOp {
            playlist: Some(op_ref(playlist)),
            entries: entries.iter().map(entry_ref).collect(),
        }),
        Body::SetQueue(q) => K::SetQueue(proto::QueueOp {
            tracks: q.tracks.iter().map(|t| t.as_bytes().to_vec()).collect(),
            current: q.current,
            position_ms: q.position_ms,
        }),
    }
}

type Decoded<T> = Result<T, String>;

fn dev(b: &[u8]) -> Decoded<DeviceId> {
    DeviceId::from_bytes(b).ok_or_else(|| "not a device id".to_string())
}

fn from_op_ref(r: Option<proto::OpRef>) -> Decoded<OpId> {
    let r = r.ok_or("an operation reference is missing")?;
    Ok(OpId {
        device: dev(&r.device)?,
        seq: r.seq,
    })
}

fn from_entry_ref(r: proto::EntryRef) -> Decoded<EntryId> {
    Ok(EntryId {
        op: from_op_ref(r.op)?,
        index: r.index,
    })
}

fn track(b: &[u8]) -> Decoded<TrackId> {
    TrackId::from_slice(b).ok_or_else(|| "not a track id".to_string())
}

fn from_item_ref(r: Option<proto::ItemRef>) -> Decoded<Item> {
    let r = r.ok_or("the item is missing")?;
    let short = || <[u8; 16]>::try_from(r.id.as_slice()).map_err(|_| "bad item id".to_string());
    Ok(match r.kind {
        1 => Item::Track(track(&r.id)?),
        2 => Item::Album(AlbumId(short()?)),
        3 => Item::Artist(ArtistId(short()?)),
        k => return Err(format!("unknown item kind {k}")),
    })
}

fn position(b: Vec<u8>) -> Decoded<Position> {
    Position::from_bytes(b).ok_or_else(|| "bad playlist position".to_string())
}

fn body_from_proto(k: proto::user_op_body::Kind) -> Decoded<Body> {
    use proto::user_op_body::Kind as K;
    Ok(match k {
        K::Star(s) => Body::Star {
            item: from_item_ref(s.item)?,
            starred: s.starred,
        },
        K::Rate(r) => Body::Rate {
            item: from_item_ref(r.item)?,
            rating: u8::try_from(r.rating).map_err(|_| "bad rating")?,
        },
        K::Play(p) => Body::Play(Play {
            track: track(&p.track)?,
            started_ms: p.started_ms,
            ms_played: p.ms_played,
        }),
        K::CreatePlaylist(c) => Body::CreatePlaylist { name: c.name },
        K::EditPlaylist(e) => Body::EditPlaylist {
            playlist: from_op_ref(e.playlist)?,
            name: e.name,
            comment: e.comment,
        },
        K::DeletePlaylist(r) => Body::DeletePlaylist {
            playlist: from_op_ref(Some(r))?,
        },
        K::AddEntries(a) => {
            if a.tracks.len() != a.positions.len() {
                return Err("tracks and positions differ in number".into());
            }
            let mut entries = Vec::with_capacity(a.tracks.len());
            for (t, p) in a.tracks.iter().zip(a.positions) {
                entries.push((track(t)?, position(p)?));
            }
            Body::AddEntries {
                playlist: from_op_ref(a.playlist)?,
                entries,
            }
        }
        K::MoveEntry(m) => Body::MoveEntry {
            playlist: from_op_ref(m.playlist)?,
            entry: from_entry_ref(m.entry.ok_or("the entry is missing")?)?,
            position: position(m.position)?,
        },
        K::RemoveEntries(r) => Body::RemoveEntries {
            playlist: from_op_ref(r.playlist)?,
            entries: r
                .entries
                .into_iter()
                .map(from_entry_ref)
                .collect::<Decoded<_>>()?,
        },
        K::SetQueue(q) => Body::SetQueue(Queue {
            tracks: q.tracks.iter().map(|t| track(t)).collect::<Decoded<_>>()?,
            current: q.current,
            position_ms: q.position_ms,
        }),
    })
}

fn decode_body(body: &[u8]) -> Decoded<Op> {
    let b = proto::UserOpBody::decode(body).map_err(|e| format!("malformed operation: {e}"))?;
    let device = dev(&b.device)?;
    if b.seq == 0 {
        return Err("sequence numbers start at 1".into());
    }
    let body = body_from_proto(
        b.kind
            .ok_or("an operation of an unknown kind (a newer tunemesh?)")?,
    )?;
    body.check()?;
    Ok(Op {
        id: OpId { device, seq: b.seq },
        at: Hlc(b.hlc),
        body,
    })
}

/// Sign `op` (made by `key`'s device): the bytes to store and send.
pub(super) fn seal(key: &Keypair, op: &Op) -> Vec<u8> {
    let body = proto::UserOpBody {
        device: op.id.device.to_bytes(),
        seq: op.id.seq,
        hlc: op.at.0,
        kind: Some(body_to_proto(&op.body)),
    }
    .encode_to_vec();
    let signature = key
        .sign(&signed_message(&body))
        .expect("Ed25519 signing does not fail");
    proto::UserOp { body, signature }.encode_to_vec()
}

/// Check an operation received: it decodes, its body is within limits,
/// and its device's key signed it. Membership is the caller's to check.
pub(super) fn open(wire: &[u8]) -> Decoded<Op> {
    let env = proto::UserOp::decode(wire).map_err(|e| format!("malformed envelope: {e}"))?;
    let op = decode_body(&env.body)?;
    let key = key_of(&op.id.device.0).ok_or("the device id holds no key")?;
    if !key.verify(&signed_message(&env.body), &env.signature) {
        return Err(format!(
            "bad signature on operation {} of {}",
            op.id.seq, op.id.device
        ));
    }
    Ok(op)
}

/// Decode an operation this node checked before storing it (no signature
/// check: a node's start would otherwise verify its whole history).
pub fn decode_stored(wire: &[u8]) -> Decoded<Op> {
    let env = proto::UserOp::decode(wire).map_err(|e| format!("malformed envelope: {e}"))?;
    decode_body(&env.body)
}

/// A version vector as sent.
pub(super) fn vv_to_proto(vv: &VersionVector) -> Vec<proto::VersionEntry> {
    vv.0.iter()
        .map(|(d, n)| proto::VersionEntry {
            device: d.to_bytes(),
            seq: *n,
        })
        .collect()
}

/// A version vector as received (entries that name no device are dropped).
pub(super) fn vv_from_proto(v: Vec<proto::VersionEntry>) -> VersionVector {
    VersionVector(
        v.into_iter()
            .filter_map(|e| Some((DeviceId::from_bytes(&e.device)?, e.seq)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &Keypair, seq: u64, body: Body) -> Op {
        Op {
            id: OpId {
                device: DeviceId(key.public().to_peer_id()),
                seq,
            },
            at: Hlc::new(1_800_000_000_000, 3),
            body,
        }
    }

    #[test]
    fn sealed_ops_open_and_tampered_ones_do_not() {
        let key = Keypair::generate_ed25519();
        let mesh = PeerId::random();
        let t = TrackId::of(b"x");
        let bodies = vec![
            Body::Star {
                item: Item::Track(t),
                starred: true,
            },
            Body::Rate {
                item: Item::Album(AlbumId([7; 16])),
                rating: 4,
            },
            Body::Play(Play {
                track: t,
                started_ms: -5,
                ms_played: 9,
            }),
            Body::AddEntries {
                playlist: OpId {
                    device: DeviceId(mesh),
                    seq: 2,
                },
                entries: vec![(t, Position::between(None, None))],
            },
            Body::EditPlaylist {
                playlist: OpId {
                    device: DeviceId(mesh),
                    seq: 2,
                },
                name: None,
                comment: Some(String::new()),
            },
            Body::SetQueue(Queue {
                tracks: vec![t, t],
                current: 1,
                position_ms: 5,
            }),
        ];
        for (i, b) in bodies.into_iter().enumerate() {
            let o = op(&key, i as u64 + 1, b);
            let wire = seal(&key, &o);
            assert_eq!(open(&wire).unwrap(), o);
            assert_eq!(decode_stored(&wire).unwrap(), o);
            // Any flipped byte: refused (or undecodable).
            for at in [3, wire.len() / 2, wire.len() - 1] {
                let mut bad = wire.clone();
                bad[at] ^= 0x40;
                assert!(open(&bad).is_err(), "byte {at} of op {i}");
            }
        }
        // Signed by another key in the device's name: refused.
        let thief = Keypair::generate_ed25519();
        let o = op(
            &key,
            9,
            Body::Star {
                item: Item::Track(t),
                starred: false,
            },
        );
        assert!(open(&seal(&thief, &o)).is_err());
        // A rating over 5 never gets in.
        let o = op(
            &key,
            10,
            Body::Rate {
                item: Item::Track(t),
                rating: 9,
            },
        );
        assert!(open(&seal(&key, &o)).is_err());
    }
}
