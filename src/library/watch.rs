//! Keeps the index current while folders change: filesystem events
//! (inotify and friends, through the notify crate) are debounced, reduced to
//! the smallest set of changed files and folders, and rescanned
//! incrementally. Only what changed is re-read.
//!
//! Must never decide anything from an event alone: the event only says where
//! to look; the rescan of that place decides what is there.

use super::{scan, ScanError, ScanOptions, ScanReport};
use crate::index::Index;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The filesystem watcher could not be created, or could not watch a root.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The library root that could not be watched; empty when the
        /// watcher itself could not be created.
        path: PathBuf,
        /// What notify reported.
        source: notify::Error,
    },
    /// A rescan of what changed (of every root, after lost events or a
    /// watcher error) failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// Reduce changed paths to scopes: no scope inside another.
pub fn minimal_scopes(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

/// Watch `roots` until `stop` is set, rescanning what changes. `on_scan` is
/// called after each rescan.
pub fn watch(
    index: &Index,
    roots: &[PathBuf],
    opts: &ScanOptions,
    debounce: Duration,
    stop: &AtomicBool,
    mut on_scan: impl FnMut(&[PathBuf], &ScanReport),
) -> Result<(), WatchError> {
    let (tx, rx) = crossbeam_channel::bounded::<DebounceEventResult>(64);
    let mut debouncer = new_debouncer(debounce, None, move |r| {
        let _ = tx.send(r);
    })
    .map_err(|source| WatchError::Watch {
        path: PathBuf::new(),
        source,
    })?;
    for root in roots {
        debouncer
            .watch(root, RecursiveMode::Recursive)
            .map_err(|source| WatchError::Watch {
                path: root.clone(),
                source,
            })?;
    }
    while !stop.load(Ordering::SeqCst) {
        let Ok(first) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let mut paths = Vec::new();
        let mut rescan_all = false;
        for batch in std::iter::once(first).chain(rx.try_iter()) {
            match batch {
                Ok(events) => {
                    for ev in events {
                        if ev.need_rescan() {
                            rescan_all = true;
                        }
                        // Opening or reading a file (a player, another
                        // scan) changes nothing.
                        if matches!(ev.event.kind, notify::EventKind::Access(_)) {
                            continue;
                        }
                        paths.extend(ev.event.paths.iter().cloned());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("watch error: {e}; rescanning everything");
                    }
                    rescan_all = true;
                }
            }
        }
        let scopes = if rescan_all {
            roots.to_vec()
        } else {
            minimal_scopes(
                paths
                    .into_iter()
                    .filter(|p| roots.iter().any(|r| p.starts_with(r)))
                    .collect(),
            )
        };
        if scopes.is_empty() {
            continue;
        }
        let report = scan(index, &scopes, opts, &|_| {})?;
        on_scan(&scopes, &report);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_minimal() {
        let s = minimal_scopes(vec![
            "/m/a/1.mp3".into(),
            "/m/a".into(),
            "/m/b/2.mp3".into(),
            "/m/ab/3.mp3".into(),
            "/m/b/2.mp3".into(),
        ]);
        assert_eq!(
            s,
            vec![
                PathBuf::from("/m/a"),
                "/m/ab/3.mp3".into(),
                "/m/b/2.mp3".into()
            ]
        );
    }
}
