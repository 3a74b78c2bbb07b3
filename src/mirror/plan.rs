//! What to fetch and what to keep, as pure functions of the wants (in
//! pin order), what is known of their bytes and the budgets. Tested here;
//! the worker only acts on the answers.
//!
//! Rules: pinned recipes are taken in order while the running total of
//! their sizes (known lengths, else estimates; a blob shared by two
//! recipes counted once) stays within the budget; the first that does not
//! fit and every one after it wait ("over budget"), so a pin is never
//! silently half kept. Prefetched recipes have their own small budget.
//! A copy no pin keeps is dropped, unless it was fetched for the queue:
//! those stay as a cache, least recently used evicted first, down to the
//! prefetch budget.
//!
//! Order of fetching: the play queue's next tracks first (pinned or not,
//! nearest first), then the pins in their order, so a queue never waits
//! behind a big pin.

use crate::mesh::Recipe;
use crate::model::Hash32;
use std::collections::HashSet;
use std::time::SystemTime;

/// Why a recipe is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A pin needs it.
    Pinned,
    /// The play queue is about to reach it.
    Prefetch,
}

/// One recipe the owner wants on this device.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The track and bitrate.
    pub recipe: Recipe,
    /// Its size before its record is known (duration × bitrate).
    pub estimate: u64,
    /// Pinned or prefetched.
    pub class: Class,
    /// Its place among the play queue's next tracks (0: the next one),
    /// when the queue is about to reach it.
    pub ahead: Option<usize>,
}

/// What is known of a recipe's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Known {
    /// Their hash.
    pub hash: Hash32,
    /// Their length.
    pub len: u64,
    /// Whole in the store.
    pub done: bool,
}

/// The plan for this round.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Recipes that fit and are not done, in the order to fetch them
    /// (the queue's nearest first, then the pins in order).
    pub fetch: Vec<Want>,
    /// Blobs kept (done or to be fetched) for pins.
    pub pinned: HashSet<Hash32>,
    /// Blobs kept for the queue.
    pub prefetch: HashSet<Hash32>,
    /// Pinned recipes that fit and are done.
    pub done: usize,
    /// Pinned recipes waiting for space.
    pub over: Vec<Recipe>,
    /// Bytes every pinned recipe needs.
    pub needed: u64,
    /// Bytes of the pinned recipes that fit.
    pub fitting: u64,
}

impl Plan {
    /// How many more bytes the budget would need for every pin to fit.
    pub fn short(&self, budget: u64) -> u64 {
        self.needed.saturating_sub(budget)
    }
}

/// Plan a round: `wants` in order (pinned first, then prefetch, each
/// recipe once), `known` what the records say, `budget` for pins and
/// `prefetch_budget` for the queue.
pub fn plan(
    wants: &[Want],
    known: impl Fn(&Recipe) -> Option<Known>,
    budget: u64,
    prefetch_budget: u64,
) -> Plan {
    let mut p = Plan::default();
    let mut counted: HashSet<Hash32> = HashSet::new();
    let mut waiting = false;
    let mut prefetch_used = 0u64;
    let mut prefetch_full = false;
    for w in wants {
        let k = known(&w.recipe);
        let size = match k {
            Some(k) if !counted.insert(k.hash) => 0,
            Some(k) => k.len,
            None => w.estimate,
        };
        match w.class {
            Class::Pinned => {
                p.needed += size;
                if waiting || p.fitting + size > budget {
                    waiting = true;
                    p.over.push(w.recipe);
                    continue;
                }
                p.fitting += size;
                if let Some(k) = k {
                    p.pinned.insert(k.hash);
                    if k.done {
                        p.done += 1;
                        continue;
                    }
                }
                p.fetch.push(w.clone());
            }
            Class::Prefetch => {
                if let Some(k) = k {
                    if p.pinned.contains(&k.hash) {
                        continue;
                    }
                }
                if prefetch_full || prefetch_used + size > prefetch_budget {
                    prefetch_full = true;
                    continue;
                }
                prefetch_used += size;
                match k {
                    Some(k) if k.done => {
                        p.prefetch.insert(k.hash);
                    }
                    Some(k) => {
                        p.prefetch.insert(k.hash);
                        p.fetch.push(w.clone());
                    }
                    None => p.fetch.push(w.clone()),
                }
            }
        }
    }
    // Stable: pins keep their order behind the queue's tracks.
    p.fetch.sort_by_key(|w| w.ahead.unwrap_or(usize::MAX));
    p
}

