//! Remote streams that survive their connection: reopened at the byte
//! already received, from the same holder or another, when the connection
//! carrying them closes or the stream breaks.

use crate::mesh::{self, DeviceId, StreamOpen};
use bytes::Bytes;
use futures::StreamExt;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long an interrupted remote stream keeps trying to resume: a path
/// change takes milliseconds, roaming to another network seconds, and a
/// player has a buffer; a holder that is gone fails the stream after this.
const RESUME_WINDOW: Duration = Duration::from_secs(20);
/// Resumes in a row that bring no byte: the holder fails at that point.
const MAX_FRUITLESS_RESUMES: u32 = 4;

/// The receiving side of a served stream, chunk by chunk.
pub(super) type Chunks = Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A remote stream that outlives the connection carrying it.
///
/// Streams do not migrate between connections by themselves: when the one
/// carrying it closes (a relayed connection dropped once a direct one is
/// punched, a network change, the holder restarting), the stream is opened
/// again from the byte already received, on whatever connection the mesh
/// has then, from the same holder or another. The bytes are the same
/// (originals, cached or deterministic transcodes), so the reader sees one
/// seamless stream.
pub(super) struct Resume {
    pub(super) client: mesh::Client,
    pub(super) open: StreamOpen,
    pub(super) received: u64,
    pub(super) at_last_resume: Option<u64>,
    pub(super) fruitless: u32,
    pub(super) holders: Vec<DeviceId>,
    pub(super) chunks: Chunks,
    /// Connections of our peers that closed (None once the mesh is gone).
    pub(super) closed: Option<tokio::sync::broadcast::Receiver<DeviceId>>,
    pub(super) cancel: CancellationToken,
}

impl Resume {
    /// `failed`: the stream itself broke (not merely a connection of its
    /// holder closing), which counts towards giving up.
    async fn reopen(&mut self, cause: std::io::Error, failed: bool) -> Result<(), std::io::Error> {
        if failed {
            if self.at_last_resume == Some(self.received) {
                self.fruitless += 1;
            } else {
                self.fruitless = 1;
            }
            self.at_last_resume = Some(self.received);
        }
        let give_up = |why: String| std::io::Error::new(cause.kind(), format!("{cause}; {why}"));
        if self.fruitless > MAX_FRUITLESS_RESUMES {
            return Err(give_up("resuming brought nothing".into()));
        }
        tracing::info!(
            track = %self.open.track,
            at = self.received,
            "stream interrupted ({cause}): resuming"
        );
        let deadline = Instant::now() + RESUME_WINDOW;
        let mut wait = Duration::from_millis(100);
        let mut last = String::new();
        loop {
            for i in 0..self.holders.len() {
                let d = self.holders[i];
                let mut open = self.open.clone();
                open.offset += self.received;
                match self.client.open_stream(&d, &open).await {
                    Ok((head, s)) => match head.error {
                        None => {
                            tracing::info!(track = %self.open.track, from = %d, at = self.received, "stream resumed");
                            // Closes reported while reopening are behind us.
                            if let Some(c) = self.closed.as_mut() {
                                while c.try_recv().is_ok() {}
                            }
                            self.chunks = Box::pin(s);
                            self.holders.swap(0, i);
                            return Ok(());
                        }
                        Some(e) => last = e,
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() + wait > deadline {
                return Err(give_up(format!("could not resume: {last}")));
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(give_up("shutting down".into())),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

pub(super) fn resuming(r: Resume) -> Chunks {
    Box::pin(futures::stream::unfold(Some(r), |state| async move {
        let mut r = state?;
        loop {
            let next = match r.closed.as_mut() {
                Some(closed) => tokio::select! {
                    biased;
                    c = r.chunks.next() => Some(c),
                    lost = closed.recv() => match lost {
                        Ok(d) if d != r.holders[0] => continue,
                        // Ours, or too many to tell: reopen to be sure.
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            r.closed = None;
                            continue;
                        }
                    },
                },
                None => Some(r.chunks.next().await),
            };
            let (cause, failed) = match next {
                // The end marker: the stream is whole.
                Some(None) => return None,
                Some(Some(Ok(b))) => {
                    r.received += b.len() as u64;
                    return Some((Ok(b), Some(r)));
                }
                Some(Some(Err(e))) => (e, true),
                None => (
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "a connection to the serving device closed",
                    ),
                    false,
                ),
            };
            if let Err(e) = r.reopen(cause, failed).await {
                return Some((Err(e), None));
            }
        }
    }))
}
