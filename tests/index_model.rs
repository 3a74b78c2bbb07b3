//! Model-based test of the index: random sequences of file additions,
//! content changes, errors and removals, applied in random batches, must
//! leave the index equal to a plain `BTreeMap` model, internally consistent,
//! and with a snapshot root that depends only on the final content.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tunemesh::index::Index;
use tunemesh::model::{AudioInfo, Cover, CoverId, FileState, Outcome, Tags, Track, TrackId};

#[derive(Debug, Clone)]
enum Op {
    /// Path `p` now holds content `c`.
    Put(u8, u8),
    /// Path `p` could not be read.
    Fail(u8),
    /// Path `p` is gone.
    Remove(u8),
    /// Commit the batch so far.
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..10, 0u8..6).prop_map(|(p, c)| Op::Put(p, c)),
        1 => (0u8..10).prop_map(Op::Fail),
        2 => (0u8..10).prop_map(Op::Remove),
        2 => Just(Op::Commit),
    ]
}

fn path(p: u8) -> PathBuf {
    PathBuf::from(format!("/music/dir{}/file{p}.flac", p % 3))
}

fn cover(c: u8) -> Option<Cover> {
    c.is_multiple_of(2).then(|| {
        let data = vec![c / 2; 8];
        Cover {
            id: CoverId::of(&data),
            mime: "image/png".into(),
            data,
        }
    })
}

fn track(c: u8) -> Track {
    Track {
        id: TrackId::of(&[c]),
        tags: Tags {
            title: format!("Song {c}"),
            artists: vec![format!("Artist {}", c % 2)],
            album: format!("Album {}", c % 3),
            track: Some(u32::from(c) + 1),
            ..Tags::default()
        },
        audio: AudioInfo {
            codec: "flac".into(),
            duration_ms: 1000 * u64::from(c),
            sample_rate: 44100,
            channels: 2,
            ..AudioInfo::default()
        },
        size: 100 + u64::from(c),
        cover: cover(c).map(|c| c.id),
        paths: vec![],
    }
}

fn state(outcome: Outcome) -> FileState {
    FileState {
        size: 1,
        mtime_ns: 1,
        folder_cover: None,
        scanner_version: 1,
        outcome,
    }
}

/// Model: path -> Some(content) or None (error).
type Model = BTreeMap<u8, Option<u8>>;

fn apply(index: &Index, ops: &[Op], model: &mut Model) {
    let mut w = index.writer();
    for op in ops {
        match *op {
            Op::Put(p, c) => {
                let t = track(c);
                let cv = cover(c);
                w.set_file(
                    &path(p),
                    &state(Outcome::Track(t.id)),
                    Some((&t, cv.as_ref())),
                )
                .unwrap();
                model.insert(p, Some(c));
            }
            Op::Fail(p) => {
                w.set_file(&path(p), &state(Outcome::Error("bad".into())), None)
                    .unwrap();
                model.insert(p, None);
            }
            Op::Remove(p) => {
                w.remove_file(&path(p)).unwrap();
                model.remove(&p);
            }
            Op::Commit => w.commit().unwrap(),
        }
    }
    w.commit().unwrap();
}

fn expected(model: &Model) -> BTreeMap<TrackId, BTreeSet<PathBuf>> {
    let mut out: BTreeMap<TrackId, BTreeSet<PathBuf>> = BTreeMap::new();
    for (&p, c) in model {
        if let Some(c) = c {
            out.entry(track(*c).id).or_default().insert(path(p));
        }
    }
    out
}

fn actual(index: &Index) -> BTreeMap<TrackId, BTreeSet<PathBuf>> {
    index
        .tracks()
        .map(|t| {
            let t = t.unwrap();
            (t.id, t.paths.into_iter().collect())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn index_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let mut model = Model::new();
        apply(&index, &ops, &mut model);

        prop_assert_eq!(actual(&index), expected(&model));
        let problems = index.verify().unwrap();
        prop_assert!(problems.is_empty(), "{:?}", problems);
        let errors: BTreeSet<PathBuf> = index.errors(None).unwrap().into_iter().map(|e| e.path).collect();
        let want: BTreeSet<PathBuf> = model.iter().filter(|(_, c)| c.is_none()).map(|(&p, _)| path(p)).collect();
        prop_assert_eq!(errors, want);
        // Albums and artists are exactly those of the remaining tracks.
        let live: BTreeSet<u8> = model.values().flatten().copied().collect();
        let albums: BTreeSet<String> = index.albums().unwrap().into_iter().map(|a| a.title).collect();
        prop_assert_eq!(albums, live.iter().map(|c| format!("Album {}", c % 3)).collect::<BTreeSet<_>>());
        let covers = live.iter().filter(|c| *c % 2 == 0).map(|c| c / 2).collect::<BTreeSet<_>>().len();
        prop_assert_eq!(index.counts().unwrap().covers, covers);

        // The root depends on the final content only: a fresh index fed the
        // final state in one batch, in reverse order, has the same root.
        let dir2 = tempfile::tempdir().unwrap();
        let fresh = Index::open(dir2.path()).unwrap();
        let final_ops: Vec<Op> = model.iter().rev().map(|(&p, c)| match c {
            Some(c) => Op::Put(p, *c),
            None => Op::Fail(p),
        }).collect();
        apply(&fresh, &final_ops, &mut Model::new());
        prop_assert_eq!(index.snapshot().unwrap().root, fresh.snapshot().unwrap().root);
    }
}

#[test]
fn root_changes_iff_content_changes() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let empty = index.snapshot().unwrap().root;
    apply(&index, &[Op::Put(1, 1), Op::Put(2, 2)], &mut Model::new());
    let r1 = index.snapshot().unwrap().root;
    assert_ne!(r1, empty);
    // Writing the same facts again changes nothing.
    apply(&index, &[Op::Put(2, 2), Op::Put(1, 1)], &mut Model::new());
    assert_eq!(index.snapshot().unwrap().root, r1);
    // An error entry is not content.
    apply(&index, &[Op::Fail(7)], &mut Model::new());
    assert_eq!(index.snapshot().unwrap().root, r1);
    // New content at a path: different root; restoring it restores the root.
    apply(&index, &[Op::Put(1, 3)], &mut Model::new());
    assert_ne!(index.snapshot().unwrap().root, r1);
    apply(&index, &[Op::Put(1, 1)], &mut Model::new());
    assert_eq!(index.snapshot().unwrap().root, r1);
}