/// The blobs to drop: every held one no pin keeps that was not fetched
/// for the queue (`cached`), and of those that were, the least recently
/// used until the rest fit `prefetch_budget` (the queue's current wants
/// go last).
pub fn evict(
    held: &[(Hash32, u64, SystemTime)],
    plan: &Plan,
    cached: &HashSet<Hash32>,
    prefetch_budget: u64,
) -> Vec<Hash32> {
    let queued = |h: &Hash32| plan.prefetch.contains(h) || cached.contains(h);
    let mut out: Vec<Hash32> = held
        .iter()
        .map(|(h, _, _)| *h)
        .filter(|h| !plan.pinned.contains(h) && !queued(h))
        .collect();
    let mut loose: Vec<&(Hash32, u64, SystemTime)> = held
        .iter()
        .filter(|(h, _, _)| !plan.pinned.contains(h) && queued(h))
        .collect();
    // Newest first; the queue's own before anything else.
    loose.sort_by_key(|(h, _, used)| (!plan.prefetch.contains(h), std::cmp::Reverse(*used)));
    let mut total = 0u64;
    for (h, len, _) in loose {
        total += len;
        if total > prefetch_budget {
            out.push(*h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrackId;
    use std::collections::HashMap;
    use std::time::Duration;

    fn want(n: u8, class: Class) -> Want {
        Want {
            recipe: Recipe {
                track: TrackId::of(&[n]),
                kbps: 96,
            },
            estimate: 100,
            class,
            ahead: None,
        }
    }

    fn hash(n: u8) -> Hash32 {
        Hash32::of(&[n, n])
    }

    #[test]
    fn pins_fit_in_order_and_the_first_that_does_not_stops_the_rest() {
        let wants: Vec<Want> = (0..5).map(|n| want(n, Class::Pinned)).collect();
        // Track 1 is known at 250 bytes and done; the rest are estimates.
        let known = |r: &Recipe| {
            (r.track == TrackId::of(&[1])).then_some(Known {
                hash: hash(1),
                len: 250,
                done: true,
            })
        };
        let p = plan(&wants, known, 500, 0);
        assert_eq!(p.done, 1);
        assert_eq!(
            p.fetch.iter().map(|w| w.recipe).collect::<Vec<_>>(),
            vec![wants[0].recipe, wants[2].recipe]
        );
        // 100 + 250 + 100 = 450; the fourth (100) would make 550.
        assert_eq!(p.over, vec![wants[3].recipe, wants[4].recipe]);
        assert_eq!((p.needed, p.fitting, p.short(500)), (650, 450, 150));
        // Nothing waits once the budget is big enough.
        let p = plan(&wants, known, 650, 0);
        assert!(p.over.is_empty() && p.short(650) == 0);
    }

    #[test]
    fn the_queue_is_fetched_first_nearest_first_and_pins_keep_their_order() {
        let mut wants: Vec<Want> = (0..4).map(|n| want(n, Class::Pinned)).collect();
        // The queue's next track is pinned track 2; then comes an unpinned one.
        wants[2].ahead = Some(0);
        let mut queued = want(9, Class::Prefetch);
        queued.ahead = Some(1);
        wants.push(queued);
        let p = plan(&wants, |_: &Recipe| None, 1000, 1000);
        let order: Vec<TrackId> = p.fetch.iter().map(|w| w.recipe.track).collect();
        let id = |n: u8| TrackId::of(&[n]);
        assert_eq!(order, vec![id(2), id(9), id(0), id(1), id(3)]);
        // The budget is still the pins' order: a queued pin that does not
        // fit is not fetched first, it waits with the rest.
        let p = plan(&wants, |_: &Recipe| None, 200, 1000);
        let order: Vec<TrackId> = p.fetch.iter().map(|w| w.recipe.track).collect();
        assert_eq!(order, vec![id(9), id(0), id(1)]);
        assert_eq!(p.over.len(), 2);
    }

    #[test]
    fn a_blob_two_recipes_share_counts_once() {
        let wants = vec![want(1, Class::Pinned), want(2, Class::Pinned)];
        let known = |_: &Recipe| {
            Some(Known {
                hash: hash(9),
                len: 300,
                done: true,
            })
        };
        let p = plan(&wants, known, 300, 0);
        assert_eq!((p.done, p.needed, p.over.len()), (2, 300, 0));
    }

    #[test]
    fn prefetch_has_its_own_budget_and_eviction_spares_pins_and_the_queue() {
        let wants = vec![
            want(1, Class::Pinned),
            want(2, Class::Prefetch),
            want(3, Class::Prefetch),
        ];
        let map: HashMap<TrackId, Known> = (1..=3u8)
            .map(|n| {
                let k = Known {
                    hash: hash(n),
                    len: 100,
                    done: n != 3,
                };
                (TrackId::of(&[n]), k)
            })
            .collect();
        let p = plan(&wants, |r: &Recipe| map.get(&r.track).copied(), 1000, 150);
        // The second prefetch does not fit in 150 beside the first.
        assert_eq!(p.fetch, vec![]);
        assert!(p.prefetch.contains(&hash(2)) && !p.prefetch.contains(&hash(3)));
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let held = vec![
            (hash(1), 100, t(1)), // pinned: kept whatever its age
            (hash(2), 100, t(2)), // the queue's: kept first
            (hash(7), 40, t(50)), // prefetched before, newest: fits beside it
            (hash(8), 40, t(40)), // prefetched before, older: over the budget
            (hash(9), 10, t(60)), // unpinned, never prefetched: dropped
        ];
        let cached = HashSet::from([hash(7), hash(8)]);
        assert_eq!(evict(&held, &p, &cached, 150), vec![hash(9), hash(8)]);
        assert_eq!(
            evict(&held, &p, &cached, 0),
            vec![hash(9), hash(2), hash(7), hash(8)]
        );
    }
}
