//! When this device first saw each album of the merged library, so
//! "recently added" means the same thing after a restart.
//!
//! Key: `F` · album id (16 bytes); value: unix time in ms (u64 LE). Never
//! part of a track record or the snapshot: a device's own observation.

use super::{Index, Result};
use std::collections::HashMap;

const F: u8 = b'F';

impl Index {
    /// Every first-seen time stored, by 16-byte album id.
    pub fn first_seen(&self) -> Result<HashMap<[u8; 16], u64>> {
        let mut out = HashMap::new();
        for r in self.tree.scan_prefix([F]) {
            let (k, v) = r?;
            let (Ok(id), Ok(ms)) = (
                <[u8; 16]>::try_from(&k[1..]),
                <[u8; 8]>::try_from(v.as_ref()),
            ) else {
                continue; // a foreign key: not ours to interpret
            };
            out.insert(id, u64::from_le_bytes(ms));
        }
        Ok(out)
    }

    /// Store first-seen times, by 16-byte album id (one batch; none, no
    /// write).
    pub fn set_first_seen(&self, seen: impl IntoIterator<Item = ([u8; 16], u64)>) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for (id, ms) in seen {
            batch.insert(super::key(F, &id), &ms.to_le_bytes());
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.reserve.check()?;
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}
