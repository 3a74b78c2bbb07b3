//! The trie diff of a library sync, as pure functions: what to ask for
//! next, which children differ, what a leaf adds and removes, which sent
//! records are the ones listed. No I/O, no mesh: unit-tested here.

use crate::index::snapshot::{self, Entry, LEAF_MAX};
use crate::mesh::Request;
use crate::model::{Hash32, TrackId};
use std::collections::{HashMap, HashSet};

/// Most entries a sync asks for in one reply (and with records, when we
/// hold nothing under that part of the trie yet).
pub const MAX_ENTRIES: u32 = 1024;

/// The request for the trie node at `path` of the catalog announced as
/// `root`, given what we hold (`local`, sorted by id): where we hold
/// nothing, a bigger run and the records along with it.
pub fn node_request(local: &[Entry], root: Hash32, path: &[u8]) -> Request {
    let under = snapshot::subtree(local, path).len();
    Request::GetNode {
        root,
        path: path.to_vec(),
        max_entries: if under == 0 {
            MAX_ENTRIES
        } else {
            4 * LEAF_MAX as u32
        },
        with_records: under == 0,
    }
}

/// Paths of the children (of the node at `path`) whose hash differs from
/// ours: the ones to go down into.
pub fn differing_children(local: &[Entry], path: &[u8], theirs: &[Hash32; 16]) -> Vec<Vec<u8>> {
    let mine = snapshot::subtree(local, path);
    snapshot::children(mine, path.len())
        .iter()
        .enumerate()
        .filter(|(i, part)| snapshot::node_hash(part, path.len() + 1) != theirs[*i])
        .map(|(i, _)| {
            let mut p = path.to_vec();
            p.push(i as u8);
            p
        })
        .collect()
}

/// What a leaf (every entry under a path) changes against ours.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeafDiff {
    /// Ids we hold there that they no longer do.
    pub remove: Vec<TrackId>,
    /// Entries of theirs we do not hold (new, or with another record).
    pub new: Vec<Entry>,
}

/// Diff their entries under `path` against ours.
pub fn diff_leaf(local: &[Entry], path: &[u8], theirs: &[Entry]) -> LeafDiff {
    let mine = snapshot::subtree(local, path);
    let their_ids: HashSet<TrackId> = theirs.iter().map(|(id, _)| *id).collect();
    let have: HashSet<Entry> = mine.iter().copied().collect();
    LeafDiff {
        remove: mine
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !their_ids.contains(id))
            .collect(),
        new: theirs
            .iter()
            .filter(|e| !have.contains(e))
            .copied()
            .collect(),
    }
}

/// Records sent along with a leaf (one per entry, in entry order): the
/// ones for `new` entries, each checked against its entry's hash. `Err`
/// names the first record that does not match.
pub fn leaf_records(
    entries: &[Entry],
    records: Vec<Vec<u8>>,
    new: &[Entry],
) -> Result<Vec<(TrackId, Vec<u8>)>, TrackId> {
    let wanted: HashSet<TrackId> = new.iter().map(|(id, _)| *id).collect();
    let mut put = vec![];
    for ((id, h), rec) in entries.iter().zip(records) {
        if Hash32::of(&rec) != *h {
            return Err(*id);
        }
        if wanted.contains(id) {
            put.push((*id, rec));
        }
    }
    Ok(put)
}

/// Match records fetched by id to the entries still wanted (by record
/// hash: a record is what its entry hashes); moves the matched ones to
/// `put` and leaves the rest in `want`.
pub fn match_records(
    want: &mut Vec<Entry>,
    records: Vec<Vec<u8>>,
    put: &mut Vec<(TrackId, Vec<u8>)>,
) {
    let mut by_hash: HashMap<Hash32, Vec<u8>> =
        records.into_iter().map(|r| (Hash32::of(&r), r)).collect();
    want.retain(|(id, h)| match by_hash.remove(h) {
        Some(r) => {
            put.push((*id, r));
            false
        }
        None => true,
    });
}

