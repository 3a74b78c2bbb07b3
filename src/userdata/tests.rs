//! The merge, checked: three replicas make random operations, exchange
//! them in random orders at random times, and must end equal to each other
//! and to a plain sequential model that applies every operation in stamp
//! order.

use super::hlc::{Clock, Hlc};
use super::op::*;
use super::position::Position;
use super::views::{Applied, Views};
use crate::catalog::AlbumId;
use crate::mesh::DeviceId;
use crate::model::TrackId;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Replica {
    device: DeviceId,
    clock: Clock,
    seq: u64,
    skew: i64,
    views: Views,
    log: BTreeMap<OpId, Op>,
}

fn track(n: usize) -> TrackId {
    TrackId::of(&[n as u8])
}

fn item(rng: &mut Rng) -> Item {
    match rng.below(3) {
        0 | 1 => Item::Track(track(rng.below(6))),
        _ => Item::Album(AlbumId([rng.below(3) as u8; 16])),
    }
}

impl Replica {
    fn make(&mut self, wall: i64, body: Body) {
        self.seq += 1;
        let op = Op {
            id: OpId {
                device: self.device,
                seq: self.seq,
            },
            at: self.clock.tick((wall + self.skew).max(0) as u64),
            body,
        };
        assert_eq!(self.views.apply(&op), Applied::New);
        self.log.insert(op.id, op);
    }

    /// A random operation that makes sense against this replica's view.
    fn random_body(&self, rng: &mut Rng, wall: i64) -> Body {
        let lists = self.views.playlists();
        let list = (!lists.is_empty()).then(|| &lists[rng.below(lists.len())]);
        match (rng.below(10), list) {
            (0, _) => Body::Star {
                item: item(rng),
                starred: rng.below(3) > 0,
            },
            (1, _) => Body::Rate {
                item: item(rng),
                rating: rng.below(6) as u8,
            },
            (2, _) => Body::Play(Play {
                track: track(rng.below(6)),
                // Some plays were made offline, an hour ago.
                started_ms: wall - rng.below(3_600_000) as i64,
                ms_played: rng.below(300_000) as u32,
            }),
            (3, _) | (_, None) => Body::CreatePlaylist {
                name: format!("list {}", rng.below(4)),
            },
            (4, Some(l)) => Body::EditPlaylist {
                playlist: l.id,
                name: (rng.below(2) == 0).then(|| format!("renamed {}", rng.below(9))),
                comment: Some(format!("c{}", rng.below(9))),
            },
            (5, Some(l)) if rng.below(4) == 0 => Body::DeletePlaylist { playlist: l.id },
            (6 | 5, Some(l)) => {
                // Insert at a random place (often the end).
                let at = rng.below(l.entries.len() + 2).min(l.entries.len());
                let lo = at.checked_sub(1).map(|i| &l.entries[i].position);
                let hi = l.entries.get(at).map(|e| &e.position);
                let n = 1 + rng.below(3);
                let mut entries = Vec::new();
                let mut last = lo.cloned();
                for _ in 0..n {
                    let p = Position::between(last.as_ref(), hi);
                    entries.push((track(rng.below(6)), p.clone()));
                    last = Some(p);
                }
                Body::AddEntries {
                    playlist: l.id,
                    entries,
                }
            }
            (7, Some(l)) if !l.entries.is_empty() => {
                let from = rng.below(l.entries.len());
                let rest: Vec<&Position> = l
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != from)
                    .map(|(_, e)| &e.position)
                    .collect();
                let to = rng.below(rest.len() + 1);
                let lo = to.checked_sub(1).map(|i| rest[i]);
                Body::MoveEntry {
                    playlist: l.id,
                    entry: l.entries[from].id,
                    position: Position::between(lo, rest.get(to).copied()),
                }
            }
            (8, Some(l)) if !l.entries.is_empty() => Body::RemoveEntries {
                playlist: l.id,
                entries: vec![l.entries[rng.below(l.entries.len())].id],
            },
            _ => Body::SetQueue(Queue {
                tracks: (0..rng.below(4)).map(|_| track(rng.below(6))).collect(),
                current: 0,
                position_ms: rng.below(1000) as u64,
            }),
        }
    }

    /// Take what `from` has that we lack, in a random order: ops arriving
    /// before an earlier one of their device wait for it.
    fn receive(&mut self, from: &BTreeMap<OpId, Op>, rng: &mut Rng) {
        let have = self.views.version_vector().clone();
        let mut pending: Vec<&Op> = from
            .values()
            .filter(|o| o.id.seq > have.get(&o.id.device))
            .collect();
        // Only part of them, sometimes (a sync cut short).
        if rng.below(3) == 0 {
            pending.truncate(rng.below(pending.len() + 1));
        }
        for i in (1..pending.len()).rev() {
            pending.swap(i, rng.below(i + 1));
        }
        loop {
            let before = pending.len();
            pending.retain(|o| match self.views.apply(o) {
                Applied::New => {
                    self.clock.observe(o.at);
                    self.log.insert(o.id, (*o).clone());
                    false
                }
                Applied::Duplicate => false,
                Applied::Gap => true,
            });
            if pending.len() == before {
                break;
            }
        }
    }
}

