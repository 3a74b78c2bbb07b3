//! Catalogs of other devices: the track records each member advertised, kept
//! exactly as received (the bytes their snapshot hashes cover), so the phone
//! knows the merged library offline and a later sync fetches only what
//! changed.
//!
//! Key: `P` · peer id length (1 byte) · peer id bytes · track id (32 bytes);
//! value: the encoded `TrackRecord`. One `sled::Batch` per sync step, so a
//! catalog is never half-updated by a crash.
//!
//! Must never hold anything but what a member sent: a record is accepted only
//! if it decodes and names the id it is stored under.

use super::{codec, corrupt, snapshot, Index, IndexError, Result};
use crate::model::{Hash32, Track, TrackId};
use crate::proto;
use prost::Message;

const P: u8 = b'P';

fn peer_prefix(peer: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + peer.len() + 32);
    k.push(P);
    k.push(u8::try_from(peer.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(peer);
    k
}

/// Decode a received record; `None` if it does not decode or has no id.
pub fn decode_record(bytes: &[u8]) -> Option<Track> {
    codec::track_from_proto(proto::TrackRecord::decode(bytes).ok()?)
}

impl Index {
    /// Apply one step of a sync with `peer`: store `put` records (as
    /// received) and forget `remove` ids, in one atomic batch. A record that
    /// does not decode, or whose id is not the one it is stored under, fails
    /// the whole step.
    pub fn remote_apply(
        &self,
        peer: &[u8],
        put: &[(TrackId, Vec<u8>)],
        remove: &[TrackId],
    ) -> Result<()> {
        self.reserve.check()?;
        let prefix = peer_prefix(peer);
        let mut batch = sled::Batch::default();
        for (id, rec) in put {
            match decode_record(rec) {
                Some(t) if t.id == *id => {}
                _ => {
                    return Err(IndexError::Rejected(format!(
                        "the record sent for {id} does not decode to that id"
                    )))
                }
            }
            let mut k = prefix.clone();
            k.extend_from_slice(id.as_bytes());
            batch.insert(k, rec.as_slice());
        }
        for id in remove {
            let mut k = prefix.clone();
            k.extend_from_slice(id.as_bytes());
            batch.remove(k);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Forget everything `peer` advertised (a revoked device).
    pub fn remote_forget(&self, peer: &[u8]) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.tree.scan_prefix(peer_prefix(peer)).keys() {
            batch.remove(k?);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// `peer`'s catalog as snapshot entries, sorted by id.
    pub fn remote_entries(&self, peer: &[u8]) -> Result<Vec<snapshot::Entry>> {
        let prefix = peer_prefix(peer);
        let mut out = Vec::new();
        for r in self.tree.scan_prefix(&prefix) {
            let (k, v) = r?;
            let id = TrackId::from_slice(&k[prefix.len()..])
                .ok_or_else(|| corrupt(&k, "bad remote track key"))?;
            out.push((id, Hash32::of(&v)));
        }
        Ok(out)
    }

    /// `peer`'s catalog as tracks.
    pub fn remote_tracks(&self, peer: &[u8]) -> Result<Vec<Track>> {
        let prefix = peer_prefix(peer);
        let mut out = Vec::new();
        for r in self.tree.scan_prefix(&prefix) {
            let (k, v) = r?;
            out.push(decode_record(&v).ok_or_else(|| corrupt(&k, "bad remote record"))?);
        }
        Ok(out)
    }

    /// One track from `peer`'s catalog.
    pub fn remote_track(&self, peer: &[u8], id: &TrackId) -> Result<Option<Track>> {
        let mut k = peer_prefix(peer);
        k.extend_from_slice(id.as_bytes());
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(
                decode_record(&v).ok_or_else(|| corrupt(&k, "bad remote record"))?,
            )),
            None => Ok(None),
        }
    }

    /// Every peer with a catalog here.
    pub fn remote_peers(&self) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut from: Vec<u8> = vec![P];
        loop {
            let Some(r) = self.tree.range(from.clone()..).next() else {
                break;
            };
            let (k, _) = r?;
            if k.first() != Some(&P) || k.len() < 2 {
                break;
            }
            let n = usize::from(k[1]);
            let peer = k
                .get(2..2 + n)
                .ok_or_else(|| corrupt(&k, "bad remote key"))?
                .to_vec();
            // Next key after every key of this peer.
            from = peer_prefix(&peer);
            from.extend_from_slice(&[0xff; 33]);
            out.push(peer);
        }
        Ok(out)
    }

    /// The stored record bytes of local tracks (what a peer's snapshot
    /// entries hash), for answering a sync.
    pub fn record_bytes(&self, id: &TrackId) -> Result<Option<Vec<u8>>> {
        let k = super::key(super::T, id.as_bytes());
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(super::split_track_value(&k, &v)?.1.to_vec())),
            None => Ok(None),
        }
    }
}
