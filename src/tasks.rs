//! The node's tasks: every task and every blocking job a node starts is
//! owned here, so shutdown cancels them all and waits for them.
//!
//! Must never: start a task that outlives [`Tasks::shutdown`], or run
//! blocking work (sled, files, fsync) anywhere but [`Tasks::blocking`].

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node is shutting down (or a blocking job panicked): the work was
/// not done.
#[derive(Debug, thiserror::Error)]
#[error("stopped: {0}")]
pub struct Stopped(pub String);

/// Owner of a node's tasks. Cheap to clone; clones share the tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Run `f` until it ends or the node shuts down.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
    }

    /// Run blocking `f` on the blocking pool, owned like every task (so
    /// shutdown waits for it), and wait for its result.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        self.tracker
            .spawn_blocking(f)
            .await
            .map_err(|e| Stopped(format!("worker failed: {e}")))
    }

    /// Cancelled when the node shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancel every task and wait until all (blocking jobs included) ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
