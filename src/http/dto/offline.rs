//! The JSON shapes of the offline mirror: pins, the budget, the policy and
//! the status (requests and answers; the CLI reads the same types).

use crate::mesh::Recipe;
use crate::mirror::{Pin, Status};
use crate::node::PinView;
use serde::{Deserialize, Serialize};

/// `POST /api/offline/pins`: pin something; `/api/offline/pins/remove`:
/// unpin it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    /// `track`, `album`, `artist`, `playlist`, `starred` or `library`.
    pub kind: String,
    /// The id (any unique prefix; a playlist's name); none for `starred`
    /// and `library`.
    #[serde(default)]
    pub id: Option<String>,
    /// `original` or Opus kb/s (`96`, `128k`); 96 when absent.
    #[serde(default)]
    pub bitrate: Option<String>,
}

/// A pin as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinListView {
    /// What it names.
    pub kind: String,
    /// The whole id (empty for `starred` and `library`).
    pub id: String,
    /// What it is, for people.
    pub name: String,
    /// `original` or kb/s.
    pub bitrate: String,
    /// When it was made (UTC ms).
    pub added_ms: u64,
    /// Its tracks now.
    pub tracks: usize,
    /// Of which whole on this device.
    pub done: usize,
}

impl PinListView {
    /// The view of a pin.
    pub fn of(p: &PinView) -> PinListView {
        PinListView {
            kind: p.pin.kind.as_str().into(),
            id: p.pin.id.clone(),
            name: p.name.clone(),
            bitrate: bitrate_text(&p.pin),
            added_ms: p.pin.added_ms,
            tracks: p.tracks,
            done: p.done,
        }
    }
}

fn bitrate_text(p: &Pin) -> String {
    match p.kbps {
        0 => "original".into(),
        k => k.to_string(),
    }
}

/// `GET /api/offline/pins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinsView {
    /// Oldest first (the order the budget is filled in).
    pub pins: Vec<PinListView>,
}

/// `PUT /api/offline/budget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetRequest {
    /// Bytes, or a size such as `4GiB`, `500MB`, `2G`.
    pub budget: String,
}

/// `PUT /api/offline/policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRequest {
    /// `lan`, `direct` or `any`.
    pub policy: String,
}

/// A track that could not be fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedView {
    /// The track id.
    pub track: String,
    /// `original` or kb/s.
    pub bitrate: String,
    /// Why (each holder's answer).
    pub reason: String,
}

/// A download in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadView {
    /// The track id.
    pub track: String,
    /// `original` or kb/s.
    pub bitrate: String,
    /// Bytes here, checked.
    pub have_bytes: u64,
    /// Bytes in all.
    pub len_bytes: u64,
    /// The member sending it.
    pub from: Option<String>,
}

/// `GET /api/offline/status` (`tunemesh offline status --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfflineStatusView {
    /// Bytes pinned copies may take.
    pub budget_bytes: u64,
    /// Bytes prefetched copies (the play queue's) may take.
    pub prefetch_budget_bytes: u64,
    /// `lan`, `direct` or `any`.
    pub policy: String,
    /// Bytes of the offline store's files.
    pub used_bytes: u64,
    /// Bytes every pin needs (known lengths, else estimates).
    pub needed_bytes: u64,
    /// How many more bytes the budget would need for every pin to fit.
    pub short_bytes: u64,
    /// Pinned tracks whole here.
    pub tracks_done: usize,
    /// Pinned tracks that fit and are not here yet.
    pub tracks_queued: usize,
    /// Pinned tracks waiting for space.
    pub tracks_over_budget: usize,
    /// Tracks a holder is encoding for us now.
    pub tracks_preparing: usize,
    /// Tracks that could not be fetched, each with its reason.
    pub tracks_failed: Vec<FailedView>,
    /// Downloads in progress.
    pub downloading: Vec<DownloadView>,
    /// Why nothing moves now (no member reachable, a relayed path the
    /// policy forbids, a full disk).
    pub waiting: Option<String>,
    /// The queue's prefetched tracks here.
    pub prefetched: usize,
    /// Bytes received for downloads since the node started.
    pub bytes_fetched: u64,
    /// Groups refused since start because they did not match.
    pub groups_refused: u64,
    /// Bytes of offline copies served to members since start.
    pub bytes_served: u64,
    /// Every pinned track that fits is here (nothing queued, failed or
    /// in flight).
    pub done: bool,
}

fn recipe_bitrate(r: &Recipe) -> String {
    match r.kbps {
        0 => "original".into(),
        k => k.to_string(),
    }
}

impl From<&Status> for OfflineStatusView {
    fn from(s: &Status) -> Self {
        OfflineStatusView {
            budget_bytes: s.budget,
            prefetch_budget_bytes: s.prefetch_budget,
            policy: s.policy.as_str().into(),
            used_bytes: s.used_bytes,
            needed_bytes: s.needed_bytes,
            short_bytes: s.short_bytes,
            tracks_done: s.tracks_done,
            tracks_queued: s.tracks_queued,
            tracks_over_budget: s.tracks_over_budget,
            tracks_preparing: s.tracks_preparing,
            tracks_failed: s
                .failed
                .iter()
                .map(|(r, why)| FailedView {
                    track: r.track.to_string(),
                    bitrate: recipe_bitrate(r),
                    reason: why.clone(),
                })
                .collect(),
            downloading: s
                .downloading
                .iter()
                .map(|p| DownloadView {
                    track: p.recipe.track.to_string(),
                    bitrate: recipe_bitrate(&p.recipe),
                    have_bytes: p.have,
                    len_bytes: p.len,
                    from: p.from.map(|d| d.to_string()),
                })
                .collect(),
            waiting: s.waiting.clone(),
            prefetched: s.prefetched,
            bytes_fetched: s.bytes_fetched,
            groups_refused: s.groups_refused,
            bytes_served: s.bytes_served,
            done: s.tracks_queued == 0 && s.failed.is_empty() && s.downloading.is_empty(),
        }
    }
}