/// Our in-memory copy of their catalog after a stored step (kept sorted).
pub fn apply(local: &mut Vec<Entry>, put: &[(TrackId, Vec<u8>)], remove: &[TrackId]) {
    let gone: HashSet<TrackId> = remove.iter().copied().collect();
    let fresh: HashMap<TrackId, Hash32> = put.iter().map(|(id, r)| (*id, Hash32::of(r))).collect();
    local.retain(|(id, _)| !gone.contains(id) && !fresh.contains_key(id));
    local.extend(fresh);
    local.sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TrackId {
        TrackId::from_bytes([n; 32])
    }

    fn entries(n: u32, salt: u8) -> Vec<Entry> {
        let mut v: Vec<Entry> = (0..n)
            .map(|i| (TrackId::of(&i.to_le_bytes()), Hash32::of(&[salt, i as u8])))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn asks_for_records_only_where_we_hold_nothing() {
        let root = Hash32([7; 32]);
        let local = entries(10, 0);
        match node_request(&[], root, &[]) {
            Request::GetNode {
                with_records,
                max_entries,
                ..
            } => assert!(with_records && max_entries == MAX_ENTRIES),
            _ => unreachable!(),
        }
        match node_request(&local, root, &[]) {
            Request::GetNode { with_records, .. } => assert!(!with_records),
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_changed_children_are_walked() {
        let ours = entries(2000, 0);
        let mut theirs = ours.clone();
        theirs[5].1 = Hash32([9; 32]);
        let changed_nibble = theirs[5].0.as_bytes()[0] >> 4;
        let mut hashes = [Hash32([0; 32]); 16];
        for (h, part) in hashes.iter_mut().zip(snapshot::children(&theirs, 0)) {
            *h = snapshot::node_hash(part, 1);
        }
        assert_eq!(
            differing_children(&ours, &[], &hashes),
            vec![vec![changed_nibble]]
        );
        let mut same = [Hash32([0; 32]); 16];
        for (h, part) in same.iter_mut().zip(snapshot::children(&ours, 0)) {
            *h = snapshot::node_hash(part, 1);
        }
        assert!(differing_children(&ours, &[], &same).is_empty());
    }

    #[test]
    fn a_leaf_diff_finds_removed_new_and_changed_entries() {
        let ours = entries(6, 0);
        let mut theirs = ours.clone();
        theirs.remove(0);
        theirs[1].1 = Hash32([1; 32]);
        let extra = (id(0xee), Hash32([2; 32]));
        theirs.push(extra);
        let d = diff_leaf(&ours, &[], &theirs);
        assert_eq!(d.remove, vec![ours[0].0]);
        assert_eq!(d.new, vec![theirs[1], extra]);
    }

    #[test]
    fn records_must_hash_to_their_entries() {
        let recs: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec()];
        let entries: Vec<Entry> = vec![(id(1), Hash32::of(b"a")), (id(2), Hash32::of(b"b"))];
        let put = leaf_records(&entries, recs.clone(), &entries[1..]).unwrap();
        assert_eq!(put, vec![(id(2), b"b".to_vec())]);
        let lying = vec![(id(1), Hash32::of(b"x")), entries[1]];
        assert_eq!(leaf_records(&lying, recs, &lying), Err(id(1)));
    }

    #[test]
    fn fetched_records_match_by_hash_and_the_copy_stays_sorted() {
        let mut want = vec![(id(3), Hash32::of(b"c")), (id(4), Hash32::of(b"d"))];
        let mut put = vec![];
        match_records(&mut want, vec![b"d".to_vec(), b"zz".to_vec()], &mut put);
        assert_eq!(want, vec![(id(3), Hash32::of(b"c"))]);
        assert_eq!(put, vec![(id(4), b"d".to_vec())]);
        let mut local = vec![(id(1), Hash32([0; 32])), (id(9), Hash32([0; 32]))];
        apply(&mut local, &put, &[id(1)]);
        assert_eq!(
            local,
            vec![(id(4), Hash32::of(b"d")), (id(9), Hash32([0; 32]))]
        );
    }
}
