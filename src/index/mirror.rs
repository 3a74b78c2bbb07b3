//! The offline mirror's records: for each recipe (a track at a bitrate)
//! this device holds or has made, the blob it is (hash, length, the
//! chaining values of its 16 KiB groups), and the mirror's settings (pins,
//! budget, policy) as the mirror encodes them.
//!
//! Keys: `B` · track id · kbps (u32 big-endian; 0 the original) → hash
//! (32) · length (u64 little-endian) · outboard; `Y` → the settings.
//! Every write is one batch, flushed: a record lands before any byte it
//! describes is trusted, and a pin before it is acknowledged.
//!
//! Must never: judge a record (the mirror checked it against its hash) or
//! read the blobs themselves.

use super::{Index, IndexError, Result};
use crate::model::{Hash32, TrackId};

const B: u8 = b'B';
const Y: &[u8] = b"Y";

/// What a recipe's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// blake3 of the bytes.
    pub hash: Hash32,
    /// Their length.
    pub len: u64,
    /// The chaining values of the 16 KiB groups (`blob::Outboard` bytes).
    pub outboard: Vec<u8>,
}

fn key(track: &TrackId, kbps: u32) -> [u8; 37] {
    let mut k = [0u8; 37];
    k[0] = B;
    k[1..33].copy_from_slice(track.as_bytes());
    k[33..].copy_from_slice(&kbps.to_be_bytes());
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<BlobRecord> {
    let corrupt = || IndexError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: "short blob record".into(),
    };
    if v.len() < 40 {
        return Err(corrupt());
    }
    Ok(BlobRecord {
        hash: Hash32::from_slice(&v[..32]).ok_or_else(corrupt)?,
        len: u64::from_le_bytes(v[32..40].try_into().map_err(|_| corrupt())?),
        outboard: v[40..].to_vec(),
    })
}

impl Index {
    /// The record of `track` at `kbps`, if one is stored.
    pub fn blob_record(&self, track: &TrackId, kbps: u32) -> Result<Option<BlobRecord>> {
        let k = key(track, kbps);
        self.tree.get(k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Every stored record: (track, kbps, record).
    pub fn blob_records(&self) -> Result<Vec<(TrackId, u32, BlobRecord)>> {
        let mut out = vec![];
        for r in self.tree.scan_prefix([B]) {
            let (k, v) = r?;
            if k.len() != 37 {
                continue;
            }
            let track = TrackId::from_slice(&k[1..33]).expect("32 bytes");
            let kbps = u32::from_be_bytes(k[33..].try_into().expect("4 bytes"));
            out.push((track, kbps, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Store records and drop others, in one batch, flushed.
    pub fn put_blob_records(
        &self,
        put: &[(TrackId, u32, BlobRecord)],
        remove: &[(TrackId, u32)],
    ) -> Result<()> {
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        if !put.is_empty() {
            self.reserve.check()?;
        }
        let mut batch = sled::Batch::default();
        for (t, kbps, r) in put {
            let mut v = Vec::with_capacity(40 + r.outboard.len());
            v.extend_from_slice(&r.hash.0);
            v.extend_from_slice(&r.len.to_le_bytes());
            v.extend_from_slice(&r.outboard);
            batch.insert(&key(t, *kbps)[..], v);
        }
        for (t, kbps) in remove {
            batch.remove(&key(t, *kbps)[..]);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// The mirror's settings, as it stored them.
    pub fn mirror_settings(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(Y)?.map(|v| v.to_vec()))
    }

    /// Store the mirror's settings (flushed).
    pub fn set_mirror_settings(&self, bytes: &[u8]) -> Result<()> {
        self.reserve.check()?;
        self.tree.insert(Y, bytes)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(dir.path()).unwrap();
        let t = TrackId::of(b"a track");
        let r = BlobRecord {
            hash: Hash32::of(b"bytes"),
            len: 70_000,
            outboard: vec![7; 5 * 32],
        };
        ix.put_blob_records(&[(t, 96, r.clone()), (t, 0, r.clone())], &[])
            .unwrap();
        assert_eq!(ix.blob_record(&t, 96).unwrap(), Some(r.clone()));
        assert_eq!(ix.blob_record(&t, 128).unwrap(), None);
        assert_eq!(ix.blob_records().unwrap().len(), 2);
        ix.put_blob_records(&[], &[(t, 96)]).unwrap();
        assert_eq!(ix.blob_record(&t, 96).unwrap(), None);
        assert_eq!(ix.blob_records().unwrap(), vec![(t, 0, r)]);
        assert_eq!(ix.mirror_settings().unwrap(), None);
        ix.set_mirror_settings(b"{}").unwrap();
        assert_eq!(ix.mirror_settings().unwrap().as_deref(), Some(&b"{}"[..]));
    }
}