/// A playlist of the model: name, comment, deleted, entries.
type ModelList = (String, String, bool, Vec<(EntryId, TrackId, Position)>);

/// The sequential model: every operation in stamp order, applied the
/// obvious way.
#[derive(Default, Debug)]
struct Model {
    stars: BTreeMap<Item, (bool, u64)>,
    ratings: BTreeMap<Item, u8>,
    plays: HashMap<TrackId, (u64, i64)>,
    lists: BTreeMap<PlaylistId, ModelList>,
    queue: Option<Queue>,
}

impl Model {
    fn run(mut ops: Vec<&Op>) -> Model {
        ops.sort_by_key(|o| o.stamp());
        let mut m = Model::default();
        for o in ops {
            match &o.body {
                Body::Star { item, starred } => {
                    m.stars.insert(*item, (*starred, o.at.ms()));
                }
                Body::Rate { item, rating } => {
                    m.ratings.insert(*item, *rating);
                }
                Body::Play(p) => {
                    let e = m.plays.entry(p.track).or_insert((0, i64::MIN));
                    e.0 += 1;
                    e.1 = e.1.max(p.started_ms);
                }
                Body::CreatePlaylist { name } => {
                    m.lists
                        .insert(o.id, (name.clone(), String::new(), false, vec![]));
                }
                Body::EditPlaylist {
                    playlist,
                    name,
                    comment,
                } => {
                    let l = m.lists.get_mut(playlist).expect("edited before made");
                    if let Some(n) = name {
                        l.0 = n.clone();
                    }
                    if let Some(c) = comment {
                        l.1 = c.clone();
                    }
                }
                Body::DeletePlaylist { playlist } => m.lists.get_mut(playlist).unwrap().2 = true,
                Body::AddEntries { playlist, entries } => {
                    let l = m.lists.get_mut(playlist).unwrap();
                    for (i, (t, p)) in entries.iter().enumerate() {
                        let id = EntryId {
                            op: o.id,
                            index: i as u32,
                        };
                        l.3.push((id, *t, p.clone()));
                    }
                }
                Body::MoveEntry {
                    playlist,
                    entry,
                    position,
                } => {
                    let l = m.lists.get_mut(playlist).unwrap();
                    if let Some(e) = l.3.iter_mut().find(|e| e.0 == *entry) {
                        e.2 = position.clone();
                    }
                }
                Body::RemoveEntries { playlist, entries } => {
                    let l = m.lists.get_mut(playlist).unwrap();
                    l.3.retain(|e| !entries.contains(&e.0));
                }
                Body::SetQueue(q) => m.queue = Some(q.clone()),
            }
        }
        m
    }

