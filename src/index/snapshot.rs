//! The content-addressed snapshot of an index: a Merkle trie over the sorted
//! track entries, so that two peers can find what differs between their
//! libraries by comparing a few node hashes instead of whole listings.
//!
//! Shape: an entry is `(track id, blake3 of the encoded TrackRecord)`. Track
//! ids are uniformly distributed (they are blake3 digests), so the trie splits
//! on successive hex nibbles of the id: a node holding at most [`LEAF_MAX`]
//! entries is a leaf, a bigger one is a branch of 16 children. The shape, and
//! hence every hash, depends only on the set of entries, never on insertion
//! order: two scans of the same files give the same root, and the root changes
//! if and only if some entry changes. After one track changes, a peer walks
//! the one path of differing hashes from the root to a leaf: about
//! `log16(n / LEAF_MAX)` branches of 16 hashes plus one leaf.
//!
//! This module is pure: the index feeds it entries.

use crate::model::{Hash32, TrackId};

/// Most entries a leaf holds before it splits.
pub const LEAF_MAX: usize = 64;

/// One entry: a track id and the hash of its stored record.
pub type Entry = (TrackId, Hash32);

/// A trie node, as a peer would fetch it during sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// At most [`LEAF_MAX`] entries (or any number at the deepest level),
    /// sorted by id.
    Leaf(Vec<Entry>),
    /// The hashes of the 16 children, indexed by the next nibble of the id;
    /// an empty child hashes to all zeros.
    Branch(Box<[Hash32; 16]>),
}

const EMPTY: Hash32 = Hash32([0; 32]);

fn nibble(id: &TrackId, depth: usize) -> usize {
    let b = id.as_bytes()[depth / 2];
    usize::from(if depth.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0x0f
    })
}

/// Split sorted entries into 16 runs by the nibble at `depth`.
pub fn children(entries: &[Entry], depth: usize) -> [&[Entry]; 16] {
    let mut out: [&[Entry]; 16] = [&[]; 16];
    let mut rest = entries;
    for (n, slot) in out.iter_mut().enumerate() {
        let cut = rest.partition_point(|(id, _)| nibble(id, depth) <= n);
        *slot = &rest[..cut];
        rest = &rest[cut..];
    }
    out
}

/// The node covering `entries` (all sharing the first `depth` nibbles).
pub fn node(entries: &[Entry], depth: usize) -> Node {
    if entries.len() <= LEAF_MAX || depth >= 63 {
        Node::Leaf(entries.to_vec())
    } else {
        let mut hashes = [EMPTY; 16];
        for (h, run) in hashes.iter_mut().zip(children(entries, depth)) {
            *h = node_hash(run, depth + 1);
        }
        Node::Branch(Box::new(hashes))
    }
}

/// Hash of the node covering `entries`.
pub fn node_hash(entries: &[Entry], depth: usize) -> Hash32 {
    if entries.is_empty() && depth > 0 {
        return EMPTY;
    }
    let mut h = blake3::Hasher::new();
    match node(entries, depth) {
        Node::Leaf(es) => {
            h.update(b"tunemesh.snapshot.leaf.v1");
            h.update(&(es.len() as u64).to_le_bytes());
            for (id, v) in &es {
                h.update(id.as_bytes());
                h.update(&v.0);
            }
        }
        Node::Branch(cs) => {
            h.update(b"tunemesh.snapshot.branch.v1");
            for c in cs.iter() {
                h.update(&c.0);
            }
        }
    }
    h.finalize().into()
}

/// Root hash of a set of entries. `entries` must be sorted by id, unique.
pub fn root(entries: &[Entry]) -> Hash32 {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    node_hash(entries, 0)
}

/// The node at a nibble path from the root (what a syncing peer asks for).
pub fn node_at(entries: &[Entry], path: &[u8]) -> Node {
    let mut run = entries;
    for (depth, &n) in path.iter().enumerate() {
        if run.len() <= LEAF_MAX {
            break;
        }
        run = children(run, depth)[usize::from(n & 0x0f)];
    }
    node(run, path.len())
}

