//! Verified streaming of content-addressed blobs in 16 KiB chunk groups.
//!
//! A blob is named by the plain BLAKE3 hash of its bytes ([`Hash32`]). This
//! module owns the tree math that lets a receiver check a blob piece by piece:
//! the chaining value of each [`GROUP`]-byte group (an [`Outboard`]), the
//! check of a received outboard against the root hash, and the check of each
//! group against the outboard ([`Outboard::verify_group`]).
//!
//! It must never do I/O on stores or the network (its only I/O is the
//! caller's `Read` in [`Outboard::compute`]), and never trust a group or an
//! outboard before it has been checked: [`Outboard::from_bytes`] checks an
//! outboard whole before returning it, and a group is only good once
//! `verify_group` says so.

use std::io::{self, Read};
use std::ops::Range;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::Hasher;

use crate::model::Hash32;

/// Bytes per chunk group: 16 BLAKE3 chunks. Every group but the last is full.
pub const GROUP: u64 = 16 * 1024;

/// How many groups a blob of `len` bytes has: `ceil(len / GROUP)`, but 1 for
/// an empty blob (whose one group is empty).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP).max(1)
}

/// The byte range of group `i` in a blob of `len` bytes (the last group may be
/// short; the one group of an empty blob is `0..0`). For `i` past the last
/// group the range is the empty `len..len`.
pub fn group_range(len: u64, i: u64) -> Range<u64> {
    let start = i.saturating_mul(GROUP).min(len);
    start..start.saturating_add(GROUP).min(len)
}

/// Why a blob's outboard or group was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// The outboard has the wrong size for the blob's length, or its chaining
    /// values do not hash to the root.
    #[error("bad outboard: {0}")]
    BadOutboard(String),
    /// A group's bytes (or their length) do not match the outboard or root.
    #[error("group {index} does not match the blob's hash")]
    BadGroup {
        /// The group's index.
        index: u64,
    },
    /// A group index past the blob's last group.
    #[error("group {index} is out of range (the blob has {groups})")]
    OutOfRange {
        /// The requested index.
        index: u64,
        /// How many groups the blob has.
        groups: u64,
    },
    /// The blob is longer than [`Outboard::MAX_LEN`].
    #[error("blob of {len} bytes is over the 4 GiB limit")]
    TooLarge {
        /// The blob's length.
        len: u64,
    },
}

/// The chaining values of a blob's 16 KiB groups: what lets a receiver
/// check each group on its own once the outboard itself has been checked
/// against the root hash. Empty for a blob of one group (that group is
/// checked against the root hash itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outboard {
    len: u64,
    cvs: Vec<ChainingValue>,
}

impl Outboard {
    /// The largest blob accepted (4 GiB): [`from_bytes`](Self::from_bytes)
    /// and [`compute`](Self::compute) refuse longer ones.
    pub const MAX_LEN: u64 = 1 << 32;

    /// Hashes everything `reader` yields, to EOF (the blob's length is what
    /// was read), and builds its outboard: returns (root hash, outboard).
    /// Streams with one group's buffer. A blob longer than
    /// [`MAX_LEN`](Self::MAX_LEN) fails with `InvalidData` carrying
    /// [`BlobError::TooLarge`]; `Interrupted` reads are retried.
    pub fn compute(reader: impl Read) -> io::Result<(Hash32, Outboard)> {
        Self::compute_capped(reader, Self::MAX_LEN)
    }

