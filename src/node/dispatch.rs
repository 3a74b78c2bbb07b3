//! The dispatcher: events from the mesh handed to the services. It never
//! awaits sled or files itself: every piece of work is a task of its own.

use super::Node;
use crate::mesh::{Event, Request, Response};
use crate::model::CoverId;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Largest cover sent to a member (under the control reply limit).
const MAX_COVER: usize = 6 << 20;

impl Node {
    /// A member asks for the cover of one of our tracks.
    async fn answer_cover(&self, id: CoverId) -> Response {
        let ix = self.inner.index.clone();
        match self.inner.tasks.blocking(move || ix.cover(&id)).await {
            Ok(Ok(Some(c))) if c.data.len() <= MAX_COVER => Response::Cover {
                mime: c.mime,
                data: c.data,
            },
            Ok(Ok(Some(_))) => Response::Error("that cover is too big to send".into()),
            Ok(Ok(None)) => Response::Error("no such cover here".into()),
            Ok(Err(e)) => Response::Error(e.to_string()),
            Err(e) => Response::Error(e.to_string()),
        }
    }

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
                        let r = match request {
                            Request::GetCover(id) => n.answer_cover(id).await,
                            Request::GetBlobRecords(r) => {
                                Response::BlobRecords(n.inner.mirror.answer_records(r).await)
                            }
                            r @ (Request::GetUserOps(_) | Request::PushUserOps(_)) => {
                                n.inner.user.answer(from, r).await
                            }
                            sync => n.inner.syncer.answer(n.snapshot(), sync).await,
                        };
                        if let Response::Error(e) = &r {
                            tracing::info!(%from, "request refused: {e}");
                        }
                        let _ = reply.send(r);
                    });
                }
                Event::Stream { from, open, stream } if open.blob.is_some() => {
                    let n = self.clone();
                    let span = tracing::info_span!("blob", peer = %from, track = %open.track.to_hex()[..12].to_string());
                    self.spawn(
                        async move { n.inner.mirror.serve_blob(open, stream).await }
                            .instrument(span),
                    );
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
                    self.spawn(async move {
                        n.prune_catalogs().await;
                        if let Err(e) = n.inner.user.prune_revoked().await {
                            tracing::error!("cannot drop a revoked device's operations: {e}");
                        }
                    });
                }
                Event::Connected(d) => {
                    tracing::info!(peer = %d, "member connected");
                    // Level the owner's state both ways: it pulls from us
                    // as we pull from it.
                    let n = self.clone();
                    self.spawn(async move {
                        match n.inner.user.pull(d).await {
                            Ok(0) => {}
                            Ok(k) => tracing::info!(peer = %d, ops = k, "user state fetched"),
                            Err(e) => tracing::info!(peer = %d, "cannot fetch user state: {e}"),
                        }
                    });
                }
                Event::Disconnected(d) => tracing::info!(peer = %d, "member disconnected"),
            }
        }
    }
}