/// The entries whose ids start with the nibbles of `path` (one per byte).
/// Unlike [`node_at`], this follows the path whatever the trie shape, so
/// two peers with different sets agree on what lies under a path.
pub fn subtree<'a>(entries: &'a [Entry], path: &[u8]) -> &'a [Entry] {
    let mut run = entries;
    for (depth, &n) in path.iter().enumerate() {
        run = children(run, depth)[usize::from(n & 0x0f)];
    }
    run
}

/// What changed between two sorted entry lists: ids to (re)load (new, or
/// with a new record hash) and ids to drop (gone, or with a new record
/// hash: the old record goes before the new one comes). One merge pass.
pub fn diff(old: &[Entry], new: &[Entry]) -> (Vec<TrackId>, Vec<TrackId>) {
    use std::cmp::Ordering;
    let (mut put, mut remove) = (vec![], vec![]);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                remove.push(old[i].0);
                i += 1;
            }
            Ordering::Greater => {
                put.push(new[j].0);
                j += 1;
            }
            Ordering::Equal => {
                if old[i].1 != new[j].1 {
                    remove.push(old[i].0);
                    put.push(new[j].0);
                }
                i += 1;
                j += 1;
            }
        }
    }
    (put, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_new_gone_and_changed_entries() {
        let t = |n: u8| TrackId::from_bytes([n; 32]);
        let h = |n: u8| Hash32([n; 32]);
        let old = vec![(t(1), h(10)), (t(2), h(20)), (t(4), h(40))];
        let new = vec![(t(2), h(21)), (t(3), h(30)), (t(4), h(40)), (t(5), h(50))];
        let (put, remove) = diff(&old, &new);
        assert_eq!(put, vec![t(2), t(3), t(5)]);
        assert_eq!(remove, vec![t(1), t(2)]);
        assert_eq!(diff(&new, &new), (vec![], vec![]));
        assert_eq!(diff(&[], &old).0.len(), 3);
        assert_eq!(diff(&old, &[]).1.len(), 3);
    }

    fn entries(n: u32, salt: u8) -> Vec<Entry> {
        let mut v: Vec<Entry> = (0..n)
            .map(|i| (TrackId::of(&i.to_le_bytes()), Hash32::of(&[salt])))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn root_depends_on_content_only() {
        let a = entries(1000, 1);
        assert_eq!(root(&a), root(&a.clone()));
        let mut b = a.clone();
        b[500].1 = Hash32::of(b"changed");
        assert_ne!(root(&a), root(&b));
        let mut c = a.clone();
        c.remove(10);
        assert_ne!(root(&a), root(&c));
        assert_ne!(root(&[]), root(&a[..1]));
    }

    #[test]
    fn children_partition_by_nibble() {
        let a = entries(5000, 1);
        let parts = children(&a, 0);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), a.len());
        for (n, p) in parts.iter().enumerate() {
            assert!(p.iter().all(|(id, _)| nibble(id, 0) == n));
        }
    }

    #[test]
    fn one_change_differs_along_one_path() {
        let a = entries(100_000, 1);
        let mut b = a.clone();
        b[777].1 = Hash32::of(b"changed");
        // Walk down from the root following differing children.
        let mut path = vec![];
        loop {
            match (node_at(&a, &path), node_at(&b, &path)) {
                (Node::Branch(x), Node::Branch(y)) => {
                    let diff: Vec<usize> = (0..16).filter(|&i| x[i] != y[i]).collect();
                    assert_eq!(diff.len(), 1, "exactly one child differs");
                    path.push(diff[0] as u8);
                }
                (Node::Leaf(x), Node::Leaf(y)) => {
                    assert!(x.len() <= LEAF_MAX);
                    let d = x.iter().zip(&y).filter(|(p, q)| p != q).count();
                    assert_eq!(d, 1);
                    break;
                }
                _ => panic!("shapes differ"),
            }
        }
        assert!(path.len() <= 4, "depth {}", path.len());
    }

    #[test]
    fn subtree_follows_id_prefixes() {
        let a = entries(3000, 1);
        let under = subtree(&a, &[0xa, 0x3]);
        assert!(!under.is_empty());
        assert!(under.iter().all(|(id, _)| id.as_bytes()[0] == 0xa3));
        assert_eq!(
            under.len(),
            a.iter().filter(|(id, _)| id.as_bytes()[0] == 0xa3).count()
        );
        assert_eq!(subtree(&a, &[]).len(), a.len());
    }
}
