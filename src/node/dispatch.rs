//! The dispatcher: events from the mesh handed to the services. It never
//! awaits sled or files itself: every piece of work is a task of its own.

use super::Node;
use crate::mesh::{Event, Response};
use tokio::sync::mpsc;
use tracing::Instrument;

impl Node {
    // ----- events from the mesh ----------------------------------------------

    pub(super) async fn event_loop(&self, mut rx: mpsc::Receiver<Event>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Announced { from, announcement } => {
                    self.inner.syncer.announced(from, announcement.root)
                }
                Event::Request {
                    from,
                    request,
                    reply,
                } => {
                    let n = self.clone();
                    self.spawn(async move {
                        let r = n.inner.syncer.answer(n.snapshot(), request).await;
                        if let Response::Error(e) = &r {
                            tracing::info!(%from, "sync request refused: {e}");
                        }
                        let _ = reply.send(r);
                    });
                }
                Event::Stream { from, open, stream } => {
                    let n = self.clone();
                    let span = tracing::info_span!("serve", peer = %from, track = %open.track.to_hex()[..12].to_string(), kbps = open.kbps);
                    self.spawn(
                        async move { n.inner.playback.serve(open, stream).await }.instrument(span),
                    );
                }
                Event::MembersChanged => {
                    // Forgetting a catalog writes sled: not inline here.
                    let n = self.clone();
                    self.spawn(async move { n.prune_catalogs().await });
                }
                Event::Connected(d) => tracing::info!(peer = %d, "member connected"),
                Event::Disconnected(d) => tracing::info!(peer = %d, "member disconnected"),
            }
        }
    }
}
