//! The home's scanner and watcher: a dedicated thread that scans the
//! library folders, then watches them and rescans what changed; after each
//! scan the snapshot is refreshed (announced to members, diffed into the
//! catalog). A failed scan or watch (the index's disk full, a folder gone)
//! is retried after 1 s, doubling to 30 s; only shutdown ends the loop.

use super::{Node, NodeError};
use crate::library;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// First wait before the watcher starts again after a failed scan; it
/// doubles up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);

impl Node {
    // ----- scanning ---------------------------------------------------------

    pub(super) fn start_watcher(&self) -> Result<(), NodeError> {
        let node = self.clone();
        let handle = tokio::runtime::Handle::current();
        let stop = self.inner.watch_stop.clone();
        let t = std::thread::Builder::new()
            .name("tunemesh-watch".into())
            .spawn(move || {
                let ix = node.inner.index.clone();
                let roots = match ix.roots() {
                    Ok(r) => library::watch::minimal_scopes(r),
                    Err(e) => {
                        tracing::error!("cannot read library folders: {e}");
                        return;
                    }
                };
                if roots.is_empty() {
                    tracing::warn!("home node without library folders: serving nothing");
                    return;
                }
                // A scan or the watch can fail (the index's disk full, a
                // folder gone): say so, wait, and start again with a full
                // rescan, which finds whatever changed meanwhile. Only a
                // shutdown ends this loop.
                let mut backoff = WATCH_RETRY_MIN;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match node.scan_and_watch(&roots, &handle, &stop) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!("watching stopped: {e}; trying again in {backoff:?}");
                        }
                    }
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(WATCH_RETRY_MAX);
                }
            })?;
        *self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    /// Scan the library folders, then watch them until `stop` is set (Ok)
    /// or a scan fails (Err). Runs on the watcher thread.
    fn scan_and_watch(
        &self,
        roots: &[PathBuf],
        handle: &tokio::runtime::Handle,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), library::watch::WatchError> {
        let ix = self.inner.index.clone();
        let opts = self.inner.cfg.scan.clone();
        let r = library::scan(&ix, roots, &opts, &|_| {})?;
        tracing::info!(
            files = r.files,
            tracks = r.tracks,
            added = r.added,
            removed = r.removed,
            "library scanned"
        );
        let refresh_snapshot = || {
            if let Err(e) = handle.block_on(self.refresh_snapshot()) {
                tracing::error!("snapshot: {e}");
            }
        };
        refresh_snapshot();
        library::watch::watch(
            &ix,
            roots,
            &opts,
            self.inner.cfg.debounce,
            stop,
            |scopes, report| {
                tracing::info!(
                    ?scopes,
                    added = report.added,
                    changed = report.changed,
                    removed = report.removed,
                    "rescanned"
                );
                refresh_snapshot();
            },
        )
    }
}
