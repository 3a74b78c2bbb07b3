//! The user operation log: every device's signed operations on the
//! owner's state (stars, plays, playlists…), as received or made, so the
//! merged views can be rebuilt at start and members can be sent what they
//! lack.
//!
//! Key: `L` · device id length (1 byte) · device id bytes · sequence
//! number (u64 big-endian, so a device's operations scan in order); value:
//! the signed envelope, exactly as it travels. A group of operations lands
//! in one `sled::Batch`, flushed to disk before [`Index::log_append`]
//! returns: an operation is acknowledged only once it is durable.
//!
//! Must never: decode or judge the operations (the node checked them), or
//! store one under another device's key.

use super::{Index, Result};

const L: u8 = b'L';

fn device_prefix(device: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + device.len() + 8);
    k.push(L);
    k.push(u8::try_from(device.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(device);
    k
}

fn op_key(device: &[u8], seq: u64) -> Vec<u8> {
    let mut k = device_prefix(device);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// One logged operation: its device (id bytes), number and bytes.
pub type LoggedOp<'a> = (&'a [u8], u64, &'a [u8]);

impl Index {
    /// Store operations in one batch and flush it to disk.
    pub fn log_append(&self, ops: &[LoggedOp<'_>]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.reserve.check()?;
        let mut batch = sled::Batch::default();
        for (device, seq, wire) in ops {
            batch.insert(op_key(device, *seq), *wire);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every logged operation, each device's in order.
    pub fn log_all(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for r in self.tree.scan_prefix([L]) {
            out.push(r?.1.to_vec());
        }
        Ok(out)
    }

    /// `device`'s operations numbered `from` and up, in order, until
    /// `max_bytes` are gathered (at least one, if any).
    pub fn log_from(&self, device: &[u8], from: u64, max_bytes: usize) -> Result<Vec<Vec<u8>>> {
        let end = device_prefix(device);
        let mut hi = end.clone();
        hi.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in self.tree.range(op_key(device, from)..=hi) {
            let (_, v) = r?;
            if bytes > 0 && bytes + v.len() > max_bytes {
                break;
            }
            bytes += v.len();
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Forget `device`'s operations numbered above `kept` (a revoked
    /// device's late ones); returns how many went.
    pub fn log_truncate(&self, device: &[u8], kept: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut hi = device_prefix(device);
        hi.extend_from_slice(&u64::MAX.to_be_bytes());
        for k in self
            .tree
            .range(op_key(device, kept.saturating_add(1))..=hi)
            .keys()
        {
            batch.remove(k?);
            n += 1;
        }
        if n > 0 {
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::index::Index;

    #[test]
    fn a_devices_ops_come_back_in_order_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("ix")).unwrap();
        let (a, b) = (b"device-a".as_slice(), b"device-b-longer".as_slice());
        let ops: Vec<(Vec<u8>, u64, Vec<u8>)> = (1..=300u64)
            .map(|n| {
                (
                    if n % 2 == 0 { a } else { b }.to_vec(),
                    n,
                    vec![n as u8; 10],
                )
            })
            .collect();
        let refs: Vec<_> = ops
            .iter()
            .map(|(d, n, w)| (d.as_slice(), *n, w.as_slice()))
            .collect();
        ix.log_append(&refs).unwrap();
        assert_eq!(ix.log_all().unwrap().len(), 300);
        let from = ix.log_from(a, 250, 1 << 20).unwrap();
        assert_eq!(from.len(), 26); // 250, 252, … 300
        assert_eq!(from[0], vec![250u8; 10]);
        assert_eq!(ix.log_from(a, 2, 35).unwrap().len(), 3);
        assert_eq!(ix.log_truncate(b, 99).unwrap(), 100);
        assert_eq!(ix.log_all().unwrap().len(), 200);
    }
}