    fn check(&self, v: &Views) {
        let mut starred: Vec<(Item, u64)> = self
            .stars
            .iter()
            .filter(|(_, (on, _))| *on)
            .map(|(i, (_, at))| (*i, *at))
            .collect();
        starred.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(v.starred(), starred);
        for (i, r) in &self.ratings {
            assert_eq!(v.rating(i), *r);
        }
        for (t, (n, last)) in &self.plays {
            let s = v.play_stats(t);
            assert_eq!((s.count, s.last_ms), (*n, *last));
        }
        let mut lists: Vec<_> = self.lists.iter().filter(|(_, l)| !l.2).collect();
        lists.sort_by(|a, b| a.1 .0.cmp(&b.1 .0).then(a.0.cmp(b.0)));
        let got = v.playlists();
        assert_eq!(got.len(), lists.len());
        for (g, (id, (name, comment, _, entries))) in got.iter().zip(lists) {
            assert_eq!((&g.id, &g.name, &g.comment), (id, name, comment));
            let mut want = entries.clone();
            want.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
            let got: Vec<_> = g
                .entries
                .iter()
                .map(|e| (e.id, e.track, e.position.clone()))
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(v.queue().map(|(_, q)| q.clone()), self.queue);
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed | 1);
    let mut reps: Vec<Replica> = (0..3)
        .map(|i| Replica {
            device: DeviceId::random(),
            clock: Clock::default(),
            seq: 0,
            // Clocks disagree by up to a few seconds.
            skew: [0, 2500, -4000][i],
            views: Views::default(),
            log: BTreeMap::new(),
        })
        .collect();
    let mut wall: i64 = 1_800_000_000_000;
    for _ in 0..steps {
        wall += rng.below(1500) as i64;
        if rng.below(3) == 0 {
            let (a, b) = (rng.below(3), rng.below(3));
            if a != b {
                let from = reps[a].log.clone();
                reps[b].receive(&from, &mut rng);
            }
        } else {
            let r = rng.below(3);
            let body = reps[r].random_body(&mut rng, wall);
            reps[r].make(wall, body);
        }
    }
    // Everyone meets everyone until nothing is missing.
    for _ in 0..3 {
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    let from = reps[a].log.clone();
                    let mut all = Rng(rng.next() | 1);
                    // A whole exchange (no cut) so that the end is complete.
                    let have = reps[b].views.version_vector().clone();
                    let mut pending: Vec<&Op> = from
                        .values()
                        .filter(|o| o.id.seq > have.get(&o.id.device))
                        .collect();
                    for i in (1..pending.len()).rev() {
                        pending.swap(i, all.below(i + 1));
                    }
                    pending.sort_by_key(|o| (o.id.device, o.id.seq));
                    for o in pending {
                        assert_eq!(reps[b].views.apply(o), Applied::New);
                        reps[b].log.insert(o.id, o.clone());
                    }
                }
            }
        }
    }
    assert_eq!(reps[0].views, reps[1].views);
    assert_eq!(reps[1].views, reps[2].views);
    let all: Vec<&Op> = reps[0].log.values().collect();
    Model::run(all).check(&reps[0].views);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn replicas_converge_to_the_sequential_model(seed in any::<u64>(), steps in 1usize..200) {
        run(seed, steps);
    }
}

#[test]
fn an_old_play_never_moves_last_played_back() {
    let d = DeviceId::random();
    let mut v = Views::default();
    let t = track(1);
    for (seq, started) in [(1, 5000), (2, 1000)] {
        let op = Op {
            id: OpId { device: d, seq },
            at: Hlc::new(10 + seq, 0),
            body: Body::Play(Play {
                track: t,
                started_ms: started,
                ms_played: 1,
            }),
        };
        v.apply(&op);
    }
    let s = v.play_stats(&t);
    assert_eq!((s.count, s.last_ms), (2, 5000));
    assert_eq!(v.recent_plays(1)[0].1.started_ms, 5000);
}

#[test]
fn a_delete_beats_a_concurrent_move() {
    let (a, b) = (DeviceId::random(), DeviceId::random());
    let id = |device, seq| OpId { device, seq };
    let create = Op {
        id: id(a, 1),
        at: Hlc::new(1, 0),
        body: Body::CreatePlaylist { name: "x".into() },
    };
    let add = Op {
        id: id(a, 2),
        at: Hlc::new(2, 0),
        body: Body::AddEntries {
            playlist: create.id,
            entries: vec![(track(1), Position::between(None, None))],
        },
    };
    let entry = EntryId {
        op: add.id,
        index: 0,
    };
    let remove = Op {
        id: id(a, 3),
        at: Hlc::new(3, 0),
        body: Body::RemoveEntries {
            playlist: create.id,
            entries: vec![entry],
        },
    };
    // b moved it later by its clock, not knowing of the removal.
    let mv = Op {
        id: id(b, 1),
        at: Hlc::new(9, 0),
        body: Body::MoveEntry {
            playlist: create.id,
            entry,
            position: Position::between(None, Some(&Position::between(None, None))),
        },
    };
    for order in [[&create, &add, &remove, &mv], [&create, &add, &mv, &remove]] {
        let mut v = Views::default();
        for o in order {
            v.apply(o);
        }
        assert!(v.playlist(&create.id).unwrap().entries.is_empty());
    }
}