    fn compute_capped(mut reader: impl Read, max: u64) -> io::Result<(Hash32, Outboard)> {
        let mut buf = vec![0u8; GROUP as usize];
        let mut builder = Builder::default();
        loop {
            let n = fill(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            let len = builder.len + n as u64;
            if len > max {
                let err = BlobError::TooLarge { len };
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            builder.push(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
        Ok(builder.finish())
    }

    /// [`compute`](Self::compute) for bytes in memory.
    ///
    /// # Panics
    ///
    /// If `bytes` is longer than [`MAX_LEN`](Self::MAX_LEN).
    pub fn of(bytes: &[u8]) -> (Hash32, Outboard) {
        assert!(bytes.len() as u64 <= Self::MAX_LEN, "blob over MAX_LEN");
        let mut builder = Builder::default();
        for group in bytes.chunks(GROUP as usize) {
            builder.push(group);
        }
        builder.finish()
    }

    /// An outboard received for a blob `root` of `len` bytes: checked whole
    /// (its size, and the tree of its chaining values must give `root`)
    /// before it is returned. A one-group blob's outboard is empty, so there
    /// is nothing to check against `root` here: its group is checked against
    /// `root` by [`verify_group`](Self::verify_group). A wrong `len` that
    /// keeps the group count cannot be seen here either (the tree's shape
    /// depends only on the group count), but then the true last group can
    /// never verify.
    pub fn from_bytes(root: &Hash32, len: u64, bytes: &[u8]) -> Result<Outboard, BlobError> {
        if len > Self::MAX_LEN {
            return Err(BlobError::TooLarge { len });
        }
        let groups = group_count(len);
        let expected = if groups == 1 { 0 } else { groups * 32 };
        if bytes.len() as u64 != expected {
            return Err(BlobError::BadOutboard(format!(
                "{} bytes, expected {expected} for a blob of {len} bytes",
                bytes.len()
            )));
        }
        let cvs: Vec<ChainingValue> = bytes
            .chunks_exact(32)
            .map(|cv| cv.try_into().expect("chunks_exact(32)"))
            .collect();
        if groups > 1 && root_of(&cvs, len) != blake3::Hash::from(root.0) {
            return Err(BlobError::BadOutboard(format!("does not hash to {root}")));
        }
        Ok(Outboard { len, cvs })
    }

    /// The wire/storage form: the chaining values concatenated (32 bytes
    /// each, in group order; empty for one group).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    /// The blob's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty (zero bytes; it still has one group).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many groups the blob has ([`group_count`] of its length).
    pub fn groups(&self) -> u64 {
        group_count(self.len)
    }

    /// Checks group `index`'s bytes (exactly [`group_range`]'s length)
    /// against the outboard, or, for a one-group blob, against `root` (for
    /// more groups `root` is not looked at: the outboard was checked against
    /// it when it was built or received).
    pub fn verify_group(&self, root: &Hash32, index: u64, data: &[u8]) -> Result<(), BlobError> {
        let groups = self.groups();
        if index >= groups {
            return Err(BlobError::OutOfRange { index, groups });
        }
        let range = group_range(self.len, index);
        let good = data.len() as u64 == range.end - range.start
            && if self.cvs.is_empty() {
                blake3::hash(data) == blake3::Hash::from(root.0)
            } else {
                group_cv(index, data) == self.cvs[index as usize]
            };
        if good {
            Ok(())
        } else {
            Err(BlobError::BadGroup { index })
        }
    }
}

/// A set of group indices as sorted, coalesced half-open ranges; e.g. the
/// groups still missing from a partial download. The input must be sorted
/// ascending (gaps and repeats are fine).
pub fn ranges_of(indices: impl IntoIterator<Item = u64>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for i in indices {
        match out.last_mut() {
            Some(last) if last.end == i => last.end = i + 1,
            Some(last) if last.contains(&i) => {}
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The chaining value of group `index` holding `data` (not empty).
fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = Hasher::new();
    if index > 0 {
        hasher.set_input_offset(index * GROUP);
    }
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The root hash of a blob of `len` bytes from its groups' chaining values
/// (at least two).
fn root_of(cvs: &[ChainingValue], len: u64) -> blake3::Hash {
    let (left, right) = children(cvs, len);
    merge_subtrees_root(&left, &right, Mode::Hash)
}

/// The chaining value of a subtree of `len` bytes whose groups are `cvs`.
fn subtree_cv(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = children(cvs, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// The chaining values of the two children of a subtree of `len` bytes (more
/// than one group) whose groups are `cvs`.
fn children(cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
    debug_assert!(cvs.len() >= 2 && cvs.len() as u64 == group_count(len));
    // A power of two of at least GROUP bytes, so the split is on a group.
    let left_len = left_subtree_len(len);
    let (l, r) = cvs.split_at((left_len / GROUP) as usize);
    (subtree_cv(l, left_len), subtree_cv(r, len - left_len))
}

/// Builds the outboard group by group. The first group's hasher is kept
/// unfinalized: if it is the only group, its root hash is the blob's.
#[derive(Default)]
struct Builder {
    len: u64,
    groups: u64,
    first: Hasher,
    cvs: Vec<ChainingValue>,
}

impl Builder {
    /// Adds the next group (full, unless it is the last; never empty).
    fn push(&mut self, group: &[u8]) {
        if self.groups == 0 {
            self.first.update(group);
        } else {
            if self.groups == 1 {
                self.cvs.push(self.first.finalize_non_root());
            }
            self.cvs.push(group_cv(self.groups, group));
        }
        self.groups += 1;
        self.len += group.len() as u64;
    }

    fn finish(self) -> (Hash32, Outboard) {
        let (len, cvs) = (self.len, self.cvs);
        let root = if cvs.is_empty() {
            self.first.finalize()
        } else {
            root_of(&cvs, len)
        };
        (root.into(), Outboard { len, cvs })
    }
}

/// Reads into `buf` until it is full or the reader is at EOF; returns how
/// many bytes were read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LENS: [u64; 12] = [
        0, 1, 1023, 1024, 1025, 16383, 16384, 16385, 32768, 32769, 81_927, 1_000_003,
    ];

    fn bytes(len: u64, seed: u64) -> Vec<u8> {
        let mut out = vec![0; len as usize];
        let mut rng = Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
        rng.fill(&mut out);
        out
    }

    fn group(data: &[u8], i: u64) -> &[u8] {
        let r = group_range(data.len() as u64, i);
        &data[r.start as usize..r.end as usize]
    }

    /// A reader that hands out at most 1000 bytes a read, with interruptions.
    struct Dribble<'a>(&'a [u8], bool);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// What every blob must hold to; flipping any one byte in `flips` must
    /// break exactly the group holding it.
    fn check(data: &[u8], flips: impl IntoIterator<Item = usize>) {
        let len = data.len() as u64;
        let (root, ob) = Outboard::of(data);
        assert_eq!(root, Hash32::from(blake3::hash(data)), "len {len}");
        assert_eq!((ob.len(), ob.groups()), (len, group_count(len)));
        assert_eq!(Outboard::compute(data).unwrap(), (root, ob.clone()));
        let dribbled = Outboard::compute(Dribble(data, false)).unwrap();
        assert_eq!(dribbled, (root, ob.clone()));
        let back = Outboard::from_bytes(&root, len, &ob.to_bytes()).unwrap();
        assert_eq!(back, ob);
        // Every group verifies at its own index, and only there (unless the
        // bytes there are the same).
        let n = ob.groups();
        for (i, j) in (0..n).flat_map(|i| (0..n).map(move |j| (i, j))) {
            let res = back.verify_group(&root, j, group(data, i));
            let same = group(data, i) == group(data, j);
            assert_eq!(res.is_ok(), same, "len {len} group {i} at {j}");
        }
        let groups = n;
        let out = BlobError::OutOfRange { index: n, groups };
        assert_eq!(back.verify_group(&root, n, &[]), Err(out));
        for at in flips {
            let mut bad = data.to_vec();
            bad[at] ^= 0x20;
            for i in 0..ob.groups() {
                let res = back.verify_group(&root, i, group(&bad, i));
                let hit = i == at as u64 / GROUP;
                assert_eq!(res.is_err(), hit, "len {len} flip {at} group {i}");
                assert!(!hit || res == Err(BlobError::BadGroup { index: i }));
            }
        }
    }

    #[test]
    fn every_length_hashes_round_trips_and_verifies() {
        for len in LENS {
            let starts = (0..group_count(len)).map(|i| group_range(len, i).start);
            let flips = starts.map(|s| (s + 3).min(len.saturating_sub(1)) as usize);
            check(&bytes(len, len), flips.filter(|_| len > 0));
        }
    }

    #[test]
    fn the_offset_is_in_the_hash() {
        let zeros = vec![0u8; 2 * GROUP as usize];
        assert_ne!(group_cv(0, group(&zeros, 0)), group_cv(1, group(&zeros, 1)));
        check(&zeros, [5, GROUP as usize + 5]);
    }

    #[test]
    fn a_damaged_outboard_root_or_len_is_refused() {
        for len in LENS {
            let data = bytes(len, 3);
            let (root, ob) = Outboard::of(&data);
            let wire = ob.to_bytes();
            let refused = |root: &Hash32, len, bytes: &[u8]| {
                let res = Outboard::from_bytes(root, len, bytes);
                matches!(res, Err(BlobError::BadOutboard(_)))
            };
            for bit in 0..wire.len() * 8 {
                let mut bad = wire.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(refused(&root, len, &bad), "len {len} bit {bit}");
            }
            let longer = [&wire[..], &[0; 32]].concat();
            assert!(refused(&root, len, &longer));
            for cut in [1, 31, 32].into_iter().filter(|&c| c <= wire.len()) {
                assert!(refused(&root, len, &wire[..wire.len() - cut]));
            }
            // Another group count needs another outboard size.
            assert!(refused(&root, len + GROUP + 1, &wire));
            let mut wrong = root;
            wrong.0[0] ^= 1;
            if ob.groups() > 1 {
                assert!(refused(&wrong, len, &wire), "len {len}");
                assert!(refused(&root, len - GROUP, &wire));
            } else {
                // Nothing to check in the outboard: the group meets the root.
                let ob = Outboard::from_bytes(&wrong, len, &wire).unwrap();
                let res = ob.verify_group(&wrong, 0, &data);
                assert_eq!(res, Err(BlobError::BadGroup { index: 0 }));
            }
            // A wrong length with the same group count: the last group fails.
            if len > 0 && group_count(len - 1) == ob.groups() {
                let short = Outboard::from_bytes(&root, len - 1, &wire).unwrap();
                let last = short.groups() - 1;
                assert!(short.verify_group(&root, last, group(&data, last)).is_err());
                let cut = group(&data[..len as usize - 1], last);
                assert!(short.verify_group(&root, last, cut).is_err());
            }
        }
    }

    #[test]
    fn too_large_is_refused() {
        let len = Outboard::MAX_LEN + 1;
        let res = Outboard::from_bytes(&Hash32([0; 32]), len, &[]);
        assert_eq!(res, Err(BlobError::TooLarge { len }));
        let data = bytes(3 * GROUP + 5, 1);
        let err = Outboard::compute_capped(&data[..], 3 * GROUP + 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err.into_inner().unwrap().downcast::<BlobError>().unwrap();
        assert_eq!(*inner, BlobError::TooLarge { len: 3 * GROUP + 5 });
        assert!(Outboard::compute_capped(&data[..], 3 * GROUP + 5).is_ok());
    }

    #[test]
    fn groups_and_ranges() {
        assert_eq!((group_count(0), group_range(0, 0)), (1, 0..0));
        assert_eq!((group_count(16384), group_count(16385)), (1, 2));
        assert_eq!(group_range(16385, 1), 16384..16385);
        assert_eq!(group_range(16385, 2), 16385..16385);
        assert_eq!(ranges_of([0, 1, 2, 5, 7, 8]), vec![0..3, 5..6, 7..9]);
        assert_eq!(ranges_of([3, 3, 4]), vec![3..5]);
        assert!(ranges_of([]).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_length_and_flip(len in 0u64..200_000, at: prop::sample::Index, seed: u64) {
            let data = bytes(len, seed);
            check(&data, (len > 0).then_some(at.index(data.len().max(1))));
        }
    }
}
